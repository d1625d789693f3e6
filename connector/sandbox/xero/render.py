"""Render sandbox entities in Xero's JSON shapes (the spec examples are the reference).

The dicts keep Decimals; :func:`connector.sandbox.wire.dumps` writes them verbatim.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connector.sandbox.wire import date_string, dumps, iso_utc_seconds, money, ms_date
from connector.sandbox.xero.models import (
    XAccount,
    XBatchPayment,
    XContact,
    XInvoice,
    XPayment,
    XTenant,
)

__all__ = [
    "currency_places",
    "invoice_json",
    "render_account",
    "render_batch_payment",
    "render_contact",
    "render_invoice",
    "render_payment",
    "render_rate",
]

#: Rendered invoices kept per tenant (oldest dropped first); a 1,000-invoice page is
#: served from the cache, and 20,000 entries stay well under 100 MB.
JSON_CACHE_SIZE = 20_000

# ISO 4217 minor units for the currencies that are not 2-decimal.
_PLACES = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "BHD": 3, "KWD": 3, "OMR": 3}


def currency_places(currency: str) -> int:
    """Number of decimals of ``currency``."""
    return _PLACES.get(currency.upper(), 2)


def render_rate(rate: Decimal) -> Decimal:
    """Render a currency rate with at least six decimals (``1.000000``)."""
    exponent = rate.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -6:
        return rate.quantize(Decimal("0.000001"))
    return rate


def render_account(account: XAccount, *, full: bool = True) -> dict[str, Any]:
    """An Account as in GET /Accounts, or the short ``{AccountID, Code, Name}`` form."""
    if not full:
        return {"AccountID": account.account_id, "Code": account.code, "Name": account.name}
    out: dict[str, Any] = {
        "AccountID": account.account_id,
        "Code": account.code,
        "Name": account.name,
        "Status": account.status,
        "Type": account.type,
        "TaxType": account.tax_type,
        "Class": account.account_class,
        "EnablePaymentsToAccount": account.enable_payments,
        "ShowInExpenseClaims": False,
        "ReportingCode": account.reporting_code or "",
        "HasAttachments": False,
        "UpdatedDateUTC": ms_date(account.updated),
        "AddToWatchlist": False,
    }
    if account.description:
        out["Description"] = account.description
    if account.bank_account_number is not None:
        out["BankAccountNumber"] = account.bank_account_number
        out["BankAccountType"] = account.bank_account_type or "BANK"
    if account.currency_code:
        out["CurrencyCode"] = account.currency_code
    if account.system_account:
        out["SystemAccount"] = account.system_account
    return out


def render_contact(contact: XContact, *, full: bool = True) -> dict[str, Any]:
    """A Contact as in GET /Contacts, or the summary embedded in invoices."""
    out: dict[str, Any] = {"ContactID": contact.contact_id, "Name": contact.name}
    if not full:
        out.update(
            {
                "Addresses": [],
                "Phones": [],
                "ContactGroups": [],
                "ContactPersons": [],
                "HasValidationErrors": False,
            }
        )
        return out
    out.update(
        {
            "ContactStatus": contact.status,
            "ContactNumber": contact.contact_number,
            "FirstName": contact.first_name,
            "LastName": contact.last_name,
            "EmailAddress": contact.email,
            "BankAccountDetails": "",
            "Addresses": [
                {
                    "AddressType": "STREET",
                    "City": "",
                    "Region": "",
                    "PostalCode": "",
                    "Country": "",
                },
                {"AddressType": "POBOX", "City": "", "Region": "", "PostalCode": "", "Country": ""},
            ],
            "Phones": [
                {"PhoneType": kind, "PhoneNumber": "", "PhoneAreaCode": "", "PhoneCountryCode": ""}
                for kind in ("DEFAULT", "DDI", "FAX", "MOBILE")
            ],
            "UpdatedDateUTC": ms_date(contact.updated),
            "ContactGroups": [],
            "IsSupplier": contact.is_supplier,
            "IsCustomer": contact.is_customer,
            "ContactPersons": [],
            "HasAttachments": False,
            "HasValidationErrors": False,
        }
    )
    return out


def _payment_summary(payment: XPayment, places: int) -> dict[str, Any]:
    return {
        "PaymentID": payment.payment_id,
        "Date": ms_date(payment.date),
        "Amount": money(payment.amount, places),
        "Reference": payment.reference,
        "CurrencyRate": render_rate(payment.currency_rate),
        "HasAccount": False,
        "HasValidationErrors": False,
    }


def render_invoice(
    tenant: XTenant,
    invoice: XInvoice,
    *,
    line_items: bool = True,
    payments: bool = True,
) -> dict[str, Any]:
    """An Invoice as in GET /Invoices.

    Args:
        tenant: The invoice's organisation (for contact and payment lookups).
        invoice: The invoice.
        line_items: Include ``LineItems`` (GET by id, or paged lists); otherwise an
            empty list, as in the spec's list example.
        payments: Include the ``Payments[]`` back-references; otherwise an empty list
            (the form embedded in payment responses).
    """
    places = currency_places(invoice.currency_code)
    sub_total, total_tax = invoice.sub_total, invoice.total_tax
    total = sub_total + total_tax
    active = [
        tenant.payments[pid]
        for pid in invoice.payment_ids
        if pid in tenant.payments and tenant.payments[pid].status != "DELETED"
    ]
    out: dict[str, Any] = {
        "Type": invoice.type,
        "InvoiceID": invoice.invoice_id,
        "InvoiceNumber": invoice.number,
        "Reference": invoice.reference,
        "Payments": [_payment_summary(p, places) for p in active] if payments else [],
        "CreditNotes": [],
        "Prepayments": [],
        "Overpayments": [],
        "AmountDue": money(total - invoice.amount_paid - invoice.amount_credited, places),
        "AmountPaid": money(invoice.amount_paid, places),
        "AmountCredited": money(invoice.amount_credited, places),
        "SentToContact": invoice.sent_to_contact,
        "CurrencyRate": render_rate(invoice.currency_rate),
        "IsDiscounted": False,
        "HasAttachments": False,
        "HasErrors": False,
        "Contact": render_contact(tenant.contacts[invoice.contact_id], full=False),
        "DateString": date_string(invoice.date),
        "Date": ms_date(invoice.date),
        "DueDateString": date_string(invoice.due_date),
        "DueDate": ms_date(invoice.due_date),
        "Status": invoice.status,
        "LineAmountTypes": invoice.line_amount_types,
        "LineItems": [
            {
                "Description": li.description,
                "UnitAmount": money(li.unit_amount, places),
                "TaxType": li.tax_type,
                "TaxAmount": money(li.tax_amount, places),
                "LineAmount": money(li.line_amount, places),
                "AccountCode": li.account_code,
                "Tracking": [],
                "Quantity": li.quantity.quantize(Decimal("0.0000")),
                "LineItemID": li.line_item_id,
                "ValidationErrors": [],
            }
            for li in invoice.line_items
        ]
        if line_items
        else [],
        "SubTotal": money(sub_total, places),
        "TotalTax": money(total_tax, places),
        "Total": money(total, places),
        "UpdatedDateUTC": ms_date(invoice.updated),
        "UpdatedDateUTCString": iso_utc_seconds(invoice.updated),
        "CurrencyCode": invoice.currency_code,
    }
    if invoice.status == "PAID" and active:
        out["FullyPaidOnDate"] = ms_date(max(p.date for p in active))
    return out


def render_payment(tenant: XTenant, payment: XPayment) -> dict[str, Any]:
    """A Payment as in the PUT/GET /Payments examples, with its embedded invoice."""
    invoice = tenant.invoices[payment.invoice_id]
    account = tenant.accounts[payment.account_id]
    places = currency_places(invoice.currency_code)
    bank_places = currency_places(account.currency_code or tenant.base_currency)
    out: dict[str, Any] = {"PaymentID": payment.payment_id}
    batch = tenant.batch_payments.get(payment.batch_payment_id or "")
    if batch is not None:
        # The spec's GET /Payments example: a payment made in a batch names it, with a
        # summary of the batch (TotalAmount and IsReconciled typed as in its schema).
        out["BatchPaymentID"] = batch.batch_payment_id
        out["BatchPayment"] = {
            "Account": {"AccountID": batch.account_id},
            "BatchPaymentID": batch.batch_payment_id,
            "Date": ms_date(batch.date),
            "Type": batch.type,
            "Status": batch.status,
            "TotalAmount": batch_total(tenant, batch),
            "UpdatedDateUTC": ms_date(batch.updated),
            "IsReconciled": batch.is_reconciled,
        }
    return out | {
        "Date": ms_date(payment.date),
        "BankAmount": money(payment.bank_amount, bank_places),
        "Amount": money(payment.amount, places),
        "Reference": payment.reference,
        "CurrencyRate": render_rate(payment.currency_rate),
        "PaymentType": payment.payment_type,
        "Status": payment.status,
        "UpdatedDateUTC": ms_date(payment.updated),
        "UpdatedDateUTCString": iso_utc_seconds(payment.updated),
        "HasAccount": True,
        "IsReconciled": payment.is_reconciled,
        "Account": render_account(account, full=False),
        "Invoice": render_invoice(tenant, invoice, line_items=False, payments=False),
        "HasValidationErrors": False,
    }


def invoice_json(
    tenant: XTenant, invoice: XInvoice, *, line_items: bool = True, payments: bool = True
) -> str:
    """:func:`render_invoice` as JSON text, cached until the invoice or its contact changes.

    Every ledger change to an invoice (a payment made or deleted included) gives it a
    new ``UpdatedDateUTC`` and every contact change the contact one, so those stamps
    (with the fields a change could touch without one, for safety) key the cache.
    Rendering is most of the cost of a list page, and pages are read far more often
    than invoices change.
    """
    contact = tenant.contacts[invoice.contact_id]
    key = (invoice.invoice_id, line_items, payments)
    stamp: tuple[object, ...] = (
        invoice.updated,
        invoice.status,
        invoice.amount_paid,
        len(invoice.payment_ids),
        contact.contact_id,
        contact.updated,
    )
    cached = tenant.json_cache.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    text = dumps(render_invoice(tenant, invoice, line_items=line_items, payments=payments))
    cache = tenant.json_cache
    if key not in cache and len(cache) >= JSON_CACHE_SIZE:
        for old in list(cache)[: JSON_CACHE_SIZE // 10]:
            del cache[old]
    cache[key] = (stamp, text)
    return text


def batch_total(tenant: XTenant, batch: XBatchPayment) -> Decimal:
    """The sum of the batch's payments (what it was created with, also once deleted)."""
    payments = [tenant.payments[pid] for pid in batch.payment_ids if pid in tenant.payments]
    if not payments:
        return money(Decimal(0))
    currency = tenant.invoices[payments[0].invoice_id].currency_code
    return money(sum((p.amount for p in payments), Decimal(0)), currency_places(currency))


