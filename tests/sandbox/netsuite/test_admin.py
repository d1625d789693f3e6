"""The admin routes under /_sandbox/netsuite and the ledger's overview."""

from __future__ import annotations

import httpx

from .conftest import Client, NetSuite


def _admin(ns: NetSuite, path: str) -> str:
    return f"{ns.url}/_sandbox/netsuite{path}"


def test_overview(ns: NetSuite) -> None:
    body = httpx.get(_admin(ns, "/")).json()
    (account,) = body["accounts"]
    assert body["concurrency"] == 5
    assert account["account_id"] == ns.account
    assert account["invoices"] == 12 and account["bills"] == 4
    assert account["client_id"] == ns.ledger.credentials(ns.account)["client_id"]
    assert body == ns.ledger.overview()


def test_credentials_and_listings(ns: NetSuite) -> None:
    creds = httpx.get(_admin(ns, f"/{ns.account}/credentials")).json()
    assert set(creds) == {
        "client_id",
        "client_secret",
        "certificate_id",
        "private_key_pem",
        "consumer_key",
        "consumer_secret",
        "token_id",
        "token_secret",
    }
    assert creds["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    assert len(httpx.get(_admin(ns, f"/{ns.account}/invoices")).json()) == 12
    assert len(httpx.get(_admin(ns, f"/{ns.account}/bills")).json()) == 4
    assert len(httpx.get(_admin(ns, f"/{ns.account}/customer-payments")).json()) == 4
    assert len(httpx.get(_admin(ns, f"/{ns.account}/vendor-payments")).json()) == 2
    assert httpx.get(_admin(ns, "/0000000/invoices")).status_code == 404


def test_admin_writes_act_like_a_person_in_the_ui(client: Client, ns: NetSuite) -> None:
    created = httpx.post(
        _admin(ns, f"/{ns.account}/invoices"),
        json={"total": "120.00", "amount_remaining": "100.00", "external_id": "ADM-1"},
    ).json()
    assert created["amountPaid"] == 20 and created["externalId"] == "ADM-1"
    paid = httpx.post(
        _admin(ns, f"/{ns.account}/invoices/{created['id']}/pay"), json={"amount": "100.00"}
    )
    assert paid.status_code == 200
    assert client.get(f"/invoice/{created['id']}").json()["status"]["id"] == "B"
    edited = httpx.post(
        _admin(ns, f"/{ns.account}/invoices/{created['id']}/edit"), json={"memo": "note"}
    ).json()
    assert edited["memo"] == "note"
    too_much = httpx.post(
        _admin(ns, f"/{ns.account}/invoices/{created['id']}/pay"), json={"amount": "1"}
    )
    assert too_much.status_code == 400
    bill = httpx.post(_admin(ns, f"/{ns.account}/bills"), json={"total": "50"}).json()
    httpx.post(_admin(ns, f"/{ns.account}/bills/{bill['id']}/pay"), json={"amount": "50"})
    assert ns.ledger.open_amount(ns.account, bill["id"]) == 0


def test_revoke_and_reauthorize_over_http(client: Client, ns: NetSuite) -> None:
    assert httpx.post(_admin(ns, f"/{ns.account}/revoke")).json() == {"revoked": True}
    assert client.get("/invoice").status_code == 401
    assert httpx.post(_admin(ns, f"/{ns.account}/reauthorize")).json() == {"revoked": False}
    client.access_token = client.fetch_token()
    assert client.get("/invoice").status_code == 200
