"""Fixtures: the NetSuite sandbox ledger over real HTTP, and the connector in front of it.

One uvicorn server per session serves ``SandboxApp(Mount("/netsuite", …))`` on a free
loopback port; each test installs its own ledger behind the mount (a server per test
would cost ~0.25 s each). The connector side is real too: ``Settings`` from the
ledger's ``connection_tables``, a migrated SQLite store, and the ``NetSuiteAdapter``
built directly (``build_adapter`` only knows NetSuite once it is a supported provider).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from connector.adapters.base import Adapter
from connector.adapters.netsuite import NetSuiteAdapter
from connector.clock import ManualClock
from connector.config import ConnectionSettings, Settings, parse_settings
from connector.sandbox.app import SandboxApp
from connector.sandbox.clock import Clock
from connector.sandbox.faults import Faults
from connector.sandbox.netsuite import NetSuiteLedger, create_netsuite_app
from connector.serving import ThreadedServer
from connector.state import Attempt, ConnectionRecord, PaymentIntent
from connector.store import Store
from connector.sync.push import AllocationRequest, PushEngine

#: The sandbox clock: frozen, so no test straddles a second by accident.
FROZEN_AT = datetime(2025, 5, 27, 12, 0, 0, tzinfo=UTC)
FINAL = {"applied", "already_settled", "rejected", "conflict"}


class _Switch:
    """An ASGI app forwarding to whichever ledger the current test installed."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            raise RuntimeError("no NetSuite ledger is being served")
        await self.app(scope, receive, send)


class Harness:
    """uvicorn serving the NetSuite emulator inside a ``SandboxApp`` (which can drop)."""

    def __init__(self) -> None:
        self._switch = _Switch()
        app = SandboxApp(routes=[Mount("/netsuite", app=self._switch)])
        self._runner = ThreadedServer(app, name="harness").start()
        self.port = self._runner.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, ledger: NetSuiteLedger) -> None:
        self._switch.app = create_netsuite_app(ledger)

    def stop(self) -> None:
        self._runner.stop()


