"""Xero-style rate limits: per-tenant minute, day and concurrency limits plus an app-wide
minute limit, counted in fixed windows of the sandbox clock.

Each tenant's windows start at their own offset (Xero: "a fixed window which will reset
at different times for each tenant"), derived from the tenant id so runs are repeatable.
Rejected calls (429) do not consume quota; everything that passes, including idempotent
replays, does.

The windows last ``60 s / time_scale`` and ``86,400 s / time_scale`` of the sandbox clock
(:attr:`connector.sandbox.clock.Clock.time_scale`); ``Retry-After`` is the whole number
of seconds until the breached window ends, at least 1. Changing the time scale while
serving starts new windows.
"""

from __future__ import annotations

import functools
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
        windows: For an allowed call, the (minute, day, app-minute) window indices it
            was counted in, so :meth:`RateLimiter.refund` can take it back exactly.
    """

    allowed: bool
    problem: str | None = None
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    windows: tuple[int, int, int] | None = None


@dataclass
class _Window:
    index: int = -1
    count: int = 0

    def current(self, index: int) -> int:
        if index != self.index:
            self.index, self.count = index, 0
        return self.count


_OFFSET_STEPS = 1_000_000


@functools.lru_cache(maxsize=4096)
def _offset_fraction(tenant_id: str, period: int) -> float:
    """Where in its window a tenant's windows start, as a fraction (stable per tenant)."""
    digest = hashlib.sha256(f"{tenant_id}:{period}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") % _OFFSET_STEPS) / _OFFSET_STEPS


@dataclass(frozen=True)
class _Frame:
    """The window geometry of one tenant at one moment."""

    seconds: float
    minute_len: float
    day_len: float
    m_off: float
    d_off: float

    @property
    def m_index(self) -> int:
        return math.floor((self.seconds - self.m_off) / self.minute_len)

    @property
    def d_index(self) -> int:
        return math.floor((self.seconds - self.d_off) / self.day_len)

    @property
    def a_index(self) -> int:
        return math.floor(self.seconds / self.minute_len)

    def retry_after(self, problem: str) -> int | None:
        if problem == "minute":
            return _until((self.m_index + 1) * self.minute_len + self.m_off, self.seconds)
        if problem == "day":
            return _until((self.d_index + 1) * self.day_len + self.d_off, self.seconds)
        return None


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

    def _frame(self, tenant_id: str) -> _Frame:
        scale = self._clock.time_scale
        minute_len, day_len = _MINUTE / scale, _DAY / scale
        return _Frame(
            seconds=(self._clock.now() - _EPOCH).total_seconds(),
            minute_len=minute_len,
            day_len=day_len,
            m_off=_offset_fraction(tenant_id, _MINUTE) * minute_len,
            d_off=_offset_fraction(tenant_id, _DAY) * day_len,
        )

    def acquire(self, app_id: str, tenant_id: str) -> RateDecision:
        """Count one call, or reject it with the breached limit.

        An allowed call is "in progress" until :meth:`release` is called for it.
        """
        cfg = self.config
        frame = self._frame(tenant_id)
        m_index, d_index, a_index = frame.m_index, frame.d_index, frame.a_index
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
                elif used_m >= cfg.minute:
                    problem = "minute"
                elif used_a >= cfg.app_minute:
                    problem = "appminute"
                elif running >= cfg.concurrent:
                    problem = "concurrent"
            if problem is not None:
                retry_after = frame.retry_after(problem)
            else:
                minute.count += 1
                day.count += 1
                app.count += 1
                self._in_progress[tenant_id] = running + 1
            headers = self._headers(minute, day, app)
        windows = (m_index, d_index, a_index) if problem is None else None
        return RateDecision(problem is None, problem, retry_after, headers, windows)

    def _headers(self, minute: _Window, day: _Window, app: _Window) -> dict[str, str]:
        cfg = self.config
        return {
            "X-DayLimit-Remaining": str(max(cfg.day - day.count, 0)),
            "X-MinLimit-Remaining": str(max(cfg.minute - minute.count, 0)),
            "X-AppMinLimit-Remaining": str(max(cfg.app_minute - app.count, 0)),
        }

    def release(self, tenant_id: str) -> None:
        """Mark one allowed call of ``tenant_id`` as finished."""
        with self._lock:
            self._in_progress[tenant_id] = max(self._in_progress.get(tenant_id, 0) - 1, 0)

    def refund(self, app_id: str, tenant_id: str, decision: RateDecision) -> dict[str, str]:
        """Take back the quota an allowed call used (it was rejected after all).

        Used for an injected 429, which must look like a real one: a rejected call does
        not use up quota. The call stays "in progress" until :meth:`release`.

        Returns:
            The ``X-*Limit-Remaining`` headers after the refund.
        """
        with self._lock:
            minute = self._minute.setdefault(tenant_id, _Window())
            day = self._day.setdefault(tenant_id, _Window())
            app = self._app.setdefault(app_id, _Window())
            if decision.windows is not None:
                m_index, d_index, a_index = decision.windows
                for window, index in ((minute, m_index), (day, d_index), (app, a_index)):
                    if window.index == index and window.count > 0:
                        window.count -= 1
            return self._headers(minute, day, app)

    def retry_after(self, tenant_id: str, problem: str = "minute") -> int | None:
        """Seconds until the tenant's ``minute`` or ``day`` window ends (None otherwise)."""
        return self._frame(tenant_id).retry_after(problem)


def _until(reset_at: float, now: float) -> int:
    return max(math.ceil(reset_at - now), 1)
