"""Deterministic seed, connection tables for the connector config, and the admin routes."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from connector.config import ConnectionSettings
from connector.sandbox.faults import Faults
from connector.sandbox.quickbooks import QuickBooksLedger

from .conftest import Harness, QboClient, frozen_clock, make_ledger


def test_seed_is_deterministic() -> None:
    clock = frozen_clock()
    a = make_ledger(seed=7, realms=2, clock=clock)
    b = make_ledger(seed=7, realms=2, clock=clock)
    c = make_ledger(seed=8, realms=2, clock=clock)
    assert a.realm_ids == b.realm_ids != c.realm_ids
    assert (a.client_id, a.client_secret) == (b.client_id, b.client_secret)
    assert a.refresh_token_for(a.realm_ids[1]) == b.refresh_token_for(b.realm_ids[1])
    assert a.webhook_verifier_token == b.webhook_verifier_token
    for realm_a, realm_b in zip(a.realm_ids, b.realm_ids, strict=True):
        assert a.invoices(realm_a) == b.invoices(realm_b)
        assert a.bills(realm_a) == b.bills(realm_b)
    assert [i["TotalAmt"] for i in a.invoices(a.realm_ids[0])] != [
        i["TotalAmt"] for i in c.invoices(c.realm_ids[0])
    ]


def test_seeded_realm_contents() -> None:
    ledger = make_ledger(seed=3, realms=2)
    for realm in ledger.realm_ids:
        assert len(realm) == 16 and realm.startswith("9341") and realm.isdigit()
        accounts = {a["AccountType"] for a in ledger.accounts(realm)}
        assert accounts >= {
            "Bank",
            "Other Current Asset",
            "Accounts Receivable",
            "Accounts Payable",
            "Credit Card",
            "Income",
            "Expense",
        }
        assert len(ledger.customers(realm)) == 5 and len(ledger.vendors(realm)) == 4
        invoices = ledger.invoices(realm)
        assert [i["Id"] for i in invoices][:2] == ["1", "2"] or invoices[0]["Id"].isdigit()
        assert len(invoices) == 12
        states = {
            "open": [i for i in invoices if i["Balance"] == i["TotalAmt"] > 0],
            "partial": [i for i in invoices if 0 < i["Balance"] < i["TotalAmt"]],
            "paid": [i for i in invoices if i["Balance"] == 0 < i["TotalAmt"]],
            "voided": [i for i in invoices if i["TotalAmt"] == 0],
            "eur": [i for i in invoices if i["CurrencyRef"]["value"] == "EUR"],
        }
        assert all(states.values()), {k: len(v) for k, v in states.items()}
        assert len(states["eur"]) == 2
        assert all(i["ExchangeRate"] == Decimal("1.08") for i in states["eur"])
        payments = {p["Id"]: p for p in ledger.payments(realm)}
        for inv in states["partial"] + states["paid"]:
            links = [link for link in inv["LinkedTxn"] if link["TxnType"] == "Payment"]
            assert links and links[0]["TxnId"] in payments
            assert inv["SyncToken"] == "1"
        bills = ledger.bills(realm)
        assert len(bills) == 4
        assert {(b["Balance"] == b["TotalAmt"], b["Balance"] == 0) for b in bills} == {
            (True, False),
            (False, False),
            (False, True),
        }
        assert {b["CurrencyRef"]["value"] for b in bills} == {"USD", "EUR"}
    # Ids are per realm: both realms have an invoice "1".
    assert all(ledger.invoice(r, "1")["Id"] == "1" for r in ledger.realm_ids)


def test_size_arguments() -> None:
    ledger = make_ledger(invoices=30, bills=0)
    assert len(ledger.invoices(ledger.realm_ids[0])) == 30
    assert ledger.bills(ledger.realm_ids[0]) == []
    assert make_ledger(invoices=0).invoices(make_ledger(invoices=0).realm_ids[0]) == []
    with pytest.raises(ValueError):
        QuickBooksLedger(
            seed=1, realms=0, clock=frozen_clock(), lock=threading.RLock(), faults=Faults()
        )


def test_connection_tables_are_valid_connector_config() -> None:
    ledger = make_ledger(realms=2)
    tables = ledger.connection_tables("http://127.0.0.1:8765/")
    assert len(tables) == 2
    for table, realm in zip(tables, ledger.realm_ids, strict=True):
        assert set(table) == {
            "id",
            "provider",
            "base_url",
            "token_url",
            "client_id",
            "client_secret",
            "refresh_token",
            "realm_id",
            "payment_account_code",
            "bill_payment_account_code",
            "bill_payment_type",
        }
        assert table["id"] == f"qbo-{realm[-6:]}"
        assert table["base_url"] == "http://127.0.0.1:8765/quickbooks"
        assert table["token_url"] == "http://127.0.0.1:8765/quickbooks/oauth2/v1/tokens/bearer"
        assert table["refresh_token"] == ledger.refresh_token_for(realm)
        checking = ledger.realm(realm).accounts["checking"]
        assert table["payment_account_code"] == table["bill_payment_account_code"] == checking
        assert table["bill_payment_type"] == "Check"
        settings = ConnectionSettings(**table)
        assert settings.tenant == realm


def test_overview(qbo: QboClient) -> None:
    over = qbo.http.get("/_sandbox/quickbooks/").json()
    assert over["client_id"] == qbo.ledger.client_id
    assert over["realms"][0]["realm_id"] == qbo.realm
    assert over["realms"][0]["refresh_token"] == qbo.ledger.refresh_token_for(qbo.realm)
    assert qbo.ledger.overview() == over


def test_admin_routes(harness: Harness, qbo: QboClient) -> None:
    admin = f"/_sandbox/quickbooks/{qbo.realm}"
    http = qbo.http
    created = http.post(f"{admin}/invoices", json={"total": "80.00", "balance": "50.00"})
    assert created.status_code == 201
    inv = created.json()
    assert (inv["TotalAmt"], inv["Balance"]) == (80.0, 50.0)
    paid = http.post(
        f"{admin}/invoices/{inv['Id']}/payments", json={"amount": "50.00", "private_note": "UI"}
    )
    assert paid.status_code == 201 and paid.json()["PrivateNote"] == "UI"
    too_much = http.post(f"{admin}/invoices/{inv['Id']}/payments", json={"amount": "1.00"})
    assert too_much.status_code == 400 and "6000" in too_much.json()["error"]
    edited = http.post(f"{admin}/invoices/{inv['Id']}/edit", json={"PrivateNote": "hi"}).json()
    assert edited["PrivateNote"] == "hi"
    assert http.post(f"{admin}/invoices/{inv['Id']}/void").json()["Balance"] == 0
    assert http.post(f"{admin}/invoices/{inv['Id']}/delete").json() == {"deleted": True}
    bill = http.post(f"{admin}/bills", json={"total": "10.00", "currency": "EUR"}).json()
    assert (
        http.post(f"{admin}/bills/{bill['Id']}/payments", json={"amount": "4"}).status_code == 201
    )
    assert any(b["Balance"] == 6 for b in http.get(f"{admin}/bills").json())
    payments = http.get(f"{admin}/payments").json()
    assert any(p.get("status") == "Deleted" for p in payments) is False
    # Voiding the invoice unlinked the payment (its SyncToken moved): delete the current one.
    current = next(p for p in payments if p["Id"] == paid.json()["Id"])
    assert current["UnappliedAmt"] == 50 and current["SyncToken"] == "1"
    deleted = qbo.post("payment", {"Id": current["Id"], "SyncToken": "1"}, operation="delete")
    assert deleted.status_code == 200
    assert any(p.get("status") == "Deleted" for p in http.get(f"{admin}/payments").json())
    for what in ("invoices", "billpayments", "customers", "vendors", "accounts"):
        assert http.get(f"{admin}/{what}").status_code == 200
    assert http.get(f"{admin}/widgets").status_code == 404
    assert http.get("/_sandbox/quickbooks/123/invoices").status_code == 404
    assert http.post(f"{admin}/invoices/999/void").status_code == 404
    assert http.post(f"{admin}/revoke").json() == {"revoked": True}
    assert qbo.get("invoice/1").status_code == 401
