"""Pull against the sandbox: backfill, incremental changes, resume after a crash."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlmodel import select

from connector.schema import Invoice, Payment, PaymentAllocation
from connector.state import Cursor
from connector.sync.pull import PullEngine
from tests.conftest import Env


def puller(env: Env) -> PullEngine:
    # These tests are about the Xero connection; the other ledgers have their own.
    only_xero = env.settings.model_copy(update={"connections": [env.xero]})
    eng = PullEngine(only_xero, env.store, clock=env.clock)
    env.closers.append(eng)
    return eng


def store_invoices(env: Env) -> dict[str, Invoice]:
    with env.store.session() as s:
        rows = s.exec(select(Invoice).where(Invoice.connection_id == env.conn_id)).all()
    return {i.remote_id: i for i in rows}


def ledger_invoices(env: Env) -> dict[str, dict[str, Any]]:
    return {i["InvoiceID"]: i for i in env.state.xero.invoices(env.tenant) if i["Type"] == "ACCREC"}


def test_backfill_mirrors_every_invoice_exactly(env: Env) -> None:
    [stats] = puller(env).run_once(entities=["invoice"])
    assert stats.complete
    mirror, ledger = store_invoices(env), ledger_invoices(env)
    assert set(ledger) <= set(mirror)
    for rid, raw in ledger.items():
        inv = mirror[rid]
        assert inv.number == raw["InvoiceNumber"]
        assert inv.balance == Decimal(str(raw["AmountDue"]))
        assert inv.total == Decimal(str(raw["Total"]))
        assert inv.status == raw["Status"].lower().replace("voided", "void")
        assert inv.row_version == raw["UpdatedDateUTC"]


def test_incremental_pull_sees_payments_edits_and_voids(env: Env) -> None:
    eng = puller(env)
    eng.run_once(entities=["invoice"])
    target = next(i for i in ledger_invoices(env).values() if i["Status"] == "AUTHORISED")
    to_void = next(
        i
        for i in ledger_invoices(env).values()
        if i["Status"] == "AUTHORISED"
        and i["InvoiceID"] != target["InvoiceID"]
        and Decimal(str(i["AmountPaid"])) == 0
    )
    env.state.xero.apply_payment(env.tenant, target["InvoiceID"], Decimal(str(target["AmountDue"])))
    env.state.xero.edit_invoice(env.tenant, to_void["InvoiceID"], Status="VOIDED")
    created = env.state.xero.add_invoice(env.tenant, total=Decimal("12.34"))
    [stats] = eng.run_once(entities=["invoice"])
    mirror = store_invoices(env)
    assert mirror[target["InvoiceID"]].status == "paid"
    assert mirror[target["InvoiceID"]].balance == 0
    assert mirror[to_void["InvoiceID"]].status == "void"
    assert mirror[created["InvoiceID"]].total == Decimal("12.34")
    # Only the overlap window and the three changes were read again, not the whole ledger.
    assert stats.records < len(ledger_invoices(env))


def test_crash_mid_backfill_resumes_without_gaps_or_duplicates(env: Env) -> None:
    for n in range(25):
        env.state.xero.add_invoice(env.tenant, total=Decimal(f"{n + 1}.00"))
    settings = env.settings.model_copy(
        update={"connections": [env.xero.model_copy(update={"page_size": 5})]}
    )
    first = PullEngine(settings, env.store, clock=env.clock)
    env.closers.append(first)
    [partial] = first.run_once(entities=["invoice"], max_pages=2)  # "crash" after two pages
    assert not partial.complete
    with env.store.session() as s:
        cursor = s.get(Cursor, (env.conn_id, "invoice"))
    assert cursor is not None and cursor.records == partial.records
    resumed = PullEngine(settings, env.store, clock=env.clock)
    env.closers.append(resumed)
    [rest] = resumed.run_once(entities=["invoice"])
    assert rest.complete
    mirror, ledger = store_invoices(env), ledger_invoices(env)
    assert set(mirror) == set(ledger)
    with env.store.session() as s:
        assert len(s.exec(select(Invoice)).all()) == len(ledger)  # no duplicates


def test_many_changes_in_the_same_second_are_not_missed(env: Env) -> None:
    settings = env.settings.model_copy(
        update={"connections": [env.xero.model_copy(update={"page_size": 3})]}
    )
    eng = PullEngine(settings, env.store, clock=env.clock)
    env.closers.append(eng)
    eng.run_once(entities=["invoice"])
    # Freeze the ledger's clock: every new invoice gets the same second (Xero adds 1 ms each).
    made = [env.state.xero.add_invoice(env.tenant, total=Decimal("1.00")) for _ in range(8)]
    eng.run_once(entities=["invoice"])
    mirror = store_invoices(env)
    assert all(m["InvoiceID"] in mirror for m in made)


def test_payments_pull_records_allocations(env: Env) -> None:
    puller(env).run_once(entities=["payment"])
    with env.store.session() as s:
        payments = s.exec(select(Payment)).all()
        allocations = s.exec(select(PaymentAllocation)).all()
    ledger = env.state.xero.payments(env.tenant)
    assert {p.remote_id for p in payments} >= {p["PaymentID"] for p in ledger}
    assert len(allocations) == len(payments)
    by_pk = {p.id: p for p in payments}
    for alloc in allocations:
        assert alloc.amount == by_pk[alloc.payment_pk].total_amount
        assert alloc.type in {"invoice", "bill"}
