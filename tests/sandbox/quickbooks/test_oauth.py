"""OAuth 2.0: Basic client auth, refresh-token rotation, invalid_grant, expiry, revocation."""

from __future__ import annotations

import base64
import json

import httpx

from connector.sandbox.quickbooks.auth import ACCESS_TTL, REFRESH_TTL

from .conftest import (
    Harness,
    HarnessFactory,
    QboClient,
    frozen_clock,
    parse,
    sample,
    shape_problems,
)


def test_refresh_with_basic_auth_returns_the_documented_token_shape(qbo: QboClient) -> None:
    response = qbo.token_request(qbo.ledger.refresh_token_for(qbo.realm))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert shape_problems(sample("oauth_token_response"), body) == []
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["x_refresh_token_expires_in"] == 100 * 86400


def test_client_secret_post_is_accepted_and_a_wrong_secret_is_not(qbo: QboClient) -> None:
    token = qbo.ledger.refresh_token_for(qbo.realm)
    assert qbo.token_request(token, basic=False).status_code == 200
    token = qbo.ledger.refresh_token_for(qbo.realm)
    wrong = qbo.token_request(token, secret="nope")
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "invalid_client"}
    # A failed client authentication does not use up the refresh token.
    assert qbo.token_request(token).status_code == 200


def test_unsupported_grant_and_missing_token(qbo: QboClient) -> None:
    auth = httpx.BasicAuth(qbo.ledger.client_id, qbo.ledger.client_secret)
    url = "/quickbooks/oauth2/v1/tokens/bearer"
    code = qbo.http.post(url, data={"grant_type": "authorization_code", "code": "x"}, auth=auth)
    assert code.status_code == 400 and code.json()["error"] == "unsupported_grant_type"
    empty = qbo.http.post(url, data={"grant_type": "refresh_token"}, auth=auth)
    assert empty.status_code == 400 and empty.json()["error"] == "invalid_request"


def test_refresh_token_rotates_and_the_old_one_dies_once_the_new_one_is_used(
    qbo: QboClient,
) -> None:
    first = qbo.ledger.refresh_token_for(qbo.realm)
    second = qbo.refresh(first)["refresh_token"]
    assert second != first
    assert qbo.ledger.refresh_token_for(qbo.realm) == second
    # Until the new token is used, the old one still works (a lost response is survivable).
    third = qbo.refresh(first)["refresh_token"]
    assert third not in {first, second}
    fourth = qbo.refresh(second)["refresh_token"]
    dead = qbo.token_request(first)
    assert dead.status_code == 400
    body = dead.json()
    assert body == {
        "error": "invalid_grant",
        "error_description": "Incorrect or invalid refresh token",
    }
    assert shape_problems(sample("oauth_token_error_response"), body) == []
    # The sibling issued from the same parent lives on until a successor of it is used.
    assert qbo.token_request(third).status_code == 200
    assert qbo.token_request(fourth).status_code == 200


def test_access_token_expires_after_an_hour_of_sandbox_time(make_harness: HarnessFactory) -> None:
    harness = make_harness(clock=frozen_clock())
    qbo = QboClient(harness)
    try:
        assert qbo.get("companyinfo/" + qbo.realm).status_code == 200
        harness.ledger.clock.advance(ACCESS_TTL.total_seconds() - 1)
        assert qbo.get("companyinfo/" + qbo.realm).status_code == 200
        harness.ledger.clock.advance(1)
        expired = qbo.get("companyinfo/" + qbo.realm)
        assert expired.status_code == 401
        fault = parse(expired)["fault"]
        assert fault["type"] == "AUTHENTICATION"
        assert fault["error"][0]["code"] == "3200"
        assert fault["error"][0]["message"] == (
            "message=AuthenticationFailed; errorCode=003200; statusCode=401"
        )
        assert fault["error"][0]["detail"].startswith("Token expired: AB0")
        assert set(parse(expired)) == {
            "warnings",
            "intuitObject",
            "fault",
            "report",
            "queryResponse",
            "batchItemResponse",
            "attachableResponse",
            "syncErrorResponse",
            "requestId",
            "time",
            "status",
            "cdcresponse",
        }
        assert isinstance(parse(expired)["time"], int)
        assert "intuit_tid" in expired.headers
        qbo.access_token = qbo.refresh()["access_token"]
        assert qbo.get("companyinfo/" + qbo.realm).status_code == 200
    finally:
        qbo.close()


