"""Fixtures of the webhook tests: our API server on a free loopback port, against the sandbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pydantic import SecretStr
from sqlmodel import select

from connector.api import ApiServer
from connector.config import ConnectionSettings, Settings
from connector.schema import Invoice
from connector.sync.pull import PullEngine
from tests.conftest import Env

Serve = Callable[[Settings], ApiServer]


def with_secrets(settings: Settings, secrets: dict[str, str]) -> Settings:
    """``settings`` with ``webhook_secret`` set on the named connections."""
    conns = [
        c.model_copy(update={"webhook_secret": SecretStr(secrets[c.id])}) if c.id in secrets else c
        for c in settings.connections
    ]
    return settings.model_copy(update={"connections": conns})


def connection(env: Env, provider: str) -> ConnectionSettings:
    """The first connection of ``provider`` in the sandbox's config."""
    return next(c for c in env.settings.connections if c.provider == provider)


def pull_invoices(env: Env, connection_id: str) -> None:
    """One ordinary poll of a connection's invoices, so the store has rows to update."""
    engine = PullEngine(env.settings, env.store)
    try:
        engine.run_once(connection_ids=[connection_id], entities=("invoice",))
    finally:
        engine.close()


def open_invoice(env: Env, connection_id: str) -> Invoice:
    """An authorised, unpaid invoice of the store."""
    with env.store.session() as s:
        rows = s.exec(
            select(Invoice).where(
                Invoice.connection_id == connection_id, Invoice.status == "authorised"
            )
        ).all()
    candidates = [r for r in rows if r.balance > 0 and r.balance == r.total]
    assert candidates, "the seeded sandbox has open invoices"
    return candidates[0]


def stored_invoice(env: Env, connection_id: str, remote_id: str) -> Invoice:
    """The store's current row of an invoice."""
    with env.store.session() as s:
        row = s.exec(
            select(Invoice).where(
                Invoice.connection_id == connection_id, Invoice.remote_id == remote_id
            )
        ).one()
    return row


@pytest.fixture
def serve(env: Env) -> Iterator[Serve]:
    """Start an ApiServer (127.0.0.1, free port) for some settings; all stopped at the end."""
    servers: list[ApiServer] = []

    def start(settings: Settings) -> ApiServer:
        server = ApiServer(settings, env.store, host="127.0.0.1", port=0)
        server.start()
        servers.append(server)
        return server

    yield start
    env.state.xero.webhooks.unregister()
    for reg in env.state.quickbooks.webhooks.registrations():
        env.state.quickbooks.webhooks.unregister(reg.id)
    env.state.quickbooks.webhooks.close()
    for server in servers:
        assert server.stop(timeout=10)
