"""Exactly once, against the sandbox's ledger state (never against our own logs)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import col, select

from connector.errors import OutcomeUnknown
from connector.state import Attempt, ConnectionRecord, PaymentIntent
from connector.sync.push import AllocationRequest, IntakeError, PushEngine, SimulatedCrash
from tests.conftest import Env

LEASE_PAST = 10_000  # seconds: further than any lease, to let a restart take over


def engine(env: Env, **kw: Any) -> PushEngine:
    eng = PushEngine(env.settings, env.store, clock=env.clock, **kw)
    env.closers.append(eng)
    return eng


def new_invoice(env: Env, total: str = "100.00", **kw: Any) -> dict[str, Any]:
    inv: dict[str, Any] = env.state.xero.add_invoice(env.tenant, total=Decimal(total), **kw)
    return inv


def ours(env: Env, intent: PaymentIntent, include_deleted: bool = False) -> list[dict[str, Any]]:
    """Payments in the ledger that carry this intent's reference."""
    return [
        p
        for p in env.state.xero.payments(env.tenant, include_deleted=include_deleted)
        if p.get("Reference") == intent.reference
    ]


def pay(
    env: Env, eng: PushEngine, inv: dict[str, Any], amount: str, key: str, **kw: Any
) -> PaymentIntent:
    result = eng.intake(
        AllocationRequest(
            connection_id=env.conn_id,
            document=inv["InvoiceNumber"],
            amount=amount,
            idempotency_key=key,
            **kw,
        )
    )
    return result.intent


def drive(eng: PushEngine, intent: PaymentIntent, env: Env, rounds: int = 20) -> PaymentIntent:
    """Run the worker until the intent is final, moving time past any backoff."""
    for _ in range(rounds):
        eng.run_once(intent_ids=[intent.id])
        [current] = eng.intents([intent.id])
        if current.state in {"applied", "already_settled", "rejected", "conflict"}:
            return current
        env.clock.advance(120)
    raise AssertionError(f"intent stuck in {current.state}: {current.reason_message}")


def test_full_payment_marks_the_invoice_paid(env: Env) -> None:
    inv = new_invoice(env, "250.00")
    eng = engine(env)
    intent = drive(eng, pay(env, eng, inv, "250.00", "k-full"), env)
    assert intent.state == "applied"
    [payment] = ours(env, intent)
    assert payment["PaymentID"] == intent.remote_payment_id
    assert Decimal(str(payment["Amount"])) == Decimal("250.00")
    ledger = env.state.xero.invoice(env.tenant, inv["InvoiceID"])
    assert ledger["Status"] == "PAID"
    assert Decimal(str(ledger["AmountDue"])) == 0
    assert intent.result_balance == 0 and intent.result_status == "PAID"


def test_partial_payment_lowers_amount_due(env: Env) -> None:
    inv = new_invoice(env, "100.00")
    eng = engine(env)
    intent = drive(eng, pay(env, eng, inv, "40.01", "k-part"), env)
    assert intent.state == "applied"
    ledger = env.state.xero.invoice(env.tenant, inv["InvoiceID"])
    assert ledger["Status"] == "AUTHORISED"
    assert Decimal(str(ledger["AmountDue"])) == Decimal("59.99")
    assert len(ours(env, intent)) == 1


def test_response_dropped_after_commit_gives_one_payment(env: Env) -> None:
    inv = new_invoice(env, "80.00")
    eng = engine(env)
    intent = pay(env, eng, inv, "80.00", "k-drop")
    env.state.faults.update({"drop_after_commit_next": 1})
    eng.run_once(intent_ids=[intent.id])
    [after_drop] = eng.intents([intent.id])
    assert after_drop.state == "unknown"  # never resent blind
    assert len(ours(env, intent)) == 1  # the ledger did commit it
    final = drive(eng, intent, env)
    assert final.state == "applied"
    [payment] = ours(env, final)
    assert final.remote_payment_id == payment["PaymentID"]
    with env.store.session() as s:
        phases = [
            a.phase
            for a in s.exec(
                select(Attempt).where(Attempt.intent_id == intent.id).order_by(col(Attempt.id))
            ).all()
        ]
    assert "lookup" in phases  # adopted by the lookup, not by a second send
    assert phases.count("send") == 1


