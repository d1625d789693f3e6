"""Provider webhooks in, against the sandbox's real webhook senders and a real server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from connector.api import Refresher, RefreshItem, signature_of
from connector.schema import Invoice
from tests.conftest import Env
from tests.webhooks.conftest import (
    Serve,
    connection,
    open_invoice,
    pull_invoices,
    stored_invoice,
    with_secrets,
)

CONNECTOR = str(Path(sys.executable).parent / "connector")
XERO_KEY = "xero-signing-key-for-tests-0123456789abcdef"


def wait_for(check: Any, timeout: float = 10.0) -> bool:
    """Poll ``check()`` until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    with httpx.Client(trust_env=False, timeout=5) as http:
        return http.post(url, content=body, headers=headers).status_code


def snapshot(env: Env) -> list[tuple[str, str, str, Decimal, bool]]:
    """Every invoice row as (connection, remote id, status, balance, deleted)."""
    with env.store.session() as s:
        rows = s.exec(select(Invoice)).all()
    return sorted((r.connection_id, r.remote_id, r.status, r.balance, r.deleted) for r in rows)


@pytest.mark.parametrize("routed_by", ["connection_id", "tenant_id"])
def test_xero_handshake_then_payment_updates_store_without_poll(
    env: Env, serve: Serve, routed_by: str
) -> None:
    xero = connection(env, "xero")
    pull_invoices(env, xero.id)
    invoice = open_invoice(env, xero.id)
    server = serve(with_secrets(env.settings, {xero.id: XERO_KEY}))
    path = f"/webhooks/xero/{xero.id}" if routed_by == "connection_id" else "/webhooks/xero"

    status = env.state.xero.webhooks.register(url=server.url + path, key=XERO_KEY)

    assert status["status"] == "OK"
    probes = status["intent_to_receive"]["probes"]
    assert {p["expected_status"] for p in probes} == {200, 401}
    assert all(p["passed"] for p in probes)
    assert server.refresher.counts["rejected"] == sum(not p["signed_correctly"] for p in probes)

    env.state.xero.apply_payment(xero.tenant, invoice.remote_id, invoice.balance)

    assert env.state.xero.webhooks.wait_idle(10)
    assert wait_for(lambda: stored_invoice(env, xero.id, invoice.remote_id).status == "paid")
    row = stored_invoice(env, xero.id, invoice.remote_id)
    assert row.balance == 0
    counts = server.refresher.counts
    assert counts["received"] >= 3  # two signed probes + at least one delivery
    assert counts["refreshed"] >= 1
    assert counts["failed"] == 0
    assert env.state.xero.webhooks.status()["failed_events"] == 0


@pytest.mark.parametrize("fmt", ["legacy", "cloudevents"])
def test_quickbooks_payment_updates_store_without_poll(env: Env, serve: Serve, fmt: str) -> None:
    qbo = connection(env, "quickbooks")
    ledger = env.state.quickbooks
    pull_invoices(env, qbo.id)
    invoice = open_invoice(env, qbo.id)
    server = serve(with_secrets(env.settings, {qbo.id: ledger.webhook_verifier_token}))
    reg = ledger.register_webhook(server.url + "/webhooks/quickbooks", fmt, [qbo.tenant])
    assert reg["format"] == fmt

    ledger.apply_payment(qbo.tenant, invoice.remote_id, invoice.balance)

    assert ledger.webhooks.flush(10)
    deliveries = ledger.webhooks.deliveries()
    assert deliveries and all(d["delivered"] and d["status"] == 200 for d in deliveries)
    assert wait_for(lambda: stored_invoice(env, qbo.id, invoice.remote_id).status == "paid")
    row = stored_invoice(env, qbo.id, invoice.remote_id)
    assert row.balance == 0
    assert server.refresher.wait_idle(10)
    counts = server.refresher.counts
    assert counts["received"] >= 1 and counts["rejected"] == 0
    assert counts["refreshed"] >= 2  # the invoice and the payment (a fallback pull)
    assert counts["failed"] == 0


