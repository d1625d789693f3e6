"""Identity emulation: refresh-token rotation, grace period, expiry, tenants."""

from __future__ import annotations

import base64
import re

import httpx

from connector.sandbox import SandboxServer, SandboxState

from .conftest import ServerFactory, XeroClient, parse


def test_refresh_returns_a_full_token_set_and_rotates(
    xero: XeroClient, state: SandboxState
) -> None:
    first = state.xero.refresh_token_for(xero.tenant_id)
    # The fixture already refreshed once, so the seeded token has been rotated.
    response = xero.token_request(first)
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access_token", "expires_in", "token_type", "refresh_token", "scope"}
    assert tokens["expires_in"] == 1800
    assert tokens["token_type"] == "Bearer"
    assert "offline_access" in tokens["scope"].split()
    assert tokens["refresh_token"] != first
    assert state.xero.refresh_token_for(xero.tenant_id) == tokens["refresh_token"]


def test_rotated_token_works_during_grace_then_fails(server: SandboxServer) -> None:
    state = server.state
    client = XeroClient(server)  # rotates the seeded token once
    try:
        seeded = SandboxState(seed=1).xero.refresh_token_for(client.tenant_id)
        state.clock.advance(29 * 60)
        assert client.token_request(seeded).status_code == 200
        state.clock.advance(2 * 60)  # 31 minutes after the first rotation
        late = client.token_request(seeded)
        assert late.status_code == 400
        assert late.json() == {"error": "invalid_grant"}
        # The newest token is unaffected.
        assert (
            client.token_request(state.xero.refresh_token_for(client.tenant_id)).status_code == 200
        )
    finally:
        client.close()


def test_unknown_token_and_bad_client(xero: XeroClient, state: SandboxState) -> None:
    unknown = xero.token_request("not-a-token")
    assert (unknown.status_code, unknown.json()) == (400, {"error": "invalid_grant"})
    current = state.xero.refresh_token_for(xero.tenant_id)
    bad = xero.token_request(current, client_secret="wrong")
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid_client"})
    # A failed client check must not consume the refresh token.
    assert state.xero.refresh_token_for(xero.tenant_id) == current


def test_basic_client_authentication(xero: XeroClient, state: SandboxState) -> None:
    creds = f"{state.xero.client_id}:{state.xero.client_secret}".encode()
    form = {
        "grant_type": "refresh_token",
        "refresh_token": state.xero.refresh_token_for(xero.tenant_id),
    }
    ok = xero.http.post(
        "/xero/connect/token",
        data=form,
        headers={"Authorization": "Basic " + base64.b64encode(creds).decode()},
    )
    assert ok.status_code == 200
    assert ok.json()["refresh_token"] == state.xero.refresh_token_for(xero.tenant_id)
    wrong = xero.http.post(
        "/xero/connect/token",
        data={**form, "refresh_token": ok.json()["refresh_token"]},
        headers={"Authorization": "Basic " + base64.b64encode(b"x:y").decode()},
    )
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid_client"})


def test_access_token_expires_after_30_minutes(xero: XeroClient, state: SandboxState) -> None:
    assert xero.get("/Invoices").status_code == 200
    state.clock.advance(29 * 60)
    assert xero.get("/Invoices").status_code == 200
    state.clock.advance(61)
    expired = xero.get("/Invoices")
    assert expired.status_code == 401
    body = expired.json()
    assert body["Title"] == "Unauthorized" and body["Status"] == 401 and body["Type"] is None
    assert re.fullmatch(
        r"TokenExpired: token expired at \d\d/\d\d/\d{4} \d\d:\d\d:\d\d", body["Detail"]
    )
    assert body["Extensions"] == {}
    # A refresh after expiry gives a working token again.
    xero.access_token = xero.refresh()["access_token"]
    assert xero.get("/Invoices").status_code == 200


def test_unknown_bearer_is_401_problem(xero: XeroClient) -> None:
    response = xero.get("/Invoices", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    body = response.json()
    assert body["Detail"] == "AuthenticationUnsuccessful"
    assert set(body) == {"Type", "Title", "Status", "Detail", "Instance", "Extensions"}
    assert xero.http.get("/xero/api.xro/2.0/Invoices").status_code == 401  # no header at all


def test_tenant_header_is_required_and_checked(make_server: ServerFactory) -> None:
    server = make_server(seed=3, tenants=2)
    first, second = XeroClient(server, 0), XeroClient(server, 1)
    try:
        for headers in (
            {"xero-tenant-id": ""},
            {"xero-tenant-id": "00000000-0000-0000-0000-000000000000"},
        ):
            response = first.get("/Invoices", headers=headers)
            assert response.status_code == 403
            assert response.json()["Title"] == "Forbidden"
            assert response.json()["Detail"] == "AuthenticationUnsuccessful"
        # Tenant 2 exists but is not in tenant 1's grant.
        cross = first.get("/Invoices", headers={"xero-tenant-id": second.tenant_id})
        assert cross.status_code == 403
        # Header value is case-insensitive, like a GUID.
        assert (
            first.get("/Invoices", headers={"xero-tenant-id": first.tenant_id.upper()}).status_code
            == 200
        )
    finally:
        first.close()
        second.close()


def test_connections_lists_the_grant_tenants(xero: XeroClient, state: SandboxState) -> None:
    for path in ("/xero/connections", "/xero/Connections"):
        response = xero.http.get(path, headers={"Authorization": f"Bearer {xero.access_token}"})
        assert response.status_code == 200
        (conn,) = response.json()
        assert conn["tenantId"] == xero.tenant_id
        assert conn["tenantType"] == "ORGANISATION"
        assert conn["tenantName"] == state.xero.tenant_name(xero.tenant_id)
        assert {"id", "authEventId", "createdDateUtc", "updatedDateUtc"} <= set(conn)
    assert xero.http.get("/xero/connections").status_code == 401


def test_revoked_grant(xero: XeroClient, state: SandboxState) -> None:
    state.xero.revoke_grant(xero.tenant_id)
    assert xero.get("/Invoices").status_code == 401
    refused = xero.token_request(state.xero.refresh_token_for(xero.tenant_id))
    assert (refused.status_code, refused.json()) == (400, {"error": "invalid_grant"})


def test_unused_refresh_token_expires_after_60_days(server: SandboxServer) -> None:
    state = server.state
    token = state.xero.refresh_token_for(state.xero.tenant_ids[0])
    state.clock.advance(61 * 86_400)
    with httpx.Client(base_url=server.url) as http:
        response = http.post(
            "/xero/connect/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": token,
                "client_id": state.xero.client_id,
                "client_secret": state.xero.client_secret,
            },
        )
    assert parse(response) == {"error": "invalid_grant"}


def test_disconnect_and_revocation(xero: XeroClient, state: SandboxState) -> None:
    bearer = {"Authorization": f"Bearer {xero.access_token}"}
    (conn,) = xero.http.get("/xero/connections", headers=bearer).json()
    assert xero.http.delete(f"/xero/connections/{conn['id']}", headers=bearer).status_code == 204
    assert xero.http.get("/xero/connections", headers=bearer).json() == []
    assert xero.get("/Invoices").status_code == 403
    revoked = xero.http.post(
        "/xero/connect/revocation",
        data={
            "token": state.xero.refresh_token_for(xero.tenant_id),
            "client_id": state.xero.client_id,
            "client_secret": state.xero.client_secret,
        },
    )
    assert revoked.status_code == 200
    assert xero.token_request(state.xero.refresh_token_for(xero.tenant_id)).json() == {
        "error": "invalid_grant"
    }