def test_500_after_commit_gives_one_payment(env: Env) -> None:
    inv = new_invoice(env, "80.00")
    eng = engine(env)
    intent = pay(env, eng, inv, "30.00", "k-500")
    env.state.faults.update({"error_500_after_commit_next": 1})
    final = drive(eng, intent, env)
    assert final.state == "applied"
    assert len(ours(env, final)) == 1


def test_drop_before_commit_is_resent_and_lands_once(env: Env) -> None:
    inv = new_invoice(env, "80.00")
    eng = engine(env)
    intent = pay(env, eng, inv, "80.00", "k-lost")
    env.state.faults.update({"drop_before_commit_next": 1})
    final = drive(eng, intent, env)
    assert final.state == "applied"
    assert len(ours(env, final)) == 1


def test_crash_after_send_before_confirm_then_restart(env: Env) -> None:
    inv = new_invoice(env, "70.00")
    crashing = engine(env, crash_at={"after_send"})
    intent = pay(env, crashing, inv, "70.00", "k-crash")
    with pytest.raises(SimulatedCrash):
        crashing.run_once(intent_ids=[intent.id])
    [mid] = crashing.intents([intent.id])
    assert mid.state == "sending" and mid.remote_payment_id is None
    assert len(ours(env, intent)) == 1
    env.clock.advance(LEASE_PAST / 100)  # past the dead worker's lease, inside Xero's key window
    restarted = engine(env)
    final = drive(restarted, intent, env)
    assert final.state == "applied"
    [payment] = ours(env, final)
    assert final.remote_payment_id == payment["PaymentID"]


def test_crash_after_send_and_key_window_passed(env: Env) -> None:
    inv = new_invoice(env, "70.00")
    crashing = engine(env, crash_at={"after_send"})
    intent = pay(env, crashing, inv, "70.00", "k-crash-late")
    with pytest.raises(SimulatedCrash):
        crashing.run_once(intent_ids=[intent.id])
    env.advance(7 * 60)  # Xero has forgotten the Idempotency-Key: the lookup must save us
    final = drive(engine(env), intent, env)
    assert final.state == "applied"
    assert len(ours(env, final)) == 1
    ledger = env.state.xero.invoice(env.tenant, inv["InvoiceID"])
    assert Decimal(str(ledger["AmountDue"])) == 0


def test_lost_request_after_key_window_goes_out_under_a_new_key_once(env: Env) -> None:
    inv = new_invoice(env, "60.00")
    crashing = engine(env, crash_at={"after_store"})  # stored, never sent
    intent = pay(env, crashing, inv, "60.00", "k-never-sent")
    with pytest.raises(SimulatedCrash):
        crashing.run_once(intent_ids=[intent.id])
    env.advance(7 * 60)
    final = drive(engine(env), intent, env)
    assert final.state == "applied"
    assert final.key_version == 2  # the old key was past the window: never reused
    assert len(ours(env, final)) == 1


def test_crash_before_apply_commit_with_everything_else_sent(env: Env) -> None:
    inv = new_invoice(env, "55.00")
    crashing = engine(env, crash_at={"after_apply"})
    intent = pay(env, crashing, inv, "55.00", "k-after-apply")
    with pytest.raises(SimulatedCrash):
        crashing.run_once(intent_ids=[intent.id])
    [row] = crashing.intents([intent.id])
    assert row.state == "applied"  # the apply committed; only the read-back was lost
    env.clock.advance(LEASE_PAST)
    assert engine(env).run_once(intent_ids=[intent.id]).total() == 0  # nothing left to do
    assert len(ours(env, intent)) == 1


