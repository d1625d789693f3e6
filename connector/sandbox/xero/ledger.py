"""The Xero ledger: organisations, their accounts, contacts, invoices, bills and payments.

It is both the state behind the HTTP emulator (:mod:`connector.sandbox.xero.routes`) and
the test-facing API (``state.xero``): tests read the ledger directly and change it "as a
person in Xero would" (pay an invoice, void it, rename a contact) without going through
HTTP.

All reads and writes happen under one re-entrant lock shared with the server thread.
Returned dicts are rendered in Xero's JSON shape (Decimals inside, dates as
``/Date(ms+0000)/`` strings), so they compare directly with API responses.

Batch payments (``/BatchPayments``, spec ``BatchPayment``): several invoices (or bills)
paid as one bank transaction, all or nothing; each payment in a batch is an ordinary
payment naming its batch (``BatchPaymentID``, as in the spec's GET /Payments example)
and can only be deleted with the whole batch (fact sheet §1, DOC-PAY). See
:meth:`XeroLedger.create_batch_payments` for what is confirmed and what is the sandbox's.

Every change to an invoice, bill or contact is also published to the webhook
(:attr:`XeroLedger.webhooks`): CREATE when it appears, UPDATE when it changes, and an
invoice UPDATE for each payment created or deleted on it.

Seed (per tenant, all from the seed): the chart of accounts below, five contacts (three
customers, two suppliers), ``invoices`` sales invoices ``INV-0001``… cycling through
:data:`_INVOICE_PATTERN` (unpaid, partly paid, paid, EUR, draft, submitted, voided) and
``bills`` bills ``SUP-1001``… cycling through :data:`_BILL_PATTERN` (unpaid, partly
paid EUR, paid, draft, …). Contacts' ``IsCustomer``/``IsSupplier`` start from the seed
and turn on when the contact gets its first sales invoice / bill (sandbox choice; Xero
derives them from the contact's transactions).
"""

from __future__ import annotations

import contextlib
import random
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from connector.sandbox.clock import Clock
from connector.sandbox.wire import (
    dumps,
    money,
    ms_date,
    parse_date_value,
    to_decimal,
    truncate_ms,
)
from connector.sandbox.xero.auth import XeroAuth
from connector.sandbox.xero.models import (
    XAccount,
    XBatchPayment,
    XContact,
    XInvoice,
    XLineItem,
    XPayment,
    XTenant,
)
from connector.sandbox.xero.render import (
    currency_places,
    render_account,
    render_batch_payment,
    render_contact,
    render_invoice,
    render_payment,
)
from connector.sandbox.xero.webhooks import XeroWebhooks

__all__ = ["PaymentBatch", "XeroLedger", "batch_payment_body_errors", "payment_body_errors"]

ZERO = Decimal("0.00")
TAX_RATE = Decimal("0.10")
PAYABLE_STATUS = "AUTHORISED"
INVOICE_STATUSES = ("DRAFT", "SUBMITTED", "AUTHORISED", "PAID", "VOIDED", "DELETED")
#: Invoice currency units per unit of the base currency (see ``_bank_amount``).
DEFAULT_RATES = {"EUR": Decimal("0.920000"), "GBP": Decimal("0.790000"), "NZD": Decimal("1.650000")}

# Validation messages. The first five are Xero's (fact sheet §3); the others are the
# sandbox's own wording for cases no public source quotes.
MSG_NOT_AUTHORISED = "Payments can only be made against Authorised documents"
MSG_EXCEEDS = "Payment amount exceeds the amount outstanding on this document"
MSG_ACCOUNT_NOT_FOUND = "Account could not be found"
MSG_ACCOUNT_TYPE = "Account type is invalid for making a payment to/from"
MSG_MODIFY = "Payments cannot be modified, only created and deleted"
MSG_INVOICE_NOT_FOUND = "Invoice could not be found"  # sandbox wording (unconfirmed)
MSG_NO_DOCUMENT = "Invoice, CreditNote, Prepayment or Overpayment must be specified"
MSG_ONLY_INVOICES = "The sandbox only supports payments against invoices"
MSG_NOT_OBJECT = "A payment must be a JSON object"
MSG_DATE_MISSING = "Payment Date must be specified"
MSG_DATE_INVALID = "Payment Date is not a valid date"
MSG_AMOUNT_MISSING = "Payment Amount must be specified"
MSG_AMOUNT_INVALID = "Payment Amount is not a valid number"
MSG_AMOUNT_POSITIVE = "Payment Amount must be greater than zero"
MSG_RATE_INVALID = "Currency rate must be greater than zero"
MSG_ALREADY_DELETED = "This payment has already been deleted"
MSG_RECONCILED = "This payment has been reconciled and cannot be deleted"
# Batch payments (PUT /BatchPayments): no public source quotes Xero's wording for these.
MSG_BATCH_NOT_OBJECT = "A batch payment must be a JSON object"
MSG_BATCH_EMPTY = "A batch payment must contain at least one payment"
MSG_BATCH_MIXED_TYPES = "A batch payment can pay sales invoices or bills, not both"
MSG_BATCH_CURRENCY = "All invoices of a batch payment must be in the same currency"
MSG_BATCH_MEMBER = (
    "This payment was created in a batch payment and can only be deleted with the batch payment"
)
MSG_BATCH_ALREADY_DELETED = "This batch payment has already been deleted"
MSG_BATCH_RECONCILED = "This batch payment has been reconciled and cannot be deleted"
#: Reference of the payment the ``paid_elsewhere`` fault makes "in the Xero UI".
PAID_ELSEWHERE_REFERENCE = "Paid in Xero"
#: Reference prefix the ``concurrent_edit`` fault writes on the invoice it "edits".
CONCURRENT_EDIT_REFERENCE = "Edited in Xero"

_ACCOUNTS: tuple[tuple[str, str, str, str, str, bool, str | None, str | None, str | None], ...] = (
    # code, name, type, class, tax type, payments enabled, bank number, system account, desc
    ("090", "Business Bank Account", "BANK", "ASSET", "NONE", False, "121200123456", None, None),
    ("091", "Business Savings Account", "BANK", "ASSET", "NONE", False, "121200654321", None, None),
    (
        "200",
        "Sales",
        "REVENUE",
        "REVENUE",
        "OUTPUT",
        False,
        None,
        None,
        "Income from any normal business activity",
    ),
    ("400", "Advertising", "EXPENSE", "EXPENSE", "INPUT", False, None, None, None),
    ("429", "General Expenses", "EXPENSE", "EXPENSE", "INPUT", False, None, None, None),
    (
        "610",
        "Accounts Receivable",
        "CURRENT",
        "ASSET",
        "NONE",
        False,
        None,
        "DEBTORS",
        "Invoices the company has issued but not yet been paid for",
    ),
    (
        "800",
        "Accounts Payable",
        "CURRLIAB",
        "LIABILITY",
        "NONE",
        False,
        None,
        "CREDITORS",
        "Bills the company has received but not yet paid",
    ),
    ("820", "Sales Tax", "CURRLIAB", "LIABILITY", "NONE", False, None, "GST", None),
    (
        "855",
        "Clearing Account",
        "CURRLIAB",
        "LIABILITY",
        "NONE",
        True,
        None,
        None,
        "Not a bank account, but payments to it are enabled",
    ),
)

_CONTACTS: tuple[tuple[str, str, str, bool], ...] = (
    # name, first name, last name, supplier
    ("Acme Hardware", "Alice", "Archer", False),
    ("Bayside Club", "Bob", "Baker", False),
    ("City Limousines", "Carol", "Chen", False),
    ("Dunmore Office Supplies", "Dan", "Dunmore", True),
    ("Evergreen Catering", "Eve", "Ellis", True),
)

