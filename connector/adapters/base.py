"""The adapter interface: the one seam between the sync engine and a provider.

The engine knows only these types and the unified schema; an adapter knows only
its provider's protocol (through the shared :mod:`connector.http` client) and
the unified schema (through its declarative mapping).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import httpx

from connector.clock import Clock
from connector.config import ConnectionSettings
from connector.errors import ConnectorError
from connector.store import Store

__all__ = [
    "SUPPORTED_PROVIDERS",
    "Adapter",
    "Capabilities",
    "DocumentSnapshot",
    "ItemResult",
    "Page",
    "PaymentLine",
    "PaymentRequest",
    "RemotePayment",
    "build_adapter",
    "validate_connection_mapping",
]


@dataclass(frozen=True)
class Capabilities:
    """What a provider allows; the engine sizes its work from this."""

    max_batch: int  # payments per push call
    concurrency: int  # requests in flight per tenant
    per_minute: int  # requests per minute per tenant
    idempotency: str  # how a write is made idempotent
    key_window: timedelta | None  # how long the provider remembers a key (None: no key)
    max_key_length: int
    #: Whether a payment may carry more than it applies, the rest kept as the contact's
    #: unapplied credit (``PaymentRequest.unapplied``); the engine refuses the
    #: "leave_unapplied" over-payment policy where this is False.
    unapplied_credit: bool = False


@dataclass(frozen=True)
class DocumentSnapshot:
    """A fresh read of an invoice or bill, in unified terms."""

    remote_id: str
    number: str | None
    kind: str  # invoice | bill
    status: str  # unified status: draft, submitted, authorised, paid, void, deleted…
    provider_status: str
    currency: str
    total: Decimal
    balance: Decimal
    row_version: str | None
    record: dict[str, Any]  # unified field values, ready to upsert
    contact_remote_id: str | None = None  # the customer (invoice) or supplier (bill)

    @property
    def payable(self) -> bool:
        """Whether the document can take a payment at all."""
        return self.status == "authorised"


@dataclass(frozen=True)
class PaymentLine:
    """One document a payment settles, and how much it applies to it."""

    document_remote_id: str
    amount: Decimal


@dataclass(frozen=True)
class PaymentRequest:
    """One payment to create, in unified terms (what the mapping writes from).

    ``lines`` empty: the payment applies ``amount`` to ``document_remote_id``.
    ``lines`` set: one payment applies each line's amount to its document (all of one
    contact, all invoices or all bills); ``amount`` is their sum and
    ``document_remote_id`` the first line's document (filled in when left empty).

    ``unapplied`` > 0: the payment's total is ``amount + unapplied``; only ``amount``
    is applied, the rest stays with the contact as unapplied credit (only where
    ``Capabilities.unapplied_credit``).

    Raises:
        ValueError: lines that do not add up to ``amount``, name a document twice, or
            carry an amount that is not positive; ``unapplied`` below zero; a
            ``document_remote_id`` that is not the first line's document.
    """

    intent_id: str
    document_remote_id: str
    amount: Decimal
    currency: str
    transaction_date: date
    reference: str
    account_code: str | None = None
    currency_rate: Decimal | None = None
    document_type: str = "invoice"  # invoice (AR, a customer payment) | bill (AP, a bill payment)
    contact_remote_id: str | None = None  # customer or supplier of the document(s)
    provider_key: str = ""  # the idempotency key of this payment (requestid, externalId…)
    lines: tuple[PaymentLine, ...] = ()
    unapplied: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if self.unapplied < 0:
            raise ValueError(f"intent {self.intent_id}: unapplied must not be negative")
        if not self.lines:
            return
        lines = tuple(self.lines)
        object.__setattr__(self, "lines", lines)
        docs = [line.document_remote_id for line in lines]
        if len(set(docs)) != len(docs):
            raise ValueError(f"intent {self.intent_id}: a document appears twice in lines")
        if any(line.amount <= 0 for line in lines):
            raise ValueError(f"intent {self.intent_id}: every line amount must be positive")
        applied = sum((line.amount for line in lines), Decimal(0))
        if applied != self.amount:
            raise ValueError(
                f"intent {self.intent_id}: lines add up to {applied}, amount is {self.amount}"
            )
        if not self.document_remote_id:
            object.__setattr__(self, "document_remote_id", docs[0])
        elif self.document_remote_id != docs[0]:
            raise ValueError(
                f"intent {self.intent_id}: document_remote_id {self.document_remote_id!r} is "
                f"not the first line's document {docs[0]!r}"
            )

    @property
    def applied_lines(self) -> tuple[PaymentLine, ...]:
        """What the payment applies, per document (one line when ``lines`` is empty)."""
        return self.lines or (PaymentLine(self.document_remote_id, self.amount),)

    @property
    def document_ids(self) -> tuple[str, ...]:
        """The documents the payment applies to, in line order."""
        return tuple(line.document_remote_id for line in self.applied_lines)

    @property
    def multi(self) -> bool:
        """Whether the payment applies to more than one document."""
        return len(self.applied_lines) > 1

    @property
    def total(self) -> Decimal:
        """The payment's total: what it applies plus what it leaves unapplied."""
        return self.amount + self.unapplied if self.unapplied else self.amount

    def as_mapping_input(self) -> dict[str, Any]:
        """The request as the mapping's write expressions see it.

        ``lines`` is always a list (one element for a single-document payment) of
        ``{document_remote_id, amount}``; ``total_amount`` is ``amount + unapplied``.
        """
        return {
            "intent_id": self.intent_id,
            "document_type": self.document_type,
            "contact_remote_id": self.contact_remote_id,
            "provider_key": self.provider_key,
            "document_remote_id": self.document_remote_id,
            "amount": self.amount,
            "currency": self.currency,
            "transaction_date": self.transaction_date.isoformat(),
            "reference": self.reference,
            "account_code": self.account_code,
            "currency_rate": self.currency_rate,
            "lines": [
                {"document_remote_id": line.document_remote_id, "amount": line.amount}
                for line in self.applied_lines
            ],
            "unapplied": self.unapplied,
            "total_amount": self.total,
        }


