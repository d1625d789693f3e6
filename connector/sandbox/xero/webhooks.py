"""Xero webhooks: the intent-to-receive handshake and signed event deliveries.

Behaviour (fact sheet §8; [DOC-WH], [SPEC-WH]):

* A receiver is registered with its URL and signing key (``POST /_sandbox/xero/webhooks``
  or :meth:`XeroWebhooks.register`). The sandbox then runs **intent to receive**: a
  series of POSTs shaped ``{"events":[],"lastEventSequence":0,"firstEventSequence":0,
  "entropy":"…"}``, some correctly signed and some not. The receiver passes if it
  answers 200 to every correctly signed one and 401 to every other one, within
  :data:`DELIVERY_TIMEOUT_SECONDS`. Only a receiver that passed gets events (as in
  Xero, where a webhook is not sent events until "Intent to receive" is OK).
* Every change to an invoice, bill or contact becomes an event ``{resourceUrl,
  resourceId, eventDateUtc, eventType: CREATE|UPDATE, eventCategory: INVOICE|CONTACT,
  tenantId, tenantType: ORGANISATION}``. A payment (created or deleted) is an UPDATE of
  its invoice: Xero has no PAYMENT category.
* A background thread batches the events of :data:`BATCH_WINDOW_SECONDS` (100 ms;
  :attr:`XeroWebhooks.batch_window` changes it) into one POST
  ``{"events":[…],"firstEventSequence":N,"lastEventSequence":M,"entropy":"…"}``;
  sequence numbers count the webhook's events from 1.
* Every POST carries ``x-xero-signature: base64(HMAC-SHA256(key, raw body))``.

Sandbox choices where Xero is vague:

* ``resourceUrl`` points at the sandbox (``…/xero/api.xro/2.0/Invoices/{id}``) when the
  webhook was registered over HTTP, so a client can fetch it; ``eventDateUtc`` is the
  change's ``UpdatedDateUTC`` in ISO 8601 with milliseconds and ``Z``.
* A delivery that is not answered 200 is retried after each of
  :data:`RETRY_DELAYS_SECONDS` (Xero retries "with decreasing frequency for up to 24
  hours"), then given up and recorded as failed; later batches still go out.
* Plain ``http://`` receivers are accepted (Xero requires HTTPS on port 443).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import queue
import random
import string
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = [
    "BATCH_WINDOW_SECONDS",
    "DEFAULT_RESOURCE_BASE_URL",
    "DELIVERY_TIMEOUT_SECONDS",
    "RETRY_DELAYS_SECONDS",
    "SIGNATURE_HEADER",
    "XeroWebhooks",
    "sign",
    "verify",
]

_log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-xero-signature"
#: Where ``resourceUrl`` points when no sandbox URL is known (the real API).
DEFAULT_RESOURCE_BASE_URL = "https://api.xero.com/api.xro/2.0"
#: Events raised within this long of the first one go out in one POST ("~100 ms").
BATCH_WINDOW_SECONDS = 0.1
#: At most this many events per POST; more wait for the next one.
MAX_BATCH_EVENTS = 500
#: Xero: the receiver "responds within 5 seconds".
DELIVERY_TIMEOUT_SECONDS = 5.0
#: Sandbox retry schedule for failed deliveries (real seconds, short so tests see it).
RETRY_DELAYS_SECONDS: tuple[float, ...] = (0.25, 1.0, 4.0)
#: Signed/unsigned probes of one intent-to-receive run, shuffled per run.
_PROBE_PATTERN = (True, True, False, False)
#: Deliveries kept for :meth:`XeroWebhooks.status`.
_HISTORY = 1000
CATEGORIES = ("INVOICE", "CONTACT")
_RESOURCES = {"INVOICE": "Invoices", "CONTACT": "Contacts"}


def sign(body: bytes, key: str) -> str:
    """The ``x-xero-signature`` of ``body``: base64(HMAC-SHA256(key, body)).

    Args:
        body: The raw request body, byte for byte.
        key: The webhook signing key.

    Returns:
        The base64 signature.
    """
    digest = hmac.new(key.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(body: bytes, key: str, signature: str | None) -> bool:
    """Check a signature the way a receiver must (constant-time comparison).

    Args:
        body: The raw request body.
        key: The webhook signing key.
        signature: The ``x-xero-signature`` header value (None if absent).

    Returns:
        Whether the signature is the body's.
    """
    if not signature:
        return False
    return hmac.compare_digest(sign(body, key), signature.strip())


def _event_date(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class _Registration:
    url: str
    key: str
    resource_base_url: str
    categories: frozenset[str]
    passed: bool
    probes: list[dict[str, Any]]
    registered_at: str
    events: queue.SimpleQueue[dict[str, Any]] = field(default_factory=queue.SimpleQueue)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    next_sequence: int = 1
    pending: int = 0
    deliveries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_HISTORY))
    delivered_events: int = 0
    failed_events: int = 0


class XeroWebhooks:
    """The sandbox's Xero webhook: one receiver at a time, as one Xero app has.

    Args:
        seed: Seed of the entropy strings, the probe order and the wrong probe keys.
        batch_window: Seconds of real time the events after a first one are collected
            for before one POST (settable at any time as :attr:`batch_window`).
    """

    def __init__(self, *, seed: int = 1, batch_window: float = BATCH_WINDOW_SECONDS) -> None:
        self.batch_window = batch_window
        self._rng = random.Random(f"xero-webhooks:{seed}")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._reg: _Registration | None = None

    # ------------------------------------------------------------------ registration

    def register(
        self,
        url: str,
        key: str,
        *,
        resource_base_url: str = DEFAULT_RESOURCE_BASE_URL,
        categories: Sequence[str] = CATEGORIES,
    ) -> dict[str, Any]:
        """Register (or replace) the receiver and run intent to receive against it.

        Blocks for the handshake (at most :data:`DELIVERY_TIMEOUT_SECONDS` per probe).

        Args:
            url: The receiver's URL.
            key: The signing key.
            resource_base_url: Base of the events' ``resourceUrl``
                (``…/api.xro/2.0``).
            categories: Event categories to send (``INVOICE``, ``CONTACT``).

        Returns:
            The webhook status (see :meth:`status`).

        Raises:
            ValueError: On a URL that is not http(s), an empty key or an unknown
                category.
        """
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"webhook url must be an http(s) URL, got {url!r}")
        if not key:
            raise ValueError("webhook key must not be empty")
        wanted = frozenset(c.upper() for c in categories)
        unknown = wanted - set(CATEGORIES)
        if unknown or not wanted:
            raise ValueError(f"categories must be among {', '.join(CATEGORIES)}")
        self.unregister()
        probes = self._intent_to_receive(url, key)
        reg = _Registration(
            url=url,
            key=key,
            resource_base_url=resource_base_url.rstrip("/"),
            categories=wanted,
            passed=all(p["passed"] for p in probes),
            probes=probes,
            registered_at=datetime.now(UTC).isoformat(),
        )
        if reg.passed:
            reg.thread = threading.Thread(
                target=self._run, args=(reg,), name="sandbox-xero-webhooks", daemon=True
            )
        with self._lock:
            self._reg = reg
        if reg.thread is not None:
            reg.thread.start()
        return self.status()

    def unregister(self, timeout: float = 10.0) -> None:
        """Remove the receiver; stops its delivery thread (events still queued are lost)."""
        with self._lock:
            reg, self._reg = self._reg, None
            if reg is not None:
                reg.pending = 0
                self._idle.notify_all()
        if reg is not None:
            reg.stop.set()
            if reg.thread is not None and reg.thread is not threading.current_thread():
                reg.thread.join(timeout)

    close = unregister

    def status(self) -> dict[str, Any]:
        """The receiver, its intent-to-receive result and the deliveries so far."""
        with self._lock:
            reg = self._reg
            if reg is None:
                return {"registered": False}
            return {
                "registered": True,
                "url": reg.url,
                "categories": sorted(reg.categories),
                "registered_at": reg.registered_at,
                "status": "OK" if reg.passed else "FAILED",
                "intent_to_receive": {"passed": reg.passed, "probes": list(reg.probes)},
                "next_sequence": reg.next_sequence,
                "pending_events": reg.pending,
                "delivered_events": reg.delivered_events,
                "failed_events": reg.failed_events,
                "deliveries": list(reg.deliveries),
            }

    @property
    def active(self) -> bool:
        """Whether a receiver passed intent to receive and gets events."""
        reg = self._reg
        return reg is not None and reg.passed

    def _entropy(self) -> str:
        with self._lock:
            return "".join(self._rng.choices(string.ascii_uppercase, k=20))

    def _intent_to_receive(self, url: str, key: str) -> list[dict[str, Any]]:
        with self._lock:
            pattern = list(_PROBE_PATTERN)
            self._rng.shuffle(pattern)
            wrong_keys = [f"{self._rng.getrandbits(256):064x}" for _ in pattern]
        probes = []
        with httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS, trust_env=False) as http:
            for signed, wrong_key in zip(pattern, wrong_keys, strict=True):
                body = json.dumps(
                    {
                        "events": [],
                        "lastEventSequence": 0,
                        "firstEventSequence": 0,
                        "entropy": self._entropy(),
                    },
                    separators=(",", ":"),
                ).encode()
                signature = sign(body, key if signed else wrong_key)
                expected = 200 if signed else 401
                status: int | None = None
                error: str | None = None
                try:
                    response = http.post(url, content=body, headers=_headers(signature))
                    status = response.status_code
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                probes.append(
                    {
                        "signed_correctly": signed,
                        "expected_status": expected,
                        "status": status,
                        "error": error,
                        "passed": status == expected,
                    }
                )
        return probes

    # ------------------------------------------------------------------ events

    def publish(
        self,
        *,
        tenant_id: str,
        category: str,
        event_type: str,
        resource_id: str,
        when: datetime,
    ) -> None:
        """Queue one event for delivery (a no-op without a receiver that passed).

        Cheap and non-blocking: the ledger calls it while holding its lock.

        Args:
            tenant_id: The organisation the change happened in.
            category: ``INVOICE`` or ``CONTACT``.
            event_type: ``CREATE`` or ``UPDATE``.
            resource_id: The invoice or contact id.
            when: The change's ``UpdatedDateUTC``.
        """
        reg = self._reg
        if reg is None or not reg.passed or category not in reg.categories:
            return
        event: dict[str, Any] = {
            "resourceUrl": f"{reg.resource_base_url}/{_RESOURCES[category]}/{resource_id}",
            "resourceId": resource_id,
            "eventDateUtc": _event_date(when),
            "eventType": event_type,
            "eventCategory": category,
            "tenantId": tenant_id,
            "tenantType": "ORGANISATION",
        }
        with self._lock:
            if self._reg is not reg:
                return
            event["sequence"] = reg.next_sequence
            reg.next_sequence += 1
            reg.pending += 1
        reg.events.put(event)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event was delivered or given up (for tests).

        Returns:
            True if idle, False if ``timeout`` passed first.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._reg is not None and self._reg.pending > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def _run(self, reg: _Registration) -> None:
        with httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS, trust_env=False) as http:
            while not reg.stop.is_set():
                try:
                    first = reg.events.get(timeout=0.05)
                except queue.Empty:
                    continue
                batch = [first]
                deadline = time.monotonic() + self.batch_window
                while len(batch) < MAX_BATCH_EVENTS:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(reg.events.get(timeout=remaining))
                    except queue.Empty:
                        break
                try:
                    self._deliver(http, reg, batch)
                except Exception:  # pragma: no cover - the thread must survive anything
                    _log.exception("webhook delivery crashed")
                with self._lock:
                    reg.pending = max(reg.pending - len(batch), 0)
                    self._idle.notify_all()

    def _deliver(self, http: httpx.Client, reg: _Registration, batch: list[dict[str, Any]]) -> None:
        first, last = batch[0]["sequence"], batch[-1]["sequence"]
        events = [{k: v for k, v in e.items() if k != "sequence"} for e in batch]
        body = json.dumps(
            {
                "events": events,
                "firstEventSequence": first,
                "lastEventSequence": last,
                "entropy": self._entropy(),
            },
            separators=(",", ":"),
        ).encode()
        headers = _headers(sign(body, reg.key))
        attempts: list[dict[str, Any]] = []
        for delay in (0.0, *RETRY_DELAYS_SECONDS):
            if delay and reg.stop.wait(delay):
                break
            status: int | None = None
            error: str | None = None
            try:
                status = http.post(reg.url, content=body, headers=headers).status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            attempts.append({"status": status, "error": error})
            if status == 200:
                break
        ok = bool(attempts) and attempts[-1]["status"] == 200
        with self._lock:
            reg.deliveries.append(
                {
                    "firstEventSequence": first,
                    "lastEventSequence": last,
                    "events": len(batch),
                    "attempts": attempts,
                    "ok": ok,
                }
            )
            if ok:
                reg.delivered_events += len(batch)
            else:
                reg.failed_events += len(batch)


def _headers(signature: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=utf-8",
        SIGNATURE_HEADER: signature,
        "User-Agent": "Connector-Sandbox-Webhooks/1.0",
    }
