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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

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
from connector.config import Settings
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
from connector.money import AmountError, parse_amount, quantize, to_decimal
from connector.schema import Bill, Invoice, Payment, PaymentAllocation
from connector.state import TERMINAL, Attempt, ConnectionRecord, IntentState, PaymentIntent
from connector.store import Store, upsert_records

__all__ = [
    "AllocationRequest",
    "IntakeError",
    "IntakeResult",
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
class AllocationRequest:
    """ "Pay ``amount`` of ``document`` on ``connection_id``" as a caller asks it."""

    connection_id: str
    document: str  # the document's number or remote id
    amount: str | Decimal
    transaction_date: date | None = None
    account_code: str | None = None
    reference: str | None = None
    idempotency_key: str | None = None
    document_type: str = "invoice"

    def fingerprint(self) -> str:
        """A digest of what the caller asked for, to tell a replay from a misuse."""
        try:
            amount = format(to_decimal(self.amount).normalize(), "f")
        except AmountError:
            amount = str(self.amount)
        canonical = {
            "connection": self.connection_id,
            "document_type": self.document_type,
            "document": self.document.strip(),
            "amount": amount,
            "date": self.transaction_date.isoformat() if self.transaction_date else None,
            "account": self.account_code,
            "reference": self.reference,
        }
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class IntakeResult:
    """The stored intent, and whether this call created it."""

    intent: PaymentIntent
    created: bool


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
    def intake(self, request: AllocationRequest) -> IntakeResult:
        """Store an allocation as an intent, idempotently on the caller's key.

        Same key and same request → the existing intent. Same key and another
        request → :class:`IntakeError`, nothing stored. The document is read
        fresh from the ledger so an unknown document or an amount the currency
        cannot hold is refused here, with nothing stored.

        Raises:
            IntakeError: the allocation cannot be accepted (see ``code``).
            ConfigError: the connection is not in the config.
        """
        conn = self.settings.connection(request.connection_id)
        fingerprint = request.fingerprint()
        key = (request.idempotency_key or f"auto-{fingerprint[:40]}").strip()
        if not key or len(key) > 255:
            raise IntakeError("invalid_key", "the idempotency key must be 1 to 255 characters")
        existing = self._find_intent(conn.id, key)
        if existing is not None:
            return self._replay(existing, fingerprint, key)
        try:
            preliminary = to_decimal(request.amount)
        except AmountError as exc:
            raise IntakeError("invalid_amount", str(exc)) from None
        if not preliminary.is_finite() or preliminary <= 0:
            raise IntakeError(
                "invalid_amount", f"amount {request.amount!r} must be a number greater than zero"
            )
        account = request.account_code or conn.payment_account_code
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
        try:
            doc = adapter.get_document(request.document, request.document_type)
        except DocumentNotFound as exc:
            raise IntakeError("document_not_found", str(exc)) from None
        except ConnectorError as exc:
            raise IntakeError(
                "provider_unavailable",
                f"could not read {request.document_type} {request.document!r} from the ledger "
                f"({exc.code}: {exc.message}); nothing was stored, try again",
            ) from None
        try:
            amount = parse_amount(request.amount, doc.currency)
        except AmountError as exc:
            raise IntakeError("invalid_amount", str(exc)) from None
        intent_id = str(uuid.uuid4())
        marker = f"{conn.reference_prefix}-{uuid.UUID(intent_id).hex[:16]}"
        reference = f"{request.reference} ({marker})" if request.reference else marker
        now = self.clock.now()
        intent = PaymentIntent(
            id=intent_id,
            connection_id=conn.id,
            idempotency_key=key,
            fingerprint=fingerprint,
            state=IntentState.PENDING.value,
            document_type=request.document_type,
            document_ref=request.document.strip(),
            document_remote_id=doc.remote_id,
            document_number=doc.number,
            contact_remote_id=doc.contact_remote_id,
            amount=amount,
            currency=doc.currency,
            transaction_date=request.transaction_date or now.date(),
            account_code=account,
            caller_reference=request.reference,
            reference=reference,
            key_version=1,
            provider_key=self._provider_key(conn.reference_prefix, intent_id, 1),
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        try:
            with self.store.session() as s:
                s.add(intent)
        except sa.exc.IntegrityError:
            # Another intake with the same key won the race: answer as a replay.
            existing = self._find_intent(conn.id, key)
            if existing is None:  # pragma: no cover - the constraint says it exists
                raise
            return self._replay(existing, fingerprint, key)
        log.info(
            "intent_stored",
            intent=intent.id,
            connection=conn.id,
            document=doc.number,
            amount=str(amount),
            currency=doc.currency,
        )
        return IntakeResult(intent, True)

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
