"""PullEngine backfill and incremental pulls through SuiteQL, compared with the ledger."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlmodel import select

from connector.schema import Bill, Contact, Invoice, LedgerAccount, Payment, PaymentAllocation
from connector.sync.pull import PullEngine
from tests.adapters.netsuite.conftest import NS

STATUS = {"A": "authorised", "B": "paid", "D": "submitted"}


def _puller(ns: NS) -> tuple[PullEngine, str]:
    settings = ns.settings(page_size=5)  # several pages per entity
    conn = settings.connections[0]
    engine = PullEngine(
        settings, ns.store(), clock=ns.clock, adapter_factory=lambda cid: ns.adapter(conn)
    )
    ns.closers.append(engine)
    return engine, conn.id


def _rows(ns: NS, model: type[Any]) -> dict[str, Any]:
    with ns.store().session() as s:
        return {r.remote_id: r for r in s.exec(select(model)).all()}


def _allocations(ns: NS) -> dict[str, list[tuple[str, str, Decimal]]]:
    with ns.store().session() as s:
        pks = {p.id: p.remote_id for p in s.exec(select(Payment)).all()}
        out: dict[str, list[tuple[str, str, Decimal]]] = {}
        for a in s.exec(select(PaymentAllocation)).all():
            out.setdefault(pks[a.payment_pk], []).append((a.id, a.type, a.amount))
        return out


def test_backfill_mirrors_invoices_bills_payments_contacts_and_accounts(ns: NS) -> None:
    engine, cid = _puller(ns)
    entities = ["invoice", "bill", "payment", "contact", "ledger_account"]
    stats = engine.run_once(connection_ids=[cid], entities=entities)

    assert [s.complete for s in stats] == [True] * len(entities)
    assert stats[0].pages > 2  # 12 invoices at 5 a page, keyset-restarted

    invoices = _rows(ns, Invoice)
    ledger_invoices = ns.ledger.invoices(ns.account)
    assert set(invoices) == {i["id"] for i in ledger_invoices}
    for raw in ledger_invoices:
        inv = invoices[raw["id"]]
        assert inv.number == raw["tranId"]
        assert inv.total == raw["total"]
        assert inv.balance == raw["amountRemaining"]
        assert inv.status == STATUS[raw["status"]["id"]]
        assert inv.row_version == raw["lastModifiedDate"]
        assert inv.customer_id == raw["entity"]["id"]
        assert inv.customer_name == raw["entity"]["refName"]
        assert inv.currency == {"US Dollar": "USD", "Euro": "EUR"}[raw["currency"]["refName"]]
        assert inv.due_date is not None and inv.due_date.isoformat() == raw["dueDate"]

    bills = _rows(ns, Bill)
    ledger_bills = ns.ledger.bills(ns.account)
    assert set(bills) == {b["id"] for b in ledger_bills}
    for raw in ledger_bills:
        bill = bills[raw["id"]]
        assert bill.total == raw["total"]
        assert bill.balance == ns.open_amount(raw)
        assert bill.status == STATUS[raw["status"]["id"]]
        assert bill.supplier_id == raw["entity"]["id"]

    payments = _rows(ns, Payment)
    allocations = _allocations(ns)
    ledger_payments = [
        *(("accounts_receivable", "invoice", p) for p in ns.payments("invoice")),
        *(("accounts_payable", "bill", p) for p in ns.payments("bill")),
    ]
    assert set(payments) == {p["id"] for _, _, p in ledger_payments}
    for unified_type, doc_type, raw in ledger_payments:
        payment = payments[raw["id"]]
        assert payment.type == unified_type
        assert payment.total_amount == raw["total"]
        assert payment.reference == raw["memo"]
        assert payment.status == "authorised"
        assert allocations[raw["id"]] == [
            (item["doc"]["id"], doc_type, item["amount"]) for item in raw["apply"]["items"]
        ]

    contacts = _rows(ns, Contact)
    customers = {c["id"] for c in ns.ledger.customers(ns.account)}
    vendors = {v["id"] for v in ns.ledger.vendors(ns.account)}
    assert set(contacts) == customers | vendors
    assert {k for k, c in contacts.items() if c.is_customer} == customers
    assert {k for k, c in contacts.items() if c.is_supplier} == vendors

    accounts = _rows(ns, LedgerAccount)
    assert {a.code for a in accounts.values()} == {
        a["acctNumber"] for a in ns.ledger.gl_accounts(ns.account)
    }
    assert accounts["1"].type == "Bank" and accounts["1"].currency == "USD"


def test_incremental_pull_sees_new_payments_and_balances(ns: NS) -> None:
    engine, cid = _puller(ns)
    engine.run_once(connection_ids=[cid], entities=["invoice", "payment"])
    target = next(
        i
        for i in ns.ledger.invoices(ns.account)
        if i["status"]["id"] == "A" and i["amountPaid"] == 0 and i["currency"]["id"] == "1"
    )
    ns.sandbox_clock.advance(60)
    receipt = ns.ledger.apply_payment(
        ns.account, target["id"], target["amountRemaining"], memo="Late receipt"
    )
    created = ns.add_document("invoice", "12.34")

    stats = engine.run_once(connection_ids=[cid], entities=["invoice", "payment"])

    assert all(s.complete for s in stats)
    assert stats[0].records < len(ns.ledger.invoices(ns.account))  # only the recent window
    invoices = _rows(ns, Invoice)
    assert invoices[target["id"]].status == "paid"
    assert invoices[target["id"]].balance == 0
    assert invoices[created["id"]].total == Decimal("12.34")
    payment = _rows(ns, Payment)[receipt["id"]]
    assert payment.reference == "Late receipt"
    assert _allocations(ns)[receipt["id"]] == [(target["id"], "invoice", target["amountRemaining"])]
