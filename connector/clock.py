"""Injectable time for the engine (tests move it; production reads the wall clock)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Protocol

from connector.types import utcnow

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Anything that tells the time as an aware UTC datetime."""

    def now(self) -> datetime:
        """The current time."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """The current UTC time."""
        return utcnow()


class ManualClock:
    """Wall clock plus an offset that tests can advance."""

    def __init__(self) -> None:
        self._offset = timedelta()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The current UTC time plus the offset."""
        with self._lock:
            return utcnow() + self._offset

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        with self._lock:
            self._offset += timedelta(seconds=seconds)
