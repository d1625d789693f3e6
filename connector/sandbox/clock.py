"""Injectable sandbox clock.

Every time-dependent behaviour of the sandbox (token expiry, idempotency retention,
rate-limit windows, ``UpdatedDateUTC`` stamps) reads this clock, so tests can jump
forward in time instead of sleeping.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

__all__ = ["Clock"]


class Clock:
    """Real UTC time plus an adjustable, forward-only offset.

    Args:
        offset_seconds: Initial offset added to the real time (may be negative, e.g. to
            pretend the sandbox runs in the past).
        frozen_at: If given, the clock does not follow real time: it reads
            ``frozen_at`` plus the offset, and only :meth:`advance` moves it. Useful for
            tests that must not straddle a rate-limit window by accident.
    """

    def __init__(self, offset_seconds: float = 0.0, *, frozen_at: datetime | None = None) -> None:
        if frozen_at is not None and frozen_at.tzinfo is None:
            raise ValueError("frozen_at must be timezone-aware")
        self._offset = timedelta(seconds=offset_seconds)
        self._frozen_at = frozen_at
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

    def as_dict(self) -> dict[str, object]:
        """Describe the clock for the admin endpoint."""
        now = self.now()
        return {"now": now.isoformat(), "offset_seconds": self.offset_seconds}
