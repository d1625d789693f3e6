"""Fault injection on write endpoints: dropped connections, 500s, latency."""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import httpx
import pytest

from connector.sandbox import Faults, SandboxState
from connector.sandbox.faults import FAULT_NAMES

from .conftest import ServerFactory, XeroClient, frozen_clock, parse


def test_fault_spec_parsing_and_validation() -> None:
    faults = Faults("drop_after_commit=0.2, latency_ms=50", seed=1)
    settings = faults.as_dict()
    assert settings["drop_after_commit"] == 0.2 and settings["latency_ms"] == 50
    faults.update({"drop_before_commit_next": 2})
    faults.parse("error_500_after_commit=1")
    assert faults.as_dict()["drop_before_commit_next"] == 2
    assert faults.as_dict()["error_500_after_commit"] == 1.0
    for bad in (
        "nonsense=1",
        "drop_after_commit=2",
        "drop_after_commit",
        "latency_ms=-1",
        "drop_after_commit_next=1.5",
    ):
        with pytest.raises(ValueError):
            faults.parse(bad)
    assert faults.as_dict()["drop_before_commit_next"] == 2  # a bad update changes nothing
    faults.reset()
    assert not any(faults.as_dict().values())


def test_counters_win_and_are_consumed() -> None:
    faults = Faults({"drop_after_commit_next": 1, "error_500_after_commit_next": 1})
    assert faults.draw().drop_after_commit
    second = faults.draw()
    assert second.error_500_after_commit and not second.drop_after_commit
    assert not faults.draw().any


def test_probabilities_are_reproducible_from_the_seed() -> None:
    def run(seed: int) -> list[bool]:
        faults = Faults("drop_after_commit=0.5", seed=seed)
        return [faults.draw().drop_after_commit for _ in range(40)]

    assert run(7) == run(7)
    assert 5 < sum(run(7)) < 35
    assert run(7) != run(8)


