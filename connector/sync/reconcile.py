"""Reconcile: settle what is open, check what is final, and clear the books to zero.

``reconcile()`` is invariant 10 of ``shared/RELIABILITY.md`` §9 as an operator
command (``connector reconcile``). Per connection:

1. **Settle.** Every intent not in a final state (``pending``, ``claimed``,
   ``sending``, ``unknown``) that no live worker holds is made due now and driven
   by the :class:`~connector.sync.push.PushEngine` until a round makes no progress.
   A ``sending``/``unknown`` intent is settled by the engine's lookup by reference,
   never by a blind send. What is still open is reported with its state and reason
   (a rate limit, a parked connection, a lease held by a running worker…).
2. **Sample.** A seeded random sample of final intents is looked up in the ledger by
   reference: ``applied`` must find exactly one live payment, the one recorded in
   ``remote_payment_id``; ``already_settled`` and ``rejected`` must find none.
3. **Scan.** The unified ``payment`` table is refreshed with a pull of the
   ``payment`` entity, then every payment whose ``reference`` carries our marker
   (``{reference_prefix}-<16 hex>``, the first 16 hex digits of the intent id) is
   mapped back to its intent: a live payment that maps to no intent (an orphan), a
   marker with two or more live payments (a double), a live payment of an intent we
   do not consider applied, and an applied intent whose payment is gone are findings.
4. **Clear.** ``applied by us`` (count and sum of ``applied`` intents, per currency)
   minus ``found in ledger`` (live payments with our marker that map to an applied
   intent) must be zero, in count and in every currency.

The report is ``ok`` only when every clearing line is zero and nothing was found;
``complete`` when no intent is still open and every lookup could be made.
"""

from __future__ import annotations

import functools
import os
import random
import re
import socket
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from connector.adapters.base import Adapter, PaymentRequest, RemotePayment
from connector.clock import Clock, SystemClock
from connector.config import Settings
from connector.errors import ConnectorError, RateLimited
from connector.logging import get_logger
from connector.money import quantize
from connector.schema import Payment
from connector.state import TERMINAL, IntentState, PaymentIntent
from connector.store import Store
from connector.sync.pull import PullEngine
from connector.sync.push import PushEngine, payment_request, unapplied_amount

__all__ = [
    "EXIT_FINDINGS",
    "EXIT_OK",
    "EXIT_WAITING",
    "ClearingLine",
    "ConnectionReport",
    "Finding",
    "ReconcileReport",
    "Unchecked",
    "WaitingIntent",
    "reconcile",
]

log = get_logger("connector.reconcile")

EXIT_OK = 0
EXIT_FINDINGS = 1  # a finding, or a clearing line that is not zero
EXIT_WAITING = 4  # intents still open, or lookups that could not be made

OPEN_STATES = (
    IntentState.PENDING.value,
    IntentState.CLAIMED.value,
    IntentState.SENDING.value,
    IntentState.UNKNOWN.value,
)
#: Final states the sample checks (a ``conflict`` is already waiting on a person).
SAMPLED_STATES = (
    IntentState.APPLIED.value,
    IntentState.ALREADY_SETTLED.value,
    IntentState.REJECTED.value,
)
#: Unified payment statuses that settle nothing.
DEAD_STATUSES = frozenset({"deleted", "void", "voided"})
#: Rounds of ``run_once`` in the settle step (each makes progress or the step ends).
MAX_SETTLE_ROUNDS = 20
#: Intents claimed per round and looked up per batched call.
CHUNK = 200
#: Times a rate-limited lookup is waited out before it is reported unchecked.
LOOKUP_RATE_RETRIES = 3
#: Longest single wait on a rate-limited lookup, seconds.
LOOKUP_MAX_WAIT = 60.0


