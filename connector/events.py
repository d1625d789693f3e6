"""Events out: signed webhooks for allocation outcomes and connection health.

The connector tells your systems what happened, by POSTing JSON to the URLs in
``[[events.endpoints]]``:

``allocation.applied``, ``allocation.already_settled``, ``allocation.rejected``,
``allocation.conflict``
    an allocation (payment intent) reached a final state; ``data`` is the intent.
``connection.needs_attention``
    a connection was parked (its grant was refused); ``data`` says which and why.

**Exactly when.** An event is written (:func:`record_event`) in the same database
transaction as the change it reports, together with one ``event_delivery`` row per
subscribed endpoint (an outbox): no event without the change, no change without
its event. :class:`EventDispatcher` (a job of ``connector run``) then delivers the
due rows. Delivery is **at-least-once**: a receiver may see an event more than once
(a lost answer, a crashed worker) and must dedupe on the event ``id``, which stays
the same across every retry.

**Retries.** A 2xx answer delivers. ``410 Gone`` means the receiver unsubscribed:
the delivery is dropped (``dead``) at once. Anything else (other 4xx, 5xx, a
timeout, a refused connection) is retried after a random delay in
``[0, min(backoff_max_seconds, backoff_first_seconds * 2**(attempt-1))]`` (full
jitter; a longer ``Retry-After`` is honoured up to the maximum) until
``max_attempts``, then ``dead``. A delivery whose endpoint was removed from (or
disabled in) the config is marked ``dead`` with ``last_error`` "endpoint no longer
configured" and is never sent. Several replicas share the work: a delivery is
claimed under a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so two workers
never post the same row at the same time.

**The request.** ``POST <url>`` with the body

.. code-block:: json

    {"id": "<event id>", "type": "allocation.applied",
     "created_at": "2026-11-21T10:00:00.123456Z", "data": {...}}

and the headers ``Content-Type: application/json``, ``Connector-Event-Id``,
``Connector-Event-Type``, ``Connector-Delivery-Attempt`` (1, 2, …),
``User-Agent: connector/<version>`` and::

    Connector-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

**Verifying it.** Take the raw body bytes as received (before any JSON parsing),
compute ``HMAC-SHA256(secret, f"{t}.".encode() + body)``, compare it in constant
time with each ``v1`` value, and refuse a ``t`` more than a few minutes from your
clock: that timestamp is what stops an old, captured request from being replayed.
:func:`verify_signature` does all of it::

    from connector.events import verify_signature

    ok = verify_signature(secret, request.headers["Connector-Signature"], raw_body)
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.metadata
import json
import os
import random
import socket
import threading
import time
import uuid
import weakref
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from sqlmodel import col, select

from connector.clock import Clock, SystemClock
from connector.config import EventEndpoint, EventsSettings, Settings
from connector.logging import get_logger, register_secret
from connector.state import Event, EventDelivery
from connector.types import utcnow

if TYPE_CHECKING:
    from sqlmodel import Session

    from connector.store import Store

__all__ = [
    "SIGNATURE_HEADER",
    "DeliveryReport",
    "EventDispatcher",
    "bind_store",
    "event_body",
    "pending_summary",
    "record_connection_needs_attention",
    "record_event",
    "sign",
    "signature_header",
    "verify_signature",
]

log = get_logger("connector.events")

SIGNATURE_HEADER = "Connector-Signature"
#: How far a signature's timestamp may be from the receiver's clock by default.
DEFAULT_TOLERANCE_SECONDS = 300
#: Deliveries claimed per transaction; their lease covers posting all of them.
CLAIM_CHUNK = 10
#: ``last_error`` of a delivery whose endpoint left the config.
ENDPOINT_GONE = "endpoint no longer configured"
DELIVERY_STATES = ("pending", "delivered", "dead")
_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
_ERROR_SNIPPET = 200


def _version() -> str:
    try:
        return importlib.metadata.version("accounting-sync-connector")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return "0"


USER_AGENT = f"connector/{_version()}"


# -- recording (inside the caller's transaction) -----------------------------------


def _events_settings(settings: Settings | EventsSettings) -> EventsSettings:
    return settings.events if isinstance(settings, Settings) else settings


def record_event(
    session: Any,
    settings: Settings | EventsSettings,
    type_: str,
    *,
    data: dict[str, Any],
    connection_id: str | None = None,
    intent_id: str | None = None,
) -> Event | None:
    """Write an event and one delivery per subscribed endpoint, in the caller's transaction.

    Nothing is written when no enabled endpoint subscribes to ``type_``. An URL
    listed twice gets one delivery. The event and its deliveries commit (or roll
    back) with the caller's change; the caller's session flushes the event before
    its deliveries (the foreign key's order, on SQLite and PostgreSQL alike).

    Returns:
        The event, or None when nobody subscribes to it.
    """
    urls: list[str] = []
    for endpoint in _events_settings(settings).endpoints:
        if endpoint.enabled and type_ in endpoint.events and endpoint.url not in urls:
            urls.append(endpoint.url)
    if not urls:
        return None
    now = utcnow()
    event = Event(
        id=str(uuid.uuid4()),
        type=type_,
        connection_id=connection_id,
        intent_id=intent_id,
        payload=json.dumps(data, sort_keys=True, default=str),
        created_at=now,
    )
    session.add(event)
    for url in urls:
        session.add(
            EventDelivery(event_id=event.id, endpoint=url, next_attempt_at=now, updated_at=now)
        )
    return event


# The events config each store's writers use where only the store is at hand (the
# token refresher parks a connection knowing its own connection settings only).
_bound: weakref.WeakKeyDictionary[Store, EventsSettings] = weakref.WeakKeyDictionary()
_bound_lock = threading.Lock()


def bind_store(store: Store, settings: Settings | EventsSettings) -> None:
    """Say which ``[events]`` config applies to events recorded through ``store``.

    Used by writers that hold the store but not the whole config (the token
    refresher, which records ``connection.needs_attention``). An unbound store
    records no such event.
    """
    with _bound_lock:
        _bound[store] = _events_settings(settings)


def bound_settings(store: Store) -> EventsSettings | None:
    """The ``[events]`` config bound to ``store`` (None when none is)."""
    with _bound_lock:
        return _bound.get(store)


def record_connection_needs_attention(
    session: Session,
    store: Store,
    *,
    connection_id: str,
    provider: str,
    status: str,
    reason: str | None,
) -> Event | None:
    """Record ``connection.needs_attention`` in the transaction that parks the connection."""
    settings = bound_settings(store)
    if settings is None:
        return None
    return record_event(
        session,
        settings,
        "connection.needs_attention",
        data={
            "connection_id": connection_id,
            "provider": provider,
            "status": status,
            "reason": reason,
        },
        connection_id=connection_id,
    )


# -- the wire format ---------------------------------------------------------------


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_body(event: Event) -> bytes:
    """The exact bytes POSTed (and signed) for ``event``."""
    document = {
        "id": event.id,
        "type": event.type,
        "created_at": _iso(event.created_at),
        "data": json.loads(event.payload),
    }
    return json.dumps(document, separators=(",", ":")).encode()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Connector-Signature`` value: ``t=<timestamp>,v1=<hex signature>``."""
    return f"t={timestamp},v1={sign(secret, body, timestamp)}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes | str,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: datetime | float | None = None,
) -> bool:
    """Check a ``Connector-Signature`` header against the raw body (for receivers).

    Args:
        secret: the endpoint's shared secret.
        header: the header's value, ``t=<unix seconds>,v1=<hex>`` (several ``v1``
            are accepted; any one matching is enough).
        body: the request body exactly as received.
        tolerance_seconds: how far ``t`` may be from ``now``, either way; an
            older signature is refused (replay protection).
        now: the receiver's time (a datetime or unix seconds); default the wall clock.

    Returns:
        True only for a well-formed header with a fresh timestamp and a matching
        signature (compared in constant time).
    """
    raw = body.encode() if isinstance(body, str) else body
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and value.isdigit() and timestamp is None:
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if now is None:
        current = time.time()
    elif isinstance(now, datetime):
        current = now.timestamp()
    else:
        current = float(now)
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, raw, timestamp)
    matched = False
    for candidate in candidates:  # no early exit: time does not depend on which matched
        matched |= hmac.compare_digest(expected, candidate)
    return matched


