"""Render sandbox entities as NetSuite REST ``record/v1`` JSON.

Shapes follow the 2026.1 REST API Browser dump (samples/rest_record_field_extract_2026_1.json)
and Oracle's examples:

* references are ``{"links": [{"rel": "self", "href": ...}], "id": "313", "refName": ...}``;
* ``lastModifiedDate``/``createdDate`` are UTC ISO 8601 with ``Z``; ``tranDate`` and
  ``dueDate`` are dates (fact sheet §0);
* fields without a value are left out, as NetSuite does;
* sublists (``apply``) are a link unless ``expandSubResources=true``;
* vendorBill has no ``amountRemaining`` (fact sheet §3): its open amount is only
  available through SuiteQL;
* keys are written ``links`` first, then alphabetically, as NetSuite does.

Money is a Decimal with two places (a JSON number on the wire).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from connector.sandbox.netsuite.models import (
    BILL,
    CUSTOMER_PAYMENT,
    INVOICE,
    VENDOR_PAYMENT,
    Company,
    Currency,
    Entity,
    GLAccount,
    Transaction,
)
from connector.sandbox.wire import money

__all__ = [
    "STATUS_NAMES",
    "collection",
    "iso",
    "posting_period_id",
    "public_base",
    "record_path",
    "render_currency",
    "render_entity",
    "render_gl_account",
    "render_transaction",
    "status_display",
]

#: REST ``status.refName`` per record kind and letter (fact sheet §3).
STATUS_NAMES: dict[str, dict[str, str]] = {
    INVOICE: {
        "A": "Open",
        "B": "Paid In Full",
        "D": "Pending Approval",
        "E": "Rejected",
        "V": "Voided",
    },
    BILL: {
        "A": "Open",
        "B": "Paid In Full",
        "C": "Cancelled",
        "D": "Pending Approval",
        "E": "Rejected",
        "F": "Payment In Transit",
    },
    CUSTOMER_PAYMENT: {"A": "Unapproved", "B": "Not Deposited", "C": "Deposited"},
    VENDOR_PAYMENT: {"V": "Voided", "Z": "Online Bill Pay Pending Accounting Approval"},
}
#: The type part of ``BUILTIN.DF(status)`` ("Payment : Deposited", sample).
_DF_PREFIX = {
    INVOICE: "Invoice",
    BILL: "Bill",
    CUSTOMER_PAYMENT: "Payment",
    VENDOR_PAYMENT: "Bill Payment",
}
_SUBLIST_TYPE = {INVOICE: "Invoice", BILL: "Bill"}


def posting_period_id(day: date) -> int:
    """Internal id of the accounting period (month) of ``day``: months since 2000."""
    return (day.year - 2000) * 12 + day.month


def public_base(account_id: str) -> str:
    """The real host of an account (``1234567_SB1`` → ``https://1234567-sb1.suitetalk...``)."""
    return f"https://{account_id.lower().replace('_', '-')}.suitetalk.api.netsuite.com"


def record_path(base: str, record_type: str, record_id: int | str) -> str:
    """``{base}/services/rest/record/v1/{type}/{id}`` with the type lower-cased (as Location)."""
    return f"{base}/services/rest/record/v1/{record_type.lower()}/{record_id}"


def iso(moment: datetime) -> str:
    """``2017-07-21T17:32:28Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _self(href: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": href}]


def _ref(base: str, record_type: str, record_id: int, name: str) -> dict[str, Any]:
    return {
        "links": _self(record_path(base, record_type, record_id)),
        "id": str(record_id),
        "refName": name,
    }


def _ordered(values: dict[str, Any]) -> dict[str, Any]:
    """Drop None values; ``links`` first, then alphabetical keys."""
    out: dict[str, Any] = {}
    if "links" in values:
        out["links"] = values["links"]
    for key in sorted(k for k in values if k != "links"):
        if values[key] is not None:
            out[key] = values[key]
    return out


def status_display(tx: Transaction) -> str | None:
    """``BUILTIN.DF(status)``: ``"Invoice : Open"``, ``"Payment : Deposited"``...

    Vendor payments have no status letter; SuiteQL still shows "Bill Payment :
    Undefined" for them (recorded live, fact sheet §2).
    """
    prefix = _DF_PREFIX[tx.kind]
    if tx.status is None:
        return f"{prefix} : Undefined" if tx.kind == VENDOR_PAYMENT else None
    return f"{prefix} : {STATUS_NAMES[tx.kind].get(tx.status, 'Undefined')}"


def entity_name(company: Company, entity_id: int) -> str:
    """Display name of a customer/vendor."""
    entity = company.entities.get(entity_id)
    return entity.company_name if entity else str(entity_id)


def gl_name(company: Company, account_id: int) -> str:
    """``1000 Checking``-style display name of a GL account."""
    account = company.gl_accounts[account_id]
    return f"{account.number} {account.name}"


def doc_ref_name(tx: Transaction) -> str:
    """``Invoice #INV1001`` / ``Bill #VENDBILL12``: refName of a document reference."""
    label = {INVOICE: "Invoice", BILL: "Bill", CUSTOMER_PAYMENT: "Payment"}.get(
        tx.kind, "Bill Payment"
    )
    return f"{label} #{tx.number}"


def _currency_ref(base: str, company: Company, currency_id: int) -> dict[str, Any]:
    return _ref(base, "currency", currency_id, company.currencies[currency_id].name)


def collection(
    self_href: str,
    items: list[dict[str, Any]],
    *,
    total: int,
    offset: int,
    limit: int,
    page_href: str | None = None,
) -> dict[str, Any]:
    """A NetSuite collection envelope (record lists, sublists, SuiteQL).

    ``links`` carries ``first``/``previous``/``next``/``last`` around ``self`` when
    the collection spans pages; ``page_href`` is the URL without query to build them.
    """
    links: list[dict[str, str]] = []
    if page_href is not None and total > limit:
        last = ((total - 1) // limit) * limit
        if offset > 0:
            links.append({"rel": "first", "href": f"{page_href}?limit={limit}&offset=0"})
            prev = max(0, offset - limit)
            links.append({"rel": "previous", "href": f"{page_href}?limit={limit}&offset={prev}"})
        if offset + len(items) < total:
            nxt = offset + limit
            links.append({"rel": "next", "href": f"{page_href}?limit={limit}&offset={nxt}"})
        links.append({"rel": "last", "href": f"{page_href}?limit={limit}&offset={last}"})
    links.append({"rel": "self", "href": self_href})
    return {
        "links": links,
        "count": len(items),
        "hasMore": offset + len(items) < total,
        "items": items,
        "offset": offset,
        "totalResults": total,
    }


def _apply_sublist(base: str, company: Company, tx: Transaction, expand: bool) -> dict[str, Any]:
    href = f"{record_path(base, tx.kind, tx.id)}/apply"
    if not expand:
        return {"links": _self(href)}
    items = []
    for line_no, line in enumerate(tx.apply):
        doc = company.transactions.get(line.doc_id) or next(
            (d for d in company.deleted if d.id == line.doc_id), None
        )
        if doc is None:
            continue
        items.append(
            _ordered(
                {
                    "links": [],
                    "amount": money(line.amount),
                    "apply": True,
                    "applyDate": line.apply_date.isoformat(),
                    "currency": company.currencies[doc.currency_id].name,
                    "doc": _ref(base, doc.kind, doc.id, doc_ref_name(doc)),
                    # "Amt. Due": what was open before this payment's application.
                    "due": money(doc.amount_remaining + line.amount),
                    "line": line_no,
                    "refNum": doc.tran_id,
                    "total": money(doc.total),
                    "type": _SUBLIST_TYPE.get(doc.kind, doc.kind),
                }
            )
        )
    return collection(href, items, total=len(items), offset=0, limit=max(1, len(items)))


def render_transaction(
    company: Company, tx: Transaction, base: str, *, expand: bool = False
) -> dict[str, Any]:
    """One transaction record as ``GET record/v1/{type}/{id}`` returns it."""
    entity_ref_name = entity_name(company, tx.entity_id)
    entity_type = "customer" if tx.kind in (INVOICE, CUSTOMER_PAYMENT) else "vendor"
    values: dict[str, Any] = {
        "links": _self(record_path(base, tx.kind, tx.id)),
        "createdDate": iso(tx.created),
        "currency": _currency_ref(base, company, tx.currency_id),
        "exchangeRate": tx.exchange_rate,
        "externalId": tx.external_id,
        "id": str(tx.id),
        "lastModifiedDate": iso(tx.modified),
        "memo": tx.memo,
        "postingPeriod": _ref(
            base,
            "accountingPeriod",
            posting_period_id(tx.tran_date),
            tx.tran_date.strftime("%b %Y"),
        ),
        "subsidiary": _ref(base, "subsidiary", company.subsidiary_id, company.subsidiary_name),
        "tranDate": tx.tran_date.isoformat(),
        "tranId": tx.tran_id,
    }
    if tx.status is not None:
        values["status"] = {"id": tx.status, "refName": STATUS_NAMES[tx.kind][tx.status]}
    if tx.account_id is not None:
        values["account"] = _ref(base, "account", tx.account_id, gl_name(company, tx.account_id))
    if tx.kind in (INVOICE, BILL):
        values["entity"] = _ref(base, entity_type, tx.entity_id, entity_ref_name)
        values["dueDate"] = tx.due_date.isoformat() if tx.due_date else None
        values["total"] = money(tx.total)
        pending = tx.status == "D"
        values["approvalStatus"] = {
            "id": "1" if pending else "2",
            "refName": "Pending Approval" if pending else "Approved",
        }
        if tx.kind == INVOICE:
            values["amountPaid"] = money(tx.amount_paid)
            values["amountRemaining"] = money(tx.amount_remaining)
            values["amountRemainingTotalBox"] = money(tx.amount_remaining)
            values["subtotal"] = money(tx.total)
            values["taxTotal"] = money(Decimal(0))
            values["item"] = {"links": _self(f"{record_path(base, tx.kind, tx.id)}/item")}
        else:
            values["documentStatus"] = STATUS_NAMES[BILL].get(tx.status or "", None)
            values["userTotal"] = money(tx.total)
            values["paymentHold"] = False
            values["expense"] = {"links": _self(f"{record_path(base, tx.kind, tx.id)}/expense")}
    else:
        values["apply"] = _apply_sublist(base, company, tx, expand)
        values["unapplied"] = money(tx.unapplied)
        values["total"] = money(tx.total)
        if tx.kind == CUSTOMER_PAYMENT:
            values["customer"] = _ref(base, "customer", tx.entity_id, entity_ref_name)
            values["payment"] = money(tx.total)
            values["applied"] = money(tx.applied)
            values["pending"] = money(Decimal(0))
            values["autoApply"] = False
            undeposited = tx.account_id == company.undeposited_account_id
            values["undepFunds"] = {
                "id": "T" if undeposited else "F",
                "refName": "Undeposited Funds" if undeposited else "Account",
            }
            values["arAcct"] = _ref(
                base, "account", company.ar_account_id, gl_name(company, company.ar_account_id)
            )
        else:
            values["entity"] = _ref(base, "vendor", tx.entity_id, entity_ref_name)
            values["toBePrinted"] = False
            values["approvalStatus"] = {"id": "2", "refName": "Approved"}
            values["apAcct"] = _ref(
                base, "account", company.ap_account_id, gl_name(company, company.ap_account_id)
            )
    return _ordered(values)


def render_entity(company: Company, entity: Entity, base: str) -> dict[str, Any]:
    """A customer or vendor record."""
    return _ordered(
        {
            "links": _self(record_path(base, entity.kind, entity.id)),
            "companyName": entity.company_name,
            "currency": _currency_ref(base, company, entity.currency_id),
            "dateCreated": iso(entity.created),
            "email": entity.email,
            "entityId": entity.entity_id,
            "externalId": entity.external_id,
            "id": str(entity.id),
            "firstName": entity.first_name,
            "isInactive": False,
            "isPerson": entity.is_person,
            "lastModifiedDate": iso(entity.modified),
            "lastName": entity.last_name,
            "subsidiary": _ref(base, "subsidiary", company.subsidiary_id, company.subsidiary_name),
        }
    )


def render_gl_account(company: Company, account: GLAccount, base: str) -> dict[str, Any]:
    """A chart-of-accounts record (``record/v1/account``)."""
    return _ordered(
        {
            "links": _self(record_path(base, "account", account.id)),
            "acctName": account.name,
            "acctNumber": account.number,
            "acctType": {"id": account.type, "refName": account.type_name},
            "currency": _currency_ref(base, company, account.currency_id)
            if account.currency_id is not None
            else None,
            "description": account.description or None,
            "id": str(account.id),
            "isInactive": account.inactive,
        }
    )


def render_currency(company: Company, currency: Currency, base: str) -> dict[str, Any]:
    """A currency record."""
    return _ordered(
        {
            "links": _self(record_path(base, "currency", currency.id)),
            "currencyPrecision": 2,
            "displaySymbol": currency.symbol,
            "exchangeRate": currency.rate,
            "id": str(currency.id),
            "isBaseCurrency": currency.id == company.base_currency_id,
            "isInactive": False,
            "name": currency.name,
            "symbol": currency.code,
        }
    )
