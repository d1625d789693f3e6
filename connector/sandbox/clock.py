"""Injectable sandbox clock.

Every time-dependent behaviour of the sandbox (token expiry, idempotency retention,
rate-limit windows, ``UpdatedDateUTC`` stamps) reads this clock, so tests can jump
forward in time instead of sleeping.

The clock also carries a **time scale**. Every window the sandbox keeps (the rate-limit
minute and day, the 6-minute ``Idempotency-Key`` retention, the 30-minute access token,
the 30-minute refresh grace, the 60-day refresh-token expiry) lasts
``nominal / time_scale`` seconds of sandbox time, read through :meth:`Clock.scaled`. At
``time_scale=60`` a chaos run or a benchmark keeps the provider's proportions in 1/60
of the time: a "minute" of rate limiting lasts one second, an access token 30 seconds.
The clock itself still runs at real speed; only the windows shrink.
"""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta

__all__ = ["Clock"]


def _check_scale(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"time_scale must be a number, got {value!r}")
    scale = float(value)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError("time_scale must be a finite number greater than zero")
    return scale


class Clock:
    """Real UTC time plus an adjustable, forward-only offset, and a window time scale.

    Args:
        offset_seconds: Initial offset added to the real time (may be negative, e.g. to
            pretend the sandbox runs in the past).
        frozen_at: If given, the clock does not follow real time: it reads
            ``frozen_at`` plus the offset, and only :meth:`advance` moves it. Useful for
            tests that must not straddle a rate-limit window by accident.
        time_scale: Divides every window the sandbox keeps (see the module docstring);
            1.0 is the provider's real durations.

    Raises:
        ValueError: If ``frozen_at`` is naive or ``time_scale`` is not a positive number.
    """

    def __init__(
        self,
        offset_seconds: float = 0.0,
        *,
        frozen_at: datetime | None = None,
        time_scale: float = 1.0,
    ) -> None:
        if frozen_at is not None and frozen_at.tzinfo is None:
            raise ValueError("frozen_at must be timezone-aware")
        self._offset = timedelta(seconds=offset_seconds)
        self._frozen_at = frozen_at
        self._time_scale = _check_scale(time_scale)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """Return the current sandbox time as an aware UTC datetime."""
        with self._lock:
            offset = self._offset
        base = self._frozen_at if self._frozen_at is not None else datetime.now(UTC)
        return (base + offset).astimezone(UTC)

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward.

        Args:
            seconds: How far to jump; must not be negative, because the sandbox relies on
                time never going backwards (``UpdatedDateUTC`` ordering, token expiry).

        Returns:
            The new current sandbox time.

        Raises:
            ValueError: If ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        with self._lock:
            self._offset += timedelta(seconds=seconds)
        return self.now()

    @property
    def offset_seconds(self) -> float:
        """The total offset from real time, in seconds."""
        with self._lock:
            return self._offset.total_seconds()

    @property
    def time_scale(self) -> float:
        """The divisor of every sandbox window (1.0 = real durations)."""
        with self._lock:
            return self._time_scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        scale = _check_scale(value)
        with self._lock:
            self._time_scale = scale

    def scaled(self, nominal: timedelta) -> timedelta:
        """How long a window of ``nominal`` provider time lasts in this sandbox.

        Args:
            nominal: The provider's duration (e.g. Xero's 30-minute access token).

        Returns:
            ``nominal / time_scale``.
        """
        return nominal / self.time_scale

    def scaled_seconds(self, nominal_seconds: float) -> float:
        """:meth:`scaled` for a number of seconds."""
        return nominal_seconds / self.time_scale

    def as_dict(self) -> dict[str, object]:
        """Describe the clock for the admin endpoint."""
        now = self.now()
        return {
            "now": now.isoformat(),
            "offset_seconds": self.offset_seconds,
            "frozen": self._frozen_at is not None,
            "time_scale": self.time_scale,
        }
