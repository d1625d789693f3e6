"""Push: payment allocations into the ledger, exactly once.

Every intent moves through an explicit state machine; each phase is one
database transaction that ends by setting the next state, and every request
sent is logged first-class in the append-only ``attempt`` table::

    pending → claimed → sending → applied
                           ├──→ already_settled   (the ledger says it is paid)
                           ├──→ rejected(code)    (draft, void, not found, too much…)
                           ├──→ conflict(code)    (the ledger moved under us)
                           └──→ unknown → reconcile → applied | resend

The provider's idempotency key is the first line of defence only. The
guarantee is ours: the key and the reference are committed before the request
leaves, the reference travels on the payment, and a lookup by it precedes every
resend. Past the provider's key window the lookup is the only guard, and a
resend goes out under a new key version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import col, select

from connector.adapters.base import (
    Adapter,
    DocumentSnapshot,
    ItemResult,
    PaymentLine,
    PaymentRequest,
    RemotePayment,
    build_adapter,
)
from connector.clock import Clock, SystemClock
from connector.config import ConfigError, ConnectionSettings, Settings
from connector.errors import (
    AmountExceedsBalance,
    AuthExpired,
    AuthRevoked,
    ConnectorError,
    DocumentNotFound,
    DocumentNotPayable,
    OutcomeUnknown,
    RateLimited,
    StaleRowVersion,
    Transient,
)
from connector.events import bind_store, record_event
from connector.logging import get_logger
from connector.money import AmountError, minor_units, parse_amount, quantize, to_decimal
from connector.schema import Bill, Invoice, Payment, PaymentAllocation
from connector.state import (
    TERMINAL,
    Attempt,
    ConnectionRecord,
    IntentState,
    PaymentIntent,
    PushBatch,
)
from connector.store import Store, upsert_records

__all__ = [
    "AllocationLine",
    "AllocationRequest",
    "Decision",
    "IntakeError",
    "IntakeRejected",
    "IntakeResult",
    "PlanItem",
    "PushEngine",
    "SimulatedCrash",
]

log = get_logger("connector.push")

# Treat a provider key as expired this long before the provider does, so clock
# skew between us and the ledger never turns a "same key" resend into a new one.
KEY_WINDOW_SAFETY = timedelta(seconds=60)
# First and largest wait before reconciling an unknown outcome.
UNKNOWN_BACKOFF_FIRST = 0.5
UNKNOWN_BACKOFF_MAX = 60.0
# How long a parked connection's intents wait before they are looked at again.
PARKED_RETRY = timedelta(minutes=5)
# Safety valve for the per-intent state loop (preflight → send → reconcile …).
MAX_STEPS_PER_CLAIM = 8
DEFAULT_LEASE = timedelta(seconds=120)
# Intents claimed per round; connections worked at once.
DEFAULT_CLAIM = 500
MAX_PARALLEL_CONNECTIONS = 8
# Documents in one multi-document payment.
MAX_LINES = 50


class SimulatedCrash(BaseException):
    """Raised at a named recovery point in tests to stop a worker dead there."""


class LeaseLost(Exception):
    """Another worker took the intent over; this worker must drop it."""


class IntakeError(Exception):
    """An allocation refused at intake: nothing was stored."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class AllocationLine:
    """One document of a multi-document allocation and the amount applied to it."""

    document: str  # number or remote id
    amount: str | Decimal


@dataclass(frozen=True)
class AllocationRequest:
    """ "Pay ``amount`` of ``document`` on ``connection_id``" as a caller asks it.

    ``currency``: the payment's currency; when it differs from the document's,
    ``currency_rate`` (document-currency units per payment-currency unit) must be
    given and the amount applied is ``amount * currency_rate``, rounded to the
    document currency's minor units. ``lines``: several documents of one contact
    in one payment (``document`` and ``amount`` are then the first line and the
    total; the total may exceed the lines only under ``leave_unapplied``).
    """

    connection_id: str
    document: str  # the document's number or remote id
    amount: str | Decimal
    transaction_date: date | None = None
    account_code: str | None = None
    reference: str | None = None
    idempotency_key: str | None = None
    document_type: str = "invoice"
    currency: str | None = None
    currency_rate: str | Decimal | None = None
    lines: tuple[AllocationLine, ...] = ()

    def fingerprint(self) -> str:
        """A digest of what the caller asked for, to tell a replay from a misuse."""
        canonical: dict[str, Any] = {
            "connection": self.connection_id,
            "document_type": self.document_type,
            "document": self.document.strip(),
            "amount": _canonical_amount(self.amount),
            "date": self.transaction_date.isoformat() if self.transaction_date else None,
            "account": self.account_code,
            "reference": self.reference,
        }
        # New fields enter the digest only when used, so the keys of requests
        # stored before they existed still match their replays.
        if self.currency is not None:
            canonical["currency"] = self.currency.upper()
        if self.currency_rate is not None:
            canonical["currency_rate"] = _canonical_amount(self.currency_rate)
        if self.lines:
            canonical["lines"] = [
                [line.document.strip(), _canonical_amount(line.amount)] for line in self.lines
            ]
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _canonical_amount(value: str | Decimal) -> str:
    try:
        return format(to_decimal(value).normalize(), "f")
    except AmountError:
        return str(value)


@dataclass(frozen=True)
class IntakeResult:
    """The stored intent, and whether this call created it."""

    intent: PaymentIntent
    created: bool


class IntakeRejected(Exception):
    """Some allocations of a batch were refused: nothing of the batch was stored."""

    def __init__(self, errors: list[tuple[int, IntakeError]]) -> None:
        super().__init__(f"{len(errors)} allocation(s) refused; nothing stored")
        self.errors = errors


@dataclass(frozen=True)
class PlanItem:
    """What a push of one allocation would do now (dry-run): nothing is written."""

    index: int
    request: AllocationRequest
    outcome: str  # send | already_settled | rejected | conflict | invalid | replay
    code: str | None
    message: str
    document_number: str | None = None
    document_remote_id: str | None = None
    document_status: str | None = None
    balance: Decimal | None = None
    currency: str | None = None
    send_amount: Decimal | None = None
    unapplied: Decimal | None = None
    balance_after: Decimal | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (amounts as strings)."""
        out: dict[str, Any] = {
            "index": self.index,
            "connection_id": self.request.connection_id,
            "document": self.request.document,
            "amount": str(self.request.amount),
            "idempotency_key": self.request.idempotency_key,
            "outcome": self.outcome,
            "code": self.code,
            "message": self.message,
            "document_number": self.document_number,
            "document_remote_id": self.document_remote_id,
            "document_status": self.document_status,
            "currency": self.currency,
        }
        for name in ("balance", "send_amount", "unapplied", "balance_after"):
            value = getattr(self, name)
            out[name] = None if value is None else str(value)
        return out


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one intent against a fresh read of its document."""

    outcome: str  # send | already_settled | rejected | conflict
    code: str | None
    message: str
    send_amount: Decimal | None = None  # applied to the document
    unapplied: Decimal = Decimal(0)  # sent on top, left as the provider's unapplied credit
    lines: str | None = None  # multi-document: the lines (JSON) with each line's send_amount


@dataclass(frozen=True)
class AttemptRow:
    """An ``attempt`` row to append (a plain value: the hot path inserts them in bulk)."""

    intent_id: str
    at: datetime
    phase: str
    outcome: str
    idempotency_key: str | None = None
    status_code: int | None = None
    message: str | None = None
    remote_payment_id: str | None = None
    provider_code: str | None = None
    worker: str | None = None
    method: str | None = None
    path: str | None = None


def decide(
    *,
    amount: Decimal,
    currency: str,
    doc: DocumentSnapshot,
    document_type: str,
    overpayment: str,
    accepted_balance: Decimal | None,
    unapplied_credit: bool,
) -> Decision:
    """The push policy, shared by the push and the dry-run.

    ``accepted_balance`` is the document's balance when the allocation was
    accepted: an amount that fitted then but not now means someone else paid
    in between (``conflict`` with both amounts, or ``already_settled`` when
    nothing is left), not a bad allocation.
    """
    what = f"{document_type} {doc.number or doc.remote_id}"
    note = f"{doc.provider_status}, balance {doc.balance} {doc.currency}"
    if doc.status == "paid" or (doc.payable and doc.balance == 0):
        return Decision(
            "already_settled", "already_settled", f"{what} is already paid ({note}); nothing sent"
        )
    if not doc.payable:
        return Decision(
            "rejected",
            "document_not_payable",
            f"{what} is {doc.provider_status}; only approved (AUTHORISED) documents take payments",
        )
    if currency and doc.currency != currency:
        return Decision(
            "rejected",
            "currency_mismatch",
            f"{what} is in {doc.currency}, the allocation in {currency}",
        )
    amount = quantize(amount, doc.currency)
    if amount <= doc.balance:
        return Decision("send", None, f"pay {amount} {doc.currency} of {what} ({note})", amount)
    moved = accepted_balance is not None and amount <= accepted_balance
    if overpayment == "apply_up_to_balance":
        return Decision(
            "send",
            "applied_up_to_balance",
            f"pay {doc.balance} of the {amount} {doc.currency} asked: the open balance of {what}",
            doc.balance,
        )
    if overpayment == "leave_unapplied" and not moved:
        if not unapplied_credit:
            return Decision(
                "rejected",
                "unapplied_credit_not_supported",
                f"amount {amount} exceeds the open balance {doc.balance} {doc.currency} of {what} "
                f"and this provider keeps no unapplied credit on a payment; use "
                f'overpayment = "apply_up_to_balance" or "reject" for this connection',
            )
        rest = amount - doc.balance
        return Decision(
            "send",
            "left_unapplied",
            f"pay {doc.balance} of {what} and leave {rest} {doc.currency} unapplied",
            doc.balance,
            rest,
        )
    if moved:
        return Decision(
            "conflict",
            "balance_moved",
            f"{what} balance is now {doc.balance} {doc.currency}, below the allocation of "
            f"{amount} (it was {accepted_balance} when the allocation was accepted); someone "
            f"else paid part of it",
        )
    return Decision(
        "rejected",
        "amount_exceeds_balance",
        f"amount {amount} exceeds the open balance {doc.balance} {doc.currency} of {what}",
    )


