"""The official xero-python SDK, unmodified, against the sandbox."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from xero_python.accounting import (
    Account,
    AccountingApi,
    BatchPayment,
    BatchPaymentDeleteByUrlParam,
    BatchPayments,
    CurrencyCode,
    Invoice,
    Payment,
    Payments,
)
from xero_python.api_client import ApiClient, Configuration
from xero_python.api_client.oauth2 import OAuth2Token, TokenApi
from xero_python.exceptions import NotFoundException, RateLimitException

from connector.sandbox import SandboxServer, SandboxState

from .conftest import ServerFactory, frozen_clock


@pytest.fixture
def sdk(
    server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[AccountingApi, dict[str, Any]]]:
    state = server.state
    tenant = state.xero.tenant_ids[0]
    monkeypatch.setattr(TokenApi, "refresh_token_url", server.url + "/xero/connect/token")
    # Configuration's metaclass returns a copy of the FIRST instance ever built, ignoring
    # later arguments; reset it so this test's credentials are used.
    monkeypatch.setattr(Configuration, "_default", None)
    api_client = ApiClient(
        Configuration(
            oauth2_token=OAuth2Token(
                client_id=state.xero.client_id, client_secret=state.xero.client_secret
            )
        ),
        pool_threads=1,
    )
    store: dict[str, Any] = {
        "token": {
            "access_token": "stale",
            "refresh_token": state.xero.refresh_token_for(tenant),
            "scope": ["offline_access", "accounting.transactions", "accounting.settings"],
            "expires_at": time.time() - 60,  # expired, so the SDK refreshes first
            "expires_in": 1800,
            "token_type": "Bearer",
        }
    }

    @api_client.oauth2_token_getter
    def get_token() -> dict[str, Any]:
        return store["token"]

    @api_client.oauth2_token_saver
    def save_token(token: dict[str, Any]) -> None:
        store["token"] = token

    yield AccountingApi(api_client, base_url=server.url + "/xero/api.xro/2.0"), store
    api_client.rest_client.pool_manager.clear()


def test_sdk_refreshes_lists_and_pays(
    sdk: tuple[AccountingApi, dict[str, Any]], state: SandboxState
) -> None:
    api, store = sdk
    tenant = state.xero.tenant_ids[0]
    invoices = api.get_invoices(tenant).invoices
    # The SDK refreshed and saved the rotated token set.
    assert store["token"]["refresh_token"] == state.xero.refresh_token_for(tenant)
    assert store["token"]["access_token"] != "stale"
    assert {str(i.invoice_id) for i in invoices} == {
        i["InvoiceID"] for i in state.xero.invoices(tenant)
    }
    target = next(
        i
        for i in invoices
        if i.type == "ACCREC" and i.status == "AUTHORISED" and i.amount_paid == 0
    )
    assert isinstance(target.amount_due, Decimal)

    created = api.create_payment(
        tenant,
        Payment(
            invoice=Invoice(invoice_id=target.invoice_id),
            account=Account(code="090"),
            amount=Decimal("12.34"),
            date=date(2024, 5, 1),
            reference="sdk-1",
        ),
    )
    payment = created.payments[0]
    assert payment.amount == Decimal("12.34")
    assert payment.date == date(2024, 5, 1)
    assert payment.invoice.amount_due == target.amount_due - Decimal("12.34")
    stored = state.xero.payments(tenant, str(target.invoice_id))
    assert [(p["PaymentID"], p["Reference"], p["Amount"]) for p in stored] == [
        (str(payment.payment_id), "sdk-1", Decimal("12.34"))
    ]

    batch = api.create_payments(
        tenant,
        Payments(
            payments=[
                Payment(
                    invoice=Invoice(invoice_id=target.invoice_id),
                    account=Account(code="090"),
                    amount=Decimal("1.00"),
                    date=date(2024, 5, 2),
                ),
                Payment(
                    invoice=Invoice(invoice_id=target.invoice_id),
                    account=Account(code="610"),
                    amount=Decimal("1.00"),
                    date=date(2024, 5, 2),
                ),
            ]
        ),
        summarize_errors=False,
        idempotency_key="sdk-batch",
    )
    assert [p.status_attribute_string for p in batch.payments] == ["OK", "ERROR"]
    assert (
        batch.payments[1].validation_errors[0].message
        == "Account type is invalid for making a payment to/from"
    )

    found = api.get_payments(tenant, where='Reference=="sdk-1"').payments
    assert [str(p.payment_id) for p in found] == [str(payment.payment_id)]
    with pytest.raises(NotFoundException):
        api.get_invoice(tenant, "00000000-0000-0000-0000-000000000000")


def test_sdk_pays_a_bill_and_reads_contacts(
    sdk: tuple[AccountingApi, dict[str, Any]], state: SandboxState
) -> None:
    api, _ = sdk
    tenant = state.xero.tenant_ids[0]
    bills = api.get_invoices(tenant, where='Type=="ACCPAY"', page=1).invoices
    assert {b.type for b in bills} == {"ACCPAY"}
    assert len(bills) == len(state.xero.bills(tenant))
    bill = next(
        b for b in bills if b.status == "AUTHORISED" and b.currency_code == CurrencyCode.EUR
    )
    assert 0 < bill.amount_paid < bill.total  # the seed's partly paid EUR bill
    created = api.create_payment(
        tenant,
        Payment(
            invoice=Invoice(invoice_id=bill.invoice_id),
            account=Account(code="090"),
            amount=bill.amount_due,
            date=date(2024, 5, 3),
            reference="sdk-bill",
        ),
        idempotency_key="sdk-bill-1",
    )
    payment = created.payments[0]
    assert payment.payment_type == "ACCPAYPAYMENT"
    assert payment.invoice.status == "PAID" and payment.invoice.amount_due == 0
    assert payment.bank_amount == (bill.amount_due / Decimal("0.92")).quantize(Decimal("0.01"))
    stored = state.xero.payments(tenant, str(bill.invoice_id))
    assert [p["Reference"] for p in stored][-1] == "sdk-bill"
    assert state.xero.invoice(tenant, str(bill.invoice_id))["Status"] == "PAID"
    suppliers = api.get_contacts(tenant, where="IsSupplier==true").contacts
    assert {str(c.contact_id) for c in suppliers} >= {str(bill.contact.contact_id)}
    assert all(c.is_supplier for c in suppliers)
    paged = api.get_contacts(tenant, page=1, page_size=2)
    assert len(paged.contacts) == 2 and paged.pagination.item_count == 5


def test_sdk_makes_reads_and_deletes_a_batch_payment(
    sdk: tuple[AccountingApi, dict[str, Any]], state: SandboxState
) -> None:
    api, _ = sdk
    tenant = state.xero.tenant_ids[0]
    one = state.xero.add_invoice(tenant, total=Decimal("40.00"))
    two = state.xero.add_invoice(tenant, total=Decimal("15.50"))

    created = api.create_batch_payment(
        tenant,
        BatchPayments(
            batch_payments=[
                BatchPayment(
                    account=Account(code="090"),
                    reference="sdk-batch-1",
                    date=date(2024, 5, 4),
                    payments=[
                        Payment(invoice=Invoice(invoice_id=one["InvoiceID"]), amount=Decimal("40.00")),
                        Payment(invoice=Invoice(invoice_id=two["InvoiceID"]), amount=Decimal("5.50"), reference="sdk-line-2"),
                    ],
                )
            ]
        ),
        summarize_errors=False,
        idempotency_key="sdk-batch-payment-1",
    )  # fmt: skip

    [batch] = created.batch_payments
    assert batch.type == "RECBATCH" and batch.status == "AUTHORISED"
    assert batch.total_amount == Decimal("45.50")
    assert batch.date == date(2024, 5, 4)
    assert [(str(p.invoice.invoice_id), p.amount) for p in batch.payments] == [
        (one["InvoiceID"], Decimal("40.00")),
        (two["InvoiceID"], Decimal("5.50")),
    ]
    assert state.xero.invoice(tenant, one["InvoiceID"])["Status"] == "PAID"
    assert state.xero.invoice(tenant, two["InvoiceID"])["AmountDue"] == Decimal("10.00")

    listed = api.get_batch_payments(tenant, where='Reference=="sdk-batch-1"').batch_payments
    assert [str(b.batch_payment_id) for b in listed] == [str(batch.batch_payment_id)]
    members = api.get_payments(tenant, where='Reference=="sdk-line-2"').payments
    assert [str(p.batch_payment_id) for p in members] == [str(batch.batch_payment_id)]
    assert members[0].batch_payment.type == "RECBATCH"

    deleted = api.delete_batch_payment_by_url_param(
        tenant, batch.batch_payment_id, BatchPaymentDeleteByUrlParam(status="DELETED")
    )
    assert deleted.batch_payments[0].status == "DELETED"
    assert state.xero.invoice(tenant, one["InvoiceID"])["AmountDue"] == Decimal("40.00")


def test_sdk_sees_rate_limits(make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib3 (under the SDK) silently sleeps and retries 429s that carry Retry-After
    # (minute/day); the app-minute limit has none, so the SDK raises at once.
    server = make_server(seed=2, rate_limits={"app_minute": 1}, clock=frozen_clock())
    state = server.state
    tenant = state.xero.tenant_ids[0]
    monkeypatch.setattr(TokenApi, "refresh_token_url", server.url + "/xero/connect/token")
    monkeypatch.setattr(Configuration, "_default", None)
    api_client = ApiClient(
        Configuration(
            oauth2_token=OAuth2Token(
                client_id=state.xero.client_id, client_secret=state.xero.client_secret
            )
        ),
        pool_threads=1,
    )
    token = {"refresh_token": state.xero.refresh_token_for(tenant), "scope": ["offline_access"],
             "access_token": "x", "expires_at": time.time() - 1, "expires_in": 1800, "token_type": "Bearer"}  # fmt: skip
    holder = {"token": token}
    api_client.oauth2_token_getter(lambda: holder["token"])
    api_client.oauth2_token_saver(lambda t: holder.update(token=t))
    api = AccountingApi(api_client, base_url=server.url + "/xero/api.xro/2.0")
    try:
        api.get_accounts(tenant)
        with pytest.raises(RateLimitException) as excinfo:
            api.get_accounts(tenant)
        assert excinfo.value.rate_limit == "appminute"
        assert "Retry-After" not in excinfo.value.headers
    finally:
        api_client.rest_client.pool_manager.clear()