@dataclass
class NS:
    """A served ledger and a connector configured against it."""

    ledger: NetSuiteLedger
    faults: Faults
    sandbox_clock: Clock
    harness: Harness
    tmp_path: Path
    clock: ManualClock = field(default_factory=ManualClock)
    closers: list[Any] = field(default_factory=list)
    stores: dict[str, Store] = field(default_factory=dict)

    @property
    def account(self) -> str:
        return self.ledger.account_ids[0]

    def connection(self, mode: str = "jwt", **overrides: Any) -> dict[str, Any]:
        """The ``[[connections]]`` table of the account, for JWT or TBA auth."""
        (table,) = self.ledger.connection_tables(self.harness.url, self.tmp_path / "keys")
        conn: dict[str, Any] = {**table, "max_inline_wait_seconds": 2}
        if mode == "tba":
            creds = self.ledger.credentials(self.account)
            del conn["certificate_id"], conn["private_key_path"]
            conn.update(token_id=creds["token_id"], token_secret=creds["token_secret"])
        conn.update(overrides)
        return conn

    def settings(self, mode: str = "jwt", **overrides: Any) -> Settings:
        raw = {
            "database": {"url": f"sqlite:///{self.tmp_path / 'connector.db'}"},
            "security": {"encrypt_tokens": "off"},
            "connections": [self.connection(mode, **overrides)],
        }
        return parse_settings(raw, self.tmp_path / "connector.toml")

    def store(self) -> Store:
        """The connector's migrated SQLite store (one per test)."""
        url = f"sqlite:///{self.tmp_path / 'connector.db'}"
        if url not in self.stores:
            store = Store(url)
            store.upgrade()
            self.stores[url] = store
        return self.stores[url]

    def adapter(
        self,
        settings: Settings | ConnectionSettings | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        store: Store | None = None,
    ) -> NetSuiteAdapter:
        if settings is None:
            settings = self.settings()
        conn = settings.connections[0] if isinstance(settings, Settings) else settings
        adapter = NetSuiteAdapter(
            conn, store or self.store(), clock=self.clock, transport=transport
        )
        self.closers.append(adapter)
        return adapter

    def engine(
        self,
        settings: Settings | None = None,
        *,
        factory: Callable[[ConnectionSettings], Adapter] | None = None,
        **kw: Any,
    ) -> PushEngine:
        settings = settings or self.settings()

        def build(cid: str) -> Adapter:
            conn = settings.connection(cid)
            return factory(conn) if factory is not None else self.adapter(conn)

        engine = PushEngine(settings, self.store(), clock=self.clock, adapter_factory=build, **kw)
        self.closers.append(engine)
        return engine

    # -- ledger helpers --------------------------------------------------------------
    def add_document(self, kind: str, total: str = "100.00", **kw: Any) -> dict[str, Any]:
        add = self.ledger.add_invoice if kind == "invoice" else self.ledger.add_bill
        doc: dict[str, Any] = add(self.account, total=Decimal(total), **kw)
        return doc

    def open_amount(self, doc: dict[str, Any]) -> Decimal:
        return self.ledger.open_amount(self.account, doc["id"])

    def status(self, kind: str, doc: dict[str, Any]) -> str:
        read = self.ledger.invoice if kind == "invoice" else self.ledger.bill
        status: str = read(self.account, doc["id"])["status"]["id"]
        return status

    def payments(self, kind: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        listing = (
            self.ledger.customer_payments if kind == "invoice" else self.ledger.vendor_payments
        )
        return listing(self.account, include_deleted=include_deleted)

    def payments_on(self, kind: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """Live payments of ``kind`` that apply to ``doc``."""
        return [
            p
            for p in self.payments(kind)
            if any(item["doc"]["id"] == doc["id"] for item in p["apply"]["items"])
        ]

    def ours(self, kind: str, intent: PaymentIntent) -> list[dict[str, Any]]:
        """Live payments carrying the intent's reference (our memo)."""
        return [p for p in self.payments(kind) if p.get("memo") == intent.reference]

    # -- engine helpers -------------------------------------------------------------
    def pay(
        self, engine: PushEngine, kind: str, doc: dict[str, Any], amount: str, key: str
    ) -> PaymentIntent:
        conn_id = engine.settings.connections[0].id
        result = engine.intake(
            AllocationRequest(
                connection_id=conn_id,
                document=doc["id"],
                amount=amount,
                idempotency_key=key,
                document_type=kind,
            )
        )
        return result.intent

    def drive(self, engine: PushEngine, intent: PaymentIntent, rounds: int = 12) -> PaymentIntent:
        """Run the worker until the intent is final, moving our clock past any backoff."""
        current = intent
        for _ in range(rounds):
            engine.run_once(intent_ids=[intent.id])
            [current] = engine.intents([intent.id])
            if current.state in FINAL:
                return current
            self.clock.advance(120)
        raise AssertionError(f"intent stuck in {current.state}: {current.reason_message}")

    def attempts(self, intent: PaymentIntent) -> list[Attempt]:
        from sqlmodel import col, select

        with self.store().session() as s:
            return list(
                s.exec(
                    select(Attempt).where(Attempt.intent_id == intent.id).order_by(col(Attempt.id))
                ).all()
            )

    def connection_row(self, connection_id: str) -> ConnectionRecord | None:
        with self.store().session() as s:
            return s.get(ConnectionRecord, connection_id)


@pytest.fixture(scope="session")
def harness() -> Iterator[Harness]:
    server = Harness()
    yield server
    server.stop()


@pytest.fixture
def ns(harness: Harness, tmp_path: Path) -> Iterator[NS]:
    """Seed 11, one account, 12 invoices and 4 bills, a frozen sandbox clock."""
    clock = Clock(frozen_at=FROZEN_AT)
    faults = Faults(seed=11)
    ledger = NetSuiteLedger(
        seed=11, clock=clock, lock=threading.RLock(), faults=faults, concurrency=5
    )
    harness.serve(ledger)
    env = NS(ledger, faults, clock, harness, tmp_path)
    yield env
    for closer in reversed(env.closers):
        closer.close()
    for store in env.stores.values():
        store.dispose()


@pytest.fixture(params=["invoice", "bill"])
def kind(request: pytest.FixtureRequest) -> str:
    """AR (invoice → customerPayment) and AP (bill → vendorPayment)."""
    value: str = request.param
    return value
