"""``requestid`` de-duplication (fact sheet §5), per realm.

"If the service receives another request with the same RequestID, instead of performing
the operation again or returning an error, the service sends the same response as it did
for the original request" — so a repeat is answered from the store whatever its body.

Sandbox choices where the fact sheet is silent:

* Retention: 24 hours of the sandbox clock (divided by ``clock.time_scale``), counted
  from the first use.
* Only answers produced by processing the write are stored: HTTP 200 (a batch is always
  200, its per-item faults included). A request refused before processing (401, 429,
  injected errors before commit, dropped connections) or failing validation (4xx) is not
  remembered, so a retry with the same requestid is processed.
* A duplicate arriving while the first is still being processed waits for it.
* The stored body is replayed as is, even if the object was deleted since (the dead id
  comes back: LanternOps/breeze#4624).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from connector.sandbox.clock import Clock

__all__ = ["RETENTION", "RequestIdStore", "StoredResponse"]

RETENTION = timedelta(hours=24)


@dataclass(frozen=True)
class StoredResponse:
    """An answer kept for replay."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Entry:
    created: datetime
    response: StoredResponse | None = None


class RequestIdStore:
    """In-memory requestid store driven by the sandbox clock."""

    _POLL_SECONDS = 0.005

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}

    def _retention(self) -> timedelta:
        return RETENTION / float(getattr(self._clock, "time_scale", 1.0) or 1.0)

    def _purge(self, now: datetime) -> None:
        keep = self._retention()
        for key in [k for k, e in self._entries.items() if now - e.created >= keep]:
            if self._entries[key].response is not None:
                del self._entries[key]

    async def claim(self, realm_id: str, request_id: str) -> StoredResponse | None:
        """Own ``request_id`` (returns None) or get the stored answer to replay.

        Waits while another request with the same id is in flight.
        """
        key = (realm_id, request_id)
        while True:
            with self._lock:
                now = self._clock.now()
                self._purge(now)
                entry = self._entries.get(key)
                if entry is None:
                    self._entries[key] = _Entry(now)
                    return None
                if entry.response is not None:
                    return entry.response
            await asyncio.sleep(self._POLL_SECONDS)

    def complete(self, realm_id: str, request_id: str, response: StoredResponse) -> None:
        """Store the answer of an owned id."""
        with self._lock:
            entry = self._entries.get((realm_id, request_id))
            if entry is not None:
                entry.response = response

    def abandon(self, realm_id: str, request_id: str) -> None:
        """Forget an owned id whose request produced nothing to remember."""
        with self._lock:
            entry = self._entries.get((realm_id, request_id))
            if entry is not None and entry.response is None:
                del self._entries[(realm_id, request_id)]

    def clear(self) -> None:
        """Forget every id."""
        with self._lock:
            self._entries.clear()
