"""Clock.time_scale: every window the sandbox keeps lasts nominal / time_scale."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from connector.sandbox import Clock, SandboxState

from .conftest import ServerFactory, XeroClient


def scaled_clock(scale: float) -> Clock:
    return Clock(frozen_at=datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC), time_scale=scale)


def test_clock_scale_validation_and_defaults() -> None:
    assert Clock().time_scale == 1.0
    clock = Clock(time_scale=60)
    assert clock.scaled(timedelta(minutes=30)) == timedelta(seconds=30)
    assert clock.scaled_seconds(86_400) == 1440
    for bad in (0, -1, float("inf"), float("nan"), "60", True):
        with pytest.raises(ValueError):
            Clock(time_scale=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            clock.time_scale = bad  # type: ignore[assignment]
    assert clock.time_scale == 60
    # SandboxState sets the scale on the clock it is given, or keeps the clock's own.
    assert SandboxState(seed=1, invoices=0, clock=Clock(time_scale=5)).time_scale == 5
    assert SandboxState(seed=1, invoices=0, clock=Clock(time_scale=5), time_scale=2).time_scale == 2


def test_access_token_and_refresh_grace_shrink(make_server: ServerFactory) -> None:
    server = make_server(seed=1, clock=scaled_clock(60))
    state = server.state
    client = XeroClient(server)  # rotates the seeded token
    try:
        seeded = SandboxState(seed=1).xero.refresh_token_for(client.tenant_id)
        tokens = client.refresh()
        assert tokens["expires_in"] == 30  # 30 minutes / 60
        client.access_token = tokens["access_token"]
        state.clock.advance(29)
        assert client.get("/Accounts").status_code == 200
        state.clock.advance(1.5)
        expired = client.get("/Accounts")
        assert expired.status_code == 401 and expired.json()["Detail"].startswith("TokenExpired")
        # The seeded token was superseded 30.5 s ago: past the 30-minute/60 grace.
        assert client.token_request(seeded).json() == {"error": "invalid_grant"}
    finally:
        client.close()


def test_refresh_token_expiry_shrinks(make_server: ServerFactory) -> None:
    server = make_server(seed=1, clock=scaled_clock(1000))
    state = server.state
    token = state.xero.refresh_token_for(state.xero.tenant_ids[0])
    state.clock.advance(60 * 86_400 / 1000 + 1)  # 60 days / 1000 and a second
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": state.xero.client_id,
        "client_secret": state.xero.client_secret,
    }
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/xero/connect/token", data=form).json() == {"error": "invalid_grant"}


def test_idempotency_retention_shrinks(make_server: ServerFactory) -> None:
    server = make_server(seed=1, clock=scaled_clock(60))
    client = XeroClient(server)
    try:
        invoice = client.payable_invoice()
        body = client.payment_body(invoice["InvoiceID"], "1.00")
        headers = {"Idempotency-Key": "fast"}
        first = client.send("POST", "/Payments", body, headers=headers).json()
        server.state.clock.advance(5.9)  # 6 minutes / 60 = 6 s
        replay = client.send("POST", "/Payments", body, headers=headers)
        assert replay.headers["X-Sandbox-Idempotent-Replay"] == "true"
        server.state.clock.advance(0.2)
        fresh = client.send("POST", "/Payments", body, headers=headers).json()
        assert fresh["Payments"][0]["PaymentID"] != first["Payments"][0]["PaymentID"]
    finally:
        client.close()


def test_rate_limit_windows_shrink(make_server: ServerFactory) -> None:
    server = make_server(seed=1, clock=scaled_clock(60), rate_limits={"minute": 2, "day": 5})
    state = server.state
    client = XeroClient(server)
    try:
        assert [client.get("/Accounts").status_code for _ in range(2)] == [200, 200]
        refused = client.get("/Accounts")
        assert (refused.status_code, refused.headers["Retry-After"]) == (429, "1")  # 60 s / 60
        state.clock.advance(1)
        assert [client.get("/Accounts").status_code for _ in range(3)] == [200, 200, 429]
        state.clock.advance(1)
        assert client.get("/Accounts").status_code == 200  # the 5th call of the day
        day = client.get("/Accounts")
        assert day.headers["X-Rate-Limit-Problem"] == "day"
        assert 1 <= int(day.headers["Retry-After"]) <= 1440  # 86,400 s / 60
        state.clock.advance(int(day.headers["Retry-After"]))
        client.access_token = client.refresh()["access_token"]  # 30 s tokens age fast
        assert client.get("/Accounts").headers["X-DayLimit-Remaining"] == "4"
    finally:
        client.close()


def test_clock_admin_endpoint_sets_the_scale(xero: XeroClient, state: SandboxState) -> None:
    http = xero.http
    assert http.get("/_sandbox/clock").json()["time_scale"] == 1.0
    changed = http.post("/_sandbox/clock", json={"time_scale": 60, "advance_seconds": 5})
    assert changed.status_code == 200
    assert changed.json()["time_scale"] == 60 and state.clock.time_scale == 60
    assert state.clock.offset_seconds == pytest.approx(5)
    assert http.post("/_sandbox/clock", json={"time_scale": 0.5}).json()["time_scale"] == 0.5
    for bad in ({"time_scale": 0}, {"time_scale": "fast"}, {"time_scale": -2}, {"warp": 1}, [1]):
        assert http.post("/_sandbox/clock", json=bad).status_code == 400, bad
    assert state.clock.time_scale == 0.5
    assert http.get("/_sandbox").json()["clock"]["time_scale"] == 0.5
