"""The daemon's HTTP server: provider webhooks in, a targeted refresh out.

A webhook is only an accelerator: polling stays the source of truth. A correctly
signed delivery is answered at once (Xero wants an answer within 5 s, QuickBooks
within 3 s) and its events are queued for the :class:`Refresher`, a worker thread
that re-reads each changed record from the ledger and upserts it into the store.
A delivery whose signature is missing or wrong gets 401 and changes nothing.

Routes:

* ``GET /healthz`` → ``{"status": "ok"}`` (the process is alive, nothing more).
* ``GET /readyz`` (database, migrations, scheduler) and ``GET /metrics`` (Prometheus;
  bearer token of ``[api] token`` when set): see :mod:`connector.metrics`.
* ``POST /webhooks/xero/{connection_id}`` and ``POST /webhooks/xero`` (the connection
  found by each event's ``tenantId``): ``x-xero-signature`` = base64(HMAC-SHA256(webhook
  signing key, raw body)). The intent-to-receive probes (no events) get 200 when
  correctly signed and 401 otherwise; that is the whole handshake.
* ``POST /webhooks/quickbooks``: ``intuit-signature`` with the verifier token of the
  realm's connection(s); legacy ``eventNotifications`` and CloudEvents payloads.
* ``/v1/allocations`` (the intake API, bearer token of ``[api] token``): see
  :mod:`connector.intake_api`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connector.adapters.base import Adapter, build_adapter
from connector.clock import Clock, SystemClock
from connector.config import ConnectionSettings, Settings
from connector.errors import ConnectorError, DocumentNotFound
from connector.intake_api import IntakeApi
from connector.logging import get_logger
from connector.metrics import OpsEndpoints
from connector.schema import Bill, Contact, Invoice, Payment
from connector.serving import ThreadedServer
from connector.store import Store, upsert_records
from connector.sync.pull import PullEngine
from connector.sync.push import PushEngine

__all__ = [
    "ApiServer",
    "RefreshItem",
    "Refresher",
    "create_api",
    "parse_quickbooks_events",
    "parse_xero_events",
    "signature_of",
    "verify_signature",
]

log = get_logger("connector.api")

XERO_SIGNATURE = "x-xero-signature"
QUICKBOOKS_SIGNATURE = "intuit-signature"
#: Largest webhook body accepted (Xero batches at most 500 small events).
MAX_BODY_BYTES = 1_000_000

# QuickBooks entity name (lower case) → the unified entity refreshed for it.
_QBO_ENTITIES = {
    "invoice": "invoice",
    "bill": "bill",
    "payment": "payment",
    "billpayment": "payment",
    "customer": "contact",
    "vendor": "contact",
    "account": "ledger_account",
}
_QBO_OPERATIONS = {"delete": "delete", "deleted": "delete", "void": "void", "voided": "void"}
_XERO_ENTITIES = {"INVOICE": "document", "CONTACT": "contact"}
_DOCUMENT_MODELS: dict[str, type[Any]] = {"invoice": Invoice, "bill": Bill}
_DELETABLE_MODELS: dict[str, tuple[type[Any], ...]] = {
    "invoice": (Invoice,),
    "bill": (Bill,),
    "document": (Invoice, Bill),
    "payment": (Payment,),
    "contact": (Contact,),
}


# ---------------------------------------------------------------------- signatures


def signature_of(body: bytes, secret: str) -> str:
    """base64(HMAC-SHA256(secret, body)): Xero's and QuickBooks' webhook signature."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(body: bytes, secret: str, signature: str | None) -> bool:
    """Whether ``signature`` is the body's under ``secret`` (constant-time comparison)."""
    if not signature or not secret:
        return False
    expected = signature_of(body, secret).encode("ascii")
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", "replace"))


def _secret(conn: ConnectionSettings) -> str | None:
    return conn.webhook_secret.get_secret_value() if conn.webhook_secret is not None else None


# ---------------------------------------------------------------------- events


@dataclass(frozen=True)
class RefreshItem:
    """One record to re-read: ``entity`` is invoice, bill, document (either), payment,
    contact or ledger_account; ``operation`` is update, delete or void."""

    connection_id: str
    entity: str
    remote_id: str
    operation: str = "update"

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What de-duplicates queued items (a fallback pull covers every record)."""
        rid = (
            self.remote_id if self.entity in _DOCUMENT_KINDS or self.operation == "delete" else "*"
        )
        return (self.connection_id, self.entity, rid, self.operation)


_DOCUMENT_KINDS = {"invoice": ("invoice",), "bill": ("bill",), "document": ("invoice", "bill")}


def parse_xero_events(payload: Any) -> list[tuple[str, str, str]]:
    """``(tenantId, entity, resourceId)`` of a Xero payload's events; odd ones dropped."""
    events = payload.get("events") if isinstance(payload, dict) else None
    out: list[tuple[str, str, str]] = []
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict):
            log.warning("webhook_event_dropped", provider="xero", reason="not an object")
            continue
        entity = _XERO_ENTITIES.get(str(event.get("eventCategory", "")).upper())
        tenant, resource = event.get("tenantId"), event.get("resourceId")
        if entity is None or not isinstance(tenant, str) or not isinstance(resource, str):
            log.warning(
                "webhook_event_dropped",
                provider="xero",
                category=str(event.get("eventCategory")),
                reason="unknown category or missing ids",
            )
            continue
        out.append((tenant, entity, resource))
    return out


