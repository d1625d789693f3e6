"""Customer and vendor payments: create, transform, upsert, update, delete and their errors."""

from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from .conftest import Client, NetSuite, error_code, parse

LOCATION = re.compile(r"/services/rest/record/v1/(customerpayment|vendorpayment)/(\d+)$")


def _created_id(response: httpx.Response) -> str:
    assert response.status_code == 204, response.text
    assert response.content == b""
    match = LOCATION.search(response.headers["location"])
    assert match, response.headers["location"]
    return match.group(2)


def _detail(response: httpx.Response) -> dict[str, Any]:
    detail: dict[str, Any] = response.json()["o:errorDetails"][0]
    return detail


def test_customer_payment_lowers_the_invoice_and_moves_its_stamp(
    client: Client, ns: NetSuite
) -> None:
    invoice = client.open_invoice()
    ns.clock.advance(10)
    response = client.send("POST", "/customerPayment", client.payment_body(invoice, "10.00"))
    payment_id = _created_id(response)
    assert response.headers["location"].startswith(client.env.base())
    after = parse(client.get(f"/invoice/{invoice['id']}"))
    assert after["amountRemaining"] == invoice["amountRemaining"] - 10
    assert after["amountPaid"] == Decimal("10.00")
    assert after["status"]["id"] == "A"
    assert after["lastModifiedDate"] == "2025-05-27T12:00:10Z" != invoice["lastModifiedDate"]
    payment = parse(client.http.get(response.headers["location"], headers=client.headers()))
    assert payment["id"] == payment_id
    assert payment["customer"]["id"] == invoice["entity"]["id"]
    assert payment["payment"] == Decimal("10.00") and payment["unapplied"] == 0
    assert payment["status"] == {"id": "C", "refName": "Deposited"}
    assert payment["tranDate"] == "2025-05-26"


def test_paying_in_full_sets_paid_in_full(client: Client) -> None:
    invoice = client.open_invoice()
    amount = str(invoice["amountRemaining"])
    _created_id(client.send("POST", "/customerpayment", client.payment_body(invoice, amount)))
    after = parse(client.get(f"/invoice/{invoice['id']}"))
    assert after["amountRemaining"] == 0
    assert after["status"] == {"id": "B", "refName": "Paid In Full"}


def test_vendor_payment_lowers_the_bill(client: Client, ns: NetSuite) -> None:
    bill = client.open_bill()
    body = {
        "entity": {"id": bill["entity"]["id"]},
        "account": {"id": "1"},
        "apply": {"items": [{"doc": {"id": bill["id"]}, "apply": True, "amount": 50}]},
        "externalId": "BILLPAY-1",
    }
    payment_id = _created_id(client.send("POST", "/vendorPayment", body))
    assert ns.ledger.open_amount(ns.account, bill["id"]) == bill["total"] - 50
    (row,) = client.rows(
        f"SELECT foreignamountunpaid, foreigntotal FROM transaction WHERE id = {bill['id']}"
    )
    assert Decimal(row["foreignamountunpaid"]) == bill["total"] - 50
    assert Decimal(row["foreigntotal"]) == -bill["total"]
    payment = parse(client.get(f"/vendorPayment/{payment_id}"))
    assert payment["total"] == 50 and payment["entity"]["id"] == bill["entity"]["id"]


def test_transform_invoice_to_customer_payment(client: Client) -> None:
    invoice = client.open_invoice()
    response = client.send("POST", f"/invoice/{invoice['id']}/!transform/customerPayment", {})
    payment_id = _created_id(response)
    assert parse(client.get(f"/invoice/{invoice['id']}"))["status"]["id"] == "B"
    payment = parse(client.get(f"/customerpayment/{payment_id}", expandSubResources="true"))
    assert payment["payment"] == invoice["amountRemaining"]
    assert payment["apply"]["items"][0]["doc"]["id"] == invoice["id"]
    again = client.send("POST", f"/invoice/{invoice['id']}/!transform/customerPayment", {})
    assert again.status_code == 400 and error_code(again) == "USER_ERROR"


