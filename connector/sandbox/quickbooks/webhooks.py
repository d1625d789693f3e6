"""Webhook delivery (fact sheet §10): entity-change notifications, signed, from a thread.

* Payloads: the legacy ``eventNotifications`` form (``webhook_legacy_payload__…json``) or
  the CloudEvents array (``webhook_cloudevents_payload__…json``), chosen per
  registration. One POST per realm ("events are sent one realm at a time").
* Header ``intuit-signature`` = base64(HMAC-SHA256(key=verifier token, msg=raw body)).
* Events are collected for :attr:`WebhookDispatcher.batch_window` seconds of real time
  (Intuit aggregates for 1-5 minutes in production; the sandbox uses ~100 ms so tests
  stay fast), then delivered in order.
* A receiver must answer 2xx within 3 s; otherwise the batch is retried after 10 s,
  20 s, 30 s, 5 min, 20 min, 2 h, 4 h, 6 h (divided by ``clock.time_scale``) and then
  dropped. Like Intuit, later events wait while a batch is being retried.
* CloudEvents ``source`` is ``intuit.`` + base64(SHA-256(client id)) (the real value is
  an opaque app hash of that shape); ``id`` is a UUID; ``data`` is ``{}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from connector.sandbox.clock import Clock
from connector.sandbox.quickbooks.fmt import cloudevents_time, webhook_time
from connector.sandbox.wire import dumps

__all__ = [
    "RETRY_SCHEDULE",
    "WebhookDispatcher",
    "WebhookEvent",
    "WebhookRegistration",
    "sign",
]

#: Fact sheet §10 retry schedule (seconds).
RETRY_SCHEDULE: tuple[float, ...] = (10, 20, 30, 300, 1200, 7200, 14400, 21600)
#: Fact sheet §10: the receiver must answer within 3 seconds.
DELIVERY_TIMEOUT = 3.0
FORMATS = ("legacy", "cloudevents")
_PAST = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Void": "voided",
    "Merge": "merged",
    "Emailed": "emailed",
}
_MAX_LOG = 500


def sign(verifier_token: str, body: bytes) -> str:
    """The ``intuit-signature`` of a body."""
    digest = hmac.new(verifier_token.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class WebhookEvent:
    """One entity change."""

    realm_id: str
    entity: str
    entity_id: str
    operation: str  # Create, Update, Delete, Void
    when: datetime


@dataclass(frozen=True)
class WebhookRegistration:
    """A receiver URL, its payload format and an optional realm filter."""

    id: str
    url: str
    format: str = "legacy"
    realm_ids: frozenset[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the admin API."""
        return {
            "id": self.id,
            "url": self.url,
            "format": self.format,
            "realm_ids": sorted(self.realm_ids) if self.realm_ids is not None else None,
        }


@dataclass
class _Delivery:
    registration_id: str
    url: str
    realm_id: str
    events: int
    attempts: int = 0
    status: int | None = None
    error: str | None = None
    delivered: bool = False


@dataclass
class _Pending:
    events: list[WebhookEvent] = field(default_factory=list)


