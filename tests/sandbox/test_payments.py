"""PUT/POST/GET /Payments and payment deletion."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connector.sandbox import SandboxState

from .conftest import XeroClient, parse

EXCEEDS = "Payment amount exceeds the amount outstanding on this document"
NOT_AUTHORISED = "Payments can only be made against Authorised documents"


def _messages(element: dict[str, Any]) -> list[str]:
    return [e["Message"] for e in element.get("ValidationErrors", [])]


def test_put_with_summarize_errors_false_commits_good_items_only(
    xero: XeroClient, state: SandboxState
) -> None:
    tenant = xero.tenant_id
    good = xero.payable_invoice()
    draft = next(i for i in state.xero.invoices(tenant) if i["Status"] == "DRAFT")
    body = {
        "Payments": [
            xero.payment_body(good["InvoiceID"], "10.00", Reference="ok-1"),
            xero.payment_body(draft["InvoiceID"], "5.00", Reference="draft"),
            xero.payment_body(good["InvoiceID"], str(good["AmountDue"]), Reference="too-much"),
            {**xero.payment_body(good["InvoiceID"], "1.00"), "Account": {"Code": "999"}},
            {**xero.payment_body(good["InvoiceID"], "1.00"), "Account": {"Code": "610"}},
        ]
    }
    response = xero.send("PUT", "/Payments", body, params={"summarizeErrors": "False"})
    assert response.status_code == 200
    items = parse(response)["Payments"]
    assert [i["StatusAttributeString"] for i in items] == ["OK", "ERROR", "ERROR", "ERROR", "ERROR"]
    assert items[0]["HasValidationErrors"] is False and items[0]["PaymentID"]
    assert _messages(items[1]) == [NOT_AUTHORISED]
    # The first item already lowered AmountDue by 10.00, so paying the old due is too much.
    assert _messages(items[2]) == [EXCEEDS]
    assert _messages(items[3]) == ["Account could not be found"]
    assert _messages(items[4]) == ["Account type is invalid for making a payment to/from"]
    assert all(i["HasValidationErrors"] is True for i in items[1:])
    assert items[2]["Reference"] == "too-much"  # bad items echo the input
    committed = state.xero.payments(tenant)
    assert [
        p["Reference"] for p in committed if p["Reference"] in {"ok-1", "draft", "too-much"}
    ] == ["ok-1"]
    assert state.xero.invoice(tenant, good["InvoiceID"])["AmountDue"] == good[
        "AmountDue"
    ] - Decimal("10.00")


def test_put_without_summarize_is_all_or_nothing(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    good = xero.payable_invoice()
    before = len(state.xero.payments(tenant))
    body = {
        "Payments": [
            xero.payment_body(good["InvoiceID"], "10.00"),
            xero.payment_body("00000000-0000-0000-0000-000000000000", "1.00"),
        ]
    }
    for params in (None, {"summarizeErrors": "true"}):
        response = xero.send("PUT", "/Payments", body, params=params)
        assert response.status_code == 400
        error = parse(response)
        assert (error["ErrorNumber"], error["Type"]) == (10, "ValidationException")
        assert error["Message"] == "A validation exception occurred"
        assert [_messages(e) for e in error["Elements"]] == [["Invoice could not be found"]]
    assert len(state.xero.payments(tenant)) == before
    assert state.xero.invoice(tenant, good["InvoiceID"])["AmountDue"] == good["AmountDue"]


def test_batch_items_see_each_other(xero: XeroClient, state: SandboxState) -> None:
    invoice = xero.payable_invoice()
    half = (invoice["AmountDue"] / 2).quantize(Decimal("0.01"))
    body = {"Payments": [xero.payment_body(invoice["InvoiceID"], str(half + 1))] * 2}
    response = xero.send("PUT", "/Payments", body)
    assert response.status_code == 400
    assert [_messages(e) for e in parse(response)["Elements"]] == [[EXCEEDS]]
    assert state.xero.payments(xero.tenant_id, invoice["InvoiceID"]) == []


def test_post_single_payment_like_the_sdk(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    invoice = xero.payable_invoice()
    account_id = next(a["AccountID"] for a in state.xero.accounts(tenant) if a["Code"] == "091")
    body = {
        "Invoice": {"InvoiceID": invoice["InvoiceID"], "HasAttachments": False, "HasErrors": False},
        "Account": {"AccountID": account_id, "HasAttachments": False},
        "Date": "/Date(1714521600000)/",
        "Amount": Decimal("12.34"),
        "Reference": "ref-1",
        "HasAccount": False,
        "HasValidationErrors": False,
    }
    response = xero.send("POST", "/Payments", body)
    assert response.status_code == 200, response.text
    (payment,) = parse(response)["Payments"]
    expected_keys = {
        "PaymentID", "Date", "BankAmount", "Amount", "Reference", "CurrencyRate", "PaymentType",
        "Status", "UpdatedDateUTC", "UpdatedDateUTCString", "HasAccount", "IsReconciled",
        "Account", "Invoice", "HasValidationErrors",
    }  # fmt: skip
    assert expected_keys <= set(payment)
    assert "StatusAttributeString" not in payment
    assert payment["Date"] == "/Date(1714521600000+0000)/"
    assert payment["Amount"] == payment["BankAmount"] == Decimal("12.34")
    assert (payment["PaymentType"], payment["Status"]) == ("ACCRECPAYMENT", "AUTHORISED")
    assert payment["Account"] == {
        "AccountID": account_id,
        "Code": "091",
        "Name": "Business Savings Account",
    }
    embedded = payment["Invoice"]
    assert embedded["AmountDue"] == invoice["AmountDue"] - Decimal("12.34")
    assert embedded["AmountPaid"] == Decimal("12.34")
    assert embedded["UpdatedDateUTC"] == payment["UpdatedDateUTC"]
    assert {
        "Type",
        "InvoiceID",
        "InvoiceNumber",
        "Status",
        "Total",
        "CurrencyCode",
        "Contact",
    } <= set(embedded)
    stored = state.xero.invoice(tenant, invoice["InvoiceID"])
    assert stored["Payments"] == [
        {
            "PaymentID": payment["PaymentID"],
            "Date": "/Date(1714521600000+0000)/",
            "Amount": Decimal("12.34"),
            "Reference": "ref-1",
            "CurrencyRate": Decimal("1.000000"),
            "HasAccount": False,
            "HasValidationErrors": False,
        }
    ]


def test_accepted_date_and_amount_forms(xero: XeroClient) -> None:
    invoice = xero.payable_invoice()
    forms = [
        ("2024-05-01", "1.00"),
        ("/Date(1714521600000+0000)/", "1"),
        ("2024-05-01T00:00:00", "2.5"),
    ]
    for raw_date, amount in forms:
        body = {**xero.payment_body(invoice["InvoiceID"]), "Date": raw_date, "Amount": amount}
        response = xero.send("PUT", "/Payments", {"Payments": [body]})
        assert response.status_code == 200, response.text
        payment = parse(response)["Payments"][0]
        assert payment["Date"] == "/Date(1714521600000+0000)/"
        assert payment["Amount"] == Decimal(amount).quantize(Decimal("0.01"))
    bad = xero.send(
        "PUT",
        "/Payments",
        {"Payments": [{**xero.payment_body(invoice["InvoiceID"]), "Amount": "-1"}]},
    )
    assert bad.status_code == 400


def test_payment_to_zero_marks_paid_and_then_refuses(xero: XeroClient, state: SandboxState) -> None:
    invoice = xero.payable_invoice()
    body = {"Invoice": {"InvoiceNumber": invoice["InvoiceNumber"]}, "Account": {"Code": "090"},
            "Date": "2024-05-02", "Amount": invoice["AmountDue"]}  # fmt: skip
    response = xero.send("PUT", "/Payments", {"Payments": [body]})
    assert response.status_code == 200
    assert parse(response)["Payments"][0]["Invoice"]["Status"] == "PAID"
    stored = state.xero.invoice(xero.tenant_id, invoice["InvoiceID"])
    assert (stored["Status"], stored["AmountDue"]) == ("PAID", Decimal("0.00"))
    assert stored["FullyPaidOnDate"] == "/Date(1714608000000+0000)/"
    again = xero.send("PUT", "/Payments", {"Payments": [{**body, "Amount": "1.00"}]})
    assert again.status_code == 400
    assert _messages(parse(again)["Elements"][0]) == [NOT_AUTHORISED, EXCEEDS]


def test_payment_to_account_with_payments_enabled(xero: XeroClient) -> None:
    invoice = xero.payable_invoice()
    body = {**xero.payment_body(invoice["InvoiceID"]), "Account": {"Code": "855"}}
    assert xero.send("POST", "/Payments", body).status_code == 200


def test_foreign_currency_bank_amount(xero: XeroClient) -> None:
    invoice = xero.payable_invoice("EUR")
    assert invoice["CurrencyRate"] == Decimal("0.920000")
    payment = parse(
        xero.send("POST", "/Payments", xero.payment_body(invoice["InvoiceID"], "92.00"))
    )["Payments"][0]
    assert payment["Amount"] == Decimal("92.00")
    assert payment["BankAmount"] == Decimal("100.00")
    assert payment["CurrencyRate"] == Decimal("0.920000")


def test_malformed_json_is_post_data_invalid(xero: XeroClient) -> None:
    response = xero.send("PUT", "/Payments", b'{"Payments": [')
    assert response.status_code == 400
    body = response.json()
    assert (body["ErrorNumber"], body["Type"]) == (14, "PostDataInvalidException")
    assert body["Message"].startswith("JSON for post data was invalid")


def test_get_payments_filters_and_paging(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    invoice = xero.payable_invoice()
    for ref in ("alpha", "beta"):
        assert (
            xero.send(
                "POST", "/Payments", xero.payment_body(invoice["InvoiceID"], "1.00", Reference=ref)
            ).status_code
            == 200
        )
    by_ref = parse(xero.get("/Payments", where='Reference=="beta"'))["Payments"]
    assert [p["Reference"] for p in by_ref] == ["beta"]
    for where in (
        f'Invoice.InvoiceID==guid("{invoice["InvoiceID"]}")',
        f'Invoice.InvoiceID=guid("{invoice["InvoiceID"]}") AND Status=="AUTHORISED"',
        f'Invoice.InvoiceID=guid("{invoice["InvoiceID"]}") && PaymentType=="ACCRECPAYMENT"',
    ):
        found = parse(xero.get("/Payments", where=where))["Payments"]
        assert [p["Reference"] for p in found] == ["alpha", "beta"], where
    everything = parse(xero.get("/Payments"))["Payments"]
    assert len(everything) == len(state.xero.payments(tenant, include_deleted=True))
    stamps = [p["UpdatedDateUTC"] for p in everything]
    assert stamps == sorted(stamps, key=lambda s: int(s[6:].split("+")[0]))
    page = parse(xero.get("/Payments", page=1, pageSize=1))
    assert page["pagination"]["itemCount"] == len(everything) and len(page["Payments"]) == 1
    one = parse(xero.get(f"/Payments/{by_ref[0]['PaymentID']}"))["Payments"]
    assert one[0]["Reference"] == "beta"
    assert xero.get("/Payments/00000000-0000-0000-0000-000000000000").status_code == 404


def test_delete_restores_the_invoice(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    invoice = xero.payable_invoice()
    created = parse(
        xero.send(
            "POST", "/Payments", xero.payment_body(invoice["InvoiceID"], str(invoice["AmountDue"]))
        )
    )
    payment = created["Payments"][0]
    assert payment["Invoice"]["Status"] == "PAID"
    for body in ({"Payments": [{"Status": "DELETED"}]},):
        response = xero.send("POST", f"/Payments/{payment['PaymentID']}", body)
        assert response.status_code == 200, response.text
    deleted = parse(response)["Payments"][0]
    assert deleted["Status"] == "DELETED"
    assert deleted["Invoice"]["Status"] == "AUTHORISED"
    assert deleted["Invoice"]["AmountDue"] == invoice["AmountDue"]
    assert deleted["Invoice"]["AmountPaid"] == Decimal("0.00")
    assert int(deleted["UpdatedDateUTC"][6:19]) > int(payment["UpdatedDateUTC"][6:19])
    stored = state.xero.invoice(tenant, invoice["InvoiceID"])
    assert stored["Payments"] == [] and "FullyPaidOnDate" not in stored
    assert stored["UpdatedDateUTC"] == deleted["UpdatedDateUTC"]
    assert state.xero.payments(tenant, invoice["InvoiceID"]) == []
    assert [
        p["Status"] for p in state.xero.payments(tenant, invoice["InvoiceID"], include_deleted=True)
    ] == ["DELETED"]
    # Deleting twice, or "modifying", is refused.
    again = xero.send("POST", f"/Payments/{payment['PaymentID']}", {"Status": "DELETED"})
    assert again.status_code == 400
    modify = xero.send("POST", f"/Payments/{payment['PaymentID']}", {"Status": "AUTHORISED"})
    assert _messages(parse(modify)["Elements"][0]) == [
        "Payments cannot be modified, only created and deleted"
    ]


def test_delete_with_unwrapped_body(xero: XeroClient, state: SandboxState) -> None:
    invoice = xero.payable_invoice()
    payment = state.xero.apply_payment(
        xero.tenant_id, invoice["InvoiceID"], Decimal("3.00"), "by hand"
    )
    response = xero.send("POST", f"/Payments/{payment['PaymentID']}", {"Status": "DELETED"})
    assert parse(response)["Payments"][0]["Status"] == "DELETED"
    assert (
        state.xero.invoice(xero.tenant_id, invoice["InvoiceID"])["AmountDue"]
        == invoice["AmountDue"]
    )


def test_ledger_side_changes_show_over_http(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    invoice = xero.payable_invoice()
    payment = state.xero.apply_payment(tenant, invoice["InvoiceID"], Decimal("5"), "cash")
    assert payment["Amount"] == Decimal("5.00") and payment["Reference"] == "cash"
    found = parse(xero.get("/Payments", where='Reference=="cash"'))["Payments"]
    assert [p["PaymentID"] for p in found] == [payment["PaymentID"]]
    other = next(i for i in state.xero.invoices(tenant) if i["Status"] == "AUTHORISED" and i["AmountPaid"] == 0
                 and i["InvoiceID"] != invoice["InvoiceID"])  # fmt: skip
    state.xero.edit_invoice(tenant, other["InvoiceID"], Status="VOIDED")
    response = xero.send("POST", "/Payments", xero.payment_body(other["InvoiceID"], "1.00"))
    assert _messages(parse(response)["Elements"][0]) == [NOT_AUTHORISED]


def test_bill_payments_are_accpaypayment(xero: XeroClient, state: SandboxState) -> None:
    bill = next(
        i
        for i in state.xero.invoices(xero.tenant_id)
        if i["Type"] == "ACCPAY" and i["Status"] == "AUTHORISED"
    )
    payment = parse(xero.send("POST", "/Payments", xero.payment_body(bill["InvoiceID"], "1.00")))[
        "Payments"
    ][0]
    assert payment["PaymentType"] == "ACCPAYPAYMENT"
    assert payment["Invoice"]["Type"] == "ACCPAY"


def test_reconciled_payment_cannot_be_deleted(xero: XeroClient) -> None:
    invoice = xero.payable_invoice()
    body = xero.payment_body(invoice["InvoiceID"], "1.00", IsReconciled=True)
    payment = parse(xero.send("PUT", "/Payments", {"Payments": [body]}))["Payments"][0]
    assert payment["IsReconciled"] is True
    refused = xero.send("POST", f"/Payments/{payment['PaymentID']}", {"Status": "DELETED"})
    assert refused.status_code == 400
    assert _messages(parse(refused)["Elements"][0]) == [
        "This payment has been reconciled and cannot be deleted"
    ]


def test_mistyped_values_fail_the_whole_request_like_xeros_deserializer(
    xero: XeroClient, state: SandboxState
) -> None:
    invoice = xero.payable_invoice()
    good = xero.payment_body(invoice["InvoiceID"], "1.00")
    for bad, path in (
        ({**good, "Amount": "abc"}, "Payments[1].Amount"),
        ({**good, "Date": "someday"}, "Payments[1].Date"),
        ({**good, "Invoice": "INV-0001"}, "Payments[1].Invoice"),
        ({**good, "IsReconciled": "maybe"}, "Payments[1].IsReconciled"),
        ({**good, "Reference": {"a": 1}}, "Payments[1].Reference"),
        ("not an object", "Payments[1]"),
    ):
        response = xero.send(
            "PUT", "/Payments", {"Payments": [good, bad]}, params={"summarizeErrors": "false"}
        )
        assert response.status_code == 400, bad
        error = response.json()
        assert (error["ErrorNumber"], error["Type"]) == (14, "PostDataInvalidException")
        assert error["Message"].startswith("JSON for post data was invalid")
        assert f"Path '{path}'" in error["Message"]
    assert state.xero.payments(xero.tenant_id, invoice["InvoiceID"]) == []  # nothing applied


def test_failed_items_echo_typed_values(xero: XeroClient, state: SandboxState) -> None:
    draft = next(i for i in state.xero.invoices(xero.tenant_id) if i["Status"] == "DRAFT")
    item = {
        "Invoice": {"InvoiceID": draft["InvoiceID"]},
        "Account": {"Code": "090"},
        "Date": "2024-05-01",
        "Amount": "2.50",  # Json.NET reads numeric strings
        "IsReconciled": "false",
        "Reference": "typed",
    }
    response = xero.send(
        "PUT", "/Payments", {"Payments": [item]}, params={"summarizeErrors": "false"}
    )
    (echo,) = parse(response)["Payments"]
    assert echo["StatusAttributeString"] == "ERROR"
    assert (echo["Amount"], echo["Date"], echo["IsReconciled"]) == (
        Decimal("2.50"),
        "/Date(1714521600000+0000)/",
        False,
    )
    assert echo["Reference"] == "typed" and echo["Invoice"]["InvoiceID"] == draft["InvoiceID"]