def test_transform_with_a_partial_amount_and_bill_transform(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    body = {"payment": 25, "externalId": "T-1", "account": {"id": "1"}}
    _created_id(client.send("POST", f"/invoice/{invoice['id']}/!transform/customerPayment", body))
    after = parse(client.get(f"/invoice/{invoice['id']}"))
    assert after["amountRemaining"] == invoice["amountRemaining"] - 25
    assert client.get("/customerPayment/eid:T-1").status_code == 200
    bill = client.open_bill()
    _created_id(client.send("POST", f"/vendorBill/{bill['id']}/!transform/vendorPayment", {}))
    assert ns.ledger.open_amount(ns.account, bill["id"]) == 0
    wrong = client.send("POST", f"/invoice/{invoice['id']}/!transform/vendorPayment", {})
    assert wrong.status_code == 400


def test_external_ids_lookup_and_duplicates(client: Client) -> None:
    invoice = client.open_invoice()
    body = client.payment_body(invoice, "5.00", externalId="EXT-1")
    payment_id = _created_id(client.send("POST", "/customerPayment", body))
    found = client.get("/customerPayment/eid:EXT-1")
    assert found.status_code == 200 and found.json()["id"] == payment_id
    duplicate = client.send("POST", "/customerPayment", body)
    assert duplicate.status_code == 400
    assert _detail(duplicate) == {
        "detail": "Error while accessing a resource. This entity already exists.",
        "o:errorCode": "USER_ERROR",
    }
    assert parse(client.get(f"/invoice/{invoice['id']}"))["amountPaid"] == Decimal("5.00")
    # The same externalId on the other payment record type is a different record type.
    bill = client.open_bill()
    vendor_body = {
        "entity": {"id": bill["entity"]["id"]},
        "apply": {"items": [{"doc": {"id": bill["id"]}, "amount": 1}]},
        "externalId": "EXT-1",
    }
    _created_id(client.send("POST", "/vendorPayment", vendor_body))


def test_put_eid_upserts_a_payment(client: Client) -> None:
    invoice = client.open_invoice()
    body = client.payment_body(invoice, "7.00")
    created = client.send("PUT", "/customerPayment/eid:UPS-1", body)
    payment_id = _created_id(created)
    updated = client.send("PUT", "/customerPayment/eid:UPS-1", {**body, "memo": "second"})
    assert updated.status_code == 204 and "location" not in updated.headers
    payment = parse(client.get("/customerPayment/eid:UPS-1"))
    assert payment["id"] == payment_id and payment["memo"] == "second"
    assert payment["externalId"] == "UPS-1"
    assert parse(client.get(f"/invoice/{invoice['id']}"))["amountPaid"] == Decimal("7.00")
    numeric = client.send("PUT", f"/customerPayment/{payment_id}", body)
    assert numeric.status_code == 400


@pytest.mark.parametrize(
    ("case", "status", "code", "path"),
    [
        ("over_apply", 400, "USER_ERROR", "apply.items[0].amount"),
        ("other_customer", 400, "INVALID_CONTENT", "apply.items[0].doc"),
        ("closed", 400, "INVALID_CONTENT", "apply.items[0].doc"),
        ("pending_approval", 400, "INVALID_CONTENT", "apply.items[0].doc"),
        ("unknown_doc", 400, "INVALID_CONTENT", "apply.items[0].doc"),
        ("other_currency", 400, "INVALID_CONTENT", "apply.items[0].doc"),
        ("zero_payment", 400, "INVALID_FLD_VALUE", "payment"),
        ("bad_account", 400, "INVALID_CONTENT", "account"),
        ("applied_over_payment", 400, "USER_ERROR", "payment"),
        ("no_customer", 400, "USER_ERROR", None),
    ],
)
def test_invalid_payments_change_nothing(
    client: Client, case: str, status: int, code: str, path: str | None
) -> None:
    invoices = client.ledger.invoices(client.account)
    invoice = client.open_invoice()
    body = client.payment_body(invoice, "10.00")
    item = body["apply"]["items"][0]
    if case == "over_apply":
        item["amount"] = invoice["amountRemaining"] + Decimal("0.01")
    elif case == "other_customer":
        other = next(i for i in invoices if i["entity"]["id"] != invoice["entity"]["id"])
        item["doc"] = {"id": other["id"]}
    elif case == "closed":
        paid = next(i for i in invoices if i["status"]["id"] == "B")
        body["customer"] = {"id": paid["entity"]["id"]}
        item["doc"] = {"id": paid["id"]}
    elif case == "pending_approval":
        pending = next(i for i in invoices if i["status"]["id"] == "D")
        body["customer"] = {"id": pending["entity"]["id"]}
        item["doc"] = {"id": pending["id"]}
    elif case == "unknown_doc":
        item["doc"] = {"id": "9999999"}
    elif case == "other_currency":
        body["currency"] = {"id": "4"}
    elif case == "zero_payment":
        body["payment"] = 0
    elif case == "bad_account":
        body["account"] = {"id": "4"}  # Accounts Receivable is not a bank account
    elif case == "applied_over_payment":
        body["payment"] = 5
    elif case == "no_customer":
        del body["customer"]
    before = client.ledger.invoices(client.account)
    response = client.send("POST", "/customerPayment", body)
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert _detail(response).get("o:errorPath") == path
    assert response.json()["type"] == "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1"
    assert client.ledger.invoices(client.account) == before


def test_zero_payment_message_is_netsuites(client: Client) -> None:
    invoice = client.open_invoice()
    response = client.send("POST", "/customerPayment", client.payment_body(invoice, payment=0))
    assert (
        _detail(response)["detail"] == "Value 0.0 outside of valid min/max range for field payment"
    )


def test_overpayment_leaves_the_rest_unapplied(client: Client) -> None:
    invoice = client.open_invoice()
    body = client.payment_body(invoice, "200.00", payment=250, memo="10")
    payment_id = _created_id(client.send("POST", "/customerPayment", body))
    payment = parse(client.get(f"/customerPayment/{payment_id}"))
    assert (payment["payment"], payment["applied"], payment["unapplied"]) == (250, 200, 50)


def test_delete_restores_the_invoice(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    body = client.payment_body(invoice, str(invoice["amountRemaining"]), externalId="DEL-1")
    payment_id = _created_id(client.send("POST", "/customerPayment", body))
    assert parse(client.get(f"/invoice/{invoice['id']}"))["status"]["id"] == "B"
    ns.clock.advance(30)
    deleted = client.send("DELETE", f"/customerPayment/{payment_id}")
    assert deleted.status_code == 204 and deleted.content == b""
    after = parse(client.get(f"/invoice/{invoice['id']}"))
    assert after["amountRemaining"] == invoice["amountRemaining"]
    assert after["status"]["id"] == "A" and after["lastModifiedDate"] == "2025-05-27T12:00:30Z"
    assert client.get(f"/customerPayment/{payment_id}").status_code == 404
    assert client.send("DELETE", f"/customerPayment/{payment_id}").status_code == 404
    assert client.rows("SELECT id FROM transaction WHERE externalid = 'DEL-1'") == []
    everything = ns.ledger.customer_payments(ns.account, include_deleted=True)
    gone = [p for p in everything if p["id"] == payment_id]
    assert gone and gone[0]["sandboxDeletedDate"] == "2025-05-27T12:00:30Z"
    # The externalId is free again.
    _created_id(client.send("POST", "/customerPayment", body))


def test_patch_changes_applied_amounts(client: Client) -> None:
    invoice = client.open_invoice()
    payment_id = _created_id(
        client.send("POST", "/customerPayment", client.payment_body(invoice, "10.00", payment=40))
    )
    patch = {"apply": {"items": [{"doc": {"id": invoice["id"]}, "amount": 30}]}}
    assert client.send("PATCH", f"/customerPayment/{payment_id}", patch).status_code == 204
    assert parse(client.get(f"/invoice/{invoice['id']}"))["amountPaid"] == 30
    unapply = {"apply": {"items": [{"doc": {"id": invoice["id"]}, "apply": False}]}}
    assert client.send("PATCH", f"/customerPayment/{payment_id}", unapply).status_code == 204
    assert parse(client.get(f"/invoice/{invoice['id']}"))["amountPaid"] == 0
    replace = {"apply": {"items": [{"doc": {"id": invoice["id"]}, "amount": 5}]}}
    response = client.send(
        "PATCH", f"/customerPayment/{payment_id}", replace, params={"replace": "apply"}
    )
    assert response.status_code == 204
    payment = parse(client.get(f"/customerPayment/{payment_id}"))
    assert (payment["applied"], payment["unapplied"]) == (5, 35)


def test_patch_invoice_memo_and_locked_records(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    assert client.send("PATCH", f"/invoice/{invoice['id']}", {"memo": "hi"}).status_code == 204
    assert client.get(f"/invoice/{invoice['id']}").json()["memo"] == "hi"
    ns.ledger.lock_document(ns.account, invoice["id"])
    locked = client.send("POST", "/customerPayment", client.payment_body(invoice))
    assert locked.status_code == 400
    assert _detail(locked) == {
        "detail": "Error while accessing a resource. This record has been locked by a user "
        "defined workflow.",
        "o:errorCode": "USER_ERROR",
    }


def test_ui_payments_from_the_ledger(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    payment = ns.ledger.apply_payment(ns.account, invoice["id"], Decimal("12.50"), memo="cash")
    assert payment["memo"] == "cash" and payment["payment"] == Decimal("12.50")
    assert parse(client.get(f"/invoice/{invoice['id']}"))["amountPaid"] == Decimal("12.50")
    paid = next(i for i in ns.ledger.invoices(ns.account) if i["status"]["id"] == "B")
    with pytest.raises(ValueError):
        ns.ledger.apply_payment(ns.account, paid["id"], Decimal("1"))
    bill = client.open_bill()
    ns.ledger.apply_bill_payment(ns.account, bill["id"], bill["total"])
    assert ns.ledger.bill(ns.account, bill["id"])["status"]["id"] == "B"


def test_sync_idempotency_key_is_ignored(client: Client) -> None:
    invoice = client.open_invoice()
    body = client.payment_body(invoice, "1.00")
    key = {"X-NetSuite-Idempotency-Key": "6f1c2a9e-7a51-4c0b-9b1e-0a0f5d6c2b11"}
    first = _created_id(client.send("POST", "/customerPayment", body, headers=key))
    second = _created_id(client.send("POST", "/customerPayment", body, headers=key))
    assert first != second
    assert parse(client.get(f"/invoice/{invoice['id']}"))["amountPaid"] == 2


def _wait_job(client: Client, location: str) -> dict[str, Any]:
    url = client.env.url + location
    for _ in range(200):
        job: dict[str, Any] = client.http.get(url, headers=client.headers()).json()
        if job["completed"]:
            return job
        time.sleep(0.01)
    raise AssertionError("the job did not finish")


def test_async_write_with_idempotency_key(client: Client) -> None:
    invoice = client.open_invoice()
    body = client.payment_body(invoice, "3.00")
    headers = {
        "Prefer": "respond-async",
        "X-NetSuite-Idempotency-Key": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    }
    submitted = client.send("POST", "/customerPayment", body, headers=headers)
    assert submitted.status_code == 202 and submitted.content == b""
    assert submitted.headers["preference-applied"] == "respond-async"
    location = submitted.headers["location"]
    assert re.fullmatch(rf"/netsuite/{client.account}/services/rest/async/v1/job/\d+", location)
    job = _wait_job(client, location)
    assert job["progress"] == "succeeded"
    task_href = job["task"]["links"][0]["href"]
    tasks = client.http.get(task_href, headers=client.headers()).json()
    task = client.http.get(tasks["items"][0]["links"][0]["href"], headers=client.headers()).json()
    assert task["completed"] is True and task["progress"] == "succeeded"
    result = client.http.get(task["links"][0]["href"], headers=client.headers())
    _created_id(result)
    again = client.send("POST", "/customerPayment", body, headers=headers)
    assert again.status_code == 400
    assert again.json()["title"] == "Conflict" and error_code(again) == "IDEMPOTENCY_ERROR"
    assert again.headers["location"] == location
    assert parse(client.get(f"/invoice/{invoice['id']}"))["amountPaid"] == 3
    bad_key = client.send(
        "POST",
        "/customerPayment",
        body,
        headers={"Prefer": "respond-async", "X-NetSuite-Idempotency-Key": "nope"},
    )
    assert bad_key.status_code == 400


def test_async_failures_are_visible_in_the_task(client: Client) -> None:
    invoice = client.open_invoice()
    body = client.payment_body(invoice, str(invoice["amountRemaining"] + 1))
    submitted = client.send("POST", "/customerPayment", body, headers={"Prefer": "respond-async"})
    job = _wait_job(client, submitted.headers["location"])
    assert job["progress"] == "failed"
    href = job["task"]["links"][0]["href"] + "/1/result"
    result = client.http.get(href, headers=client.headers())
    assert result.status_code == 400 and error_code(result) == "USER_ERROR"
