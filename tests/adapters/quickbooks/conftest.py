"""The QuickBooks sandbox ledger over real HTTP, the connector's store, and the engines.

One uvicorn serves the session (a ``SandboxApp``, so ``drop_*`` faults can close the
connection); each test mounts a freshly seeded ledger at ``/quickbooks`` and gets a
SQLite store in its ``tmp_path``, a config built from ``ledger.connection_tables``, and
the real :class:`PushEngine` / :class:`PullEngine` building :class:`QuickBooksAdapter`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Mount

from connector.adapters.quickbooks import QuickBooksAdapter
from connector.clock import ManualClock
from connector.config import Settings
from connector.sandbox.app import SandboxApp
from connector.sandbox.clock import Clock
from connector.sandbox.faults import Faults
from connector.sandbox.quickbooks import QuickBooksLedger, create_quickbooks_app
from connector.serving import ThreadedServer
from connector.state import PaymentIntent
from connector.store import Store
from connector.sync.pull import PullEngine
from connector.sync.push import AllocationRequest, PushEngine

FINAL = {"applied", "already_settled", "rejected", "conflict"}


class Server:
    """uvicorn serving a ``SandboxApp`` from a thread, on a free loopback port."""

    def __init__(self) -> None:
        self.app = SandboxApp(routes=[])
        self._runner = ThreadedServer(self.app, name="harness").start()
        self.port = self._runner.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mount(self, ledger: QuickBooksLedger | None) -> None:
        self.app.router.routes[:] = (
            [Mount("/quickbooks", app=create_quickbooks_app(ledger))] if ledger else []
        )

    def stop(self) -> None:
        self._runner.stop()


@pytest.fixture(scope="session")
def qbo_server() -> Iterator[Server]:
    server = Server()
    yield server
    server.stop()


@dataclass
class Qbo:
    """A served ledger, the connector's config and store, and helpers to drive it."""

    ledger: QuickBooksLedger
    faults: Faults
    settings: Settings
    store: Store
    clock: ManualClock
    key_window: timedelta | None = None
    adapters: list[QuickBooksAdapter] = field(default_factory=list)
    engines: list[PushEngine | PullEngine] = field(default_factory=list)
    before_push: list[Callable[[], None]] = field(default_factory=list)
    api_adapter: QuickBooksAdapter | None = None

    @property
    def conn_id(self) -> str:
        return self.settings.connections[0].id

    @property
    def realm(self) -> str:
        return self.ledger.realm_ids[0]

    def adapter(self, connection_id: str | None = None) -> QuickBooksAdapter:
        """A real adapter (with ``key_window`` and ``before_push`` hooks when set)."""
        qbo = self

        class Adapter(QuickBooksAdapter):
            def push_payments(self, batch: Any, idempotency_key: str) -> Any:
                while qbo.before_push:
                    qbo.before_push.pop(0)()
                return super().push_payments(batch, idempotency_key)

        adapter = Adapter(
            self.settings.connection(connection_id or self.conn_id), self.store, clock=self.clock
        )
        if self.key_window is not None:
            adapter.capabilities = dataclasses.replace(
                QuickBooksAdapter.capabilities, key_window=self.key_window
            )
        self.adapters.append(adapter)
        return adapter

    def push_engine(self, **kw: Any) -> PushEngine:
        engine = PushEngine(
            self.settings, self.store, clock=self.clock, adapter_factory=self.adapter, **kw
        )
        self.engines.append(engine)
        return engine

    def pull_engine(self) -> PullEngine:
        engine = PullEngine(
            self.settings, self.store, clock=self.clock, adapter_factory=self.adapter
        )
        self.engines.append(engine)
        return engine

    # -- ledger helpers ---------------------------------------------------------------
    def new_document(self, kind: str, total: str, **kw: Any) -> dict[str, Any]:
        if kind == "bill":
            return self.ledger.add_bill(self.realm, total=Decimal(total), **kw)
        return self.ledger.add_invoice(self.realm, total=Decimal(total), **kw)

    def document(self, kind: str, doc_id: str) -> dict[str, Any]:
        if kind == "bill":
            return self.ledger.bill(self.realm, doc_id)
        return self.ledger.invoice(self.realm, doc_id)

    def pay_elsewhere(self, kind: str, doc_id: str, amount: str) -> dict[str, Any]:
        """A payment by a person in the QuickBooks UI (no reference, no requestid)."""
        if kind == "bill":
            return self.ledger.apply_bill_payment(self.realm, doc_id, Decimal(amount))
        return self.ledger.apply_payment(self.realm, doc_id, Decimal(amount))

    def payments(self, kind: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        if kind == "bill":
            return self.ledger.bill_payments(self.realm, include_deleted=include_deleted)
        return self.ledger.payments(self.realm, include_deleted=include_deleted)

    def ours(
        self, kind: str, intent: PaymentIntent, include_deleted: bool = False
    ) -> list[dict[str, Any]]:
        """Payments in the ledger carrying this intent's reference."""
        return [
            p
            for p in self.payments(kind, include_deleted)
            if intent.reference in str(p.get("PrivateNote") or "")
        ]

    def live_ours(self, kind: str, intent: PaymentIntent) -> list[dict[str, Any]]:
        """Ours, neither deleted nor voided."""
        return [
            p
            for p in self.ours(kind, intent)
            if p.get("status") != "Deleted" and not str(p.get("PrivateNote")).startswith("Voided")
        ]

    def api(self, method: str, path: str, body: Any = None, **params: str) -> dict[str, Any]:
        """A QuickBooks API call as a person's other app would make it (own adapter)."""
        if self.api_adapter is None:
            self.api_adapter = QuickBooksAdapter(
                self.settings.connections[0], self.store, clock=self.clock
            )
            self.adapters.append(self.api_adapter)
        return self.api_adapter._call(method, path, params=params or None, body=body, write=True)

    def delete(self, entity: str, entity_id: str) -> None:
        """Delete a transaction through the API (``POST …/{entity}?operation=delete``)."""
        current = self.ledger.entity(self.realm, entity, entity_id)
        self.api(
            "POST",
            f"/{entity.lower()}",
            {"Id": entity_id, "SyncToken": current["SyncToken"]},
            operation="delete",
        )

    def void_payment(self, entity: str, entity_id: str) -> None:
        current = self.ledger.entity(self.realm, entity, entity_id)
        self.api(
            "POST",
            f"/{entity.lower()}",
            {"Id": entity_id, "SyncToken": current["SyncToken"], "sparse": True},
            operation="update",
            include="void",
        )

    # -- engine helpers ---------------------------------------------------------------
    def intake(
        self, engine: PushEngine, kind: str, doc: dict[str, Any], amount: str, key: str, **kw: Any
    ) -> PaymentIntent:
        return engine.intake(
            AllocationRequest(
                connection_id=self.conn_id,
                document=doc["Id"],
                amount=amount,
                idempotency_key=key,
                document_type=kind,
                **kw,
            )
        ).intent

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


def frozen_clock() -> Clock:
    return Clock(frozen_at=datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def make_qbo(qbo_server: Server, tmp_path: Path) -> Iterator[Callable[..., Qbo]]:
    """Serve a fresh ledger (keyword arguments go to :class:`QuickBooksLedger`)."""
    made: list[Qbo] = []

    def factory(**kwargs: Any) -> Qbo:
        assert not made, "one ledger per test"
        seed = kwargs.pop("seed", 11)
        faults = Faults(seed=seed)
        kwargs.setdefault("invoices", 6)
        kwargs.setdefault("bills", 4)
        ledger = QuickBooksLedger(
            seed=seed,
            clock=frozen_clock(),
            lock=threading.RLock(),
            faults=faults,
            rate_limits=False,
            **kwargs,
        )
        qbo_server.mount(ledger)
        db = f"sqlite:///{tmp_path / 'connector.db'}"
        connections = [
            {**table, "max_inline_wait_seconds": 0, "page_size": 4}
            for table in ledger.connection_tables(qbo_server.url)
        ]
        settings = Settings.model_validate(
            {
                "database": {"url": db},
                "security": {"encrypt_tokens": "off"},
                "connections": connections,
            }
        )
        store = Store(db)
        store.upgrade()
        qbo = Qbo(ledger, faults, settings, store, ManualClock())
        made.append(qbo)
        return qbo

    yield factory
    qbo_server.mount(None)
    for qbo in made:
        for engine in qbo.engines:
            engine.close()
        for adapter in qbo.adapters:
            adapter.close()
        qbo.ledger.close()
        qbo.store.dispose()


@pytest.fixture
def qbo(make_qbo: Callable[..., Qbo]) -> Qbo:
    return make_qbo()
