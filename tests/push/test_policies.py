"""Push policies: over-payment, currency, dates, and a balance that moved (sandbox state)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import select

from connector.config import Settings
from connector.state import Attempt, PaymentIntent
from connector.sync.push import AllocationRequest, IntakeError, PushEngine
from tests.conftest import Env


def engine(env: Env, settings: Settings | None = None, **kw: Any) -> PushEngine:
    eng = PushEngine(settings or env.settings, env.store, clock=env.clock, **kw)
    env.closers.append(eng)
    return eng


def with_policy(env: Env, **changes: Any) -> Settings:
    conns = [
        c.model_copy(update=changes) if c.id == env.conn_id else c for c in env.settings.connections
    ]
    return env.settings.model_copy(update={"connections": conns})


def invoice(env: Env, total: str = "100.00", **kw: Any) -> dict[str, Any]:
    inv: dict[str, Any] = env.state.xero.add_invoice(env.tenant, total=Decimal(total), **kw)
    return inv


def due(env: Env, inv: dict[str, Any]) -> Decimal:
    return Decimal(str(env.state.xero.invoice(env.tenant, inv["InvoiceID"])["AmountDue"]))


def ours(env: Env, intent: PaymentIntent) -> list[dict[str, Any]]:
    return [
        p for p in env.state.xero.payments(env.tenant) if p.get("Reference") == intent.reference
    ]


def push(eng: PushEngine, env: Env, request: AllocationRequest) -> PaymentIntent:
    intent = eng.intake(request).intent
    [final] = eng.push_until_final([intent.id], timeout=30)
    return final


def test_over_payment_is_rejected_by_default_and_nothing_is_sent(env: Env) -> None:
    inv = invoice(env, "100.00")
    final = push(engine(env), env, AllocationRequest(env.conn_id, inv["InvoiceNumber"], "150.00"))
    assert final.state == "rejected" and final.reason_code == "amount_exceeds_balance"
    assert due(env, inv) == Decimal("100.00") and not ours(env, final)


def test_apply_up_to_balance_pays_exactly_the_open_balance(env: Env) -> None:
    inv = invoice(env, "100.00")
    eng = engine(env, with_policy(env, overpayment="apply_up_to_balance"))
    final = push(eng, env, AllocationRequest(env.conn_id, inv["InvoiceNumber"], "150.00"))
    assert final.state == "applied" and final.reason_code == "applied_up_to_balance"
    assert final.send_amount == Decimal("100.00")
    [payment] = ours(env, final)
    assert Decimal(str(payment["Amount"])) == Decimal("100.00")
    assert due(env, inv) == 0


def test_leave_unapplied_is_refused_where_the_provider_keeps_no_unapplied_credit(env: Env) -> None:
    inv = invoice(env, "100.00")
    eng = engine(env, with_policy(env, overpayment="leave_unapplied"))
    final = push(eng, env, AllocationRequest(env.conn_id, inv["InvoiceNumber"], "150.00"))
    assert final.state == "rejected" and final.reason_code == "unapplied_credit_not_supported"
    assert "apply_up_to_balance" in (final.reason_message or "")
    assert due(env, inv) == Decimal("100.00") and not ours(env, final)


def test_someone_else_paying_part_after_intake_is_a_conflict_with_both_amounts(env: Env) -> None:
    inv = invoice(env, "100.00")
    eng = engine(env)
    intent = eng.intake(AllocationRequest(env.conn_id, inv["InvoiceNumber"], "80.00")).intent
    env.state.xero.apply_payment(env.tenant, inv["InvoiceID"], Decimal("50.00"))
    [final] = eng.push_until_final([intent.id], timeout=30)
    assert final.state == "conflict" and final.reason_code == "balance_moved"
    assert "50.00" in (final.reason_message or "") and "80.00" in (final.reason_message or "")
    assert not ours(env, final) and due(env, inv) == Decimal("50.00")


def test_someone_else_paying_it_all_after_intake_is_already_settled(env: Env) -> None:
    inv = invoice(env, "100.00")
    eng = engine(env)
    intent = eng.intake(AllocationRequest(env.conn_id, inv["InvoiceNumber"], "80.00")).intent
    env.state.xero.pay_elsewhere(env.tenant, [inv["InvoiceID"]])
    [final] = eng.push_until_final([intent.id], timeout=30)
    assert final.state == "already_settled" and not ours(env, final)


def test_another_currency_needs_a_rate(env: Env) -> None:
    inv = invoice(env, "100.00")
    with pytest.raises(IntakeError) as err:
        engine(env).intake(
            AllocationRequest(env.conn_id, inv["InvoiceNumber"], "50.00", currency="EUR")
        )
    assert err.value.code == "currency_mismatch" and "currency_rate" in err.value.message
    with env.store.session() as s:
        assert len(s.exec(select(PaymentIntent)).all()) == 0


def test_a_currency_rate_converts_and_rounds_to_the_documents_minor_units(env: Env) -> None:
    inv = invoice(env, "100.00")
    request = AllocationRequest(
        env.conn_id, inv["InvoiceNumber"], "40.00", currency="EUR", currency_rate="1.08333"
    )
    final = push(engine(env), env, request)
    # 40.00 EUR x 1.08333 = 43.3332 USD -> 43.33 USD applied to the USD invoice.
    assert final.state == "applied" and final.amount == Decimal("43.33")
    assert final.payment_amount == Decimal("40.00") and final.payment_currency == "EUR"
    [payment] = ours(env, final)
    assert Decimal(str(payment["Amount"])) == Decimal("43.33")
    assert due(env, inv) == Decimal("56.67")


def test_a_transaction_date_is_the_callers_date_never_shifted(env: Env) -> None:
    inv = invoice(env, "100.00")
    request = AllocationRequest(
        env.conn_id, inv["InvoiceNumber"], "10.00", transaction_date=date(2026, 3, 31)
    )
    final = push(engine(env), env, request)
    [payment] = ours(env, final)
    assert str(payment["Date"]).startswith("/Date(") or str(payment["Date"]).startswith(
        "2026-03-31"
    )
    assert final.transaction_date == date(2026, 3, 31)


def test_the_default_date_is_today_in_the_ledgers_time_zone(env: Env) -> None:
    inv = invoice(env, "100.00")
    # 23:30 UTC on 31 March is already 1 April in Auckland (UTC+13 in March).
    env.clock.advance((datetime(2026, 3, 31, 23, 30, tzinfo=UTC) - env.clock.now()).total_seconds())
    eng = engine(env, with_policy(env, timezone="Pacific/Auckland"))
    intent = eng.intake(AllocationRequest(env.conn_id, inv["InvoiceNumber"], "10.00")).intent
    assert intent.transaction_date == date(2026, 4, 1)
    utc_eng = engine(env)
    other = utc_eng.intake(AllocationRequest(env.conn_id, inv["InvoiceNumber"], "11.00")).intent
    assert other.transaction_date == date(2026, 3, 31)


def test_a_dry_run_writes_nothing_anywhere(env: Env) -> None:
    paid = invoice(env, "100.00")
    env.state.xero.pay_elsewhere(env.tenant, [paid["InvoiceID"]])
    open_ = invoice(env, "100.00")
    draft = invoice(env, "100.00", status="DRAFT")
    before = len(env.state.xero.payments(env.tenant))
    plan = engine(env).plan(
        [
            AllocationRequest(env.conn_id, open_["InvoiceNumber"], "60.00"),
            AllocationRequest(env.conn_id, paid["InvoiceNumber"], "10.00"),
            AllocationRequest(env.conn_id, draft["InvoiceNumber"], "10.00"),
            AllocationRequest(env.conn_id, "NO-SUCH-1", "10.00"),
        ]
    )
    assert [p.outcome for p in plan] == ["send", "already_settled", "rejected", "invalid"]
    assert plan[0].send_amount == Decimal("60.00") and plan[0].balance_after == Decimal("40.00")
    assert plan[3].code == "document_not_found"
    assert len(env.state.xero.payments(env.tenant)) == before
    with env.store.session() as s:
        assert len(s.exec(select(PaymentIntent)).all()) == 0
        assert len(s.exec(select(Attempt)).all()) == 0


def test_without_confirm_reads_a_batch_costs_one_read_and_one_write(env: Env) -> None:
    docs = [invoice(env, "100.00") for _ in range(10)]
    settings = with_policy(env, confirm_reads=False)
    eng = engine(env, settings)
    adapter = eng.adapter(env.conn_id)
    before = adapter.http.rate.requests
    ids = [
        r.intent.id
        for r in eng.intake_many(
            [AllocationRequest(env.conn_id, d["InvoiceID"], "10.00") for d in docs]
        )
    ]
    after_intake = adapter.http.rate.requests
    rows = eng.push_until_final(ids, timeout=30)
    assert {r.state for r in rows} == {"applied"}
    assert after_intake - before == 1  # intake: one batched read of the ten
    assert adapter.http.rate.requests - after_intake == 2  # preflight read + one PUT
    assert all(r.result_balance is None for r in rows)  # nothing read back
    assert all(due(env, d) == Decimal("90.00") for d in docs)
