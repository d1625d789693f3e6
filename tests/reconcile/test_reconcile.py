"""`reconcile()` against the real sandbox: every assertion that matters is on the ledger.

Each scenario builds a state of the ledger (an unknown outcome, an orphan, a double, a
payment a person deleted) and checks that reconcile settles or reports it, and that
the clearing line closes to zero exactly when the ledger and our intents agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import col, select

from connector.state import Attempt, PaymentIntent
from connector.store import Store
from connector.sync.push import AllocationRequest, PushEngine
from connector.sync.reconcile import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_WAITING,
    ReconcileReport,
    reconcile,
)
from tests.conftest import Env, _reset_pg

FINAL = {"applied", "already_settled", "rejected", "conflict"}


def engine(env: Env, **kw: Any) -> PushEngine:
    eng = PushEngine(env.settings, env.store, clock=env.clock, **kw)
    env.closers.append(eng)
    return eng


def run(env: Env, cid: str | None = None, **kw: Any) -> ReconcileReport:
    kw.setdefault("seed", 7)
    return reconcile(
        env.settings, env.store, connection_ids=[cid or env.conn_id], clock=env.clock, **kw
    )


def xero_invoice(env: Env, total: str = "100.00", **kw: Any) -> dict[str, Any]:
    inv: dict[str, Any] = env.state.xero.add_invoice(env.tenant, total=Decimal(total), **kw)
    return inv


def intake(
    env: Env,
    eng: PushEngine,
    document: str,
    amount: str,
    key: str,
    cid: str | None = None,
    **kw: Any,
) -> PaymentIntent:
    return eng.intake(
        AllocationRequest(
            connection_id=cid or env.conn_id,
            document=document,
            amount=amount,
            idempotency_key=key,
            **kw,
        )
    ).intent


def drive(env: Env, eng: PushEngine, intent: PaymentIntent) -> PaymentIntent:
    for _ in range(20):
        eng.run_once(intent_ids=[intent.id])
        [current] = eng.intents([intent.id])
        if current.state in FINAL:
            return current
        env.clock.advance(120)
    raise AssertionError(f"intent stuck in {current.state}: {current.reason_message}")


def xero_ours(env: Env, reference: str, include_deleted: bool = False) -> list[dict[str, Any]]:
    """Payments in the Xero ledger whose Reference is exactly ``reference``."""
    return [
        p
        for p in env.state.xero.payments(env.tenant, include_deleted=include_deleted)
        if p.get("Reference") == reference
    ]


def applied(env: Env, total: str = "100.00", amount: str = "40.00", key: str = "k") -> Any:
    """One allocation pushed to Xero and applied; returns (invoice, intent)."""
    inv = xero_invoice(env, total)
    eng = engine(env)
    intent = drive(env, eng, intake(env, eng, inv["InvoiceNumber"], amount, key))
    assert intent.state == "applied"
    return inv, intent


def kinds(report: ReconcileReport) -> list[str]:
    return sorted(f.kind for f in report.findings)


# -- 1. open intents are settled ---------------------------------------------------------
def test_unknown_outcome_is_settled_to_applied_with_no_duplicate(env: Env) -> None:
    inv = xero_invoice(env, "80.00")
    eng = engine(env)
    intent = intake(env, eng, inv["InvoiceNumber"], "80.00", "k-unknown")
    env.state.faults.update({"drop_after_commit_next": 1})
    eng.run_once(intent_ids=[intent.id])
    [lost] = eng.intents([intent.id])
    assert lost.state == "unknown"  # the response was lost after the ledger committed
    assert len(xero_ours(env, intent.reference)) == 1

    report = run(env)

    [settled] = eng.intents([intent.id])
    assert settled.state == "applied"
    [payment] = xero_ours(env, intent.reference, include_deleted=True)  # still exactly one
    assert settled.remote_payment_id == payment["PaymentID"]
    assert env.state.xero.invoice(env.tenant, inv["InvoiceID"])["Status"] == "PAID"
    with env.store.session() as s:
        sends = s.exec(
            select(Attempt).where(Attempt.intent_id == intent.id, Attempt.phase == "send")
        ).all()
    assert len(sends) == 1  # settled by the lookup, never sent twice
    [conn] = report.connections
    assert conn.settled == {"applied": 1}
    assert report.findings == [] and report.waiting == []
    assert conn.clearing.applied_count == conn.clearing.found_count == 1
    assert conn.clearing.found_amounts == {"USD": Decimal("80.00")}
    assert report.ok and report.complete and report.exit_code == EXIT_OK


def test_sending_intent_of_a_crashed_worker_is_settled_by_lookup(env: Env) -> None:
    from connector.sync.push import SimulatedCrash

    inv = xero_invoice(env, "70.00")
    crashing = engine(env, crash_at={"after_send"})
    intent = intake(env, crashing, inv["InvoiceNumber"], "70.00", "k-crash")
    with pytest.raises(SimulatedCrash):
        crashing.run_once(intent_ids=[intent.id])
    env.advance(7 * 60)  # the dead worker's lease and Xero's key window have both passed

    report = run(env)

    [row] = crashing.intents([intent.id])
    assert row.state == "applied"
    [payment] = xero_ours(env, intent.reference, include_deleted=True)
    assert payment["PaymentID"] == row.remote_payment_id
    assert report.ok and report.exit_code == EXIT_OK


def test_intent_held_by_a_live_worker_is_left_alone_and_reported_waiting(env: Env) -> None:
    from datetime import timedelta

    inv = xero_invoice(env, "30.00")
    eng = engine(env)
    intent = intake(env, eng, inv["InvoiceNumber"], "30.00", "k-held")
    [held] = env.store.claim_intents(
        worker="other-worker",
        now=env.clock.now(),
        lease=timedelta(hours=1),
        intent_ids=[intent.id],
    )
    assert held.id == intent.id

    report = run(env)

    [row] = eng.intents([intent.id])
    assert row.state == "claimed" and row.lease_owner == "other-worker"
    assert env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"]) == []
    [waiting] = report.waiting
    assert waiting.intent_id == intent.id and waiting.held_by == "other-worker"
    assert report.ok and not report.complete and report.exit_code == EXIT_WAITING


def test_parked_connection_is_reported_waiting_with_its_reason(env: Env) -> None:
    inv = xero_invoice(env, "30.00")
    eng = engine(env)
    intent = intake(env, eng, inv["InvoiceNumber"], "30.00", "k-parked")
    env.state.xero.revoke_grant(env.tenant)
    env.clock.advance(3600)  # our access token is stale: the refresh meets the revoked grant

    report = run(env)

    assert env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"]) == []
    [waiting] = report.waiting
    assert waiting.intent_id == intent.id
    assert waiting.state == "pending"
    assert waiting.reason_code in {"auth_revoked", "connection_parked"}
    assert "reconnect" in waiting.reason or "revoked" in waiting.reason
    assert report.connections[0].pull_error is not None  # the mirror could not be refreshed
    assert report.exit_code == EXIT_WAITING


# -- 2/3. what the ledger holds that it should not, or lost ------------------------------
@pytest.mark.parametrize("reference", ["{marker}", "Customer 42 ({marker})"])
def test_orphan_payment_with_our_marker_is_reported(env: Env, reference: str) -> None:
    _, intent = applied(env, key="k-ok")
    stray = xero_invoice(env, "50.00")
    marker = f"cx-{uuid.uuid4().hex[:16]}"
    orphan = env.state.xero.apply_payment(
        env.tenant, stray["InvoiceID"], Decimal("20.00"), reference=reference.format(marker=marker)
    )

    report = run(env)

    [finding] = report.findings
    assert finding.kind == "orphan_payment"
    assert finding.payment_ids == (orphan["PaymentID"],)
    assert finding.marker == marker and finding.intent_id is None
    # The orphan is in the ledger, live, and no intent of ours carries its marker.
    assert env.state.xero.find_payment(env.tenant, orphan["PaymentID"])["Status"] == "AUTHORISED"
    with env.store.session() as s:
        refs = s.exec(select(PaymentIntent.reference)).all()
    assert not any(marker in r for r in refs)
    clearing = report.connections[0].clearing
    assert clearing.is_zero  # the orphan maps to no applied intent: only ours is counted
    assert (clearing.applied_count, clearing.found_count) == (1, 1)
    assert [p["PaymentID"] for p in xero_ours(env, intent.reference)] == [intent.remote_payment_id]
    assert not report.ok and report.exit_code == EXIT_FINDINGS


def test_payment_duplicated_in_the_ledger_is_reported_and_does_not_clear(env: Env) -> None:
    inv, intent = applied(env, total="100.00", amount="40.00", key="k-dup")
    double = env.state.xero.apply_payment(
        env.tenant, inv["InvoiceID"], Decimal("40.00"), reference=intent.reference
    )
    assert len(xero_ours(env, intent.reference)) == 2  # the ledger really holds two

    report = run(env)

    dups = [f for f in report.findings if f.kind == "duplicate_payments"]
    assert len(dups) == 1
    assert dups[0].intent_id == intent.id
    assert set(dups[0].payment_ids) == {intent.remote_payment_id, double["PaymentID"]}
    clearing = report.connections[0].clearing
    assert (clearing.applied_count, clearing.found_count) == (1, 2)
    assert clearing.difference_amounts == {"USD": Decimal("-40.00")}
    assert clearing.render().endswith("= -1 (-40.00 USD)")
    assert not report.ok and report.exit_code == EXIT_FINDINGS


def test_unknown_intent_with_two_payments_in_the_ledger_is_a_reported_conflict(env: Env) -> None:
    inv = xero_invoice(env, "100.00")
    eng = engine(env)
    intent = intake(env, eng, inv["InvoiceNumber"], "30.00", "k-ignore")
    # The first send lands but its answer is lost; then a second payment with our
    # reference appears (what a provider that ignores the idempotency key produces).
    env.state.faults.update({"drop_after_commit_next": 1})
    eng.run_once(intent_ids=[intent.id])
    with env.store.session() as s:
        row = s.get(PaymentIntent, intent.id)
        assert row is not None and row.state == "unknown"
    env.state.xero.apply_payment(
        env.tenant, inv["InvoiceID"], Decimal("30.00"), reference=intent.reference
    )

    report = run(env)

    [row] = eng.intents([intent.id])
    assert len(xero_ours(env, intent.reference)) == 2
    assert row.state == "conflict" and row.reason_code == "duplicate_payments"
    assert "duplicate_payments" in kinds(report)
    assert not report.ok and report.exit_code == EXIT_FINDINGS


@pytest.mark.parametrize(
    ("sample", "pull"),
    [(50, False), (0, True)],
    ids=["found-by-sample-lookup", "found-by-mirror-scan"],
)
def test_payment_deleted_by_a_person_after_apply_is_reported(
    env: Env, sample: int, pull: bool
) -> None:
    inv, intent = applied(env, total="60.00", amount="60.00", key="k-del")
    ok, _ = env.state.xero.delete_payment(env.tenant, intent.remote_payment_id)
    assert ok
    assert xero_ours(env, intent.reference) == []  # nothing live carries our reference
    assert env.state.xero.invoice(env.tenant, inv["InvoiceID"])["Status"] == "AUTHORISED"

    report = run(env, sample=sample, pull=pull)

    missing = [f for f in report.findings if f.kind == "applied_payment_missing"]
    assert [f.intent_id for f in missing] == [intent.id]
    assert missing[0].payment_ids == (intent.remote_payment_id,)
    assert not report.ok and report.exit_code == EXIT_FINDINGS
    if pull:  # the mirror knows the payment is gone: the books do not clear
        clearing = report.connections[0].clearing
        assert (clearing.applied_count, clearing.found_count) == (1, 0)
        assert clearing.difference_amounts == {"USD": Decimal("60.00")}


def test_payment_on_a_rejected_intent_is_reported(env: Env) -> None:
    inv = xero_invoice(env, "50.00", status="DRAFT")
    eng = engine(env)
    intent = drive(env, eng, intake(env, eng, inv["InvoiceNumber"], "10.00", "k-draft"))
    assert intent.state == "rejected"
    env.state.xero.edit_invoice(env.tenant, inv["InvoiceID"], Status="AUTHORISED")
    stray = env.state.xero.apply_payment(
        env.tenant, inv["InvoiceID"], Decimal("10.00"), reference=intent.reference
    )

    report = run(env)

    [finding] = report.findings
    assert finding.kind == "payment_on_unapplied_intent"
    assert finding.intent_id == intent.id and finding.payment_ids == (stray["PaymentID"],)
    assert report.exit_code == EXIT_FINDINGS


# -- 4. a clean run clears to zero, on every ledger ----------------------------------------
def _connection(env: Env, provider: str) -> Any:
    return next(c for c in env.settings.connections if c.provider == provider)


def _new_document(env: Env, provider: str, total: Decimal) -> str:
    tenant = _connection(env, provider).tenant
    if provider == "xero":
        return str(env.state.xero.add_invoice(tenant, total=total)["InvoiceNumber"])
    if provider == "quickbooks":
        return str(env.state.quickbooks.add_invoice(tenant, total=total)["Id"])
    return str(env.state.netsuite.add_invoice(tenant, total=total)["id"])


def _ledger_references(env: Env, provider: str) -> list[tuple[str, str, Decimal]]:
    """(payment id, where our reference is kept, amount) of every live ledger payment."""
    tenant = _connection(env, provider).tenant
    if provider == "xero":
        return [
            (p["PaymentID"], str(p.get("Reference") or ""), Decimal(str(p["Amount"])))
            for p in env.state.xero.payments(tenant)
        ]
    if provider == "quickbooks":
        return [
            (p["Id"], str(p.get("PrivateNote") or ""), Decimal(str(p["TotalAmt"])))
            for p in env.state.quickbooks.payments(tenant)
        ]
    return [
        (str(p["id"]), str(p.get("memo") or ""), Decimal(str(p["payment"])))
        for p in env.state.netsuite.customer_payments(tenant)
    ]


@pytest.mark.parametrize("provider", ["xero", "quickbooks", "netsuite"])
def test_clean_run_of_twenty_allocations_clears_to_zero(env: Env, provider: str) -> None:
    cid = _connection(env, provider).id
    eng = engine(env)
    intents = []
    for n in range(20):
        total = Decimal(100 + n)
        amount = total if n % 3 else (total / 2).quantize(Decimal("0.01"))
        document = _new_document(env, provider, total)
        # Some carry a caller's reference: our marker then sits inside "ref (marker)".
        reference = f"Batch 7 line {n}" if n % 5 == 0 else None
        intents.append(
            intake(env, eng, document, str(amount), f"k-{n}", cid=cid, reference=reference)
        )
    final = [drive(env, eng, i) for i in intents]
    assert [i.state for i in final] == ["applied"] * 20

    report = run(env, cid, sample=10)

    assert report.findings == [] and report.waiting == [] and report.unchecked == []
    [conn] = report.connections
    assert conn.sampled == 10
    total_applied = sum((i.amount for i in final), Decimal(0))
    assert conn.clearing.applied_count == conn.clearing.found_count == 20
    assert conn.clearing.applied_amounts == conn.clearing.found_amounts == {"USD": total_applied}
    shown = f"{total_applied.quantize(Decimal('0.01')):,} USD"
    assert conn.clearing.render() == (
        f"clearing {cid}: applied by us 20 ({shown}) \u2212 found in ledger 20 ({shown}) = 0"
    )
    assert report.ok and report.complete and report.exit_code == EXIT_OK
    # The ledger agrees on its own terms: one live payment per intent, the one we recorded.
    ledger = _ledger_references(env, provider)
    for intent in final:
        mine = [(pid, amount) for pid, ref, amount in ledger if ref == intent.reference]
        assert mine == [(intent.remote_payment_id, intent.amount)]
    assert (
        sum((a for _, ref, a in ledger if any(i.reference == ref for i in final)), Decimal(0))
        == total_applied
    )


def test_final_intents_that_sent_nothing_check_clean(env: Env) -> None:
    paid = xero_invoice(env, "90.00", amount_paid=Decimal("90.00"), status="PAID")
    draft = xero_invoice(env, "20.00", status="DRAFT")
    eng = engine(env)
    settled = drive(env, eng, intake(env, eng, paid["InvoiceNumber"], "90.00", "k-paid"))
    rejected = drive(env, eng, intake(env, eng, draft["InvoiceNumber"], "20.00", "k-draft"))
    assert (settled.state, rejected.state) == ("already_settled", "rejected")
    _, first = applied(env, key="k-fine-1")
    _, second = applied(env, key="k-fine-2")

    report = run(env)

    assert report.connections[0].sampled == 4  # every final intent was looked up
    assert report.findings == []
    clearing = report.connections[0].clearing
    assert (clearing.applied_count, clearing.found_count) == (2, 2)
    assert xero_ours(env, settled.reference) == [] and xero_ours(env, rejected.reference) == []
    assert [p["PaymentID"] for p in xero_ours(env, first.reference)] == [first.remote_payment_id]
    assert [p["PaymentID"] for p in xero_ours(env, second.reference)] == [second.remote_payment_id]
    assert report.ok and report.exit_code == EXIT_OK


def test_report_as_json_is_machine_readable(env: Env) -> None:
    import json

    _, intent = applied(env, amount="12.34", key="k-json")
    data = json.loads(json.dumps(run(env).as_dict()))
    assert data["ok"] is True and data["exit_code"] == 0
    [conn] = data["connections"]
    assert conn["clearing"]["applied"] == {"count": 1, "amounts": {"USD": "12.34"}}
    assert conn["clearing"]["difference"] == {"count": 0, "amounts": {}}
    with env.store.session() as s:
        assert (
            s.exec(select(PaymentIntent.state).where(col(PaymentIntent.id) == intent.id)).one()
            == "applied"
        )


@pytest.fixture
def pg_store(pg_server_url: str) -> Iterator[Store]:
    """A migrated store on an empty schema of the local PostgreSQL."""
    _reset_pg(pg_server_url)
    store = Store(pg_server_url)
    store.upgrade()
    yield store
    store.dispose()


@pytest.mark.postgres
def test_on_postgresql_settles_and_reports_every_kind_at_once(env: Env, pg_store: Store) -> None:
    store = pg_store
    eng = PushEngine(env.settings, store, clock=env.clock)
    env.closers.append(eng)

    def pay(total: str, amount: str, key: str) -> tuple[dict[str, Any], PaymentIntent]:
        inv = xero_invoice(env, total)
        intent = eng.intake(
            AllocationRequest(
                connection_id=env.conn_id,
                document=inv["InvoiceNumber"],
                amount=amount,
                idempotency_key=key,
            )
        ).intent
        return inv, intent

    _, lost = pay("80.00", "80.00", "pg-unknown")
    env.state.faults.update({"drop_after_commit_next": 1})
    eng.run_once(intent_ids=[lost.id])
    assert eng.intents([lost.id])[0].state == "unknown"
    doubled_inv, doubled = pay("100.00", "40.00", "pg-double")
    _, deleted = pay("30.00", "30.00", "pg-deleted")
    _, fine = pay("25.00", "25.00", "pg-fine")
    for intent in (doubled, deleted, fine):
        eng.run_once(intent_ids=[intent.id])
    env.state.xero.apply_payment(
        env.tenant, doubled_inv["InvoiceID"], Decimal("40.00"), reference=doubled.reference
    )
    [deleted] = eng.intents([deleted.id])
    assert env.state.xero.delete_payment(env.tenant, deleted.remote_payment_id)[0]
    stray = xero_invoice(env, "10.00")
    orphan = env.state.xero.apply_payment(
        env.tenant, stray["InvoiceID"], Decimal("10.00"), reference=f"cx-{uuid.uuid4().hex[:16]}"
    )

    report = reconcile(
        env.settings, store, connection_ids=[env.conn_id], clock=env.clock, engine=eng, seed=3
    )

    [settled] = eng.intents([lost.id])
    assert settled.state == "applied"
    assert len(xero_ours(env, settled.reference)) == 1
    by_kind = {f.kind: f for f in report.findings}
    assert sorted(by_kind) == ["applied_payment_missing", "duplicate_payments", "orphan_payment"]
    assert by_kind["applied_payment_missing"].intent_id == deleted.id
    assert by_kind["duplicate_payments"].intent_id == doubled.id
    assert by_kind["orphan_payment"].payment_ids == (orphan["PaymentID"],)
    clearing = report.connections[0].clearing
    # applied: lost 80 + doubled 40 + deleted 30 + fine 25; found: 80 + 40 + 40 + 25.
    assert (clearing.applied_count, clearing.found_count) == (4, 4)
    assert clearing.difference_amounts == {"USD": Decimal("-10.00")}
    assert not report.ok and report.exit_code == EXIT_FINDINGS
