"""Seed determinism and composition, admin endpoints, the config file, serve()."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from connector.sandbox import Clock, SandboxServer, SandboxState, write_config
from connector.sandbox.wire import dumps, loads, parse_date_value

from .conftest import XeroClient, parse


def _fingerprint(state: SandboxState) -> list[object]:
    x = state.xero
    return (
        [x.client_id, x.client_secret, x.tenant_ids]
        + [
            (i["InvoiceID"], i["InvoiceNumber"], i["Total"], i["Status"], i["CurrencyCode"])
            for t in x.tenant_ids
            for i in x.invoices(t)
        ]
        + [x.refresh_token_for(t) for t in x.tenant_ids]
    )


def test_same_seed_same_data_other_seed_other_data() -> None:
    assert _fingerprint(SandboxState(seed=5, tenants=2)) == _fingerprint(
        SandboxState(seed=5, tenants=2)
    )
    assert _fingerprint(SandboxState(seed=5)) != _fingerprint(SandboxState(seed=6))


def test_seed_composition() -> None:
    state = SandboxState(seed=1)
    tenant = state.xero.tenant_ids[0]
    invoices = state.xero.invoices(tenant)
    sales = [i for i in invoices if i["Type"] == "ACCREC"]
    assert [i["InvoiceNumber"] for i in sales] == [f"INV-{n:04d}" for n in range(1, 13)]
    assert any(i["Type"] == "ACCPAY" for i in invoices)
    statuses = Counter(i["Status"] for i in sales)
    assert {"AUTHORISED", "PAID", "DRAFT", "SUBMITTED", "VOIDED"} <= set(statuses)
    unpaid = [i for i in sales if i["Status"] == "AUTHORISED" and i["AmountPaid"] == 0]
    assert len(unpaid) > len(sales) / 2
    assert any(i["Status"] == "AUTHORISED" and 0 < i["AmountPaid"] < i["Total"] for i in sales)
    paid = next(i for i in sales if i["Status"] == "PAID")
    assert paid["AmountDue"] == 0 and len(paid["Payments"]) == 1 and "FullyPaidOnDate" in paid
    euro = [i for i in sales if i["CurrencyCode"] == "EUR"]
    assert len(euro) == 2 and all(i["CurrencyRate"] != 1 for i in euro)
    accounts = {a["Code"]: a for a in state.xero.accounts(tenant)}
    assert accounts["090"]["Name"] == "Business Bank Account" and accounts["090"]["Type"] == "BANK"
    assert accounts["090"]["BankAccountNumber"]
    assert accounts["091"]["Type"] == "BANK"
    assert (accounts["200"]["Type"], accounts["610"]["Type"]) == ("REVENUE", "CURRENT")
    assert accounts["610"]["EnablePaymentsToAccount"] is False
    assert "800" in accounts
    assert len(state.xero.contacts(tenant)) == 5


def test_add_invoice_helper() -> None:
    state = SandboxState(seed=1, invoices=3)
    tenant = state.xero.tenant_ids[0]
    invoice = state.xero.add_invoice(tenant, total=Decimal("50.00"), amount_paid=Decimal("50.00"))
    assert invoice["InvoiceNumber"] == "INV-0004"
    assert (invoice["Status"], invoice["AmountDue"]) == ("PAID", Decimal("0.00"))
    assert len(state.xero.payments(tenant, invoice["InvoiceID"])) == 1
    bill = state.xero.add_invoice(
        tenant, type="ACCPAY", currency="EUR", number="B-1", status="DRAFT"
    )
    assert (bill["Type"], bill["CurrencyCode"], bill["Status"]) == ("ACCPAY", "EUR", "DRAFT")
    with pytest.raises(ValueError):
        state.xero.add_invoice(tenant, status="DRAFT", amount_paid=Decimal("1"))
    with pytest.raises(ValueError):
        state.xero.edit_invoice(tenant, invoice["InvoiceID"], Status="VOIDED")  # it has a payment
    with pytest.raises(KeyError):
        state.xero.invoice(tenant, "INV-9999")


def test_write_config(tmp_path: Path) -> None:
    state = SandboxState(seed=1, tenants=2, providers=("xero",))
    path = write_config(
        state,
        tmp_path / "sub" / "connector.toml",
        base_url="http://127.0.0.1:9999/",
        database_url="sqlite:///x.db",
    )
    text = path.read_text()
    assert text.startswith("# Written by `connector sandbox --write-config`")
    config = tomllib.loads(text)
    assert config["database"] == {"url": "sqlite:///x.db"}
    assert len(config["connections"]) == 2
    for conn, tenant in zip(config["connections"], state.xero.tenant_ids, strict=True):
        assert conn == {
            "id": f"xero-{tenant[:8]}",
            "provider": "xero",
            "base_url": "http://127.0.0.1:9999/xero",
            "token_url": "http://127.0.0.1:9999/xero/connect/token",
            "client_id": state.xero.client_id,
            "client_secret": state.xero.client_secret,
            "refresh_token": state.xero.refresh_token_for(tenant),
            "tenant_id": tenant,
            "payment_account_code": "090",
        }


def test_write_config_appends_extra_connections(tmp_path: Path) -> None:
    state = SandboxState(seed=1, providers=("xero",))
    quickbooks = {
        "id": "qbo-1",
        "provider": "quickbooks",
        "base_url": "http://127.0.0.1:9999/quickbooks",
        "client_secret": 'we"ird\\ \n\ttab \x7f and ünïcode',
        "realm_id": "4620816365",
    }
    netsuite = {"id": "ns-1", "provider": "netsuite", "odd key.with dot": "v"}
    path = write_config(
        state,
        tmp_path / "all.toml",
        base_url="http://127.0.0.1:9999",
        extra_connections=[quickbooks, netsuite],
    )
    config = tomllib.loads(path.read_text())
    assert [c["id"] for c in config["connections"]] == [
        f"xero-{state.xero.tenant_ids[0][:8]}",
        "qbo-1",
        "ns-1",
    ]
    assert config["connections"][1] == quickbooks
    assert config["connections"][2] == netsuite
    text = path.read_text()
    assert 'realm_id = "4620816365"' in text  # a TOML string, never a number
    assert '"odd key.with dot" = "v"' in text  # not a dotted key
    with pytest.raises(ValueError):
        write_config(state, tmp_path / "x.toml", base_url="http://h", extra_connections=[{}])
    with pytest.raises(TypeError):
        write_config(
            state,
            tmp_path / "x.toml",
            base_url="http://h",
            extra_connections=[{"port": 1}],  # type: ignore[dict-item]
        )


def test_admin_endpoints(xero: XeroClient, state: SandboxState, server: SandboxServer) -> None:
    http = xero.http
    before = state.clock.now()
    moved = http.post("/_sandbox/clock", json={"advance_seconds": 420})
    assert moved.status_code == 200
    assert state.clock.offset_seconds == pytest.approx(420)
    assert (state.clock.now() - before).total_seconds() >= 420
    assert "now" in http.get("/_sandbox/clock").json()
    assert http.post("/_sandbox/clock", json={"advance_seconds": -1}).status_code == 400

    invoice = xero.payable_invoice()
    payment = state.xero.apply_payment(xero.tenant_id, invoice["InvoiceID"], Decimal("1.00"))
    xero.access_token = xero.refresh()["access_token"]
    assert (
        xero.send("POST", f"/Payments/{payment['PaymentID']}", {"Status": "DELETED"}).status_code
        == 200
    )
    listed = parse(http.get(f"/_sandbox/xero/{xero.tenant_id}/payments"))
    assert {"PaymentID": payment["PaymentID"], "Status": "DELETED"}.items() <= next(
        p for p in listed if p["PaymentID"] == payment["PaymentID"]
    ).items()
    assert http.get("/_sandbox/xero/nope/payments").status_code == 404
    overview = http.get("/_sandbox").json()
    assert overview["xero"]["client_id"] == state.xero.client_id
    assert overview["xero"]["tenants"][0]["refresh_token"] == state.xero.refresh_token_for(
        xero.tenant_id
    )
    assert len(parse(http.get(f"/_sandbox/xero/{xero.tenant_id}/invoices"))) == 15
    assert len(parse(http.get(f"/_sandbox/xero/{xero.tenant_id}/contacts"))) == 5
    assert http.get("/_sandbox/xero/nope/contacts").status_code == 404
    assert overview["xero_webhooks"] == {"registered": False}
    assert http.post(f"/_sandbox/xero/{xero.tenant_id}/revoke").status_code == 200
    assert xero.get("/Invoices").status_code == 401


def test_accounts_and_contacts_endpoints(xero: XeroClient) -> None:
    banks = parse(xero.get("/Accounts", where='Type=="BANK"'))["Accounts"]
    assert [a["Code"] for a in banks] == ["090", "091"]
    everything = parse(xero.get("/Accounts"))["Accounts"]
    assert [a["Code"] for a in everything] == sorted(a["Code"] for a in everything)
    one = parse(xero.get(f"/Accounts/{banks[0]['AccountID']}"))["Accounts"]
    assert one[0]["Code"] == "090"
    contacts = parse(xero.get("/Contacts", page=1, pageSize=2))
    assert contacts["pagination"] == {"page": 1, "pageSize": 2, "pageCount": 3, "itemCount": 5}
    suppliers = parse(xero.get("/Contacts", where="IsSupplier==true"))["Contacts"]
    assert len(suppliers) == 2 and all(c["IsSupplier"] for c in suppliers)
    assert (
        parse(xero.get("/Contacts", where='Name.StartsWith("acme")'))["Contacts"][0]["Name"]
        == "Acme Hardware"
    )
    assert xero.get("/Contacts/00000000-0000-0000-0000-000000000000").status_code == 404
    assert xero.send("DELETE", "/Invoices", {}).status_code == 405
    assert xero.get("/Widgets").status_code == 404


def test_wire_helpers() -> None:
    assert (
        dumps({"a": Decimal("229.00"), "b": [Decimal("1E+2"), None, True]})
        == '{"a":229.00,"b":[100,null,true]}'
    )
    assert loads('{"x": 1.10}') == {"x": Decimal("1.10")}
    with pytest.raises(ValueError):
        loads('{"x": NaN}')
    assert parse_date_value("/Date(1714521600000)/").isoformat() == "2024-05-01"
    assert parse_date_value("2024-05-01T01:00:00+02:00").isoformat() == "2024-04-30"


def test_clock_only_moves_forward() -> None:
    clock = Clock()
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert (clock.advance(3600) - clock.now()).total_seconds() < 1


def test_server_binds_a_free_port_and_stops() -> None:
    with SandboxServer(SandboxState(seed=1, invoices=0)) as srv:
        assert srv.port > 0 and srv.url == f"http://127.0.0.1:{srv.port}"
        assert httpx.get(srv.url + "/_sandbox/clock").status_code == 200
        url = srv.url
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/_sandbox/clock", timeout=2)


def test_serve_writes_config_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "connector.toml"
    code = (
        "from connector.sandbox import serve; "
        f"serve(port=0, seed=3, invoices=2, write_config_path={str(config)!r}, "
        "faults='latency_ms=1', bills=4, time_scale=60, rate_limits=False, access_log=False)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl+C"):
                break
        output = "".join(lines)
        assert "Sandbox listening on http://127.0.0.1:" in output
        assert f"Config written to {config}" in output
        assert "Time scale: 60" in output
        connection = tomllib.loads(config.read_text())["connections"][0]
        root = connection["base_url"].removesuffix("/xero")
        assert httpx.get(root + "/_sandbox/clock").json()["time_scale"] == 60
        assert httpx.get(root + "/_sandbox").json()["rate_limits"]["enabled"] is False
        invoices = httpx.get(f"{root}/_sandbox/xero/{connection['tenant_id']}/invoices").json()
        assert Counter(i["Type"] for i in invoices) == {"ACCREC": 2, "ACCPAY": 4}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Sandbox stopped." in out
    assert "Traceback" not in err


def test_write_config_covers_every_ledger_and_the_config_loads(tmp_path: Path) -> None:
    from connector.config import load_settings

    state = SandboxState(seed=1, tenants=2)
    path = write_config(state, tmp_path / "all.toml", base_url="http://127.0.0.1:9999")
    settings = load_settings(path)
    providers = [c.provider for c in settings.connections]
    assert providers == ["xero"] * 2 + ["quickbooks"] * 2 + ["netsuite"] * 2
    realms = [c.realm_id for c in settings.connections if c.provider == "quickbooks"]
    assert state.quickbooks is not None
    assert realms == state.quickbooks.realm_ids
    for conn in settings.connections:
        if conn.provider == "netsuite":
            assert conn.private_key_path and Path(conn.private_key_path).is_file()
            assert conn.account_id is not None
            assert "/netsuite/" in conn.base_url and conn.account_id in conn.base_url
    state.close()
