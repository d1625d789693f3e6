"""Fault injection on write endpoints: dropped connections, 500s, latency."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from connector.sandbox import Faults, SandboxState

from .conftest import ServerFactory, XeroClient, parse


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
