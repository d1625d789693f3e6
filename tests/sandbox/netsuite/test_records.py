"""record/v1 reads: records by id, collections, ``q`` filters, the seed."""

from __future__ import annotations

import re
from decimal import Decimal

from .conftest import Client, Factory, NetSuite, error_code, parse

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def test_invoice_by_id_has_the_documented_fields(client: Client) -> None:
    partly_paid = next(
        inv
        for inv in client.ledger.invoices(client.account)
        if inv["status"]["id"] == "A" and inv["amountPaid"] > 0
    )
    response = client.get(f"/invoice/{partly_paid['id']}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.oracle.resource+json")
    body = parse(response)
    for key in ("id", "tranId", "entity", "currency", "exchangeRate", "total", "amountRemaining",
                "amountPaid", "status", "lastModifiedDate", "tranDate", "links", "subsidiary"):  # fmt: skip
        assert key in body, key
    assert (
        body["links"][0]["href"]
        == f"{client.env.base()}/services/rest/record/v1/invoice/{body['id']}"
    )
    assert set(body["entity"]) == {"links", "id", "refName"}
    assert body["status"] == {"id": "A", "refName": "Open"}
    assert body["amountRemaining"] == body["total"] - body["amountPaid"]
    assert ISO_Z.match(body["lastModifiedDate"]) and DATE.match(body["tranDate"])
    assert "externalId" not in body and "memo" not in body  # no value, no key
    assert body["item"] == {"links": [{"rel": "self", "href": body["links"][0]["href"] + "/item"}]}


def test_seed_has_open_partial_paid_and_foreign_documents(ns: NetSuite) -> None:
    invoices = ns.ledger.invoices(ns.account)
    assert len(invoices) == 12
    statuses = {inv["status"]["refName"] for inv in invoices}
    assert {"Open", "Paid In Full", "Pending Approval"} <= statuses
    assert any(inv["status"]["id"] == "A" and inv["amountPaid"] > 0 for inv in invoices)
    euro = [inv for inv in invoices if inv["currency"]["refName"] == "Euro"]
    assert len(euro) >= 2 and all(inv["exchangeRate"] == Decimal("1.0850") for inv in euro)
    assert all(inv["status"]["id"] == "B" for inv in invoices if inv["amountRemaining"] == 0)
    bills = ns.ledger.bills(ns.account)
    assert len(bills) == 4 and all("amountRemaining" not in b for b in bills)
    assert {ns.ledger.open_amount(ns.account, b["id"]) == 0 for b in bills} == {True, False}
    assert len(ns.ledger.customers(ns.account)) == 5 and len(ns.ledger.vendors(ns.account)) == 4
    types = {a["acctType"]["id"] for a in ns.ledger.gl_accounts(ns.account)}
    assert {"Bank", "AcctRec", "AcctPay", "Income", "Expense"} <= types
    assert len(ns.ledger.customer_payments(ns.account)) == 4
    assert len(ns.ledger.vendor_payments(ns.account)) == 2


def test_missing_records_are_404(client: Client) -> None:
    missing = client.get("/invoice/1")
    assert missing.status_code == 404
    assert error_code(missing) == "NONEXISTENT_ID"
    bill_id = client.ledger.bills(client.account)[0]["id"]
    assert client.get(f"/invoice/{bill_id}").status_code == 404  # a bill is not an invoice
    assert client.get("/invoice/eid:nope").status_code == 404
    assert client.get("/employee/1").status_code == 404


def test_record_types_are_case_insensitive(client: Client) -> None:
    payment = client.ledger.customer_payments(client.account)[0]
    for spelling in ("customerPayment", "customerpayment", "CUSTOMERPAYMENT"):
        assert client.get(f"/{spelling}/{payment['id']}").status_code == 200


def test_payment_sublists_expand_on_request(client: Client) -> None:
    payment = client.ledger.customer_payments(client.account)[0]
    plain = parse(client.get(f"/customerPayment/{payment['id']}"))
    assert set(plain["apply"]) == {"links"}
    expanded = parse(client.get(f"/customerPayment/{payment['id']}", expandSubResources="true"))
    (line,) = expanded["apply"]["items"]
    assert line["doc"]["id"] == payment["apply"]["items"][0]["doc"]["id"]
    assert line["apply"] is True and line["type"] == "Invoice"
    sublist = parse(client.get(f"/customerPayment/{payment['id']}/apply"))
    assert sublist["items"] == expanded["apply"]["items"]


def test_fields_parameter_limits_the_body(client: Client) -> None:
    invoice = client.ledger.invoices(client.account)[0]
    body = client.get(f"/invoice/{invoice['id']}", fields="total,status").json()
    assert set(body) == {"links", "id", "total", "status"}


def test_collections_page_with_limit_and_offset(client: Client) -> None:
    first = client.get("/invoice", limit=5).json()
    assert first["count"] == 5 and first["hasMore"] is True and first["totalResults"] == 12
    assert [link["rel"] for link in first["links"]] == ["next", "last", "self"]
    assert set(first["items"][0]) == {"links", "id"}
    last = client.get("/invoice", limit=5, offset=10).json()
    assert last["count"] == 2 and last["hasMore"] is False
    ids = [i["id"] for i in first["items"]] + [i["id"] for i in last["items"]]
    assert len(set(ids)) == 7
    misaligned = client.get("/invoice", limit=5, offset=3)
    assert misaligned.status_code == 400 and error_code(misaligned) == "INVALID_PARAMETER"
    too_big = client.get("/invoice", limit=1001)
    assert too_big.status_code == 400