class WebhookDispatcher:
    """Queues entity changes and POSTs them to the registered receivers from a thread.

    Args:
        verifier_token: The app's webhook verifier token (HMAC key).
        client_id: The app's client id (CloudEvents ``source``).
        clock: The sandbox clock (only its ``time_scale`` is read, for retry delays).
        batch_window: Seconds to collect events before a delivery.
    """

    def __init__(
        self, verifier_token: str, client_id: str, clock: Clock, batch_window: float = 0.1
    ) -> None:
        self.verifier_token = verifier_token
        self.batch_window = batch_window
        self._clock = clock
        self._source = "intuit." + base64.b64encode(
            hashlib.sha256(client_id.encode()).digest()
        ).decode("ascii")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._registrations: dict[str, WebhookRegistration] = {}
        self._queue: queue.Queue[WebhookEvent] = queue.Queue()
        self._outstanding = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log: deque[_Delivery] = deque(maxlen=_MAX_LOG)

    # ------------------------------------------------------------------ registrations

    def register(
        self, url: str, fmt: str = "legacy", realm_ids: list[str] | None = None
    ) -> WebhookRegistration:
        """Register a receiver.

        Raises:
            ValueError: On an unknown format or a URL that is not http(s).
        """
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        if not url.startswith(("http://", "https://")):
            raise ValueError("url must be an http(s) URL")
        reg = WebhookRegistration(
            id=uuid.uuid4().hex[:12],
            url=url,
            format=fmt,
            realm_ids=frozenset(realm_ids) if realm_ids is not None else None,
        )
        with self._lock:
            self._registrations[reg.id] = reg
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="qbo-webhooks", daemon=True)
                self._thread.start()
        return reg

    def unregister(self, registration_id: str) -> bool:
        """Remove a receiver; False if it was not registered."""
        with self._lock:
            return self._registrations.pop(registration_id, None) is not None

    def registrations(self) -> list[WebhookRegistration]:
        """The current receivers."""
        with self._lock:
            return list(self._registrations.values())

    def deliveries(self) -> list[dict[str, Any]]:
        """The most recent delivery attempts (for the admin API and tests)."""
        with self._lock:
            return [
                {
                    "registration_id": d.registration_id,
                    "url": d.url,
                    "realm_id": d.realm_id,
                    "events": d.events,
                    "attempts": d.attempts,
                    "status": d.status,
                    "error": d.error,
                    "delivered": d.delivered,
                }
                for d in self._log
            ]

    # ------------------------------------------------------------------ events

    def publish(self, event: WebhookEvent) -> None:
        """Queue an entity change (dropped when nobody is registered)."""
        with self._lock:
            if not self._registrations:
                return
            self._outstanding += 1
        self._queue.put(event)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event has been delivered (or given up); True if so."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._outstanding > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the delivery thread (pending events are dropped)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        with httpx.Client(timeout=DELIVERY_TIMEOUT) as client:
            while not self._stop.is_set():
                try:
                    first = self._queue.get(timeout=0.05)
                except queue.Empty:
                    continue
                batch = [first]
                deadline = time.monotonic() + self.batch_window
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(self._queue.get(timeout=remaining))
                    except queue.Empty:
                        break
                try:
                    self._deliver(client, batch)
                finally:
                    with self._idle:
                        self._outstanding -= len(batch)
                        self._idle.notify_all()

    def _deliver(self, client: httpx.Client, batch: list[WebhookEvent]) -> None:
        by_realm: dict[str, list[WebhookEvent]] = {}
        for event in batch:
            by_realm.setdefault(event.realm_id, []).append(event)
        for realm_id, events in by_realm.items():
            for reg in self.registrations():
                if reg.realm_ids is not None and realm_id not in reg.realm_ids:
                    continue
                body = dumps(self.payload(reg.format, realm_id, events)).encode("utf-8")
                self._post(client, reg, realm_id, len(events), body)

    def payload(self, fmt: str, realm_id: str, events: list[WebhookEvent]) -> Any:
        """The JSON payload for one realm's events in ``fmt``."""
        if fmt == "cloudevents":
            return [
                {
                    "specversion": "1.0",
                    "id": str(uuid.uuid4()),
                    "source": self._source,
                    "type": f"qbo.{e.entity.lower()}.{_PAST.get(e.operation, e.operation.lower())}.v1",
                    "datacontenttype": "application/json",
                    "time": cloudevents_time(e.when),
                    "intuitentityid": e.entity_id,
                    "intuitaccountid": e.realm_id,
                    "data": {},
                }
                for e in events
            ]
        return {
            "eventNotifications": [
                {
                    "realmId": realm_id,
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": e.entity,
                                "id": e.entity_id,
                                "operation": e.operation,
                                "lastUpdated": webhook_time(e.when),
                            }
                            for e in events
                        ]
                    },
                }
            ]
        }

    def _post(
        self,
        client: httpx.Client,
        reg: WebhookRegistration,
        realm_id: str,
        count: int,
        body: bytes,
    ) -> None:
        record = _Delivery(reg.id, reg.url, realm_id, count)
        with self._lock:
            self._log.append(record)
        headers = {
            "Content-Type": "application/json",
            "intuit-signature": sign(self.verifier_token, body),
        }
        delays = (0.0, *RETRY_SCHEDULE)
        for delay in delays:
            scale = float(getattr(self._clock, "time_scale", 1.0) or 1.0)
            if delay and self._stop.wait(delay / scale):
                return
            if reg.id not in self._registrations:
                return
            record.attempts += 1
            try:
                response = client.post(reg.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                record.error = f"{type(exc).__name__}: {exc}"
                continue
            record.status = response.status_code
            if 200 <= response.status_code < 300:
                record.delivered, record.error = True, None
                return