def test_already_paid_invoice_is_settled_without_a_write(env: Env) -> None:
    inv = new_invoice(env, "90.00", amount_paid=Decimal("90.00"), status="PAID")
    before = len(env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"]))
    eng = engine(env)
    intent = drive(eng, pay(env, eng, inv, "90.00", "k-paid"), env)
    assert intent.state == "already_settled"
    assert len(env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"])) == before
    with env.store.session() as s:
        assert not s.exec(
            select(Attempt).where(Attempt.intent_id == intent.id, Attempt.phase == "send")
        ).all()


@pytest.mark.parametrize("status", ["DRAFT", "SUBMITTED", "VOIDED"])
def test_unapproved_or_void_invoice_is_rejected(env: Env, status: str) -> None:
    inv = new_invoice(env, "90.00", status=status)
    eng = engine(env)
    intent = drive(eng, pay(env, eng, inv, "10.00", f"k-{status}"), env)
    assert intent.state == "rejected"
    assert intent.reason_code == "document_not_payable"
    assert status in (intent.reason_message or "")
    assert env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"]) == []


def test_amount_over_amount_due_is_rejected(env: Env) -> None:
    inv = new_invoice(env, "50.00", amount_paid=Decimal("20.00"))
    eng = engine(env)
    intent = drive(eng, pay(env, eng, inv, "30.01", "k-over"), env)
    assert intent.state == "rejected"
    assert intent.reason_code == "amount_exceeds_balance"
    assert "30.01" in (intent.reason_message or "") and "30.00" in (intent.reason_message or "")
    assert (
        len(env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"])) == 1
    )  # the seeded one


def test_someone_pays_between_preflight_and_send(env: Env) -> None:
    inv = new_invoice(env, "100.00")
    crashing = engine(env, crash_at={"after_store"})
    intent = pay(env, crashing, inv, "100.00", "k-race")
    with pytest.raises(SimulatedCrash):
        crashing.run_once(intent_ids=[intent.id])
    env.state.xero.apply_payment(
        env.tenant, inv["InvoiceID"], Decimal("100.00"), reference="by hand"
    )
    env.clock.advance(LEASE_PAST / 100)
    final = drive(engine(env), intent, env)
    assert final.state == "already_settled"
    assert ours(env, final) == []


def test_someone_pays_part_between_preflight_and_send(env: Env) -> None:
    inv = new_invoice(env, "100.00")
    crashing = engine(env, crash_at={"after_store"})
    intent = pay(env, crashing, inv, "100.00", "k-race-part")
    with pytest.raises(SimulatedCrash):
        crashing.run_once(intent_ids=[intent.id])
    env.state.xero.apply_payment(
        env.tenant, inv["InvoiceID"], Decimal("30.00"), reference="by hand"
    )
    env.clock.advance(LEASE_PAST / 100)
    final = drive(engine(env), intent, env)
    assert final.state == "conflict"
    assert final.reason_code == "balance_moved"
    assert "70.00" in (final.reason_message or "") and "100.00" in (final.reason_message or "")
    assert ours(env, final) == []


def test_intake_is_idempotent_on_the_callers_key(env: Env) -> None:
    inv = new_invoice(env, "100.00")
    eng = engine(env)
    first = eng.intake(
        AllocationRequest(
            connection_id=env.conn_id,
            document=inv["InvoiceNumber"],
            amount="10.00",
            idempotency_key="same",
        )
    )
    again = eng.intake(
        AllocationRequest(
            connection_id=env.conn_id,
            document=inv["InvoiceNumber"],
            amount="10.0",
            idempotency_key="same",
        )
    )
    assert first.created and not again.created and again.intent.id == first.intent.id
    with pytest.raises(IntakeError) as info:
        eng.intake(
            AllocationRequest(
                connection_id=env.conn_id,
                document=inv["InvoiceNumber"],
                amount="11.00",
                idempotency_key="same",
            )
        )
    assert info.value.code == "idempotency_key_reused"
    with env.store.session() as s:
        assert len(s.exec(select(PaymentIntent)).all()) == 1
    drive(eng, first.intent, env)
    drive(eng, first.intent, env)
    assert len(ours(env, first.intent)) == 1


@pytest.mark.parametrize(
    ("document", "amount", "code"),
    [
        ("INV-9999", "10.00", "document_not_found"),
        (None, "0", "invalid_amount"),
        (None, "-1", "invalid_amount"),
        (None, "10.001", "invalid_amount"),
        (None, "NaN", "invalid_amount"),
        (None, "ten", "invalid_amount"),
    ],
)
def test_bad_allocations_are_refused_and_stored_nowhere(
    env: Env, document: str | None, amount: str, code: str
) -> None:
    inv = new_invoice(env, "100.00")
    eng = engine(env)
    with pytest.raises(IntakeError) as info:
        eng.intake(
            AllocationRequest(
                connection_id=env.conn_id, document=document or inv["InvoiceNumber"], amount=amount
            )
        )
    assert info.value.code == code
    with env.store.session() as s:
        assert s.exec(select(PaymentIntent)).all() == []
    assert env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"]) == []


def test_expired_access_token_is_refreshed_and_rotated(env: Env) -> None:
    inv = new_invoice(env, "100.00")
    eng = engine(env)
    drive(eng, pay(env, eng, inv, "10.00", "k-t1"), env)
    with env.store.session() as s:
        before = s.get(ConnectionRecord, env.conn_id)
    assert before is not None and before.refresh_token
    env.state.clock.advance(31 * 60)  # the ledger's clock: our access token is now expired there
    final = drive(eng, pay(env, eng, inv, "10.00", "k-t2"), env)
    assert final.state == "applied"
    with env.store.session() as s:
        after = s.get(ConnectionRecord, env.conn_id)
    assert after is not None
    assert after.refresh_token != before.refresh_token  # rotated, and the new one kept
    assert after.refresh_token == env.state.xero.refresh_token_for(env.tenant)


def test_revoked_grant_parks_the_connection_and_sends_nothing(env: Env) -> None:
    inv = new_invoice(env, "100.00")
    eng = engine(env)
    intent = pay(env, eng, inv, "10.00", "k-revoked")
    env.state.xero.revoke_grant(env.tenant)
    env.clock.advance(3600)  # our token is stale too, so a refresh is needed
    eng.run_once(intent_ids=[intent.id])
    [row] = eng.intents([intent.id])
    assert row.state in {"pending", "claimed"} or row.state == "pending"
    assert row.reason_code in {"auth_revoked", "connection_parked"}
    with env.store.session() as s:
        conn = s.get(ConnectionRecord, env.conn_id)
    assert conn is not None and conn.status == "needs_reauth"
    assert "reconnect" in (conn.status_reason or "")
    assert env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"]) == []


def test_outcome_unknown_is_a_distinct_error() -> None:
    assert not OutcomeUnknown.retriable and not OutcomeUnknown.terminal


def test_rate_limits_never_fail_an_allocation(env: Env) -> None:
    from connector.sandbox import RateLimitConfig

    invoices = [new_invoice(env, "10.00") for _ in range(5)]
    eng = engine(env)
    intents = [pay(env, eng, inv, "10.00", f"k-rl-{n}") for n, inv in enumerate(invoices)]
    # The fixture's sandbox has limits off; a tight one goes on for the pushes.
    env.state.rate_limiter.config = RateLimitConfig.coerce({"minute": 4})
    for _ in range(40):
        eng.run_once(intent_ids=[i.id for i in intents])
        rows = eng.intents([i.id for i in intents])
        if all(r.state == "applied" for r in rows):
            break
        env.advance(61)  # the ledger's minute window resets; our backoff passes
    assert [r.state for r in rows] == ["applied"] * 5
    rate = eng.adapter(env.conn_id).http.rate
    # The ledger's tight limit really bit: 429s answered, or calls held back by our
    # limiter after the ledger's remaining-quota header said the minute was spent.
    assert rate.throttled + rate.refused > 0
    for intent in rows:
        assert len(ours(env, intent)) == 1


def test_bill_payment_marks_a_xero_bill_paid(env: Env) -> None:
    bill = env.state.xero.add_invoice(
        env.tenant, total=Decimal("75.50"), type="ACCPAY", number="SUP-TEST-1"
    )
    eng = engine(env)
    result = eng.intake(
        AllocationRequest(
            connection_id=env.conn_id,
            document=bill["InvoiceID"],
            amount="75.50",
            idempotency_key="k-bill",
            document_type="bill",
        )
    )
    assert result.intent.contact_remote_id == bill["Contact"]["ContactID"]
    intent = drive(eng, result.intent, env)
    assert intent.state == "applied"
    [payment] = ours(env, intent)
    assert payment["PaymentType"] == "ACCPAYPAYMENT"
    ledger = env.state.xero.invoice(env.tenant, bill["InvoiceID"])
    assert ledger["Status"] == "PAID"
    from connector.schema import Bill

    with env.store.session() as s:
        stored = s.exec(select(Bill).where(Bill.remote_id == bill["InvoiceID"])).one()
    assert stored.status == "paid" and stored.balance == 0