def test_refresh_token_expires_after_100_days_unused(make_harness: HarnessFactory) -> None:
    harness = make_harness()
    qbo = QboClient(harness)
    try:
        token = harness.ledger.refresh_token_for(qbo.realm)
        harness.ledger.clock.advance(REFRESH_TTL.total_seconds())
        assert qbo.token_request(token).json()["error"] == "invalid_grant"
    finally:
        qbo.close()


def test_time_scale_shortens_every_lifetime(make_harness: HarnessFactory) -> None:
    clock = frozen_clock()
    clock.time_scale = 60.0
    harness = make_harness(clock=clock)
    qbo = QboClient(harness)
    try:
        token = qbo.refresh()
        assert token["expires_in"] == 60
        qbo.access_token = token["access_token"]
        clock.advance(60)
        assert qbo.get("companyinfo/" + qbo.realm).status_code == 401
    finally:
        qbo.close()


def test_revoked_grant_refuses_refresh_and_api_calls(qbo: QboClient) -> None:
    qbo.ledger.revoke_grant(qbo.realm)
    assert qbo.get("invoice/1").status_code == 401
    response = qbo.token_request(qbo.ledger.refresh_token_for(qbo.realm))
    assert response.json()["error"] == "invalid_grant"


def test_revoke_endpoint(qbo: QboClient) -> None:
    auth = httpx.BasicAuth(qbo.ledger.client_id, qbo.ledger.client_secret)
    token = qbo.ledger.refresh_token_for(qbo.realm)
    response = qbo.http.post(
        "/quickbooks/v2/oauth2/tokens/revoke", json={"token": token}, auth=auth
    )
    assert response.status_code == 200
    assert qbo.token_request(token).json()["error"] == "invalid_grant"


def test_a_token_is_good_for_its_own_realm_only(make_harness: HarnessFactory) -> None:
    harness = make_harness(realms=2)
    first, second = QboClient(harness, 0), QboClient(harness, 1)
    try:
        assert first.realm != second.realm
        first.access_token = second.access_token
        response = first.get("invoice/1")
        assert response.status_code == 403
        assert parse(response)["fault"]["error"][0]["code"] == "3100"
        assert second.get("invoice/1").status_code == 200
    finally:
        first.close()
        second.close()


def test_missing_or_malformed_bearer(qbo: QboClient) -> None:
    url = qbo.path("invoice/1")
    assert qbo.http.get(url).status_code == 401
    assert qbo.http.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401


def test_discovery_document_points_at_the_sandbox(harness: Harness, qbo: QboClient) -> None:
    for path in ("openid_configuration", "openid_sandbox_configuration/"):
        response = qbo.http.get(f"/quickbooks/.well-known/{path}")
        assert response.status_code == 200
        doc = response.json()
        assert shape_problems(sample("oauth_openid_discovery"), doc) == []
        base = harness.url + "/quickbooks"
        assert doc["token_endpoint"] == base + "/oauth2/v1/tokens/bearer"
        assert doc["issuer"] == base + "/op/v1"
        jwks = qbo.http.get(doc["jwks_uri"].removeprefix(harness.url)).json()
        assert jwks["keys"][0]["kty"] == "RSA"


def test_id_token_is_a_verifiable_jwt(harness: Harness, qbo: QboClient) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    tokens = qbo.refresh()
    head, payload, signature = tokens["id_token"].split(".")
    jwk = qbo.http.get("/quickbooks/op/v1/jwks").json()["keys"][0]
    assert json.loads(unb64(head))["kid"] == jwk["kid"]
    public = rsa.RSAPublicNumbers(
        int.from_bytes(unb64(jwk["e"]), "big"), int.from_bytes(unb64(jwk["n"]), "big")
    ).public_key()
    public.verify(
        unb64(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    claims = json.loads(unb64(payload))
    assert claims["realmid"] == qbo.realm
    assert claims["aud"] == [qbo.ledger.client_id]
    assert claims["iss"] == harness.url + "/quickbooks/op/v1"


def test_userinfo(qbo: QboClient) -> None:
    response = qbo.http.get("/quickbooks/v1/openid_connect/userinfo", headers=qbo.headers())
    assert response.status_code == 200
    assert response.json()["sub"]
