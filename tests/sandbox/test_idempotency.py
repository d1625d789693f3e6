"""Idempotency-Key: replay, conflicts, key length, 6-minute retention, concurrency."""

from __future__ import annotations

import threading
from decimal import Decimal

import httpx

from connector.sandbox import SandboxState

from .conftest import XeroClient, parse


def test_same_key_same_request_replays_without_processing(
    xero: XeroClient, state: SandboxState
) -> None:
    invoice = xero.payable_invoice()
    body = {"Payments": [xero.payment_body(invoice["InvoiceID"], "7.00")]}
    headers = {"Idempotency-Key": "key-1"}
    first = xero.send("PUT", "/Payments", body, headers=headers)
    second = xero.send("PUT", "/Payments", body, headers={"idempotency-key": "key-1"})
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert second.headers["X-Sandbox-Idempotent-Replay"] == "true"
    assert len(state.xero.payments(xero.tenant_id, invoice["InvoiceID"])) == 1
    # Another key is another request.
    third = xero.send("PUT", "/Payments", body, headers={"Idempotency-Key": "key-2"})
    assert parse(third)["Payments"][0]["PaymentID"] != parse(first)["Payments"][0]["PaymentID"]


def test_same_key_different_request_is_400(xero: XeroClient) -> None:
    invoice = xero.payable_invoice()
    headers = {"Idempotency-Key": "reused"}
    assert (
        xero.send(
            "POST", "/Payments", xero.payment_body(invoice["InvoiceID"], "1.00"), headers=headers
        ).status_code
        == 200
    )
    for method, path, body in (
        ("POST", "/Payments", xero.payment_body(invoice["InvoiceID"], "2.00")),  # other body
        ("PUT", "/Payments", xero.payment_body(invoice["InvoiceID"], "1.00")),  # other method
    ):
        response = xero.send(method, path, body, headers=headers)
        assert response.status_code == 400
        assert (
            response.json()["Message"]
            == "Idempotency Key: reused is used with a different request."
        )


def test_key_longer_than_128_characters_is_refused(xero: XeroClient, state: SandboxState) -> None:
    invoice = xero.payable_invoice()
    key = "k" * 129
    response = xero.send(
        "POST",
        "/Payments",
        xero.payment_body(invoice["InvoiceID"]),
        headers={"Idempotency-Key": key},
    )
    assert response.status_code == 400
    assert "129" in response.json()["Message"]
    assert state.xero.payments(xero.tenant_id, invoice["InvoiceID"]) == []
    ok = xero.send(
        "POST",
        "/Payments",
        xero.payment_body(invoice["InvoiceID"]),
        headers={"Idempotency-Key": "k" * 128},
    )
    assert ok.status_code == 200


def test_keys_expire_after_six_minutes(xero: XeroClient, state: SandboxState) -> None:
    invoice = xero.payable_invoice()
    body = xero.payment_body(invoice["InvoiceID"], "1.00")
    headers = {"Idempotency-Key": "short-lived"}
    first = parse(xero.send("POST", "/Payments", body, headers=headers))
    state.clock.advance(5 * 60 + 59)
    replay = parse(xero.send("POST", "/Payments", body, headers=headers))
    assert replay["Payments"][0]["PaymentID"] == first["Payments"][0]["PaymentID"]
    state.clock.advance(2)
    xero.access_token = xero.refresh()["access_token"]  # the clock jump also aged the token
    fresh = parse(xero.send("POST", "/Payments", body, headers=headers))
    assert fresh["Payments"][0]["PaymentID"] != first["Payments"][0]["PaymentID"]
    assert len(state.xero.payments(xero.tenant_id, invoice["InvoiceID"])) == 2


def test_errors_are_cached_too(xero: XeroClient, state: SandboxState) -> None:
    draft = next(i for i in state.xero.invoices(xero.tenant_id) if i["Status"] == "DRAFT")
    body = xero.payment_body(draft["InvoiceID"], "1.00")
    headers = {"Idempotency-Key": "failing"}
    assert xero.send("POST", "/Payments", body, headers=headers).status_code == 400
    state.xero.edit_invoice(xero.tenant_id, draft["InvoiceID"], Status="AUTHORISED")
    assert xero.send("POST", "/Payments", body, headers=headers).status_code == 400
    assert (
        xero.send("POST", "/Payments", body, headers={"Idempotency-Key": "new"}).status_code == 200
    )


def test_concurrent_duplicate_waits_for_the_first(xero: XeroClient, state: SandboxState) -> None:
    invoice = xero.payable_invoice()
    state.faults.update({"latency_ms": 300})
    body = {"Payments": [xero.payment_body(invoice["InvoiceID"], "4.00")]}
    results: list[httpx.Response] = []

    def call() -> None:
        with httpx.Client(base_url=xero.server.url, timeout=10) as http:
            results.append(
                http.put(
                    "/xero/api.xro/2.0/Payments",
                    content=_encode(body),
                    headers=xero.headers(
                        **{"Idempotency-Key": "together", "Content-Type": "application/json"}
                    ),
                )
            )

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200, 200]
    ids = {parse(r)["Payments"][0]["PaymentID"] for r in results}
    assert len(ids) == 1
    payments = state.xero.payments(xero.tenant_id, invoice["InvoiceID"])
    assert [p["Amount"] for p in payments] == [Decimal("4.00")]


def _encode(body: object) -> bytes:
    from connector.sandbox.wire import dumps

    return dumps(body).encode()
