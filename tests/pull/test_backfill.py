"""`connector backfill`: read-only against the ledger, rate limits waited out, and safe
beside a running daemon on the same SQLite store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from connector.adapters.base import Page
from connector.errors import RateLimited
from connector.schema import Invoice
from connector.state import PaymentIntent
from connector.sync.pull import ENTITY_MODELS, PullEngine
from connector.sync.push import AllocationRequest, PushEngine
from tests.conftest import Env

CONNECTOR = str(Path(sys.executable).parent / "connector")


def backfill(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONNECTOR, "backfill", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )


def ledger_snapshot(env: Env) -> dict[str, Any]:
    x, q, n = env.state.xero, env.state.quickbooks, env.state.netsuite
    conns = {c.provider: c.tenant for c in env.settings.connections}
    return {
        "xero_invoices": x.invoices(conns["xero"]),
        "xero_payments": x.payments(conns["xero"], include_deleted=True),
        "qbo_invoices": q.invoices(conns["quickbooks"]),
        "qbo_payments": q.payments(conns["quickbooks"], include_deleted=True),
        "qbo_bill_payments": q.bill_payments(conns["quickbooks"], include_deleted=True),
        "ns_invoices": n.invoices(conns["netsuite"]),
        "ns_payments": n.customer_payments(conns["netsuite"], include_deleted=True),
    }


def test_backfill_reads_everything_and_creates_nothing_in_the_ledger(env: Env) -> None:
    before = ledger_snapshot(env)
    entities = [arg for e in ENTITY_MODELS for arg in ("--entity", e)]
    result = backfill("--config", str(env.config_path), *entities)
    assert result.returncode == 0, result.stderr
    assert ledger_snapshot(env) == before
    for column in ("records", "new", "updated", "deleted/void", "time", "requests", "429s"):
        assert column in result.stdout
    assert result.stdout.count("ledger_account") >= 4  # three connections and the total
    with env.store.session() as s:
        mirrored = len(s.exec(select(Invoice)).all())
    assert mirrored == sum(1 for i in before["xero_invoices"] if i["Type"] == "ACCREC") + len(
        before["qbo_invoices"]
    ) + len(before["ns_invoices"])
    # Run again: nothing new; the same records are read from the overlap only.
    again = backfill("--config", str(env.config_path), "--entity", "invoice")
    assert again.returncode == 0, again.stderr
    assert ledger_snapshot(env) == before


class _LimitedAdapter:
    """Two pages; the second answers 429 twice before it is served."""

    provider = "xero"
    entities = ("invoice",)

    def __init__(self) -> None:
        self.calls = 0
        self.refusals = 2

    def list_changed(self, entity: str, since: datetime | None, page: int, size: int) -> Page:
        self.calls += 1
        stamp = datetime(2026, 1, 1, tzinfo=UTC)
        if since is None:
            recs = [_invoice("a", stamp)]
            return Page(recs, page, size, True, stamp)
        if self.refusals:
            self.refusals -= 1
            raise RateLimited("minute limit", retry_after=7.0)
        return Page([_invoice("b", stamp.replace(second=5))], page, size, False, None)

    def close(self) -> None:
        pass


def _invoice(rid: str, stamp: datetime) -> dict[str, Any]:
    return {
        "remote_id": rid,
        "status": "authorised",
        "currency": "USD",
        "total": Decimal("1.00"),
        "balance": Decimal("1.00"),
        "remote_updated_at": stamp,
    }


def test_backfill_waits_out_rate_limits_and_goes_on(env: Env) -> None:
    fake = _LimitedAdapter()
    slept: list[float] = []
    eng = PullEngine(
        env.settings,
        env.store,
        adapter_factory=lambda _cid: fake,  # type: ignore[arg-type, return-value]
        wait_on_rate_limit=True,
        sleep=slept.append,
    )
    [stats] = eng.run_once(connection_ids=[env.conn_id], entities=["invoice"])
    assert stats.complete and stats.records == 2
    assert slept == [7.0, 7.0] and stats.waited_seconds == 14.0 and stats.rate_waits == 2
    strict = PullEngine(env.settings, env.store, adapter_factory=lambda _cid: _LimitedAdapter())  # type: ignore[arg-type, return-value]
    with pytest.raises(RateLimited):
        strict.run_once(
            connection_ids=[env.conn_id],
            entities=["invoice"],
            since=datetime(2025, 1, 1, tzinfo=UTC),
        )


def test_backfill_beside_a_running_daemon_on_the_same_sqlite_store(
    env: Env, tmp_path: Path
) -> None:
    config = tmp_path / "daemon.toml"
    config.write_text(
        env.config_path.read_text() + "\n[daemon]\npush_interval_seconds = 0.2\n"
        "pull_interval_seconds = 0.5\nshutdown_grace_seconds = 5\n"
    )
    xero = env.state.xero
    docs = [xero.add_invoice(env.tenant, total=Decimal("30.00")) for _ in range(4)]
    push = PushEngine(env.settings, env.store)
    env.closers.append(push)
    ids = [
        push.intake(
            AllocationRequest(
                connection_id=env.conn_id,
                document=d["InvoiceNumber"],
                amount="30.00",
                idempotency_key=f"bf-{i}",
            )
        ).intent.id
        for i, d in enumerate(docs)
    ]
    daemon = subprocess.Popen(
        [CONNECTOR, "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        entities = [arg for e in ENTITY_MODELS for arg in ("--entity", e)]
        first = backfill("--config", str(config), *entities)
        assert first.returncode == 0, first.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = {i.state for i in push.intents(ids)}
            if states == {"applied"}:
                break
            time.sleep(0.2)
        assert states == {"applied"}
        second = backfill("--config", str(config), "--entity", "invoice", "--entity", "payment")
        assert second.returncode == 0, second.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            _out, err = daemon.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            _out, err = daemon.communicate()
    assert daemon.returncode == 0, err
    for d in docs:  # pushed once each
        assert len(xero.payments(env.tenant, invoice_id=d["InvoiceID"])) == 1
    with env.store.session() as s:
        mirror = {
            i.remote_id: i
            for i in s.exec(select(Invoice).where(Invoice.connection_id == env.conn_id)).all()
        }
        intents = s.exec(select(PaymentIntent)).all()
    assert {i.state for i in intents} == {"applied"}
    ledger = [i for i in xero.invoices(env.tenant) if i["Type"] == "ACCREC"]
    assert set(mirror) == {i["InvoiceID"] for i in ledger}
    for raw in ledger:
        assert mirror[raw["InvoiceID"]].balance == Decimal(str(raw["AmountDue"]))
        assert mirror[raw["InvoiceID"]].row_version == raw["UpdatedDateUTC"]
