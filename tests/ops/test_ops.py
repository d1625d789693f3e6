"""/readyz and /metrics of a real ApiServer on loopback, against the real sandbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from connector.api import ApiServer
from connector.config import Settings
from connector.daemon import Daemon
from connector.store import Store
from connector.sync.pull import PullEngine
from connector.sync.push import AllocationRequest, PushEngine
from tests.conftest import Env

TOKEN = "ops-token-for-tests-0123456789"

Serve = Callable[..., ApiServer]


def with_token(settings: Settings, token: str = TOKEN) -> Settings:
    api = settings.api.model_copy(update={"token": SecretStr(token)})
    return settings.model_copy(update={"api": api})


@pytest.fixture
def serve(env: Env) -> Iterator[Serve]:
    """Start ApiServers on 127.0.0.1 (free port); every one is stopped at the end."""
    servers: list[ApiServer] = []

    def start(settings: Settings | None = None, store: Store | None = None, **kw: Any) -> ApiServer:
        server = ApiServer(
            settings or env.settings,
            store or env.store,
            host="127.0.0.1",
            port=0,
            clock=env.clock,
            **kw,
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.stop(timeout=10)


def scrape(server: ApiServer, token: str | None = None) -> dict[tuple[str, tuple[Any, ...]], float]:
    """``{(sample name, sorted labels): value}`` of one /metrics scrape."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, tuple[Any, ...]], float] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def invoice(env: Env, total: str = "100.00") -> str:
    inv: dict[str, Any] = env.state.xero.add_invoice(env.tenant, total=Decimal(total))
    return str(inv["InvoiceNumber"])


def test_metrics_count_intents_per_state_and_connection(env: Env, serve: Serve) -> None:
    engine = PushEngine(env.settings, env.store, clock=env.clock)
    env.closers.append(engine)
    ids = [
        engine.intake(AllocationRequest(env.conn_id, invoice(env), "10.00")).intent.id
        for _ in range(3)
    ]
    over = engine.intake(AllocationRequest(env.conn_id, invoice(env), "150.00")).intent.id
    finals = engine.push_until_final([*ids, over], timeout=30)
    assert sorted(i.state for i in finals) == ["applied", "applied", "applied", "rejected"]
    waiting = engine.intake(AllocationRequest(env.conn_id, invoice(env), "10.00")).intent
    assert waiting.state == "pending"
    pull = PullEngine(env.settings, env.store, clock=env.clock)
    env.closers.append(pull)
    pull.run_once(connection_ids=[env.conn_id], entities=("invoice",))
    env.advance(600)

    server = serve()
    m = scrape(server)
    conn = env.conn_id
    assert m[("connector_intents", (("connection", conn), ("state", "applied")))] == 3
    assert m[("connector_intents", (("connection", conn), ("state", "rejected")))] == 1
    assert m[("connector_intents", (("connection", conn), ("state", "pending")))] == 1
    assert m[("connector_intents", (("connection", conn), ("state", "conflict")))] == 0
    age = m[("connector_intents_oldest_open_seconds", (("connection", conn),))]
    assert 600 <= age < 660  # the pending one, not the older final ones
    lag = m[("connector_sync_lag_seconds", (("connection", conn), ("entity", "invoice")))]
    assert 600 <= lag < 660
    assert m[("connector_connection_up", (("connection", conn), ("provider", "xero")))] == 1
    refreshed = m[("connector_token_last_refresh_timestamp_seconds", (("connection", conn),))]
    assert refreshed > 1_600_000_000
    labels = (("provider", "xero"), ("tenant", env.tenant))
    assert m[("connector_provider_requests_total", labels)] >= 5
    assert m[("connector_provider_throttled_total", labels)] == 0
    assert m[("connector_rate_wait_seconds_total", labels)] >= 0
    assert m[("connector_events_deliveries", (("state", "dead"),))] == 0
    assert m[("connector_metrics_database_up", ())] == 1

    # Values are read at scrape time: the pending intent applied shows on the next scrape.
    [final] = engine.push_until_final([waiting.id], timeout=30)
    assert final.state == "applied"
    m2 = scrape(server)
    assert m2[("connector_intents", (("connection", conn), ("state", "applied")))] == 4
    assert m2[("connector_intents", (("connection", conn), ("state", "pending")))] == 0
    assert m2[("connector_intents_oldest_open_seconds", (("connection", conn),))] == 0
    assert (
        m2[("connector_provider_requests_total", labels)]
        > m[("connector_provider_requests_total", labels)]
    )