def _default_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class PushEngine:
    """Takes allocations in and drives their intents to a final state.

    Args:
        settings: the loaded config.
        store: the database.
        clock: time source (tests move it).
        worker_id: this worker's lease name.
        adapter_factory: builds an adapter for a connection id (tests may wrap it).
        crash_at: recovery points at which to raise :class:`SimulatedCrash`
            (``after_claim``, ``after_store``, ``after_send``, ``after_apply``).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Clock | None = None,
        worker_id: str | None = None,
        adapter_factory: Callable[[str], Adapter] | None = None,
        crash_at: Iterable[str] = (),
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or SystemClock()
        self.worker_id = worker_id or _default_worker()
        self.lease = lease
        self.crash_at = frozenset(crash_at)
        self._factory = adapter_factory or self._build_adapter
        self._adapters: dict[str, Adapter] = {}
        self._stop = threading.Event()
        # Intents a whole-call refusal sent back: each goes alone next time.
        self._solo: set[str] = set()
        self._events_on = any(e.enabled for e in settings.events.endpoints)
        # The token refresher records connection.needs_attention through the store.
        bind_store(store, settings)

    # -- plumbing -------------------------------------------------------------------
    def _build_adapter(self, connection_id: str) -> Adapter:
        return build_adapter(self.settings.connection(connection_id), self.store, clock=self.clock)

    def adapter(self, connection_id: str) -> Adapter:
        """The (cached) adapter of a connection."""
        if connection_id not in self._adapters:
            self._adapters[connection_id] = self._factory(connection_id)
        return self._adapters[connection_id]

    def close(self) -> None:
        """Close every adapter's connections."""
        for adapter in self._adapters.values():
            adapter.close()
        self._adapters.clear()

    def stop(self) -> None:
        """Ask :meth:`run_once` to stop after the intent in hand."""
        self._stop.set()

    def _checkpoint(self, name: str) -> None:
        if name in self.crash_at:
            raise SimulatedCrash(name)

    # -- intake ---------------------------------------------------------------------
    def intake(self, request: AllocationRequest, *, defer_unreadable: bool = False) -> IntakeResult:
        """Store an allocation as an intent, idempotently on the caller's key.

        Same key and same request → the existing intent. Same key and another
        request → :class:`IntakeError`, nothing stored. The document is read
        fresh from the ledger so an unknown document or an amount the currency
        cannot hold is refused here, with nothing stored. With
        ``defer_unreadable`` an allocation whose document cannot be read now
        (rate limit, outage) is stored all the same and resolved at preflight.

        Raises:
            IntakeError: the allocation cannot be accepted (see ``code``).
            ConfigError: the connection is not in the config.
        """
        try:
            return self.intake_many([request], defer_unreadable=defer_unreadable)[0]
        except IntakeRejected as exc:
            raise exc.errors[0][1] from None

    def intake_many(
        self, requests: Sequence[AllocationRequest], *, defer_unreadable: bool = False
    ) -> list[IntakeResult]:
        """Store many allocations at once: every one is validated before any is stored.

        Returns one result per request, in order (a replay returns the stored
        intent with ``created=False``; a key repeated within ``requests`` with the
        same allocation is one intent).

        Raises:
            IntakeRejected: with every refused request's index and reason; nothing stored.
        """
        errors: list[tuple[int, IntakeError]] = []
        slots: list[PaymentIntent | IntakeResult | None] = [None] * len(requests)
        first_of_key: dict[tuple[str, str], int] = {}
        fresh: list[tuple[int, AllocationRequest, str, str]] = []
        for i, request in enumerate(requests):
            try:
                conn = self.settings.connection(request.connection_id)
            except ConfigError as exc:
                errors.append((i, IntakeError("unknown_connection", f"{exc.problem}; {exc.fix}")))
                continue
            fingerprint = request.fingerprint()
            key = (request.idempotency_key or f"auto-{fingerprint[:40]}").strip()
            if not key or len(key) > 255:
                errors.append(
                    (
                        i,
                        IntakeError(
                            "invalid_key", "the idempotency key must be 1 to 255 characters"
                        ),
                    )
                )
                continue
            seen = first_of_key.get((conn.id, key))
            if seen is not None:
                first = requests[seen]
                if first.fingerprint() != fingerprint:
                    errors.append(
                        (
                            i,
                            IntakeError(
                                "idempotency_key_reused",
                                f"key {key!r} is used by row {seen + 1} for a different "
                                f"allocation; nothing stored. Use a new key for a new allocation.",
                            ),
                        )
                    )
                continue
            first_of_key[(conn.id, key)] = i
            fresh.append((i, request, fingerprint, key))
        # Replays: one query per connection for the keys already stored.
        by_conn: dict[str, list[tuple[int, AllocationRequest, str, str]]] = {}
        for item in fresh:
            by_conn.setdefault(item[1].connection_id, []).append(item)
        todo: list[tuple[int, AllocationRequest, str, str]] = []
        for conn_id, items in by_conn.items():
            stored = self._find_intents(conn_id, [key for _i, _r, _f, key in items])
            for i, request, fingerprint, key in items:
                existing = stored.get(key)
                if existing is None:
                    todo.append((i, request, fingerprint, key))
                    continue
                try:
                    slots[i] = self._replay(existing, fingerprint, key)
                except IntakeError as exc:
                    errors.append((i, exc))
        prepared = self._prepare_all(todo, defer_unreadable)
        for i, outcome in prepared.items():
            if isinstance(outcome, IntakeError):
                errors.append((i, outcome))
            else:
                slots[i] = outcome
        if errors:
            errors.sort(key=lambda e: e[0])
            raise IntakeRejected(errors)
        new_intents = [slot for slot in slots if isinstance(slot, PaymentIntent)]
        if new_intents:
            try:
                with self.store.session() as s:
                    s.add_all(new_intents)
            except sa.exc.IntegrityError:
                # Another intake stored one of these keys meanwhile: answer it as a replay.
                if len(requests) == 1:
                    return self.intake_many(requests, defer_unreadable=defer_unreadable)
                raise
            for intent in new_intents:
                log.info(
                    "intent_stored",
                    intent=intent.id,
                    connection=intent.connection_id,
                    document=intent.document_number or intent.document_ref,
                    amount=str(intent.amount),
                    currency=intent.currency,
                )
        results: list[IntakeResult] = []
        for i, slot in enumerate(slots):
            if isinstance(slot, IntakeResult):
                results.append(slot)
            elif isinstance(slot, PaymentIntent):
                results.append(IntakeResult(slot, True))
            else:  # a repeat of an earlier row's key
                request = requests[i]
                key = (request.idempotency_key or f"auto-{request.fingerprint()[:40]}").strip()
                earlier = results[first_of_key[(request.connection_id, key)]]
                results.append(IntakeResult(earlier.intent, False))
        return results

    def _prepare_all(
        self, todo: list[tuple[int, AllocationRequest, str, str]], defer_unreadable: bool
    ) -> dict[int, PaymentIntent | IntakeError]:
        """Validate and read the documents of new allocations, several at a time."""
        out: dict[int, PaymentIntent | IntakeError] = {}
        if not todo:
            return out
        prefetched = self._prefetch_documents([r for _i, r, _f, _k in todo])
        rest: list[tuple[int, AllocationRequest, str, str]] = []
        for item in todo:
            i, request, fingerprint, key = item
            doc = prefetched.get((request.connection_id, request.document_type, request.document))
            if doc is None:
                rest.append(item)
                continue
            try:
                out[i] = self.prepare(request, fingerprint=fingerprint, key=key, document=doc)
            except IntakeError as exc:
                out[i] = exc
        todo = rest
        if not todo:
            return out
        workers = 1
        if len(todo) > 1:
            workers = min(
                8, len(todo), *(self._concurrency(r.connection_id) for _, r, _, _ in todo)
            )
        if workers <= 1:
            for i, request, fingerprint, key in todo:
                out[i] = self._prepare_or_error(request, fingerprint, key, defer_unreadable)
            return out
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="intake") as pool:
            futures = {
                i: pool.submit(self._prepare_or_error, request, fingerprint, key, defer_unreadable)
                for i, request, fingerprint, key in todo
            }
            for i, future in futures.items():
                out[i] = future.result()
        return out

    def _prefetch_documents(
        self, requests: list[AllocationRequest]
    ) -> dict[tuple[str, str, str], DocumentSnapshot]:
        """Read the documents of many single-document allocations in batched calls.

        Best effort: what is not found here (or a failed read) is read one by one
        afterwards, which gives the precise refusal.
        """
        groups: dict[tuple[str, str], list[str]] = {}
        for request in requests:
            if request.lines or not request.document.strip():
                continue
            groups.setdefault((request.connection_id, request.document_type), []).append(
                request.document
            )
        found: dict[tuple[str, str, str], DocumentSnapshot] = {}
        for (connection_id, kind), refs in groups.items():
            if len(refs) < 2:
                continue
            try:
                adapter = self.adapter(connection_id)
            except Exception:
                continue
            batched = getattr(adapter, "get_documents", None)
            if batched is None:
                continue
            try:
                docs: dict[str, DocumentSnapshot] = batched(refs, kind)
            except ConnectorError as exc:
                log.warning("intake_prefetch_failed", connection=connection_id, error=exc.code)
                continue
            for ref, doc in docs.items():
                found[(connection_id, kind, ref)] = doc
        return found

    def _concurrency(self, connection_id: str) -> int:
        try:
            return max(1, self.adapter(connection_id).capabilities.concurrency)
        except Exception:
            return 1

    def _prepare_or_error(
        self, request: AllocationRequest, fingerprint: str, key: str, defer_unreadable: bool
    ) -> PaymentIntent | IntakeError:
        try:
            return self.prepare(
                request, fingerprint=fingerprint, key=key, defer_unreadable=defer_unreadable
            )
        except IntakeError as exc:
            return exc

    def prepare(
        self,
        request: AllocationRequest,
        *,
        fingerprint: str | None = None,
        key: str | None = None,
        defer_unreadable: bool = False,
        document: DocumentSnapshot | None = None,
    ) -> PaymentIntent:
        """Validate an allocation and build its intent, without storing anything.

        ``document``: a fresh read of the document already in hand (batched intake).

        Raises:
            IntakeError: the allocation cannot be accepted (see ``code``).
        """
        conn = self.settings.connection(request.connection_id)
        fingerprint = fingerprint or request.fingerprint()
        key = key or (request.idempotency_key or f"auto-{fingerprint[:40]}").strip()
        if request.document_type not in ("invoice", "bill"):
            raise IntakeError(
                "invalid_document_type",
                f"document_type {request.document_type!r} must be invoice (AR) or bill (AP)",
            )
        if not request.document.strip() and not request.lines:
            raise IntakeError("missing_document", "name the document (its number or id) to pay")
        if request.lines and len(request.lines) > MAX_LINES:
            raise IntakeError(
                "too_many_lines",
                f"at most {MAX_LINES} documents in one payment, got {len(request.lines)}",
            )
        if request.lines and str(request.amount).strip() == "":
            # A multi-document allocation may leave its total to its lines.
            try:
                request = replace(
                    request,
                    amount=sum((to_decimal(line.amount) for line in request.lines), Decimal(0)),
                )
            except AmountError as exc:
                raise IntakeError("invalid_amount", str(exc)) from None
        try:
            preliminary = to_decimal(request.amount)
        except AmountError as exc:
            raise IntakeError("invalid_amount", str(exc)) from None
        if not preliminary.is_finite() or preliminary <= 0:
            raise IntakeError(
                "invalid_amount", f"amount {request.amount!r} must be a number greater than zero"
            )
        rate: Decimal | None = None
        if request.currency_rate is not None:
            try:
                rate = to_decimal(request.currency_rate)
            except AmountError as exc:
                raise IntakeError("invalid_currency_rate", str(exc)) from None
            if not rate.is_finite() or rate <= 0:
                raise IntakeError(
                    "invalid_currency_rate",
                    f"currency_rate {request.currency_rate!r} must be a number greater than zero",
                )
        pay_currency = request.currency.strip().upper() if request.currency else None
        if pay_currency is not None:
            try:
                minor_units(pay_currency)
            except AmountError as exc:
                raise IntakeError("invalid_currency", str(exc)) from None
        account = request.account_code or (
            conn.bill_payment_account_code if request.document_type == "bill" else None
        )
        account = account or conn.payment_account_code
        if not account:
            raise IntakeError(
                "missing_account",
                f"connection {conn.id!r} has no payment_account_code; pass --account CODE "
                f"(a BANK account code) or set payment_account_code in the config",
            )
        try:
            adapter = self.adapter(conn.id)
        except NotImplementedError as exc:
            raise IntakeError("provider_not_supported", str(exc)) from None
        if request.lines:
            return self._prepare_lines(
                request, conn, adapter, fingerprint, key, account, rate, pay_currency
            )
        doc: DocumentSnapshot | None = document
        try:
            if doc is None:
                doc = adapter.get_document(request.document, request.document_type)
        except DocumentNotFound as exc:
            raise IntakeError("document_not_found", str(exc)) from None
        except ConnectorError as exc:
            if not defer_unreadable or not pay_currency:
                hint = (
                    " (or give the payment's currency to store it now and read it later)"
                    if defer_unreadable
                    else ""
                )
                raise IntakeError(
                    "provider_unavailable",
                    f"could not read {request.document_type} {request.document!r} from the "
                    f"ledger ({exc.code}: {exc.message}); nothing was stored, try again{hint}",
                ) from None
            doc = None  # resolved at preflight
        doc_currency = doc.currency if doc is not None else pay_currency
        assert doc_currency is not None
        payment_amount: Decimal | None = None
        if pay_currency is not None and pay_currency != doc_currency:
            if rate is None:
                raise IntakeError(
                    "currency_mismatch",
                    f"the payment is in {pay_currency} but {request.document_type} "
                    f"{request.document} is in {doc_currency}; give currency_rate "
                    f"({doc_currency} per {pay_currency}) or pay in {doc_currency}",
                )
            try:
                payment_amount = parse_amount(request.amount, pay_currency)
            except AmountError as exc:
                raise IntakeError("invalid_amount", str(exc)) from None
            amount = quantize(payment_amount * rate, doc_currency)
            if amount <= 0:
                raise IntakeError(
                    "invalid_amount",
                    f"{payment_amount} {pay_currency} at {rate} is 0 {doc_currency}",
                )
        else:
            try:
                amount = parse_amount(request.amount, doc_currency)
            except AmountError as exc:
                raise IntakeError("invalid_amount", str(exc)) from None
        return self._new_intent(
            request,
            conn,
            fingerprint=fingerprint,
            key=key,
            account=account,
            rate=rate,
            pay_currency=pay_currency,
            payment_amount=payment_amount,
            document_ref=request.document.strip(),
            doc=doc,
            amount=amount,
            currency=doc_currency,
        )

    def _prepare_lines(
        self,
        request: AllocationRequest,
        conn: ConnectionSettings,
        adapter: Adapter,
        fingerprint: str,
        key: str,
        account: str,
        rate: Decimal | None,
        pay_currency: str | None,
    ) -> PaymentIntent:
        """A payment over several documents of one contact (unified ``allocations[]``)."""
        docs: list[DocumentSnapshot] = []
        for n, line in enumerate(request.lines, 1):
            try:
                docs.append(adapter.get_document(line.document, request.document_type))
            except DocumentNotFound as exc:
                raise IntakeError("document_not_found", f"allocations[{n}]: {exc}") from None
            except ConnectorError as exc:
                raise IntakeError(
                    "provider_unavailable",
                    f"allocations[{n}]: could not read {request.document_type} {line.document!r} from "
                    f"the ledger ({exc.code}: {exc.message}); nothing was stored, try again",
                ) from None
        ids = [d.remote_id for d in docs]
        if len(set(ids)) != len(ids):
            raise IntakeError("duplicate_document", "a document appears twice in the lines")
        contacts = {d.contact_remote_id for d in docs}
        if len(contacts) > 1:
            raise IntakeError(
                "mixed_contacts",
                "one payment pays documents of one contact only; these lines name "
                f"{len(contacts)} contacts: split them into one allocation per contact",
            )
        currencies = {d.currency for d in docs}
        if len(currencies) > 1:
            raise IntakeError(
                "mixed_currencies",
                f"the documents are in {', '.join(sorted(currencies))}; one payment has one "
                f"currency",
            )
        doc_currency = docs[0].currency

        def in_doc_currency(value: str | Decimal, what: str) -> Decimal:
            try:
                if pay_currency is not None and pay_currency != doc_currency:
                    if rate is None:
                        raise IntakeError(
                            "currency_mismatch",
                            f"the payment is in {pay_currency} but the documents are in "
                            f"{doc_currency}; give currency_rate ({doc_currency} per "
                            f"{pay_currency}) or pay in {doc_currency}",
                        )
                    return quantize(parse_amount(value, pay_currency) * rate, doc_currency)
                return parse_amount(value, doc_currency)
            except AmountError as exc:
                raise IntakeError("invalid_amount", f"{what}: {exc}") from None

        lines: list[dict[str, Any]] = []
        for n, (line, doc) in enumerate(zip(request.lines, docs, strict=True), 1):
            lines.append(
                {
                    "document": line.document.strip(),
                    "remote_id": doc.remote_id,
                    "number": doc.number,
                    "amount": str(in_doc_currency(line.amount, f"allocations[{n}]")),
                    "accepted_balance": str(doc.balance),
                }
            )
        applied = sum((Decimal(line["amount"]) for line in lines), Decimal(0))
        total = in_doc_currency(request.amount, "amount")
        if total < applied:
            raise IntakeError(
                "amount_mismatch",
                f"the lines add up to {applied} {doc_currency}, more than the amount {total}",
            )
        if total > applied and conn.overpayment != "leave_unapplied":
            raise IntakeError(
                "amount_mismatch",
                f"the amount {total} exceeds the lines' {applied} {doc_currency}; the rest "
                f'could only stay unapplied (overpayment = "leave_unapplied")',
            )
        payment_amount: Decimal | None = None
        if pay_currency is not None and pay_currency != doc_currency:
            payment_amount = parse_amount(request.amount, pay_currency)
        return self._new_intent(
            request,
            conn,
            fingerprint=fingerprint,
            key=key,
            account=account,
            rate=rate,
            pay_currency=pay_currency,
            payment_amount=payment_amount,
            document_ref=request.lines[0].document.strip(),
            doc=docs[0],
            amount=total,
            currency=doc_currency,
            lines=json.dumps(lines),
        )

    def _new_intent(
        self,
        request: AllocationRequest,
        conn: ConnectionSettings,
        *,
        fingerprint: str,
        key: str,
        account: str,
        rate: Decimal | None,
        pay_currency: str | None,
        payment_amount: Decimal | None,
        document_ref: str,
        doc: DocumentSnapshot | None,
        amount: Decimal,
        currency: str,
        lines: str | None = None,
    ) -> PaymentIntent:
        """The unsaved intent of a validated allocation (``doc`` None: read at preflight)."""
        intent_id = str(uuid.uuid4())
        marker = f"{conn.reference_prefix}-{uuid.UUID(intent_id).hex[:16]}"
        reference = f"{request.reference} ({marker})" if request.reference else marker
        now = self.clock.now()
        return PaymentIntent(
            id=intent_id,
            connection_id=conn.id,
            idempotency_key=key,
            fingerprint=fingerprint,
            state=IntentState.PENDING.value,
            document_type=request.document_type,
            document_ref=document_ref,
            document_remote_id=doc.remote_id if doc else None,
            document_number=doc.number if doc else None,
            contact_remote_id=doc.contact_remote_id if doc else None,
            amount=amount,
            currency=currency,
            currency_rate=rate,
            payment_currency=pay_currency if payment_amount is not None else None,
            payment_amount=payment_amount,
            transaction_date=request.transaction_date or self._ledger_today(conn.timezone),
            account_code=account,
            caller_reference=request.reference,
            reference=reference,
            key_version=1,
            provider_key=self._provider_key(conn.reference_prefix, intent_id, 1),
            overpayment=conn.overpayment,
            preflight_balance=doc.balance if doc else None,
            preflight_row_version=doc.row_version if doc else None,
            lines=lines,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )

    def _ledger_today(self, timezone: str) -> date:
        """Today in the ledger's own calendar (a transaction date is never shifted)."""
        return self.clock.now().astimezone(ZoneInfo(timezone)).date()

    def plan(self, requests: Sequence[AllocationRequest]) -> list[PlanItem]:
        """Dry-run: preflight each allocation and say what a push would do now.

        Reads the ledger; writes nothing, neither to the ledger nor to the store.
        """
        items: list[PlanItem] = []
        for index, request in enumerate(requests):
            items.append(self._plan_one(index, request))
        return items

    def _plan_one(self, index: int, request: AllocationRequest) -> PlanItem:
        try:
            conn = self.settings.connection(request.connection_id)
        except ConfigError as exc:
            return PlanItem(index, request, "invalid", "unknown_connection", exc.problem)
        fingerprint = request.fingerprint()
        key = (request.idempotency_key or f"auto-{fingerprint[:40]}").strip()
        existing = self._find_intents(conn.id, [key]).get(key) if key else None
        if existing is not None:
            if existing.fingerprint != fingerprint:
                return PlanItem(
                    index,
                    request,
                    "invalid",
                    "idempotency_key_reused",
                    f"key {key!r} was already used for a different allocation "
                    f"(intent {existing.id})",
                )
            return PlanItem(
                index,
                request,
                "replay",
                existing.state,
                f"already stored as intent {existing.id} ({existing.state}); nothing new would "
                f"be sent",
                document_number=existing.document_number,
                document_remote_id=existing.document_remote_id,
                currency=existing.currency,
            )
        try:
            intent = self.prepare(request, fingerprint=fingerprint, key=key)
        except IntakeError as exc:
            return PlanItem(index, request, "invalid", exc.code, exc.message)
        assert intent.document_remote_id is not None
        adapter = self.adapter(conn.id)
        try:
            doc = adapter.get_document(intent.document_remote_id, intent.document_type)
        except ConnectorError as exc:
            return PlanItem(index, request, "invalid", exc.code, exc.message)
        decision = decide(
            amount=intent.amount,
            currency=intent.currency,
            doc=doc,
            document_type=intent.document_type,
            overpayment=intent.overpayment,
            accepted_balance=None,
            unapplied_credit=getattr(adapter.capabilities, "unapplied_credit", False),
        )
        after = None if decision.send_amount is None else doc.balance - decision.send_amount
        return PlanItem(
            index,
            request,
            decision.outcome,
            decision.code,
            decision.message,
            document_number=doc.number,
            document_remote_id=doc.remote_id,
            document_status=doc.provider_status,
            balance=doc.balance,
            currency=doc.currency,
            send_amount=decision.send_amount,
            unapplied=decision.unapplied if decision.unapplied else None,
            balance_after=after,
        )

    def _find_intents(self, connection_id: str, keys: list[str]) -> dict[str, PaymentIntent]:
        found: dict[str, PaymentIntent] = {}
        with self.store.session() as s:
            for chunk in range(0, len(keys), 500):
                rows = s.exec(
                    select(PaymentIntent).where(
                        PaymentIntent.connection_id == connection_id,
                        col(PaymentIntent.idempotency_key).in_(keys[chunk : chunk + 500]),
                    )
                ).all()
                found.update({row.idempotency_key: row for row in rows})
        return found

    def _find_intent(self, connection_id: str, key: str) -> PaymentIntent | None:
        with self.store.session() as s:
            return s.exec(
                select(PaymentIntent).where(
                    PaymentIntent.connection_id == connection_id,
                    PaymentIntent.idempotency_key == key,
                )
            ).first()

    @staticmethod
    def _replay(existing: PaymentIntent, fingerprint: str, key: str) -> IntakeResult:
        if existing.fingerprint != fingerprint:
            raise IntakeError(
                "idempotency_key_reused",
                f"key {key!r} was already used for a different allocation (intent {existing.id}: "
                f"{existing.document_ref}, {existing.amount} {existing.currency}); nothing stored. "
                f"Use a new key for a new allocation.",
            )
        return IntakeResult(existing, False)

    @staticmethod
    def _provider_key(prefix: str, intent_id: str, version: int) -> str:
        return f"{prefix}-{intent_id}-v{version}"

    # -- the worker loop ----------------------------------------------------------------
    def run_once(
        self,
        *,
        connection_ids: list[str] | None = None,
        intent_ids: list[str] | None = None,
        limit: int | None = None,
    ) -> Counter[str]:
        """Claim due intents and drive them, a connection's worth at a time, as far as they go now.

        The claimed intents of one connection are preflighted with batched reads
        and sent in the provider's largest safe call (``capabilities.max_batch``);
        several calls of a connection go out at once up to its concurrency, and
        several connections are worked in parallel.

        Returns:
            How many intents ended this round in each state.
        """
        counts: Counter[str] = Counter()
        if connection_ids is None:
            connection_ids = [c.id for c in self.settings.connections if c.enabled]
        claimed = self.store.claim_intents(
            worker=self.worker_id,
            now=self.clock.now(),
            lease=self.lease,
            limit=limit or DEFAULT_CLAIM,
            connection_ids=connection_ids,
            intent_ids=intent_ids,
        )
        if not claimed:
            return counts
        if self._stop.is_set():
            for intent in claimed:
                self._release(intent)
            return counts
        self._checkpoint("after_claim")
        groups: dict[str, list[PaymentIntent]] = {}
        for intent in claimed:
            groups.setdefault(intent.connection_id, []).append(intent)
        if len(groups) == 1:
            [(conn_id, members)] = groups.items()
            self._process_connection(conn_id, members)
        else:
            with ThreadPoolExecutor(
                max_workers=min(MAX_PARALLEL_CONNECTIONS, len(groups)),
                thread_name_prefix="push-conn",
            ) as pool:
                futures = [pool.submit(self._process_connection, c, m) for c, m in groups.items()]
                for future in futures:
                    future.result()  # re-raises SimulatedCrash and bugs
        for intent in claimed:
            counts[intent.state] += 1
        return counts

    def push_until_final(
        self, intent_ids: list[str], *, timeout: float = 60.0, poll: float = 0.2
    ) -> list[PaymentIntent]:
        """Drive the given intents until each is final or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            self.run_once(intent_ids=intent_ids, limit=max(1, len(intent_ids)))
            intents = self.intents(intent_ids)
            if all(i.state in TERMINAL for i in intents) or time.monotonic() >= deadline:
                return intents
            time.sleep(poll)

    def intents(self, intent_ids: list[str]) -> list[PaymentIntent]:
        """Current rows of the given intents, in the given order."""
        rows: dict[str, PaymentIntent] = {}
        with self.store.session() as s:
            for chunk in range(0, len(intent_ids), 500):
                part = intent_ids[chunk : chunk + 500]
                for row in s.exec(select(PaymentIntent).where(col(PaymentIntent.id).in_(part))):
                    rows[row.id] = row
        return [rows[i] for i in intent_ids if i in rows]

    # -- one connection's round ---------------------------------------------------------
    def _process_connection(self, connection_id: str, intents: list[PaymentIntent]) -> None:
        with self.store.session() as s:
            conn = s.get(ConnectionRecord, connection_id)
        try:
            adapter = self.adapter(connection_id)
        except NotImplementedError as exc:
            for intent in intents:
                self._defer(intent, PARKED_RETRY, "provider_not_supported", str(exc))
            return
        if conn is not None and conn.status == "needs_reauth" and not self._regranted(adapter):
            for intent in intents:
                self._defer(intent, PARKED_RETRY, "connection_parked", conn.status_reason or "")
            return
        work = list(intents)
        for _ in range(MAX_STEPS_PER_CLAIM):
            work = [i for i in work if i.state not in TERMINAL and i.lease_owner == self.worker_id]
            if not work:
                return
            try:
                work = self._round(work, adapter)
            except (RateLimited, Transient, AuthExpired) as exc:
                delay = getattr(exc, "retry_after", None) or 5.0
                for intent in work:
                    self._defer(intent, timedelta(seconds=delay), exc.code, exc.message)
                return
            except AuthRevoked as exc:
                for intent in work:
                    self._defer(intent, PARKED_RETRY, exc.code, exc.message)
                return
            except SimulatedCrash:
                raise
            except Exception as exc:  # a bug or an odd response: park these intents, go on
                log.exception("push_round_failed", connection=connection_id, error=repr(exc))
                for intent in work:
                    if intent.lease_owner == self.worker_id:
                        self._defer(
                            intent, timedelta(seconds=60), "internal_error", repr(exc)[:500]
                        )
                return
        for intent in work:
            if intent.lease_owner == self.worker_id and intent.state not in TERMINAL:
                self._defer(intent, timedelta(seconds=5), "too_many_steps", "will continue")

    @staticmethod
    def _regranted(adapter: Adapter) -> bool:
        """A parked connection whose config now holds a new grant is active again."""
        tokens = getattr(getattr(adapter, "http", None), "tokens", None)
        check = getattr(tokens, "regranted", None)
        if check is None:
            return False
        try:
            return bool(check())
        except Exception as exc:  # a bad new config: stay parked, say why
            log.warning("regrant_check_failed", error=repr(exc))
            return False

    def _round(self, work: list[PaymentIntent], adapter: Adapter) -> list[PaymentIntent]:
        """Recover what may have been sent, preflight the rest, send; return what needs more."""
        recovering = [
            i for i in work if i.state in (IntentState.SENDING.value, IntentState.UNKNOWN.value)
        ]
        fresh = [i for i in work if i.state == IntentState.CLAIMED.value]
        batches: list[tuple[PushBatch, list[PaymentIntent]]] = []
        if recovering:
            resend, again = self._recover(recovering, adapter)
            batches.extend(resend)
            fresh.extend(again)
        if fresh:
            batches.extend(self._preflight_many(fresh, adapter))
        if not batches:
            return [i for i in work if i.state == IntentState.CLAIMED.value]
        concurrency = max(1, min(adapter.capabilities.concurrency, len(batches)))
        outcomes: list[list[ItemResult] | ConnectorError]
        if concurrency == 1:
            outcomes = [self._call_batch(b, m, adapter) for b, m in batches]
        else:
            with ThreadPoolExecutor(
                max_workers=concurrency, thread_name_prefix="push-send"
            ) as pool:
                outcomes = list(
                    pool.map(lambda bm: self._call_batch(bm[0], bm[1], adapter), batches)
                )
        self._checkpoint("after_send")
        more: list[PaymentIntent] = []
        applied: list[tuple[PaymentIntent, RemotePayment, AttemptRow]] = []
        done: list[PushBatch] = []
        for (batch, members), outcome in zip(batches, outcomes, strict=True):
            more.extend(self._record_batch(batch, members, outcome, adapter, applied, done))
        if applied:
            self._apply_many(applied, adapter, batches=done)
        return more

    def _request(self, intent: PaymentIntent) -> PaymentRequest:
        return payment_request(intent)

    # -- recovery: a send that may have landed -------------------------------------------
    def _find_many(
        self, adapter: Adapter, intents: list[PaymentIntent]
    ) -> dict[str, list[RemotePayment]]:
        requests = [self._request(i) for i in intents]
        batched = getattr(adapter, "find_payments", None)
        if batched is not None and len(requests) > 1:
            found: dict[str, list[RemotePayment]] = batched(requests)
            return {r.intent_id: list(found.get(r.intent_id, [])) for r in requests}
        return {r.intent_id: adapter.find_payment(r) for r in requests}

    def _recover(
        self, intents: list[PaymentIntent], adapter: Adapter
    ) -> tuple[list[tuple[PushBatch, list[PaymentIntent]]], list[PaymentIntent]]:
        """Look up every intent whose send may have landed; return batches to resend as they
        were (same members, same key) and intents to decide again under a new key."""
        batches = self._load_batches({i.batch_id for i in intents if i.batch_id})
        # A batch refused as a whole before anything was applied (a 429, an outage) is
        # resent as it is, without a lookup: nothing of it can be in the ledger.
        clean: list[tuple[PushBatch, list[PaymentIntent]]] = []
        look: list[PaymentIntent] = []
        by_batch: dict[str, list[PaymentIntent]] = {}
        for intent in intents:
            if intent.batch_id and intent.batch_id in batches:
                by_batch.setdefault(intent.batch_id, []).append(intent)
            else:
                look.append(intent)
        for batch_id, members in by_batch.items():
            batch = batches[batch_id]
            if (
                batch.state == "open"
                and self._intact(batch, members)
                and self._batch_key_alive(batch, adapter)
            ):
                clean.append((batch, self._ordered(batch, members)))
            else:
                look.extend(members)
        if not look:
            return clean, []
        found = self._find_many(adapter, look)
        applied: list[tuple[PaymentIntent, RemotePayment, AttemptRow]] = []
        unfound: list[PaymentIntent] = []
        for intent in look:
            payments = found.get(intent.id, [])
            live = [p for p in payments if p.status != "deleted"]
            if len(live) == 1:
                attempt = self._attempt(intent, "lookup", outcome="found", remote=live[0].remote_id)
                applied.append((intent, live[0], attempt))
            elif len(live) > 1:
                ids = ", ".join(p.remote_id for p in live)
                log.error("duplicate_payments_found", intent=intent.id, payments=ids)
                self._finish(
                    intent,
                    IntentState.CONFLICT,
                    "duplicate_payments",
                    f"the ledger holds {len(live)} payments with our reference: {ids}",
                    attempt=self._attempt(intent, "lookup", outcome="duplicates", message=ids),
                    remote_payment_id=live[0].remote_id,
                )
            elif payments:
                self._finish(
                    intent,
                    IntentState.CONFLICT,
                    "payment_deleted_in_ledger",
                    f"our payment {payments[0].remote_id} was deleted in the ledger; "
                    f"a person decides whether to pay again",
                    attempt=self._attempt(
                        intent, "lookup", outcome="found_deleted", remote=payments[0].remote_id
                    ),
                )
            else:
                unfound.append(intent)
        if applied:
            self._apply_many(applied, adapter)
        resend: list[tuple[PushBatch, list[PaymentIntent]]] = list(clean)
        again: list[PaymentIntent] = []
        unfound_by_batch: dict[str | None, list[PaymentIntent]] = {}
        for intent in unfound:
            unfound_by_batch.setdefault(intent.batch_id, []).append(intent)
        for unfound_batch_id, unfound_members in unfound_by_batch.items():
            members = unfound_members
            found_batch = batches.get(unfound_batch_id) if unfound_batch_id else None
            if (
                found_batch is not None
                and self._intact(found_batch, members)
                and self._batch_key_alive(found_batch, adapter)
            ):
                # Nothing of it landed and the provider still remembers the key: the
                # identical batch under the identical key cannot duplicate.
                with self.store.session() as s:
                    for intent in members:
                        self._guarded_update(s, intent, state=IntentState.SENDING.value)
                        self._insert_attempts(
                            s, [self._attempt(intent, "lookup", outcome="not_found")]
                        )
                resend.append((found_batch, self._ordered(found_batch, members)))
                continue
            for intent in members:
                self._new_key_version(intent, self._attempt(intent, "lookup", outcome="not_found"))
                again.append(intent)
        return resend, again

    def _load_batches(self, ids: set[str | None]) -> dict[str, PushBatch]:
        wanted = [i for i in ids if i]
        if not wanted:
            return {}
        with self.store.session() as s:
            rows = s.exec(select(PushBatch).where(col(PushBatch.id).in_(wanted))).all()
        return {row.id: row for row in rows}

    def _intact(self, batch: PushBatch, members: list[PaymentIntent]) -> bool:
        """Every member of the batch is in hand, none decided yet."""
        if len(members) != batch.size:
            return False
        return all(m.batch_id == batch.id for m in members)

    @staticmethod
    def _ordered(batch: PushBatch, members: list[PaymentIntent]) -> list[PaymentIntent]:
        order = json.loads(batch.members) if batch.members else []
        rank = {intent_id: n for n, intent_id in enumerate(order)}
        return sorted(members, key=lambda m: rank.get(m.id, len(rank)))

    def _batch_key_alive(self, batch: PushBatch, adapter: Adapter) -> bool:
        window = adapter.capabilities.key_window
        if window is None:
            return False
        if batch.first_sent_at is None:
            return True
        return self.clock.now() < batch.first_sent_at + window - KEY_WINDOW_SAFETY

    def _key_alive(self, intent: PaymentIntent, adapter: Adapter) -> bool:
        window = adapter.capabilities.key_window
        if window is None or intent.key_first_sent_at is None:
            return False
        return self.clock.now() < intent.key_first_sent_at + window - KEY_WINDOW_SAFETY

    # -- preflight: batched reads, the policy, the batch stored before it is sent -------
    def _read_documents(
        self, adapter: Adapter, intents: list[PaymentIntent]
    ) -> dict[tuple[str, str], DocumentSnapshot]:
        docs: dict[tuple[str, str], DocumentSnapshot] = {}
        by_kind: dict[str, dict[str, None]] = {}  # ordered sets
        for intent in intents:
            wanted = by_kind.setdefault(intent.document_type, {})
            for remote_id in _document_ids(intent):
                wanted[remote_id] = None
        batched = getattr(adapter, "get_documents", None)
        for kind, wanted in by_kind.items():
            ids = list(wanted)
            if batched is not None and len(ids) > 1:
                found: dict[str, DocumentSnapshot] = batched(ids, kind)
                for remote_id, doc in found.items():
                    docs[(kind, remote_id)] = doc
            else:
                for remote_id in ids:
                    with contextlib.suppress(DocumentNotFound):
                        docs[(kind, remote_id)] = adapter.get_document(remote_id, kind)
        return docs

    def _resolve(self, intent: PaymentIntent, adapter: Adapter) -> bool:
        """An intent stored while its document could not be read: read it now."""
        try:
            doc = adapter.get_document(intent.document_ref, intent.document_type)
        except DocumentNotFound as exc:
            self._finish(
                intent,
                IntentState.REJECTED,
                "document_not_found",
                exc.message,
                attempt=self._attempt(intent, "preflight", outcome=exc.code, message=exc.message),
            )
            return False
        try:
            amount = parse_amount(intent.amount, doc.currency)
        except AmountError as exc:
            amount = None
            problem = str(exc)
        if doc.currency != intent.currency or amount is None:
            message = (
                f"{intent.document_type} {intent.document_ref} is in {doc.currency}, the "
                f"allocation in {intent.currency}"
                if doc.currency != intent.currency
                else problem
            )
            self._finish(
                intent,
                IntentState.REJECTED,
                "currency_mismatch" if doc.currency != intent.currency else "invalid_amount",
                message,
                attempt=self._attempt(intent, "preflight", outcome="refused", message=message),
                doc=doc,
            )
            return False
        self._transition(
            intent,
            document_remote_id=doc.remote_id,
            document_number=doc.number,
            contact_remote_id=doc.contact_remote_id,
            preflight_balance=doc.balance,
        )
        return True

    def _preflight_many(
        self, intents: list[PaymentIntent], adapter: Adapter
    ) -> list[tuple[PushBatch, list[PaymentIntent]]]:
        ready = [i for i in intents if i.document_remote_id or self._resolve(i, adapter)]
        docs = self._read_documents(adapter, ready)
        unapplied_ok = bool(getattr(adapter.capabilities, "unapplied_credit", False))
        planned: dict[tuple[str, str], Decimal] = {}
        to_send: list[tuple[PaymentIntent, DocumentSnapshot, Decision, AttemptRow]] = []
        finals: list[tuple[PaymentIntent, IntentState, str, str, AttemptRow, DocumentSnapshot]] = []
        later: list[PaymentIntent] = []
        for intent in ready:
            assert intent.document_remote_id is not None
            key = (intent.document_type, intent.document_remote_id)
            doc = docs.get(key)
            if doc is None:
                message = (
                    f"no {intent.document_type} {intent.document_number or intent.document_ref} "
                    f"in the ledger any more"
                )
                self._finish(
                    intent,
                    IntentState.REJECTED,
                    "document_not_found",
                    message,
                    attempt=self._attempt(
                        intent, "preflight", outcome="document_not_found", message=message
                    ),
                )
                continue
            if intent.lines:
                outcome = self._decide_lines(intent, docs, planned, unapplied_ok)
                if outcome is None:
                    later.append(intent)
                    continue
                decision = outcome
                attempt = self._attempt(intent, "preflight", outcome="ok", message=decision.message)
                if decision.outcome == "send":
                    assert decision.lines is not None
                    for line in json.loads(decision.lines):
                        line_key = (intent.document_type, line["remote_id"])
                        planned[line_key] = planned.get(line_key, Decimal(0)) + Decimal(
                            line["send_amount"]
                        )
                    to_send.append((intent, doc, decision, attempt))
                else:
                    state = IntentState(decision.outcome)
                    finals.append(
                        (
                            intent,
                            state,
                            decision.code or state.value,
                            decision.message,
                            attempt,
                            doc,
                        )
                    )
                continue
            already = planned.get(key, Decimal(0))
            if already:
                # Another intent of this round pays the same document: decide against
                # what will be left, or wait for the next round's fresh read.
                remaining = doc.balance - already
                if quantize(intent.amount, doc.currency) > remaining:
                    later.append(intent)
                    continue
            decision = decide(
                amount=intent.amount,
                currency=intent.currency,
                doc=doc,
                document_type=intent.document_type,
                overpayment=intent.overpayment,
                accepted_balance=intent.preflight_balance,
                unapplied_credit=unapplied_ok,
            )
            note = f"{doc.provider_status}, balance {doc.balance} {doc.currency}"
            attempt = self._attempt(intent, "preflight", outcome="ok", message=note)
            if decision.outcome == "send":
                assert decision.send_amount is not None
                planned[key] = already + decision.send_amount
                to_send.append((intent, doc, decision, attempt))
            else:
                state = IntentState(decision.outcome)
                finals.append(
                    (intent, state, decision.code or state.value, decision.message, attempt, doc)
                )
        for intent, state, code, message, attempt, doc in finals:
            self._finish(intent, state, code, message, attempt=attempt, doc=doc)
        for intent in later:
            self._defer(intent, timedelta(0), "waiting_for_earlier_payment", "same document")
        if not to_send:
            return []
        conn = self.settings.connection(to_send[0][0].connection_id)
        size = adapter.capabilities.max_batch
        if conn.max_batch:
            size = min(size, conn.max_batch)
        solo = [t for t in to_send if t[0].id in self._solo]
        grouped = [t for t in to_send if t[0].id not in self._solo]
        chunks = [grouped[n : n + size] for n in range(0, len(grouped), size)]
        chunks.extend([t] for t in solo)
        with self.store.session() as session:  # every batch of the round: one transaction
            stored = self._store_batches(session, conn.reference_prefix, chunks)
        self._checkpoint("after_store")
        return stored

    def _decide_lines(
        self,
        intent: PaymentIntent,
        docs: dict[tuple[str, str], DocumentSnapshot],
        planned: dict[tuple[str, str], Decimal],
        unapplied_ok: bool,
    ) -> Decision | None:
        """The policy over every line of a multi-document allocation (None: wait a round).

        All lines paid → ``already_settled``; a line not payable or refused by the
        policy → ``rejected`` naming it; some lines paid by someone else and not
        others, or a balance moved under a line → ``conflict`` with the amounts.
        """
        assert intent.lines is not None
        lines: list[dict[str, Any]] = json.loads(intent.lines)
        decisions: list[tuple[dict[str, Any], Decision]] = []
        for line in lines:
            doc = docs.get((intent.document_type, line["remote_id"]))
            if doc is None:
                return Decision(
                    "rejected",
                    "document_not_found",
                    f"no {intent.document_type} {line['number'] or line['document']} in the "
                    f"ledger any more",
                )
            line_key = (intent.document_type, doc.remote_id)
            if planned.get(line_key) and Decimal(line["amount"]) > doc.balance - planned[line_key]:
                return None
            accepted = line.get("accepted_balance")
            decisions.append(
                (
                    line,
                    decide(
                        amount=Decimal(line["amount"]),
                        currency=intent.currency,
                        doc=doc,
                        document_type=intent.document_type,
                        overpayment="apply_up_to_balance"
                        if intent.overpayment == "apply_up_to_balance"
                        else "reject",
                        accepted_balance=Decimal(accepted) if accepted is not None else None,
                        unapplied_credit=unapplied_ok,
                    ),
                )
            )
        outcomes = {d.outcome for _line, d in decisions}
        if outcomes == {"already_settled"}:
            return Decision(
                "already_settled",
                "already_settled",
                f"all {len(lines)} documents are already paid; nothing sent",
            )
        for line, d in decisions:
            if d.outcome == "rejected":
                return Decision("rejected", d.code, f"{line['document']}: {d.message}")
        if "already_settled" in outcomes or "conflict" in outcomes:
            detail = "; ".join(
                f"{line['document']}: {d.message}" for line, d in decisions if d.outcome != "send"
            )
            return Decision(
                "conflict",
                "partly_settled" if "already_settled" in outcomes else "balance_moved",
                f"some documents of this payment moved since it was accepted ({detail}); "
                f"a person decides",
            )
        sends = []
        for line, d in decisions:
            assert d.send_amount is not None
            sends.append({**line, "send_amount": str(d.send_amount)})
        applied = sum((Decimal(line["send_amount"]) for line in sends), Decimal(0))
        parts = ", ".join(f"{line['send_amount']} to {line['document']}" for line in sends)
        if intent.overpayment == "leave_unapplied" and intent.amount > applied and not unapplied_ok:
            return Decision(
                "rejected",
                "unapplied_credit_not_supported",
                f"the amount {intent.amount} exceeds what the documents take ({applied}) and "
                f"this provider keeps no unapplied credit on a payment",
            )
        return Decision(
            "send",
            None,
            f"pay {applied} {intent.currency}: {parts}",
            applied,
            lines=json.dumps(sends),
        )

    def _store_batches(
        self,
        s: Any,
        prefix: str,
        chunks: list[list[tuple[PaymentIntent, DocumentSnapshot, Decision, AttemptRow]]],
    ) -> list[tuple[PushBatch, list[PaymentIntent]]]:
        """Store, then send: each batch's members, key, amounts and decision are durable
        (one set of statements for the whole round) before any call leaves."""
        now = self.clock.now()
        batches: list[tuple[PushBatch, list[PaymentIntent]]] = []
        rows: list[tuple[PaymentIntent, dict[str, Any]]] = []
        for chunk in chunks:
            batch_id = str(uuid.uuid4())
            members = [intent for intent, _doc, _decision, _attempt in chunk]
            key = members[0].provider_key if len(members) == 1 else f"{prefix}-b-{batch_id}"
            batch = PushBatch(
                id=batch_id,
                connection_id=members[0].connection_id,
                provider_key=key,
                size=len(members),
                members=json.dumps([m.id for m in members]),
                state="sending",
                worker=self.worker_id,
                created_at=now,
                first_sent_at=now,
                updated_at=now,
            )
            batches.append((batch, members))
            for intent, doc, decision, _attempt in chunk:
                rows.append(
                    (
                        intent,
                        {
                            "state": IntentState.SENDING.value,
                            "batch_id": batch_id,
                            "preflight_balance": doc.balance,
                            "preflight_row_version": doc.row_version,
                            "send_amount": decision.send_amount,
                            "lines": decision.lines or intent.lines,
                            "key_first_sent_at": intent.key_first_sent_at or now,
                            "reason_code": decision.code,
                            "reason_message": decision.message[:1024] if decision.code else None,
                            "updated_at": now,
                        },
                    )
                )
        ours = {intent.id for intent in self._guarded_many(s, rows)}
        stored: list[tuple[PushBatch, list[PaymentIntent]]] = []
        for batch, members in batches:
            kept = [m for m in members if m.id in ours]
            if not kept:
                continue
            if len(kept) != len(members):
                batch.size = len(kept)
                batch.members = json.dumps([m.id for m in kept])
            s.add(batch)
            stored.append((batch, kept))
        every = [item for chunk in chunks for item in chunk if item[0].id in ours]
        self._insert_attempts(s, [a for _i, _d, _c, a in every])
        if every:
            self._upsert_docs(s, every[0][0].connection_id, [d for _i, d, _c, _a in every])
        return stored

    # -- send: one call, per-item outcomes ------------------------------------------------
    def _call_batch(
        self, batch: PushBatch, members: list[PaymentIntent], adapter: Adapter
    ) -> list[ItemResult] | ConnectorError:
        """The call itself (runs in the connection's send threads): results or the error."""
        requests = [self._request(i) for i in members]
        try:
            return adapter.push_payments(requests, batch.provider_key)
        except ConnectorError as exc:
            return exc

    def _record_batch(
        self,
        batch: PushBatch,
        members: list[PaymentIntent],
        outcome: list[ItemResult] | ConnectorError,
        adapter: Adapter,
        applied: list[tuple[PaymentIntent, RemotePayment, AttemptRow]],
        done: list[PushBatch],
    ) -> list[PaymentIntent]:
        """Record a sent batch's outcomes; created payments are collected in ``applied``
        (recorded together for the round); return the members that need more."""
        key = batch.provider_key
        if isinstance(outcome, OutcomeUnknown):
            self._unknown_many(batch, members, outcome)
            return []
        if isinstance(outcome, StaleRowVersion):
            exc: ConnectorError = outcome
            results = [ItemResult(i.id, error=exc, status_code=exc.status_code) for i in members]
        elif isinstance(outcome, RateLimited | Transient | AuthExpired | AuthRevoked):
            self._refused_whole(batch, members, outcome)
            return []
        elif isinstance(outcome, ConnectorError):
            exc = outcome
            if len(members) == 1:
                results = [ItemResult(members[0].id, error=exc, status_code=exc.status_code)]
            else:
                # A refusal of the whole call names no member: send each alone.
                log.warning("batch_refused", batch=batch.id, error=exc.message)
                with self.store.session() as s:
                    for intent in members:
                        self._insert_attempts(
                            s,
                            [
                                self._attempt(
                                    intent,
                                    "send",
                                    outcome=exc.code,
                                    key=key,
                                    status=exc.status_code,
                                    message=exc.message,
                                )
                            ],
                        )
                self._close_batch(batch, "done")
                for intent in members:
                    self._solo.add(intent.id)
                    self._new_key_version(intent, None)
                return list(members)
        else:
            results = outcome
        by_id = {r.intent_id: r for r in results}
        had = len(applied)
        unknown: list[tuple[PaymentIntent, ConnectorError, AttemptRow]] = []
        more: list[PaymentIntent] = []
        for intent in members:
            result = by_id.get(intent.id)
            if result is None:
                err: ConnectorError = OutcomeUnknown(
                    f"no result for intent {intent.id} in the answer"
                )
                unknown.append(
                    (intent, err, self._attempt(intent, "send", outcome=err.code, key=key))
                )
                continue
            if result.payment is not None:
                attempt = self._attempt(
                    intent,
                    "send",
                    outcome="ok",
                    key=key,
                    status=result.status_code,
                    remote=result.payment.remote_id,
                )
                applied.append((intent, result.payment, attempt))
                continue
            err = result.error or OutcomeUnknown("no payment and no error in the answer")
            attempt = self._attempt(
                intent,
                "send",
                outcome=err.code,
                key=key,
                status=result.status_code,
                message=err.message,
                provider_code=err.provider_code,
            )
            if isinstance(err, OutcomeUnknown):
                unknown.append((intent, err, attempt))
            elif isinstance(err, AmountExceedsBalance | DocumentNotPayable):
                self._transition(intent, attempt=attempt, attempts=intent.attempts + 1)
                self._moved(intent, adapter, err)
            elif isinstance(err, StaleRowVersion):
                self._transition(intent, attempt=attempt, attempts=intent.attempts + 1)
                if self._redecide(intent, adapter) == "preflight":
                    more.append(intent)
            else:
                self._finish(
                    intent,
                    IntentState.REJECTED,
                    err.code,
                    err.message,
                    attempt=attempt,
                    attempts=intent.attempts + 1,
                )
        if len(applied) > had:
            done.append(batch)
        else:
            self._close_batch(batch, "done")
        for intent, err, attempt in unknown:
            self._unknown(intent, err, attempt)
        return more

    def _close_batch(self, batch: PushBatch, state: str) -> None:
        with self.store.session() as s:
            s.execute(
                sa.update(PushBatch)
                .where(col(PushBatch.id) == batch.id)
                .values(state=state, sends=batch.sends + 1, updated_at=self.clock.now())
            )
        batch.state = state
        batch.sends += 1

    def _unknown_many(
        self, batch: PushBatch, members: list[PaymentIntent], exc: ConnectorError
    ) -> None:
        self._close_batch(batch, "sent")
        for intent in members:
            self._unknown(
                intent,
                exc,
                self._attempt(
                    intent,
                    "send",
                    outcome=exc.code,
                    key=batch.provider_key,
                    status=exc.status_code,
                    message=exc.message,
                ),
            )

    def _refused_whole(
        self, batch: PushBatch, members: list[PaymentIntent], exc: ConnectorError
    ) -> None:
        """The call was refused before the provider processed it (429, outage, token)."""
        delay = timedelta(seconds=getattr(exc, "retry_after", None) or 5.0)
        if isinstance(exc, AuthRevoked):
            delay = PARKED_RETRY
        # A batch every earlier send of which was refused the same way holds nothing
        # that may have landed: it stays "open" and is resent as it is, no lookup.
        clean = (
            isinstance(exc, RateLimited | AuthExpired | AuthRevoked)
            and batch.state in ("sending", "open")
            and not self._ever_unknown(batch)
        )
        now = self.clock.now()
        with self.store.session() as s:
            s.execute(
                sa.update(PushBatch)
                .where(col(PushBatch.id) == batch.id)
                .values(state="open" if clean else "sent", sends=batch.sends + 1, updated_at=now)
            )
            for intent in members:
                self._insert_attempts(
                    s,
                    [
                        self._attempt(
                            intent,
                            "send",
                            outcome=exc.code,
                            key=batch.provider_key,
                            status=exc.status_code,
                            message=exc.message,
                        )
                    ],
                )
                try:
                    self._guarded_update(
                        s,
                        intent,
                        state=IntentState.SENDING.value if clean else IntentState.UNKNOWN.value,
                        attempts=intent.attempts + 1,
                        reason_code=exc.code,
                        reason_message=exc.message[:1024],
                        lease_owner=None,
                        lease_expires_at=None,
                        next_attempt_at=now + delay,
                        updated_at=now,
                    )
                except LeaseLost:
                    log.warning("lease_lost", intent=intent.id)
        batch.state = "open" if clean else "sent"
        batch.sends += 1
        log.warning(
            "batch_refused_retry_later",
            batch=batch.id,
            size=len(members),
            error=exc.code,
            retry_in=delay.total_seconds(),
        )

    def _ever_unknown(self, batch: PushBatch) -> bool:
        return batch.state == "sent"

    def _moved(self, intent: PaymentIntent, adapter: Adapter, err: ConnectorError) -> str:
        """The ledger refused because the document moved: ours, someone else's, or void?"""
        mine = [p for p in adapter.find_payment(self._request(intent)) if p.status != "deleted"]
        if mine:
            attempt = self._attempt(intent, "lookup", outcome="found", remote=mine[0].remote_id)
            self._apply(intent, mine[0], attempt, adapter)
            return "done"
        assert intent.document_remote_id is not None
        if intent.lines:
            # Several documents: the provider refused the payment as a whole; which line
            # moved is in its message. A person decides (nothing was applied).
            self._finish(
                intent,
                IntentState.CONFLICT,
                "balance_moved",
                f"the ledger refused the payment over {len(json.loads(intent.lines))} documents "
                f"because one moved since preflight: {err.message}",
                attempt=self._attempt(intent, "lookup", outcome="not_found"),
            )
            return "done"
        try:
            doc = adapter.get_document(intent.document_remote_id, intent.document_type)
        except DocumentNotFound as exc:
            self._finish(
                intent,
                IntentState.REJECTED,
                exc.code,
                f"the {intent.document_type} was deleted before the payment landed: {exc.message}",
                attempt=self._attempt(intent, "preflight", outcome=exc.code, message=exc.message),
            )
            return "done"
        attempt = self._attempt(
            intent,
            "preflight",
            outcome="ok",
            message=f"{doc.provider_status}, balance {doc.balance} after refusal",
        )
        what = f"{intent.document_type} {doc.number or doc.remote_id}"
        if doc.status == "paid":
            self._finish(
                intent,
                IntentState.ALREADY_SETTLED,
                "already_settled",
                f"{what} was paid by someone else between preflight and send",
                attempt=attempt,
                doc=doc,
            )
        elif not doc.payable:
            self._finish(
                intent,
                IntentState.REJECTED,
                "document_not_payable",
                f"{what} became {doc.provider_status} before the payment landed",
                attempt=attempt,
                doc=doc,
            )
        else:
            self._finish(
                intent,
                IntentState.CONFLICT,
                "balance_moved",
                f"{what} balance is now {doc.balance} {doc.currency}, below the allocation "
                f"of {_fmt(intent.amount, doc.currency)} (was "
                f"{_fmt(intent.preflight_balance, doc.currency)}): {err.message}",
                attempt=attempt,
                doc=doc,
            )
        return "done"

    def _redecide(self, intent: PaymentIntent, adapter: Adapter) -> str:
        """The document changed under the request (stale row version): never a blind retry.

        Look for our payment first; if it is not there, decide again from a fresh
        read under a new key version (the provider may have cached the refusal
        under the old key).
        """
        found = [p for p in adapter.find_payment(self._request(intent)) if p.status != "deleted"]
        if found:
            attempt = self._attempt(intent, "lookup", outcome="found", remote=found[0].remote_id)
            self._apply(intent, found[0], attempt, adapter)
            return "done"
        return self._new_key_version(intent, self._attempt(intent, "lookup", outcome="not_found"))

    def _new_key_version(self, intent: PaymentIntent, attempt: AttemptRow | None) -> str:
        """Leave the batch, mint the next key version, and decide again from a fresh read."""
        version = intent.key_version + 1
        prefix = self.settings.connection(intent.connection_id).reference_prefix
        self._transition(
            intent,
            attempt=attempt,
            state=IntentState.CLAIMED.value,
            key_version=version,
            provider_key=self._provider_key(prefix, intent.id, version),
            key_first_sent_at=None,
            batch_id=None,
            send_amount=None,
        )
        return "preflight"

    def _apply(
        self, intent: PaymentIntent, payment: RemotePayment, attempt: AttemptRow, adapter: Adapter
    ) -> None:
        self._apply_many([(intent, payment, attempt)], adapter)

    def _apply_many(
        self,
        applied: list[tuple[PaymentIntent, RemotePayment, AttemptRow]],
        adapter: Adapter,
        *,
        batches: Sequence[PushBatch] = (),
    ) -> None:
        """Record payments found or created: intents, attempts, unified rows, events; one
        transaction."""
        now = self.clock.now()
        done: list[tuple[PaymentIntent, RemotePayment]] = []
        with self.store.session() as s:
            for batch in batches:
                s.execute(
                    sa.update(PushBatch)
                    .where(col(PushBatch.id) == batch.id)
                    .values(state="done", sends=batch.sends + 1, updated_at=now)
                )
            kept_reason = ("applied_up_to_balance", "left_unapplied")
            rows = [
                (
                    intent,
                    {
                        "state": IntentState.APPLIED.value,
                        "remote_payment_id": payment.remote_id,
                        "attempts": intent.attempts + 1,
                        "reason_code": intent.reason_code
                        if intent.reason_code in kept_reason
                        else None,
                        "reason_message": intent.reason_message
                        if intent.reason_code in kept_reason
                        else None,
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "updated_at": now,
                    },
                )
                for intent, payment, _attempt in applied
            ]
            ours = {intent.id for intent in self._guarded_many(s, rows)}
            self._insert_attempts(s, [a for i, _p, a in applied if i.id in ours])
            for intent, payment, _attempt in applied:
                if intent.id not in ours:
                    continue
                if self._events_on:
                    record_event(
                        s,
                        self.settings,
                        "allocation.applied",
                        data=intent_as_dict(intent),
                        connection_id=intent.connection_id,
                        intent_id=intent.id,
                    )
                done.append((intent, payment))
            self._record_payments(s, done, now)
        for batch in batches:
            batch.state = "done"
            batch.sends += 1
        for intent, payment in done:
            log.info("intent_applied", intent=intent.id, payment=payment.remote_id)
        if not done:
            return
        self._checkpoint("after_apply")
        if self.settings.connection(done[0][0].connection_id).confirm_reads:
            self._confirm_many([intent for intent, _payment in done], adapter)

    def _record_payments(
        self, session: Any, done: list[tuple[PaymentIntent, RemotePayment]], now: datetime
    ) -> None:
        """Upsert the unified ``payment`` rows (and their allocations) of applied intents."""
        by_conn: dict[str, list[tuple[PaymentIntent, RemotePayment, dict[str, Any]]]] = {}
        for intent, payment in done:
            record = dict(payment.record)
            if not record.get("remote_id"):
                continue
            record.setdefault("currency", intent.currency)
            record.setdefault(
                "type",
                "accounts_payable" if intent.document_type == "bill" else "accounts_receivable",
            )
            by_conn.setdefault(intent.connection_id, []).append((intent, payment, record))
        for conn_id, rows in by_conn.items():
            upsert_records(session, Payment, conn_id, [r for _i, _p, r in rows], now)
            remote_ids = [p.remote_id for _i, p, _r in rows]
            pks = dict(
                session.execute(
                    sa.select(col(Payment.remote_id), col(Payment.id)).where(
                        col(Payment.connection_id) == conn_id,
                        col(Payment.remote_id).in_(remote_ids),
                    )
                ).all()
            )
            session.execute(
                sa.delete(PaymentAllocation).where(
                    col(PaymentAllocation.payment_pk).in_(list(pks.values()))
                )
            )
            seen: set[int] = set()
            for intent, payment, _record in rows:
                pk = pks.get(payment.remote_id)
                if pk is None or pk in seen:
                    continue
                seen.add(pk)
                allocations = payment.record.get("allocations") or []
                if intent.lines and allocations:
                    for allocation in allocations:
                        session.add(
                            PaymentAllocation(
                                payment_pk=pk,
                                id=str(allocation.get("id") or ""),
                                type=intent.document_type,
                                amount=to_decimal(allocation.get("amount") or 0),
                            )
                        )
                    continue
                session.add(
                    PaymentAllocation(
                        payment_pk=pk,
                        id=payment.document_remote_id or (intent.document_remote_id or ""),
                        type=intent.document_type,
                        amount=payment.amount,
                    )
                )

    def _confirm(self, intent: PaymentIntent, adapter: Adapter) -> None:
        self._confirm_many([intent], adapter)

    def _confirm_many(self, intents: list[PaymentIntent], adapter: Adapter) -> None:
        """Read the documents back; record their new balances (best effort: already applied)."""
        try:
            docs = self._read_documents(adapter, intents)
        except ConnectorError as exc:
            log.warning("confirm_read_failed", intents=len(intents), error=exc.code)
            return
        now = self.clock.now()
        updates: list[dict[str, Any]] = []
        attempts: list[AttemptRow] = []
        fresh: list[DocumentSnapshot] = []
        for intent in intents:
            assert intent.document_remote_id is not None
            doc = docs.get((intent.document_type, intent.document_remote_id))
            if doc is None:
                continue
            fresh.extend(
                d
                for d in (docs.get((intent.document_type, r)) for r in _document_ids(intent))
                if d is not None
            )
            updates.append(
                {"b_id": intent.id, "v_balance": doc.balance, "v_status": doc.provider_status}
            )
            attempts.append(
                self._attempt(
                    intent,
                    "confirm",
                    outcome="ok",
                    message=f"{doc.provider_status}, balance {doc.balance} {doc.currency}",
                )
            )
            intent.result_balance, intent.result_status = doc.balance, doc.provider_status
            sent = intent.send_amount if intent.send_amount is not None else intent.amount
            expected_max = (intent.preflight_balance or doc.total) - sent
            if not intent.lines and doc.balance > expected_max:
                # Pair assertion: the ledger must show at least our payment.
                log.error(
                    "confirm_balance_mismatch",
                    intent=intent.id,
                    balance=str(doc.balance),
                    expected_at_most=str(expected_max),
                )
        if not updates:
            return
        table = PaymentIntent.__table__  # type: ignore[attr-defined]
        with self.store.session() as s:
            s.connection().execute(
                sa.update(table)
                .where(table.c.id == sa.bindparam("b_id"))
                .values(
                    result_balance=sa.bindparam("v_balance"),
                    result_status=sa.bindparam("v_status"),
                    updated_at=now,
                ),
                updates,
            )
            self._insert_attempts(s, attempts)
            self._upsert_docs(s, intents[0].connection_id, fresh)

    def _unknown(
        self, intent: PaymentIntent, exc: ConnectorError, attempt: AttemptRow | None = None
    ) -> None:
        if attempt is None:
            attempt = self._attempt(
                intent,
                "send",
                outcome=exc.code,
                key=intent.provider_key,
                status=exc.status_code,
                message=exc.message,
            )
        delay = min(UNKNOWN_BACKOFF_MAX, UNKNOWN_BACKOFF_FIRST * 2 ** min(intent.attempts, 10))
        self._transition(
            intent,
            attempt=attempt,
            state=IntentState.UNKNOWN.value,
            attempts=intent.attempts + 1,
            reason_code=exc.code,
            reason_message=exc.message,
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=self.clock.now() + timedelta(seconds=delay),
        )
        log.warning("intent_outcome_unknown", intent=intent.id, error=exc.message, retry_in=delay)

    # -- transactions ------------------------------------------------------------------
    def _attempt(
        self,
        intent: PaymentIntent,
        phase: str,
        *,
        outcome: str,
        key: str | None = None,
        status: int | None = None,
        message: str | None = None,
        remote: str | None = None,
        provider_code: str | None = None,
    ) -> AttemptRow:
        return AttemptRow(
            intent_id=intent.id,
            at=self.clock.now(),
            phase=phase,
            outcome=outcome,
            idempotency_key=key,
            status_code=status,
            message=(message or None) and message[:1024],
            remote_payment_id=remote,
            provider_code=provider_code,
            worker=self.worker_id,
        )

    def _attempt_now(self, intent: PaymentIntent, phase: str, **kw: Any) -> None:
        with self.store.session() as s:
            self._insert_attempts(s, [self._attempt(intent, phase, **kw)])

    def _guarded_update(self, session: Any, intent: PaymentIntent, **changes: Any) -> None:
        result = session.execute(
            sa.update(PaymentIntent)
            .where(
                col(PaymentIntent.id) == intent.id, col(PaymentIntent.lease_owner) == self.worker_id
            )
            .values(**changes)
        )
        if result.rowcount != 1:
            raise LeaseLost(intent.id)
        for name, value in changes.items():
            setattr(intent, name, value)

    def _guarded_many(
        self, session: Any, rows: list[tuple[PaymentIntent, dict[str, Any]]]
    ) -> list[PaymentIntent]:
        """Apply per-intent changes (same columns for every row) in one executemany,
        guarded by this worker's lease; return the intents updated.

        When some lease was lost, the statement is undone row by row: the guarded
        single updates then tell which intents are still ours.
        """
        if not rows:
            return []
        table = PaymentIntent.__table__  # type: ignore[attr-defined]
        names = list(rows[0][1])
        stmt = (
            sa.update(table)
            .where(
                table.c.id == sa.bindparam("b_id"),
                table.c.lease_owner == sa.bindparam("b_owner"),
            )
            .values({name: sa.bindparam(f"v_{name}") for name in names})
        )
        params = [
            {"b_id": i.id, "b_owner": self.worker_id, **{f"v_{k}": v for k, v in ch.items()}}
            for i, ch in rows
        ]
        nested = session.begin_nested()
        result = session.connection().execute(stmt, params)
        if result.rowcount == len(rows):
            nested.commit()
            for intent, changes in rows:
                # Detached rows: set the loaded values directly (no change tracking
                # is wanted; the database has them already).
                vars(intent).update(changes)
            return [intent for intent, _changes in rows]
        nested.rollback()
        kept: list[PaymentIntent] = []
        for intent, changes in rows:
            try:
                self._guarded_update(session, intent, **changes)
            except LeaseLost:
                log.warning("lease_lost", intent=intent.id)
                continue
            kept.append(intent)
        return kept

    @staticmethod
    def _insert_attempts(session: Any, attempts: list[AttemptRow]) -> None:
        """Append attempt rows in one executemany."""
        if not attempts:
            return
        table = Attempt.__table__  # type: ignore[attr-defined]
        rows = [dict(vars(a)) for a in attempts]
        session.connection().execute(sa.insert(table), rows)

    def _upsert_docs(self, session: Any, connection_id: str, docs: list[DocumentSnapshot]) -> None:
        """Mirror fresh document reads (invoices and bills), once per document."""
        by_model: dict[type[Any], dict[str, dict[str, Any]]] = {}
        for doc in docs:
            model = Bill if doc.kind == "bill" else Invoice
            by_model.setdefault(model, {})[doc.remote_id] = doc.record
        for model, records in by_model.items():
            upsert_records(session, model, connection_id, list(records.values()), self.clock.now())

    def _transition(
        self,
        intent: PaymentIntent,
        *,
        attempt: AttemptRow | None = None,
        doc: DocumentSnapshot | None = None,
        event: str | None = None,
        **changes: Any,
    ) -> None:
        changes.setdefault("updated_at", self.clock.now())
        with self.store.session() as s:
            self._guarded_update(s, intent, **changes)
            if attempt is not None:
                self._insert_attempts(s, [attempt])
            if doc is not None:
                self._upsert_doc(s, intent, doc)
            if event is not None:
                record_event(
                    s,
                    self.settings,
                    event,
                    data=intent_as_dict(intent),
                    connection_id=intent.connection_id,
                    intent_id=intent.id,
                )

    def _finish(
        self,
        intent: PaymentIntent,
        state: IntentState,
        code: str,
        message: str,
        *,
        attempt: AttemptRow | None = None,
        doc: DocumentSnapshot | None = None,
        **extra: Any,
    ) -> None:
        self._transition(
            intent,
            attempt=attempt,
            doc=doc,
            event=f"allocation.{state.value}",
            state=state.value,
            reason_code=code,
            reason_message=message[:1024],
            lease_owner=None,
            lease_expires_at=None,
            result_balance=doc.balance if doc else intent.result_balance,
            result_status=doc.provider_status if doc else intent.result_status,
            **extra,
        )
        log.info("intent_final", intent=intent.id, state=state.value, reason=code)

    def _defer(self, intent: PaymentIntent, delay: timedelta, code: str, message: str) -> None:
        try:
            self._transition(
                intent,
                reason_code=code,
                reason_message=message[:1024],
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=self.clock.now() + delay,
                state=IntentState.PENDING.value
                if intent.state == IntentState.CLAIMED.value
                else intent.state,
            )
        except LeaseLost:
            log.warning("lease_lost", intent=intent.id)

    def _release(self, intent: PaymentIntent) -> None:
        self._defer(
            intent, timedelta(0), intent.reason_code or "released", intent.reason_message or ""
        )

    def _upsert_doc(self, session: Any, intent: PaymentIntent, doc: DocumentSnapshot) -> None:
        model = Bill if doc.kind == "bill" else Invoice
        upsert_records(session, model, intent.connection_id, [doc.record], self.clock.now())

    def _sent_with_key(self, intent: PaymentIntent) -> bool:
        with self.store.session() as s:
            return (
                s.exec(
                    select(sa.func.count())
                    .select_from(Attempt)
                    .where(
                        Attempt.intent_id == intent.id,
                        Attempt.phase == "send",
                        Attempt.idempotency_key == intent.provider_key,
                    )
                ).one()
                > 0
            )


def unapplied_amount(intent: PaymentIntent) -> Decimal:
    """What an intent sends on top of what it applies (``leave_unapplied``)."""
    if intent.overpayment != "leave_unapplied" or intent.send_amount is None:
        return Decimal(0)
    return max(Decimal(0), intent.amount - intent.send_amount)


def payment_request(intent: PaymentIntent) -> PaymentRequest:
    """The payment an intent sends (and is looked up by): amounts as decided at preflight."""
    assert intent.document_remote_id is not None
    request = PaymentRequest(
        intent_id=intent.id,
        document_remote_id=intent.document_remote_id,
        amount=intent.send_amount if intent.send_amount is not None else intent.amount,
        currency=intent.currency,
        transaction_date=intent.transaction_date,
        reference=intent.reference,
        account_code=intent.account_code,
        currency_rate=intent.currency_rate,
        document_type=intent.document_type,
        contact_remote_id=intent.contact_remote_id,
        provider_key=intent.provider_key,
    )
    if intent.lines:
        sends = [
            PaymentLine(line["remote_id"], Decimal(line.get("send_amount") or line["amount"]))
            for line in json.loads(intent.lines)
        ]
        sends = [line for line in sends if line.amount > 0]
        request = replace(
            request,
            lines=tuple(sends),
            document_remote_id=sends[0].document_remote_id,
            amount=sum((line.amount for line in sends), Decimal(0)),
        )
    unapplied = unapplied_amount(intent)
    if unapplied:
        request = replace(request, unapplied=unapplied)
    return request


def _document_ids(intent: PaymentIntent) -> list[str]:
    """The remote ids of every document an intent pays."""
    if intent.lines:
        return [line["remote_id"] for line in json.loads(intent.lines) if line.get("remote_id")]
    return [intent.document_remote_id] if intent.document_remote_id else []


def _fmt(value: Decimal | None, currency: str) -> str:
    return "?" if value is None else str(quantize(value, currency))


def intent_as_dict(intent: PaymentIntent) -> dict[str, Any]:
    """A JSON-ready view of an intent (amounts as strings, times ISO)."""
    out: dict[str, Any] = {}
    for name in PaymentIntent.model_fields:
        value = getattr(intent, name)
        if isinstance(value, Decimal):
            value = str(quantize(value, intent.currency))
        elif isinstance(value, datetime | date):
            value = value.isoformat()
        out[name] = value
    out.pop("lease_owner", None)
    return out
