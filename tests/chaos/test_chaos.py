"""Seeded chaos: faults in the ledger, crashes in the worker, clocks jumping.

After every run the invariants of docs/architecture.md are checked against the
sandbox's ledger: no allocation has two payments, no invoice is paid beyond its
total, every intent is final, and the books clear to zero.
"""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict
from decimal import Decimal

import pytest
from sqlmodel import col, select

from connector.state import TERMINAL, Attempt
from connector.sync.push import AllocationRequest, PushEngine, SimulatedCrash
from tests.conftest import Env

CRASH_POINTS = ["after_claim", "after_store", "after_send", "after_apply", None, None, None]


@pytest.mark.parametrize("seed", [11, 23])
def test_exactly_once_under_faults_and_crashes(env: Env, seed: int) -> None:
    rng = random.Random(seed)
    env.state.faults.update(
        {"drop_after_commit": 0.25, "drop_before_commit": 0.1, "error_500_after_commit": 0.1}
    )
    invoices = [
        env.state.xero.add_invoice(env.tenant, total=Decimal(rng.randint(50, 500)))
        for _ in range(12)
    ]
    intake = PushEngine(env.settings, env.store, clock=env.clock)
    env.closers.append(intake)
    intent_ids = []
    for n in range(30):
        inv = rng.choice(invoices)
        total = Decimal(str(inv["Total"]))
        # Some allocations overpay together: the ledger must refuse the excess, never take it.
        amount = (total * Decimal(rng.choice([20, 40, 60, 100])) / 100).quantize(Decimal("0.01"))
        intent_ids.append(
            intake.intake(
                AllocationRequest(
                    connection_id=env.conn_id,
                    document=inv["InvoiceNumber"],
                    amount=amount,
                    idempotency_key=f"chaos-{seed}-{n}",
                )
            ).intent.id
        )
    for _round in range(60):
        crash = rng.choice(CRASH_POINTS)
        worker = PushEngine(
            env.settings, env.store, clock=env.clock, crash_at={crash} if crash else ()
        )
        env.closers.append(worker)
        with contextlib.suppress(SimulatedCrash):
            worker.run_once(intent_ids=intent_ids, limit=rng.randint(1, 8))
        env.clock.advance(200)  # past leases and backoffs
        if rng.random() < 0.15:
            env.advance(7 * 60)  # sometimes past Xero's key window too
        if all(i.state in TERMINAL for i in intake.intents(intent_ids)):
            break
    env.state.faults.update(
        {"drop_after_commit": 0, "drop_before_commit": 0, "error_500_after_commit": 0}
    )
    final = intake.intents(intent_ids)
    # 2. nothing silently pending
    assert all(i.state in TERMINAL for i in final), [(i.state, i.reason_code) for i in final]
    ledger = env.state.xero.payments(env.tenant)
    by_reference = defaultdict(list)
    for p in ledger:
        by_reference[p.get("Reference")].append(p)
    applied_sum = Decimal(0)
    for intent in final:
        mine = by_reference.get(intent.reference, [])
        # 1. no double application; 3/4. applied ⇔ exactly one payment, the one we recorded
        if intent.state == "applied":
            assert len(mine) == 1, intent.id
            assert mine[0]["PaymentID"] == intent.remote_payment_id
            applied_sum += intent.amount
        else:
            assert mine == [], (intent.state, intent.reason_code)
    # 10. clearing: what we consider applied equals what the ledger holds under our references
    ours = [p for p in ledger if str(p.get("Reference", "")).startswith("cx-")]
    assert sum(Decimal(str(p["Amount"])) for p in ours) == applied_sum
    # no invoice paid beyond its total
    for inv in invoices:
        now = env.state.xero.invoice(env.tenant, inv["InvoiceID"])
        assert Decimal(str(now["AmountPaid"])) <= Decimal(str(now["Total"]))
        assert Decimal(str(now["AmountDue"])) >= 0
    states = {i.state for i in final}
    assert "applied" in states  # the run did real work, not only refusals
    with env.store.session() as session:
        outcomes = set(
            session.exec(
                select(Attempt.outcome).where(col(Attempt.intent_id).in_(intent_ids))
            ).all()
        )
    assert {"outcome_unknown", "found"} <= outcomes  # faults really hit, lookups really adopted
