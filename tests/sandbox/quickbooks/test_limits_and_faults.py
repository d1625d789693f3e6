"""Throttling (429/3001) and every injected fault."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import httpx
import pytest

from connector.sandbox.faults import FAULT_NAMES

from .conftest import HarnessFactory, QboClient, fault_of, frozen_clock, parse


def test_minute_limit_answers_429_3001(make_harness: HarnessFactory) -> None:
    harness = make_harness(rate_limits={"minute": 3})
    qbo = QboClient(harness)
    try:
        for _ in range(3):
            assert qbo.get("invoice/1").status_code == 200
        throttled = qbo.get("invoice/1")
        assert throttled.status_code == 429
        body = parse(throttled)
        assert body["Fault"]["type"] == "SERVICE"
        error = body["Fault"]["Error"][0]
        assert error["code"] == "3001"
        assert error["Message"] == "message=ThrottleExceeded; errorCode=003001; statusCode=429"
        assert error["Detail"] == "The request limit was reached.  Try again later"
        assert 1 <= int(throttled.headers["Retry-After"]) <= 60
        assert "intuit_tid" in throttled.headers
        # The token endpoint is not an API call.
        assert qbo.token_request(harness.ledger.refresh_token_for(qbo.realm)).status_code == 200
        harness.ledger.throttle_format = "xml"
        xml = qbo.get("invoice/1")
        assert xml.status_code == 429 and xml.headers["content-type"] == "application/xml"
        assert '<Error code="3001">' in xml.text
        harness.ledger.clock.advance(60)
        assert qbo.get("invoice/1").status_code == 200
    finally:
        qbo.close()


def test_batch_limit_is_counted_separately(make_harness: HarnessFactory) -> None:
    harness = make_harness(rate_limits={"batch_minute": 2})
    qbo = QboClient(harness)
    try:
        batch = {"BatchItemRequest": [{"bId": "1", "Query": "select count(*) from Invoice"}]}
        assert [qbo.post("batch", batch).status_code for _ in range(3)] == [200, 200, 429]
        assert qbo.get("invoice/1").status_code == 200
    finally:
        qbo.close()


def test_concurrency_limit(make_harness: HarnessFactory) -> None:
    harness = make_harness(rate_limits={"concurrent": 1})
    qbo = QboClient(harness)
    try:
        harness.ledger.faults.update({"latency_ms": 300})
        customer = harness.ledger.customers(qbo.realm)[0]["Id"]
        slow: list[int] = []

        def write() -> None:
            with httpx.Client(base_url=harness.url, timeout=10) as client:
                response = client.post(
                    qbo.path("payment"),
                    json={"TotalAmt": 1, "CustomerRef": {"value": customer}},
                    headers=qbo.headers(),
                )
                slow.append(response.status_code)

        thread = threading.Thread(target=write)
        thread.start()
        time.sleep(0.1)
        assert qbo.get("invoice/1").status_code == 429
        thread.join()
        assert slow == [200]
        assert qbo.get("invoice/1").status_code == 200
    finally:
        qbo.close()


def test_time_scale_shortens_the_minute(make_harness: HarnessFactory) -> None:
    clock = frozen_clock()
    clock.time_scale = 60.0
    harness = make_harness(clock=clock, rate_limits={"minute": 1})
    qbo = QboClient(harness)
    try:
        qbo.get("invoice/1")
        assert qbo.get("invoice/1").status_code == 429
        clock.advance(1)
        assert qbo.get("invoice/1").status_code == 200
    finally:
        qbo.close()


def test_rate_limits_can_be_changed_through_the_admin_api(qbo: QboClient) -> None:
    assert qbo.http.get("/_sandbox/quickbooks/rate_limits").json()["enabled"] is False
    changed = qbo.http.post("/_sandbox/quickbooks/rate_limits", json={"enabled": True, "minute": 1})
    assert changed.json()["minute"] == 1
    qbo.get("invoice/1")
    assert qbo.get("invoice/1").status_code == 429
    assert qbo.http.post("/_sandbox/quickbooks/rate_limits", json={"nope": 1}).status_code == 400


def test_default_limits_are_intuits(make_harness: HarnessFactory) -> None:
    limits = make_harness(rate_limits=True).ledger.rate_limiter.limits
    assert (limits.minute, limits.concurrent, limits.batch_minute) == (500, 10, 40)


# ---------------------------------------------------------------- faults


def _arm(qbo: QboClient, name: str) -> None:
    qbo.ledger.faults.update({f"{name}_next": 1})


def _payment_count(qbo: QboClient) -> int:
    return len(qbo.ledger.payments(qbo.realm, include_deleted=True))


def test_every_fault_name_is_handled() -> None:
    handled = {
        "token_revoked",
        "rate_limit",
        "error_before_commit",
        "drop_before_commit",
        "paid_elsewhere",
        "concurrent_edit",
        "ignore_idempotency",
        "drop_after_commit",
        "error_500_after_commit",
    }
    assert set(FAULT_NAMES) == handled


def test_token_revoked(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    before = _payment_count(qbo)
    _arm(qbo, "token_revoked")
    response = qbo.post("payment", qbo.payment_body(inv, "1.00"))
    assert response.status_code == 401
    assert parse(response)["fault"]["error"][0]["code"] == "3200"
    assert _payment_count(qbo) == before
    assert (
        qbo.token_request(qbo.ledger.refresh_token_for(qbo.realm)).json()["error"]
        == "invalid_grant"
    )


def test_rate_limit_fault(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    before = _payment_count(qbo)
    _arm(qbo, "rate_limit")
    response = qbo.post("payment", qbo.payment_body(inv, "1.00"))
    assert response.status_code == 429 and fault_of(response)["code"] == "3001"
    assert _payment_count(qbo) == before


def test_error_before_commit(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    before = _payment_count(qbo)
    statuses = set()
    for _ in range(6):
        _arm(qbo, "error_before_commit")
        response = qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="e1")
        statuses.add(response.status_code)
        assert parse(response)["Fault"]["type"] == "SystemFault"
        assert fault_of(response)["code"] == "10000"
    assert statuses <= {500, 503} and len(statuses) == 2
    assert _payment_count(qbo) == before
    # Nothing was remembered under the requestid either.
    assert qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="e1").status_code == 200


def test_drop_before_commit(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    before = _payment_count(qbo)
    _arm(qbo, "drop_before_commit")
    with pytest.raises(httpx.TransportError):
        qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="d1")
    assert _payment_count(qbo) == before
    retry = qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="d1")
    assert retry.status_code == 200 and "X-Sandbox-Idempotent-Replay" not in retry.headers
    assert _payment_count(qbo) == before + 1


def test_drop_after_commit_then_replay(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    before = _payment_count(qbo)
    _arm(qbo, "drop_after_commit")
    with pytest.raises(httpx.TransportError):
        qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="a1")
    assert _payment_count(qbo) == before + 1
    retry = qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="a1")
    assert retry.headers["X-Sandbox-Idempotent-Replay"] == "true"
    assert _payment_count(qbo) == before + 1


def test_error_500_after_commit_then_replay(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    before = _payment_count(qbo)
    _arm(qbo, "error_500_after_commit")
    response = qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="f1")
    assert response.status_code == 500 and fault_of(response)["code"] == "10000"
    assert _payment_count(qbo) == before + 1
    retry = qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="f1")
    assert retry.status_code == 200
    assert parse(retry)["Payment"]["Id"] == qbo.ledger.payments(qbo.realm)[-1]["Id"]
    assert _payment_count(qbo) == before + 1


def test_paid_elsewhere(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    bill = qbo.open_bill()
    _arm(qbo, "paid_elsewhere")
    response = qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="p1")
    assert fault_of(response)["code"] == "6000"
    after = qbo.ledger.invoice(qbo.realm, inv["Id"])
    assert after["Balance"] == 0
    ui_payment = qbo.ledger.payments(qbo.realm)[-1]
    assert ui_payment["TotalAmt"] == inv["Balance"]
    assert "PaymentRefNum" not in ui_payment and "PrivateNote" not in ui_payment
    _arm(qbo, "paid_elsewhere")
    response = qbo.post("billpayment", qbo.bill_payment_body(bill, "1.00"))
    assert fault_of(response)["code"] == "6000"
    assert qbo.ledger.bill(qbo.realm, bill["Id"])["Balance"] == 0


def test_concurrent_edit(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    pay = parse(qbo.post("payment", qbo.payment_body(inv, "1.00")))["Payment"]
    _arm(qbo, "concurrent_edit")
    update = {"Id": pay["Id"], "SyncToken": pay["SyncToken"], "sparse": True, "PrivateNote": "x"}
    assert fault_of(qbo.post("payment", update))["code"] == "5010"
    fresh = parse(qbo.get(f"payment/{pay['Id']}"))["Payment"]
    assert fresh["SyncToken"] == "1"
    # On a create, the linked invoice is the one a person edits.
    invoice_before = qbo.ledger.invoice(qbo.realm, inv["Id"])
    _arm(qbo, "concurrent_edit")
    assert qbo.post("payment", qbo.payment_body(inv, "1.00")).status_code == 200
    after = qbo.ledger.invoice(qbo.realm, inv["Id"])
    assert int(after["SyncToken"]) == int(invoice_before["SyncToken"]) + 2
    stale = {
        "Id": inv["Id"],
        "SyncToken": str(int(invoice_before["SyncToken"]) + 1),
        "sparse": True,
        "PrivateNote": "y",
    }
    assert fault_of(qbo.post("invoice", stale))["code"] == "5010"


def test_ignore_idempotency(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    first = parse(qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="i1"))["Payment"]
    _arm(qbo, "ignore_idempotency")
    second = parse(qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="i1"))["Payment"]
    assert second["Id"] != first["Id"]
    assert qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"] == inv["Balance"] - 2
    # The original answer is still what a normal retry gets.
    third = parse(qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="i1"))["Payment"]
    assert third["Id"] == first["Id"]


def test_latency(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    qbo.ledger.faults.update({"latency_ms": 200})
    started = time.monotonic()
    assert qbo.post("payment", qbo.payment_body(inv, "1.00")).status_code == 200
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    qbo.get(f"invoice/{inv['Id']}")  # reads are not delayed
    assert time.monotonic() - started < 0.2


def test_faults_apply_to_batches_once(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    _arm(qbo, "paid_elsewhere")
    items = [{"bId": "1", "operation": "create", "Payment": qbo.payment_body(inv, "1.00")}]
    out = parse(qbo.post("batch", {"BatchItemRequest": items}))["BatchItemResponse"]
    assert out[0]["Fault"]["Error"][0]["code"] == "6000"
    assert qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"] == Decimal(0)
