"""List queries for the Xero collections: filters, ordering, paging, If-Modified-Since.

A client paging through a collection asks the same query once per page; the filtered,
ordered selection is kept in a :class:`QueryCache` keyed by the query and the tenant's
data version, so each page costs a slice instead of a scan and a sort of everything.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from connector.sandbox.where import FieldTable, compile_where, sort_key_for_order
from connector.sandbox.xero.models import (
    XAccount,
    XBatchPayment,
    XContact,
    XInvoice,
    XPayment,
    XTenant,
)
from connector.sandbox.xero.render import batch_total

__all__ = [
    "ListQuery",
    "Page",
    "QueryCache",
    "account_table",
    "batch_payment_table",
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


class QueryCache:
    """The most recent list selections, each valid for one data version (LRU).

    Args:
        size: How many selections to keep (one per query a client is paging through).
    """

    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[int, list[Any]]] = OrderedDict()

    def get(self, key: Hashable, version: int) -> list[Any] | None:
        """The selection stored for ``key`` if it was made at ``version``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != version:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: Hashable, version: int, items: list[Any]) -> None:
        """Store a selection made at ``version``."""
        with self._lock:
            self._entries[key] = (version, items)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def _is_default_order(order: str | None) -> bool:
    """``UpdatedDateUTC`` ascending is the default order (with the id as tie-breaker)."""
    if not order or not order.strip():
        return True
    words = order.split()
    return words[0].lower() == "updateddateutc" and (
        len(words) == 1 or (len(words) == 2 and words[1].upper() == "ASC")
    )


def run_query(
    items: Iterable[T],
    table: FieldTable[T],
    query: ListQuery,
    *,
    id_of: Callable[[T], str],
    updated_of: Callable[[T], datetime],
    extra: Sequence[Callable[[T], bool]] = (),
    cache: QueryCache | None = None,
    cache_key: Hashable | None = None,
    version: int = 0,
) -> Page:
    """Filter, order and page ``items``.

    Args:
        items: The whole collection.
        table: Its filterable fields.
        query: The list parameters.
        id_of: The entity id (the tie-breaker of every order).
        updated_of: The entity's ``UpdatedDateUTC``.
        extra: More predicates (the explicit filters such as ``Statuses``).
        cache: Where to keep the selection for the next page.
        cache_key: Identifies ``items`` and ``extra`` (the query's own parameters are
            added); no caching without it.
        version: The data version ``items`` were read at.

    Raises:
        WhereError: On a bad ``where`` or ``order``.
    """
    key: Hashable | None = None
    if (
        cache is not None
        and cache_key is not None
        and query.modified_since is not None
        and _is_default_order(query.order)
    ):
        # A keyset reader (If-Modified-Since moving forward page by page) asks a new
        # question every page. In the default order the answer is a suffix of the
        # unfiltered-by-date selection, so keep that one and bisect into it instead
        # of scanning every item per page (quadratic over a backfill).
        base_key = (cache_key, query.where, query.order, "by-updated")
        cached = cache.get(base_key, version)
        if cached is None:
            everything = _select(
                items,
                table,
                replace(query, modified_since=None),
                id_of=id_of,
                updated_of=updated_of,
                extra=extra,
            )
            cached = [everything, [_second(updated_of(item)) for item in everything]]
            cache.put(base_key, version, cached)
        everything, seconds = cached
        start = bisect.bisect_left(seconds, _second(query.modified_since))
        return _page(everything[start:], query)
    if cache is not None and cache_key is not None:
        since_key = _second(query.modified_since) if query.modified_since else None
        key = (cache_key, query.where, query.order, since_key)
        selected = cache.get(key, version)
        if selected is not None:
            return _page(selected, query)
    selected = _select(items, table, query, id_of=id_of, updated_of=updated_of, extra=extra)
    if cache is not None and key is not None:
        cache.put(key, version, selected)
    return _page(selected, query)


def _select(
    items: Iterable[T],
    table: FieldTable[T],
    query: ListQuery,
    *,
    id_of: Callable[[T], str],
    updated_of: Callable[[T], datetime],
    extra: Sequence[Callable[[T], bool]],
) -> list[T]:
    predicates = list(extra)
    if query.where and query.where.strip():
        predicates.append(compile_where(query.where, table))
    if query.modified_since is not None:
        since = _second(query.modified_since)
        predicates.append(lambda item: _second(updated_of(item)) >= since)
    if predicates:
        selected = [item for item in items if all(p(item) for p in predicates)]
    else:
        selected = list(items)
    if _is_default_order(query.order):
        selected.sort(key=lambda item: (updated_of(item), id_of(item).lower()))
    else:
        key = sort_key_for_order(query.order or "", table)
        selected.sort(key=lambda item: (*key(item), id_of(item).lower()))
    return selected


def _page(selected: list[Any], query: ListQuery) -> Page:
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
            "BatchPaymentID": lambda p: p.batch_payment_id,
        },
    )


def batch_payment_table(tenant: XTenant) -> FieldTable[XBatchPayment]:
    """Filterable BatchPayment fields (the spec's example filters on Status)."""
    return FieldTable(
        "BatchPayment",
        {
            "BatchPaymentID": lambda b: b.batch_payment_id,
            "Reference": lambda b: b.reference,
            "Status": lambda b: b.status,
            "Type": lambda b: b.type,
            "Date": lambda b: b.date,
            "TotalAmount": lambda b: batch_total(tenant, b),
            "IsReconciled": lambda b: b.is_reconciled,
            "UpdatedDateUTC": lambda b: b.updated,
            "Account.AccountID": lambda b: b.account_id,
            "Account.Code": lambda b: tenant.accounts[b.account_id].code,
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
