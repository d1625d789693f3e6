"""The `connector` command as a user runs it: real processes, real sandbox, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import select

from connector.state import ConnectionRecord, PaymentIntent
from connector.sync.push import AllocationRequest, IntakeError, PushEngine
from tests.conftest import Env

CONNECTOR = str(Path(sys.executable).parent / "connector")


def run(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONNECTOR, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def intents(env: Env) -> list[PaymentIntent]:
    with env.store.session() as s:
        return list(s.exec(select(PaymentIntent)).all())


def test_check_config_ok(env: Env) -> None:
    result = run("check-config", "--config", str(env.config_path))
    assert result.returncode == 0, result.stderr
    assert env.conn_id in result.stdout


def test_malformed_config_names_file_key_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[connections]]\nid = "x"\nprovider = "xero"\nbase_url = "http://h"\n')
    result = run(
        "pay", "--config", str(bad), "--connection", "x", "--document", "INV-1", "--amount", "1"
    )
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "token_url" in result.stderr and "Fix:" in result.stderr
    assert not (tmp_path / "connector.db").exists()


def test_pay_applies_and_prints_the_table(env: Env) -> None:
    inv = env.state.xero.add_invoice(env.tenant, total=Decimal("49.99"))
    result = run(
        "pay",
        "--config",
        str(env.config_path),
        "--connection",
        env.conn_id,
        "--document",
        inv["InvoiceNumber"],
        "--amount",
        "49.99",
        "--key",
        "cli-1",
    )
    assert result.returncode == 0, result.stderr
    assert "applied" in result.stdout and inv["InvoiceNumber"] in result.stdout
    assert env.state.xero.invoice(env.tenant, inv["InvoiceID"])["Status"] == "PAID"
    again = run(
        "pay",
        "--config",
        str(env.config_path),
        "--connection",
        env.conn_id,
        "--document",
        inv["InvoiceNumber"],
        "--amount",
        "49.99",
        "--key",
        "cli-1",
        "--json",
    )
    assert again.returncode == 0
    [row] = json.loads(again.stdout)
    assert row["state"] == "applied" and row["amount"] == "49.99"
    assert len(env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"])) == 1


@pytest.mark.parametrize(
    ("args", "fragment", "code"),
    [
        (["--connection", "nope", "--amount", "1.00"], "no connection with this id", 2),
        (["--document", "INV-4242", "--amount", "1.00"], "document_not_found", 2),
        (["--amount", "1.001"], "more decimals than USD allows", 2),
        (["--amount", "-3"], "greater than zero", 2),
        (["--amount", "0"], "greater than zero", 2),
        (["--amount", "1.00", "--date", "21/11/2026"], "YYYY-MM-DD", 2),
    ],
)
def test_bad_input_exits_non_zero_and_stores_nothing(
    env: Env, args: list[str], fragment: str, code: int
) -> None:
    inv = env.state.xero.add_invoice(env.tenant, total=Decimal("10.00"))
    base = {"--connection": env.conn_id, "--document": inv["InvoiceNumber"]}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [x for pair in base.items() for x in pair]
    result = run("pay", "--config", str(env.config_path), *flat)
    assert result.returncode == code, result.stdout + result.stderr
    assert fragment in result.stderr
    assert intents(env) == []
    assert env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"]) == []


def test_same_key_other_body_is_refused(env: Env) -> None:
    inv = env.state.xero.add_invoice(env.tenant, total=Decimal("10.00"))
    common = [
        "pay",
        "--config",
        str(env.config_path),
        "--connection",
        env.conn_id,
        "--document",
        inv["InvoiceNumber"],
        "--key",
        "k-dup",
    ]
    assert run(*common, "--amount", "5.00").returncode == 0
    result = run(*common, "--amount", "6.00")
    assert result.returncode == 2
    assert "idempotency_key_reused" in result.stderr
    assert len(intents(env)) == 1


def test_rejected_allocation_exit_code_and_status_history(env: Env) -> None:
    inv = env.state.xero.add_invoice(env.tenant, total=Decimal("10.00"), status="DRAFT")
    result = run(
        "pay",
        "--config",
        str(env.config_path),
        "--connection",
        env.conn_id,
        "--document",
        inv["InvoiceNumber"],
        "--amount",
        "5.00",
        "--json",
    )
    assert result.returncode == 3
    [row] = json.loads(result.stdout)
    assert row["state"] == "rejected" and row["reason_code"] == "document_not_payable"
    status = run("status", "--config", str(env.config_path), "--json")
    assert status.returncode == 0
    [conn] = [c for c in json.loads(status.stdout) if c["connection"] == env.conn_id]
    assert conn["intents"] == {"rejected": 1}
    history = run("status", "--config", str(env.config_path), "--intent", row["id"], "--json")
    data = json.loads(history.stdout)
    assert [a["phase"] for a in data["attempts"]] == ["preflight"]


def test_backfill_command_and_secrets_never_logged(env: Env) -> None:
    result = run("backfill", "--config", str(env.config_path), env=None)
    assert result.returncode == 0, result.stderr
    assert "invoice" in result.stdout
    with env.store.session() as s:
        rec = s.get(ConnectionRecord, env.conn_id)
    assert rec is not None and rec.access_token
    logs = result.stderr
    assert '"event": "http_request"' in logs  # JSON lines, since stderr is not a TTY
    for secret in (
        rec.access_token,
        rec.refresh_token,
        env.xero.client_secret.get_secret_value(),
        env.xero.refresh_token.get_secret_value(),
    ):
        assert secret and secret not in logs
    assert "Bearer" not in logs


def test_daemon_pushes_then_stops_cleanly_on_sigterm(env: Env, tmp_path: Path) -> None:
    config = tmp_path / "daemon.toml"
    config.write_text(
        env.config_path.read_text() + "\n[daemon]\npush_interval_seconds = 0.2\n"
        "pull_interval_seconds = 60\nshutdown_grace_seconds = 5\n"
    )
    inv = env.state.xero.add_invoice(env.tenant, total=Decimal("20.00"))
    engine = PushEngine(env.settings, env.store)
    env.closers.append(engine)
    intent = engine.intake(
        AllocationRequest(
            connection_id=env.conn_id,
            document=inv["InvoiceNumber"],
            amount="20.00",
            idempotency_key="daemon-1",
        )
    ).intent
    proc = subprocess.Popen(
        [CONNECTOR, "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            [row] = engine.intents([intent.id])
            if row.state == "applied":
                break
            time.sleep(0.2)
        assert row.state == "applied"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "daemon_stopped" in err
    assert len(env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"])) == 1


def test_demo_runs_from_any_directory_and_leaves_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [CONNECTOR, "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    for word in (
        "applied",
        "already_settled",
        "rejected",
        "PAID",
        "AUTHORISED",
        "DRAFT",
        "demo ok",
    ):
        assert word in result.stdout
    assert "no new payments" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_sandbox_command_serves_and_writes_a_working_config(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.toml"
    proc = subprocess.Popen(
        [
            CONNECTOR,
            "sandbox",
            "--port",
            "0",
            "--seed",
            "3",
            "--tenants",
            "2",
            "--write-config",
            str(config),
            "--database-url",
            f"sqlite:///{tmp_path / 'c.db'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not config.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert config.exists()
        checked = run("check-config", "--config", str(config))
        assert checked.returncode == 0, checked.stderr
        assert "6 connection(s)" in checked.stdout  # 2 tenants of each of the 3 ledgers
        pulled = run("backfill", "--config", str(config))
        assert pulled.returncode == 0, pulled.stderr
        assert pulled.stdout.count("invoice") >= 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_provider_without_adapter_is_refused_clearly(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.adapters import base

    monkeypatch.setattr(base, "SUPPORTED_PROVIDERS", frozenset({"quickbooks", "netsuite"}))
    engine = PushEngine(env.settings, env.store)
    env.closers.append(engine)
    with pytest.raises(IntakeError) as info:
        engine.intake(
            AllocationRequest(connection_id=env.conn_id, document="INV-0001", amount="1.00")
        )
    assert info.value.code == "provider_not_supported"
    assert "'xero' has no adapter" in info.value.message
    assert intents(env) == []


def test_db_upgrade_creates_the_schema_from_nothing(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    db = tmp_path / "fresh.db"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n')
    result = run("db", "upgrade", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "revision 0004" in result.stdout
    import sqlite3

    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"payment_intent", "attempt", "invoice", "cursor", "alembic_version"} <= tables


def test_unreachable_database_is_reported_plainly(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[database]\nurl = "postgresql://nobody@127.0.0.1:1/none"\n')
    result = run("status", "--config", str(config))
    assert result.returncode == 2
    assert "database.url" in result.stderr and "Fix:" in result.stderr
    assert "Traceback" not in result.stderr


def test_backfill_since_a_date_reads_only_later_changes(env: Env) -> None:
    future = run(
        "backfill", "--config", str(env.config_path), "--since", "2099-01-01", "--entity", "invoice"
    )
    assert future.returncode == 0, future.stderr
    from connector.schema import Invoice

    with env.store.session() as s:
        assert s.exec(select(Invoice)).all() == []
    past = run(
        "backfill",
        "--config",
        str(env.config_path),
        "--since",
        "2000-01-01",
        "--entity",
        "invoice",
        "--entity",
        "contact",
    )
    assert past.returncode == 0, past.stderr
    with env.store.session() as s:
        stored = s.exec(select(Invoice)).all()
    xero = [i for i in stored if i.connection_id == env.conn_id]
    assert len(xero) == len(
        [i for i in env.state.xero.invoices(env.tenant) if i["Type"] == "ACCREC"]
    )
    # The QuickBooks connections of the sandbox config are pulled by the same command.
    qbo = next(c for c in env.settings.connections if c.provider == "quickbooks")
    mirrored = {i.remote_id for i in stored if i.connection_id == qbo.id}
    assert mirrored == {i["Id"] for i in env.state.quickbooks.invoices(qbo.realm_id)}
    bad = run("backfill", "--config", str(env.config_path), "--entity", "widgets")
    assert bad.returncode == 2 and "widgets" in bad.stderr


def _xero_only_config(env: Env, path: Path, extra: str) -> Path:
    conn = env.xero
    path.write_text(
        f'[database]\nurl = "{env.settings.database.url}"\n\n[[connections]]\n'
        f'id = "{conn.id}"\nprovider = "xero"\nbase_url = "{conn.base_url}"\n'
        f'token_url = "{conn.token_url}"\nclient_id = "{conn.client_id}"\n'
        f'client_secret = "{conn.client_secret.get_secret_value()}"\n'
        f'refresh_token = "{conn.refresh_token.get_secret_value()}"\n'
        f'tenant_id = "{conn.tenant_id}"\npayment_account_code = "090"\n' + extra
    )
    return path


def test_connection_mapping_override_changes_what_is_sent(env: Env, tmp_path: Path) -> None:
    config = _xero_only_config(
        env,
        tmp_path / "override.toml",
        '\n[connections.mapping.write.payment]\n"Account.Code" = "`091`"\n',
    )
    inv = env.state.xero.add_invoice(env.tenant, total=Decimal("12.00"))
    result = run(
        "pay",
        "--config",
        str(config),
        "--connection",
        env.conn_id,
        "--document",
        inv["InvoiceNumber"],
        "--amount",
        "12.00",
    )
    assert result.returncode == 0, result.stderr
    [payment] = env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"])
    assert payment["Account"]["Code"] == "091"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (
            '\n[connections.mapping.write.payment]\nAmount = "amount_typo"\n',
            "unknown request field",
        ),
        ('\n[connections.mapping.read.invoice]\nbalance = "AmountDue[["\n', "bad JMESPath"),
        ('\n[connections.mapping.read.invoice]\nno_such_field = "X"\n', "invoice has no field"),
        ('\n[connections.mapping]\nprovider = "quickbooks"\n', "cannot be overridden"),
    ],
)
def test_bad_mapping_override_stops_start_up(
    env: Env, tmp_path: Path, extra: str, fragment: str
) -> None:
    config = _xero_only_config(env, tmp_path / "bad.toml", extra)
    result = run("check-config", "--config", str(config))
    assert result.returncode == 2
    assert f"connections[id={env.conn_id!r}].mapping" in result.stderr
    assert fragment in result.stderr
