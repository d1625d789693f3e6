"""Xero, AR and AP alike: the scenarios every adapter is held to, against the sandbox."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import select

from connector.state import Attempt, ConnectionRecord
from connector.sync.push import AllocationRequest, PushEngine
from tests.conftest import Env
from tests.push.test_exactly_once import drive, engine, ours

KINDS = {"invoice": "ACCREC", "bill": "ACCPAY"}


def document(env: Env, kind: str, total: str = "100.00", **kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = env.state.xero.add_invoice(
        env.tenant, total=Decimal(total), type=KINDS[kind], **kw
    )
    return doc


def pay(env: Env, eng: PushEngine, doc: dict[str, Any], kind: str, amount: str, key: str) -> Any:
    return eng.intake(
        AllocationRequest(
            connection_id=env.conn_id,
            document=doc["InvoiceID"],
            amount=amount,
            idempotency_key=key,
            document_type=kind,
        )
    ).intent


def amount_due(env: Env, doc: dict[str, Any]) -> Decimal:
    return Decimal(str(env.state.xero.invoice(env.tenant, doc["InvoiceID"])["AmountDue"]))


@pytest.mark.parametrize("kind", KINDS)
def test_full_and_partial(env: Env, kind: str) -> None:
    eng = engine(env)
    full, part = document(env, kind, "80.00"), document(env, kind, "80.00")
    a = drive(eng, pay(env, eng, full, kind, "80.00", f"{kind}-full"), env)
    b = drive(eng, pay(env, eng, part, kind, "30.00", f"{kind}-part"), env)
    assert (a.state, b.state) == ("applied", "applied")
    assert amount_due(env, full) == 0 and amount_due(env, part) == Decimal("50.00")
    expected_type = "ACCPAYPAYMENT" if kind == "bill" else "ACCRECPAYMENT"
    assert [p["PaymentType"] for p in ours(env, a) + ours(env, b)] == [expected_type] * 2


@pytest.mark.parametrize("kind", KINDS)
def test_paid_elsewhere_is_already_settled_without_a_write(env: Env, kind: str) -> None:
    eng = engine(env)
    doc = document(env, kind, "40.00")
    intent = pay(env, eng, doc, kind, "40.00", f"{kind}-elsewhere")
    env.state.faults.update({"paid_elsewhere_next": 1})  # someone pays it in Xero as we send
    final = drive(eng, intent, env)
    assert final.state == "already_settled"
    assert ours(env, final) == []
    assert amount_due(env, doc) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_void_or_deleted_document_is_rejected(env: Env, kind: str) -> None:
    eng = engine(env)
    voided = document(env, kind, "40.00")
    intent = pay(env, eng, voided, kind, "10.00", f"{kind}-void")
    env.state.xero.edit_invoice(env.tenant, voided["InvoiceID"], Status="VOIDED")
    final = drive(eng, intent, env)
    assert final.state == "rejected" and final.reason_code == "document_not_payable"
    assert env.state.xero.payments(env.tenant, invoice_id=voided["InvoiceID"]) == []


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_edit_is_re_read_and_still_paid_once(env: Env, kind: str) -> None:
    eng = engine(env)
    doc = document(env, kind, "40.00")
    intent = pay(env, eng, doc, kind, "40.00", f"{kind}-edit")
    env.state.faults.update({"concurrent_edit_next": 1})  # a person edits it as we send
    final = drive(eng, intent, env)
    assert final.state == "applied"
    assert len(ours(env, final)) == 1
    assert env.state.xero.invoice(env.tenant, doc["InvoiceID"])["Reference"].startswith("Edited")


@pytest.mark.parametrize("kind", KINDS)
def test_dropped_response_with_a_provider_that_ignores_idempotency(env: Env, kind: str) -> None:
    eng = engine(env)
    doc = document(env, kind, "40.00")
    intent = pay(env, eng, doc, kind, "25.00", f"{kind}-ignore")
    # The first send lands and its answer is lost; the ledger then forgets keys altogether.
    env.state.faults.update({"drop_after_commit_next": 1, "ignore_idempotency": 1.0})
    final = drive(eng, intent, env)
    env.state.faults.update({"ignore_idempotency": 0.0})
    assert final.state == "applied"
    assert len(ours(env, final)) == 1  # the lookup by reference, not the key, saved us
    assert amount_due(env, doc) == Decimal("15.00")
    with env.store.session() as s:
        phases = [a.phase for a in s.exec(select(Attempt).where(Attempt.intent_id == final.id))]
    assert phases.count("send") == 1 and "lookup" in phases


def test_revoked_grant_parks_one_connection_and_others_go_on(env: Env) -> None:
    qbo = next(c for c in env.settings.connections if c.provider == "quickbooks")
    qbo_ledger = env.state.quickbooks
    eng = engine(env)
    xero_doc = document(env, "invoice", "20.00")
    qbo_doc = qbo_ledger.add_invoice(qbo.realm_id, total=Decimal("20.00"))
    xero_intent = pay(env, eng, xero_doc, "invoice", "20.00", "revoked-xero")
    qbo_intent = eng.intake(
        AllocationRequest(
            connection_id=qbo.id,
            document=qbo_doc["Id"],
            amount="20.00",
            idempotency_key="revoked-qbo",
        )
    ).intent
    env.state.xero.revoke_grant(env.tenant)
    env.clock.advance(3600)  # our Xero token is stale: a refresh is needed, and refused
    for _ in range(3):
        eng.run_once(intent_ids=[xero_intent.id, qbo_intent.id])
    xero_row, qbo_row = eng.intents([xero_intent.id, qbo_intent.id])
    assert xero_row.state == "pending" and xero_row.reason_code in {
        "auth_revoked",
        "connection_parked",
    }
    assert qbo_row.state == "applied"
    assert Decimal(str(qbo_ledger.invoice(qbo.realm_id, qbo_doc["Id"])["Balance"])) == 0
    with env.store.session() as s:
        parked = s.get(ConnectionRecord, env.conn_id)
        fine = s.get(ConnectionRecord, qbo.id)
    assert parked is not None and parked.status == "needs_reauth"
    assert fine is not None and fine.status == "active"
    assert env.state.xero.payments(env.tenant, invoice_id=xero_doc["InvoiceID"]) == []
