"""``connection.needs_attention``: recorded when a refused grant parks a connection."""

from __future__ import annotations

import json
import threading

import pytest
from sqlmodel import select

from connector.config import ApiSettings
from connector.daemon import Daemon
from connector.errors import AuthRevoked
from connector.events import EventDispatcher, bind_store, record_event, verify_signature
from connector.http import TokenManager
from connector.state import ConnectionRecord, Event, EventDelivery
from connector.store import Store
from tests.conftest import Env
from tests.events.conftest import SECRET, Receiver, events_settings


def _park(env: Env, store: Store) -> None:
    """Get a token, then have the ledger revoke the grant and refuse the next refresh."""
    manager = TokenManager(env.xero, store, env.clock)
    assert manager.access_token()
    env.state.xero.revoke_grant(env.tenant)
    env.clock.advance(3600)  # our access token is stale: the next call must refresh
    with pytest.raises(AuthRevoked):
        TokenManager(env.xero, store, env.clock).access_token()


def test_a_refused_refresh_parks_the_connection_and_records_the_event(
    env: Env, receiver: Receiver
) -> None:
    settings = events_settings(
        receiver.url("/health"), (receiver.url("/outcomes"), ["allocation.applied"])
    )
    bind_store(env.store, settings)
    _park(env, env.store)
    with env.store.session() as s:
        conn = s.get(ConnectionRecord, env.conn_id)
        [event] = s.exec(select(Event)).all()
        rows = s.exec(select(EventDelivery)).all()
    assert conn is not None and conn.status == "needs_reauth"
    assert event.type == "connection.needs_attention" and event.connection_id == env.conn_id
    data = json.loads(event.payload)
    assert data == {
        "connection_id": env.conn_id,
        "provider": "xero",
        "status": "needs_reauth",
        "reason": conn.status_reason,
    }
    assert "invalid_grant" in data["reason"] and "reconnect" in data["reason"]
    assert [r.endpoint for r in rows] == [receiver.url("/health")]  # /outcomes did not subscribe
    # Asking again while parked refuses at once and records nothing more.
    with pytest.raises(AuthRevoked):
        TokenManager(env.xero, env.store, env.clock).access_token()
    with env.store.session() as s:
        assert len(s.exec(select(Event)).all()) == 1
    d = EventDispatcher(settings, env.store, clock=env.clock)
    assert d.deliver_due().delivered == 1
    d.close()
    [req] = receiver.requests
    assert req.headers["connector-event-type"] == "connection.needs_attention"
    assert verify_signature(
        SECRET, req.headers["connector-signature"], req.body, now=env.clock.now()
    )
    assert json.loads(req.body)["data"]["connection_id"] == env.conn_id


def test_a_store_without_events_config_parks_without_an_event(env: Env) -> None:
    other = Store(env.settings.database.url)  # never bound to an [events] config
    try:
        _park(env, other)
        with other.session() as s:
            conn = s.get(ConnectionRecord, env.conn_id)
            assert conn is not None and conn.status == "needs_reauth"
            assert s.exec(select(Event)).all() == []
    finally:
        other.dispose()


def test_the_daemon_delivers_due_events(env: Env, receiver: Receiver) -> None:
    events = events_settings(receiver.url("/hook"), deliver_interval_seconds=0.1).events
    settings = env.settings.model_copy(
        update={"events": events, "api": ApiSettings(enabled=False), "connections": []}
    )
    with env.store.session() as s:
        event = record_event(s, settings, "allocation.applied", data={"id": "i-1"})
    assert event is not None
    daemon = Daemon(settings, env.store, clock=env.clock)
    runner = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    runner.start()
    try:
        got = receiver.wait_for(1)
    finally:
        daemon.request_stop()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert [r.headers["connector-event-id"] for r in got] == [event.id]
    assert verify_signature(
        SECRET, got[0].headers["connector-signature"], got[0].body, now=env.clock.now()
    )