# -- the report -----------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """A discrepancy between our intents and the ledger: a bug, or a person's edit.

    ``kind`` is one of ``orphan_payment`` (a live payment with our marker and no
    intent), ``duplicate_payments`` (a marker on two or more live payments),
    ``marker_on_several_intents``, ``payment_on_unapplied_intent`` (a live payment of an
    intent that is ``already_settled``/``rejected``/``conflict``),
    ``applied_payment_missing`` (the payment of an ``applied`` intent is deleted, voided
    or absent), ``applied_payment_mismatch`` (the live payment is not the one recorded)
    and ``amount_mismatch``.
    """

    kind: str
    connection_id: str
    message: str
    intent_id: str | None = None
    intent_state: str | None = None
    marker: str | None = None
    payment_ids: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str, tuple[str, ...]]:
        """What makes two findings the same (the sample and the scan may both see one)."""
        return (
            self.kind,
            self.connection_id,
            self.intent_id or self.marker or "",
            self.payment_ids,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "kind": self.kind,
            "connection": self.connection_id,
            "intent": self.intent_id,
            "intent_state": self.intent_state,
            "marker": self.marker,
            "payments": list(self.payment_ids),
            "message": self.message,
        }


@dataclass(frozen=True)
class WaitingIntent:
    """An intent still open after the settle step, and why."""

    intent_id: str
    connection_id: str
    state: str
    reason_code: str | None
    reason_message: str | None
    next_attempt_at: datetime | None
    held_by: str | None = None  # a live worker's lease

    @property
    def reason(self) -> str:
        """One line: why it is not final yet."""
        if self.held_by:
            return f"held by running worker {self.held_by}"
        parts = [p for p in (self.reason_code, self.reason_message) if p]
        text = ": ".join(parts) if parts else "not due yet"
        if self.next_attempt_at is not None:
            text += f" (next attempt {self.next_attempt_at.isoformat(timespec='seconds')})"
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "intent": self.intent_id,
            "connection": self.connection_id,
            "state": self.state,
            "reason_code": self.reason_code,
            "reason_message": self.reason_message,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
            "held_by": self.held_by,
        }


@dataclass(frozen=True)
class Unchecked:
    """A sampled intent whose ledger lookup could not be made."""

    intent_id: str
    connection_id: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"intent": self.intent_id, "connection": self.connection_id, "reason": self.reason}


def _fmt_amounts(amounts: dict[str, Decimal], *, signed: bool = False) -> str:
    parts = []
    for currency in sorted(amounts):
        value = quantize(amounts[currency], currency)
        parts.append(f"{value:{'+' if signed else ''},} {currency}")
    return ", ".join(parts)


@dataclass
class ClearingLine:
    """Applied by us minus found in the ledger, for one connection."""

    connection_id: str
    applied_count: int = 0
    applied_amounts: dict[str, Decimal] = field(default_factory=dict)
    found_count: int = 0
    found_amounts: dict[str, Decimal] = field(default_factory=dict)

    @property
    def difference_count(self) -> int:
        """Applied minus found, in payments."""
        return self.applied_count - self.found_count

    @property
    def difference_amounts(self) -> dict[str, Decimal]:
        """Applied minus found, per currency (zero differences left out)."""
        out: dict[str, Decimal] = {}
        for currency in set(self.applied_amounts) | set(self.found_amounts):
            diff = self.applied_amounts.get(currency, Decimal(0)) - self.found_amounts.get(
                currency, Decimal(0)
            )
            if diff != 0:
                out[currency] = diff
        return out

    @property
    def is_zero(self) -> bool:
        """Whether the books clear: same count, same sum in every currency."""
        return self.difference_count == 0 and not self.difference_amounts

    def render(self) -> str:
        """``clearing xero-1: applied by us 3 (30.00 USD) \u2212 found in ledger 3 (30.00 USD) = 0``."""

        def side(count: int, amounts: dict[str, Decimal]) -> str:
            return f"{count} ({_fmt_amounts(amounts)})" if amounts else str(count)

        if self.is_zero:
            result = "0"
        else:
            result = f"{self.difference_count:+d}"
            if self.difference_amounts:
                result += f" ({_fmt_amounts(self.difference_amounts, signed=True)})"
        return (
            f"clearing {self.connection_id}: applied by us "
            f"{side(self.applied_count, self.applied_amounts)} \u2212 found in ledger "
            f"{side(self.found_count, self.found_amounts)} = {result}"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (amounts as strings)."""

        def amounts(values: dict[str, Decimal]) -> dict[str, str]:
            return {c: str(quantize(v, c)) for c, v in sorted(values.items())}

        return {
            "connection": self.connection_id,
            "applied": {"count": self.applied_count, "amounts": amounts(self.applied_amounts)},
            "found": {"count": self.found_count, "amounts": amounts(self.found_amounts)},
            "difference": {
                "count": self.difference_count,
                "amounts": amounts(self.difference_amounts),
            },
            "zero": self.is_zero,
            "line": self.render(),
        }


