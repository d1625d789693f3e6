"""In-memory Xero entities. Money is Decimal everywhere; timestamps are aware UTC."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = [
    "AccessToken",
    "Grant",
    "RefreshToken",
    "XAccount",
    "XBatchPayment",
    "XContact",
    "XInvoice",
    "XLineItem",
    "XPayment",
    "XTenant",
]

ZERO = Decimal("0.00")


@dataclass
class XAccount:
    """A chart-of-accounts entry."""

    account_id: str
    code: str
    name: str
    type: str
    account_class: str
    tax_type: str
    updated: dt.datetime
    status: str = "ACTIVE"
    enable_payments: bool = False
    bank_account_number: str | None = None
    bank_account_type: str | None = None
    currency_code: str | None = None
    system_account: str | None = None
    description: str | None = None
    reporting_code: str | None = None

    @property
    def accepts_payments(self) -> bool:
        """Xero: the account must be a BANK account or have payments enabled."""
        return self.type == "BANK" or self.enable_payments


@dataclass
class XContact:
    """A customer or supplier."""

    contact_id: str
    name: str
    first_name: str
    last_name: str
    email: str
    updated: dt.datetime
    is_customer: bool = True
    is_supplier: bool = False
    status: str = "ACTIVE"
    contact_number: str = ""


@dataclass
class XLineItem:
    """An invoice line; ``line_amount`` is tax exclusive (LineAmountTypes Exclusive)."""

    line_item_id: str
    description: str
    quantity: Decimal
    unit_amount: Decimal
    account_code: str
    tax_type: str
    tax_amount: Decimal
    line_amount: Decimal


@dataclass
class XInvoice:
    """A sales invoice (ACCREC) or bill (ACCPAY)."""

    invoice_id: str
    type: str
    number: str
    contact_id: str
    date: dt.date
    due_date: dt.date
    status: str
    currency_code: str
    currency_rate: Decimal
    line_items: list[XLineItem]
    updated: dt.datetime
    reference: str = ""
    line_amount_types: str = "Exclusive"
    amount_paid: Decimal = ZERO
    amount_credited: Decimal = ZERO
    payment_ids: list[str] = field(default_factory=list)
    sent_to_contact: bool = False

    @property
    def sub_total(self) -> Decimal:
        """Sum of tax-exclusive line amounts."""
        return sum((li.line_amount for li in self.line_items), ZERO)

    @property
    def total_tax(self) -> Decimal:
        """Sum of per-line tax (Xero rounds tax per line, then sums)."""
        return sum((li.tax_amount for li in self.line_items), ZERO)

    @property
    def total(self) -> Decimal:
        """SubTotal + TotalTax."""
        return self.sub_total + self.total_tax

    @property
    def amount_due(self) -> Decimal:
        """What is still owed."""
        return self.total - self.amount_paid - self.amount_credited


@dataclass
class XPayment:
    """A payment applied to one invoice."""

    payment_id: str
    invoice_id: str
    account_id: str
    date: dt.date
    amount: Decimal
    bank_amount: Decimal
    currency_rate: Decimal
    payment_type: str
    updated: dt.datetime
    reference: str = ""
    status: str = "AUTHORISED"
    is_reconciled: bool = False
    #: The batch payment this payment was created in (``BatchPaymentID``), if any.
    batch_payment_id: str | None = None


@dataclass
class XBatchPayment:
    """Several payments made as one bank transaction (``/BatchPayments``).

    ``type`` is RECBATCH (sales invoices) or PAYBATCH (bills); the payments keep their
    own ids and amounts and name the batch in ``batch_payment_id``.
    """

    batch_payment_id: str
    type: str
    account_id: str
    date: dt.date
    payment_ids: list[str]
    updated: dt.datetime
    reference: str = ""
    #: Other free-text bank fields sent with the batch (Particulars, Code, Details,
    #: Narrative), echoed as given.
    texts: dict[str, str] = field(default_factory=dict)
    status: str = "AUTHORISED"
    is_reconciled: bool = False


@dataclass
class XTenant:
    """One Xero organisation and its data."""

    tenant_id: str
    name: str
    base_currency: str
    connection_id: str
    created: dt.datetime
    accounts: dict[str, XAccount] = field(default_factory=dict)
    contacts: dict[str, XContact] = field(default_factory=dict)
    invoices: dict[str, XInvoice] = field(default_factory=dict)
    payments: dict[str, XPayment] = field(default_factory=dict)
    batch_payments: dict[str, XBatchPayment] = field(default_factory=dict)
    last_stamp: dt.datetime | None = None
    #: Bumped on every change to the tenant's data (read caches compare it).
    version: int = 0
    #: InvoiceNumber → ids of the invoices carrying it, in creation order.
    numbers: dict[str, list[str]] = field(default_factory=dict)
    #: Highest number used per automatic prefix (``INV-``, ``BILL-``).
    number_max: dict[str, int] = field(default_factory=dict)
    #: Rendered JSON of invoices for the HTTP responses (see ``render.invoice_json``).
    json_cache: dict[tuple[str, bool, bool], tuple[tuple[object, ...], str]] = field(
        default_factory=dict, repr=False
    )

    def index_number(self, invoice: XInvoice, old_number: str | None = None) -> None:
        """Record ``invoice`` under its number (and forget ``old_number`` for it)."""
        if old_number is not None:
            ids = self.numbers.get(old_number, [])
            if invoice.invoice_id in ids:
                ids.remove(invoice.invoice_id)
            if not ids:
                self.numbers.pop(old_number, None)
        self.numbers.setdefault(invoice.number, []).append(invoice.invoice_id)
        for prefix in ("INV-", "BILL-"):
            suffix = invoice.number[len(prefix) :]
            if invoice.number.startswith(prefix) and suffix.isdigit():
                self.number_max[prefix] = max(self.number_max.get(prefix, 0), int(suffix))


@dataclass
class Grant:
    """An OAuth grant: one user's consent, covering some tenants."""

    grant_id: str
    tenant_ids: list[str]
    scope: str
    current_refresh: str = ""
    revoked: bool = False


@dataclass
class RefreshToken:
    """A refresh token; valid while current or within the grace period after rotation."""

    token: str
    grant_id: str
    issued: dt.datetime
    superseded: dt.datetime | None = None


@dataclass
class AccessToken:
    """A bearer token for the Accounting API."""

    token: str
    grant_id: str
    client_id: str
    expires: dt.datetime
