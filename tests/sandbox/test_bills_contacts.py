"""Bills (ACCPAY), contacts and accounts: seed, reads, paging, If-Modified-Since, payments."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from connector.sandbox import SandboxState

from .conftest import ServerFactory, XeroClient, frozen_clock, parse


def _ms(value: str) -> int:
    return int(value[len("/Date(") :].split("+")[0].rstrip(")/"))


def test_default_bills_are_unpaid_partly_paid_eur_and_paid() -> None:
    state = SandboxState(seed=1)
    tenant = state.xero.tenant_ids[0]
    bills = state.xero.bills(tenant)
    assert [b["InvoiceNumber"] for b in bills] == ["SUP-1001", "SUP-1002", "SUP-1003"]
    unpaid, partly, paid = bills
    assert (unpaid["Status"], unpaid["AmountPaid"]) == ("AUTHORISED", Decimal("0.00"))
    assert partly["Status"] == "AUTHORISED" and 0 < partly["AmountPaid"] < partly["Total"]
    assert (partly["CurrencyCode"], partly["CurrencyRate"]) == ("EUR", Decimal("0.920000"))
    assert (paid["Status"], paid["AmountDue"]) == ("PAID", Decimal("0.00"))
    assert "FullyPaidOnDate" in paid
    suppliers = {c["ContactID"] for c in state.xero.contacts(tenant) if c["IsSupplier"]}
    assert all(b["Contact"]["ContactID"] in suppliers for b in bills)
    assert all(li["AccountCode"] == "429" for b in bills for li in b["LineItems"])
    for bill in (partly, paid):
        (payment,) = state.xero.payments(tenant, bill["InvoiceID"])
        assert payment["PaymentType"] == "ACCPAYPAYMENT"
    eur_payment = state.xero.payments(tenant, partly["InvoiceID"])[0]
    assert eur_payment["BankAmount"] == (eur_payment["Amount"] / Decimal("0.92")).quantize(
        Decimal("0.01")
    )


def test_more_bills_cycle_through_every_state() -> None:
    state = SandboxState(seed=3, invoices=0, bills=10)
    tenant = state.xero.tenant_ids[0]
    bills = state.xero.bills(tenant)
    assert len(bills) == 10 and len(state.xero.invoices(tenant)) == 10
    assert Counter(b["Status"] for b in bills) == {
        "AUTHORISED": 5,
        "PAID": 2,
        "DRAFT": 1,
        "SUBMITTED": 1,
        "VOIDED": 1,
    }
    assert {b["CurrencyCode"] for b in bills} == {"USD", "EUR"}
    assert SandboxState(seed=3, bills=0).xero.bills(state.xero.tenant_ids[0]) == []
    with pytest.raises(ValueError):
        SandboxState(bills=-1)


def test_bills_over_http_and_paying_one(xero: XeroClient, state: SandboxState) -> None:
    bills = parse(xero.get("/Invoices", where='Type=="ACCPAY"'))["Invoices"]
    assert {b["InvoiceID"] for b in bills} == {
        b["InvoiceID"] for b in state.xero.bills(xero.tenant_id)
    }
    bill = xero.payable_invoice(type="ACCPAY")
    response = xero.send(
        "PUT", "/Payments", {"Payments": [xero.payment_body(bill["InvoiceID"], "10.00")]}
    )
    assert response.status_code == 200
    (payment,) = parse(response)["Payments"]
    assert (payment["PaymentType"], payment["Invoice"]["Type"]) == ("ACCPAYPAYMENT", "ACCPAY")
    assert payment["Invoice"]["AmountDue"] == bill["AmountDue"] - Decimal("10.00")
    by_type = parse(xero.get("/Payments", where='PaymentType=="ACCPAYPAYMENT"'))["Payments"]
    assert payment["PaymentID"] in {p["PaymentID"] for p in by_type}
    assert all(p["Invoice"]["Type"] == "ACCPAY" for p in by_type)


def test_paying_a_eur_bill_in_full_marks_it_paid(xero: XeroClient, state: SandboxState) -> None:
    bill = next(
        b
        for b in state.xero.bills(xero.tenant_id)
        if b["CurrencyCode"] == "EUR" and b["Status"] == "AUTHORISED"
    )
    body = xero.payment_body(bill["InvoiceID"], str(bill["AmountDue"]))
    payment = parse(xero.send("POST", "/Payments", body))["Payments"][0]
    assert payment["Invoice"]["Status"] == "PAID"
    assert payment["BankAmount"] == (bill["AmountDue"] / Decimal("0.92")).quantize(Decimal("0.01"))
    assert state.xero.invoice(xero.tenant_id, bill["InvoiceID"])["AmountDue"] == 0


def test_bill_numbers_need_not_be_unique(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    # A supplier's bill may reuse a number our own sales invoice has; by number, the
    # sales invoice wins (InvoiceNumber is only unique for ACCREC).
    state.xero.add_invoice(tenant, type="ACCPAY", number="INV-0001", total=Decimal("7.00"))
    found = parse(xero.get("/Invoices/INV-0001"))["Invoices"][0]
    assert found["Type"] == "ACCREC"
    both = parse(xero.get("/Invoices", InvoiceNumbers="INV-0001"))["Invoices"]
    assert sorted(i["Type"] for i in both) == ["ACCPAY", "ACCREC"]
    new_bill = state.xero.add_invoice(tenant, type="ACCPAY", total=Decimal("1.00"))
    assert new_bill["InvoiceNumber"] == "BILL-0001"


def test_contacts_roles_paging_and_archived(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    customers = parse(xero.get("/Contacts", where="IsCustomer==true"))["Contacts"]
    suppliers = parse(xero.get("/Contacts", where="IsSupplier==true"))["Contacts"]
    assert len(customers) == 3 and len(suppliers) == 2
    assert all(c["IsCustomer"] and not c["IsSupplier"] for c in customers)
    for n in range(7):
        state.xero.add_contact(tenant, f"Supplier {n:02d}", is_supplier=True)
    archived = state.xero.add_contact(tenant, "Gone Ltd", status="ARCHIVED")
    seen: list[str] = []
    for page in (1, 2, 3):
        body = parse(xero.get("/Contacts", page=page, pageSize=5))
        assert body["pagination"] == {"page": page, "pageSize": 5, "pageCount": 3, "itemCount": 12}
        seen += [c["ContactID"] for c in body["Contacts"]]
    everything = [c["ContactID"] for c in parse(xero.get("/Contacts"))["Contacts"]]
    assert seen == everything and len(set(seen)) == 12
    assert archived["ContactID"] not in seen
    with_archived = parse(xero.get("/Contacts", includeArchived="true"))["Contacts"]
    assert archived["ContactID"] in {c["ContactID"] for c in with_archived}
    assert len(state.xero.contacts(tenant)) == 13
    search = parse(xero.get("/Contacts", searchTerm="supplier 0"))["Contacts"]
    assert len(search) == 7


def test_contacts_if_modified_since_and_edits(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    contact = state.xero.contacts(tenant)[1]
    edited = state.xero.edit_contact(tenant, contact["ContactID"], Name="Bayside Social Club")
    assert _ms(edited["UpdatedDateUTC"]) > _ms(contact["UpdatedDateUTC"])
    moment = datetime.fromtimestamp(_ms(edited["UpdatedDateUTC"]) / 1000, UTC)
    since = {"If-Modified-Since": moment.strftime("%Y-%m-%dT%H:%M:%S")}
    changed = parse(xero.get("/Contacts", headers=since))["Contacts"]
    assert [c["Name"] for c in changed] == ["Bayside Social Club"]
    later = {"If-Modified-Since": (moment + timedelta(seconds=1)).isoformat()}
    assert parse(xero.get("/Contacts", headers=later))["Contacts"] == []
    # The rename shows in the invoices of that contact (their summary carries the name).
    invoice = next(
        i
        for i in parse(xero.get("/Invoices"))["Invoices"]
        if i["Contact"]["ContactID"] == contact["ContactID"]
    )
    assert invoice["Contact"]["Name"] == "Bayside Social Club"
    by_id = parse(xero.get(f"/Contacts/{contact['ContactID']}"))["Contacts"][0]
    assert by_id["Name"] == "Bayside Social Club"
    with pytest.raises(ValueError):
        state.xero.edit_contact(tenant, contact["ContactID"], Name="Acme Hardware")  # taken
    with pytest.raises(ValueError):
        state.xero.add_contact(tenant, "acme hardware")
    with pytest.raises(ValueError):
        state.xero.edit_contact(tenant, contact["ContactID"], Name="Half Done", Colour="red")
    assert state.xero.contact(tenant, contact["ContactID"])["Name"] == "Bayside Social Club"
    with pytest.raises(KeyError):
        state.xero.contact(tenant, "00000000-0000-0000-0000-000000000000")


def test_a_contacts_first_bill_makes_it_a_supplier(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    customer = next(c for c in state.xero.contacts(tenant) if not c["IsSupplier"])
    state.xero.add_invoice(tenant, type="ACCPAY", contact_id=customer["ContactID"])
    now = state.xero.contact(tenant, customer["ContactID"])
    assert now["IsSupplier"] and now["IsCustomer"]
    assert _ms(now["UpdatedDateUTC"]) > _ms(customer["UpdatedDateUTC"])


def test_accounts_if_modified_since_and_where(xero: XeroClient, state: SandboxState) -> None:
    accounts = parse(xero.get("/Accounts"))["Accounts"]
    newest = max(_ms(a["UpdatedDateUTC"]) for a in accounts)
    moment = datetime.fromtimestamp(newest / 1000, UTC)
    recent = parse(xero.get("/Accounts", headers={"If-Modified-Since": moment.isoformat()}))
    assert [a["Code"] for a in recent["Accounts"]] == ["855"]  # the last one set up
    payable = parse(xero.get("/Accounts", where='Type=="BANK" OR EnablePaymentsToAccount==true'))
    assert [a["Code"] for a in payable["Accounts"]] == ["090", "091", "855"]
    assert "pagination" not in recent  # Accounts are not paged
    assert xero.get("/Accounts/00000000-0000-0000-0000-000000000000").status_code == 404


def test_day_limit_counts_across_minutes(make_server: ServerFactory) -> None:
    server = make_server(seed=1, clock=frozen_clock(), rate_limits={"day": 3, "minute": 2})
    client = XeroClient(server)
    state = server.state
    try:
        remaining = [client.get("/Contacts").headers["X-DayLimit-Remaining"] for _ in range(2)]
        assert remaining == ["2", "1"]
        state.clock.advance(60)
        assert client.get("/Contacts").headers["X-DayLimit-Remaining"] == "0"
        refused = client.get("/Contacts")
        assert refused.headers["X-Rate-Limit-Problem"] == "day"
        wait = int(refused.headers["Retry-After"])
        assert wait == state.rate_limiter.retry_after(client.tenant_id, "day")
        assert 1 <= wait <= 86_400
        state.clock.advance(wait - 1)  # a second before the window ends: still refused
        client.access_token = client.refresh()["access_token"]
        assert client.get("/Contacts").status_code == 429
        state.clock.advance(1)
        fresh = client.get("/Contacts")
        assert (fresh.status_code, fresh.headers["X-DayLimit-Remaining"]) == (200, "2")
    finally:
        client.close()
