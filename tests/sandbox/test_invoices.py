"""GET /Invoices: paging, filters, If-Modified-Since, ordering, 404, money rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime

import pytest

from connector.sandbox import Clock, SandboxState
from connector.sandbox.wire import parse_http_datetime

from .conftest import XeroClient, parse


def _ms(ms_date: str) -> int:
    return int(ms_date[len("/Date(") :].split("+")[0].rstrip(")/"))


def test_list_without_page_returns_everything_without_lines(
    xero: XeroClient, state: SandboxState
) -> None:
    response = xero.get("/Invoices")
    assert response.status_code == 200
    body = parse(response)
    assert body["Status"] == "OK" and body["DateTimeUTC"].startswith("/Date(")
    assert "pagination" not in body
    assert len(body["Invoices"]) == len(state.xero.invoices(xero.tenant_id)) == 15  # 12 + 3 bills
    assert all(inv["LineItems"] == [] for inv in body["Invoices"])


def test_paging_covers_all_items_in_order(xero: XeroClient) -> None:
    everything = [inv["InvoiceID"] for inv in parse(xero.get("/Invoices"))["Invoices"]]
    seen = []
    for page in range(1, 5):
        body = parse(xero.get("/Invoices", page=page, pageSize=4))
        assert body["pagination"] == {"page": page, "pageSize": 4, "pageCount": 4, "itemCount": 15}
        assert all(inv["LineItems"] for inv in body["Invoices"])
        seen += [inv["InvoiceID"] for inv in body["Invoices"]]
    assert seen == everything
    assert parse(xero.get("/Invoices", page=5, pageSize=4))["Invoices"] == []


@pytest.mark.parametrize(("asked", "used"), [("5000", 1000), ("0", 1), ("abc", 100)])
def test_page_size_is_clamped(xero: XeroClient, asked: str, used: int) -> None:
    assert parse(xero.get("/Invoices", page=1, pageSize=asked))["pagination"]["pageSize"] == used


def test_default_order_is_updated_then_id(xero: XeroClient) -> None:
    invoices = parse(xero.get("/Invoices"))["Invoices"]
    keys = [(_ms(inv["UpdatedDateUTC"]), inv["InvoiceID"]) for inv in invoices]
    assert keys == sorted(keys)
    numbers = [inv["InvoiceNumber"] for inv in invoices if inv["Type"] == "ACCREC"]
    assert numbers != sorted(numbers)  # the seed does not update invoices in number order


def test_where_filters(xero: XeroClient, state: SandboxState) -> None:
    all_invoices = state.xero.invoices(xero.tenant_id)
    authorised = {
        i["InvoiceID"]
        for i in all_invoices
        if i["Status"] == "AUTHORISED" and i["Type"] == "ACCREC"
    }
    for where in (
        'Status=="AUTHORISED" AND Type=="ACCREC"',
        'Status="AUTHORISED" && Type="ACCREC"',
    ):
        got = {i["InvoiceID"] for i in parse(xero.get("/Invoices", where=where))["Invoices"]}
        assert got == authorised
    one = parse(xero.get("/Invoices", where='InvoiceNumber=="INV-0003"'))["Invoices"]
    assert [i["InvoiceNumber"] for i in one] == ["INV-0003"]
    contact_id = all_invoices[0]["Contact"]["ContactID"]
    by_contact = parse(xero.get("/Invoices", where=f'Contact.ContactID==guid("{contact_id}")'))[
        "Invoices"
    ]
    assert by_contact and all(i["Contact"]["ContactID"] == contact_id for i in by_contact)
    assert len(by_contact) == sum(
        1 for i in all_invoices if i["Contact"]["ContactID"] == contact_id
    )


def test_explicit_list_filters(xero: XeroClient, state: SandboxState) -> None:
    all_invoices = state.xero.invoices(xero.tenant_id)
    statuses = parse(xero.get("/Invoices", Statuses="DRAFT,VOIDED"))["Invoices"]
    assert {i["Status"] for i in statuses} == {"DRAFT", "VOIDED"}
    assert len(statuses) == sum(1 for i in all_invoices if i["Status"] in {"DRAFT", "VOIDED"})
    ids = [all_invoices[0]["InvoiceID"], all_invoices[5]["InvoiceID"]]
    got = parse(xero.get("/Invoices", IDs=",".join(ids)))["Invoices"]
    assert {i["InvoiceID"] for i in got} == set(ids)
    numbered = parse(xero.get("/Invoices", InvoiceNumbers="INV-0001,INV-0002"))["Invoices"]
    assert sorted(i["InvoiceNumber"] for i in numbered) == ["INV-0001", "INV-0002"]


def test_unknown_where_field_is_400(xero: XeroClient) -> None:
    response = xero.get("/Invoices", where='Colour=="red"')
    assert response.status_code == 400
    body = response.json()
    assert body["Type"] == "QueryParseException"
    assert "Colour" in body["Message"]
    assert xero.get("/Invoices", where='Status=="AUTHORISED" AND').status_code == 400


def test_if_modified_since_formats_and_second_granularity(
    xero: XeroClient, state: SandboxState
) -> None:
    edited = state.xero.edit_invoice(xero.tenant_id, "INV-0002", Reference="changed")
    moment = datetime.fromtimestamp(_ms(edited["UpdatedDateUTC"]) / 1000, UTC)
    # Later within the same second still matches: comparison is at second granularity.
    same_second = moment.replace(microsecond=999_000)
    forms = [
        same_second.strftime("%Y-%m-%dT%H:%M:%S"),  # naive = UTC
        same_second.isoformat(timespec="milliseconds"),
        same_second.astimezone(timezone(timedelta(hours=-8))).isoformat(timespec="milliseconds"),
        format_datetime(same_second, usegmt=True),  # RFC 1123
    ]
    for value in forms:
        invoices = parse(xero.get("/Invoices", headers={"If-Modified-Since": value}))["Invoices"]
        assert [i["InvoiceNumber"] for i in invoices] == ["INV-0002"], value
    after = (moment + timedelta(seconds=1)).isoformat()
    assert parse(xero.get("/Invoices", headers={"If-Modified-Since": after}))["Invoices"] == []


def test_http_datetime_parser() -> None:
    assert parse_http_datetime("2009-11-12T00:00:00") == datetime(2009, 11, 12, tzinfo=UTC)
    assert parse_http_datetime("2020-02-06T12:17:43.202-08:00") == datetime(
        2020, 2, 6, 20, 17, 43, 202000, tzinfo=UTC
    )
    assert parse_http_datetime("2024-05-01T12:00:00+00:00") == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_http_datetime("Thu, 12 Nov 2009 00:00:00 GMT") == datetime(
        2009, 11, 12, tzinfo=UTC
    )
    assert parse_http_datetime("yesterday") is None


def test_get_by_id_or_number_and_404(xero: XeroClient, state: SandboxState) -> None:
    invoice = state.xero.invoice(xero.tenant_id, "INV-0004")
    by_id = parse(xero.get(f"/Invoices/{invoice['InvoiceID']}"))["Invoices"]
    by_number = parse(xero.get("/Invoices/INV-0004"))["Invoices"]
    assert by_id[0]["InvoiceID"] == by_number[0]["InvoiceID"] == invoice["InvoiceID"]
    assert by_id[0]["LineItems"]
    missing = xero.get("/Invoices/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert missing.text == "The resource you're looking for cannot be found"
    assert missing.headers["content-type"].startswith("text/plain")


def test_money_is_rendered_with_currency_decimals(xero: XeroClient, state: SandboxState) -> None:
    invoice = state.xero.add_invoice(xero.tenant_id, total=Decimal("230"), amount_paid=Decimal("1"))
    text = xero.get(f"/Invoices/{invoice['InvoiceID']}").text
    assert '"AmountDue":229.00' in text
    assert '"AmountPaid":1.00' in text
    assert '"Total":230.00' in text
    assert '"CurrencyRate":1.000000' in text
    assert parse(xero.get(f"/Invoices/{invoice['InvoiceID']}"))["Invoices"][0][
        "AmountDue"
    ] == Decimal("229.00")


def test_line_items_add_up_exactly(state: SandboxState) -> None:
    for invoice in state.xero.invoices(state.xero.tenant_ids[0]):
        lines = invoice["LineItems"]
        assert invoice["SubTotal"] == sum(li["LineAmount"] for li in lines)
        assert invoice["TotalTax"] == sum(li["TaxAmount"] for li in lines)
        assert invoice["Total"] == invoice["SubTotal"] + invoice["TotalTax"]
        assert invoice["AmountDue"] == invoice["Total"] - invoice["AmountPaid"]
        assert all(isinstance(li["LineAmount"], Decimal) for li in lines)


def test_updated_date_strictly_increases_when_the_clock_stands_still() -> None:
    state = SandboxState(seed=1, clock=Clock(frozen_at=datetime(2024, 5, 1, 12, tzinfo=UTC)))
    tenant = state.xero.tenant_ids[0]
    stamps = [
        _ms(state.xero.edit_invoice(tenant, "INV-0001", Reference=str(i))["UpdatedDateUTC"])
        for i in range(3)
    ]
    assert stamps[1] == stamps[0] + 1 and stamps[2] == stamps[1] + 1
