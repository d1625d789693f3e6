"""Client-side rate limiting, shared by every :class:`~connector.http.ProviderHTTP` of a tenant.

Providers limit calls per tenant (Xero: 5 in flight, 60 a minute, 5,000 a day;
QuickBooks: 10 in flight, 500 a minute, 40 ``/batch`` calls a minute; NetSuite: the
account's concurrency limit). A :class:`TenantLimiter` keeps a connection under those
limits *before* it sends, so a 429 stays rare:

* a **concurrency slot** per request in flight (``RateLimits.concurrency``);
* a **sliding window** per quota (:class:`Window`): a request may leave only while
  fewer than ``limit`` requests of that window were answered less than the window's
  length ago (or are still in flight). A request is counted from when it was sent
  until the window's length after its *answer* came back: the provider saw it
  somewhere in between, so ``limit`` calls can never land in one of the provider's
  fixed windows (whatever its offset) and no latency margin is needed;
* what the provider says about its **remaining quota** (``X-MinLimit-Remaining`` …):
  when a response reports fewer calls left than our own count predicts (another
  process, or a lower limit than we were told), at most that many more calls leave
  until the window could have rolled (``now + min(window, 1 minute)``; after that one
  call goes and its answer tells again);
* a **429** blocks the whole tenant, every thread, for ``Retry-After`` (seconds or an
  HTTP date), or a short back-off when the provider sent none. A refused call is given
  back to the windows (providers answer 429 before counting or processing).

A wait longer than the caller's ``max_wait`` (the connection's
``max_inline_wait_seconds``) is not slept through: :class:`RateLimited` is raised
*before anything is sent*, with ``retry_after`` = the wait.

**Time** is the caller's :class:`~connector.clock.Clock` (so a test that moves the
connector's and the sandbox's clocks together moves the windows too); a sleep is
also credited as elapsed, so an injected sleep that does not really sleep cannot
wait forever. **Time scale**: every window lasts ``seconds / time_scale``, to match
``connector sandbox --time-scale N`` (whose windows shrink N times). It defaults to the
environment variable ``CONNECTOR_RATE_TIME_SCALE`` (unset: 1.0, the providers' real
durations), so a benchmark runs real limits, time-scaled, with
``CONNECTOR_RATE_TIME_SCALE=60 connector …`` against ``connector sandbox --time-scale 60``.

**Sharing**: one limiter per ``(store URL, provider, base URL, tenant)`` in a process
(:func:`limiter_for`), so every ProviderHTTP of a connection, in every thread, draws
from the same quota. The base URL and store are part of the key so that separate
sandboxes, cassettes and test stores never share quota; in production they are the
same for every client of a tenant. Coordination across processes is not done here.

**Stats**: :func:`stats` (all tenants) or :meth:`TenantLimiter.stats` — requests
sent, 429s, inline retries, refusals, seconds waited (pacing and 429 blocks, and
separately for a concurrency slot), requests in flight, and each window's current
usage.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.errors import RateLimited

__all__ = [
    "ENV_TIME_SCALE",
    "PROVIDER_LIMITS",
    "RateLimits",
    "TenantLimiter",
    "Ticket",
    "Window",
    "limiter_for",
    "stats",
    "time_scale_from_env",
]

#: Environment variable with the default time scale of every limiter (see module doc).
ENV_TIME_SCALE = "CONNECTOR_RATE_TIME_SCALE"
#: Back-off after a 429 that carries no ``Retry-After`` (concurrency limits), in
#: provider seconds (divided by the time scale).
DEFAULT_BACKOFF_SECONDS = 1.0
#: Longest wait for a concurrency slot before giving up as rate limited (nothing sent).
SLOT_WAIT_SECONDS = 60.0
#: How long a header-reported budget is trusted at most, in provider seconds.
_BUDGET_HORIZON = 60.0
#: Poll interval while a full window holds only requests still in flight.
_POLL_SECONDS = 0.01


@dataclass(frozen=True)
class Window:
    """One quota: at most ``limit`` calls per ``seconds``.

    Attributes:
        name: What the stats and errors call it (``minute``, ``day``, ``batch``…).
        limit: Calls per window, or None when only the provider's header tells.
        seconds: The window's length in provider time (before the time scale).
        header: The response header carrying the provider's remaining count, if any.
        path_suffix: Only calls whose path ends with this count (``/batch``); None: all.
    """

    name: str
    limit: int | None
    seconds: float
    header: str | None = None
    path_suffix: str | None = None

    def applies(self, path: str) -> bool:
        """Whether a call to ``path`` counts against this window."""
        return self.path_suffix is None or path.rstrip("/").endswith(self.path_suffix)


@dataclass(frozen=True)
class RateLimits:
    """A tenant's limits: requests in flight and the windows.

    Attributes:
        concurrency: Requests in flight at once, or None for no client-side cap.
        windows: The quotas (:class:`Window`).
    """

    concurrency: int | None = None
    windows: tuple[Window, ...] = ()

    @classmethod
    def for_provider(cls, provider: str, capabilities: Any | None = None) -> RateLimits:
        """The limits of ``provider``, sized from an adapter's ``capabilities``.

        ``capabilities.concurrency`` and ``capabilities.per_minute`` give the
        concurrency cap and the per-minute window; :data:`PROVIDER_LIMITS` adds what
        the capabilities do not carry (Xero's day limit and remaining-quota headers,
        QuickBooks' ``/batch`` limit). NetSuite has no per-minute quota (its
        ``per_minute`` is nominal): concurrency only. Without capabilities only what
        the provider's headers and 429s say is obeyed.
        """
        spec = PROVIDER_LIMITS.get(provider, {})
        windows: list[Window] = []
        per_minute = getattr(capabilities, "per_minute", None) if capabilities else None
        if spec.get("per_minute", True) and per_minute:
            windows.append(Window("minute", int(per_minute), 60.0, spec.get("minute_header")))
        elif spec.get("minute_header"):
            windows.append(Window("minute", None, 60.0, spec["minute_header"]))
        for extra in spec.get("windows", ()):
            if capabilities is None and extra.limit is not None:
                extra = Window(extra.name, None, extra.seconds, extra.header, extra.path_suffix)
                if extra.header is None:
                    continue
            windows.append(extra)
        concurrency = getattr(capabilities, "concurrency", None) if capabilities else None
        return cls(concurrency=int(concurrency) if concurrency else None, windows=tuple(windows))


#: What each provider limits beyond ``Capabilities.concurrency``/``per_minute``
#: (fact sheets: Xero §6, QuickBooks §6 and §8, NetSuite §7).
PROVIDER_LIMITS: dict[str, dict[str, Any]] = {
    "xero": {
        "minute_header": "X-MinLimit-Remaining",
        "windows": (
            Window("day", 5000, 86_400.0, "X-DayLimit-Remaining"),
            # App-wide (all tenants) 10,000 a minute: only the header is followed.
            Window("appminute", None, 60.0, "X-AppMinLimit-Remaining"),
        ),
    },
    "quickbooks": {
        # Batch calls also count against the 500 a minute (fact sheet §8).
        "windows": (Window("batch", 40, 60.0, None, "/batch"),),
    },
    "netsuite": {"per_minute": False},
}


def time_scale_from_env(environ: Mapping[str, str] | None = None) -> float:
    """The time scale ``CONNECTOR_RATE_TIME_SCALE`` asks for (1.0 when unset).

    Raises:
        ValueError: If the variable is set to something other than a positive number.
    """
    raw = (os.environ if environ is None else environ).get(ENV_TIME_SCALE, "").strip()
    if not raw:
        return 1.0
    return check_time_scale(raw, source=ENV_TIME_SCALE)


def check_time_scale(value: object, *, source: str = "time_scale") -> float:
    """``value`` as a finite, positive float, or ValueError naming ``source``."""
    try:
        scale = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{source} must be a positive number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{source} must be a positive number, got {value!r}")
    return scale


@dataclass(eq=False)
class Ticket:
    """One request that got past the limiter: counted in ``windows`` from ``sent_at``.

    ``end`` is set when the answer (or the failure) is in.
    """

    seq: int
    sent_at: float
    path: str
    windows: tuple[str, ...]
    end: float | None = None
    waited: float = 0.0


@dataclass
class _Budget:
    """The provider said ``remaining`` calls were left when call ``seq`` arrived."""

    remaining: int
    seq: int
    expires: float


@dataclass
class _Counters:
    requests: int = 0
    throttled: int = 0
    retried: int = 0
    refused: int = 0
    waited_seconds: float = 0.0
    slot_wait_seconds: float = 0.0
    max_in_flight: int = 0
    remaining: dict[str, int] = field(default_factory=dict)


class TenantLimiter:
    """Keeps one tenant's calls under its :class:`RateLimits` (see the module doc).

    Thread-safe; one instance per tenant and process (:func:`limiter_for`).
    """

    def __init__(self, name: str, limits: RateLimits, time_scale: float = 1.0) -> None:
        self.name = name
        self.limits = limits
        self.time_scale = check_time_scale(time_scale)
        self._cond = threading.Condition()
        self._seq = 0
        self._in_flight = 0
        self._blocked_until = -math.inf
        self._entries: dict[str, deque[Ticket]] = {w.name: deque() for w in limits.windows}
        self._budgets: dict[str, _Budget] = {}
        self._counters = _Counters()
        # The last clock reading and the monotonic time it was taken (for stats()).
        self._last_seen = (time.time(), time.monotonic())

    # -- configuration --------------------------------------------------------------------
    def configure(self, limits: RateLimits, time_scale: float) -> None:
        """Take new limits or a new time scale (the latest client's word wins)."""
        with self._cond:
            if limits != self.limits:
                self.limits = limits
                for w in limits.windows:
                    self._entries.setdefault(w.name, deque())
            self.time_scale = check_time_scale(time_scale)

    def _length(self, window: Window) -> float:
        return window.seconds / self.time_scale

    # -- acquire / release ----------------------------------------------------------------
    def acquire(
        self,
        path: str,
        *,
        now: Callable[[], float],
        sleep: Callable[[float], Any],
        max_wait: float,
    ) -> Ticket:
        """Wait for a concurrency slot and for room in every window, then count the call.

        Args:
            path: The request path (some windows count only some paths).
            now: The caller's clock, in seconds.
            sleep: How to wait (the caller's, so tests can inject it).
            max_wait: The longest single wait to sleep through.

        Returns:
            The ticket to hand to :meth:`release` once the answer is in.

        Raises:
            RateLimited: A wait longer than ``max_wait`` was needed (nothing was sent),
                or no concurrency slot came free in time.
        """
        self._take_slot()
        base, credit, waited = now(), 0.0, 0.0
        try:
            while True:
                with self._cond:
                    t = max(now(), base + credit)
                    wait, reason = self._wait_needed(t, path)
                    if wait <= 0:
                        return self._record(t, path, waited)
                    if wait > max_wait:
                        self._counters.refused += 1
                        raise RateLimited(
                            f"{self.name}: the {reason} limit needs a wait of {wait:.1f}s",
                            retry_after=wait,
                            provider_code=None,
                        )
                    self._counters.waited_seconds += wait
                sleep(wait)
                credit += wait
                waited += wait
        except BaseException:
            self._free_slot()
            raise

    def release(
        self,
        ticket: Ticket,
        *,
        now: float,
        status: int | None = None,
        remaining: Mapping[str, int] | None = None,
        retry_after: float | None = None,
        counted: bool = True,
    ) -> None:
        """The answer to ``ticket`` is in (or it failed).

        Args:
            ticket: From :meth:`acquire`.
            now: The caller's clock, in seconds.
            status: The HTTP status, None when there was no answer.
            remaining: The remaining-quota headers of the answer (header → value).
            retry_after: A 429's ``Retry-After`` in seconds (None: none sent).
            counted: False when the provider cannot have counted the call (a connect
                error); a 429 is never counted either.
        """
        with self._cond:
            end = ticket.end = max(now, ticket.sent_at)
            self._last_seen = (end, time.monotonic())
            self._in_flight -= 1
            if status == 429 or not counted:
                self._give_back(ticket)
            if status == 429:
                self._counters.throttled += 1
                wait = (
                    retry_after
                    if retry_after is not None
                    else DEFAULT_BACKOFF_SECONDS / self.time_scale
                )
                self._blocked_until = max(self._blocked_until, end + wait)
            if remaining:
                # A 429's own counters are not read as a budget: its Retry-After (or
                # the back-off) already says when to go on.
                self._read_remaining(ticket, end, remaining, budget=status != 429)
            self._cond.notify_all()

    def note_retry(self) -> None:
        """A 429 is being retried inline (for the stats)."""
        with self._cond:
            self._counters.retried += 1

    # -- internals (hold self._cond) --------------------------------------------------------
    def _take_slot(self) -> None:
        limit = self.limits.concurrency
        started = time.monotonic()
        with self._cond:
            while limit is not None and self._in_flight >= limit:
                left = SLOT_WAIT_SECONDS - (time.monotonic() - started)
                if left <= 0:
                    self._counters.refused += 1
                    raise RateLimited(
                        f"{self.name}: all {limit} request slots stayed busy",
                        retry_after=DEFAULT_BACKOFF_SECONDS,
                    )
                self._cond.wait(timeout=min(left, 1.0))
                limit = self.limits.concurrency
            self._in_flight += 1
            self._counters.max_in_flight = max(self._counters.max_in_flight, self._in_flight)
            self._counters.slot_wait_seconds += time.monotonic() - started

    def _free_slot(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def _record(self, t: float, path: str, waited: float) -> Ticket:
        self._last_seen = (t, time.monotonic())
        self._seq += 1
        windows = tuple(w.name for w in self.limits.windows if w.limit and w.applies(path))
        ticket = Ticket(self._seq, t, path, windows, waited=waited)
        for name in windows:
            self._entries[name].append(ticket)
        self._counters.requests += 1
        return ticket

    def _give_back(self, ticket: Ticket) -> None:
        for name in ticket.windows:
            entries = self._entries.get(name)
            if entries is not None:
                with contextlib.suppress(ValueError):
                    entries.remove(ticket)

    def _purge(self, window: Window, t: float) -> deque[Ticket]:
        """Drop calls answered more than two window lengths ago (kept one extra length
        so that :meth:`_read_remaining` can still tell what the provider counted)."""
        entries = self._entries.setdefault(window.name, deque())
        keep = 2 * self._length(window)
        while entries and entries[0].end is not None and entries[0].end + keep <= t:
            entries.popleft()
        return entries

    def _wait_needed(self, t: float, path: str) -> tuple[float, str]:
        wait, reason = self._blocked_until - t, "429 Retry-After"
        for window in self.limits.windows:
            if not window.applies(path):
                continue
            length = self._length(window)
            if window.limit:
                entries = self._purge(window, t)
                active = [e for e in entries if e.end is None or e.end + length > t]
                if len(active) >= window.limit:
                    expiries = sorted(e.end + length for e in active if e.end is not None)
                    need = len(active) - window.limit + 1
                    w = expiries[need - 1] - t if len(expiries) >= need else _POLL_SECONDS
                    if w > wait:
                        wait, reason = w, window.name
            budget = self._budgets.get(window.name)
            if budget is not None:
                if t >= budget.expires:
                    del self._budgets[window.name]
                elif self._sent_since(budget.seq, window) >= budget.remaining:
                    w = budget.expires - t
                    if w > wait:
                        wait, reason = w, f"{window.name} (remaining 0)"
        return wait, reason

    def _sent_since(self, seq: int, window: Window) -> int:
        if window.limit:
            return sum(1 for e in self._entries[window.name] if e.seq > seq)
        return self._seq - seq

    def _read_remaining(
        self, ticket: Ticket, end: float, remaining: Mapping[str, int], *, budget: bool
    ) -> None:
        for window in self.limits.windows:
            if window.header is None or window.header not in remaining:
                continue
            value = remaining[window.header]
            self._counters.remaining[window.header] = value
            if not budget:
                continue
            length = self._length(window)
            current = self._budgets.get(window.name)
            if current is not None and current.seq > ticket.seq:
                continue  # a later call already reported
            expires = end + min(length, _BUDGET_HORIZON / self.time_scale)
            if window.limit:
                # Every call the provider can have counted in its window is one of ours
                # answered after (sent_at - length), or still in flight.
                since = ticket.sent_at - length
                ours = sum(
                    1
                    for e in self._entries[window.name]
                    if e.end is None or e.end > since or e is ticket
                )
                if value >= window.limit - ours:
                    # Our own count explains it: the sliding window is enough.
                    self._budgets.pop(window.name, None)
                    continue
            self._budgets[window.name] = _Budget(value, ticket.seq, expires)

    # -- stats ------------------------------------------------------------------------------
    def stats(self, now: float | None = None) -> dict[str, Any]:
        """Counters and current window usage.

        Args:
            now: The time in the callers' clock's seconds; default the last reading
                plus the real time since.
        """
        with self._cond:
            if now is None:
                seen, mono = self._last_seen
                t = seen + (time.monotonic() - mono)
            else:
                t = now
            c = self._counters
            windows: dict[str, dict[str, Any]] = {}
            for window in self.limits.windows:
                length = self._length(window)
                used: int | None = None
                if window.limit:
                    entries = self._purge(window, t)
                    used = sum(1 for e in entries if e.end is None or e.end + length > t)
                budget = self._budgets.get(window.name)
                windows[window.name] = {
                    "used": used,
                    "limit": window.limit,
                    "seconds": length,
                    "provider_remaining": c.remaining.get(window.header or ""),
                    "budget": (
                        max(budget.remaining - self._sent_since(budget.seq, window), 0)
                        if budget is not None and t < budget.expires
                        else None
                    ),
                }
            return {
                "name": self.name,
                "requests": c.requests,
                "throttled": c.throttled,
                "retried": c.retried,
                "refused": c.refused,
                "waited_seconds": round(c.waited_seconds, 6),
                "slot_wait_seconds": round(c.slot_wait_seconds, 6),
                "in_flight": self._in_flight,
                "max_in_flight": c.max_in_flight,
                "concurrency": self.limits.concurrency,
                "blocked_for": max(self._blocked_until - t, 0.0),
                "time_scale": self.time_scale,
                "windows": windows,
            }


_registry: dict[tuple[str, ...], TenantLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(
    key: tuple[str, ...], name: str, limits: RateLimits, time_scale: float
) -> TenantLimiter:
    """The process-wide limiter of ``key`` (created on first use; later callers'
    limits and time scale replace the earlier ones)."""
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = TenantLimiter(name, limits, time_scale)
            return limiter
    limiter.configure(limits, time_scale)
    return limiter


def stats(provider: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
    """:meth:`TenantLimiter.stats` of every limiter in this process (optionally only
    those of ``provider`` and/or ``tenant``), each with ``provider``, ``tenant`` and
    ``base_url``."""
    with _registry_lock:
        items = list(_registry.items())
    out = []
    for key, limiter in items:
        _store, prov, base_url, ten = key
        if (provider is None or prov == provider) and (tenant is None or ten == tenant):
            out.append(
                {
                    "store": _store,
                    "provider": prov,
                    "tenant": ten,
                    "base_url": base_url,
                    **limiter.stats(),
                }
            )
    return out