def test_collection_q_filters(client: Client, ns: NetSuite) -> None:
    invoices = ns.ledger.invoices(ns.account)
    target = invoices[3]
    ns.clock.advance(60)
    ns.ledger.edit_invoice(ns.account, target["id"], memo="touched")
    # 12:00 is FROZEN_AT; the edit happened at 12:01 and the seed is hours older.
    recent = client.get("/invoice", q='lastModifiedDate AFTER "5/27/2025 12:00 pm"').json()
    assert [i["id"] for i in recent["items"]] == [target["id"]]
    today = client.get("/invoice", q='lastModifiedDate ON "5/27/2025"').json()
    assert target["id"] in [i["id"] for i in today["items"]]
    opened = client.get("/invoice", q="status ANY_OF [A, D]").json()
    assert opened["totalResults"] == sum(i["status"]["id"] in "AD" for i in invoices)
    ns.ledger.edit_invoice(ns.account, target["id"], externalId="INV-EXT-9")
    by_eid = client.get("/invoice", q='externalId IS "INV-EXT-9"').json()
    assert [i["id"] for i in by_eid["items"]] == [target["id"]]
    unknown = client.get("/invoice", q='fooField IS "x"')
    assert unknown.status_code == 400 and error_code(unknown) == "NONEXISTENT_FIELD"
    assert unknown.json()["o:errorDetails"][0]["o:errorQueryParam"] == "q"
    iso = client.get("/invoice", q='lastModifiedDate AFTER "2025-05-01"')
    assert (
        iso.status_code == 400 and "Unparseable date" in iso.json()["o:errorDetails"][0]["detail"]
    )


def test_external_id_lookup_of_documents_and_entities(client: Client, ns: NetSuite) -> None:
    invoice = ns.ledger.add_invoice(ns.account, total=Decimal("42.00"), external_id="INV-42")
    got = client.get("/invoice/eid:INV-42")
    assert got.status_code == 200 and got.json()["id"] == invoice["id"]
    assert got.json()["externalId"] == "INV-42"
    customer = client.ledger.customers(client.account)[0]
    assert (
        client.get(f"/customer/{customer['id']}").json()["companyName"] == customer["companyName"]
    )


def test_entities_accounts_and_currencies(client: Client) -> None:
    customers = client.get("/customer").json()
    assert customers["totalResults"] == 5
    vendor = client.get("/vendor").json()["items"][0]
    body = client.get(f"/vendor/{vendor['id']}").json()
    assert body["currency"]["id"] in {"1", "4"} and body["isPerson"] is False
    bank = client.get("/account/1").json()
    assert bank["acctType"] == {"id": "Bank", "refName": "Bank"}
    euro = parse(client.get("/currency/4"))
    assert euro["symbol"] == "EUR" and euro["isBaseCurrency"] is False


def test_add_and_edit_documents_from_the_ledger(ns: NetSuite) -> None:
    invoice = ns.ledger.add_invoice(
        ns.account, total=Decimal("120.00"), amount_remaining=Decimal("20.00"), currency="EUR"
    )
    assert invoice["amountRemaining"] == Decimal("20.00") and invoice["amountPaid"] == Decimal(
        "100.00"
    )
    assert invoice["currency"]["refName"] == "Euro"
    before = invoice["lastModifiedDate"]
    ns.clock.advance(5)
    edited = ns.ledger.edit_invoice(ns.account, invoice["id"], memo="hello", total="150.00")
    assert edited["memo"] == "hello" and edited["amountRemaining"] == Decimal("50.00")
    assert edited["lastModifiedDate"] > before
    bill = ns.ledger.add_bill(ns.account, total=Decimal("80.00"), amount_remaining=Decimal("0"))
    assert bill["status"]["id"] == "B" and ns.ledger.open_amount(ns.account, bill["id"]) == 0


def test_server_time_and_unknown_paths(client: Client, ns: NetSuite) -> None:
    response = client.http.get("/services/rest/system/v1/serverTime", headers=client.headers())
    assert response.json()["serverTime"].startswith("2025-05-27T12:00:00")
    unknown = client.http.get("/services/rest/nothing", headers=client.headers())
    assert unknown.status_code == 404 and "o:errorDetails" in unknown.json()


def test_seeds_are_reproducible(make_netsuite: Factory) -> None:
    a = make_netsuite(seed=3).ledger
    b = make_netsuite(seed=3).ledger
    assert a.invoices(a.account_ids[0]) == b.invoices(b.account_ids[0])
    assert a.bills(a.account_ids[0]) == b.bills(b.account_ids[0])
    c = make_netsuite(seed=4, invoices=20, bills=6).ledger
    assert len(c.invoices(c.account_ids[0])) == 20 and len(c.bills(c.account_ids[0])) == 6
