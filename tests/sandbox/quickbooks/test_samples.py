"""Every sample in ``samples/quickbooks`` is served back in the same shape for the same request.

Shapes compare keys and JSON types recursively (not values such as ids and dates). The
few differences allowed are listed per test with the reason:

* ``CurrencyRef`` — the sandbox companies have multi-currency on, so every transaction
  carries it (the bill, credit-card bill payment and void samples do; others come from
  a company without it).
* ``ProjectRef`` — three payment samples come from a company using Projects; the sandbox
  echoes a ``ProjectRef`` that is sent (see the full-update test) but invents none.
* ``Bill.DocNumber`` — seeded bills carry the vendor's invoice number.
* CDC/batch samples elide entity bodies (``{"Id": "63"}``); the sandbox sends full ones.
"""

from __future__ import annotations

import filecmp
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from connector.sandbox.quickbooks.fmt import meta_time

from .conftest import (
    SAMPLES,
    SHARED_SAMPLES,
    QboClient,
    Receiver,
    parse,
    sample,
    shape_problems,
)

COVERED = {
    "oauth_token_response__dotnet_sdk.json",
    "oauth_token_error_response__dotnet_sdk.json",
    "oauth_openid_discovery__dotnet_sdk.json",
    "invoice_read_response_unpaid__intuit_docs.json",
    "bill_read_response_paid_balance0__intuit_docs.json",
    "payment_create_request_min__intuit_docs.json",
    "payment_create_response_unapplied__intuit_docs.json",
    "payment_read_response_linked_invoice_overpaid__intuit_docs.json",
    "payment_full_update_request_invoice_and_creditmemo__intuit_docs.json",
    "payment_void_response__intuit_docs.json",
    "payment_delete_response__intuit_docs.json",
    "billpayment_create_request_check__intuit_docs.json",
    "billpayment_create_response_check__intuit_docs.json",
    "billpayment_creditcard_queryresult_item__intuit_docs.json",
    "billpayment_void_response__intuit_docs.json",
    "cdc_response__intuit_docs.json",
    "batch_request__intuit_doc_sample_via_quick-oxibooks.json",
    "batch_response_with_faults__intuit_doc_sample_via_quick-oxibooks.json",
    "fault_generic_format__intuit_handling_common_errors.json",
    "fault_stale_object_5010__intuit_docs_batch_sample.json",
    "webhook_legacy_payload__intuit_docs.json",
    "webhook_cloudevents_payload__intuit_blog_2025-11-12.json",
}


def test_every_sample_is_covered_and_the_copies_are_current() -> None:
    assert {p.name for p in SAMPLES.glob("*.json")} == COVERED
    if SHARED_SAMPLES.is_dir():
        shared = {p.name for p in SHARED_SAMPLES.glob("*.json")}
        assert shared == COVERED
        for name in shared:
            assert filecmp.cmp(SAMPLES / name, SHARED_SAMPLES / name, shallow=False), name


def _ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return parse(response)


def test_oauth_samples(qbo: QboClient) -> None:
    token = qbo.ledger.refresh_token_for(qbo.realm)
    assert shape_problems(sample("oauth_token_response"), qbo.token_request(token).json()) == []
    qbo.refresh()
    error = qbo.token_request(token)
    assert error.status_code == 400
    assert shape_problems(sample("oauth_token_error_response"), error.json()) == []
    discovery = qbo.http.get("/quickbooks/.well-known/openid_configuration").json()
    assert shape_problems(sample("oauth_openid_discovery"), discovery) == []


def test_invoice_read_unpaid(qbo: QboClient) -> None:
    inv = next(
        i
        for i in qbo.ledger.invoices(qbo.realm)
        if i["Balance"] == i["TotalAmt"]
        and i["CurrencyRef"]["value"] == "USD"
        and any(link["TxnType"] == "Estimate" for link in i["LinkedTxn"])
    )
    body = _ok(qbo.get(f"invoice/{inv['Id']}"))
    assert (
        shape_problems(
            sample("invoice_read_response_unpaid"), body, extra_ok={"Invoice.CurrencyRef"}
        )
        == []
    )


def test_bill_read_paid(qbo: QboClient) -> None:
    bill = next(b for b in qbo.ledger.bills(qbo.realm) if b["Balance"] == 0 < b["TotalAmt"])
    body = _ok(qbo.get(f"bill/{bill['Id']}"))
    assert body["Bill"]["LinkedTxn"][0]["TxnType"] == "BillPaymentCheck"
    assert (
        shape_problems(
            sample("bill_read_response_paid_balance0"),
            body,
            extra_ok={"Bill.DocNumber"},
            absent_ok={"Bill.Line[].ProjectRef"},
        )
        == []
    )