def parse_quickbooks_events(payload: Any) -> list[tuple[str, str, str, str]]:
    """``(realmId, entity, id, operation)`` of a legacy or CloudEvents payload."""
    out: list[tuple[str, str, str, str]] = []
    raw: list[tuple[Any, Any, Any, Any]] = []
    if isinstance(payload, dict):
        notes = payload.get("eventNotifications")
        for note in notes if isinstance(notes, list) else []:
            if not isinstance(note, dict):
                continue
            change = note.get("dataChangeEvent")
            entities = change.get("entities") if isinstance(change, dict) else None
            for ent in entities if isinstance(entities, list) else []:
                if isinstance(ent, dict):
                    raw.append(
                        (note.get("realmId"), ent.get("name"), ent.get("id"), ent.get("operation"))
                    )
    elif isinstance(payload, list):  # CloudEvents: type = qbo.<entity>.<past tense>.v<n>
        for event in payload:
            if not isinstance(event, dict):
                continue
            parts = str(event.get("type", "")).split(".")
            name, op = (parts[1], parts[2]) if len(parts) >= 3 and parts[0] == "qbo" else ("", "")
            raw.append((event.get("intuitaccountid"), name, event.get("intuitentityid"), op))
    for realm, name, entity_id, op in raw:
        entity = _QBO_ENTITIES.get(str(name or "").lower())
        if entity is None or not realm or entity_id is None:
            log.warning(
                "webhook_event_dropped",
                provider="quickbooks",
                entity=str(name),
                reason="unsupported entity or missing ids",
            )
            continue
        operation = _QBO_OPERATIONS.get(str(op or "").lower(), "update")
        out.append((str(realm), entity, str(entity_id), operation))
    return out


# ---------------------------------------------------------------------- refresher


