"""``Idempotency-Key`` handling, modelled on Xero's documented behaviour.

* Keys are scoped per app (client id) and tenant and kept for 6 minutes of the sandbox
  clock from the first call (``6 min / time_scale``, see
  :class:`~connector.sandbox.clock.Clock`); afterwards a repeat is processed as new.
* The first response (any status, errors included) is cached; the same key with the
  same request (method, path, query and body bytes) replays it without processing.
* The same key with a different request is rejected.
* A concurrent duplicate waits for the first call to finish, then gets its response.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from connector.sandbox.clock import Clock

__all__ = ["CachedResponse", "IdempotencyStore", "Outcome", "fingerprint"]

Scope = tuple[str, str, str]


@dataclass(frozen=True)
class CachedResponse:
    """A response as stored for replay (rate-limit headers are added fresh on replay)."""

    status: int
    body: bytes
    media_type: str | None
    headers: dict[str, str] = field(default_factory=dict)


class Outcome(Enum):
    """What :meth:`IdempotencyStore.claim` decided."""

    NEW = "new"  # the caller owns the key and must complete() or abandon() it
    REPLAY = "replay"  # the cached response must be returned
    CONFLICT = "conflict"  # the key was used with a different request


@dataclass
class _Entry:
    fingerprint: str
    created: datetime
    response: CachedResponse | None = None


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    """Identify a request for key-reuse comparison."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), query.encode()):
        digest.update(part)
        digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


class IdempotencyStore:
    """In-memory idempotency cache driven by the sandbox clock.

    Args:
        clock: The sandbox clock.
        retention: How long a key is remembered after its first use, in provider time
            (the store keeps it ``retention / clock.time_scale``).
    """

    MAX_KEY_LENGTH = 128
    _POLL_SECONDS = 0.005

    def __init__(self, clock: Clock, retention: timedelta = timedelta(minutes=6)) -> None:
        self._clock = clock
        self.retention = retention
        self._lock = threading.Lock()
        # Insertion order is creation order (the clock never goes back), so expired
        # entries are always at the front and purging is amortised O(1) per call.
        self._entries: OrderedDict[Scope, _Entry] = OrderedDict()

    @property
    def effective_retention(self) -> timedelta:
        """The retention in sandbox time: ``retention / time_scale``."""
        return self._clock.scaled(self.retention)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _purge(self, now: datetime, retention: timedelta) -> None:
        for _ in range(len(self._entries)):
            key, entry = next(iter(self._entries.items()))
            if now - entry.created < retention:
                return
            if entry.response is None:
                # Still in flight: its owner will complete or abandon it. Move it to
                # the back so the expired entries behind it are purged now (a lookup
                # checks the age itself, so its place in the order does not matter).
                self._entries.move_to_end(key)
            else:
                del self._entries[key]

    async def claim(self, scope: Scope, print_: str) -> tuple[Outcome, CachedResponse | None]:
        """Claim ``scope`` (app, tenant, key) for a request with fingerprint ``print_``.

        Waits (without blocking the event loop) while another request with the same key
        is still being processed.
        """
        while True:
            with self._lock:
                now = self._clock.now()
                retention = self.effective_retention
                self._purge(now, retention)
                entry = self._entries.get(scope)
                expired = entry is not None and now - entry.created >= retention
                if entry is not None and entry.response is not None and expired:
                    del self._entries[scope]
                    entry = None
                if entry is None:
                    self._entries[scope] = _Entry(print_, now)
                    return Outcome.NEW, None
                if entry.fingerprint != print_:
                    return Outcome.CONFLICT, None
                if entry.response is not None:
                    return Outcome.REPLAY, entry.response
            # Polling rather than an asyncio.Event keeps the store usable from any
            # event loop or thread (the state may outlive one server).
            await asyncio.sleep(self._POLL_SECONDS)

    def complete(self, scope: Scope, response: CachedResponse) -> None:
        """Store the response of a claimed key."""
        with self._lock:
            entry = self._entries.get(scope)
            if entry is not None:
                entry.response = response

    def abandon(self, scope: Scope) -> None:
        """Forget a claimed key whose request was never processed (e.g. dropped)."""
        with self._lock:
            entry = self._entries.get(scope)
            if entry is not None and entry.response is None:
                del self._entries[scope]

    def clear(self) -> None:
        """Forget every key."""
        with self._lock:
            self._entries.clear()
