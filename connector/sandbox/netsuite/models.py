"""In-memory NetSuite entities. Money is Decimal, timestamps aware UTC (whole seconds).

Naming: a *company* is one NetSuite account (the tenant, ``1234567`` or
``1234567_SB1``); a *GL account* is a chart-of-accounts entry (``account`` in REST).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = [
    "BILL",
    "CUSTOMER_PAYMENT",
    "DOC_KINDS",
    "INVOICE",
    "PAYMENT_KINDS",
    "VENDOR_PAYMENT",
    "ApplyLine",
    "Company",
    "Currency",
    "Entity",
    "GLAccount",
    "Transaction",
]

ZERO = Decimal("0.00")

INVOICE = "invoice"
BILL = "vendorBill"
CUSTOMER_PAYMENT = "customerPayment"
VENDOR_PAYMENT = "vendorPayment"
DOC_KINDS = (INVOICE, BILL)
PAYMENT_KINDS = (CUSTOMER_PAYMENT, VENDOR_PAYMENT)


@dataclass
class Currency:
    """A currency record; ``rate`` is base-currency units per unit of this currency."""

    id: int
    code: str
    name: str
    symbol: str
    rate: Decimal


@dataclass
class GLAccount:
    """A chart-of-accounts entry. ``type`` is the REST/SuiteQL id (``Bank``, ``AcctRec``...)."""

    id: int
    number: str
    name: str
    type: str
    type_name: str
    currency_id: int | None
    description: str = ""
    inactive: bool = False


@dataclass
class Entity:
    """A customer or a vendor (one internal-id space for both, as in NetSuite)."""

    id: int
    kind: str  # "customer" | "vendor"
    entity_id: str
    company_name: str
    email: str
    currency_id: int
    created: dt.datetime
    modified: dt.datetime
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    is_person: bool = False


@dataclass
class ApplyLine:
    """One applied line of a payment: ``amount`` of the payment goes to document ``doc_id``."""

    doc_id: int
    amount: Decimal
    apply_date: dt.date


@dataclass
class Transaction:
    """An invoice, vendor bill, customer payment or vendor payment.

    For documents ``total`` is the document amount and ``amount_paid`` the sum of the
    live payments applied to it. For payments ``total`` is the payment amount (the
    ``payment`` field of a customerPayment, ``total`` of a vendorPayment) and ``apply``
    its applied lines. Amounts are in the transaction currency.
    """

    id: int
    kind: str
    tran_id: str
    number: str  # transactionnumber, e.g. "INV1001", "CUSTPYMT48"
    entity_id: int
    currency_id: int
    exchange_rate: Decimal
    tran_date: dt.date
    created: dt.datetime
    modified: dt.datetime
    total: Decimal
    status: str | None
    account_id: int | None
    due_date: dt.date | None = None
    external_id: str | None = None
    memo: str | None = None
    amount_paid: Decimal = ZERO
    apply: list[ApplyLine] = field(default_factory=list)
    item_account_id: int | None = None
    item_description: str = ""
    deleted: dt.datetime | None = None
    version: int = 1
    locked_by_workflow: bool = False

    @property
    def is_document(self) -> bool:
        """Whether this is an invoice or a bill (something payments apply to)."""
        return self.kind in DOC_KINDS

    @property
    def amount_remaining(self) -> Decimal:
        """Open amount of a document in its currency (zero for payments)."""
        if not self.is_document:
            return ZERO
        return self.total - self.amount_paid

    @property
    def applied(self) -> Decimal:
        """Sum of a payment's applied lines."""
        return sum((line.amount for line in self.apply), ZERO)

    @property
    def unapplied(self) -> Decimal:
        """The part of a payment not applied to any document."""
        return self.total - self.applied


@dataclass
class Company:
    """One NetSuite account: its currencies, chart of accounts, entities and transactions."""

    account_id: str
    name: str
    subsidiary_id: int
    subsidiary_name: str
    base_currency_id: int
    currencies: dict[int, Currency]
    gl_accounts: dict[int, GLAccount]
    bank_account_id: int
    undeposited_account_id: int
    ar_account_id: int
    ap_account_id: int
    income_account_id: int
    expense_account_id: int
    entities: dict[int, Entity] = field(default_factory=dict)
    transactions: dict[int, Transaction] = field(default_factory=dict)
    deleted: list[Transaction] = field(default_factory=list)
    next_entity_id: int = 1
    next_transaction_id: int = 1
    counters: dict[str, int] = field(default_factory=dict)