def render_batch_payment(tenant: XTenant, batch: XBatchPayment) -> dict[str, Any]:
    """A BatchPayment as in the spec's GET/PUT /BatchPayments examples.

    A deleted batch lists no payments (the spec's delete example: ``"Payments": []``).
    """
    account = tenant.accounts[batch.account_id]
    out: dict[str, Any] = {
        "Account": {
            "AccountID": account.account_id,
            "CurrencyCode": account.currency_code or tenant.base_currency,
        },
    }
    if batch.reference:
        out["Reference"] = batch.reference
    out.update(batch.texts)
    payments = []
    if batch.status != "DELETED":
        for pid in batch.payment_ids:
            payment = tenant.payments[pid]
            invoice = tenant.invoices[payment.invoice_id]
            places = currency_places(invoice.currency_code)
            bank_places = currency_places(
                tenant.accounts[payment.account_id].currency_code or tenant.base_currency
            )
            payments.append(
                {
                    "Invoice": {
                        "InvoiceID": invoice.invoice_id,
                        "CurrencyCode": invoice.currency_code,
                        "Payments": [],
                        "CreditNotes": [],
                        "Prepayments": [],
                        "Overpayments": [],
                        "HasErrors": False,
                        "IsDiscounted": False,
                        "LineItems": [],
                    },
                    "PaymentID": payment.payment_id,
                    "Amount": money(payment.amount, places),
                    "BankAmount": money(payment.bank_amount, bank_places),
                }
            )
    out.update(
        {
            "BatchPaymentID": batch.batch_payment_id,
            "DateString": date_string(batch.date),
            "Date": ms_date(batch.date),
            "Payments": payments,
            "Type": batch.type,
            "Status": batch.status,
            "TotalAmount": batch_total(tenant, batch),
            "UpdatedDateUTC": ms_date(batch.updated),
            "IsReconciled": batch.is_reconciled,
        }
    )
    return out
