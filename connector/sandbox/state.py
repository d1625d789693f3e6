"""The whole sandbox state: clock, faults, limits, idempotency cache and provider ledgers."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from connector.sandbox.clock import Clock
from connector.sandbox.faults import Faults
from connector.sandbox.idempotency import IdempotencyStore
from connector.sandbox.ratelimit import RateLimitConfig, RateLimiter
from connector.sandbox.xero.ledger import XeroLedger

__all__ = ["SandboxState"]


class SandboxState:
    """Everything one sandbox serves, shared by the server thread and the test thread.

    Args:
        seed: Seed of every generated id, token and amount (same seed, same data).
        tenants: Number of Xero organisations (each with its own OAuth grant).
        invoices: Sales invoices per organisation (three bills are added).
        clock: Clock to use; a real-time :class:`Clock` if omitted.
        rate_limits: ``True`` for Xero's limits, ``False`` to never reject (headers are
            still sent), or a :class:`RateLimitConfig` / mapping such as ``{"minute": 3}``.
        faults: Initial faults, e.g. ``"drop_after_commit=0.2,latency_ms=50"``.

    Attributes:
        clock: The sandbox clock.
        faults: Fault injection settings for write endpoints.
        rate_limiter: Xero rate limiting.
        idempotency: The ``Idempotency-Key`` cache.
        xero: The Xero ledger (and test API).
        lock: The re-entrant lock all ledger reads and writes take.
    """

    def __init__(
        self,
        seed: int = 1,
        tenants: int = 1,
        invoices: int = 12,
        clock: Clock | None = None,
        rate_limits: bool | RateLimitConfig | Mapping[str, int] = True,
        faults: str | None = None,
    ) -> None:
        self.seed = seed
        self.clock = clock if clock is not None else Clock()
        self.lock = threading.RLock()
        self.faults = Faults(faults, seed=seed)
        self.rate_limiter = RateLimiter(RateLimitConfig.coerce(rate_limits), self.clock)
        self.idempotency = IdempotencyStore(self.clock)
        self.xero = XeroLedger(
            seed=seed, tenants=tenants, invoices=invoices, clock=self.clock, lock=self.lock
        )