class Refresher:
    """A worker thread that refreshes queued records from the ledgers, one at a time.

    Invoices and bills are re-read with ``adapter.get_document``; payments, contacts
    and accounts have no single-record read in the adapter interface, so those fall
    back to an incremental pull of that entity for that connection (de-duplicated:
    one pull covers every queued record of the entity). Deletes mark the row.

    Args:
        settings: The loaded config.
        store: The database.
        clock: Time source of ``synced_at``.
        adapter_factory: Builds a connection's adapter (tests).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Clock | None = None,
        adapter_factory: Callable[[str], Adapter] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or SystemClock()
        self.pull = PullEngine(
            settings,
            store,
            clock=self.clock,
            adapter_factory=adapter_factory
            or (lambda cid: build_adapter(settings.connection(cid), store, clock=self.clock)),
        )
        self._queue: queue.Queue[RefreshItem | None] = queue.Queue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending: set[tuple[str, str, str, str]] = set()
        self._busy = 0
        self._counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- counters --------------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        """Add to a counter (received, rejected, queued, refreshed, failed, …)."""
        with self._lock:
            self._counts[name] += n

    @property
    def counts(self) -> dict[str, int]:
        """A copy of the counters; ``received``, ``rejected`` and ``refreshed`` always there."""
        with self._lock:
            base = {"received": 0, "rejected": 0, "queued": 0, "refreshed": 0, "failed": 0}
            return {**base, **self._counts}

    # -- queue -----------------------------------------------------------------------
    def submit(self, items: Iterable[RefreshItem]) -> int:
        """Queue items not already queued; return how many were queued."""
        queued = 0
        with self._lock:
            for item in items:
                if item.key in self._pending:
                    self._counts["deduplicated"] += 1
                    continue
                self._pending.add(item.key)
                self._queue.put(item)
                queued += 1
            self._counts["queued"] += queued
        return queued

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is queued or in hand; True if so before ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> Refresher:
        """Start the worker thread."""
        if self._thread is None:
            self._stop.clear()
            self.pull.stop_requested = False
            self._thread = threading.Thread(target=self._run, name="webhook-refresher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the item in hand (queued ones are dropped: polling catches up).

        Returns:
            True if the thread ended within ``timeout``.
        """
        self._stop.set()
        self.pull.stop_requested = True
        self._queue.put(None)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
        self.pull.close()
        with self._idle:
            self._pending.clear()
            self._idle.notify_all()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None:
                continue
            with self._lock:
                self._pending.discard(item.key)  # a later event re-queues: state moved on
                self._busy += 1
            try:
                if not self._stop.is_set():
                    self.refresh(item)
                    self.count("refreshed")
            except ConnectorError as exc:
                self.count("failed")
                log.warning(
                    "webhook_refresh_failed",
                    connection=item.connection_id,
                    entity=item.entity,
                    remote_id=item.remote_id,
                    error=exc.code,
                    message=exc.message,
                )
            except Exception:
                self.count("failed")
                log.exception(
                    "webhook_refresh_crashed",
                    connection=item.connection_id,
                    entity=item.entity,
                    remote_id=item.remote_id,
                )
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    # -- refreshing ------------------------------------------------------------------
    def refresh(self, item: RefreshItem) -> None:
        """Bring one record of the store up to date with the ledger."""
        if item.operation == "delete":
            self._mark_deleted(item)
            return
        kinds = _DOCUMENT_KINDS.get(item.entity)
        if kinds is None:
            # No single-record read for this entity in the adapter interface: an
            # incremental pull of the entity for this connection (cursor-based, cheap).
            self.pull.run_once(connection_ids=[item.connection_id], entities=[item.entity])
            log.info("webhook_refreshed", connection=item.connection_id, entity=item.entity)
            return
        adapter = self.pull.adapter(item.connection_id)
        for kind in kinds:
            try:
                snapshot = adapter.get_document(item.remote_id, kind)
            except DocumentNotFound:
                continue
            with self.store.session() as s:
                upsert_records(
                    s,
                    _DOCUMENT_MODELS[kind],
                    item.connection_id,
                    [snapshot.record],
                    self.clock.now(),
                )
            log.info(
                "webhook_refreshed",
                connection=item.connection_id,
                entity=kind,
                remote_id=item.remote_id,
                status=snapshot.status,
            )
            return
        if item.operation == "void":
            self._mark_deleted(item, status="void")
            return
        log.warning(
            "webhook_refresh_not_found",
            connection=item.connection_id,
            entity=item.entity,
            remote_id=item.remote_id,
        )

    def _mark_deleted(self, item: RefreshItem, status: str = "deleted") -> None:
        models = _DELETABLE_MODELS.get(item.entity, ())
        with self.store.session() as s:
            for model in models:
                values: dict[str, Any] = {"synced_at": self.clock.now()}
                if status == "deleted":
                    values["deleted"] = True
                if "status" in model.__table__.columns:
                    values["status"] = status
                s.execute(
                    sa.update(model.__table__)
                    .where(
                        model.__table__.c.connection_id == item.connection_id,
                        model.__table__.c.remote_id == item.remote_id,
                    )
                    .values(**values)
                )
        log.info(
            "webhook_marked",
            connection=item.connection_id,
            entity=item.entity,
            remote_id=item.remote_id,
            status=status,
        )


# ---------------------------------------------------------------------- the app


