"""OAuth 2.0 client credentials (JWT assertion) and Token-Based Authentication."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connector.sandbox.clock import Clock

from .conftest import (
    FROZEN_AT,
    JWT_BEARER,
    Client,
    Factory,
    NetSuite,
    TBAAuth,
    error_code,
    make_assertion,
)


def _token(ns: NetSuite, assertion: str, **form: str) -> httpx.Response:
    body = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }
    body.update(form)
    return httpx.post(ns.token_url(), data=body, timeout=10)


def _pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _public_pem(key: Any) -> bytes:
    data: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def test_es256_assertion_gets_a_bearer_token_that_reads_records(ns: NetSuite) -> None:
    response = _token(ns, make_assertion(ns.ledger, ns.account, ns.token_url()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert body["expires_in"] == 3600 and body["token_type"] == "bearer"
    assert body["access_token"].count(".") == 2  # JWT-shaped, as NetSuite's
    invoice = ns.ledger.invoices(ns.account)[0]
    got = httpx.get(
        f"{ns.base()}/services/rest/record/v1/invoice/{invoice['id']}",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert got.status_code == 200 and got.json()["id"] == invoice["id"]


def test_ps256_with_a_mapped_rsa_certificate_and_a_list_scope(
    ns: NetSuite, rsa_key: rsa.RSAPrivateKey
) -> None:
    kid = ns.ledger.register_certificate(ns.account, _public_pem(rsa_key))
    assertion = make_assertion(
        ns.ledger,
        ns.account,
        ns.token_url(),
        alg="PS256",
        key_pem=_pem(rsa_key),
        kid=kid,
        scope=["restlets", "rest_webservices"],
    )
    assert _token(ns, assertion).status_code == 200


def test_rs256_is_not_an_allowed_algorithm(ns: NetSuite, rsa_key: rsa.RSAPrivateKey) -> None:
    kid = ns.ledger.register_certificate(ns.account, _public_pem(rsa_key))
    assertion = make_assertion(
        ns.ledger, ns.account, ns.token_url(), alg="RS256", key_pem=_pem(rsa_key), kid=kid
    )
    response = _token(ns, assertion)
    assert response.status_code == 401 and response.json() == {"error": "invalid_client"}


def test_small_rsa_keys_cannot_be_mapped(ns: NetSuite) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError):
        ns.ledger.register_certificate(ns.account, _public_pem(small))


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"kid": "not-a-certificate"}, 401, "invalid_client"),
        (
            {"aud": "https://evil.example.com/services/rest/auth/oauth2/v1/token"},
            400,
            "invalid_grant",
        ),
        ({"iat": int(min(time.time(), FROZEN_AT.timestamp())) - 7200}, 400, "invalid_grant"),
        ({"lifetime": 3601}, 400, "invalid_grant"),
        ({"iss": "someone-else"}, 401, "invalid_client"),
        ({"scope": "nonsense"}, 400, "invalid_scope"),
    ],
)
def test_bad_assertions_are_refused(
    ns: NetSuite, overrides: dict[str, Any], status: int, error: str
) -> None:
    assertion = make_assertion(ns.ledger, ns.account, ns.token_url(), **overrides)
    response = _token(ns, assertion)
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_a_bad_signature_is_refused(ns: NetSuite) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    assertion = make_assertion(ns.ledger, ns.account, ns.token_url(), key_pem=_pem(other))
    response = _token(ns, assertion)
    assert (response.status_code, response.json()) == (401, {"error": "invalid_client"})


def test_the_real_token_url_is_a_valid_audience(ns: NetSuite) -> None:
    real = f"https://{ns.account}.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token"
    assert _token(ns, make_assertion(ns.ledger, ns.account, real)).status_code == 200


def test_malformed_token_requests(ns: NetSuite) -> None:
    assertion = make_assertion(ns.ledger, ns.account, ns.token_url())
    wrong_grant = _token(ns, assertion, grant_type="refresh_token")
    assert wrong_grant.json() == {"error": "unsupported_grant_type"}
    no_type = _token(ns, assertion, client_assertion_type="jwt")
    assert no_type.json() == {"error": "invalid_request"}
    garbage = _token(ns, "not.a.jwt")
    assert garbage.status_code == 400 and garbage.json() == {"error": "invalid_request"}


def test_access_tokens_expire_after_an_hour(client: Client, ns: NetSuite) -> None:
    assert client.get("/invoice").status_code == 200
    ns.clock.advance(3600)
    expired = client.get("/invoice")
    assert expired.status_code == 401
    assert expired.json()["o:errorDetails"][0]["o:errorCode"] == "INVALID_LOGIN"
    client.access_token = client.fetch_token()
    assert client.get("/invoice").status_code == 200


class _FastClock(Clock):
    time_scale = 60.0


def test_token_lifetime_follows_the_clock_time_scale(make_netsuite: Factory) -> None:
    env = make_netsuite(clock=_FastClock(frozen_at=FROZEN_AT))
    response = _token(env, make_assertion(env.ledger, env.account, env.token_url()))
    assert response.json()["expires_in"] == 60
    token = response.json()["access_token"]
    url = f"{env.base()}/services/rest/record/v1/invoice"
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(url, headers=headers).status_code == 200
    env.clock.advance(61)
    assert httpx.get(url, headers=headers).status_code == 401


def test_tba_hmac_sha256_signed_requests(ns: NetSuite) -> None:
    creds = ns.ledger.credentials(ns.account)
    auth = TBAAuth(creds, realm=ns.account)
    with httpx.Client(base_url=f"{ns.base()}/services/rest", auth=auth, timeout=10) as http:
        invoice = ns.ledger.invoices(ns.account)[0]
        got = http.get(f"/record/v1/invoice/{invoice['id']}", params={"fields": "id,total"})
        assert got.status_code == 200, got.text
        rows = http.post(
            "/query/v1/suiteql",
            json={"q": "SELECT id FROM transaction WHERE type = 'CustInvc'"},
            headers={"Prefer": "transient"},
        )
        assert rows.status_code == 200 and rows.json()["count"] == 12
        first = http.get("/record/v1/invoice")
        # The same signed header again: a replayed nonce.
        replayed = httpx.get(
            f"{ns.base()}/services/rest/record/v1/invoice",
            headers={"Authorization": auth.last_authorization},
        )
        assert first.status_code == 200 and replayed.status_code == 401
        assert error_code(replayed) == "INVALID_LOGIN"


def test_tba_bad_signature_realm_and_method_are_refused(ns: NetSuite) -> None:
    creds = ns.ledger.credentials(ns.account)
    url = f"{ns.base()}/services/rest/record/v1/invoice"
    bad_secret = httpx.get(url, auth=TBAAuth(creds, ns.account, secret="0" * 64))
    assert bad_secret.status_code == 401 and error_code(bad_secret) == "INVALID_LOGIN"
    wrong_realm = httpx.get(url, auth=TBAAuth(creds, ns.account.lower() + "x"))
    assert wrong_realm.status_code == 401
    sha1 = TBAAuth(creds, ns.account)
    sha1.client.signature_method = "HMAC-SHA1"
    assert httpx.get(url, auth=sha1).status_code == 401


def test_tba_timestamps_far_from_now_are_refused(ns: NetSuite) -> None:
    creds = ns.ledger.credentials(ns.account)
    auth = TBAAuth(creds, ns.account)
    url = f"{ns.base()}/services/rest/record/v1/invoice"
    _, headers, _ = auth.client.prepare("GET", url, {}, b"")
    stale = headers["Authorization"].replace('oauth_timestamp="', 'oauth_timestamp="1')
    assert httpx.get(url, headers={"Authorization": stale}).status_code == 401


def test_sandbox_accounts_and_host_style_ids(make_netsuite: Factory) -> None:
    env = make_netsuite(accounts=2)
    production, sandbox = env.ledger.account_ids
    assert sandbox == f"{production}_SB1" and len(production) == 7
    creds = env.ledger.credentials(sandbox)
    host_style = f"{env.url}/netsuite/{sandbox.lower().replace('_', '-')}/services/rest"
    ok = httpx.get(f"{host_style}/record/v1/invoice", auth=TBAAuth(creds, sandbox))
    assert ok.status_code == 200
    # The realm must be the account id as written, not the host form.
    lowered = httpx.get(f"{host_style}/record/v1/invoice", auth=TBAAuth(creds, sandbox.lower()))
    assert lowered.status_code == 401
    # Credentials of one account do not open another.
    other = httpx.get(
        f"{env.base(production)}/services/rest/record/v1/invoice", auth=TBAAuth(creds, production)
    )
    assert other.status_code == 401


def test_revoke_and_reauthorize(client: Client, ns: NetSuite) -> None:
    creds = ns.ledger.credentials(ns.account)
    url = f"{ns.base()}/services/rest/record/v1/invoice"
    ns.ledger.revoke(ns.account)
    assert client.get("/invoice").status_code == 401
    assert client.token_request().json() == {"error": "invalid_grant"}
    assert httpx.get(url, auth=TBAAuth(creds, ns.account)).status_code == 401
    ns.ledger.reauthorize(ns.account)
    assert client.get("/invoice").status_code == 401  # revoked tokens stay dead
    client.access_token = client.fetch_token()
    assert client.get("/invoice").status_code == 200
    assert httpx.get(url, auth=TBAAuth(creds, ns.account)).status_code == 200


def test_missing_authorization_is_the_documented_401(ns: NetSuite) -> None:
    response = httpx.get(f"{ns.base()}/services/rest/record/v1/invoice")
    assert response.status_code == 401
    body = response.json()
    assert body["title"] == "Unauthorized" and body["status"] == 401
    assert body["o:errorDetails"][0]["detail"].startswith("Invalid login attempt.")


def test_connection_tables_write_the_key_and_point_at_the_sandbox(
    ns: NetSuite, tmp_path: Path
) -> None:
    (table,) = ns.ledger.connection_tables(ns.url, tmp_path / "keys")
    assert set(table) == {
        "id",
        "provider",
        "base_url",
        "token_url",
        "client_id",
        "client_secret",
        "account_id",
        "certificate_id",
        "private_key_path",
        "payment_account_code",
        "bill_payment_account_code",
    }
    assert table["id"] == f"netsuite-{ns.account.lower()}" and table["provider"] == "netsuite"
    assert table["base_url"] == ns.base() and table["token_url"] == ns.token_url()
    assert table["payment_account_code"] == table["bill_payment_account_code"] == "1"
    path = Path(table["private_key_path"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_text()
    assertion = make_assertion(ns.ledger, ns.account, table["token_url"], key_pem=pem)
    assert _token(ns, assertion).status_code == 200
    assert ns.ledger.credentials(ns.account)["certificate_id"] == table["certificate_id"]


def test_credentials_are_deterministic_per_seed(make_netsuite: Factory) -> None:
    first = make_netsuite(seed=5).ledger
    second = make_netsuite(seed=5).ledger
    third = make_netsuite(seed=6).ledger
    assert first.account_ids == second.account_ids
    assert first.credentials(first.account_ids[0]) == second.credentials(second.account_ids[0])
    assert first.credentials(first.account_ids[0]) != third.credentials(third.account_ids[0])