PAYMENT_DIFFS: dict[str, Any] = {
    "extra_ok": {"Payment.CurrencyRef"},
    "absent_ok": {"Payment.ProjectRef"},
}


def test_payment_create_min_gives_the_unapplied_response(qbo: QboClient) -> None:
    request = sample("payment_create_request_min")
    request["CustomerRef"]["value"] = qbo.ledger.customers(qbo.realm)[0]["Id"]
    body = _ok(qbo.post("payment", request))
    assert body["Payment"]["UnappliedAmt"] == body["Payment"]["TotalAmt"] == 25
    assert shape_problems(sample("payment_create_response_unapplied"), body, **PAYMENT_DIFFS) == []


def test_payment_read_linked_overpaid(qbo: QboClient) -> None:
    inv = next(
        i
        for i in qbo.ledger.invoices(qbo.realm)
        if i["Balance"] >= 55 and i["CurrencyRef"]["value"] == "USD"
    )
    created = _ok(qbo.post("payment", qbo.payment_body(inv, "55.00", total="65.00")))["Payment"]
    body = _ok(qbo.get(f"payment/{created['Id']}"))
    assert body["Payment"]["UnappliedAmt"] == 10
    assert (
        shape_problems(
            sample("payment_read_response_linked_invoice_overpaid"), body, **PAYMENT_DIFFS
        )
        == []
    )


def test_payment_full_update_with_invoice_and_credit_memo(qbo: QboClient) -> None:
    ledger, realm = qbo.ledger, qbo.realm
    customer = ledger.customers(realm)[1]["Id"]
    inv = ledger.add_invoice(realm, total=Decimal("300.00"), customer_id=customer)
    memo = ledger.add_credit_memo(realm, total=Decimal("300.00"), customer_id=customer)
    existing = _ok(qbo.post("payment", {"TotalAmt": 0, "CustomerRef": {"value": customer}}))[
        "Payment"
    ]
    request = sample("payment_full_update_request_invoice_and_creditmemo")
    request["Id"] = existing["Id"]
    request["CustomerRef"]["value"] = customer
    request["Line"][0]["LinkedTxn"][0]["TxnId"] = inv["Id"]
    request["Line"][1]["LinkedTxn"][0]["TxnId"] = memo["Id"]
    body = _ok(qbo.post("payment", request))
    payment = body["Payment"]
    # Everything the request sent comes back, with the same types.
    assert shape_problems(request, payment, any_extra={"", "Line[]", "CustomerRef"}) == []
    assert payment["TotalAmt"] == 0 and payment["UnappliedAmt"] == 0
    assert payment["SyncToken"] == "1"
    assert ledger.invoice(realm, inv["Id"])["Balance"] == 0
    assert ledger.entity(realm, "CreditMemo", memo["Id"])["Balance"] == 0


