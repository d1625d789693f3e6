"""Tokens at rest and across processes: encrypted, refreshed once, never invalid_grant."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector.config import load_settings
from connector.crypto import TokenCipher, generate_key
from connector.http import TokenManager
from connector.state import ConnectionRecord
from connector.store import Store
from tests.conftest import Env

CONNECTOR = str(Path(sys.executable).parent / "connector")


def _refresh_in_another_process(config: str, db_url: str, start_at: float, results: Any) -> None:
    settings = load_settings(config)
    conn = next(c for c in settings.connections if c.provider == "xero")
    store = Store(db_url)
    manager = TokenManager(conn, store)
    time.sleep(max(0.0, start_at - time.time()))
    try:
        results.put(("ok", manager.access_token()))
    except Exception as exc:  # pragma: no cover - reported by the assertion
        results.put(("error", repr(exc)))
    finally:
        store.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_two_processes_refreshing_at_once_share_one_refresh(
    env: Env, database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if database == "sqlite":
        db_url = env.settings.database.url
    else:
        from tests.conftest import _reset_pg

        db_url = request.getfixturevalue("pg_server_url")
        _reset_pg(db_url)
    migrator = Store(db_url)
    migrator.upgrade()
    migrator.dispose()
    auth = env.state.xero.auth
    issued_before = len(auth._refresh)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start_at = time.time() + 2.0  # both processes are up and waiting by then
    procs = [
        ctx.Process(
            target=_refresh_in_another_process,
            args=(str(env.config_path), db_url, start_at, results),
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    assert [o[0] for o in outcomes] == ["ok", "ok"], outcomes
    assert outcomes[0][1] == outcomes[1][1]  # the same access token: one refresh, shared
    assert len(auth._refresh) == issued_before + 1
    store = Store(db_url)
    with store.session() as s:
        rec = s.get(ConnectionRecord, env.conn_id)
    store.dispose()
    assert rec is not None and rec.status == "active"
    assert rec.refresh_token == env.state.xero.refresh_token_for(env.tenant)


def test_tokens_are_encrypted_at_rest_with_the_key(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    inv = env.state.xero.add_invoice(env.tenant, total=Decimal("10.00"))
    base = [
        "--config",
        str(env.config_path),
        "--connection",
        env.conn_id,
        "--document",
        inv["InvoiceNumber"],
        "--amount",
        "5.00",
    ]
    first = subprocess.run(
        [CONNECTOR, "pay", *base, "--key", "enc-1"],
        capture_output=True,
        text=True,
        env={**os.environ, "CONNECTOR_TOKEN_KEY": key},
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    with env.store.session() as s:
        rec = s.get(ConnectionRecord, env.conn_id)
    assert rec is not None and rec.refresh_token and rec.access_token
    assert rec.refresh_token.startswith("fernet:") and rec.access_token.startswith("fernet:")
    live = env.state.xero.refresh_token_for(env.tenant)
    assert live not in rec.refresh_token
    assert TokenCipher([key]).decrypt(rec.refresh_token) == live
    # Without the key the stored tokens cannot be used: a plain refusal, nothing sent.
    second = subprocess.run(
        [CONNECTOR, "pay", *base, "--key", "enc-2"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "CONNECTOR_TOKEN_KEY"},
        timeout=60,
    )
    assert second.returncode == 2
    assert "CONNECTOR_TOKEN_KEY" in second.stderr
    assert len(env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"])) == 1


def test_required_encryption_without_a_key_stops_start_up(env: Env, tmp_path: Path) -> None:
    config = tmp_path / "required.toml"
    config.write_text(env.config_path.read_text() + '\n[security]\nencrypt_tokens = "required"\n')
    result = subprocess.run(
        [CONNECTOR, "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "CONNECTOR_TOKEN_KEY"},
        timeout=60,
    )
    assert result.returncode == 2
    assert "security.encrypt_tokens" in result.stderr and "CONNECTOR_TOKEN_KEY" in result.stderr


def test_a_parked_connection_given_a_new_grant_pushes_again_without_a_read(env: Env) -> None:
    from pydantic import SecretStr

    from connector.sync.push import AllocationRequest, PushEngine

    inv = env.state.xero.add_invoice(env.tenant, total=Decimal("50.00"))
    engine = PushEngine(env.settings, env.store, clock=env.clock)
    env.closers.append(engine)
    intent = engine.intake(AllocationRequest(env.conn_id, inv["InvoiceNumber"], "20.00")).intent
    env.state.xero.revoke_grant(env.tenant)
    engine.run_once(intent_ids=[intent.id])
    [parked] = engine.intents([intent.id])
    assert parked.state not in ("applied",)
    with env.store.session() as s:
        record = s.get(ConnectionRecord, env.conn_id)
        assert record is not None and record.status == "needs_reauth"
    # A person reconnects: a new grant in the ledger, its refresh token in the config.
    env.state.xero.auth.add_grant("regrant-1", [env.tenant])
    token = env.state.xero.refresh_token_for(env.tenant)
    conns = [
        c.model_copy(update={"refresh_token": SecretStr(token)}) if c.id == env.conn_id else c
        for c in env.settings.connections
    ]
    settings = env.settings.model_copy(update={"connections": conns})
    fresh = PushEngine(settings, env.store, clock=env.clock)
    env.closers.append(fresh)
    env.advance(600)  # past the parked retry
    [final] = fresh.push_until_final([intent.id], timeout=30)
    assert final.state == "applied"
    paid = [p for p in env.state.xero.payments(env.tenant) if p.get("Reference") == final.reference]
    assert len(paid) == 1
    assert Decimal(str(env.state.xero.invoice(env.tenant, inv["InvoiceID"])["AmountDue"])) == 30
