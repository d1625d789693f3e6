"""A seeded chaos run of the push engine over all three sandbox ledgers.

2,000 allocations on SQLite (10,000 with ``--long``; 500 on PostgreSQL with parallel
workers): AR and AP on Xero, QuickBooks and NetSuite (several organisations each), in
USD, EUR, GBP and JPY; full, split, overlapping, over the balance, on paid and on
draft/void documents; some sent again under the same key, some keys misused. About a
quarter of the writes are faulted by the sandbox (every kind it has), workers crash at
every recovery point and restart from the store, and the operator reconnects what the
ledger revoked. After quiescence, healing and reconcile, RELIABILITY.md §9 is asserted
on the ledgers' own state; see :mod:`tests.chaos.harness`.

A failure names its seed and the command that replays it. ``pytest -s`` shows the
summary line (allocations, faults by kind, crashes, duplicates, lost, states, time).
"""

from __future__ import annotations

import pytest

from tests.chaos.conftest import ChaosCase
from tests.chaos.harness import (
    REQUIRED_FAULTS,
    ChaosConfig,
    World,
    build_plan,
    check_invariants,
    crash_points,
    fault_share,
    run_chaos,
    summary,
)


@pytest.mark.chaos_run
@pytest.mark.slow
def test_push_chaos_keeps_the_ledgers_exact(world: World, chaos_case: ChaosCase) -> None:
    cfg = ChaosConfig(seed=chaos_case.seed, allocations=chaos_case.allocations)
    plan = build_plan(world, cfg)
    run = run_chaos(world, cfg, plan)
    verdict = check_invariants(world, run)
    line = summary(world, run, verdict, chaos_case.name)
    print(f"\n{line}")

    replay = (
        f"/work/venv/bin/pytest -s 'tests/chaos/test_push_chaos.py::"
        f"test_push_chaos_keeps_the_ledgers_exact[{chaos_case.name}]' "
        f"--chaos-seed={chaos_case.seed}{' --long' if chaos_case.long else ''}"
    )
    exact = "" if chaos_case.serial else " (same plan, faults and crashes; threads interleave anew)"
    context = f"seed {chaos_case.seed} failed; replay{exact}: {replay}\n{line}"

    # The run was as chaotic as promised: every fault kind, > 20 % of writes, crashes at
    # every recovery point, a revoked connection, re-deliveries and misused keys...
    assert len(plan) == chaos_case.allocations, context
    assert fault_share(world) >= 0.20, f"only {fault_share(world):.1%} of writes faulted\n{context}"
    missing = [k for k in REQUIRED_FAULTS if world.fault_counts[k] == 0]
    assert not missing, f"faults never injected: {missing}\n{context}"
    spared = [p for p in crash_points() if run.crashes[p] == 0]
    assert not spared, f"no worker crashed at {spared}\n{context}"
    assert sum(world.reconnects.values()) > 0, f"no connection was revoked\n{context}"
    assert run.redeliveries > 0 and run.misuse_refused > 0, context
    # ...and did real work: payments landed, and refusals happened where they must.
    for state in ("applied", "already_settled", "rejected"):
        assert verdict.states[state] > 0, f"no intent ended {state}\n{context}"

    # RELIABILITY.md §9, on the ledgers' own state.
    shown = "\n".join(verdict.problems[:40])
    assert verdict.duplicates == 0, f"{verdict.duplicates} duplicate payment(s)\n{shown}\n{context}"
    assert verdict.lost == 0, f"{verdict.lost} lost payment(s)\n{shown}\n{context}"
    assert not verdict.problems, (
        f"{len(verdict.problems)} invariant violation(s):\n{shown}\n{context}"
    )