# -- delivery -------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    """What one :meth:`EventDispatcher.deliver_due` did."""

    claimed: int = 0
    delivered: int = 0
    retrying: int = 0  # failed, another attempt is scheduled
    dead: int = 0  # out of attempts, 410 Gone, or no longer subscribed
    orphaned: int = 0  # endpoint no longer configured: marked dead, never sent
    deferred: int = 0  # left for the next run: their endpoint did not answer this run
    lost_lease: int = 0  # outcome not recorded: another worker took the row over

    def as_dict(self) -> dict[str, int]:
        """The non-zero counters."""
        return {k: v for k, v in asdict(self).items() if v}


def _safe_url(url: str) -> str:
    """The URL without query string or credentials (for logs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


@dataclass
class _Outcome:
    status: int | None
    error: str | None
    delivered: bool = False
    gone: bool = False
    retry_after: float | None = None
    unreachable: bool = False  # nothing answered: skip this endpoint for the rest of the run


class EventDispatcher:
    """Delivers due event webhooks; several may share a store (replicas, threads).

    Args:
        settings: the config (``[events]``).
        store: where events and deliveries are.
        clock: time for due dates, leases and signature timestamps.
        transport: httpx transport (tests).
        worker_id: this worker's name on its leases (default host, pid and a random tag).
        rng: randomness for the retry jitter (seed it for reproducible delays).
    """

    def __init__(
        self,
        settings: Settings | EventsSettings,
        store: Store,
        *,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        worker_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = _events_settings(settings)
        self.store = store
        self.clock = clock or SystemClock()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.rng = rng or random.Random()
        self._stop = threading.Event()
        for endpoint in self.settings.endpoints:
            register_secret(endpoint.secret.get_secret_value())
        self.client = httpx.Client(
            timeout=httpx.Timeout(self.settings.timeout_seconds),
            transport=transport or httpx.HTTPTransport(socket_options=_SOCKET_OPTIONS),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    # -- lifecycle
    def stop(self) -> None:
        """Finish the delivery in hand and start no other (for shutdown)."""
        self._stop.set()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.client.close()

    # -- config
    @property
    def _active_urls(self) -> list[str]:
        return sorted({e.url for e in self.settings.endpoints if e.enabled})

    def _endpoint(self, url: str, type_: str) -> EventEndpoint | None:
        for endpoint in self.settings.endpoints:
            if endpoint.enabled and endpoint.url == url and type_ in endpoint.events:
                return endpoint
        return None

    def backoff(self, attempts: int) -> float:
        """The jittered delay before the attempt after ``attempts`` failed ones."""
        s = self.settings
        cap = min(s.backoff_max_seconds, s.backoff_first_seconds * 2.0 ** max(attempts - 1, 0))
        return self.rng.uniform(0.0, cap)

    # -- the work
    def deliver_due(self, limit: int = 100) -> DeliveryReport:
        """Deliver up to ``limit`` due deliveries; return what happened.

        Deliveries are claimed a few at a time under a lease. An endpoint that
        does not answer (timeout, refused connection) is not tried again in this
        run: its other claimed deliveries are given back untouched (``deferred``).
        """
        report = DeliveryReport()
        report.orphaned = self._drop_unconfigured()
        unreachable: set[str] = set()
        while report.claimed < limit and not self._stop.is_set():
            batch = self.claim(min(CLAIM_CHUNK, limit - report.claimed), unreachable)
            if not batch:
                break
            report.claimed += len(batch)
            for delivery, event in batch:
                if self._stop.is_set() or delivery.endpoint in unreachable:
                    self._release(delivery)
                    report.deferred += 1
                    continue
                if self._deliver(delivery, event, report):
                    unreachable.add(delivery.endpoint)
        if report.claimed or report.orphaned:
            log.info("events_delivered", worker=self.worker_id, **report.as_dict())
        return report

    def _drop_unconfigured(self) -> int:
        """Mark pending deliveries to endpoints that left the config ``dead``."""
        now = self.clock.now()
        active = self._active_urls
        where: list[Any] = [
            col(EventDelivery.state) == "pending",
            sa.or_(
                col(EventDelivery.lease_expires_at).is_(None),
                col(EventDelivery.lease_expires_at) <= now,
            ),
        ]
        if active:
            where.append(col(EventDelivery.endpoint).not_in(active))
        with self.store.session() as s:
            gone = list(s.exec(select(EventDelivery.endpoint).where(*where).distinct()).all())
            if not gone:
                return 0
            result = s.execute(
                sa.update(EventDelivery)
                .where(*where)
                .values(
                    state="dead",
                    last_error=ENDPOINT_GONE,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )
            count = int(getattr(result, "rowcount", 0) or 0)
        log.warning(
            "event_deliveries_dropped",
            endpoints=sorted(_safe_url(u) for u in gone),
            count=count,
            reason=ENDPOINT_GONE,
        )
        return count

    def claim(self, n: int, skip: set[str] | None = None) -> list[tuple[EventDelivery, Event]]:
        """Lease up to ``n`` due deliveries (SKIP LOCKED on PostgreSQL), with their events.

        Args:
            n: at most this many.
            skip: endpoint URLs not to claim for (this run found them unreachable).
        """
        urls = [u for u in self._active_urls if u not in (skip or set())]
        if not urls or n <= 0:
            return []
        now = self.clock.now()
        lease = timedelta(seconds=n * (self.settings.timeout_seconds + 5.0) + 30.0)
        query = (
            select(EventDelivery)
            .where(
                col(EventDelivery.state) == "pending",
                col(EventDelivery.next_attempt_at) <= now,
                sa.or_(
                    col(EventDelivery.lease_expires_at).is_(None),
                    col(EventDelivery.lease_expires_at) <= now,
                ),
                col(EventDelivery.endpoint).in_(urls),
            )
            .order_by(col(EventDelivery.next_attempt_at), col(EventDelivery.id))
            .limit(n)
        )
        if not self.store.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        with self.store.session() as s:
            rows = list(s.exec(query).all())
            for row in rows:
                row.lease_owner = self.worker_id
                row.lease_expires_at = now + lease
                row.updated_at = now
                s.add(row)
            ids = [r.event_id for r in rows]
            events: dict[str, Event] = {}
            if ids:
                events = {e.id: e for e in s.exec(select(Event).where(col(Event.id).in_(ids)))}
        return [(row, events[row.event_id]) for row in rows]

    def _guarded(self, delivery: EventDelivery) -> Any:
        """An UPDATE of ``delivery`` that only applies while we hold its lease."""
        return sa.update(EventDelivery).where(
            col(EventDelivery.id) == delivery.id,
            col(EventDelivery.lease_owner) == self.worker_id,
            col(EventDelivery.state) == "pending",
        )

    def _release(self, delivery: EventDelivery) -> None:
        """Give a claimed delivery back untouched (no attempt spent)."""
        with self.store.session() as s:
            s.execute(self._guarded(delivery).values(lease_owner=None, lease_expires_at=None))

    def _record(self, delivery: EventDelivery, now: datetime, **values: Any) -> bool:
        """Record an outcome under the lease; False when another worker took the row over."""
        with self.store.session() as s:
            result = s.execute(
                self._guarded(delivery).values(
                    lease_owner=None, lease_expires_at=None, updated_at=now, **values
                )
            )
            done = int(getattr(result, "rowcount", 0) or 0) == 1
        if not done:
            log.warning(
                "event_delivery_lease_lost",
                event_id=delivery.event_id,
                endpoint=_safe_url(delivery.endpoint),
                worker=self.worker_id,
            )
        return done

    def _post(self, endpoint: EventEndpoint, event: Event, attempt: int) -> _Outcome:
        body = event_body(event)
        timestamp = int(self.clock.now().timestamp())
        headers = {
            "Content-Type": "application/json",
            "Connector-Event-Id": event.id,
            "Connector-Event-Type": event.type,
            "Connector-Delivery-Attempt": str(attempt),
            SIGNATURE_HEADER: signature_header(endpoint.secret.get_secret_value(), body, timestamp),
        }
        try:
            with self.client.stream("POST", endpoint.url, content=body, headers=headers) as resp:
                status = resp.status_code
                if 200 <= status < 300:
                    return _Outcome(status, None, delivered=True)
                snippet = b""
                for chunk in resp.iter_bytes():
                    snippet += chunk
                    if len(snippet) >= _ERROR_SNIPPET:
                        break
                text = snippet[:_ERROR_SNIPPET].decode("utf-8", "replace").strip()
                error = f"HTTP {status}" + (f": {text}" if text else "")
                return _Outcome(status, error, gone=status == 410, retry_after=_retry_after(resp))
        except httpx.TimeoutException as exc:
            return _Outcome(None, f"timeout ({type(exc).__name__})", unreachable=True)
        except httpx.TransportError as exc:
            return _Outcome(None, f"{type(exc).__name__}: {exc}"[:300], unreachable=True)

    def _deliver(self, delivery: EventDelivery, event: Event, report: DeliveryReport) -> bool:
        """Post one delivery and record the outcome; True if its endpoint did not answer."""
        url = _safe_url(delivery.endpoint)
        endpoint = self._endpoint(delivery.endpoint, event.type)
        if endpoint is None:
            problem = "event type no longer subscribed by this endpoint"
            if self._record(delivery, self.clock.now(), state="dead", last_error=problem):
                report.dead += 1
            else:
                report.lost_lease += 1
            log.warning(
                "event_delivery_failed",
                event_id=event.id,
                event_type=event.type,
                endpoint=url,
                attempt=delivery.attempts,
                error=problem,
                dead=True,
            )
            return False
        attempt = delivery.attempts + 1
        started = time.monotonic()
        outcome = self._post(endpoint, event, attempt)
        ms = round((time.monotonic() - started) * 1000, 1)
        now = self.clock.now()
        common = {"attempts": attempt, "last_status": outcome.status, "last_error": outcome.error}
        if outcome.delivered:
            if self._record(delivery, now, state="delivered", delivered_at=now, **common):
                report.delivered += 1
            else:
                report.lost_lease += 1
            log.info(
                "event_delivered",
                event_id=event.id,
                event_type=event.type,
                endpoint=url,
                status=outcome.status,
                attempt=attempt,
                ms=ms,
            )
            return False
        dead = outcome.gone or attempt >= self.settings.max_attempts
        next_at: datetime | None = None
        if dead:
            recorded = self._record(delivery, now, state="dead", **common)
        else:
            delay = self.backoff(attempt)
            if outcome.retry_after is not None:
                delay = max(delay, min(outcome.retry_after, self.settings.backoff_max_seconds))
            next_at = now + timedelta(seconds=delay)
            recorded = self._record(delivery, now, next_attempt_at=next_at, **common)
        if not recorded:
            report.lost_lease += 1
        elif dead:
            report.dead += 1
        else:
            report.retrying += 1
        log.warning(
            "event_delivery_failed",
            event_id=event.id,
            event_type=event.type,
            endpoint=url,
            status=outcome.status,
            error=outcome.error,
            attempt=attempt,
            max_attempts=self.settings.max_attempts,
            next_retry=_iso(next_at) if next_at else None,
            dead=dead,
            ms=ms,
        )
        return outcome.unreachable


def pending_summary(store: Store) -> dict[str, int]:
    """Deliveries by state (``pending``, ``delivered``, ``dead``; zeros included)."""
    counts = dict.fromkeys(DELIVERY_STATES, 0)
    with store.session() as s:
        rows = s.execute(
            sa.select(col(EventDelivery.state), sa.func.count()).group_by(col(EventDelivery.state))
        ).all()
    for state, count in rows:
        counts[str(state)] = int(count)
    return counts
