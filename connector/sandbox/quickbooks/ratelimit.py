"""QuickBooks Online throttling (fact sheet §8), per realm, in fixed windows of the sandbox clock.

* 500 requests per minute per realm (batch calls count as one request each);
* 10 requests in progress at once per realm;
* 40 batch requests per minute per realm;
* optionally N requests per second (the fact sheet's 10 rps; off by default because a
  frozen test clock would never leave its first second).

Windows are ``nominal / clock.time_scale``. Rejected calls do not use up quota. The
response headers are not documented (fact sheet §8: ``Retry-After`` is only reported
by a user, intuit/QuickBooks-V3-PHP-SDK#184); the sandbox sends ``Retry-After`` with
the seconds until the breached window resets, nothing for the concurrency limit.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

from connector.sandbox.clock import Clock

__all__ = ["QboRateDecision", "QboRateLimiter", "QboRateLimits"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class QboRateLimits:
    """Limits per realm; defaults are Intuit's published ones.

    Attributes:
        minute: Requests per realm per minute.
        concurrent: Requests per realm in progress at once.
        batch_minute: Batch requests per realm per minute.
        second: Requests per realm per second, or None for no such limit.
        enabled: When False nothing is ever rejected.
    """

    minute: int = 500
    concurrent: int = 10
    batch_minute: int = 40
    second: int | None = None
    enabled: bool = True

    @classmethod
    def coerce(cls, value: bool | QboRateLimits | Mapping[str, object] | None) -> QboRateLimits:
        """``True``/None → defaults, ``False`` → disabled, a mapping → overrides."""
        if isinstance(value, QboRateLimits):
            return value
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(enabled=False)
        known = asdict(cls())
        unknown = set(value) - set(known)
        if unknown:
            raise ValueError(f"unknown rate limit settings: {', '.join(sorted(unknown))}")
        return replace(cls(), **dict(value))  # type: ignore[arg-type]


@dataclass(frozen=True)
class QboRateDecision:
    """Outcome of :meth:`QboRateLimiter.acquire`."""

    allowed: bool
    problem: str | None = None
    retry_after: int | None = None


@dataclass
class _Window:
    index: int = -1
    count: int = 0

    def current(self, index: int) -> int:
        if index != self.index:
            self.index, self.count = index, 0
        return self.count


@dataclass
class _RealmCounters:
    minute: _Window = field(default_factory=_Window)
    second: _Window = field(default_factory=_Window)
    batch: _Window = field(default_factory=_Window)
    running: int = 0


class QboRateLimiter:
    """Counts calls per realm against :class:`QboRateLimits`."""

    def __init__(self, limits: QboRateLimits, clock: Clock) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._realms: dict[str, _RealmCounters] = {}

    def acquire(self, realm_id: str, *, batch: bool = False) -> QboRateDecision:
        """Count one call (a batch call also counts against the batch limit).

        An allowed call is in progress until :meth:`release`.
        """
        cfg = self.limits
        scale = float(getattr(self._clock, "time_scale", 1.0) or 1.0)
        minute_len, second_len = 60.0 / scale, 1.0 / scale
        now = (self._clock.now() - _EPOCH).total_seconds()
        m_index, s_index = math.floor(now / minute_len), math.floor(now / second_len)
        with self._lock:
            c = self._realms.setdefault(realm_id, _RealmCounters())
            used_m, used_s, used_b = (
                c.minute.current(m_index),
                c.second.current(s_index),
                c.batch.current(m_index),
            )
            problem: str | None = None
            retry: int | None = None
            if cfg.enabled:
                if used_m >= cfg.minute:
                    problem, retry = "minute", _until((m_index + 1) * minute_len, now)
                elif batch and used_b >= cfg.batch_minute:
                    problem, retry = "batch", _until((m_index + 1) * minute_len, now)
                elif cfg.second is not None and used_s >= cfg.second:
                    problem, retry = "second", _until((s_index + 1) * second_len, now)
                elif c.running >= cfg.concurrent:
                    problem = "concurrent"
            if problem is None:
                c.minute.count += 1
                c.second.count += 1
                if batch:
                    c.batch.count += 1
                c.running += 1
        return QboRateDecision(problem is None, problem, retry)

    def refund(self, realm_id: str, *, batch: bool = False) -> None:
        """Give back the quota of an allowed call that was refused after all (a fault)."""
        with self._lock:
            c = self._realms.setdefault(realm_id, _RealmCounters())
            c.minute.count = max(c.minute.count - 1, 0)
            c.second.count = max(c.second.count - 1, 0)
            if batch:
                c.batch.count = max(c.batch.count - 1, 0)

    def release(self, realm_id: str) -> None:
        """Mark one allowed call of the realm as finished."""
        with self._lock:
            c = self._realms.setdefault(realm_id, _RealmCounters())
            c.running = max(c.running - 1, 0)


def _until(reset_at: float, now: float) -> int:
    return max(math.ceil(reset_at - now), 1)
