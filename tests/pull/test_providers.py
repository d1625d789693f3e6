"""Incremental pull of every entity from every ledger: creations, edits, payments, voids,
deletions; crash and resume; clock skew; provider date forms."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from connector.clock import ManualClock
from connector.config import load_settings
from connector.schema import Invoice, Payment
from connector.state import Cursor
from connector.store import Store
from connector.sync.pull import ENTITY_MODELS, PullEngine
from tests.conftest import Env

ALL = list(ENTITY_MODELS)


def engine_for(env: Env, provider: str, page_size: int = 4) -> tuple[PullEngine, str, str]:
    conn = next(c for c in env.settings.connections if c.provider == provider)
    conn = conn.model_copy(update={"page_size": page_size})
    settings = env.settings.model_copy(update={"connections": [conn]})
    eng = PullEngine(settings, env.store, prefetch=True)  # as `connector backfill` runs
    env.closers.append(eng)
    return eng, str(conn.id), str(conn.tenant)


def mirror(env: Env, model: type[Any], cid: str) -> dict[str, Any]:
    with env.store.session() as s:
        rows = s.exec(select(model).where(model.connection_id == cid)).all()
    return {r.remote_id: r for r in rows}


def test_xero_incremental_sees_every_kind_of_change(env: Env) -> None:
    eng, cid, tenant = engine_for(env, "xero")
    xero = env.state.xero
    eng.run_once(entities=ALL)
    open_ = [
        i
        for i in xero.invoices(tenant)
        if i["Type"] == "ACCREC" and i["Status"] == "AUTHORISED" and not i["AmountPaid"]
    ]
    to_pay, to_void, to_edit = open_[0], open_[1], open_[2]
    created = xero.add_invoice(tenant, total=Decimal("12.34"))
    xero.edit_invoice(tenant, to_edit["InvoiceID"], Reference="edited")
    paid = xero.apply_payment(tenant, to_pay["InvoiceID"], Decimal("5.00"))
    xero.edit_invoice(tenant, to_void["InvoiceID"], Status="VOIDED")
    seed_payment = next(p for p in xero.payments(tenant) if p["PaymentID"] != paid["PaymentID"])
    ok, _ = xero.delete_payment(tenant, seed_payment["PaymentID"])
    assert ok
    stats = {s.entity: s for s in eng.run_once(entities=ALL)}
    invoices = mirror(env, Invoice, cid)
    assert invoices[created["InvoiceID"]].total == Decimal("12.34")
    assert invoices[to_edit["InvoiceID"]].reference == "edited"
    assert invoices[to_pay["InvoiceID"]].balance == Decimal(str(to_pay["AmountDue"])) - 5
    assert invoices[to_void["InvoiceID"]].status == "void"
    payments = mirror(env, Payment, cid)
    assert payments[paid["PaymentID"]].total_amount == Decimal("5.00")
    assert payments[seed_payment["PaymentID"]].deleted  # kept, flagged, never dropped
    assert payments[seed_payment["PaymentID"]].status == "deleted"
    assert stats["payment"].deleted >= 1 and stats["invoice"].deleted >= 1
    # Xero's /Date(ms+0000)/ lands as the same instant in UTC.
    raw = next(i for i in xero.invoices(tenant) if i["InvoiceID"] == created["InvoiceID"])
    millis = int(raw["UpdatedDateUTC"][6:-7])
    stored = invoices[created["InvoiceID"]].remote_updated_at
    assert stored == datetime.fromtimestamp(millis / 1000, UTC)
    assert invoices[created["InvoiceID"]].invoice_date == date.fromisoformat(raw["DateString"][:10])


def test_quickbooks_incremental_merges_cdc_deletions(env: Env) -> None:
    eng, cid, realm = engine_for(env, "quickbooks")
    qbo = env.state.quickbooks
    eng.run_once(entities=ALL)
    open_ = [
        i for i in qbo.invoices(realm) if Decimal(str(i["Balance"])) == Decimal(str(i["TotalAmt"]))
    ]
    to_pay, to_void, to_edit, to_delete = open_[:4]
    created = qbo.add_invoice(realm, total=Decimal("12.34"))
    qbo.edit_invoice(realm, to_edit["Id"], PrivateNote="edited")
    paid = qbo.apply_payment(realm, to_pay["Id"], Decimal("5.00"))
    qbo.void_invoice(realm, to_void["Id"])
    qbo.delete_invoice(realm, to_delete["Id"])
    stats = {s.entity: s for s in eng.run_once(entities=ALL)}
    invoices = mirror(env, Invoice, cid)
    assert invoices[created["Id"]].total == Decimal("12.34")
    assert invoices[to_pay["Id"]].balance == Decimal(str(to_pay["Balance"])) - 5
    assert invoices[to_void["Id"]].balance == 0
    assert invoices[to_void["Id"]].status == "void"
    gone = invoices[to_delete["Id"]]
    assert gone.deleted and gone.status == "deleted"
    assert gone.total == Decimal(str(to_delete["TotalAmt"]))  # the tombstone keeps what we had
    assert stats["invoice"].deleted >= 2
    assert mirror(env, Payment, cid)[paid["Id"]].total_amount == Decimal("5.00")
    # LastUpdatedTime carries the realm's offset (-08:00); the store holds the UTC instant.
    raw = qbo.invoice(realm, created["Id"])
    stamp = datetime.fromisoformat(raw["MetaData"]["LastUpdatedTime"])
    assert invoices[created["Id"]].remote_updated_at == stamp.astimezone(UTC)


def test_quickbooks_deletion_of_an_unknown_record_is_a_tombstone(env: Env) -> None:
    eng, cid, realm = engine_for(env, "quickbooks")
    qbo = env.state.quickbooks
    eng.run_once(entities=["invoice"])
    made = qbo.add_invoice(realm, total=Decimal("3.00"))
    qbo.delete_invoice(realm, made["Id"])  # created and deleted between two pulls
    eng.run_once(entities=["invoice"])
    tomb = mirror(env, Invoice, cid)[made["Id"]]
    assert tomb.deleted and tomb.status == "deleted"


def test_netsuite_incremental_and_date_only_fields(env: Env) -> None:
    eng, cid, account = engine_for(env, "netsuite")
    ns = env.state.netsuite
    eng.run_once(entities=ALL)
    open_ = [i for i in ns.invoices(account) if i.get("status", {}).get("id", "A") == "A"]
    to_pay, to_edit = open_[0], open_[1]
    created = ns.add_invoice(account, total=Decimal("12.34"), tran_date=date(2026, 1, 31))
    ns.edit_invoice(account, to_edit["id"], memo="edited", dueDate="2027-02-28")
    paid = ns.apply_payment(account, to_pay["id"], Decimal("5.00"))
    eng.run_once(entities=ALL)
    invoices = mirror(env, Invoice, cid)
    new = invoices[str(created["id"])]
    assert new.total == Decimal("12.34")
    assert new.invoice_date == date(2026, 1, 31)  # a date-only field stays that calendar day
    assert invoices[str(to_edit["id"])].due_date == date(2027, 2, 28)
    before = Decimal(str(ns.invoice(account, to_pay["id"])["amountRemaining"]))
    assert invoices[str(to_pay["id"])].balance == before
    assert mirror(env, Payment, cid)[str(paid["id"])].total_amount == Decimal("5.00")
    stored = new.remote_updated_at
    assert stored is not None and stored.utcoffset() is not None
    assert stored.utcoffset() == UTC.utcoffset(stored)


@pytest.mark.parametrize("provider", ["xero", "quickbooks", "netsuite"])
def test_crash_after_a_committed_page_resumes_without_gaps_or_duplicates(
    env: Env, provider: str
) -> None:
    eng, cid, _ = engine_for(env, provider, page_size=3)

    class Crash(Exception):
        pass

    def crash_after_two(stats: Any, _page: Any) -> None:
        if stats.pages == 2:
            raise Crash

    with pytest.raises(Crash):
        eng.run_once(entities=["invoice"], on_page=crash_after_two)
    with env.store.session() as s:
        cursor = s.get(Cursor, (cid, "invoice"))
    assert cursor is not None and cursor.records == 6  # both pages committed
    again, _, _ = engine_for(env, provider, page_size=3)
    [rest] = again.run_once(entities=["invoice"])
    assert rest.complete
    fresh_store_ids = set(mirror(env, Invoice, cid))
    full, _, _ = engine_for(env, provider, page_size=50)
    with env.store.session() as s:
        rows = s.exec(select(Invoice).where(Invoice.connection_id == cid)).all()
    assert len(rows) == len(fresh_store_ids)  # no duplicates
    direct = full.adapter(cid).list_changed("invoice", None, 1, 50)
    assert {str(r["remote_id"]) for r in direct.records} == fresh_store_ids  # no gaps


@pytest.fixture
def skewed(tmp_path: Path) -> Iterator[Env]:
    """A sandbox whose clock runs ten minutes behind ours."""
    from connector.sandbox import SandboxServer, SandboxState, write_config
    from connector.sandbox.clock import Clock

    state = SandboxState(seed=11, invoices=6, rate_limits=False, clock=Clock(offset_seconds=-600))
    with SandboxServer(state, host="127.0.0.1", port=0) as server:
        path = write_config(
            state,
            tmp_path / "c.toml",
            base_url=server.url,
            database_url=f"sqlite:///{tmp_path / 'c.db'}",
        )
        settings = load_settings(path)
        store = Store(settings.database.url)
        store.upgrade()
        environment = Env(state, server, path, settings, store, ManualClock(), [])
        yield environment
        for closer in environment.closers:
            closer.close()
        store.dispose()


@pytest.mark.parametrize("provider", ["xero", "quickbooks", "netsuite"])
def test_ledger_clock_behind_ours_and_same_second_bursts_are_not_missed(
    skewed: Env, provider: str
) -> None:
    env = skewed
    eng, cid, tenant = engine_for(env, provider, page_size=2)
    eng.run_once(entities=["invoice"])
    add = {
        "xero": lambda: env.state.xero.add_invoice(tenant, total=Decimal("1.00"))["InvoiceID"],
        "quickbooks": lambda: env.state.quickbooks.add_invoice(tenant, total=Decimal("1.00"))["Id"],
        "netsuite": lambda: str(
            env.state.netsuite.add_invoice(tenant, total=Decimal("1.00"))["id"]
        ),
    }[provider]
    made = [add() for _ in range(7)]  # a burst: most share one second of the ledger's clock
    eng.run_once(entities=["invoice"])
    assert set(made) <= set(mirror(env, Invoice, cid))
    more = [add() for _ in range(3)]
    eng.run_once(entities=["invoice"])
    assert set(more) <= set(mirror(env, Invoice, cid))


def test_netsuite_deleted_payment_becomes_a_tombstone(env: Env) -> None:
    eng, cid, account = engine_for(env, "netsuite")
    ns = env.state.netsuite
    invoice = ns.add_invoice(account, total=Decimal("30.00"))
    paid = ns.apply_payment(account, invoice["id"], Decimal("30.00"))
    eng.run_once(entities=["payment"])
    assert not mirror(env, Payment, cid)[str(paid["id"])].deleted
    with ns.lock:
        company = ns.company(account)
        ns.delete_payment(account, company.transactions[int(paid["id"])])
    eng.run_once(entities=["payment", "invoice"])
    tomb = mirror(env, Payment, cid)[str(paid["id"])]
    assert tomb.deleted and tomb.status == "deleted"
    assert tomb.total_amount == Decimal("30.00")  # the tombstone keeps what we knew
    assert mirror(env, Invoice, cid)[str(invoice["id"])].balance == Decimal("30.00")