@dataclass
class ConnectionReport:
    """What reconciling one connection did and saw."""

    connection_id: str
    provider: str
    settled: Counter[str] = field(default_factory=Counter)  # open intents → final state
    sampled: int = 0
    scanned: int = 0  # live ledger payments carrying our marker
    pull_error: str | None = None
    clearing: ClearingLine = field(default_factory=lambda: ClearingLine(""))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "connection": self.connection_id,
            "provider": self.provider,
            "settled": dict(sorted(self.settled.items())),
            "sampled": self.sampled,
            "scanned": self.scanned,
            "pull_error": self.pull_error,
            "clearing": self.clearing.as_dict(),
        }


@dataclass
class ReconcileReport:
    """The whole run: per connection, findings, intents still open, lookups not made."""

    connections: list[ConnectionReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    waiting: list[WaitingIntent] = field(default_factory=list)
    unchecked: list[Unchecked] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every clearing line is zero and nothing was found."""
        return not self.findings and all(c.clearing.is_zero for c in self.connections)

    @property
    def complete(self) -> bool:
        """Nothing is still open, every sampled lookup was made, every pull ran."""
        return (
            not self.waiting
            and not self.unchecked
            and all(c.pull_error is None for c in self.connections)
        )

    @property
    def exit_code(self) -> int:
        """0 ok and complete; 1 findings or a clearing line off zero; 4 still waiting."""
        if not self.ok:
            return EXIT_FINDINGS
        if not self.complete:
            return EXIT_WAITING
        return EXIT_OK

    def add(self, finding: Finding) -> None:
        """Record a finding once."""
        if all(f.key != finding.key for f in self.findings):
            self.findings.append(finding)
            log.warning(
                "reconcile_finding",
                kind=finding.kind,
                connection=finding.connection_id,
                intent=finding.intent_id,
                payments=",".join(finding.payment_ids),
            )

    def lines(self) -> list[str]:
        """Plain text: findings, open intents, then one clearing line per connection."""
        out: list[str] = []
        for c in self.connections:
            settled = ", ".join(f"{state} {n}" for state, n in sorted(c.settled.items()))
            out.append(
                f"{c.connection_id} ({c.provider}): settled {settled or 'nothing'}; "
                f"sampled {c.sampled} final intent(s); {c.scanned} ledger payment(s) "
                f"with our reference"
            )
            if c.pull_error:
                out.append(f"  pull failed, scanned the last mirror: {c.pull_error}")
        for f in self.findings:
            out.append(f"finding {f.kind} [{f.connection_id}]: {f.message}")
        for w in self.waiting:
            out.append(f"waiting {w.intent_id} [{w.connection_id}] {w.state}: {w.reason}")
        for u in self.unchecked:
            out.append(f"unchecked {u.intent_id} [{u.connection_id}]: {u.reason}")
        out.extend(c.clearing.render() for c in self.connections)
        return out

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable report (``connector reconcile --json``)."""
        return {
            "ok": self.ok,
            "complete": self.complete,
            "exit_code": self.exit_code,
            "connections": [c.as_dict() for c in self.connections],
            "findings": [f.as_dict() for f in self.findings],
            "waiting": [w.as_dict() for w in self.waiting],
            "unchecked": [u.as_dict() for u in self.unchecked],
        }


# -- helpers --------------------------------------------------------------------------
def _chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _hex16(intent_id: str) -> str:
    return uuid.UUID(intent_id).hex[:16]


def _marker_pattern(prefixes: Iterable[str]) -> re.Pattern[str]:
    """Our marker inside a reference: ``<prefix>-<16 lowercase hex>``, standing alone."""
    alternatives = "|".join(re.escape(p) for p in sorted(set(prefixes), key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9-])({alternatives})-([0-9a-f]{{16}})(?![0-9A-Za-z])")


def _prefix_of(reference: str, hex16: str) -> str | None:
    """The prefix an intent's reference carries its marker under."""
    found = re.search(rf"([A-Za-z0-9-]{{1,10}})-{hex16}(?![0-9A-Za-z])", reference)
    if found is None:
        return None
    # The prefix is at most 10 characters; a longer run of [A-Za-z0-9-] is not ours.
    start = found.start(1)
    if start > 0 and re.match(r"[A-Za-z0-9-]", reference[start - 1]):
        return None
    return found.group(1)


def _sent_amount(intent: PaymentIntent) -> Decimal:
    """What the payment applies to the document(s), as decided at preflight."""
    return intent.send_amount if intent.send_amount is not None else intent.amount


def _expected_amount(intent: PaymentIntent) -> Decimal:
    """The total of the ledger payment of an applied intent (the unified ``total_amount``)."""
    return _sent_amount(intent) + unapplied_amount(intent)


def _payment_request(intent: PaymentIntent) -> PaymentRequest:
    """The lookup key of an intent: exactly what the engine sends and looks up."""
    return payment_request(intent)


def _live(payments: Iterable[RemotePayment]) -> list[RemotePayment]:
    return [p for p in payments if p.status not in DEAD_STATUSES]


def _default_worker() -> str:
    return f"reconcile:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


# -- the run --------------------------------------------------------------------------
class _Reconciler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        engine: PushEngine,
        pull_engine: PullEngine | None,
        clock: Clock,
        rng: random.Random,
        sample: int,
        sleep: Callable[[float], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.pull_engine = pull_engine
        self.clock = clock
        self.rng = rng
        self.sample = sample
        self.sleep = sleep
        self.report = ReconcileReport()

    # 1. settle ---------------------------------------------------------------------
    def settle(self, connection_ids: list[str]) -> None:
        now = self.clock.now()
        with self.store.session() as s:
            # Due now, unless a live worker holds the intent (its lease has not expired).
            s.execute(
                sa.update(PaymentIntent)
                .where(
                    col(PaymentIntent.connection_id).in_(connection_ids),
                    col(PaymentIntent.state).in_(OPEN_STATES),
                    sa.or_(
                        col(PaymentIntent.lease_expires_at).is_(None),
                        col(PaymentIntent.lease_expires_at) <= now,
                    ),
                )
                .values(next_attempt_at=now)
            )
            before: dict[str, str] = {
                row[0]: row[1]
                for row in s.execute(
                    select(PaymentIntent.id, PaymentIntent.connection_id)
                    .where(
                        col(PaymentIntent.connection_id).in_(connection_ids),
                        col(PaymentIntent.state).in_(OPEN_STATES),
                    )
                    .order_by(col(PaymentIntent.created_at))
                ).all()
            }
        ids = list(before)
        for chunk in _chunks(ids):
            for _ in range(MAX_SETTLE_ROUNDS):
                counts = self.engine.run_once(
                    connection_ids=connection_ids, intent_ids=list(chunk), limit=len(chunk)
                )
                if counts.total() == 0:
                    break
        now = self.clock.now()
        after = {i.id: i for chunk in _chunks(ids) for i in self.engine.intents(list(chunk))}
        by_conn = {c.connection_id: c for c in self.report.connections}
        for intent_id, conn_id in before.items():
            current = after.get(intent_id)
            if current is None:  # pragma: no cover - intents are never deleted
                continue
            if current.state in TERMINAL:
                by_conn[conn_id].settled[current.state] += 1
                continue
            held = (
                current.lease_owner
                if current.lease_owner
                and current.lease_expires_at is not None
                and current.lease_expires_at > now
                and current.lease_owner != self.engine.worker_id
                else None
            )
            self.report.waiting.append(
                WaitingIntent(
                    intent_id=current.id,
                    connection_id=conn_id,
                    state=current.state,
                    reason_code=current.reason_code,
                    reason_message=current.reason_message,
                    next_attempt_at=current.next_attempt_at,
                    held_by=held,
                )
            )
        for w in self.report.waiting:
            log.info("reconcile_waiting", intent=w.intent_id, state=w.state, reason=w.reason_code)

    # 3a. refresh the mirror ------------------------------------------------------------
    def pull(self, conn: ConnectionReport) -> None:
        if self.pull_engine is None:
            return
        try:
            self.pull_engine.run_once(connection_ids=[conn.connection_id], entities=["payment"])
        except ConnectorError as exc:
            conn.pull_error = f"{exc.code}: {exc.message}"
            log.warning("reconcile_pull_failed", connection=conn.connection_id, error=exc.code)

    # 2. sample ------------------------------------------------------------------------
    def check_sample(self, conn: ConnectionReport) -> None:
        if self.sample <= 0:
            return
        cid = conn.connection_id
        with self.store.session() as s:
            ids = sorted(
                s.exec(
                    select(PaymentIntent.id).where(
                        PaymentIntent.connection_id == cid,
                        col(PaymentIntent.state).in_(SAMPLED_STATES),
                    )
                ).all()
            )
        chosen = self.rng.sample(ids, min(self.sample, len(ids)))
        intents = [i for chunk in _chunks(chosen) for i in self.engine.intents(list(chunk))]
        intents = [i for i in intents if i.document_remote_id is not None]
        conn.sampled = len(intents)
        adapter = self.engine.adapter(cid)
        for chunk_start in range(0, len(intents), CHUNK):
            batch = intents[chunk_start : chunk_start + CHUNK]
            found = self._lookup(adapter, cid, batch)
            for intent in batch:
                if intent.id in found:
                    self._judge_sample(cid, intent, found[intent.id])

    def _lookup(
        self, adapter: Adapter, cid: str, intents: list[PaymentIntent]
    ) -> dict[str, list[RemotePayment]]:
        """Payments carrying each intent's reference; intents that cannot be looked up
        are reported unchecked and left out."""
        batched = getattr(adapter, "find_payments", None)
        if callable(batched) and len(intents) > 1:
            requests = [_payment_request(i) for i in intents]
            try:
                found: dict[str, list[RemotePayment]] = self._waiting_out(
                    functools.partial(batched, requests)
                )
                # Every request has an entry; an absent one found nothing.
                return {r.intent_id: list(found.get(r.intent_id, [])) for r in requests}
            except ConnectorError as exc:
                log.info("reconcile_batched_lookup_failed", connection=cid, error=exc.code)
        out: dict[str, list[RemotePayment]] = {}
        for intent in intents:
            request = _payment_request(intent)
            try:
                out[intent.id] = self._waiting_out(functools.partial(adapter.find_payment, request))
            except ConnectorError as exc:
                self.report.unchecked.append(
                    Unchecked(intent.id, cid, f"lookup failed ({exc.code}: {exc.message})")
                )
        return out

    def _waiting_out(self, call: Callable[[], Any]) -> Any:
        for attempt in range(LOOKUP_RATE_RETRIES + 1):
            try:
                return call()
            except RateLimited as exc:
                if attempt == LOOKUP_RATE_RETRIES:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else 5.0
                self.sleep(min(max(wait, 0.0), LOOKUP_MAX_WAIT))
        raise AssertionError("unreachable")  # pragma: no cover

    def _judge_sample(self, cid: str, intent: PaymentIntent, found: list[RemotePayment]) -> None:
        live = _live(found)
        ids = tuple(sorted(p.remote_id for p in live))
        what = f"intent {intent.id} ({intent.document_type} {intent.document_number or intent.document_ref})"
        if intent.state == IntentState.APPLIED.value:
            if len(live) > 1:
                self.report.add(
                    Finding(
                        "duplicate_payments",
                        cid,
                        f"{what} is applied once but the ledger holds {len(live)} live payments "
                        f"with its reference: {', '.join(ids)}",
                        intent.id,
                        intent.state,
                        payment_ids=ids,
                    )
                )
            elif not live:
                gone = ", ".join(p.remote_id for p in found) or intent.remote_payment_id or "?"
                self.report.add(
                    Finding(
                        "applied_payment_missing",
                        cid,
                        f"{what} is applied as payment {intent.remote_payment_id}, but the ledger "
                        f"holds no live payment with its reference"
                        + (f" (deleted or voided: {gone})" if found else ""),
                        intent.id,
                        intent.state,
                        payment_ids=(intent.remote_payment_id or "",),
                    )
                )
            elif live[0].remote_id != intent.remote_payment_id:
                self.report.add(
                    Finding(
                        "applied_payment_mismatch",
                        cid,
                        f"{what} is applied as payment {intent.remote_payment_id}, but the live "
                        f"payment with its reference is {live[0].remote_id}",
                        intent.id,
                        intent.state,
                        payment_ids=ids,
                    )
                )
        elif live:
            self.report.add(
                Finding(
                    "payment_on_unapplied_intent",
                    cid,
                    f"{what} is {intent.state} ({intent.reason_code}), but the ledger holds "
                    f"live payment(s) with its reference: {', '.join(ids)}",
                    intent.id,
                    intent.state,
                    payment_ids=ids,
                )
            )

    # 3b/4. scan and clear --------------------------------------------------------------
    def scan(self, conn: ConnectionReport) -> None:
        cid = conn.connection_id
        settings = self.settings.connection(cid)
        with self.store.session() as s:
            intents = list(
                s.exec(select(PaymentIntent).where(PaymentIntent.connection_id == cid)).all()
            )
        by_hex: dict[str, list[PaymentIntent]] = defaultdict(list)
        prefixes = {settings.reference_prefix}
        for intent in intents:
            hex16 = _hex16(intent.id)
            by_hex[hex16].append(intent)
            prefix = _prefix_of(intent.reference, hex16)
            if prefix:
                prefixes.add(prefix)
        pattern = _marker_pattern(prefixes)
        with self.store.session() as s:
            candidates = s.exec(
                select(Payment).where(
                    Payment.connection_id == cid,
                    sa.or_(*[col(Payment.reference).like(f"%{p}-%") for p in sorted(prefixes)]),
                )
            ).all()
            applied_ids = [
                i.remote_payment_id
                for i in intents
                if i.state == IntentState.APPLIED.value and i.remote_payment_id
            ]
            recorded: dict[str, Payment] = {}
            for chunk in _chunks(applied_ids):
                for p in s.exec(
                    select(Payment).where(
                        Payment.connection_id == cid, col(Payment.remote_id).in_(list(chunk))
                    )
                ).all():
                    recorded[p.remote_id] = p

        def live(p: Payment) -> bool:
            return not p.deleted and (p.status or "").lower() not in DEAD_STATUSES

        by_marker: dict[str, list[Payment]] = defaultdict(list)
        markers: dict[str, str] = {}
        for p in candidates:
            if not live(p):
                continue
            for m in {(g[0], g[1]) for g in pattern.findall(p.reference or "")}:
                by_marker[m[1]].append(p)
                markers.setdefault(m[1], f"{m[0]}-{m[1]}")
        conn.scanned = len({p.remote_id for ps in by_marker.values() for p in ps})

        clearing = ClearingLine(cid)
        applied_amounts: dict[str, Decimal] = defaultdict(Decimal)
        found_amounts: dict[str, Decimal] = defaultdict(Decimal)
        for hex16, payments in sorted(by_marker.items()):
            owners = by_hex.get(hex16, [])
            marker = markers[hex16]
            pids = tuple(sorted(p.remote_id for p in payments))
            if not owners:
                for p in payments:
                    self.report.add(
                        Finding(
                            "orphan_payment",
                            cid,
                            f"ledger payment {p.remote_id} ({_money(p.total_amount, p.currency)}, "
                            f"reference {p.reference!r}) carries our marker {marker} but no "
                            f"intent has it",
                            marker=marker,
                            payment_ids=(p.remote_id,),
                        )
                    )
                continue
            if len(owners) > 1:
                self.report.add(
                    Finding(
                        "marker_on_several_intents",
                        cid,
                        f"marker {marker} of ledger payment(s) {', '.join(pids)} maps to "
                        f"{len(owners)} intents: {', '.join(i.id for i in owners)}",
                        marker=marker,
                        payment_ids=pids,
                    )
                )
                continue
            [intent] = owners
            if len(payments) > 1:
                self.report.add(
                    Finding(
                        "duplicate_payments",
                        cid,
                        f"intent {intent.id} ({intent.state}) has {len(payments)} live payments "
                        f"with its reference {marker} in the ledger: {', '.join(pids)}",
                        intent.id,
                        intent.state,
                        marker=marker,
                        payment_ids=pids,
                    )
                )
            if intent.state == IntentState.APPLIED.value:
                for p in payments:
                    currency = p.currency or intent.currency
                    found_amounts[currency] += p.total_amount
                    clearing.found_count += 1
                if len(payments) == 1 and payments[0].remote_id != intent.remote_payment_id:
                    self.report.add(
                        Finding(
                            "applied_payment_mismatch",
                            cid,
                            f"intent {intent.id} is applied as payment {intent.remote_payment_id}, "
                            f"but the live payment with its reference is {payments[0].remote_id}",
                            intent.id,
                            intent.state,
                            marker=marker,
                            payment_ids=pids,
                        )
                    )
                elif len(payments) == 1 and (
                    payments[0].total_amount != _expected_amount(intent)
                    or (payments[0].currency or intent.currency) != intent.currency
                ):
                    p = payments[0]
                    self.report.add(
                        Finding(
                            "amount_mismatch",
                            cid,
                            f"intent {intent.id} applied {_money(_expected_amount(intent), intent.currency)}"
                            f", its ledger payment {p.remote_id} is for "
                            f"{_money(p.total_amount, p.currency or intent.currency)}",
                            intent.id,
                            intent.state,
                            marker=marker,
                            payment_ids=pids,
                        )
                    )
            elif intent.state in TERMINAL and len(payments) == 1:
                self.report.add(
                    Finding(
                        "payment_on_unapplied_intent",
                        cid,
                        f"intent {intent.id} is {intent.state} ({intent.reason_code}), but the "
                        f"ledger holds live payment {pids[0]} with its reference {marker}",
                        intent.id,
                        intent.state,
                        marker=marker,
                        payment_ids=pids,
                    )
                )
            # An open intent's payment is the settle step's business: it is reported waiting.

        for intent in intents:
            if intent.state != IntentState.APPLIED.value:
                continue
            clearing.applied_count += 1
            applied_amounts[intent.currency] += _expected_amount(intent)
            hex16 = _hex16(intent.id)
            if hex16 in by_marker:
                continue
            payment = recorded.get(intent.remote_payment_id or "")
            if payment is not None and live(payment) and not payment.reference:
                # The ledger keeps our reference where the mirror does not read it
                # (QuickBooks: a long reference is in PrivateNote only): the payment
                # recorded at apply time stands for it.
                found_amounts[payment.currency or intent.currency] += payment.total_amount
                clearing.found_count += 1
                continue
            state = (
                "not in the ledger"
                if payment is None
                else "deleted or voided in the ledger"
                if not live(payment)
                else f"in the ledger without our reference (reference {payment.reference!r})"
            )
            self.report.add(
                Finding(
                    "applied_payment_missing",
                    cid,
                    f"intent {intent.id} ({intent.document_type} "
                    f"{intent.document_number or intent.document_ref}, "
                    f"{_money(_expected_amount(intent), intent.currency)}) is applied as payment "
                    f"{intent.remote_payment_id}, which is {state}",
                    intent.id,
                    intent.state,
                    payment_ids=(intent.remote_payment_id or "",),
                )
            )
        clearing.applied_amounts = dict(applied_amounts)
        clearing.found_amounts = dict(found_amounts)
        conn.clearing = clearing
        log.info("reconcile_clearing", connection=cid, line=clearing.render())


def _money(value: Decimal | None, currency: str | None) -> str:
    if value is None:
        return "?"
    cur = currency or "USD"
    return f"{quantize(value, cur):,} {cur}"


def reconcile(
    settings: Settings,
    store: Store,
    *,
    connection_ids: list[str] | None = None,
    sample: int = 50,
    clock: Clock | None = None,
    engine: PushEngine | None = None,
    seed: int | None = None,
    pull_engine: PullEngine | None = None,
    pull: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> ReconcileReport:
    """Settle open intents, check a sample of final ones, find orphans and doubles,
    and clear every connection's books to zero.

    Args:
        settings: the loaded config.
        store: the database.
        connection_ids: the connections to reconcile (default: every enabled one).
        sample: how many final intents per connection to look up in the ledger.
        clock: time source (default: the engine's, else the wall clock).
        engine: the push engine to settle and look up with (default: a new one,
            closed at the end).
        seed: seed of the sample (None: a different sample each run).
        pull_engine: the pull engine that refreshes the ``payment`` mirror (default: a
            new one that waits out rate limits, closed at the end).
        pull: False to scan the mirror as it is, without pulling.
        sleep: how a rate-limited lookup waits.

    Raises:
        ConfigError: a connection id is not in the config.
    """
    if connection_ids is None:
        connection_ids = [c.id for c in settings.connections if c.enabled]
    conns = [settings.connection(cid) for cid in connection_ids]
    own_engine = engine is None
    clock = clock or (engine.clock if engine is not None else SystemClock())
    push = engine or PushEngine(settings, store, clock=clock, worker_id=_default_worker())
    own_pull = pull and pull_engine is None
    puller = pull_engine or (
        PullEngine(settings, store, clock=clock, wait_on_rate_limit=True) if pull else None
    )
    run = _Reconciler(
        settings, store, push, puller, clock, random.Random(seed), sample, sleep=sleep
    )
    run.report.connections = [
        ConnectionReport(c.id, c.provider, clearing=ClearingLine(c.id)) for c in conns
    ]
    try:
        if conns:
            run.settle([c.id for c in conns])
        for conn in run.report.connections:
            run.pull(conn)
            run.check_sample(conn)
            run.scan(conn)
    finally:
        if own_engine:
            push.close()
        if own_pull and puller is not None:
            puller.close()
    report = run.report
    log.info(
        "reconcile_done",
        ok=report.ok,
        complete=report.complete,
        findings=len(report.findings),
        waiting=len(report.waiting),
    )
    return report
