"""Every fault on write calls, the account concurrency limit and latency."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from connector.sandbox.faults import FAULT_NAMES

from .conftest import Client, Factory, NetSuite, error_code, parse


def _paid(client: Client, invoice_id: str) -> Decimal:
    value: Decimal = parse(client.get(f"/invoice/{invoice_id}"))["amountPaid"]
    return value


def _payments_with(client: Client, external_id: str) -> list[dict[str, str]]:
    return client.rows(
        f"SELECT id FROM transaction WHERE recordtype = 'customerpayment' "
        f"AND externalid = '{external_id}'"
    )


def test_every_fault_name_is_handled(ns: NetSuite) -> None:
    # The test functions below cover each name; this guards against a new one.
    covered = {
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
    assert set(FAULT_NAMES) == covered


def test_token_revoked(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    ns.faults.update({"token_revoked_next": 1})
    response = client.send("POST", "/customerPayment", client.payment_body(invoice))
    assert response.status_code == 401 and error_code(response) == "INVALID_LOGIN"
    assert client.get("/invoice").status_code == 401
    assert client.token_request().json() == {"error": "invalid_grant"}
    assert ns.ledger.invoice(ns.account, invoice["id"])["amountPaid"] == 0
    ns.ledger.reauthorize(ns.account)
    client.access_token = client.fetch_token()
    assert client.get("/invoice").status_code == 200


def test_rate_limit(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    ns.faults.update({"rate_limit_next": 1})
    response = client.send("POST", "/customerPayment", client.payment_body(invoice))
    assert response.status_code == 429
    assert response.json()["o:errorDetails"][0]["o:errorCode"] == "CONCURRENCY_LIMIT_EXCEEDED"
    assert _paid(client, invoice["id"]) == 0


def test_error_before_commit(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    ns.faults.update({"error_before_commit_next": 1})
    response = client.send("POST", "/customerPayment", client.payment_body(invoice))
    assert response.status_code == 500
    body = response.json()
    assert body["title"] == "Internal Server Error"
    assert error_code(response) == "UNEXPECTED_ERROR"
    assert _paid(client, invoice["id"]) == 0


def test_drop_before_commit(client: Client, ns: NetSuite, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    invoice = client.open_invoice()
    ns.faults.update({"drop_before_commit_next": 1})
    body = client.payment_body(invoice, externalId="DROP-1")
    with pytest.raises(httpx.TransportError):
        client.send("POST", "/customerPayment", body)
    assert _paid(client, invoice["id"]) == 0
    assert _payments_with(client, "DROP-1") == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_drop_after_commit(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    ns.faults.update({"drop_after_commit_next": 1})
    body = client.payment_body(invoice, externalId="DROP-2")
    with pytest.raises(httpx.TransportError):
        client.send("POST", "/customerPayment", body)
    assert _paid(client, invoice["id"]) == 10
    assert len(_payments_with(client, "DROP-2")) == 1
    # A blind retry is refused by the externalId, not deduplicated.
    assert client.send("POST", "/customerPayment", body).status_code == 400


def test_error_500_after_commit(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    ns.faults.update({"error_500_after_commit_next": 1})
    body = client.payment_body(invoice, externalId="E500")
    response = client.send("POST", "/customerPayment", body)
    assert response.status_code == 500 and error_code(response) == "UNEXPECTED_ERROR"
    assert len(_payments_with(client, "E500")) == 1


def test_paid_elsewhere(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    ns.faults.update({"paid_elsewhere_next": 1})
    response = client.send("POST", "/customerPayment", client.payment_body(invoice))
    assert response.status_code == 400
    assert response.json()["o:errorDetails"][0]["o:errorPath"] == "apply.items[0].doc"
    after = ns.ledger.invoice(ns.account, invoice["id"])
    assert after["status"]["id"] == "B" and after["amountRemaining"] == 0
    (payment,) = [
        p
        for p in ns.ledger.customer_payments(ns.account)
        if p["apply"]["items"][0]["doc"]["id"] == invoice["id"]
    ]
    assert payment["memo"] == "Paid in the NetSuite UI"


def test_concurrent_edit_on_create_and_update(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    ns.clock.advance(5)
    ns.faults.update({"concurrent_edit_next": 1})
    created = client.send("POST", "/customerPayment", client.payment_body(invoice))
    assert created.status_code == 204  # a create is not conditioned on the invoice
    after = parse(client.get(f"/invoice/{invoice['id']}"))
    assert after["lastModifiedDate"] == "2025-05-27T12:00:05Z"
    payment_id = created.headers["location"].rsplit("/", 1)[1]
    before = parse(client.get(f"/customerPayment/{payment_id}"))
    ns.clock.advance(5)
    ns.faults.update({"concurrent_edit_next": 1})
    patch = client.send("PATCH", f"/customerPayment/{payment_id}", {"memo": "mine"})
    assert patch.status_code == 400 and error_code(patch) == "RCRD_HAS_BEEN_CHANGED"
    changed = parse(client.get(f"/customerPayment/{payment_id}"))
    assert "memo" not in changed
    assert changed["lastModifiedDate"] == "2025-05-27T12:00:10Z" != before["lastModifiedDate"]
    # A re-read and retry succeeds.
    assert (
        client.send("PATCH", f"/customerPayment/{payment_id}", {"memo": "mine"}).status_code == 204
    )


def test_ignore_idempotency_is_a_no_op_for_sync_writes(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    ns.faults.update({"ignore_idempotency_next": 1})
    body = client.payment_body(invoice, externalId="IGN-1")
    assert client.send("POST", "/customerPayment", body).status_code == 204
    assert client.send("POST", "/customerPayment", body).status_code == 400  # still a duplicate


def test_ignore_idempotency_duplicates_an_async_submission(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    headers = {
        "Prefer": "respond-async",
        "X-NetSuite-Idempotency-Key": "0e3c6d2a-3e59-4f4b-8f6a-9a7f6c1d2e3f",
    }
    body = client.payment_body(invoice, "2.00")
    first = client.send("POST", "/customerPayment", body, headers=headers)
    ns.faults.update({"ignore_idempotency_next": 1})
    second = client.send("POST", "/customerPayment", body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.headers["location"] != second.headers["location"]


def test_faults_do_not_touch_reads(client: Client, ns: NetSuite) -> None:
    ns.faults.update({"drop_before_commit": 1.0, "error_before_commit": 1.0})
    assert client.get("/invoice").status_code == 200
    assert client.suiteql("SELECT id FROM transaction").status_code == 200


def test_concurrency_limit_counts_requests_in_flight(make_netsuite: Factory) -> None:
    env = make_netsuite(concurrency=2)
    client = Client(env)
    try:
        invoice = client.open_invoice()
        env.faults.update({"latency_ms": 400})
        barrier = threading.Barrier(4)

        def pay(_: int) -> int:
            barrier.wait()
            body = client.payment_body(invoice, "1.00")
            return client.send("POST", "/customerPayment", body).status_code

        with ThreadPoolExecutor(4) as pool:
            statuses = sorted(pool.map(pay, range(4)))
        assert statuses == [204, 204, 429, 429]
        assert _paid(client, invoice["id"]) == 2
        # Slots are given back; reads count as well: with two writes held after their
        # commit, a GET is the third request in flight.
        barrier = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            writes = [pool.submit(pay, i) for i in range(2)]
            deadline = time.monotonic() + 5
            while env.ledger.invoice(env.account, invoice["id"])["amountPaid"] < 4:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            blocked = client.get("/invoice")
            assert [w.result() for w in writes] == [204, 204]
        assert blocked.status_code == 429 and blocked.json()["status"] == 429
        assert client.get("/invoice").status_code == 200
    finally:
        client.close()
