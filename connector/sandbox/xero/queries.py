"""List queries for the Xero collections: filters, ordering, paging, If-Modified-Since."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from connector.sandbox.where import FieldTable, compile_where, sort_key_for_order
from connector.sandbox.xero.models import XAccount, XContact, XInvoice, XPayment, XTenant

__all__ = [
    "ListQuery",
    "Page",
    "account_table",
    "contact_table",
    "invoice_table",
    "payment_table",
    "run_query",
]

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class ListQuery:
    """The generic list parameters of a GET on a Xero collection.

    Attributes:
        where: The ``where`` expression.
        order: The ``order`` parameter; default is ``UpdatedDateUTC ASC, <ID> ASC``.
        page: 1-based page, or None for "everything".
        page_size: Items per page, already clamped to 1..1000.
        modified_since: ``If-Modified-Since``; items updated at or after it (compared
            at second granularity) are returned.
    """

    where: str | None = None
    order: str | None = None
    page: int | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    modified_since: datetime | None = None

    @staticmethod
    def clamp_page_size(raw: str | None) -> int:
        """Xero adjusts out-of-range sizes instead of failing: 5000 → 1000, 0 → 1."""
        if raw is None or not raw.strip().lstrip("-").isdigit():
            return DEFAULT_PAGE_SIZE
        return min(max(int(raw), 1), MAX_PAGE_SIZE)


@dataclass(frozen=True)
class Page:
    """Result of :func:`run_query`; ``pagination`` is None when no page was asked for."""

    items: list[Any]
    pagination: dict[str, int] | None


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def run_query(
    items: Iterable[T],
    table: FieldTable[T],
    query: ListQuery,
    *,
    id_of: Callable[[T], str],
    updated_of: Callable[[T], datetime],
    extra: Sequence[Callable[[T], bool]] = (),
) -> Page:
    """Filter, order and page ``items``.

    Raises:
        WhereError: On a bad ``where`` or ``order``.
    """
    predicates = list(extra)
    if query.where and query.where.strip():
        predicates.append(compile_where(query.where, table))
    if query.modified_since is not None:
        since = _second(query.modified_since)
        predicates.append(lambda item: _second(updated_of(item)) >= since)
    selected = [item for item in items if all(p(item) for p in predicates)]
    if query.order and query.order.strip():
        key = sort_key_for_order(query.order, table)
        selected.sort(key=lambda item: (*key(item), id_of(item).lower()))
    else:
        selected.sort(key=lambda item: (updated_of(item), id_of(item).lower()))
    if query.page is None:
        return Page(selected, None)
    page = max(query.page, 1)
    start = (page - 1) * query.page_size
    pagination = {
        "page": page,
        "pageSize": query.page_size,
        "pageCount": math.ceil(len(selected) / query.page_size),
        "itemCount": len(selected),
    }
    return Page(selected[start : start + query.page_size], pagination)


def invoice_table(tenant: XTenant) -> FieldTable[XInvoice]:
    """Filterable Invoice fields."""

    def contact(inv: XInvoice) -> XContact:
        return tenant.contacts[inv.contact_id]

    return FieldTable(
        "Invoice",
        {
            "InvoiceID": lambda i: i.invoice_id,
            "InvoiceNumber": lambda i: i.number,
            "Type": lambda i: i.type,
            "Status": lambda i: i.status,
            "Reference": lambda i: i.reference,
            "Contact.ContactID": lambda i: i.contact_id,
            "Contact.Name": lambda i: contact(i).name,
            "Date": lambda i: i.date,
            "DueDate": lambda i: i.due_date,
            "CurrencyCode": lambda i: i.currency_code,
            "CurrencyRate": lambda i: i.currency_rate,
            "SubTotal": lambda i: i.sub_total,
            "TotalTax": lambda i: i.total_tax,
            "Total": lambda i: i.total,
            "AmountDue": lambda i: i.amount_due,
            "AmountPaid": lambda i: i.amount_paid,
            "AmountCredited": lambda i: i.amount_credited,
            "SentToContact": lambda i: i.sent_to_contact,
            "UpdatedDateUTC": lambda i: i.updated,
        },
    )


def payment_table(tenant: XTenant) -> FieldTable[XPayment]:
    """Filterable Payment fields."""
    return FieldTable(
        "Payment",
        {
            "PaymentID": lambda p: p.payment_id,
            "Reference": lambda p: p.reference,
            "Status": lambda p: p.status,
            "PaymentType": lambda p: p.payment_type,
            "Date": lambda p: p.date,
            "Amount": lambda p: p.amount,
            "BankAmount": lambda p: p.bank_amount,
            "CurrencyRate": lambda p: p.currency_rate,
            "IsReconciled": lambda p: p.is_reconciled,
            "UpdatedDateUTC": lambda p: p.updated,
            "Invoice.InvoiceID": lambda p: p.invoice_id,
            "Invoice.InvoiceNumber": lambda p: tenant.invoices[p.invoice_id].number,
            "Invoice.Type": lambda p: tenant.invoices[p.invoice_id].type,
            "Invoice.Contact.ContactID": lambda p: tenant.invoices[p.invoice_id].contact_id,
            "Account.AccountID": lambda p: p.account_id,
            "Account.Code": lambda p: tenant.accounts[p.account_id].code,
        },
    )


def account_table() -> FieldTable[XAccount]:
    """Filterable Account fields."""
    return FieldTable(
        "Account",
        {
            "AccountID": lambda a: a.account_id,
            "Code": lambda a: a.code,
            "Name": lambda a: a.name,
            "Type": lambda a: a.type,
            "Class": lambda a: a.account_class,
            "Status": lambda a: a.status,
            "TaxType": lambda a: a.tax_type,
            "EnablePaymentsToAccount": lambda a: a.enable_payments,
            "BankAccountNumber": lambda a: a.bank_account_number,
            "CurrencyCode": lambda a: a.currency_code,
            "SystemAccount": lambda a: a.system_account,
            "ReportingCode": lambda a: a.reporting_code,
            "UpdatedDateUTC": lambda a: a.updated,
        },
    )


def contact_table() -> FieldTable[XContact]:
    """Filterable Contact fields."""
    return FieldTable(
        "Contact",
        {
            "ContactID": lambda c: c.contact_id,
            "Name": lambda c: c.name,
            "FirstName": lambda c: c.first_name,
            "LastName": lambda c: c.last_name,
            "EmailAddress": lambda c: c.email,
            "ContactNumber": lambda c: c.contact_number,
            "ContactStatus": lambda c: c.status,
            "IsCustomer": lambda c: c.is_customer,
            "IsSupplier": lambda c: c.is_supplier,
            "UpdatedDateUTC": lambda c: c.updated,
        },
    )
