"""Reads by id (610 for missing ones) and the query language with its documented limits."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from connector.sandbox.quickbooks.fmt import meta_time, parse_moment
from connector.sandbox.quickbooks.query import parse_query

from .conftest import QboClient, fault_of, parse


def test_read_by_id_wraps_the_entity(qbo: QboClient) -> None:
    invoice = qbo.open_invoice()
    response = qbo.get(f"invoice/{invoice['Id']}", minorversion="75")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = parse(response)
    assert set(body) == {"Invoice", "time"}
    assert body["Invoice"] == invoice
    assert isinstance(body["Invoice"]["SyncToken"], str)
    assert body["Invoice"]["MetaData"]["CreateTime"].endswith(("-08:00", "-07:00"))
    for kind, rows in (
        ("customer", qbo.ledger.customers(qbo.realm)),
        ("vendor", qbo.ledger.vendors(qbo.realm)),
        ("account", qbo.ledger.accounts(qbo.realm)),
        ("bill", qbo.ledger.bills(qbo.realm)),
        ("payment", qbo.ledger.payments(qbo.realm)),
        ("billpayment", qbo.ledger.bill_payments(qbo.realm)),
    ):
        got = parse(qbo.get(f"{kind}/{rows[0]['Id']}"))
        assert next(iter(got.values())) == rows[0], kind
    info = parse(qbo.get(f"companyinfo/{qbo.realm}"))["CompanyInfo"]
    assert info["Country"] == "US"
    prefs = parse(qbo.get("preferences"))["Preferences"]
    assert prefs["CurrencyPrefs"]["HomeCurrency"]["value"] == "USD"


def test_missing_entity_is_fault_610(qbo: QboClient) -> None:
    response = qbo.get("invoice/999999")
    assert response.status_code == 400
    error = fault_of(response)
    assert error["code"] == "610"
    assert error["Message"] == "Object Not Found"
    assert parse(response)["Fault"]["type"] == "ValidationFault"
    # Another kind's id is not found either.
    bill_id = qbo.ledger.bills(qbo.realm)[0]["Id"]
    assert qbo.get(f"invoice/{bill_id}").status_code == 400


def test_unsupported_entity_and_method(qbo: QboClient) -> None:
    assert fault_of(qbo.get("purchase/1"))["code"] == "5030"
    assert qbo.get("invoice").status_code == 405


def test_the_briefs_incremental_query(qbo: QboClient) -> None:
    ledger, realm = qbo.ledger, qbo.realm
    customer = qbo.open_invoice()["CustomerRef"]["value"]
    mine = [i for i in ledger.invoices(realm) if i["CustomerRef"]["value"] == customer]
    since = min(parse_moment(i["MetaData"]["LastUpdatedTime"]) for i in mine)
    statement = (
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > "
        f"'{meta_time(since - timedelta(seconds=1))}' AND CustomerRef = '{customer}' "
        "ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 1000"
    )
    for post in (False, True):
        response = qbo.query(statement, post=post)
        assert response.status_code == 200, response.text
        result = parse(response)["QueryResponse"]
        assert result["startPosition"] == 1
        assert result["maxResults"] == len(mine)
        got = result["Invoice"]
        assert {i["Id"] for i in got} == {i["Id"] for i in mine}
        stamps = [parse_moment(i["MetaData"]["LastUpdatedTime"]) for i in got]
        assert stamps == sorted(stamps)


def test_comparisons_in_like_and_count(qbo: QboClient) -> None:
    invoices = qbo.ledger.invoices(qbo.realm)
    ids = [i["Id"] for i in invoices[:3]]
    items = qbo.query_items(
        f"select * from invoice where Id IN ('{ids[0]}', '{ids[2]}')", "Invoice"
    )
    assert [i["Id"] for i in items] == [ids[0], ids[2]]
    for op, check in (
        ("<", lambda b: b < 200),
        (">", lambda b: b > 200),
        ("<=", lambda b: b <= 200),
        (">=", lambda b: b >= 200),
        ("=", lambda b: b == 0),
    ):
        value = "0" if op == "=" else "200"
        got = qbo.query_items(f"SELECT * FROM Invoice WHERE Balance {op} '{value}'", "Invoice")
        expected = [i["Id"] for i in invoices if check(i["Balance"])]
        assert [i["Id"] for i in got] == expected, op
    assert qbo.query_items("SELECT * FROM Invoice WHERE TotalAmt > 300", "Invoice") == [
        i for i in invoices if i["TotalAmt"] > 300
    ]
    names = qbo.query_items(
        "SELECT * FROM Customer WHERE DisplayName LIKE '%windsurf%'", "Customer"
    )
    assert [c["DisplayName"] for c in names] == ["Bill's Windsurf Shop"]
    escaped = qbo.query_items(
        "SELECT * FROM Customer WHERE DisplayName = 'Bill\\'s Windsurf Shop'", "Customer"
    )
    assert len(escaped) == 1
    count = parse(qbo.query("SELECT COUNT(*) FROM Invoice WHERE Balance > '0'"))
    assert count["QueryResponse"] == {"totalCount": sum(1 for i in invoices if i["Balance"] > 0)}
    dates = qbo.query_items(
        f"select * from Bill where TxnDate <= '{invoices[0]['TxnDate']}'", "Bill"
    )
    assert all(b["TxnDate"] <= invoices[0]["TxnDate"] for b in dates)


def test_paging_and_ordering(qbo: QboClient) -> None:
    all_ids = [i["Id"] for i in qbo.ledger.invoices(qbo.realm)]
    page1 = parse(qbo.query("select * from Invoice STARTPOSITION 1 MAXRESULTS 5"))
    page3 = parse(qbo.query("select * from Invoice STARTPOSITION 11 MAXRESULTS 5"))
    assert [i["Id"] for i in page1["QueryResponse"]["Invoice"]] == all_ids[:5]
    assert page1["QueryResponse"]["maxResults"] == 5
    assert [i["Id"] for i in page3["QueryResponse"]["Invoice"]] == all_ids[10:15]
    assert page3["QueryResponse"]["startPosition"] == 11
    beyond = parse(qbo.query("select * from Invoice STARTPOSITION 100"))
    assert beyond["QueryResponse"] == {}
    desc = qbo.query_items("SELECT * FROM Invoice ORDER BY TotalAmt DESC", "Invoice")
    totals = [i["TotalAmt"] for i in desc]
    assert totals == sorted(totals, reverse=True)
    default = qbo.query_items("SELECT * FROM Invoice", "Invoice")
    assert len(default) == len(all_ids)  # default page is 100


def test_default_page_is_100_and_max_is_1000(make_harness: object, qbo: QboClient) -> None:
    for _ in range(105):
        qbo.ledger.add_invoice(qbo.realm, total=Decimal("5.00"))
    assert len(qbo.query_items("SELECT * FROM Invoice", "Invoice")) == 100
    assert len(qbo.query_items("SELECT * FROM Invoice MAXRESULTS 1000", "Invoice")) == 117
    too_many = qbo.query("SELECT * FROM Invoice MAXRESULTS 1001")
    assert too_many.status_code == 400
    error = fault_of(too_many)
    assert error["code"] == "4001"
    assert "Max allowed value is 1000" in error["Detail"]


@pytest.mark.parametrize(
    ("statement", "code", "detail"),
    [
        ("SELECT * FROM Invoice WHERE Balance > '0' OR DocNumber = '1001'", "4001", "OR"),
        (
            "SELECT * FROM Invoice JOIN Customer",
            "4000",
            'Encountered " <IDENTIFIER> "JOIN "" at line 1, column 23',
        ),
        ("SELECT * FROM Invoice GROUP BY CustomerRef", "4000", "QueryParserError: Encountered"),
        ("SELECT * FROM Invoice WHERE NOT Balance = '0'", "4000", "QueryParserError"),
        ("SELECT * FROM Invoice WHERE (Balance = '0')", "4000", "QueryParserError"),
        ("SELECT * FROM Invoice WHERE Balance != '0'", "4000", "QueryParserError"),
        ("SELECT * FORM Invoice", "4000", "QueryParserError"),
        ("", "4000", '"<EOF>"'),
        (
            "SELECT * FROM Invoice WHERE Foo = '1'",
            "4001",
            "Property Foo not found for Entity Invoice",
        ),
        ("SELECT * FROM Invoice ORDERBY Nope", "4001", "Property Nope not found"),
        ("SELECT * FROM Invoice WHERE DocNumber = '1", "4000", "Lexical error"),
        ("SELECT * FROM Invoice WHERE Balance > 'abc'", "4001", "Invalid value"),
        ("SELECT * FROM Widget", "4001", "Widget"),
    ],
)
def test_refused_queries(qbo: QboClient, statement: str, code: str, detail: str) -> None:
    response = qbo.query(statement, post=True)
    assert response.status_code == 400
    error = fault_of(response)
    assert error["code"] == code
    assert detail in error["Detail"]
    if code == "4000":
        assert error["Message"] == "Error parsing query"
        assert error["Detail"].startswith("QueryParserError: ")
    else:
        assert error["Message"] == "Invalid query"
        assert error["Detail"].startswith("QueryValidationError: ")


def test_projection_parses_but_returns_everything(qbo: QboClient) -> None:
    items = qbo.query_items("SELECT Id, TotalAmt FROM Invoice MAXRESULTS 1", "Invoice")
    assert "CustomerRef" in items[0]


def test_parser_directly() -> None:
    query = parse_query(
        "select count(*) from billpayment Where Metadata.LastUpdatedTime>'2014-12-12T14:50:22-08:00'"
    )
    assert query.count and query.entity == "billpayment"
    assert query.where[0].op == ">"
    ordered = parse_query(
        "SELECT * FROM Invoice ORDER BY TxnDate DESC, Id MAXRESULTS 3 STARTPOSITION 2"
    )
    assert ordered.order == (("TxnDate", True), ("Id", False))
    assert (ordered.start, ordered.max_results) == (2, 3)


def test_deleted_and_voided_in_queries(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    qbo.ledger.delete_invoice(qbo.realm, inv["Id"])
    assert qbo.get(f"invoice/{inv['Id']}").status_code == 400
    ids = [i["Id"] for i in qbo.query_items("SELECT * FROM Invoice MAXRESULTS 1000", "Invoice")]
    assert inv["Id"] not in ids
    voided = next(i for i in qbo.ledger.invoices(qbo.realm) if i.get("PrivateNote") == "Voided")
    assert voided["Id"] in ids and voided["TotalAmt"] == 0 and voided["Balance"] == 0