def test_xero_forged_unsigned_and_replayed_are_401_and_change_nothing(
    env: Env, serve: Serve
) -> None:
    xero = connection(env, "xero")
    pull_invoices(env, xero.id)
    invoice = open_invoice(env, xero.id)
    # Paid in the ledger, with no webhook registered: only a webhook we accept can tell.
    env.state.xero.apply_payment(xero.tenant, invoice.remote_id, invoice.balance)
    server = serve(with_secrets(env.settings, {xero.id: XERO_KEY}))
    url = f"{server.url}/webhooks/xero/{xero.id}"
    before = snapshot(env)
    captured = b'{"events":[],"firstEventSequence":0,"lastEventSequence":0,"entropy":"ABC"}'
    captured_sig = signature_of(captured, XERO_KEY)
    event = {
        "resourceUrl": "x",
        "resourceId": invoice.remote_id,
        "eventDateUtc": "2026-01-01T00:00:00.000Z",
        "eventType": "UPDATE",
        "eventCategory": "INVOICE",
        "tenantId": xero.tenant,
        "tenantType": "ORGANISATION",
    }
    tampered = json.dumps({"events": [event], "firstEventSequence": 1}).encode()

    assert post(url, captured, {"x-xero-signature": captured_sig}) == 200
    assert post(url, tampered, {"x-xero-signature": signature_of(tampered, "not-the-key")}) == 401
    assert post(url, tampered, {}) == 401
    assert post(url, tampered, {"x-xero-signature": captured_sig}) == 401  # replayed signature
    assert post(url, tampered, {"x-xero-signature": ""}) == 401
    assert post(server.url + "/webhooks/xero/no-such-connection", captured, {}) == 404

    assert server.refresher.wait_idle(5)
    assert snapshot(env) == before
    counts = server.refresher.counts
    assert (counts["received"], counts["rejected"], counts["queued"]) == (1, 4, 0)

    # Control: the same body correctly signed is accepted and refreshes the row.
    assert post(url, tampered, {"x-xero-signature": signature_of(tampered, XERO_KEY)}) == 200
    assert wait_for(lambda: stored_invoice(env, xero.id, invoice.remote_id).status == "paid")


def test_quickbooks_forged_unsigned_and_replayed_are_401_and_change_nothing(
    env: Env, serve: Serve
) -> None:
    qbo = connection(env, "quickbooks")
    token = env.state.quickbooks.webhook_verifier_token
    pull_invoices(env, qbo.id)
    invoice = open_invoice(env, qbo.id)
    server = serve(with_secrets(env.settings, {qbo.id: token}))
    url = server.url + "/webhooks/quickbooks"
    before = snapshot(env)

    def legacy(operation: str) -> bytes:
        entity = {"name": "Invoice", "id": invoice.remote_id, "operation": operation}
        note = {"realmId": qbo.tenant, "dataChangeEvent": {"entities": [entity]}}
        return json.dumps({"eventNotifications": [note]}).encode()

    captured = legacy("Emailed")
    captured_sig = signature_of(captured, token)
    deleted = legacy("Delete")

    assert post(url, deleted, {"intuit-signature": signature_of(deleted, "forged")}) == 401
    assert post(url, deleted, {}) == 401
    assert post(url, deleted, {"intuit-signature": captured_sig}) == 401
    assert post(url, b"not json", {"intuit-signature": signature_of(b"not json", "x")}) == 401
    assert server.refresher.wait_idle(5)
    assert snapshot(env) == before
    assert server.refresher.counts["rejected"] == 4
    assert server.refresher.counts["queued"] == 0

    # Control: correctly signed, the delete is recorded on the row.
    assert post(url, deleted, {"intuit-signature": signature_of(deleted, token)}) == 200
    assert wait_for(lambda: stored_invoice(env, qbo.id, invoice.remote_id).deleted)
    assert stored_invoice(env, qbo.id, invoice.remote_id).status == "deleted"


def test_refresher_deduplicates_and_survives_odd_events(env: Env) -> None:
    xero = connection(env, "xero")
    refresher = Refresher(env.settings, env.store)
    item = RefreshItem(xero.id, "document", "00000000-0000-0000-0000-000000000000")
    odd = RefreshItem("no-such-connection", "invoice", "1")
    assert refresher.submit([item, item, odd]) == 2
    assert refresher.submit([item]) == 0
    refresher.start()
    try:
        assert refresher.wait_idle(10)
        counts = refresher.counts
        assert counts["deduplicated"] == 2
        assert counts["refreshed"] + counts["failed"] == 2
        assert counts["failed"] == 1  # the unknown connection; the unknown id is logged only
        assert refresher.submit([item]) == 1  # the worker is still alive
        assert refresher.wait_idle(10)
    finally:
        assert refresher.stop(10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_daemon_serves_healthz_and_exits_0_on_sigterm(env: Env, tmp_path: Path) -> None:
    port = _free_port()
    config = tmp_path / "daemon.toml"
    config.write_text(
        env.config_path.read_text()
        + f'\n[api]\nhost = "127.0.0.1"\nport = {port}\n'
        + "\n[daemon]\npull_interval_seconds = 60\nshutdown_grace_seconds = 5\n"
    )
    proc = subprocess.Popen(
        [CONNECTOR, "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:

        def healthy() -> bool:
            try:
                with httpx.Client(trust_env=False, timeout=1) as http:
                    r = http.get(f"http://127.0.0.1:{port}/healthz")
                return r.status_code == 200 and r.json() == {"status": "ok"}
            except httpx.HTTPError:
                return False

        assert wait_for(healthy, timeout=20)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}" in err
    assert "api_stopped" in err
    assert not healthy()
