"""Xero-style rate limits: per-tenant minute, day and concurrency limits plus an app-wide
minute limit, counted in fixed windows of the sandbox clock.

Each tenant's windows start at their own offset (Xero: "a fixed window which will reset
at different times for each tenant"), derived from the tenant id so runs are repeatable.
Rejected calls (429) do not consume quota; everything that passes, including idempotent
replays, does.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from connector.sandbox.clock import Clock

__all__ = ["RateDecision", "RateLimitConfig", "RateLimiter"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = 60
_DAY = 86_400


@dataclass(frozen=True)
class RateLimitConfig:
    """Limits; the defaults are Xero's published ones.

    Attributes:
        minute: Calls per tenant per minute.
        day: Calls per tenant per day.
        concurrent: Calls per tenant in progress at once.
        app_minute: Calls per app (all tenants) per minute.
        enabled: When False, calls are still counted for the response headers but never
            rejected.
    """

    minute: int = 60
    day: int = 5000
    concurrent: int = 5
    app_minute: int = 10_000
    enabled: bool = True

    @classmethod
    def coerce(cls, value: bool | RateLimitConfig | Mapping[str, int] | None) -> RateLimitConfig:
        """Build a config from the forms ``SandboxState(rate_limits=...)`` accepts.

        ``True``/``None`` → defaults, ``False`` → disabled, a mapping → defaults with
        those fields overridden (e.g. ``{"minute": 3}``).
        """
        if isinstance(value, RateLimitConfig):
            return value
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(enabled=False)
        return cls(**{**asdict(cls()), **dict(value)})


@dataclass(frozen=True)
class RateDecision:
    """Outcome of :meth:`RateLimiter.acquire`.

    Attributes:
        allowed: Whether the call may proceed (then it must be released).
        problem: ``minute``, ``day``, ``concurrent`` or ``appminute`` when rejected.
        retry_after: Seconds until the breached window resets (minute/day only).
        headers: The ``X-*Limit-Remaining`` headers for the response.
    """

    allowed: bool
    problem: str | None = None
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Window:
    index: int = -1
    count: int = 0

    def current(self, index: int) -> int:
        if index != self.index:
            self.index, self.count = index, 0
        return self.count


def _offset(tenant_id: str, period: int) -> int:
    digest = hashlib.sha256(f"{tenant_id}:{period}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % period


class RateLimiter:
    """Counts calls per tenant and per app against :class:`RateLimitConfig`.

    Args:
        config: The limits.
        clock: The sandbox clock that drives the windows.
    """

    def __init__(self, config: RateLimitConfig, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._minute: dict[str, _Window] = {}
        self._day: dict[str, _Window] = {}
        self._app: dict[str, _Window] = {}
        self._in_progress: dict[str, int] = {}

    def acquire(self, app_id: str, tenant_id: str) -> RateDecision:
        """Count one call, or reject it with the breached limit.

        An allowed call is "in progress" until :meth:`release` is called for it.
        """
        cfg = self.config
        seconds = (self._clock.now() - _EPOCH).total_seconds()
        m_off, d_off = _offset(tenant_id, _MINUTE), _offset(tenant_id, _DAY)
        m_index = math.floor((seconds - m_off) / _MINUTE)
        d_index = math.floor((seconds - d_off) / _DAY)
        a_index = math.floor(seconds / _MINUTE)
        with self._lock:
            minute = self._minute.setdefault(tenant_id, _Window())
            day = self._day.setdefault(tenant_id, _Window())
            app = self._app.setdefault(app_id, _Window())
            used_m, used_d, used_a = (
                minute.current(m_index),
                day.current(d_index),
                app.current(a_index),
            )
            running = self._in_progress.get(tenant_id, 0)
            problem: str | None = None
            retry_after: int | None = None
            if cfg.enabled:
                if used_d >= cfg.day:
                    problem = "day"
                    retry_after = _until((d_index + 1) * _DAY + d_off, seconds)
                elif used_m >= cfg.minute:
                    problem = "minute"
                    retry_after = _until((m_index + 1) * _MINUTE + m_off, seconds)
                elif used_a >= cfg.app_minute:
                    problem = "appminute"
                elif running >= cfg.concurrent:
                    problem = "concurrent"
            if problem is None:
                minute.count += 1
                day.count += 1
                app.count += 1
                self._in_progress[tenant_id] = running + 1
            headers = {
                "X-DayLimit-Remaining": str(max(cfg.day - day.count, 0)),
                "X-MinLimit-Remaining": str(max(cfg.minute - minute.count, 0)),
                "X-AppMinLimit-Remaining": str(max(cfg.app_minute - app.count, 0)),
            }
        return RateDecision(problem is None, problem, retry_after, headers)

    def release(self, tenant_id: str) -> None:
        """Mark one allowed call of ``tenant_id`` as finished."""
        with self._lock:
            self._in_progress[tenant_id] = max(self._in_progress.get(tenant_id, 0) - 1, 0)


def _until(reset_at: float, now: float) -> int:
    return max(math.ceil(reset_at - now), 1)