def test_metrics_need_the_token_when_one_is_configured(env: Env, serve: Serve) -> None:
    server = serve(with_token(env.settings))
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.get(f"{server.url}/metrics", headers=wrong, timeout=10).status_code == 401
    m = scrape(server, TOKEN)
    assert m[("connector_metrics_database_up", ())] == 1
    # The probes stay open.
    assert httpx.get(f"{server.url}/healthz", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_metrics_are_open_on_loopback_without_a_token(env: Env, serve: Serve) -> None:
    server = serve()
    assert server.host == "127.0.0.1"
    assert scrape(server)[("connector_metrics_database_up", ())] == 1


def test_each_server_has_its_own_registry(env: Env, serve: Serve) -> None:
    one, two = serve(), serve()
    assert one.ops.registry is not two.ops.registry
    assert scrape(one) and scrape(two)
    global_names = {m.name for m in REGISTRY.collect()}
    assert "connector_intents" not in global_names


def test_readyz_is_ready_on_a_migrated_store(env: Env, serve: Serve) -> None:
    resp = httpx.get(f"{serve().url}/readyz", timeout=10)
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "migrations"}  # no scheduler outside the daemon
    assert body["checks"]["migrations"]["current"] == env.store.head_revision()
    running = serve(scheduler_running=lambda: True)
    body = httpx.get(f"{running.url}/readyz", timeout=10).json()
    assert body["checks"]["scheduler"] == {"ok": True}


def test_readyz_names_migrations_behind(env: Env, serve: Serve) -> None:
    server = serve()
    with env.store.session() as s:
        s.execute(sa.text("UPDATE alembic_version SET version_num = '0003'"))
    resp = httpx.get(f"{server.url}/readyz", timeout=10)
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "not_ready"
    assert body["failing"] == ["migrations"]
    assert "0003" in body["checks"]["migrations"]["reason"]
    assert "connector db upgrade" in body["checks"]["migrations"]["reason"]
    with env.store.session() as s:  # back at head (the schema never moved): ready again
        s.execute(
            sa.text("UPDATE alembic_version SET version_num = :head"),
            {"head": env.store.head_revision()},
        )
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_readyz_names_the_scheduler_when_it_is_not_running(env: Env, serve: Serve) -> None:
    running = [True]
    server = serve(scheduler_running=lambda: running[0])
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    running[0] = False
    resp = httpx.get(f"{server.url}/readyz", timeout=10)
    assert resp.status_code == 503
    assert resp.json()["failing"] == ["scheduler"]
    assert "scheduler" in resp.json()["checks"]["scheduler"]["reason"]


def test_readyz_and_metrics_with_the_database_down_leak_nothing(env: Env, serve: Serve) -> None:
    secret = "pw-s3cret-do-not-show"
    down = Store(f"postgresql://someone:{secret}@127.0.0.1:1/nowhere")
    try:
        server = serve(with_token(env.settings), store=down)
        resp = httpx.get(f"{server.url}/readyz", timeout=30)
        assert resp.status_code == 503
        assert resp.json()["failing"] == ["database", "migrations"]
        assert secret not in resp.text and "someone" not in resp.text
        metrics = httpx.get(
            f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        assert metrics.status_code == 200
        assert secret not in metrics.text and TOKEN not in metrics.text
        m = scrape(server, TOKEN)
        assert m[("connector_metrics_database_up", ())] == 0
        assert not any(name == "connector_intents" for name, _ in m)
    finally:
        down.dispose()


def test_the_daemon_reports_its_scheduler_on_readyz(env: Env) -> None:
    api = env.settings.api.model_copy(update={"enabled": True, "host": "127.0.0.1", "port": 0})
    settings = env.settings.model_copy(update={"api": api, "connections": []})
    daemon = Daemon(settings, env.store, clock=env.clock)
    assert daemon.scheduler_running() is False  # not started yet
    runner = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while daemon.api is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.api is not None
        resp = httpx.get(f"{daemon.api.url}/readyz", timeout=10)
        assert resp.status_code == 200
        assert resp.json()["checks"]["scheduler"] == {"ok": True}
    finally:
        daemon.request_stop()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert daemon.scheduler_running() is False  # stopping: not ready any more