def create_api(
    settings: Settings,
    store: Store,
    refresher: Refresher,
    intake: IntakeApi | None = None,
    ops: OpsEndpoints | None = None,
) -> Starlette:
    """The Starlette app: health, provider webhooks (events go to ``refresher``),
    given ``intake`` the ``/v1`` intake API, and given ``ops`` ``/readyz`` and ``/metrics``."""
    del store  # the refresher and the intake API write; the webhook routes only queue
    xero_conns = [c for c in settings.connections if c.provider == "xero" and c.enabled]
    qbo_conns = [c for c in settings.connections if c.provider == "quickbooks" and c.enabled]

    def reject(provider: str, reason: str, request: Request, connection: str | None) -> Response:
        refresher.count("rejected")
        log.warning(
            "webhook_rejected",
            provider=provider,
            connection=connection,
            reason=reason,
            client=request.client.host if request.client else None,
        )
        return Response(status_code=401)

    def accepted(items: list[RefreshItem]) -> Response:
        refresher.count("received")
        if items:
            refresher.submit(items)
        return Response(status_code=200)

    async def read_body(request: Request) -> bytes | None:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return None
        body = await request.body()
        return body if len(body) <= MAX_BODY_BYTES else None

    def load(body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def xero(request: Request) -> Response:
        cid = request.path_params.get("connection_id")
        if cid is not None:
            candidates = [c for c in xero_conns if c.id == cid]
            if not candidates:
                return Response(status_code=404)
        else:
            candidates = xero_conns
        body = await read_body(request)
        if body is None:
            return Response(status_code=413)
        signature = request.headers.get(XERO_SIGNATURE)
        if not signature:
            return reject("xero", "missing signature", request, cid)
        verified = [c for c in candidates if verify_signature(body, _secret(c) or "", signature)]
        if not verified:
            return reject("xero", "bad signature", request, cid)
        by_tenant = {c.tenant: c for c in verified}
        items = []
        for tenant, entity, resource in parse_xero_events(load(body)):
            conn = by_tenant.get(tenant)
            if conn is None:
                log.warning("webhook_event_dropped", provider="xero", reason="tenant not verified")
                continue
            items.append(RefreshItem(conn.id, entity, resource))
        return accepted(items)

    async def quickbooks(request: Request) -> Response:
        body = await read_body(request)
        if body is None:
            return Response(status_code=413)
        signature = request.headers.get(QUICKBOOKS_SIGNATURE)
        if not signature:
            return reject("quickbooks", "missing signature", request, None)
        events = parse_quickbooks_events(load(body))
        realms = {realm for realm, *_ in events}
        # The verifier token belongs to the app: any connection of the payload's
        # realms may hold it (all QuickBooks connections when no realm can be read).
        candidates = [c for c in qbo_conns if c.tenant in realms] if realms else qbo_conns
        secret = next(
            (
                s
                for c in candidates
                if (s := _secret(c)) is not None and verify_signature(body, s, signature)
            ),
            None,
        )
        if secret is None:
            return reject("quickbooks", "bad signature", request, None)
        items = []
        for realm, entity, entity_id, operation in events:
            conns = [c for c in qbo_conns if c.tenant == realm and _secret(c) == secret]
            if not conns:
                log.warning("webhook_event_dropped", provider="quickbooks", reason="realm unknown")
            items += [RefreshItem(c.id, entity, entity_id, operation) for c in conns]
        return accepted(items)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/webhooks/xero", xero, methods=["POST"]),
            Route("/webhooks/xero/{connection_id}", xero, methods=["POST"]),
            Route("/webhooks/quickbooks", quickbooks, methods=["POST"]),
            *(intake.routes() if intake is not None else []),
            *(ops.routes() if ops is not None else []),
        ]
    )


# ---------------------------------------------------------------------- the server


class ApiServer:
    """uvicorn serving :func:`create_api` from a thread, with its :class:`Refresher`.

    Args:
        settings: The loaded config.
        store: The database.
        host: Interface to bind (default ``[api].host``; keep it on loopback).
        port: TCP port (default ``[api].port``); 0 picks a free one (see :attr:`url`).
        refresher: The refresher to feed (default: a new one, started and stopped here).
        engine: The push engine the intake API stores allocations with (default: a new
            one, closed on :meth:`stop`; it only takes allocations in, the daemon's push
            job sends them).
        wake: Called after the intake API stored new allocations (e.g. to run the push
            job now instead of at its next tick).
        scheduler_running: Inside the daemon, whether its scheduler is running (checked
            by ``/readyz``); None (a server on its own) leaves that check out.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        host: str | None = None,
        port: int | None = None,
        refresher: Refresher | None = None,
        clock: Clock | None = None,
        engine: PushEngine | None = None,
        wake: Callable[[], None] | None = None,
        scheduler_running: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.host = host if host is not None else settings.api.host
        self.port = port if port is not None else settings.api.port
        self.refresher = refresher or Refresher(settings, store, clock=clock)
        self._owns_engine = engine is None
        self.engine = engine or PushEngine(settings, store, clock=clock)
        self.intake = IntakeApi(settings, store, self.engine, clock=clock, wake=wake)
        self.ops = OpsEndpoints(settings, store, clock=clock, scheduler_running=scheduler_running)
        self._runner: ThreadedServer | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ApiServer:
        """Start the refresher, bind, serve in a daemon thread; return once accepting.

        Raises:
            RuntimeError: Already running, or it did not start in time.
            OSError: The address cannot be bound.
        """
        if self._runner is not None:
            raise RuntimeError("api server already started")
        runner = ThreadedServer(
            create_api(self.settings, self.store, self.refresher, self.intake, self.ops),
            self.host,
            self.port,
            name="api server",
        )
        self.refresher.start()
        try:
            runner.start(timeout)
        except BaseException:
            self.refresher.stop(1.0)
            raise
        self._runner, self.port = runner, runner.port
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop serving, then the refresher (idempotent); True if both ended in time."""
        deadline = time.monotonic() + timeout
        runner, self._runner = self._runner, None
        clean = runner.stop(max(deadline - time.monotonic(), 0.1)) if runner is not None else True
        clean = self.refresher.stop(max(deadline - time.monotonic(), 0.1)) and clean
        if self._owns_engine:
            self.engine.close()
        return clean

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
