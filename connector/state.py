"""Sync state: connections, cursors, payment intents (the outbox), attempts.

``PaymentIntent`` is the outbox row: it is written at intake, and every push
phase is one transaction that moves it to its next state. ``Attempt`` is
append-only: one row per request sent (or lookup made) for an intent, with the
key it carried, the HTTP status and the outcome.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from connector.types import Money, UTCDateTime, utcnow

__all__ = [
    "TERMINAL",
    "ApiRequest",
    "Attempt",
    "ConnectionRecord",
    "Cursor",
    "Event",
    "EventDelivery",
    "IntentState",
    "PaymentIntent",
    "PushBatch",
]


class IntentState(enum.StrEnum):
    """Where an intent is in the push state machine (see docs/architecture.md)."""

    PENDING = "pending"  # stored, not yet decided
    CLAIMED = "claimed"  # a worker holds the lease and is preflighting
    SENDING = "sending"  # key and payload committed; the request may have left
    UNKNOWN = "unknown"  # a send's outcome is unknown; reconcile before anything else
    APPLIED = "applied"  # remote payment id recorded
    ALREADY_SETTLED = "already_settled"  # the ledger says the document is paid
    REJECTED = "rejected"  # cannot be applied as asked (reason_code says why)
    CONFLICT = "conflict"  # the ledger moved under us; a person decides


TERMINAL = frozenset(
    {IntentState.APPLIED, IntentState.ALREADY_SETTLED, IntentState.REJECTED, IntentState.CONFLICT}
)


class ConnectionRecord(SQLModel, table=True):
    """A configured connection's live state: its health and its rotated tokens."""

    __tablename__ = "connection"

    id: str = Field(primary_key=True, max_length=64)
    provider: str = Field(max_length=32)
    tenant: str = Field(max_length=128)
    status: str = Field(default="active", max_length=32)  # active | needs_reauth
    status_reason: str | None = Field(default=None, max_length=512)
    # Tokens rotate: the config's refresh token is only the first of a chain.
    # ``grant_fingerprint`` (a hash of the config's token) tells when the config
    # was given a new grant, which then replaces the stored chain.
    grant_fingerprint: str | None = Field(default=None, max_length=64)
    refresh_token: str | None = Field(default=None, max_length=2048)
    access_token: str | None = Field(default=None, max_length=4096)
    access_token_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    token_refreshed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Cursor(SQLModel, table=True):
    """Where the pull of one entity of one connection stands."""

    __tablename__ = "cursor"

    connection_id: str = Field(primary_key=True, max_length=64)
    entity: str = Field(primary_key=True, max_length=32)
    position: str | None = Field(default=None, max_length=128)  # provider change marker
    page: int = 1  # next page within ``position`` (resumes a run mid-way)
    run_started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    records: int = 0
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PaymentIntent(SQLModel, table=True):
    """One allocation to push: the outbox row and its state machine."""

    __tablename__ = "payment_intent"
    __table_args__ = (
        sa.UniqueConstraint("connection_id", "idempotency_key"),
        sa.Index("ix_payment_intent_work", "state", "next_attempt_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    connection_id: str = Field(max_length=64, index=True)
    idempotency_key: str = Field(max_length=255)  # the caller's key
    fingerprint: str = Field(max_length=64)  # sha256 of the canonical request
    state: str = Field(default=IntentState.PENDING.value, max_length=32)
    document_type: str = Field(default="invoice", max_length=16)
    document_ref: str = Field(max_length=128)  # as the caller named it (number or id)
    document_remote_id: str | None = Field(default=None, max_length=128)
    document_number: str | None = Field(default=None, max_length=64)
    contact_remote_id: str | None = Field(default=None, max_length=128)
    amount: Decimal = Field(sa_type=Money)
    currency: str = Field(max_length=3)
    currency_rate: Decimal | None = Field(default=None, sa_type=Money)
    transaction_date: date
    account_code: str | None = Field(default=None, max_length=64)
    caller_reference: str | None = Field(default=None, max_length=200)
    reference: str = Field(max_length=255)  # what travels on the payment; found by lookup
    key_version: int = 1
    provider_key: str = Field(max_length=128)  # provider idempotency key of key_version
    key_first_sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    remote_payment_id: str | None = Field(default=None, max_length=128)
    reason_code: str | None = Field(default=None, max_length=64)
    reason_message: str | None = Field(default=None, max_length=1024)
    preflight_balance: Decimal | None = Field(default=None, sa_type=Money)
    preflight_row_version: str | None = Field(default=None, max_length=128)
    result_balance: Decimal | None = Field(default=None, sa_type=Money)
    result_status: str | None = Field(default=None, max_length=32)
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    attempts: int = 0
    # -- policies and batching (migration 0004) --
    overpayment: str = Field(default="reject", max_length=32)  # the policy at intake
    send_amount: Decimal | None = Field(default=None, sa_type=Money)  # as decided at preflight
    payment_currency: str | None = Field(default=None, max_length=3)  # as the caller paid
    payment_amount: Decimal | None = Field(default=None, sa_type=Money)  # in payment_currency
    lines: str | None = None  # JSON: several documents of one contact in one payment
    batch_id: str | None = Field(default=None, max_length=36, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PushBatch(SQLModel, table=True):
    """One push call: its members (``payment_intent.batch_id``) and key, stored before it is sent.

    A retry within the provider's key window sends the identical batch under
    the identical key, so the provider answers it from its idempotency cache.
    """

    __tablename__ = "push_batch"

    id: str = Field(primary_key=True, max_length=36)
    connection_id: str = Field(max_length=64, index=True)
    provider_key: str = Field(max_length=128)
    size: int
    members: str = ""  # JSON list of the member intent ids, in the order sent
    # sending: stored, the call may have left; open: only refused before processing
    # (resend as is); sent: an answer was lost (look up before resending); done.
    state: str = Field(default="sending", max_length=16)
    sends: int = 0
    worker: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    first_sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Event(SQLModel, table=True):
    """An event to send out (``allocation.applied`` …); written in the transaction it reports."""

    __tablename__ = "event"

    id: str = Field(primary_key=True, max_length=36)  # the event id receivers dedupe on
    type: str = Field(max_length=64)
    connection_id: str | None = Field(default=None, max_length=64, index=True)
    intent_id: str | None = Field(default=None, max_length=36, index=True)
    payload: str  # JSON body's "data"
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class EventDelivery(SQLModel, table=True):
    """One event to one endpoint: retried with backoff until delivered or out of attempts."""

    __tablename__ = "event_delivery"
    __table_args__ = (
        sa.UniqueConstraint("event_id", "endpoint"),
        sa.Index("ix_event_delivery_due", "state", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(foreign_key="event.id", max_length=36)
    endpoint: str = Field(max_length=512)
    state: str = Field(default="pending", max_length=16)  # pending | delivered | dead
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_status: int | None = None
    last_error: str | None = Field(default=None, max_length=1024)
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ApiRequest(SQLModel, table=True):
    """An ``Idempotency-Key`` of the intake API and the response it got."""

    __tablename__ = "api_request"

    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64)  # sha256 of method, path and body
    state: str = Field(default="in_progress", max_length=16)  # in_progress | done
    status_code: int | None = None
    response_body: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Attempt(SQLModel, table=True):
    """Append-only log: every request sent or lookup made for an intent."""

    __tablename__ = "attempt"

    id: int | None = Field(default=None, primary_key=True)
    intent_id: str = Field(foreign_key="payment_intent.id", index=True, max_length=36)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    phase: str = Field(max_length=16)  # preflight | send | lookup | confirm
    method: str | None = Field(default=None, max_length=8)
    path: str | None = Field(default=None, max_length=512)
    idempotency_key: str | None = Field(default=None, max_length=128)
    status_code: int | None = None
    outcome: str = Field(max_length=64)  # ok | <error code> | found | not_found …
    provider_code: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=1024)
    remote_payment_id: str | None = Field(default=None, max_length=128)
    worker: str | None = Field(default=None, max_length=128)