@dataclass(frozen=True)
class RemotePayment:
    """A payment as found in the ledger.

    ``amount`` is what it applies to the document(s) of the request it answers (for a
    payment with an unapplied remainder, less than its total, which is in
    ``record["total_amount"]``). A multi-document payment also carries its per-document
    amounts in ``record["allocations"]`` (``[{id, type, amount}]``).
    """

    remote_id: str
    document_remote_id: str | None
    amount: Decimal
    reference: str | None
    status: str  # unified: authorised | deleted
    record: dict[str, Any] = field(default_factory=dict)
    #: What the payment applies to each document of the request it answers (one line
    #: per document; ``amount`` is their sum). Empty only where an adapter cannot tell.
    allocations: tuple[PaymentLine, ...] = ()


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one payment within a push call."""

    intent_id: str
    payment: RemotePayment | None = None
    error: ConnectorError | None = None
    status_code: int | None = None


@dataclass(frozen=True)
class Page:
    """One page of changed records, in unified terms."""

    records: list[dict[str, Any]]
    page: int
    page_size: int
    has_more: bool
    max_updated_at: datetime | None


class Adapter(Protocol):
    """What every provider adapter offers the engine."""

    provider: str
    capabilities: Capabilities
    entities: tuple[str, ...]

    def get_document(self, ref: str, kind: str = "invoice") -> DocumentSnapshot:
        """Fresh read of a document by remote id or number.

        Raises:
            DocumentNotFound: no such document.
        """
        ...

    def get_documents(
        self, remote_ids: Sequence[str], kind: str = "invoice"
    ) -> dict[str, DocumentSnapshot]:
        """Fresh reads of many documents in as few calls as the provider allows.

        Keyed by the ref as given; a ref that names no document is absent. Each
        snapshot is what :meth:`get_document` returns for that ref (a deleted or voided
        document comes back with its status where the provider still shows it).
        """
        ...

    def list_changed(self, entity: str, since: datetime | None, page: int, page_size: int) -> Page:
        """Records of ``entity`` changed at or after ``since`` (second granularity)."""
        ...

    def push_payments(
        self, batch: Sequence[PaymentRequest], idempotency_key: str
    ) -> list[ItemResult]:
        """Create the payments in one call under ``idempotency_key``; one result per item.

        Raises:
            OutcomeUnknown: the call may have been applied.
            RateLimited, Transient, AuthRevoked: the call was not applied.
        """
        ...

    def find_payment(self, request: PaymentRequest) -> list[RemotePayment]:
        """Payments in the ledger carrying ``request.reference`` on its document(s)."""
        ...

    def find_payments(self, requests: Sequence[PaymentRequest]) -> dict[str, list[RemotePayment]]:
        """:meth:`find_payment` for many requests in as few calls as the provider allows.

        Keyed by ``intent_id``; every request has an entry (an empty list: none found).
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def validate_connection_mapping(settings: ConnectionSettings) -> None:
    """Load a connection's mapping with its overrides; raise MappingError if it is bad."""
    if settings.provider not in SUPPORTED_PROVIDERS:
        return
    module = importlib.import_module(f"connector.adapters.{settings.provider}")
    module.load_connection_mapping(settings)


#: Providers this version has an adapter for; the config accepts all three.
SUPPORTED_PROVIDERS = frozenset({"xero", "quickbooks", "netsuite"})


#: provider → (module, class) of its adapter; imported on first use.
_ADAPTERS: dict[str, tuple[str, str]] = {
    "xero": ("connector.adapters.xero", "XeroAdapter"),
    "quickbooks": ("connector.adapters.quickbooks", "QuickBooksAdapter"),
    "netsuite": ("connector.adapters.netsuite", "NetSuiteAdapter"),
}


def build_adapter(
    settings: ConnectionSettings,
    store: Store,
    *,
    clock: Clock | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Adapter:
    """Build the adapter for a configured connection."""
    if settings.provider not in SUPPORTED_PROVIDERS:
        raise NotImplementedError(
            f"connection {settings.id!r}: provider {settings.provider!r} has no adapter in this "
            f"version (supported: {', '.join(sorted(SUPPORTED_PROVIDERS))})"
        )
    module_name, class_name = _ADAPTERS[settings.provider]
    cls = getattr(importlib.import_module(module_name), class_name)
    adapter: Adapter = cls(settings, store, clock=clock, transport=transport)
    return adapter