def test_payment_void_response(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    request = {
        **qbo.payment_body(inv, "10.00"),
        "PaymentMethodRef": {"value": "2"},
        "DepositToAccountRef": {"value": qbo.account("checking")},
    }
    created = _ok(qbo.post("payment", request))["Payment"]
    body = _ok(
        qbo.post(
            "payment",
            {"Id": created["Id"], "SyncToken": created["SyncToken"], "sparse": True},
            operation="update",
            include="void",
        )
    )
    assert body["Payment"]["PrivateNote"] == "Voided"
    assert shape_problems(sample("payment_void_response"), body, **PAYMENT_DIFFS) == []


def test_payment_delete_response(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    created = _ok(qbo.post("payment", qbo.payment_body(inv, "10.00")))["Payment"]
    body = _ok(qbo.post("payment", {"Id": created["Id"], "SyncToken": "0"}, operation="delete"))
    assert shape_problems(sample("payment_delete_response"), body) == []


def _bill(qbo: QboClient, total: str = "500.00") -> dict[str, Any]:
    return qbo.ledger.add_bill(qbo.realm, total=Decimal(total))


def test_billpayment_create_check(qbo: QboClient) -> None:
    bill = _bill(qbo)
    request = sample("billpayment_create_request_check")
    request["VendorRef"]["value"] = bill["VendorRef"]["value"]
    request["Line"][0]["LinkedTxn"][0]["TxnId"] = bill["Id"]
    request["CheckPayment"]["BankAccountRef"]["value"] = qbo.account("checking")
    body = _ok(qbo.post("billpayment", request))
    assert (
        shape_problems(
            sample("billpayment_create_response_check"), body, extra_ok={"BillPayment.CurrencyRef"}
        )
        == []
    )
    assert qbo.ledger.bill(qbo.realm, bill["Id"])["Balance"] == 300


def test_billpayment_creditcard_query_item(qbo: QboClient) -> None:
    bill = _bill(qbo)
    request = {
        **qbo.bill_payment_body(bill, "86.44", "CreditCard"),
        "DocNumber": "1",
        "PrivateNote": "00649587213",
    }
    created = _ok(qbo.post("billpayment", request))["BillPayment"]
    items = qbo.query_items(
        f"select * from BillPayment where Id = '{created['Id']}'", "BillPayment"
    )
    assert shape_problems(sample("billpayment_creditcard_queryresult_item"), items[0]) == []


def test_billpayment_void_response(qbo: QboClient) -> None:
    bill = _bill(qbo)
    request = {**qbo.bill_payment_body(bill, "50.00"), "DocNumber": "11"}
    created = _ok(qbo.post("billpayment", request))["BillPayment"]
    body = _ok(
        qbo.post(
            "billpayment",
            {"Id": created["Id"], "SyncToken": "0", "sparse": True},
            operation="update",
            include="void",
        )
    )
    assert body["BillPayment"]["TotalAmt"] == 0 and body["BillPayment"]["Line"] == []
    assert shape_problems(sample("billpayment_void_response"), body) == []


def test_cdc_response(qbo: QboClient) -> None:
    ledger, realm = qbo.ledger, qbo.realm
    since = meta_time(ledger.clock.now() - timedelta(seconds=1))
    qbo.post("customer", {"DisplayName": "CDC One"})
    qbo.post("customer", {"DisplayName": "CDC Two"})
    kept = ledger.add_invoice(realm, total=Decimal("5.00"))
    doomed = ledger.add_invoice(realm, total=Decimal("6.00"))
    ledger.delete_invoice(realm, doomed["Id"])
    body = _ok(qbo.get("cdc", entities="Customer,Invoice", changedSince=since))
    expected = sample("cdc_response")
    groups = expected["CDCResponse"][0]["QueryResponse"]
    groups[1]["Invoice"] = groups[1].pop("Estimate")  # the sandbox has no estimates
    elided = "CDCResponse[].QueryResponse[]"
    assert (
        shape_problems(
            expected,
            body,
            any_extra={
                f"{elided}.Customer[]",
                f"{elided}.Invoice[]",
                f"{elided}.Invoice[].MetaData",
            },
        )
        == []
    )
    invoices = body["CDCResponse"][0]["QueryResponse"][1]["Invoice"]
    assert invoices[0]["Id"] == kept["Id"]
    assert shape_problems(groups[1]["Invoice"][2], invoices[1]) == []


def test_batch_request_and_response(qbo: QboClient) -> None:
    ledger, realm = qbo.ledger, qbo.realm
    _ok(qbo.post("vendor", {"DisplayName": "Smith Family Store"}))  # so bid1 is a duplicate
    receipt = qbo.query_items("select * from SalesReceipt", "SalesReceipt")[0]
    ledger.touch(realm, "SalesReceipt", receipt["Id"])  # so bid3's SyncToken "0" is stale
    assert "129" not in ledger.realm(realm).txns  # so bid2 is not found
    request = sample("batch_request")
    request["BatchItemRequest"][2]["SalesReceipt"]["Id"] = receipt["Id"]
    body = _ok(qbo.post("batch", request))
    expected = sample("batch_response_with_faults")
    assert shape_problems(expected, body) == []
    codes = [
        item.get("Fault", {}).get("Error", [{}])[0].get("code")
        for item in body["BatchItemResponse"]
    ]
    assert codes == ["6240", "610", "5010", None]
    assert [i["bId"] for i in body["BatchItemResponse"]] == ["bid1", "bid2", "bid3", "bid4"]


def test_fault_samples(qbo: QboClient) -> None:
    missing = qbo.get("invoice/424242")
    assert missing.status_code == 400
    assert shape_problems(sample("fault_generic_format"), parse(missing)) == []
    inv = qbo.open_invoice()
    stale = qbo.post(
        "invoice", {"Id": inv["Id"], "SyncToken": "7", "sparse": True, "PrivateNote": "x"}
    )
    assert shape_problems(sample("fault_stale_object_5010"), parse(stale), extra_ok={"time"}) == []
    assert (
        parse(stale)["Fault"]["Error"][0] == sample("fault_stale_object_5010")["Fault"]["Error"][0]
    )


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("legacy", "webhook_legacy_payload"), ("cloudevents", "webhook_cloudevents_payload")],
)
def test_webhook_samples(qbo: QboClient, receiver: Receiver, fmt: str, name: str) -> None:
    qbo.http.post("/_sandbox/quickbooks/webhooks", json={"url": receiver.url, "format": fmt})
    qbo.post("customer", {"DisplayName": "Webhook Customer"})
    qbo.post("vendor", {"DisplayName": "Webhook Vendor"})
    assert qbo.ledger.webhooks.flush()
    events = receiver.events()
    assert len(events) == 1
    assert shape_problems(sample(name), events[0]) == []
