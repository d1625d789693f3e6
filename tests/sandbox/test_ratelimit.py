"""Rate limits: headers on every call, 429s with X-Rate-Limit-Problem and Retry-After."""

from __future__ import annotations

import threading

import httpx

from connector.sandbox import RateLimitConfig

from .conftest import ServerFactory, XeroClient, frozen_clock


def test_every_api_response_carries_the_remaining_counters(make_server: ServerFactory) -> None:
    xero = XeroClient(make_server(seed=1, clock=frozen_clock()))
    first, second = xero.get("/Invoices"), xero.get("/Invoices/nope")
    xero.close()
    assert second.status_code == 404  # errors after the limit check count too
    for name, start in (
        ("X-DayLimit-Remaining", 5000),
        ("X-MinLimit-Remaining", 60),
        ("X-AppMinLimit-Remaining", 10_000),
    ):
        assert int(first.headers[name]) == start - 1
        assert int(second.headers[name]) == start - 2


def test_minute_limit_429_then_reset(make_server: ServerFactory) -> None:
    server = make_server(seed=1, clock=frozen_clock(), rate_limits={"minute": 3})
    client = XeroClient(server)
    try:
        assert [client.get("/Accounts").status_code for _ in range(3)] == [200, 200, 200]
        refused = client.get("/Accounts")
        assert refused.status_code == 429
        assert refused.headers["X-Rate-Limit-Problem"] == "minute"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["X-MinLimit-Remaining"] == "0"
        # The token endpoint is not counted.
        assert (
            client.token_request(server.state.xero.refresh_token_for(client.tenant_id)).status_code
            == 200
        )
        server.state.clock.advance(int(refused.headers["Retry-After"]))
        assert client.get("/Accounts").status_code == 200
    finally:
        client.close()


def test_day_limit_has_retry_after(make_server: ServerFactory) -> None:
    server = make_server(seed=1, clock=frozen_clock(), rate_limits={"day": 2})
    client = XeroClient(server)
    try:
        assert [client.get("/Contacts").status_code for _ in range(2)] == [200, 200]
        refused = client.get("/Contacts")
        assert (refused.status_code, refused.headers["X-Rate-Limit-Problem"]) == (429, "day")
        assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
    finally:
        client.close()


def test_app_minute_limit_spans_tenants(make_server: ServerFactory) -> None:
    server = make_server(seed=1, clock=frozen_clock(), tenants=2, rate_limits={"app_minute": 2})
    first, second = XeroClient(server, 0), XeroClient(server, 1)
    try:
        assert first.get("/Accounts").status_code == 200
        assert second.get("/Accounts").status_code == 200
        refused = first.get("/Accounts")
        assert (refused.status_code, refused.headers["X-Rate-Limit-Problem"]) == (429, "appminute")
        assert "Retry-After" not in refused.headers
    finally:
        first.close()
        second.close()


def test_concurrent_limit(make_server: ServerFactory) -> None:
    server = make_server(
        seed=1, clock=frozen_clock(), rate_limits={"concurrent": 1}, faults="latency_ms=400"
    )
    client = XeroClient(server)
    invoice = client.payable_invoice()
    statuses: list[httpx.Response] = []

    def write() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            statuses.append(
                http.post(
                    "/xero/api.xro/2.0/Payments",
                    json={"Invoice": {"InvoiceID": invoice["InvoiceID"]}, "Account": {"Code": "090"},
                          "Date": "2024-05-01", "Amount": 1},
                    headers=client.headers(),
                )
            )  # fmt: skip

    try:
        slow = threading.Thread(target=write)
        slow.start()
        # Wait until the first call is in progress (it sleeps 400 ms after committing).
        deadline = 100
        while not server.state.xero.payments(client.tenant_id, invoice["InvoiceID"]) and deadline:
            threading.Event().wait(0.01)
            deadline -= 1
        refused = client.get("/Accounts")
        slow.join()
        assert refused.status_code == 429
        assert refused.headers["X-Rate-Limit-Problem"] == "concurrent"
        assert "Retry-After" not in refused.headers
        assert [r.status_code for r in statuses] == [200]
        assert client.get("/Accounts").status_code == 200
    finally:
        client.close()


def test_disabled_limits_never_refuse(make_server: ServerFactory) -> None:
    server = make_server(
        seed=1, clock=frozen_clock(), rate_limits=RateLimitConfig(minute=1, enabled=False)
    )
    client = XeroClient(server)
    try:
        responses = [client.get("/Accounts") for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert responses[-1].headers["X-MinLimit-Remaining"] == "0"
    finally:
        client.close()


def test_idempotent_replays_count(make_server: ServerFactory) -> None:
    server = make_server(seed=1, clock=frozen_clock(), rate_limits={"minute": 2})
    client = XeroClient(server)
    try:
        invoice = client.payable_invoice()
        body = client.payment_body(invoice["InvoiceID"], "1.00")
        headers = {"Idempotency-Key": "dup"}
        assert client.send("POST", "/Payments", body, headers=headers).status_code == 200
        assert client.send("POST", "/Payments", body, headers=headers).status_code == 200
        assert client.send("POST", "/Payments", body, headers=headers).status_code == 429
    finally:
        client.close()
