"""Fault injection for chaos tests of write endpoints, shared by every ledger.

A fault is either drawn at random (a probability per write, from a ``random.Random``
seeded with the sandbox seed, so a run is reproducible) or forced for the next ``N``
writes with a ``<fault>_next=N`` counter. Faults are configured from a CLI-style string
(``"drop_after_commit=0.2,latency_ms=50"``), a mapping, or at run time through
``GET/POST /_sandbox/faults`` (``{"paid_elsewhere_next": 1}``, ``{"spec": "..."}``,
``{"reset": true}``).

Each write draws once (:meth:`Faults.draw`); at most one fault fires, counters before
probabilities, and among them the order of :data:`FAULT_NAMES` (the order below).
Faults only hit writes (reads are never faulted) and they hit every write, an
idempotent replay included: the network does not know which requests are replays.
What each one means, and what the Xero emulator does (``PUT``/``POST /Payments``,
``POST /Payments/{id}``):

``token_revoked``
    The user disconnected the app just now. Xero: the tenant's OAuth grant is revoked
    (its refresh tokens give ``invalid_grant``, its access tokens 401 from now on) and
    this call is answered 401 ``{"Title":"Unauthorized","Detail":
    "AuthenticationUnsuccessful",…}``. Nothing is processed, no quota is used.
``rate_limit``
    The provider refuses the call for rate. Xero: 429 with an empty body,
    ``X-Rate-Limit-Problem: minute``, ``Retry-After`` = seconds to the end of the
    tenant's minute window, ``X-MinLimit-Remaining: 0`` and the other remaining
    counters. Not processed, no quota used, the ``Idempotency-Key`` stays unused.
``error_before_commit``
    The provider fails before doing anything. Xero: 503 ``text/plain``
    ``The Xero API is temporarily unavailable``; nothing committed, the key unused.
``drop_before_commit``
    The connection closes before the write reaches the ledger; no response, nothing
    committed, the key unused.
``paid_elsewhere``
    Before processing, someone settles the target document(s) outside the connector.
    Xero: each AUTHORISED invoice/bill the write points at (the body's
    ``Invoice.InvoiceID``/``InvoiceNumber``; for ``POST /Payments/{id}`` the payment's
    invoice) is paid in full into account 090 by a payment with reference
    ``Paid in Xero`` and no ``Idempotency-Key``, as a person in the Xero UI would; then
    the write is processed against that state (typically "Payments can only be made
    against Authorised documents").
``concurrent_edit``
    Before processing, a person edits the target document. Xero: the invoice's
    ``Reference`` becomes ``Edited in Xero #n``, which moves its ``UpdatedDateUTC``
    (amounts and status unchanged); then the write is processed normally.
``ignore_idempotency``
    The provider fails to deduplicate: the write is processed as new even if its
    ``Idempotency-Key`` was seen (no replay, no conflict), and the key's cache entry
    is left as it was. This is how a duplicate payment happens.
``drop_after_commit``
    The write is processed (committed, and its answer cached under its key), then the
    connection closes without a response.
``error_500_after_commit``
    The write is processed, then answered 500 (Xero: ``text/plain``
    ``An unhandled error with the Xero API``). The 500 is what the key's cache keeps,
    as Xero caches internal errors, so a retry with the same key gets the 500 again.
``latency_ms``
    Not a fault but a delay: every write that gets past the refusals above (processed
    or replayed) waits this many milliseconds after the commit and before answering;
    it combines with the other faults.

The probabilistic faults are the names in :data:`FAULT_NAMES`; ``latency_ms`` is a
number of milliseconds.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

__all__ = ["FAULT_NAMES", "FaultDecision", "Faults"]

#: The probabilistic faults, in precedence order (the first that fires wins).
FAULT_NAMES: tuple[str, ...] = (
    "token_revoked",
    "rate_limit",
    "error_before_commit",
    "drop_before_commit",
    "paid_elsewhere",
    "concurrent_edit",
    "ignore_idempotency",
    "drop_after_commit",
    "error_500_after_commit",
)


@dataclass(frozen=True)
class FaultDecision:
    """What to do with one write request."""

    token_revoked: bool = False
    rate_limit: bool = False
    error_before_commit: bool = False
    drop_before_commit: bool = False
    paid_elsewhere: bool = False
    concurrent_edit: bool = False
    ignore_idempotency: bool = False
    drop_after_commit: bool = False
    error_500_after_commit: bool = False
    latency_ms: float = 0.0

    @property
    def chosen(self) -> str | None:
        """The fault that fired for this write (at most one does), or None."""
        for name in FAULT_NAMES:
            if getattr(self, name):
                return name
        return None

    @property
    def any(self) -> bool:
        """Whether any fault (other than latency) applies."""
        return self.chosen is not None


class Faults:
    """Thread-safe fault configuration and per-write fault drawing.

    Args:
        spec: Initial configuration: a ``"name=value,..."`` string, a mapping, or None.
        seed: Seed of the random generator used for probabilistic faults.

    Raises:
        ValueError: If ``spec`` names an unknown fault or has an invalid value.
    """

    def __init__(self, spec: str | Mapping[str, object] | None = None, *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(f"faults:{seed}")
        self._prob: dict[str, float] = dict.fromkeys(FAULT_NAMES, 0.0)
        self._next: dict[str, int] = dict.fromkeys(FAULT_NAMES, 0)
        self._latency_ms = 0.0
        if isinstance(spec, str):
            self.parse(spec)
        elif spec is not None:
            self.update(spec)

    def parse(self, spec: str) -> None:
        """Apply a CLI-style string such as ``"drop_after_commit=0.2,latency_ms=50"``.

        Only the named settings change; the others keep their values.

        Raises:
            ValueError: On a malformed item, unknown name or invalid value.
        """
        values: dict[str, object] = {}
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"fault setting {item!r} is not of the form name=value")
            values[name.strip()] = value.strip()
        self.update(values)

    def update(self, values: Mapping[str, object]) -> None:
        """Change some settings, e.g. ``{"drop_after_commit_next": 1}``.

        Validation happens before anything changes, so a bad mapping leaves the
        configuration untouched.

        Raises:
            ValueError: On an unknown name or an invalid value.
        """
        prob: dict[str, float] = {}
        counters: dict[str, int] = {}
        latency: float | None = None
        for name, value in values.items():
            if name in FAULT_NAMES:
                p = _to_float(name, value)
                if not 0.0 <= p <= 1.0:
                    raise ValueError(f"{name} is a probability and must be within 0..1")
                prob[name] = p
            elif name.endswith("_next") and name[: -len("_next")] in FAULT_NAMES:
                n = _to_float(name, value)
                if n < 0 or n != int(n):
                    raise ValueError(f"{name} must be a non-negative integer")
                counters[name[: -len("_next")]] = int(n)
            elif name == "latency_ms":
                latency = _to_float(name, value)
                if latency < 0:
                    raise ValueError("latency_ms must not be negative")
            else:
                known = ", ".join([*FAULT_NAMES, *(f"{n}_next" for n in FAULT_NAMES), "latency_ms"])
                raise ValueError(f"unknown fault {name!r}; known: {known}")
        with self._lock:
            self._prob.update(prob)
            self._next.update(counters)
            if latency is not None:
                self._latency_ms = latency

    def reset(self) -> None:
        """Turn every fault off."""
        with self._lock:
            self._prob = dict.fromkeys(FAULT_NAMES, 0.0)
            self._next = dict.fromkeys(FAULT_NAMES, 0)
            self._latency_ms = 0.0

    def as_dict(self) -> dict[str, float | int]:
        """The current settings, with the same keys that :meth:`update` accepts."""
        with self._lock:
            out: dict[str, float | int] = dict(self._prob)
            out.update({f"{name}_next": n for name, n in self._next.items()})
            out["latency_ms"] = self._latency_ms
            return out

    def draw(self) -> FaultDecision:
        """Decide the faults for one write, consuming a one-shot counter if one fires.

        Counters take priority over probabilities; among faults, the order of
        :data:`FAULT_NAMES` decides (a dropped-before-commit write cannot also be
        answered with a 500).
        """
        with self._lock:
            chosen: str | None = None
            for name in FAULT_NAMES:
                if self._next[name] > 0:
                    self._next[name] -= 1
                    chosen = name
                    break
            if chosen is None:
                for name in FAULT_NAMES:
                    p = self._prob[name]
                    # Disabled faults consume no randomness, so a run with only one
                    # fault enabled is reproducible regardless of the others.
                    if p > 0.0 and self._rng.random() < p:
                        chosen = name
                        break
            flags = {name: name == chosen for name in FAULT_NAMES}
            return FaultDecision(**flags, latency_ms=self._latency_ms)


def _to_float(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, not a boolean")
    if isinstance(value, int | float | str | Decimal):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"{name} must be a number, got {value!r}")
