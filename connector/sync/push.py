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
from dataclasses import dataclass
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
    PaymentRequest,
    RemotePayment,
    build_adapter,
)
from connector.clock import Clock, SystemClock
from connector.config import ConfigError, Settings
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
from connector.logging import get_logger
from connector.money import AmountError, minor_units, parse_amount, quantize, to_decimal
from connector.schema import Bill, Invoice, Payment, PaymentAllocation
from connector.state import TERMINAL, Attempt, ConnectionRecord, IntentState, PaymentIntent
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
    ) -> PaymentIntent:
        """Validate an allocation and build its intent, without storing anything.

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
        if request.lines:
            raise IntakeError(
                "not_supported",
                "allocations over several documents are not accepted by this version yet; "
                "send one allocation per document",
            )
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
        doc: DocumentSnapshot | None
        try:
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
            document_ref=request.document.strip(),
            document_remote_id=doc.remote_id if doc else None,
            document_number=doc.number if doc else None,
            contact_remote_id=doc.contact_remote_id if doc else None,
            amount=amount,
            currency=doc_currency,
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
        limit: int = 25,
    ) -> Counter[str]:
        """Claim due intents and drive each as far as it can go now.

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
            limit=limit,
            connection_ids=connection_ids,
            intent_ids=intent_ids,
        )
        for intent in claimed:
            if self._stop.is_set():
                self._release(intent)
                continue
            self._checkpoint("after_claim")
            try:
                self._process(intent)
            except LeaseLost:
                log.warning("lease_lost", intent=intent.id)
                continue
            except SimulatedCrash:
                raise
            except Exception as exc:  # a bug or an odd response: park the intent, go on
                log.exception("intent_failed", intent=intent.id, error=repr(exc))
                self._defer(intent, timedelta(seconds=60), "internal_error", repr(exc)[:500])
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
        with self.store.session() as s:
            rows = {
                i.id: i
                for i in s.exec(
                    select(PaymentIntent).where(col(PaymentIntent.id).in_(intent_ids))
                ).all()
            }
        return [rows[i] for i in intent_ids if i in rows]

    # -- the state machine ------------------------------------------------------------
    def _process(self, intent: PaymentIntent) -> None:
        with self.store.session() as s:
            conn = s.get(ConnectionRecord, intent.connection_id)
        if conn is not None and conn.status == "needs_reauth":
            self._defer(intent, PARKED_RETRY, "connection_parked", conn.status_reason or "")
            return
        adapter = self.adapter(intent.connection_id)
        step = {
            IntentState.CLAIMED.value: "preflight",
            IntentState.SENDING.value: "reconcile",  # a crashed worker's send: look first
            IntentState.UNKNOWN.value: "reconcile",
        }.get(intent.state)
        if step is None:
            raise AssertionError(f"claimed intent {intent.id} in state {intent.state}")
        for _ in range(MAX_STEPS_PER_CLAIM):
            try:
                if step == "preflight":
                    step = self._preflight(intent, adapter)
                elif step == "send":
                    step = self._send(intent, adapter)
                elif step == "reconcile":
                    step = self._reconcile(intent, adapter)
                elif step == "done":
                    return
                else:
                    raise AssertionError(f"unknown push step {step!r}")
            except (RateLimited, Transient, AuthExpired) as exc:
                delay = getattr(exc, "retry_after", None) or 5.0
                self._defer(intent, timedelta(seconds=delay), exc.code, exc.message)
                return
            except AuthRevoked as exc:
                self._defer(intent, PARKED_RETRY, exc.code, exc.message)
                return
        self._defer(intent, timedelta(seconds=5), "too_many_steps", "will continue")

    def _request(self, intent: PaymentIntent) -> PaymentRequest:
        assert intent.document_remote_id is not None
        return PaymentRequest(
            intent_id=intent.id,
            document_remote_id=intent.document_remote_id,
            amount=intent.amount,
            currency=intent.currency,
            transaction_date=intent.transaction_date,
            reference=intent.reference,
            account_code=intent.account_code,
            currency_rate=intent.currency_rate,
            document_type=intent.document_type,
            contact_remote_id=intent.contact_remote_id,
            provider_key=intent.provider_key,
        )

    def _preflight(self, intent: PaymentIntent, adapter: Adapter) -> str:
        assert intent.document_remote_id is not None
        try:
            doc = adapter.get_document(intent.document_remote_id, intent.document_type)
        except DocumentNotFound as exc:
            self._finish(
                intent,
                IntentState.REJECTED,
                exc.code,
                exc.message,
                attempt=self._attempt(intent, "preflight", outcome=exc.code, message=exc.message),
            )
            return "done"
        amount = quantize(intent.amount, doc.currency)
        what = f"{intent.document_type} {doc.number or doc.remote_id}"
        note = f"{doc.provider_status}, balance {doc.balance} {doc.currency}"
        attempt = self._attempt(intent, "preflight", outcome="ok", message=note)
        if doc.status == "paid" or (doc.payable and doc.balance == 0):
            self._finish(
                intent,
                IntentState.ALREADY_SETTLED,
                "already_settled",
                f"{what} is already paid in the ledger ({note}); nothing sent",
                attempt=attempt,
                doc=doc,
            )
            return "done"
        if not doc.payable:
            self._finish(
                intent,
                IntentState.REJECTED,
                "document_not_payable",
                f"{what} is {doc.provider_status}; only approved (AUTHORISED) documents "
                f"take payments",
                attempt=attempt,
                doc=doc,
            )
            return "done"
        if doc.currency != intent.currency:
            self._finish(
                intent,
                IntentState.REJECTED,
                "currency_mismatch",
                f"{what} is now in {doc.currency}, the allocation in {intent.currency}",
                attempt=attempt,
                doc=doc,
            )
            return "done"
        if amount > doc.balance:
            self._finish(
                intent,
                IntentState.REJECTED,
                "amount_exceeds_balance",
                f"amount {amount} exceeds the open balance {doc.balance} {doc.currency} of {what}",
                attempt=attempt,
                doc=doc,
            )
            return "done"
        # Store, then send: the key, the reference and the decision are durable
        # before anything leaves. The window starts now, at or before the send.
        now = self.clock.now()
        self._transition(
            intent,
            attempt=attempt,
            doc=doc,
            state=IntentState.SENDING.value,
            preflight_balance=doc.balance,
            preflight_row_version=doc.row_version,
            key_first_sent_at=intent.key_first_sent_at or now,
            reason_code=None,
            reason_message=None,
        )
        self._checkpoint("after_store")
        return "send"

    def _key_alive(self, intent: PaymentIntent, adapter: Adapter) -> bool:
        window = adapter.capabilities.key_window
        if window is None or intent.key_first_sent_at is None:
            return False
        return self.clock.now() < intent.key_first_sent_at + window - KEY_WINDOW_SAFETY

    def _send(self, intent: PaymentIntent, adapter: Adapter) -> str:
        if self._sent_with_key(intent) and not self._key_alive(intent, adapter):
            # The provider has forgotten this key: only a lookup may decide now.
            return "reconcile"
        request = self._request(intent)
        try:
            results = adapter.push_payments([request], intent.provider_key)
        except OutcomeUnknown as exc:
            self._unknown(intent, exc)
            return "done"
        except StaleRowVersion as exc:
            self._attempt_now(
                intent,
                "send",
                outcome=exc.code,
                message=exc.message,
                key=intent.provider_key,
                status=exc.status_code,
            )
            self._transition(intent, attempts=intent.attempts + 1)
            return self._redecide(intent, adapter)
        except (RateLimited, Transient, AuthExpired, AuthRevoked) as exc:
            # Not applied, but an earlier send of this intent may have been:
            # from here on it is reconciled before anything else.
            self._attempt_now(
                intent,
                "send",
                outcome=exc.code,
                message=exc.message,
                key=intent.provider_key,
                status=exc.status_code,
            )
            self._transition(intent, state=IntentState.UNKNOWN.value, attempts=intent.attempts + 1)
            raise
        except ConnectorError as exc:
            # A whole-call refusal (e.g. a 400 for the one payment in it) is that
            # payment's answer: decide it like a per-item error below.
            results = [ItemResult(intent.id, error=exc, status_code=exc.status_code)]
        result = results[0]
        self._checkpoint("after_send")
        if result.payment is not None:
            attempt = self._attempt(
                intent,
                "send",
                outcome="ok",
                key=intent.provider_key,
                status=result.status_code,
                remote=result.payment.remote_id,
            )
            self._apply(intent, result.payment, attempt, adapter)
            return "done"
        err = result.error
        assert err is not None
        attempt = self._attempt(
            intent,
            "send",
            outcome=err.code,
            key=intent.provider_key,
            status=result.status_code,
            message=err.message,
            provider_code=err.provider_code,
        )
        if isinstance(err, OutcomeUnknown):
            self._unknown(intent, err, attempt)
            return "done"
        if isinstance(err, AmountExceedsBalance | DocumentNotPayable):
            self._transition(intent, attempt=attempt, attempts=intent.attempts + 1)
            return self._moved(intent, adapter, err)
        if isinstance(err, StaleRowVersion):
            self._transition(intent, attempt=attempt, attempts=intent.attempts + 1)
            return self._redecide(intent, adapter)
        self._finish(
            intent,
            IntentState.REJECTED,
            err.code,
            err.message,
            attempt=attempt,
            attempts=intent.attempts + 1,
        )
        return "done"

    def _moved(self, intent: PaymentIntent, adapter: Adapter, err: ConnectorError) -> str:
        """The ledger refused because the document moved: ours, someone else's, or void?"""
        mine = [p for p in adapter.find_payment(self._request(intent)) if p.status != "deleted"]
        if mine:
            attempt = self._attempt(intent, "lookup", outcome="found", remote=mine[0].remote_id)
            self._apply(intent, mine[0], attempt, adapter)
            return "done"
        assert intent.document_remote_id is not None
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

    def _new_key_version(self, intent: PaymentIntent, attempt: Attempt) -> str:
        version = intent.key_version + 1
        prefix = self.settings.connection(intent.connection_id).reference_prefix
        self._transition(
            intent,
            attempt=attempt,
            state=IntentState.CLAIMED.value,
            key_version=version,
            provider_key=self._provider_key(prefix, intent.id, version),
            key_first_sent_at=None,
        )
        return "preflight"

    def _reconcile(self, intent: PaymentIntent, adapter: Adapter) -> str:
        found = adapter.find_payment(self._request(intent))
        live = [p for p in found if p.status != "deleted"]
        if len(live) == 1:
            attempt = self._attempt(intent, "lookup", outcome="found", remote=live[0].remote_id)
            self._apply(intent, live[0], attempt, adapter)
            return "done"
        if len(live) > 1:
            ids = ", ".join(p.remote_id for p in live)
            attempt = self._attempt(intent, "lookup", outcome="duplicates", message=ids)
            log.error("duplicate_payments_found", intent=intent.id, payments=ids)
            self._finish(
                intent,
                IntentState.CONFLICT,
                "duplicate_payments",
                f"the ledger holds {len(live)} payments with our reference: {ids}",
                attempt=attempt,
                remote_payment_id=live[0].remote_id,
            )
            return "done"
        if found:
            attempt = self._attempt(
                intent, "lookup", outcome="found_deleted", remote=found[0].remote_id
            )
            self._finish(
                intent,
                IntentState.CONFLICT,
                "payment_deleted_in_ledger",
                f"our payment {found[0].remote_id} was deleted in the ledger; "
                f"a person decides whether to pay again",
                attempt=attempt,
            )
            return "done"
        attempt = self._attempt(intent, "lookup", outcome="not_found")
        if self._key_alive(intent, adapter):
            # The provider still remembers the key: resending it cannot duplicate.
            self._transition(intent, attempt=attempt, state=IntentState.SENDING.value)
            return "send"
        # The key is gone: mint a new version and decide again from a fresh read.
        return self._new_key_version(intent, attempt)

    def _apply(
        self, intent: PaymentIntent, payment: RemotePayment, attempt: Attempt, adapter: Adapter
    ) -> None:
        now = self.clock.now()
        record = dict(payment.record)
        with self.store.session() as s:
            self._guarded_update(
                s,
                intent,
                state=IntentState.APPLIED.value,
                remote_payment_id=payment.remote_id,
                attempts=intent.attempts + 1,
                reason_code=None,
                reason_message=None,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
            s.add(attempt)
            if record.get("remote_id"):
                record.setdefault("currency", intent.currency)
                record.setdefault(
                    "type",
                    "accounts_payable" if intent.document_type == "bill" else "accounts_receivable",
                )
                upsert_records(s, Payment, intent.connection_id, [record], now)
                pk = s.exec(
                    select(Payment.id).where(
                        Payment.connection_id == intent.connection_id,
                        Payment.remote_id == payment.remote_id,
                    )
                ).one()
                s.execute(
                    sa.delete(PaymentAllocation).where(col(PaymentAllocation.payment_pk) == pk)
                )
                assert pk is not None
                s.add(
                    PaymentAllocation(
                        payment_pk=pk,
                        id=payment.document_remote_id or (intent.document_remote_id or ""),
                        type=intent.document_type,
                        amount=payment.amount,
                    )
                )
        log.info("intent_applied", intent=intent.id, payment=payment.remote_id)
        self._checkpoint("after_apply")
        self._confirm(intent, adapter)

    def _confirm(self, intent: PaymentIntent, adapter: Adapter) -> None:
        """Read the document back; record its new balance (best effort: already applied)."""
        assert intent.document_remote_id is not None
        try:
            doc = adapter.get_document(intent.document_remote_id, intent.document_type)
        except ConnectorError as exc:
            log.warning("confirm_read_failed", intent=intent.id, error=exc.code)
            return
        with self.store.session() as s:
            s.execute(
                sa.update(PaymentIntent)
                .where(col(PaymentIntent.id) == intent.id)
                .values(
                    result_balance=doc.balance,
                    result_status=doc.provider_status,
                    updated_at=self.clock.now(),
                )
            )
            s.add(
                self._attempt(
                    intent,
                    "confirm",
                    outcome="ok",
                    message=f"{doc.provider_status}, balance {doc.balance} {doc.currency}",
                )
            )
            self._upsert_doc(s, intent, doc)
        intent.result_balance, intent.result_status = doc.balance, doc.provider_status
        expected_max = (intent.preflight_balance or doc.total) - intent.amount
        if doc.balance > expected_max:
            # Pair assertion: the ledger must show at least our payment.
            log.error(
                "confirm_balance_mismatch",
                intent=intent.id,
                balance=str(doc.balance),
                expected_at_most=str(expected_max),
            )

    def _unknown(
        self, intent: PaymentIntent, exc: ConnectorError, attempt: Attempt | None = None
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
    ) -> Attempt:
        return Attempt(
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
            s.add(self._attempt(intent, phase, **kw))

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

    def _transition(
        self,
        intent: PaymentIntent,
        *,
        attempt: Attempt | None = None,
        doc: DocumentSnapshot | None = None,
        **changes: Any,
    ) -> None:
        changes.setdefault("updated_at", self.clock.now())
        with self.store.session() as s:
            self._guarded_update(s, intent, **changes)
            if attempt is not None:
                s.add(attempt)
            if doc is not None:
                self._upsert_doc(s, intent, doc)

    def _finish(
        self,
        intent: PaymentIntent,
        state: IntentState,
        code: str,
        message: str,
        *,
        attempt: Attempt | None = None,
        doc: DocumentSnapshot | None = None,
        **extra: Any,
    ) -> None:
        self._transition(
            intent,
            attempt=attempt,
            doc=doc,
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