def test_drop_after_commit_commits_then_drops(
    xero: XeroClient, state: SandboxState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    invoice = xero.payable_invoice()
    state.faults.update({"drop_after_commit_next": 1})
    body = xero.payment_body(invoice["InvoiceID"], "6.00")
    headers = {"Idempotency-Key": "retry-me"}
    with pytest.raises(httpx.TransportError):
        xero.send("POST", "/Payments", body, headers=headers)
    (payment,) = state.xero.payments(xero.tenant_id, invoice["InvoiceID"])
    assert payment["Amount"] == 6
    # A retry with the same key gets the cached answer, not a second payment.
    retried = xero.send("POST", "/Payments", body, headers=headers)
    assert parse(retried)["Payments"][0]["PaymentID"] == payment["PaymentID"]
    assert len(state.xero.payments(xero.tenant_id, invoice["InvoiceID"])) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_drop_before_commit_loses_the_write(xero: XeroClient, state: SandboxState) -> None:
    invoice = xero.payable_invoice()
    state.faults.update({"drop_before_commit_next": 1})
    body = xero.payment_body(invoice["InvoiceID"], "6.00")
    headers = {"Idempotency-Key": "lost"}
    with pytest.raises(httpx.TransportError):
        xero.send("POST", "/Payments", body, headers=headers)
    assert state.xero.payments(xero.tenant_id, invoice["InvoiceID"]) == []
    # The key was not consumed: the retry is processed.
    assert xero.send("POST", "/Payments", body, headers=headers).status_code == 200
    assert len(state.xero.payments(xero.tenant_id, invoice["InvoiceID"])) == 1


def test_error_500_after_commit(xero: XeroClient, state: SandboxState) -> None:
    invoice = xero.payable_invoice()
    state.faults.update({"error_500_after_commit_next": 1})
    response = xero.send(
        "PUT", "/Payments", {"Payments": [xero.payment_body(invoice["InvoiceID"], "2.00")]}
    )
    assert response.status_code == 500
    assert response.text == "An unhandled error with the Xero API"
    assert len(state.xero.payments(xero.tenant_id, invoice["InvoiceID"])) == 1


def test_latency_and_reads_are_not_faulted(make_server: ServerFactory) -> None:
    server = make_server(seed=1, faults="latency_ms=250,drop_after_commit=1")
    client = XeroClient(server)
    try:
        assert client.get("/Invoices").status_code == 200  # faults only hit writes
        invoice = client.payable_invoice()
        started = time.monotonic()
        with pytest.raises(httpx.TransportError):
            client.send("POST", "/Payments", client.payment_body(invoice["InvoiceID"], "1.00"))
        assert time.monotonic() - started >= 0.25
        assert len(server.state.xero.payments(client.tenant_id, invoice["InvoiceID"])) == 1
    finally:
        client.close()


def test_faults_admin_endpoint(xero: XeroClient, state: SandboxState) -> None:
    http = xero.http
    assert http.get("/_sandbox/faults").json()["drop_after_commit"] == 0
    updated = http.post(
        "/_sandbox/faults", json={"spec": "drop_after_commit=0.5", "error_500_after_commit_next": 1}
    )
    assert updated.status_code == 200
    assert updated.json()["drop_after_commit"] == 0.5
    assert state.faults.as_dict()["error_500_after_commit_next"] == 1
    assert http.post("/_sandbox/faults", json={"bogus": 1}).status_code == 400
    assert http.post("/_sandbox/faults", json={"reset": True}).json()["drop_after_commit"] == 0


def _count(state: SandboxState, tenant: str, invoice_id: str) -> int:
    return len(state.xero.payments(tenant, invoice_id))


def test_every_fault_name_is_configurable_over_http(xero: XeroClient) -> None:
    http = xero.http
    everything = {f"{name}_next": 1 for name in FAULT_NAMES} | dict.fromkeys(FAULT_NAMES, 0.5)
    settings = http.post("/_sandbox/faults", json=everything).json()
    assert all(settings[name] == 0.5 and settings[f"{name}_next"] == 1 for name in FAULT_NAMES)
    # Counters fire in FAULT_NAMES order, one per write.
    drawn = [xero.state.faults.draw().chosen for _ in FAULT_NAMES]
    assert drawn == list(FAULT_NAMES)
    http.post("/_sandbox/faults", json={"reset": True})


def test_token_revoked_revokes_the_grant_and_answers_401(
    xero: XeroClient, state: SandboxState
) -> None:
    invoice = xero.payable_invoice()
    state.faults.update({"token_revoked_next": 1})
    body = xero.payment_body(invoice["InvoiceID"], "5.00")
    response = xero.send("POST", "/Payments", body, headers={"Idempotency-Key": "revoked"})
    assert response.status_code == 401
    problem = response.json()
    assert (problem["Title"], problem["Status"], problem["Detail"]) == (
        "Unauthorized",
        401,
        "AuthenticationUnsuccessful",
    )
    assert "X-MinLimit-Remaining" not in response.headers  # Xero authenticates first
    assert _count(state, xero.tenant_id, invoice["InvoiceID"]) == 0
    assert xero.get("/Invoices").status_code == 401  # the old access token is dead too
    refused = xero.token_request(state.xero.refresh_token_for(xero.tenant_id))
    assert (refused.status_code, refused.json()) == (400, {"error": "invalid_grant"})


def test_rate_limit_fault_is_a_real_looking_minute_429(make_server: ServerFactory) -> None:
    server = make_server(seed=1, clock=frozen_clock())
    client = XeroClient(server)
    state = server.state
    try:
        invoice = client.payable_invoice()
        assert client.get("/Accounts").headers["X-MinLimit-Remaining"] == "59"
        state.faults.update({"rate_limit_next": 1})
        body = client.payment_body(invoice["InvoiceID"], "5.00")
        refused = client.send("POST", "/Payments", body, headers={"Idempotency-Key": "rl"})
        assert refused.status_code == 429 and refused.content == b""
        assert refused.headers["X-Rate-Limit-Problem"] == "minute"
        expected = state.rate_limiter.retry_after(client.tenant_id, "minute")
        assert refused.headers["Retry-After"] == str(expected) and 1 <= int(expected or 0) <= 60
        assert refused.headers["X-MinLimit-Remaining"] == "0"
        assert refused.headers["X-DayLimit-Remaining"] == "4999"  # the refusal used no quota
        assert _count(state, client.tenant_id, invoice["InvoiceID"]) == 0
        # Not processed, so the key is still free: the retry is processed.
        retried = client.send("POST", "/Payments", body, headers={"Idempotency-Key": "rl"})
        assert retried.status_code == 200 and "X-Sandbox-Idempotent-Replay" not in retried.headers
        assert retried.headers["X-MinLimit-Remaining"] == "58"
        assert _count(state, client.tenant_id, invoice["InvoiceID"]) == 1
    finally:
        client.close()


def test_error_before_commit_is_a_plain_503_and_commits_nothing(
    xero: XeroClient, state: SandboxState
) -> None:
    invoice = xero.payable_invoice()
    state.faults.update({"error_before_commit_next": 1})
    body = {"Payments": [xero.payment_body(invoice["InvoiceID"], "5.00")]}
    response = xero.send("PUT", "/Payments", body, headers={"Idempotency-Key": "503"})
    assert response.status_code == 503
    assert response.text == "The Xero API is temporarily unavailable"
    assert response.headers["content-type"].startswith("text/plain")
    assert _count(state, xero.tenant_id, invoice["InvoiceID"]) == 0
    again = xero.send("PUT", "/Payments", body, headers={"Idempotency-Key": "503"})
    assert again.status_code == 200 and "X-Sandbox-Idempotent-Replay" not in again.headers
    assert _count(state, xero.tenant_id, invoice["InvoiceID"]) == 1


def test_paid_elsewhere_pays_the_target_in_full_first(
    xero: XeroClient, state: SandboxState
) -> None:
    tenant = xero.tenant_id
    invoice = xero.payable_invoice()
    state.faults.update({"paid_elsewhere_next": 1})
    body = {"Payments": [xero.payment_body(invoice["InvoiceID"], "5.00", Reference="ours")]}
    response = xero.send(
        "PUT",
        "/Payments",
        body,
        headers={"Idempotency-Key": "late"},
        params={"summarizeErrors": "false"},
    )
    assert response.status_code == 200
    (item,) = parse(response)["Payments"]
    assert item["StatusAttributeString"] == "ERROR"
    assert [e["Message"] for e in item["ValidationErrors"]] == [
        "Payments can only be made against Authorised documents",
        "Payment amount exceeds the amount outstanding on this document",
    ]
    (elsewhere,) = state.xero.payments(tenant, invoice["InvoiceID"])
    assert elsewhere["Reference"] == "Paid in Xero"
    assert elsewhere["Amount"] == invoice["AmountDue"]
    assert state.xero.invoice(tenant, invoice["InvoiceID"])["Status"] == "PAID"
    # The person's payment took no idempotency key: ours is bound to our own answer.
    replay = xero.send(
        "PUT",
        "/Payments",
        body,
        headers={"Idempotency-Key": "late"},
        params={"summarizeErrors": "false"},
    )
    assert replay.headers["X-Sandbox-Idempotent-Replay"] == "true"


def test_paid_elsewhere_on_a_bill_by_number(xero: XeroClient, state: SandboxState) -> None:
    bill = xero.payable_invoice(type="ACCPAY")
    state.faults.update({"paid_elsewhere_next": 1})
    body = {
        "Invoice": {"InvoiceNumber": bill["InvoiceNumber"]},
        "Account": {"Code": "090"},
        "Date": "2024-05-01",
        "Amount": Decimal("1.00"),
    }
    assert xero.send("POST", "/Payments", body).status_code == 400
    (paid,) = state.xero.payments(xero.tenant_id, bill["InvoiceID"])
    assert (paid["Reference"], paid["PaymentType"]) == ("Paid in Xero", "ACCPAYPAYMENT")


def test_concurrent_edit_bumps_the_invoice_then_processes(
    xero: XeroClient, state: SandboxState
) -> None:
    tenant = xero.tenant_id
    invoice = xero.payable_invoice()
    state.faults.update({"concurrent_edit_next": 1})
    response = xero.send("POST", "/Payments", xero.payment_body(invoice["InvoiceID"], "5.00"))
    assert response.status_code == 200
    payment = parse(response)["Payments"][0]
    after = state.xero.invoice(tenant, invoice["InvoiceID"])
    assert after["Reference"].startswith("Edited in Xero")
    assert after["Reference"] != invoice["Reference"]
    assert after["Total"] == invoice["Total"] and after["AmountPaid"] == Decimal("5.00")
    # The edit came first; the payment then moved the invoice's stamp once more.
    assert _ms(after["UpdatedDateUTC"]) == _ms(payment["UpdatedDateUTC"])
    assert _ms(after["UpdatedDateUTC"]) > _ms(invoice["UpdatedDateUTC"])


def test_concurrent_edit_on_a_deletion_edits_the_payments_invoice(
    xero: XeroClient, state: SandboxState
) -> None:
    invoice = xero.payable_invoice()
    payment = state.xero.apply_payment(xero.tenant_id, invoice["InvoiceID"], Decimal("3.00"))
    state.faults.update({"concurrent_edit_next": 1})
    deleted = xero.send("POST", f"/Payments/{payment['PaymentID']}", {"Status": "DELETED"})
    assert deleted.status_code == 200
    after = state.xero.invoice(xero.tenant_id, invoice["InvoiceID"])
    assert after["Reference"].startswith("Edited in Xero") and after["AmountPaid"] == 0


def test_ignore_idempotency_processes_a_seen_key_again(
    xero: XeroClient, state: SandboxState
) -> None:
    invoice = xero.payable_invoice()
    body = xero.payment_body(invoice["InvoiceID"], "2.00")
    headers = {"Idempotency-Key": "dedupe-me"}
    first = parse(xero.send("POST", "/Payments", body, headers=headers))["Payments"][0]
    state.faults.update({"ignore_idempotency_next": 1})
    duplicate = xero.send("POST", "/Payments", body, headers=headers)
    assert duplicate.status_code == 200 and "X-Sandbox-Idempotent-Replay" not in duplicate.headers
    assert parse(duplicate)["Payments"][0]["PaymentID"] != first["PaymentID"]
    assert _count(state, xero.tenant_id, invoice["InvoiceID"]) == 2  # the provider failed us
    # The key's cache entry is untouched: the next retry replays the first answer.
    replay = xero.send("POST", "/Payments", body, headers=headers)
    assert parse(replay)["Payments"][0]["PaymentID"] == first["PaymentID"]
    assert _count(state, xero.tenant_id, invoice["InvoiceID"]) == 2


def test_500_after_commit_is_what_the_key_replays(xero: XeroClient, state: SandboxState) -> None:
    invoice = xero.payable_invoice()
    state.faults.update({"error_500_after_commit_next": 1})
    body = xero.payment_body(invoice["InvoiceID"], "2.00")
    headers = {"Idempotency-Key": "cached-500"}
    assert xero.send("POST", "/Payments", body, headers=headers).status_code == 500
    replay = xero.send("POST", "/Payments", body, headers=headers)
    assert (replay.status_code, replay.headers["X-Sandbox-Idempotent-Replay"]) == (500, "true")
    assert _count(state, xero.tenant_id, invoice["InvoiceID"]) == 1


def test_replays_are_faulted_too(xero: XeroClient, state: SandboxState) -> None:
    invoice = xero.payable_invoice()
    body = xero.payment_body(invoice["InvoiceID"], "2.00")
    headers = {"Idempotency-Key": "replayed"}
    assert xero.send("POST", "/Payments", body, headers=headers).status_code == 200
    state.faults.update({"drop_after_commit_next": 1})
    with pytest.raises(httpx.TransportError):
        xero.send("POST", "/Payments", body, headers=headers)
    assert _count(state, xero.tenant_id, invoice["InvoiceID"]) == 1


def test_faults_drawn_under_probabilities_hit_every_kind(make_server: ServerFactory) -> None:
    spec = ",".join(f"{name}=0.08" for name in FAULT_NAMES if name != "token_revoked")
    server = make_server(seed=4, faults=spec, rate_limits=False)
    client = XeroClient(server)
    seen: set[str] = set()
    try:
        for n in range(60):
            invoice = server.state.xero.add_invoice(client.tenant_id, total=Decimal("10.00"))
            try:
                response = client.send(
                    "POST",
                    "/Payments",
                    client.payment_body(invoice["InvoiceID"], "10.00"),
                    headers={"Idempotency-Key": f"p-{n}"},
                )
                seen.add(str(response.status_code))
            except httpx.TransportError:
                seen.add("dropped")
        ledger = server.state.xero.payments(client.tenant_id)
    finally:
        client.close()
    assert {"200", "429", "503", "500", "dropped"} <= seen
    assert any(p["Reference"] == "Paid in Xero" for p in ledger)


def _ms(value: str) -> int:
    return int(value[len("/Date(") :].split("+")[0].rstrip(")/"))
