"""`connector reconcile` as an operator runs it: the installed command, a real sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.state import PaymentIntent
from connector.sync.push import AllocationRequest, PushEngine
from tests.conftest import Env

CONNECTOR = str(Path(sys.executable).parent / "connector")


def connector(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CONNECTOR,
            "reconcile",
            "--config",
            str(env.config_path),
            "--connection",
            env.conn_id,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )


def engine(env: Env) -> PushEngine:
    eng = PushEngine(env.settings, env.store, clock=env.clock)
    env.closers.append(eng)
    return eng


def intake(env: Env, eng: PushEngine, total: str, amount: str, key: str) -> Any:
    inv = env.state.xero.add_invoice(env.tenant, total=Decimal(total))
    intent = eng.intake(
        AllocationRequest(
            connection_id=env.conn_id,
            document=inv["InvoiceNumber"],
            amount=amount,
            idempotency_key=key,
        )
    ).intent
    return inv, intent


def ours(env: Env, intent: PaymentIntent) -> list[dict[str, Any]]:
    return [
        p for p in env.state.xero.payments(env.tenant) if p.get("Reference") == intent.reference
    ]


def test_settles_an_unknown_outcome_and_prints_a_zero_clearing_line(env: Env) -> None:
    eng = engine(env)
    inv, intent = intake(env, eng, "49.99", "49.99", "cli-unknown")
    env.state.faults.update({"drop_after_commit_next": 1})
    eng.run_once(intent_ids=[intent.id])
    assert eng.intents([intent.id])[0].state == "unknown"

    result = connector(env)

    assert result.returncode == 0, result.stdout + result.stderr
    [row] = eng.intents([intent.id])
    assert row.state == "applied"
    [payment] = ours(env, intent)
    assert payment["PaymentID"] == row.remote_payment_id
    assert env.state.xero.invoice(env.tenant, inv["InvoiceID"])["Status"] == "PAID"
    lines = result.stdout.strip().splitlines()
    assert "settled applied 1" in lines[0]
    assert lines[-1] == (
        f"clearing {env.conn_id}: applied by us 1 (49.99 USD) \u2212 found in ledger 1 "
        f"(49.99 USD) = 0"
    )


def test_orphan_exits_1_with_the_finding_in_json(env: Env) -> None:
    eng = engine(env)
    _, intent = intake(env, eng, "20.00", "20.00", "cli-ok")
    eng.run_once(intent_ids=[intent.id])
    stray = env.state.xero.add_invoice(env.tenant, total=Decimal("15.00"))
    marker = f"cx-{uuid.uuid4().hex[:16]}"
    orphan = env.state.xero.apply_payment(
        env.tenant, stray["InvoiceID"], Decimal("15.00"), reference=f"by hand ({marker})"
    )

    result = connector(env, "--json", "--sample", "5", "--seed", "1")

    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["exit_code"] == 1
    [finding] = data["findings"]
    assert finding["kind"] == "orphan_payment" and finding["marker"] == marker
    assert finding["payments"] == [orphan["PaymentID"]]
    assert env.state.xero.find_payment(env.tenant, orphan["PaymentID"])["Status"] == "AUTHORISED"
    [conn] = data["connections"]
    assert conn["sampled"] == 1
    assert conn["clearing"]["zero"] is True
    assert conn["clearing"]["applied"] == {"count": 1, "amounts": {"USD": "20.00"}}


def test_intent_held_by_a_running_worker_exits_4(env: Env) -> None:
    eng = engine(env)
    inv, intent = intake(env, eng, "10.00", "10.00", "cli-held")
    env.store.claim_intents(
        worker="daemon-7", now=env.clock.now(), lease=timedelta(hours=1), intent_ids=[intent.id]
    )

    result = connector(env)

    assert result.returncode == 4, result.stdout + result.stderr
    assert f"waiting {intent.id}" in result.stdout and "daemon-7" in result.stdout
    assert env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"]) == []
    assert eng.intents([intent.id])[0].lease_owner == "daemon-7"


def test_unknown_connection_exits_2(env: Env) -> None:
    result = subprocess.run(
        [CONNECTOR, "reconcile", "--config", str(env.config_path), "--connection", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 2
    assert "nope" in result.stderr
