"""SuiteQL: the endpoint contract, paging, the value rendering and the SQL subset."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connector.sandbox.netsuite.suiteql import format_value

from .conftest import Client, NetSuite, error_code


def test_prefer_transient_is_required(client: Client) -> None:
    response = client.suiteql("SELECT id FROM transaction", prefer=None)
    assert response.status_code == 400
    detail = response.json()["o:errorDetails"][0]
    assert detail["o:errorHeader"] == "Prefer" and detail["o:errorCode"] == "INVALID_HEADER"
    assert client.suiteql("SELECT id FROM transaction", prefer="respond-async").status_code == 400


def test_envelope_headers_and_value_rendering(client: Client) -> None:
    response = client.suiteql(
        "SELECT ID, TranId, Memo, ExternalId, ForeignTotal, TranDate, ExchangeRate "
        "FROM Transaction WHERE Type = 'CustInvc' ORDER BY id"
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        "application/vnd.oracle.resource+json; type=collection"
    )
    assert response.headers["preference-applied"] == "transient"
    body = response.json()
    assert list(body) == ["links", "count", "hasMore", "items", "offset", "totalResults"]
    assert body["links"] == [
        {"rel": "self", "href": f"{client.env.base()}/services/rest/query/v1/suiteql"}
    ]
    assert (body["count"], body["hasMore"], body["offset"], body["totalResults"]) == (
        12,
        False,
        0,
        12,
    )
    for item in body["items"]:
        assert item["links"] == []
        values = {k: v for k, v in item.items() if k != "links"}
        assert all(isinstance(v, str) for v in values.values())
        # Lower-cased names; memo and externalid are NULL on the seed, so they are left out.
        assert set(values) == {"id", "tranid", "foreigntotal", "trandate", "exchangerate"}
        month, day, year = (int(p) for p in item["trandate"].split("/"))
        assert 1 <= month <= 12 and 1 <= day <= 31 and year >= 2025
    euro = [i for i in body["items"] if i["exchangerate"] != "1"]
    assert euro and {i["exchangerate"] for i in euro} == {"1.085"}


def test_number_and_date_rendering() -> None:
    from datetime import UTC, date, datetime

    assert format_value(Decimal("5.00")) == "5"
    assert format_value(Decimal("0.50")) == ".5"
    assert format_value(Decimal("-0.25")) == "-.25"
    assert format_value(Decimal("-60")) == "-60"
    assert format_value(True) == "T"
    assert format_value(date(2025, 5, 7)) == "5/7/2025"
    assert format_value(datetime(2025, 5, 27, 23, 5, tzinfo=UTC)) == "5/27/2025"
    assert format_value(None) is None


def test_paging(client: Client) -> None:
    q = "SELECT id FROM transaction ORDER BY id"
    first = client.suiteql(q, params={"limit": 5, "offset": 0}).json()
    total = first["totalResults"]
    assert first["count"] == 5 and first["hasMore"] is True
    rels = {link["rel"]: link["href"] for link in first["links"]}
    base = f"{client.env.base()}/services/rest/query/v1/suiteql"
    assert rels["self"] == f"{base}?limit=5&offset=0"
    assert rels["next"] == f"{base}?limit=5&offset=5"
    second = client.suiteql(q, params={"limit": 5, "offset": 5}).json()
    assert second["offset"] == 5
    assert {i["id"] for i in first["items"]}.isdisjoint({i["id"] for i in second["items"]})
    last_offset = (total - 1) // 5 * 5
    last = client.suiteql(q, params={"limit": 5, "offset": last_offset}).json()
    assert last["hasMore"] is False and last["count"] == total - last_offset
    bad = client.suiteql(q, params={"limit": 5, "offset": 3})
    assert (
        bad.status_code == 400 and bad.json()["o:errorDetails"][0]["o:errorQueryParam"] == "offset"
    )
    assert client.suiteql(q, params={"limit": 1001}).status_code == 400


def test_incremental_sync_query(client: Client, ns: NetSuite) -> None:
    invoice = client.open_invoice()
    ns.clock.advance(120)
    response = client.send("POST", "/customerPayment", client.payment_body(invoice, "1.00"))
    assert response.status_code == 204
    rows = client.rows(
        "SELECT t.id, t.type, BUILTIN.DF(t.status) status, t.foreignamountremaining, "
        "TO_CHAR(t.lastmodifieddate, 'YYYY-MM-DD\"T\"HH24:MI:SS') modified "
        "FROM transaction t WHERE t.type IN ('CustInvc', 'CustPymt') "
        "AND t.lastmodifieddate > TO_TIMESTAMP('2025-05-27T12:01:00Z', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
        "ORDER BY t.lastmodifieddate, t.id"
    )
    assert [r["type"] for r in rows] == ["CustInvc", "CustPymt"]
    assert rows[0]["id"] == invoice["id"] and rows[0]["status"] == "Invoice : Open"
    assert Decimal(rows[0]["foreignamountremaining"]) == invoice["amountRemaining"] - 1
    assert rows[0]["modified"] == "2025-05-27T12:02:00"
    assert "foreignamountremaining" not in rows[1]  # NULL for payments


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("type = 'CustInvc' AND status = 'B'", lambda t: t["type"] == "CustInvc" and t["status"] == "B"),
        ("type <> 'CustInvc'", lambda t: t["type"] != "CustInvc"),
        ("type = 'VendBill' OR type = 'VendPymt'", lambda t: t["type"] in {"VendBill", "VendPymt"}),
        ("type NOT IN ('CustInvc', 'CustPymt')", lambda t: t["type"] not in {"CustInvc", "CustPymt"}),
        ("memo IS NULL", lambda t: "memo" not in t),
        ("memo IS NOT NULL", lambda t: "memo" in t),
        ("foreigntotal >= 1000", lambda t: Decimal(t["foreigntotal"]) >= 1000),
        ("foreigntotal < 0", lambda t: Decimal(t["foreigntotal"]) < 0),
        ("foreigntotal <= 500 AND foreigntotal > 100", lambda t: 100 < Decimal(t["foreigntotal"]) <= 500),
        ("foreigntotal BETWEEN 100 AND 500", lambda t: 100 <= Decimal(t["foreigntotal"]) <= 500),
        ("BUILTIN.DF(status) = 'Invoice : Paid In Full'", lambda t: t["type"] == "CustInvc" and t["status"] == "B"),
        ("transactionnumber LIKE 'CUSTPYMT%'", lambda t: t["type"] == "CustPymt"),
        ("trandate >= TO_DATE('2025-05-20', 'YYYY-MM-DD')", lambda t: _ymd(t["trandate"]) >= (2025, 5, 20)),
        ("NOT (type = 'CustInvc')", lambda t: t["type"] != "CustInvc"),
    ],
)  # fmt: skip
def test_where_operators(client: Client, where: str, expected: object) -> None:
    assert callable(expected)
    columns = "id, type, status, memo, foreigntotal, transactionnumber, trandate"
    everything = client.rows(f"SELECT {columns} FROM transaction ORDER BY id")
    filtered = client.rows(f"SELECT {columns} FROM transaction WHERE {where} ORDER BY id")
    assert filtered == [t for t in everything if expected(t)]
    assert filtered  # every case selects something on the seed


def _ymd(text: str) -> tuple[int, int, int]:
    month, day, year = (int(p) for p in text.split("/"))
    return year, month, day


def test_order_by_direction_and_aliases(client: Client) -> None:
    rows = client.rows(
        "SELECT id AS internalid, foreigntotal amount FROM transaction "
        "WHERE type = 'CustInvc' ORDER BY amount DESC, internalid"
    )
    amounts = [Decimal(r["amount"]) for r in rows]
    assert amounts == sorted(amounts, reverse=True)
    assert set(rows[0]) == {"links", "internalid", "amount"}
    by_position = client.rows("SELECT tranid, id FROM transaction ORDER BY 2 DESC")
    assert [int(r["id"]) for r in by_position] == sorted(
        (int(r["id"]) for r in by_position), reverse=True
    )


def test_select_star_and_other_tables(client: Client, ns: NetSuite) -> None:
    (customer,) = client.rows("SELECT * FROM customer WHERE currency = 4")
    assert customer["companyname"] == "Europa Handels GmbH" and "externalid" not in customer
    assert customer["isinactive"] == "F"
    vendors = client.rows("SELECT v.id, v.companyname FROM vendor v ORDER BY v.companyname")
    assert len(vendors) == 4
    (bank,) = client.rows(
        "SELECT id, BUILTIN.DF(accttype) kind FROM account WHERE accttype = 'Bank' AND id = 1"
    )
    assert bank == {"links": [], "id": "1", "kind": "Bank"}
    currencies = client.rows("SELECT symbol FROM currency WHERE isbasecurrency = 'T'")
    assert currencies == [{"links": [], "symbol": "USD"}]
    invoice = ns.ledger.invoices(ns.account)[0]
    lines = client.rows(
        f"SELECT tl.* FROM transactionline tl WHERE tl.transaction = {invoice['id']} "
        "ORDER BY tl.linesequencenumber"
    )
    assert [line["mainline"] for line in lines] == ["T", "F"]
    counts = client.rows("SELECT type, COUNT(*) AS n FROM transaction GROUP BY type ORDER BY type")
    assert {r["type"]: r["n"] for r in counts}["CustInvc"] == "12"


def test_payment_links_join(client: Client) -> None:
    rows = client.rows(
        "SELECT NTLL.PreviousDoc invoice, NT.id payment, BUILTIN.DF(NT.entity) customer "
        "FROM NextTransactionLineLink NTLL INNER JOIN transaction NT ON NT.id = NTLL.NextDoc "
        "WHERE NT.type = 'CustPymt' ORDER BY NT.id"
    )
    payments = client.ledger.customer_payments(client.account)
    assert [r["payment"] for r in rows] == [p["id"] for p in payments]
    assert [r["invoice"] for r in rows] == [p["apply"]["items"][0]["doc"]["id"] for p in payments]
    left = client.rows(
        "SELECT t.id, l.nextdoc FROM transaction t LEFT JOIN NextTransactionLineLink l "
        "ON l.previousdoc = t.id WHERE t.type = 'CustInvc' AND l.nextdoc IS NULL"
    )
    assert left and all("nextdoc" not in r for r in left)


@pytest.mark.parametrize(
    ("q", "fragment"),
    [
        ("SELECT id FROM nosuchtable", "Invalid search type: nosuchtable."),
        ("SELECT nosuchcolumn FROM transaction", "Unknown identifier 'nosuchcolumn'"),
        ("SELECT t.id FROM transaction x", "Unknown identifier 't.id'"),
        (
            "SELECT id FROM transaction UNION SELECT id FROM customer",
            "Invalid or unsupported search",
        ),
        ("SELECT id FROM transaction WHERE", "Invalid or unsupported search"),
        ("DELETE FROM transaction", "Invalid or unsupported search"),
        ("SELECT MEDIAN(id) FROM transaction", "Unknown function MEDIAN"),
        ("SELECT id FROM transaction WHERE trandate > TO_DATE('x', 'YYYY')", "Unparseable date"),
    ],
)
def test_unsupported_or_invalid_queries(client: Client, q: str, fragment: str) -> None:
    response = client.suiteql(q)
    assert response.status_code == 400
    assert error_code(response) == "INVALID_PARAMETER"
    detail = response.json()["o:errorDetails"][0]
    assert detail["o:errorQueryParam"] == "q"
    assert detail["detail"].startswith(
        "Invalid search query. Detailed unprocessed description follows."
    )
    assert fragment in detail["detail"]