# (status, currency, seeded payment) for INV-0001, INV-0002, …; repeats beyond 12.
_INVOICE_PATTERN: tuple[tuple[str, str, str | None], ...] = (
    ("AUTHORISED", "USD", None),
    ("AUTHORISED", "USD", None),
    ("AUTHORISED", "USD", "partial"),
    ("AUTHORISED", "USD", None),
    ("PAID", "USD", "full"),
    ("AUTHORISED", "EUR", None),
    ("DRAFT", "USD", None),
    ("AUTHORISED", "USD", None),
    ("SUBMITTED", "USD", None),
    ("VOIDED", "USD", None),
    ("AUTHORISED", "EUR", None),
    ("AUTHORISED", "USD", None),
)
# (status, currency, seeded payment) for SUP-1001, SUP-1002, …; repeats beyond 10. The
# default three bills are unpaid, partly paid in EUR and paid.
_BILL_PATTERN: tuple[tuple[str, str, str | None], ...] = (
    ("AUTHORISED", "USD", None),
    ("AUTHORISED", "EUR", "partial"),
    ("PAID", "USD", "full"),
    ("DRAFT", "USD", None),
    ("AUTHORISED", "USD", "partial"),
    ("AUTHORISED", "EUR", None),
    ("SUBMITTED", "USD", None),
    ("VOIDED", "USD", None),
    ("PAID", "EUR", "full"),
    ("AUTHORISED", "USD", None),
)
_DESCRIPTIONS = (
    "Consulting services",
    "Annual support plan",
    "Hardware supplies",
    "Installation",
    "Training workshop",
    "Delivery charge",
)


@dataclass(frozen=True)
class PaymentBatch:
    """Result of :meth:`XeroLedger.create_payments`.

    Attributes:
        ok: False when ``summarize_errors`` was on and some item failed (HTTP 400,
            nothing committed).
        elements: Rendered payments; failed items echo their input with
            ``ValidationErrors``. When ``ok`` is False only the failed items.
    """

    ok: bool
    elements: list[dict[str, Any]]


@dataclass
class _Plan:
    invoice: XInvoice
    account: XAccount
    date: date
    amount: Decimal
    reference: str
    currency_rate: Decimal
    is_reconciled: bool


@dataclass
class _BatchPlan:
    type: str
    account: XAccount
    date: date
    reference: str
    texts: dict[str, str]
    plans: list[_Plan]


def _new_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _field(data: Mapping[str, Any], name: str) -> Any:
    """Case-insensitive key lookup: Xero's deserializer ignores key case."""
    if name in data:
        return data[name]
    lowered = name.lower()
    for key, value in data.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


_OBJECT_FIELDS = {
    name.lower(): name for name in ("Invoice", "Account", "CreditNote", "Prepayment", "Overpayment")
}
_DECIMAL_FIELDS = frozenset({"amount", "currencyrate", "bankamount"})
_BOOL_FIELDS = frozenset({"isreconciled", "hasaccount", "hasvalidationerrors"})
_TEXT_FIELDS = frozenset({"reference", "status", "particulars", "details", "code"})
#: Free-text bank fields of a batch payment other than Reference (spec BatchPayment).
_BATCH_TEXTS = {name.lower(): name for name in ("Particulars", "Code", "Details", "Narrative")}


def payment_body_errors(items: list[Any], collection: str = "Payments") -> str | None:
    """What Xero's JSON deserializer refuses in a Payments body, or None.

    Xero reads the body into typed .NET objects before validating anything, so a value
    of the wrong JSON type (``"Amount": "abc"``, ``"Invoice": "INV-1"``, an item that is
    not an object) fails the whole request with a 400 ``PostDataInvalidException``
    instead of a per-item validation error. Json.NET converts numeric and boolean
    strings (``"12.50"``, ``"true"``), so those pass. The wording follows Json.NET's.

    Args:
        items: The payment objects of the body.
        collection: The body's collection key, for the error's path.

    Returns:
        The error detail for the first offending value, or None.
    """
    for index, item in enumerate(items):
        path = f"{collection}[{index}]"
        if not isinstance(item, dict):
            return f"Error converting value {dumps(item)} to type 'Payment'. Path '{path}'."
        for name, value in item.items():
            key = str(name).lower()
            where = f"Path '{path}.{name}'."
            if value is None or value == "":
                continue  # Json.NET reads "" into a nullable value as null
            if key in _OBJECT_FIELDS and not isinstance(value, dict):
                shown = dumps(value)
                return f"Error converting value {shown} to type '{_OBJECT_FIELDS[key]}'. {where}"
            if key in _DECIMAL_FIELDS:
                try:
                    to_decimal(value)
                except ValueError:
                    return f"Could not convert string to decimal: {value}. {where}"
            elif key == "date":
                try:
                    parse_date_value(value)
                except ValueError:
                    return f"Could not convert string to DateTime: {value}. {where}"
            elif key in _BOOL_FIELDS and not (
                isinstance(value, bool)
                or (isinstance(value, str) and value.strip().lower() in {"true", "false"})
            ):
                return f"Could not convert string to boolean: {value}. {where}"
            elif key in _TEXT_FIELDS and isinstance(value, dict | list):
                return f"Unexpected character encountered while parsing value. {where}"
    return None


def batch_payment_body_errors(items: list[Any]) -> str | None:
    """What Xero's JSON deserializer refuses in a BatchPayments body, or None.

    As :func:`payment_body_errors`: values of the wrong JSON type fail the whole request
    with a 400 ``PostDataInvalidException`` (Json.NET's wording, the sandbox's paths).
    """
    for index, item in enumerate(items):
        path = f"BatchPayments[{index}]"
        if not isinstance(item, dict):
            return f"Error converting value {dumps(item)} to type 'BatchPayment'. Path '{path}'."
        for name, value in item.items():
            key = str(name).lower()
            where = f"Path '{path}.{name}'."
            if value is None or value == "":
                continue
            if key == "account" and not isinstance(value, dict):
                return f"Error converting value {dumps(value)} to type 'Account'. {where}"
            if key in {"amount", "totalamount"}:
                try:
                    to_decimal(value)
                except ValueError:
                    return f"Could not convert string to decimal: {value}. {where}"
            elif key == "date":
                try:
                    parse_date_value(value)
                except ValueError:
                    return f"Could not convert string to DateTime: {value}. {where}"
            elif key == "payments":
                if not isinstance(value, list):
                    return f"Unexpected character encountered while parsing value. {where}"
                problem = payment_body_errors(value, f"{path}.Payments")
                if problem is not None:
                    return problem
            elif (key == "reference" or key in _BATCH_TEXTS) and isinstance(value, dict | list):
                return f"Unexpected character encountered while parsing value. {where}"
    return None


