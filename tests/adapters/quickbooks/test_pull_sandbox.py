"""PullEngine backfill and incremental pull from the QuickBooks sandbox into the store."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlmodel import select

from connector.schema import Bill, Contact, Invoice, LedgerAccount, Payment, PaymentAllocation
from tests.adapters.quickbooks.conftest import Qbo

ALL = ("invoice", "bill", "payment", "contact", "ledger_account")


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


def expected_status(doc: dict[str, Any]) -> str:
    if str(doc.get("PrivateNote", "")).startswith("Voided") and money(doc["TotalAmt"]) == 0:
        return "void"
    return "paid" if money(doc["Balance"]) == 0 else "authorised"


def stored(qbo: Qbo, model: Any) -> dict[str, Any]:
    with qbo.store.session() as s:
        return {r.remote_id: r for r in s.exec(select(model)).all()}


def allocations(qbo: Qbo) -> dict[str, list[tuple[str, str, Decimal]]]:
    with qbo.store.session() as s:
        pks = {p.id: p.remote_id for p in s.exec(select(Payment)).all()}
        out: dict[str, list[tuple[str, str, Decimal]]] = {}
        for a in s.exec(select(PaymentAllocation)).all():
            out.setdefault(pks[a.payment_pk], []).append((a.id, a.type, a.amount))
    return out


def test_backfill_matches_the_ledger(make_qbo: Any) -> None:
    qbo: Qbo = make_qbo(invoices=12, bills=4)
    pull = qbo.pull_engine()

    stats = pull.run_once(connection_ids=[qbo.conn_id], entities=ALL)

    assert all(s.complete for s in stats)
    assert sum(s.pages for s in stats if s.entity == "invoice") > 3  # pages of 4
    invoices = stored(qbo, Invoice)
    ledger_invoices = qbo.ledger.invoices(qbo.realm)
    assert set(invoices) == {i["Id"] for i in ledger_invoices}
    for doc in ledger_invoices:
        row = invoices[doc["Id"]]
        assert row.number == doc["DocNumber"]
        assert row.total == money(doc["TotalAmt"])
        assert row.balance == money(doc["Balance"])
        assert row.currency == doc["CurrencyRef"]["value"]
        assert row.status == expected_status(doc)
        assert row.row_version == doc["SyncToken"]
        assert row.customer_id == doc["CustomerRef"]["value"]
    assert {r.status for r in invoices.values()} == {"authorised", "paid", "void"}

    bills = stored(qbo, Bill)
    ledger_bills = qbo.ledger.bills(qbo.realm)
    assert set(bills) == {b["Id"] for b in ledger_bills}
    for doc in ledger_bills:
        assert bills[doc["Id"]].balance == money(doc["Balance"])
        assert bills[doc["Id"]].status == expected_status(doc)
        assert bills[doc["Id"]].supplier_id == doc["VendorRef"]["value"]

    payments = stored(qbo, Payment)
    ar = qbo.ledger.payments(qbo.realm)
    ap = qbo.ledger.bill_payments(qbo.realm)
    assert set(payments) == {p["Id"] for p in ar + ap}
    allocs = allocations(qbo)
    for raw, kind, doc_type in [(p, "accounts_receivable", "invoice") for p in ar] + [
        (p, "accounts_payable", "bill") for p in ap
    ]:
        row = payments[raw["Id"]]
        assert row.type == kind
        assert row.total_amount == money(raw["TotalAmt"])
        assert sorted(allocs.get(raw["Id"], [])) == sorted(
            (link["TxnId"], doc_type, money(line["Amount"]))
            for line in raw["Line"]
            for link in line["LinkedTxn"]
        )

    contacts = stored(qbo, Contact)
    customers = qbo.ledger.customers(qbo.realm)
    vendors = qbo.ledger.vendors(qbo.realm)
    assert set(contacts) == {c["Id"] for c in customers + vendors}
    assert all(contacts[c["Id"]].is_customer for c in customers)
    assert all(contacts[v["Id"]].is_supplier for v in vendors)
    accounts = stored(qbo, LedgerAccount)
    assert set(accounts) == {a["Id"] for a in qbo.ledger.accounts(qbo.realm)}


def test_incremental_pull_picks_up_changes(qbo: Qbo) -> None:
    pull = qbo.pull_engine()
    pull.run_once(connection_ids=[qbo.conn_id], entities=("invoice", "payment"))
    doc = qbo.new_document("invoice", "42.00")
    qbo.ledger.clock.advance(5)
    payment = qbo.pay_elsewhere("invoice", doc["Id"], "42.00")
    paid_before = next(i for i in qbo.ledger.invoices(qbo.realm) if i["Balance"] == 0)
    qbo.ledger.clock.advance(5)
    qbo.ledger.void_invoice(qbo.realm, paid_before["Id"])

    stats = pull.run_once(connection_ids=[qbo.conn_id], entities=("invoice", "payment"))

    invoices = stored(qbo, Invoice)
    assert invoices[doc["Id"]].status == "paid"
    assert invoices[doc["Id"]].balance == 0
    assert invoices[paid_before["Id"]].status == "void"
    assert payment["Id"] in stored(qbo, Payment)
    # Only what changed since the first run (and the one-second overlap) was read.
    assert sum(s.records for s in stats) < len(qbo.ledger.invoices(qbo.realm))
