"""The whole sandbox state: clock, faults, limits, idempotency cache and provider ledgers."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from connector.sandbox.clock import Clock
from connector.sandbox.faults import Faults
from connector.sandbox.idempotency import IdempotencyStore
from connector.sandbox.netsuite import NetSuiteLedger
from connector.sandbox.quickbooks import QuickBooksLedger
from connector.sandbox.ratelimit import RateLimitConfig, RateLimiter
from connector.sandbox.xero.ledger import XeroLedger

__all__ = ["PROVIDERS", "SandboxState"]

#: The ledgers one sandbox serves (all by default).
PROVIDERS: tuple[str, ...] = ("xero", "quickbooks", "netsuite")


class SandboxState:
    """Everything one sandbox serves, shared by the server thread and the test thread.

    Args:
        seed: Seed of every generated id, token and amount (same seed, same data).
        tenants: Number of Xero organisations (each with its own OAuth grant).
        invoices: Sales invoices per organisation.
        clock: Clock to use; a real-time :class:`Clock` if omitted.
        rate_limits: ``True`` for Xero's limits, ``False`` to never reject (headers are
            still sent), or a :class:`RateLimitConfig` / mapping such as ``{"minute": 3}``.
        faults: Initial faults, e.g. ``"drop_after_commit=0.2,latency_ms=50"``.
        bills: Bills (ACCPAY invoices) per organisation.
        providers: Which ledgers to seed, serve and write into configs (default all
            three: Xero under ``/xero``, QuickBooks under ``/quickbooks``, NetSuite under
            ``/netsuite``); ``tenants``, ``invoices`` and ``bills`` apply to each. The Xero
            ledger is always served; leaving it out only keeps it out of written configs.
        time_scale: Divides every window the sandbox keeps (rate-limit minute and day,
            idempotency retention, token lifetimes; see :class:`Clock`). None keeps the
            clock's own (1.0 for a new clock); a number is set on the clock.

    Attributes:
        clock: The sandbox clock.
        faults: Fault injection settings for write endpoints.
        rate_limiter: Xero rate limiting.
        idempotency: The ``Idempotency-Key`` cache.
        xero: The Xero ledger (and test API).
        lock: The re-entrant lock all ledger reads and writes take.

    Raises:
        ValueError: On a bad count, fault specification or time scale.
    """

    def __init__(
        self,
        seed: int = 1,
        tenants: int = 1,
        invoices: int = 12,
        clock: Clock | None = None,
        rate_limits: bool | RateLimitConfig | Mapping[str, int] = True,
        faults: str | None = None,
        bills: int = 3,
        time_scale: float | None = None,
        providers: Iterable[str] = PROVIDERS,
    ) -> None:
        self.seed = seed
        self.clock = clock if clock is not None else Clock()
        if time_scale is not None:
            self.clock.time_scale = time_scale
        self.lock = threading.RLock()
        self.faults = Faults(faults, seed=seed)
        self.rate_limiter = RateLimiter(RateLimitConfig.coerce(rate_limits), self.clock)
        self.idempotency = IdempotencyStore(self.clock)
        wanted = set(providers)
        unknown = wanted - set(PROVIDERS)
        if unknown:
            raise ValueError(f"unknown provider(s) {sorted(unknown)}; use {', '.join(PROVIDERS)}")
        self.providers = tuple(p for p in PROVIDERS if p in wanted)
        self.xero = XeroLedger(
            seed=seed,
            tenants=tenants,
            invoices=invoices,
            bills=bills,
            clock=self.clock,
            lock=self.lock,
        )
        # QuickBooks and NetSuite share the clock, the faults and the lock; their own
        # limits follow rate_limits on/off (their numbers are the providers' own).
        limits_on = rate_limits is not False
        self.quickbooks: QuickBooksLedger | None = (
            QuickBooksLedger(
                seed=seed,
                realms=tenants,
                invoices=invoices,
                bills=bills,
                clock=self.clock,
                lock=self.lock,
                faults=self.faults,
                rate_limits=limits_on,
            )
            if "quickbooks" in wanted
            else None
        )
        self.netsuite: NetSuiteLedger | None = (
            NetSuiteLedger(
                seed=seed,
                accounts=tenants,
                invoices=invoices,
                bills=bills,
                clock=self.clock,
                lock=self.lock,
                faults=self.faults,
                concurrency=5 if limits_on else 10_000,
            )
            if "netsuite" in wanted
            else None
        )

    @property
    def time_scale(self) -> float:
        """The clock's time scale (settable)."""
        return self.clock.time_scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        self.clock.time_scale = value

    def close(self) -> None:
        """Stop background work (webhook deliveries). The state stays readable."""
        self.xero.webhooks.close()
        if self.quickbooks is not None:
            self.quickbooks.close()