class XeroLedger:
    """All Xero organisations of one sandbox, seeded deterministically.

    Args:
        seed: Seed of every generated id, token, name and amount.
        tenants: Number of organisations; each gets its own OAuth grant.
        invoices: Number of sales invoices per organisation.
        bills: Number of bills (ACCPAY invoices) per organisation.
        clock: The sandbox clock.
        lock: The lock guarding the ledger (a new one if omitted).

    Attributes:
        auth: The identity emulation (tokens, grants).
        webhooks: The webhook receiver registration and event delivery.
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        tenants: int = 1,
        invoices: int = 12,
        bills: int = 3,
        clock: Clock | None = None,
        lock: threading.RLock | None = None,
    ) -> None:
        if tenants < 1:
            raise ValueError("at least one tenant is needed")
        if invoices < 0:
            raise ValueError("invoices must not be negative")
        if bills < 0:
            raise ValueError("bills must not be negative")
        self.lock = lock if lock is not None else threading.RLock()
        self.clock = clock if clock is not None else Clock()
        rng = random.Random(f"xero:{seed}")
        self._runtime_rng = random.Random(f"xero-runtime:{seed}")
        self.auth = XeroAuth(self.clock, self.lock, rng, random.Random(f"xero-tokens:{seed}"))
        self.webhooks = XeroWebhooks(seed=seed)
        self._tenants: dict[str, XTenant] = {}
        self._edits = 0
        with self.lock:
            for index in range(tenants):
                self._seed_tenant(rng, index, invoices, bills)

    # ------------------------------------------------------------------ identity

    @property
    def client_id(self) -> str:
        """The OAuth client id of the sandbox's Xero app."""
        return self.auth.client_id

    @property
    def client_secret(self) -> str:
        """The OAuth client secret of the sandbox's Xero app."""
        return self.auth.client_secret

    @property
    def tenant_ids(self) -> list[str]:
        """Tenant ids in seed order."""
        with self.lock:
            return list(self._tenants)

    def tenant(self, tenant_id: str) -> XTenant:
        """The organisation's internal record (tenant ids compare case-insensitively).

        Raises:
            KeyError: Unknown tenant.
        """
        with self.lock:
            found = self._tenants.get(tenant_id) or self._tenants.get(tenant_id.lower())
            if found is None:
                raise KeyError(tenant_id)
            return found

    def tenant_name(self, tenant_id: str) -> str:
        """The organisation's name."""
        return self.tenant(tenant_id).name

    def refresh_token_for(self, tenant_id: str) -> str:
        """The newest refresh token of the tenant's grant (the seeded one until rotated)."""
        with self.lock:
            return self.auth.grant_of_tenant(self.tenant(tenant_id).tenant_id).current_refresh

    def revoke_grant(self, tenant_id: str) -> None:
        """Revoke the tenant's grant: refresh gives ``invalid_grant``, bearer calls 401."""
        with self.lock:
            self.auth.revoke_grant(
                self.auth.grant_of_tenant(self.tenant(tenant_id).tenant_id).grant_id
            )

    def disconnect(self, tenant_id: str) -> None:
        """Remove the tenant from its grant (``DELETE /connections/{id}``); calls get 403."""
        with self.lock:
            tid = self.tenant(tenant_id).tenant_id
            grant = self.auth.grant_of_tenant(tid)
            if tid in grant.tenant_ids:
                grant.tenant_ids.remove(tid)

    # ------------------------------------------------------------------ reads

    def invoice(self, tenant_id: str, invoice_id_or_number: str) -> dict[str, Any]:
        """One invoice (with line items and payment summaries) by id or number.

        Raises:
            KeyError: Unknown tenant or invoice.
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            return render_invoice(tenant, self._find_invoice(tenant, invoice_id_or_number))

    def invoices(self, tenant_id: str) -> list[dict[str, Any]]:
        """All invoices and bills of the tenant, in creation order."""
        with self.lock:
            tenant = self.tenant(tenant_id)
            return [render_invoice(tenant, inv) for inv in tenant.invoices.values()]

    def payments(
        self,
        tenant_id: str,
        invoice_id: str | None = None,
        include_deleted: bool = False,
    ) -> list[dict[str, Any]]:
        """Payments of the tenant (optionally of one invoice, id or number), in creation order."""
        with self.lock:
            tenant = self.tenant(tenant_id)
            wanted = self._find_invoice(tenant, invoice_id).invoice_id if invoice_id else None
            return [
                render_payment(tenant, p)
                for p in tenant.payments.values()
                if (wanted is None or p.invoice_id == wanted)
                and (include_deleted or p.status != "DELETED")
            ]

    def batch_payments(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tenant's batch payments (deleted ones included), in creation order."""
        with self.lock:
            tenant = self.tenant(tenant_id)
            return [render_batch_payment(tenant, b) for b in tenant.batch_payments.values()]

    def accounts(self, tenant_id: str) -> list[dict[str, Any]]:
        """The chart of accounts."""
        with self.lock:
            return [render_account(a) for a in self.tenant(tenant_id).accounts.values()]

    def contacts(self, tenant_id: str) -> list[dict[str, Any]]:
        """All contacts (archived ones included), in creation order."""
        with self.lock:
            return [render_contact(c) for c in self.tenant(tenant_id).contacts.values()]

    def contact(self, tenant_id: str, contact_id: str) -> dict[str, Any]:
        """One contact.

        Raises:
            KeyError: Unknown tenant or contact.
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            found = tenant.contacts.get(contact_id) or tenant.contacts.get(contact_id.lower())
            if found is None:
                raise KeyError(contact_id)
            return render_contact(found)

    def bills(self, tenant_id: str) -> list[dict[str, Any]]:
        """The bills (ACCPAY invoices) of the tenant, in creation order."""
        with self.lock:
            tenant = self.tenant(tenant_id)
            return [
                render_invoice(tenant, inv)
                for inv in tenant.invoices.values()
                if inv.type == "ACCPAY"
            ]

    # ------------------------------------------------------------------ test-side writes

    def add_invoice(
        self,
        tenant_id: str,
        *,
        status: str = "AUTHORISED",
        total: Decimal = Decimal("100.00"),
        amount_paid: Decimal = Decimal("0"),
        currency: str = "USD",
        number: str | None = None,
        type: str = "ACCREC",
        contact_id: str | None = None,
        currency_rate: Decimal | None = None,
        reference: str = "",
        invoice_date: date | None = None,
        due_date: date | None = None,
    ) -> dict[str, Any]:
        """Create an invoice with one tax-free line of ``total``.

        ``amount_paid`` > 0 records a real payment into account 090 (so the invoice's
        ``Payments[]`` and GET /Payments agree); paying it in full makes it PAID, as
        does ``status="PAID"``.

        Raises:
            ValueError: On an unknown status/type, or a payment the status does not allow.
        """
        status = status.upper()
        if status not in INVOICE_STATUSES:
            raise ValueError(f"unknown invoice status {status!r}")
        if type not in {"ACCREC", "ACCPAY"}:
            raise ValueError("type must be ACCREC or ACCPAY")
        places = currency_places(currency)
        total = money(to_decimal(total), places)
        amount_paid = money(to_decimal(amount_paid), places)
        if status == "PAID" and amount_paid == 0:
            amount_paid = total
        if amount_paid > total or amount_paid < 0:
            raise ValueError("amount_paid must be within 0..total")
        if status == "PAID" and amount_paid != total:
            raise ValueError("a PAID invoice must be paid in full")
        if amount_paid > 0 and status not in {"AUTHORISED", "PAID"}:
            raise ValueError(f"a {status} invoice cannot have payments")
        with self.lock:
            tenant = self.tenant(tenant_id)
            today = self.clock.now().date()
            if contact_id is None:
                contact_id = next(
                    c.contact_id
                    for c in tenant.contacts.values()
                    if (c.is_supplier if type == "ACCPAY" else c.is_customer)
                )
            elif contact_id.lower() in tenant.contacts:
                contact_id = contact_id.lower()
            elif contact_id not in tenant.contacts:
                raise ValueError(f"unknown contact {contact_id}")
            inv = XInvoice(
                invoice_id=_new_uuid(self._runtime_rng),
                type=type,
                number=number or self._next_number(tenant, type),
                contact_id=contact_id,
                date=invoice_date or today,
                due_date=due_date or (invoice_date or today) + timedelta(days=30),
                status="AUTHORISED" if status == "PAID" else status,
                currency_code=currency.upper(),
                currency_rate=self._rate_for(tenant, currency, currency_rate),
                line_items=[
                    XLineItem(
                        line_item_id=_new_uuid(self._runtime_rng),
                        description="Sandbox item",
                        quantity=Decimal(1),
                        unit_amount=total,
                        account_code="200" if type == "ACCREC" else "429",
                        tax_type="NONE",
                        tax_amount=ZERO,
                        line_amount=total,
                    )
                ],
                updated=self._stamp(tenant),
                reference=reference,
                sent_to_contact=status not in {"DRAFT", "SUBMITTED"},
            )
            tenant.invoices[inv.invoice_id] = inv
            tenant.index_number(inv)
            self._emit(tenant, "INVOICE", "CREATE", inv.invoice_id, inv.updated)
            self._take_role(tenant, inv)
            if amount_paid > 0:
                self._commit(tenant, self._plan_for(tenant, inv, amount_paid, None, today))
            return render_invoice(tenant, inv)

    def add_contact(
        self,
        tenant_id: str,
        name: str,
        *,
        first_name: str = "",
        last_name: str = "",
        email: str = "",
        is_customer: bool = False,
        is_supplier: bool = False,
        status: str = "ACTIVE",
        contact_number: str | None = None,
    ) -> dict[str, Any]:
        """Create a contact as a person in Xero would.

        Raises:
            ValueError: On an empty name, a name another contact has (Xero: contact
                names are unique), or an unknown status.
        """
        status = status.upper()
        if status not in {"ACTIVE", "ARCHIVED"}:
            raise ValueError(f"unknown contact status {status!r}")
        if not name.strip():
            raise ValueError("a contact needs a name")
        with self.lock:
            tenant = self.tenant(tenant_id)
            self._check_unique_name(tenant, name, None)
            contact = XContact(
                contact_id=_new_uuid(self._runtime_rng),
                name=name,
                first_name=first_name,
                last_name=last_name,
                email=email,
                updated=self._stamp(tenant),
                is_customer=is_customer,
                is_supplier=is_supplier,
                status=status,
                contact_number=contact_number
                if contact_number is not None
                else f"C{len(tenant.contacts) + 1:03d}",
            )
            tenant.contacts[contact.contact_id] = contact
            self._emit(tenant, "CONTACT", "CREATE", contact.contact_id, contact.updated)
            return render_contact(contact)

    def edit_contact(self, tenant_id: str, contact_id: str, **fields: Any) -> dict[str, Any]:
        """Edit a contact as a person in Xero would; bumps ``UpdatedDateUTC``.

        Keyword names are Xero field names: ``Name``, ``FirstName``, ``LastName``,
        ``EmailAddress``, ``ContactNumber``, ``ContactStatus`` (``ACTIVE``/``ARCHIVED``).

        Raises:
            KeyError: Unknown tenant or contact.
            ValueError: Unknown field or bad value.
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            contact = tenant.contacts.get(contact_id) or tenant.contacts.get(contact_id.lower())
            if contact is None:
                raise KeyError(contact_id)
            known = {"name", "firstname", "lastname", "emailaddress", "contactnumber"}
            for name, value in fields.items():
                key = name.lower()
                if key not in known | {"contactstatus"}:
                    raise ValueError(f"edit_contact does not support field {name!r}")
                if key == "contactstatus" and str(value).upper() not in {"ACTIVE", "ARCHIVED"}:
                    raise ValueError(f"cannot set ContactStatus to {value!r}")
                if key == "name":
                    if not str(value).strip():
                        raise ValueError("a contact needs a name")
                    self._check_unique_name(tenant, str(value), contact.contact_id)
            # Validated first, so a bad edit changes nothing.
            for name, value in fields.items():
                key = name.lower()
                if key == "name":
                    contact.name = str(value)
                elif key == "firstname":
                    contact.first_name = str(value)
                elif key == "lastname":
                    contact.last_name = str(value)
                elif key == "emailaddress":
                    contact.email = str(value)
                elif key == "contactnumber":
                    contact.contact_number = str(value)
                else:
                    contact.status = str(value).upper()
            contact.updated = self._stamp(tenant)
            self._emit(tenant, "CONTACT", "UPDATE", contact.contact_id, contact.updated)
            return render_contact(contact)

    def apply_payment(
        self,
        tenant_id: str,
        invoice_id: str,
        amount: Decimal,
        reference: str | None = None,
        *,
        account_code: str = "090",
        payment_date: date | None = None,
    ) -> dict[str, Any]:
        """Record a payment as a person in Xero would, bypassing HTTP (and idempotency).

        Raises:
            KeyError: Unknown tenant or invoice.
            ValueError: With Xero's validation messages if the payment is not allowed.
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            inv = self._find_invoice(tenant, invoice_id)
            item: dict[str, Any] = {
                "Invoice": {"InvoiceID": inv.invoice_id},
                "Account": {"Code": account_code},
                "Date": (payment_date or self.clock.now().date()).isoformat(),
                "Amount": to_decimal(amount),
                "Reference": reference or "",
            }
            plan, errors, _, _ = self._plan_payment(tenant, item, {})
            if plan is None:
                raise ValueError("; ".join(errors))
            return render_payment(tenant, self._commit(tenant, plan))

    def edit_invoice(self, tenant_id: str, invoice_id: str, **fields: Any) -> dict[str, Any]:
        """Edit an invoice as a person in Xero would; bumps ``UpdatedDateUTC``.

        Keyword names are Xero field names: ``Status``, ``Reference``, ``InvoiceNumber``,
        ``Date``, ``DueDate``, ``CurrencyRate``, ``SentToContact``, ``ContactID`` and
        ``Total`` (replaces the lines with one tax-free line).

        Raises:
            KeyError: Unknown tenant or invoice.
            ValueError: Unknown field, bad value, or an edit Xero refuses on an invoice
                with payments.
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            inv = self._find_invoice(tenant, invoice_id)
            has_payments = inv.amount_paid > 0
            for name, value in fields.items():
                key = name.lower()
                if key == "status":
                    status = str(value).upper()
                    if status not in INVOICE_STATUSES or status == "PAID":
                        raise ValueError(f"cannot set Status to {value!r}")
                    if has_payments and status != inv.status:
                        raise ValueError(
                            "This document cannot be edited as it has a payment or credit "
                            "note allocated to it."
                        )
                    inv.status = status
                elif key == "reference":
                    inv.reference = str(value)
                elif key == "invoicenumber":
                    old_number, inv.number = inv.number, str(value)
                    tenant.index_number(inv, old_number)
                elif key in {"date", "duedate"}:
                    parsed = value if isinstance(value, date) else parse_date_value(value)
                    if key == "date":
                        inv.date = parsed
                    else:
                        inv.due_date = parsed
                elif key == "currencyrate":
                    inv.currency_rate = to_decimal(value)
                elif key == "senttocontact":
                    inv.sent_to_contact = bool(value)
                elif key == "contactid":
                    if str(value).lower() not in tenant.contacts:
                        raise ValueError(f"unknown contact {value}")
                    inv.contact_id = str(value).lower()
                elif key == "total":
                    total = money(to_decimal(value), currency_places(inv.currency_code))
                    if total < inv.amount_paid:
                        raise ValueError("Total cannot be less than the amount paid")
                    line = inv.line_items[0] if inv.line_items else None
                    inv.line_items = [
                        XLineItem(
                            line_item_id=line.line_item_id
                            if line
                            else _new_uuid(self._runtime_rng),
                            description=line.description if line else "Sandbox item",
                            quantity=Decimal(1),
                            unit_amount=total,
                            account_code=line.account_code if line else "200",
                            tax_type="NONE",
                            tax_amount=ZERO,
                            line_amount=total,
                        )
                    ]
                    if inv.status == "PAID" and inv.amount_due > 0:
                        inv.status = "AUTHORISED"
                    elif inv.status == "AUTHORISED" and has_payments and inv.amount_due == 0:
                        inv.status = "PAID"
                else:
                    raise ValueError(f"edit_invoice does not support field {name!r}")
            inv.updated = self._stamp(tenant)
            self._emit(tenant, "INVOICE", "UPDATE", inv.invoice_id, inv.updated)
            return render_invoice(tenant, inv)

    # ------------------------------------------------------------------ third-party changes

    def invoice_ids_for_payments(self, tenant_id: str, items: list[Any]) -> list[str]:
        """The invoices a ``PUT``/``POST /Payments`` body points at (unknown ones skipped).

        Used by the faults that act on "the target invoice(s)" of a write.
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            found: list[str] = []
            for item in items:
                ref = _field(item, "Invoice") if isinstance(item, dict) else None
                if not isinstance(ref, dict):
                    continue
                key = _field(ref, "InvoiceID") or _field(ref, "InvoiceNumber")
                if not isinstance(key, str) or not key:
                    continue
                try:
                    invoice_id = self._find_invoice(tenant, key).invoice_id
                except KeyError:
                    continue
                if invoice_id not in found:
                    found.append(invoice_id)
            return found

    def invoice_ids_for_batch_payments(self, tenant_id: str, items: list[Any]) -> list[str]:
        """The invoices a ``PUT /BatchPayments`` body points at (unknown ones skipped)."""
        members = [
            member
            for item in items
            if isinstance(item, dict)
            for member in (_field(item, "Payments") or [])
            if isinstance(_field(item, "Payments"), list)
        ]
        return self.invoice_ids_for_payments(tenant_id, members)

    def invoice_ids_of_batch_payment(self, tenant_id: str, batch_payment_id: str) -> list[str]:
        """The invoices a batch payment pays ([] for an unknown batch)."""
        with self.lock:
            tenant = self.tenant(tenant_id)
            batch = self._batch(tenant, batch_payment_id)
            if batch is None:
                return []
            ids = [tenant.payments[pid].invoice_id for pid in batch.payment_ids]
            return list(dict.fromkeys(ids))

    def invoice_id_of_payment(self, tenant_id: str, payment_id: str) -> str | None:
        """The invoice a payment is on, or None for an unknown payment."""
        with self.lock:
            try:
                return self._find_payment(self.tenant(tenant_id), payment_id).invoice_id
            except KeyError:
                return None

    def pay_elsewhere(
        self, tenant_id: str, invoice_ids: list[str], reference: str = PAID_ELSEWHERE_REFERENCE
    ) -> list[dict[str, Any]]:
        """Pay each invoice's whole ``AmountDue`` as someone in the Xero UI would.

        The payments go into account 090, dated today, with no ``Idempotency-Key``.
        Invoices that are not AUTHORISED or owe nothing are left alone.

        Returns:
            The payments made.
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            made = []
            for invoice_id in invoice_ids:
                inv = self._find_invoice(tenant, invoice_id)
                if inv.status != PAYABLE_STATUS or inv.amount_due <= 0:
                    continue
                plan = self._plan_for(
                    tenant, inv, inv.amount_due, reference, self.clock.now().date()
                )
                made.append(render_payment(tenant, self._commit(tenant, plan)))
            return made

    def touch_invoices(self, tenant_id: str, invoice_ids: list[str]) -> list[dict[str, Any]]:
        """Edit each invoice's ``Reference`` as a person in Xero would.

        Bumps ``UpdatedDateUTC`` (what a connector's optimistic-concurrency check sees)
        without changing any amount or status.

        Returns:
            The edited invoices.
        """
        edited = []
        with self.lock:
            for invoice_id in invoice_ids:
                self._edits += 1
                edited.append(
                    self.edit_invoice(
                        tenant_id,
                        invoice_id,
                        Reference=f"{CONCURRENT_EDIT_REFERENCE} #{self._edits}",
                    )
                )
        return edited

    # ------------------------------------------------------------------ API operations

    def create_payments(
        self, tenant_id: str, items: list[Any], *, summarize_errors: bool
    ) -> PaymentBatch:
        """Validate and apply payments as ``PUT``/``POST /Payments`` does.

        With ``summarize_errors`` (Xero's default) the batch is all-or-nothing: any
        invalid item means nothing is committed and only the failed items are returned.
        Without it, each item is applied or rejected on its own and every item is
        returned with a ``StatusAttributeString``.
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            if not summarize_errors:
                elements = []
                for item in items:
                    plan, errors, inv, acc = self._plan_payment(tenant, item, {})
                    if plan is None:
                        elements.append(self._echo(tenant, item, errors, inv, acc, True))
                    else:
                        rendered = render_payment(tenant, self._commit(tenant, plan))
                        rendered["StatusAttributeString"] = "OK"
                        elements.append(rendered)
                return PaymentBatch(True, elements)
            pending: dict[str, Decimal] = {}
            plans: list[_Plan] = []
            failed: list[dict[str, Any]] = []
            for item in items:
                plan, errors, inv, acc = self._plan_payment(tenant, item, pending)
                if plan is None:
                    failed.append(self._echo(tenant, item, errors, inv, acc, False))
                else:
                    # Later items in the same batch see the earlier ones' amounts.
                    iid = plan.invoice.invoice_id
                    pending[iid] = pending.get(iid, ZERO) + plan.amount
                    plans.append(plan)
            if failed:
                return PaymentBatch(False, failed)
            return PaymentBatch(
                True, [render_payment(tenant, self._commit(tenant, p)) for p in plans]
            )

    def delete_payment(self, tenant_id: str, payment_id: str) -> tuple[bool, dict[str, Any]]:
        """Reverse a payment (``POST /Payments/{id}`` with Status DELETED).

        Returns:
            ``(True, rendered payment)`` or ``(False, rendered payment with
            ValidationErrors)``.

        Raises:
            KeyError: Unknown tenant or payment.
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            payment = self._find_payment(tenant, payment_id)
            errors = []
            if payment.status == "DELETED":
                errors.append(MSG_ALREADY_DELETED)
            elif payment.batch_payment_id is not None:
                # Xero: "payments created via batch payments … are not supported" (DOC-PAY).
                errors.append(MSG_BATCH_MEMBER)
            elif payment.is_reconciled:
                errors.append(MSG_RECONCILED)
            if errors:
                element = render_payment(tenant, payment)
                element["HasValidationErrors"] = True
                element["ValidationErrors"] = [{"Message": m} for m in errors]
                return False, element
            self._reverse(tenant, payment, self._stamp(tenant))
            return True, render_payment(tenant, payment)

    def create_batch_payments(
        self, tenant_id: str, items: list[Any], *, summarize_errors: bool
    ) -> PaymentBatch:
        """Validate and make batch payments as ``PUT /BatchPayments`` does.

        Each batch is all-or-nothing: its payments are applied together or, if any of
        them is refused, none is (a batch is one bank transaction). The batch's
        ``Account`` and ``Date`` apply to every payment in it (a payment's own are used
        only when the batch has none: sandbox choice, the spec's example sends both).
        A payment keeps its own ``Reference`` ("" when it has none, as in the spec's
        GET /Payments example of a batch payment). Invoices of different contacts may
        share a batch (what batch payments are for: paying several suppliers); sales
        invoices and bills may not (``Type`` is RECBATCH or PAYBATCH), nor invoices in
        different currencies (sandbox rule; wording unconfirmed).

        With ``summarize_errors`` a refused batch refuses the request (HTTP 400, nothing
        committed, only the refused batches returned); without it every batch is
        returned with a ``StatusAttributeString``, as ``PUT /Payments`` does (the same
        shape for batches is unconfirmed).
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            if not summarize_errors:
                elements = []
                for item in items:
                    # Each batch is committed before the next is planned: later batches
                    # see the earlier ones' payments.
                    plan, failure = self._plan_batch(tenant, item, {})
                    if plan is None:
                        assert failure is not None
                        failure["StatusAttributeString"] = "ERROR"
                        elements.append(failure)
                    else:
                        element = render_batch_payment(tenant, self._commit_batch(tenant, plan))
                        element["StatusAttributeString"] = "OK"
                        elements.append(element)
                return PaymentBatch(True, elements)
            pending: dict[str, Decimal] = {}
            plans: list[_BatchPlan] = []
            failed: list[dict[str, Any]] = []
            for item in items:
                plan, failure = self._plan_batch(tenant, item, pending)
                if plan is None:
                    assert failure is not None
                    failed.append(failure)
                    continue
                for member in plan.plans:
                    iid = member.invoice.invoice_id
                    pending[iid] = pending.get(iid, ZERO) + member.amount
                plans.append(plan)
            if failed:
                return PaymentBatch(False, failed)
            return PaymentBatch(
                True, [render_batch_payment(tenant, self._commit_batch(tenant, p)) for p in plans]
            )

    def delete_batch_payment(
        self, tenant_id: str, batch_payment_id: str
    ) -> tuple[bool, dict[str, Any]]:
        """Delete a batch payment (``POST /BatchPayments`` with Status DELETED): every
        payment in it is reversed at once.

        Returns:
            ``(True, rendered batch)`` or ``(False, rendered batch with ValidationErrors)``.

        Raises:
            KeyError: Unknown tenant or batch payment.
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            batch = self._batch(tenant, batch_payment_id)
            if batch is None:
                raise KeyError(batch_payment_id)
            errors = []
            if batch.status == "DELETED":
                errors.append(MSG_BATCH_ALREADY_DELETED)
            elif batch.is_reconciled:
                errors.append(MSG_BATCH_RECONCILED)
            if errors:
                element = render_batch_payment(tenant, batch)
                element["ValidationErrors"] = [{"Message": m} for m in errors]
                return False, element
            stamp = self._stamp(tenant)
            for pid in batch.payment_ids:
                self._reverse(tenant, tenant.payments[pid], stamp)
            batch.status = "DELETED"
            batch.updated = stamp
            return True, render_batch_payment(tenant, batch)

    def find_batch_payment(self, tenant_id: str, batch_payment_id: str) -> dict[str, Any]:
        """One batch payment, rendered.

        Raises:
            KeyError: Unknown tenant or batch payment.
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            batch = self._batch(tenant, batch_payment_id)
            if batch is None:
                raise KeyError(batch_payment_id)
            return render_batch_payment(tenant, batch)

    def find_invoice(self, tenant: XTenant, key: str) -> XInvoice:
        """The internal record of an invoice by id (any case) or number (for the routes).

        Raises:
            KeyError: Unknown invoice.
        """
        with self.lock:
            return self._find_invoice(tenant, key)

    def find_payment(self, tenant_id: str, payment_id: str) -> dict[str, Any]:
        """One payment, rendered.

        Raises:
            KeyError: Unknown tenant or payment.
        """
        with self.lock:
            tenant = self.tenant(tenant_id)
            return render_payment(tenant, self._find_payment(tenant, payment_id))

    # ------------------------------------------------------------------ internals

    def _find_invoice(self, tenant: XTenant, key: str) -> XInvoice:
        found = tenant.invoices.get(key) or tenant.invoices.get(key.lower())
        if found is not None:
            return found
        # InvoiceNumber is only unique for ACCREC, so prefer a sales invoice.
        matches = [tenant.invoices[i] for i in tenant.numbers.get(key, ())]
        matches.sort(key=lambda inv: inv.type != "ACCREC")
        if not matches:
            raise KeyError(key)
        return matches[0]

    def _check_unique_name(self, tenant: XTenant, name: str, own_id: str | None) -> None:
        wanted = name.strip().casefold()
        for other in tenant.contacts.values():
            if other.contact_id != own_id and other.name.strip().casefold() == wanted:
                raise ValueError(f"The contact name {name} is already assigned to another contact.")

    def _emit(
        self, tenant: XTenant, category: str, event_type: str, resource_id: str, when: datetime
    ) -> None:
        self.webhooks.publish(
            tenant_id=tenant.tenant_id,
            category=category,
            event_type=event_type,
            resource_id=resource_id,
            when=when,
        )

    def _take_role(self, tenant: XTenant, inv: XInvoice) -> None:
        """A contact becomes a customer with its first sales invoice, a supplier with its first bill."""
        contact = tenant.contacts[inv.contact_id]
        attribute = "is_supplier" if inv.type == "ACCPAY" else "is_customer"
        if not getattr(contact, attribute):
            setattr(contact, attribute, True)
            contact.updated = self._stamp(tenant)
            self._emit(tenant, "CONTACT", "UPDATE", contact.contact_id, contact.updated)

    def _find_payment(self, tenant: XTenant, payment_id: str) -> XPayment:
        found = tenant.payments.get(payment_id) or tenant.payments.get(payment_id.lower())
        if found is None:
            raise KeyError(payment_id)
        return found

    @staticmethod
    def _batch(tenant: XTenant, batch_payment_id: str) -> XBatchPayment | None:
        return tenant.batch_payments.get(batch_payment_id) or tenant.batch_payments.get(
            batch_payment_id.lower()
        )

    def _reverse(self, tenant: XTenant, payment: XPayment, stamp: datetime) -> None:
        """Delete a payment: its invoice owes the amount again."""
        inv = tenant.invoices[payment.invoice_id]
        payment.status = "DELETED"
        payment.updated = stamp
        inv.amount_paid -= payment.amount
        if inv.status == "PAID" and inv.amount_due > 0:
            inv.status = "AUTHORISED"
        inv.updated = stamp
        self._emit(tenant, "INVOICE", "UPDATE", inv.invoice_id, stamp)

    def _plan_batch(
        self, tenant: XTenant, item: Any, pending: Mapping[str, Decimal]
    ) -> tuple[_BatchPlan | None, dict[str, Any] | None]:
        """Validate one requested batch: its plan, or the element echoing its errors."""
        if not isinstance(item, dict):
            return None, {
                "HasValidationErrors": True,
                "ValidationErrors": [{"Message": MSG_BATCH_NOT_OBJECT}],
            }
        members = _field(item, "Payments")
        errors: list[str] = []
        if not isinstance(members, list) or not members:
            members = []
            errors.append(MSG_BATCH_EMPTY)
        batch_account = _field(item, "Account")
        batch_date = _field(item, "Date")
        local = dict(pending)
        plans: list[_Plan] = []
        echoes: list[dict[str, Any]] = []
        invoices: list[XInvoice] = []
        for member in members:
            merged: Any = member
            if isinstance(member, dict):
                merged = {
                    k: v
                    for k, v in member.items()
                    if not (
                        (str(k).lower() == "account" and batch_account is not None)
                        or (str(k).lower() == "date" and batch_date is not None)
                    )
                }
                if batch_account is not None:
                    merged["Account"] = batch_account
                if batch_date is not None:
                    merged["Date"] = batch_date
            plan, member_errors, inv, acc = self._plan_payment(tenant, merged, local)
            if inv is not None:
                invoices.append(inv)
            if plan is None:
                errors.extend(member_errors)
                echoes.append(self._echo(tenant, member, member_errors, inv, acc, False))
                continue
            iid = plan.invoice.invoice_id
            local[iid] = local.get(iid, ZERO) + plan.amount
            plans.append(plan)
            echo = self._echo(tenant, member, [], inv, acc, False)
            echo["HasValidationErrors"] = False
            del echo["ValidationErrors"]
            echoes.append(echo)
        if len({inv.type for inv in invoices}) > 1:
            errors.append(MSG_BATCH_MIXED_TYPES)
        if len({inv.currency_code for inv in invoices}) > 1:
            errors.append(MSG_BATCH_CURRENCY)
        reference = _field(item, "Reference")
        texts = {
            canonical: str(value)
            for name, value in item.items()
            if (canonical := _BATCH_TEXTS.get(str(name).lower())) and value not in (None, "")
        }
        if errors or not plans:
            element: dict[str, Any] = {}
            if plans or invoices:
                account = plans[0].account if plans else None
                if account is not None:
                    element["Account"] = render_account(account, full=False)
            if reference not in (None, ""):
                element["Reference"] = str(reference)
            element.update(texts)
            if batch_date not in (None, ""):
                with contextlib.suppress(ValueError):
                    element["Date"] = ms_date(parse_date_value(batch_date))
            element["Payments"] = echoes
            element["ValidationErrors"] = [{"Message": m} for m in dict.fromkeys(errors)]
            return None, element
        first = plans[0]
        return (
            _BatchPlan(
                type="PAYBATCH" if first.invoice.type == "ACCPAY" else "RECBATCH",
                account=first.account,
                date=first.date,
                reference="" if reference is None else str(reference),
                texts=texts,
                plans=plans,
            ),
            None,
        )

    def _commit_batch(self, tenant: XTenant, plan: _BatchPlan) -> XBatchPayment:
        stamp = self._stamp(tenant)
        batch = XBatchPayment(
            batch_payment_id=_new_uuid(self._runtime_rng),
            type=plan.type,
            account_id=plan.account.account_id,
            date=plan.date,
            payment_ids=[],
            updated=stamp,
            reference=plan.reference,
            texts=plan.texts,
        )
        tenant.batch_payments[batch.batch_payment_id] = batch
        for member in plan.plans:
            payment = self._commit(tenant, member, stamp)
            payment.batch_payment_id = batch.batch_payment_id
            batch.payment_ids.append(payment.payment_id)
        return batch

    def _find_account(self, tenant: XTenant, ref: Mapping[str, Any]) -> XAccount | None:
        account_id = _field(ref, "AccountID")
        code = _field(ref, "Code")
        for account in tenant.accounts.values():
            if isinstance(account_id, str) and account.account_id == account_id.lower():
                return account
            if account_id is None and isinstance(code, str) and account.code == code:
                return account
        return None

    def _stamp(self, tenant: XTenant) -> datetime:
        """The next ``UpdatedDateUTC`` of the tenant: now, but strictly after the last one.

        Every change takes a stamp, so this is also where the tenant's data version
        (which invalidates the read caches) moves.
        """
        now = truncate_ms(self.clock.now())
        if tenant.last_stamp is not None and now <= tenant.last_stamp:
            now = tenant.last_stamp + timedelta(milliseconds=1)
        tenant.last_stamp = now
        tenant.version += 1
        return now

    def _rate_for(self, tenant: XTenant, currency: str, rate: Decimal | None) -> Decimal:
        if currency.upper() == tenant.base_currency:
            return Decimal("1.000000")
        if rate is not None:
            return to_decimal(rate)
        return DEFAULT_RATES.get(currency.upper(), Decimal("1.000000"))

    def _next_number(self, tenant: XTenant, type_: str) -> str:
        prefix = "INV-" if type_ == "ACCREC" else "BILL-"
        return f"{prefix}{tenant.number_max.get(prefix, 0) + 1:04d}"

    def _plan_for(
        self, tenant: XTenant, inv: XInvoice, amount: Decimal, reference: str | None, when: date
    ) -> _Plan:
        account = next(a for a in tenant.accounts.values() if a.code == "090")
        return _Plan(inv, account, when, amount, reference or "", inv.currency_rate, False)

    def _plan_payment(
        self, tenant: XTenant, item: Any, pending: Mapping[str, Decimal]
    ) -> tuple[_Plan | None, list[str], XInvoice | None, XAccount | None]:
        """Validate one requested payment; returns the plan or the error messages."""
        if not isinstance(item, dict):
            return None, [MSG_NOT_OBJECT], None, None
        errors: list[str] = []
        invoice: XInvoice | None = None
        account: XAccount | None = None

        ref = _field(item, "Invoice")
        if isinstance(ref, dict):
            key = _field(ref, "InvoiceID") or _field(ref, "InvoiceNumber")
            if isinstance(key, str) and key:
                try:
                    invoice = self._find_invoice(tenant, key)
                except KeyError:
                    errors.append(MSG_INVOICE_NOT_FOUND)
            else:
                errors.append(MSG_INVOICE_NOT_FOUND)
        elif any(_field(item, k) for k in ("CreditNote", "Prepayment", "Overpayment")):
            errors.append(MSG_ONLY_INVOICES)
        else:
            errors.append(MSG_NO_DOCUMENT)

        acc_ref = _field(item, "Account")
        if isinstance(acc_ref, dict):
            account = self._find_account(tenant, acc_ref)
        if account is None:
            errors.append(MSG_ACCOUNT_NOT_FOUND)
        elif not account.accepts_payments or account.status != "ACTIVE":
            errors.append(MSG_ACCOUNT_TYPE)

        raw_date = _field(item, "Date")
        pay_date: date | None = None
        if raw_date is None or raw_date == "":
            errors.append(MSG_DATE_MISSING)
        else:
            try:
                pay_date = parse_date_value(raw_date)
            except ValueError:
                errors.append(MSG_DATE_INVALID)

        raw_amount = _field(item, "Amount")
        amount: Decimal | None = None
        if raw_amount is None:
            errors.append(MSG_AMOUNT_MISSING)
        else:
            try:
                amount = to_decimal(raw_amount)
            except ValueError:
                errors.append(MSG_AMOUNT_INVALID)
            else:
                places = currency_places(invoice.currency_code if invoice else tenant.base_currency)
                amount = money(amount, places)
                if amount <= 0:
                    errors.append(MSG_AMOUNT_POSITIVE)

        rate: Decimal | None = None
        raw_rate = _field(item, "CurrencyRate")
        if raw_rate is not None:
            try:
                rate = to_decimal(raw_rate)
                if rate <= 0:
                    raise ValueError
            except ValueError:
                errors.append(MSG_RATE_INVALID)

        if invoice is not None:
            if invoice.status != PAYABLE_STATUS:
                errors.append(MSG_NOT_AUTHORISED)
            outstanding = invoice.amount_due - pending.get(invoice.invoice_id, ZERO)
            if amount is not None and amount > 0 and amount > outstanding:
                errors.append(MSG_EXCEEDS)

        if errors or invoice is None or account is None or pay_date is None or amount is None:
            return None, errors, invoice, account
        if invoice.currency_code == tenant.base_currency or rate is None:
            # CurrencyRate only applies to foreign-currency documents (fact sheet §1).
            rate = invoice.currency_rate
        reference = _field(item, "Reference")
        return (
            _Plan(
                invoice=invoice,
                account=account,
                date=pay_date,
                amount=amount,
                reference="" if reference is None else str(reference),
                currency_rate=rate,
                is_reconciled=_as_bool(_field(item, "IsReconciled")),
            ),
            [],
            invoice,
            account,
        )

    def _echo(
        self,
        tenant: XTenant,
        item: Any,
        errors: list[str],
        invoice: XInvoice | None,
        account: XAccount | None,
        with_status: bool,
    ) -> dict[str, Any]:
        """A failed item: the input, with the resolved invoice/account, plus the errors.

        The input is echoed as Xero's serializer would write it back (amounts as
        numbers, the date as ``/Date()/``, flags as booleans); values it could not have
        read are left out.
        """
        element: dict[str, Any] = {}
        for name, value in item.items() if isinstance(item, dict) else ():
            key = str(name).lower()
            try:
                if key in _DECIMAL_FIELDS:
                    value = to_decimal(value)
                elif key == "date":
                    value = ms_date(parse_date_value(value))
                elif key in _BOOL_FIELDS:
                    value = _as_bool(value) if isinstance(value, bool | str) else None
                elif key in _OBJECT_FIELDS and not isinstance(value, dict):
                    value = None
            except ValueError:
                value = None
            if value is not None:
                element[name] = value
        if invoice is not None:
            element["Invoice"] = render_invoice(tenant, invoice, line_items=False, payments=False)
        if account is not None:
            element["Account"] = render_account(account, full=False)
        element["HasValidationErrors"] = True
        if with_status:
            element["StatusAttributeString"] = "ERROR"
        element["ValidationErrors"] = [{"Message": m} for m in errors]
        return element

    def _bank_amount(self, tenant: XTenant, plan: _Plan) -> Decimal:
        if plan.invoice.currency_code == tenant.base_currency:
            return plan.amount
        # CurrencyRate is taken as invoice-currency units per base unit (Xero's
        # direction is unconfirmed, fact sheet §11.6); bank accounts are in base currency.
        return money(plan.amount / plan.currency_rate, currency_places(tenant.base_currency))

    def _commit(
        self,
        tenant: XTenant,
        plan: _Plan,
        stamp: datetime | None = None,
        payment_id: str | None = None,
    ) -> XPayment:
        stamp = stamp or self._stamp(tenant)
        inv = plan.invoice
        payment = XPayment(
            payment_id=payment_id or _new_uuid(self._runtime_rng),
            invoice_id=inv.invoice_id,
            account_id=plan.account.account_id,
            date=plan.date,
            amount=plan.amount,
            bank_amount=self._bank_amount(tenant, plan),
            currency_rate=plan.currency_rate,
            payment_type="ACCPAYPAYMENT" if inv.type == "ACCPAY" else "ACCRECPAYMENT",
            updated=stamp,
            reference=plan.reference,
            is_reconciled=plan.is_reconciled,
        )
        tenant.payments[payment.payment_id] = payment
        inv.payment_ids.append(payment.payment_id)
        inv.amount_paid += plan.amount
        if inv.amount_due <= 0:
            inv.status = "PAID"
        # The spec example shows the invoice's UpdatedDateUTC equal to the payment's.
        inv.updated = stamp
        self._emit(tenant, "INVOICE", "UPDATE", inv.invoice_id, stamp)
        return payment

    # ------------------------------------------------------------------ seeding

    def _seed_tenant(self, rng: random.Random, index: int, n_invoices: int, n_bills: int) -> None:
        now = truncate_ms(self.clock.now())
        tenant = XTenant(
            tenant_id=_new_uuid(rng),
            name="Demo Company (US)" if index == 0 else f"Demo Company {index + 1} (US)",
            base_currency="USD",
            connection_id=_new_uuid(rng),
            created=now - timedelta(days=90),
        )
        self._tenants[tenant.tenant_id] = tenant
        self.auth.add_grant(_new_uuid(rng), [tenant.tenant_id])

        setup = now - timedelta(days=30)
        for offset, (code, name, type_, cls, tax, enabled, bank_no, system, desc) in enumerate(
            _ACCOUNTS
        ):
            account = XAccount(
                account_id=_new_uuid(rng),
                code=code,
                name=name,
                type=type_,
                account_class=cls,
                tax_type=tax,
                updated=setup + timedelta(seconds=offset),
                enable_payments=enabled,
                bank_account_number=bank_no,
                bank_account_type="BANK" if type_ == "BANK" else None,
                currency_code="USD" if type_ == "BANK" else None,
                system_account=system,
                description=desc,
                reporting_code={"ASSET": "ASS", "LIABILITY": "LIA", "REVENUE": "REV"}.get(
                    cls, "EXP"
                ),
            )
            tenant.accounts[account.account_id] = account
        for offset, (name, first, last, supplier) in enumerate(_CONTACTS):
            contact = XContact(
                contact_id=_new_uuid(rng),
                name=name,
                first_name=first,
                last_name=last,
                email=f"{first.lower()}@{name.split()[0].lower()}.example.com",
                updated=setup + timedelta(hours=1, minutes=offset),
                is_customer=not supplier,
                is_supplier=supplier,
                contact_number=f"C{offset + 1:03d}",
            )
            tenant.contacts[contact.contact_id] = contact
        customers = [c.contact_id for c in tenant.contacts.values() if c.is_customer]
        suppliers = [c.contact_id for c in tenant.contacts.values() if c.is_supplier]

        specs: list[tuple[str, str, str, str | None, str]] = [
            ("ACCREC", *_INVOICE_PATTERN[i % len(_INVOICE_PATTERN)], f"INV-{i + 1:04d}")
            for i in range(n_invoices)
        ]
        specs += [
            ("ACCPAY", *_BILL_PATTERN[i % len(_BILL_PATTERN)], f"SUP-{1001 + i}")
            for i in range(n_bills)
        ]
        # Spread the last changes over the past ten days, in an order unrelated to the
        # numbering, so ordering by UpdatedDateUTC is visibly not ordering by number.
        window_ms = 10 * 86_400_000
        offsets = sorted(rng.sample(range(3_600_000, window_ms), len(specs)), reverse=True)
        order = list(range(len(specs)))
        rng.shuffle(order)
        stamps = {
            spec_index: now - timedelta(milliseconds=offsets[pos])
            for pos, spec_index in enumerate(order)
        }

        for spec_index, (type_, status, currency, paid, number) in enumerate(specs):
            stamp = stamps[spec_index]
            inv_date = stamp.date() - timedelta(days=rng.randint(3, 20))
            lines = []
            for _ in range(rng.randint(1, 3)):
                quantity = Decimal(rng.randint(1, 5))
                unit = Decimal(rng.randint(1_000, 50_000)) / 100
                line_amount = money(quantity * unit)
                lines.append(
                    XLineItem(
                        line_item_id=_new_uuid(rng),
                        description=rng.choice(_DESCRIPTIONS),
                        quantity=quantity,
                        unit_amount=unit,
                        account_code="200" if type_ == "ACCREC" else "429",
                        tax_type="OUTPUT" if type_ == "ACCREC" else "INPUT",
                        tax_amount=money(line_amount * TAX_RATE),
                        line_amount=line_amount,
                    )
                )
            inv = XInvoice(
                invoice_id=_new_uuid(rng),
                type=type_,
                number=number,
                contact_id=rng.choice(customers if type_ == "ACCREC" else suppliers),
                date=inv_date,
                due_date=inv_date + timedelta(days=30),
                status="AUTHORISED" if status == "PAID" else status,
                currency_code=currency,
                currency_rate=self._rate_for(tenant, currency, None),
                line_items=lines,
                updated=stamp,
                reference=f"PO-{rng.randint(1000, 9999)}" if rng.random() < 0.5 else "",
                sent_to_contact=status not in {"DRAFT", "SUBMITTED"},
            )
            tenant.invoices[inv.invoice_id] = inv
            tenant.index_number(inv)
            if paid is not None:
                amount = inv.total if paid == "full" else money(inv.total * Decimal("0.4"))
                pay_date = min(inv_date + timedelta(days=rng.randint(1, 3)), stamp.date())
                plan = self._plan_for(tenant, inv, amount, f"Seed payment {number}", pay_date)
                # Seeded payments take the invoice's stamp and an id from the seed.
                self._commit(tenant, plan, stamp, _new_uuid(rng))
        tenant.last_stamp = (
            max(inv.updated for inv in tenant.invoices.values()) if tenant.invoices else now
        )
