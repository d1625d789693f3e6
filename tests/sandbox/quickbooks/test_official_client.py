"""The official Python clients, unmodified, against the sandbox.

* intuitlib's ``AuthClient`` takes a discovery-document URL as its ``environment``
  (``get_discovery_doc`` uses any value other than sandbox/production as the URL), so it
  finds the sandbox's token endpoint by itself and validates the RS256 ``id_token``
  against the sandbox's JWKS.
* python-quickbooks builds data URLs from ``api_url_v3`` (production) or
  ``sandbox_api_url_v3``; both are class attributes read through ``self``, so setting
  ``client.api_url_v3`` on the instance points it at the sandbox.
* requests-oauthlib refuses plain http unless ``OAUTHLIB_INSECURE_TRANSPORT`` is set;
  the sandbox listens on loopback http.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from intuitlib.client import AuthClient
from quickbooks import QuickBooks
from quickbooks.batch import batch_create
from quickbooks.cdc import change_data_capture
from quickbooks.exceptions import ObjectNotFoundException, QuickbooksException, ValidationException
from quickbooks.objects.base import LinkedTxn
from quickbooks.objects.customer import Customer
from quickbooks.objects.invoice import Invoice
from quickbooks.objects.payment import Payment, PaymentLine

from connector.sandbox.quickbooks.fmt import meta_time

from .conftest import Harness


@pytest.fixture
def client(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> QuickBooks:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    ledger = harness.ledger
    realm = ledger.realm_ids[0]
    base = harness.url + "/quickbooks"
    auth = AuthClient(
        ledger.client_id,
        ledger.client_secret,
        "http://localhost/callback",
        base + "/.well-known/openid_configuration",
    )
    assert auth.token_endpoint == base + "/oauth2/v1/tokens/bearer"
    seeded = ledger.refresh_token_for(realm)
    qb = QuickBooks(
        auth_client=auth,
        refresh_token=seeded,
        company_id=realm,
        minorversion=75,
        use_decimal=True,
    )
    qb.api_url_v3 = base + "/v3"
    # The constructor refreshed: a new refresh token, and an id_token intuitlib validated.
    assert auth.refresh_token == ledger.refresh_token_for(realm) != seeded
    assert qb.refresh_token == auth.refresh_token
    assert auth.id_token is not None
    return qb


def test_list_filter_and_get_invoices(client: QuickBooks, harness: Harness) -> None:
    ledger, realm = harness.ledger, harness.ledger.realm_ids[0]
    everything = Invoice.all(qb=client)
    assert [i.Id for i in everything] == [i["Id"] for i in ledger.invoices(realm)]
    customer = ledger.invoices(realm)[0]["CustomerRef"]["value"]
    mine = Invoice.filter(CustomerRef=customer, qb=client)
    assert mine and all(i.CustomerRef.value == customer for i in mine)
    open_ones = Invoice.where("Balance > '0'", order_by="TotalAmt DESC", qb=client)
    assert all(i.Balance > 0 for i in open_ones)
    assert Invoice.count(qb=client) == len(everything)
    chosen = Invoice.choose([everything[0].Id, everything[1].Id], qb=client)
    assert len(chosen) == 2
    one = Invoice.get(everything[0].Id, qb=client)
    assert one.TotalAmt == Decimal(str(ledger.invoices(realm)[0]["TotalAmt"]))
    with pytest.raises(ObjectNotFoundException):
        Invoice.get(999999, qb=client)
    with pytest.raises(ValidationException):
        Invoice.where("Balance > '0' OR Balance < '0'", qb=client)


def test_create_a_payment_and_see_the_invoice_paid(client: QuickBooks, harness: Harness) -> None:
    ledger, realm = harness.ledger, harness.ledger.realm_ids[0]
    invoice = next(i for i in Invoice.where("Balance > '0'", qb=client) if i.Balance == i.TotalAmt)
    payment = Payment()
    payment.TotalAmt = invoice.Balance
    payment.CustomerRef = invoice.CustomerRef
    line = PaymentLine()
    line.Amount = invoice.Balance
    link = LinkedTxn()
    link.TxnId = invoice.Id
    link.TxnType = "Invoice"
    line.LinkedTxn.append(link)
    payment.Line.append(line)
    saved = payment.save(qb=client, request_id="pyqb-pay-1")
    assert saved.Id and saved.UnappliedAmt == 0
    paid = ledger.invoice(realm, invoice.Id)
    assert paid["Balance"] == 0
    assert {"TxnId": saved.Id, "TxnType": "Payment"} in paid["LinkedTxn"]
    # The same requestid replays instead of paying twice.
    payment.Id = None  # save() stored the new id on the object; send the create again
    assert payment.save(qb=client, request_id="pyqb-pay-1").Id == saved.Id
    assert len([p for p in ledger.payments(realm) if p["Id"] == saved.Id]) == 1
    # Voiding through the client restores the balance.
    Payment.get(saved.Id, qb=client).void(qb=client)
    assert ledger.invoice(realm, invoice.Id)["Balance"] == invoice.Balance


def test_stale_update_and_retry(client: QuickBooks, harness: Harness) -> None:
    ledger, realm = harness.ledger, harness.ledger.realm_ids[0]
    invoice = Invoice.get(ledger.invoices(realm)[0]["Id"], qb=client)
    ledger.edit_invoice(realm, invoice.Id, PrivateNote="someone else")
    invoice.PrivateNote = "mine"
    with pytest.raises(QuickbooksException) as stale:
        invoice.save(qb=client)
    assert stale.value.error_code == 5010
    fresh = Invoice.get(invoice.Id, qb=client)
    fresh.PrivateNote = "mine"
    saved = fresh.save(qb=client)
    assert saved.PrivateNote == "mine"
    after = ledger.invoice(realm, invoice.Id)
    assert after["TotalAmt"] == invoice.TotalAmt and after["Balance"] == invoice.Balance
    assert after["Line"][0]["SalesItemLineDetail"]["ItemRef"].keys() == {"name", "value"}


def test_batch_and_cdc(client: QuickBooks, harness: Harness) -> None:
    ledger = harness.ledger
    since = ledger.clock.now() - timedelta(seconds=1)
    customers = []
    for name in ("Batch One", "Batch Two"):
        customer = Customer()
        customer.DisplayName = name
        customers.append(customer)
    result = batch_create(customers, qb=client)
    assert [c.DisplayName for c in result.successes] == ["Batch One", "Batch Two"]
    assert result.faults == []
    duplicate = Customer()
    duplicate.DisplayName = "Batch One"
    faults = batch_create([duplicate], qb=client).faults
    assert faults[0].Error[0].code == "6240"
    cdc = change_data_capture([Customer, Invoice], meta_time(since), qb=client)
    assert [c.DisplayName for c in cdc.Customer] == ["Batch One", "Batch Two"]
