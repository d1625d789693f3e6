"""Fixtures of the intake API tests: a real ApiServer on loopback against the real sandbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlmodel import select

from connector.adapters.base import Adapter, build_adapter
from connector.api import ApiServer
from connector.config import Settings
from connector.state import ApiRequest, PaymentIntent
from connector.store import Store
from connector.sync.push import PushEngine
from tests.conftest import Env

TOKEN = "api-token-for-tests-0123456789"

Serve = Callable[..., ApiServer]


def with_token(settings: Settings, token: str | None = TOKEN) -> Settings:
    """``settings`` with ``[api] token`` set (or unset)."""
    api = settings.api.model_copy(update={"token": SecretStr(token) if token is not None else None})
    return settings.model_copy(update={"api": api})


class SlowReads:
    """An adapter whose document reads take ``delay`` seconds longer (or fail ``fail`` times)."""

    def __init__(
        self,
        inner: Adapter,
        delay: float = 0.0,
        fail: int = 0,
        error: Callable[[], Exception] = lambda: RuntimeError("simulated bug in the intake"),
    ) -> None:
        self._inner = inner
        self._delay = delay
        self._fail = fail
        self._error = error
        self._lock = threading.Lock()
        self.reads = 0

    def get_document(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.reads += 1
            failing = self._fail > 0
            self._fail -= 1 if failing else 0
        if failing:
            raise self._error()
        time.sleep(self._delay)
        return self._inner.get_document(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def slow_engine(
    env: Env, delay: float = 0.0, fail: int = 0, store: Store | None = None, **kw: Any
) -> tuple[PushEngine, list[SlowReads]]:
    """A push engine whose intake reads are slowed (or fail); its adapters for inspection."""
    made: list[SlowReads] = []
    db = store or env.store

    def factory(connection_id: str) -> Adapter:
        inner = build_adapter(env.settings.connection(connection_id), db)
        adapter = SlowReads(inner, delay, fail, **kw)
        made.append(adapter)
        return adapter  # type: ignore[return-value]

    engine = PushEngine(env.settings, db, adapter_factory=factory)
    env.closers.append(engine)
    return engine, made


@pytest.fixture
def serve(env: Env) -> Iterator[Serve]:
    """Start ApiServers on 127.0.0.1 (free port) with a token; all stopped at the end."""
    servers: list[ApiServer] = []

    def start(settings: Settings | None = None, store: Store | None = None, **kw: Any) -> ApiServer:
        server = ApiServer(
            settings if settings is not None else with_token(env.settings),
            store or env.store,
            host="127.0.0.1",
            port=0,
            **kw,
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.stop(timeout=10)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """An HTTP client that ignores proxy variables (the server is on loopback)."""
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


def auth(key: str | None = None, token: str = TOKEN) -> dict[str, str]:
    """Headers of an authorised request (with an ``Idempotency-Key`` if given)."""
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def new_invoice(env: Env, total: str = "100.00") -> dict[str, Any]:
    """A fresh authorised invoice in the sandbox ledger."""
    inv: dict[str, Any] = env.state.xero.add_invoice(env.tenant, total=Decimal(total))
    return inv


def intents(env: Env, store: Store | None = None) -> list[PaymentIntent]:
    """Every stored intent."""
    with (store or env.store).session() as s:
        return list(s.exec(select(PaymentIntent)).all())


def api_requests(env: Env) -> list[ApiRequest]:
    """Every stored ``api_request`` row."""
    with env.store.session() as s:
        return list(s.exec(select(ApiRequest)).all())


def ledger_payments(env: Env, invoice: dict[str, Any]) -> list[dict[str, Any]]:
    """Live payments of one invoice, as the sandbox ledger holds them."""
    payments: list[dict[str, Any]] = env.state.xero.payments(env.tenant, invoice["InvoiceID"])
    return payments
