"""PUT/GET/POST /BatchPayments: several invoices paid in one bank transaction."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connector.sandbox import SandboxState

from .conftest import ServerFactory, XeroClient, frozen_clock, parse

EXCEEDS = "Payment amount exceeds the amount outstanding on this document"
NOT_AUTHORISED = "Payments can only be made against Authorised documents"


def _new(state: SandboxState, tenant: str, total: str, **kw: Any) -> dict[str, Any]:
    inv: dict[str, Any] = state.xero.add_invoice(tenant, total=Decimal(total), **kw)
    return inv


def _due(state: SandboxState, tenant: str, inv: dict[str, Any]) -> Decimal:
    return Decimal(str(state.xero.invoice(tenant, inv["InvoiceID"])["AmountDue"]))


def _batch(*members: tuple[dict[str, Any], str], reference: str = "cx-batch-1") -> dict[str, Any]:
    return {
        "Account": {"Code": "090"},
        "Date": "2024-05-01",
        "Reference": reference,
        "Payments": [
            {"Invoice": {"InvoiceID": inv["InvoiceID"]}, "Amount": Decimal(amount)}
            for inv, amount in members
        ],
    }


def _messages(element: dict[str, Any]) -> list[str]:
    return [e["Message"] for e in element.get("ValidationErrors", [])]


def test_a_batch_pays_each_invoice_its_amount_as_one_transaction(
    xero: XeroClient, state: SandboxState
) -> None:
    tenant = xero.tenant_id
    a, b = _new(state, tenant, "100.00"), _new(state, tenant, "60.00")
    before = len(state.xero.payments(tenant))
    body = {"BatchPayments": [_batch((a, "40.00"), (b, "60.00"))]}

    response = xero.send("PUT", "/BatchPayments", body)

    assert response.status_code == 200, response.text
    [batch] = parse(response)["BatchPayments"]
    assert batch["Type"] == "RECBATCH" and batch["Status"] == "AUTHORISED"
    assert batch["TotalAmount"] == Decimal("100.00")
    assert batch["Reference"] == "cx-batch-1"
    assert batch["Date"] == "/Date(1714521600000+0000)/"
    assert [(p["Invoice"]["InvoiceID"], p["Amount"]) for p in batch["Payments"]] == [
        (a["InvoiceID"], Decimal("40.00")),
        (b["InvoiceID"], Decimal("60.00")),
    ]
    # The ledger: each invoice owes its line less; one batch holding two payments.
    assert _due(state, tenant, a) == Decimal("60.00")
    assert _due(state, tenant, b) == 0
    assert state.xero.invoice(tenant, b["InvoiceID"])["Status"] == "PAID"
    [stored] = state.xero.batch_payments(tenant)
    assert stored["BatchPaymentID"] == batch["BatchPaymentID"]
    payments = state.xero.payments(tenant)
    assert len(payments) == before + 2
    members = [p for p in payments if p.get("BatchPaymentID") == batch["BatchPaymentID"]]
    assert {p["PaymentID"] for p in members} == {p["PaymentID"] for p in batch["Payments"]}
    assert all(p["BatchPayment"]["Type"] == "RECBATCH" for p in members)
    assert all(p["BatchPayment"]["TotalAmount"] == Decimal("100.00") for p in members)
    # A member without its own Reference shows "" (as the spec's GET /Payments example).
    assert {p["Reference"] for p in members} == {""}


def test_batches_are_read_back_by_id_and_by_where(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    a, b = _new(state, tenant, "10.00"), _new(state, tenant, "20.00")
    made = parse(xero.send("PUT", "/BatchPayments", _batch((a, "10.00"), (b, "5.00"))))
    [batch] = made["BatchPayments"]
    batch_id = batch["BatchPaymentID"]

    by_id = xero.get(f"/BatchPayments/{batch_id.upper()}")
    assert by_id.status_code == 200
    assert parse(by_id)["BatchPayments"] == [batch]

    listed = parse(xero.get("/BatchPayments", where='Reference=="cx-batch-1"'))["BatchPayments"]
    assert [x["BatchPaymentID"] for x in listed] == [batch_id]
    assert parse(xero.get("/BatchPayments", where='Reference=="other"'))["BatchPayments"] == []
    members = parse(xero.get("/Payments", where=f'BatchPaymentID==guid("{batch_id}")'))
    assert sorted(p["Amount"] for p in members["Payments"]) == [Decimal("5.00"), Decimal("10.00")]
    assert xero.get("/BatchPayments/00000000-0000-0000-0000-000000000000").status_code == 404


def test_a_refused_payment_refuses_its_whole_batch(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    a, b = _new(state, tenant, "100.00"), _new(state, tenant, "30.00")
    before = len(state.xero.payments(tenant, include_deleted=True))

    response = xero.send("PUT", "/BatchPayments", _batch((a, "50.00"), (b, "30.01")))

    assert response.status_code == 400
    error = parse(response)
    assert error["Type"] == "ValidationException"
    [element] = error["Elements"]
    assert _messages(element) == [EXCEEDS]
    good, bad = element["Payments"]
    assert good["HasValidationErrors"] is False and "ValidationErrors" not in good
    assert _messages(bad) == [EXCEEDS]
    # All or nothing: neither invoice moved, no payment, no batch.
    assert _due(state, tenant, a) == Decimal("100.00")
    assert _due(state, tenant, b) == Decimal("30.00")
    assert len(state.xero.payments(tenant, include_deleted=True)) == before
    assert state.xero.batch_payments(tenant) == []


def test_without_summarize_errors_each_batch_stands_alone(
    xero: XeroClient, state: SandboxState
) -> None:
    tenant = xero.tenant_id
    a, b, c = (_new(state, tenant, "10.00") for _ in range(3))
    draft = _new(state, tenant, "10.00", status="DRAFT")
    body = {
        "BatchPayments": [
            _batch((a, "10.00"), (b, "4.00"), reference="ok"),
            _batch((c, "5.00"), (draft, "5.00"), reference="has-draft"),
            # b owes 6.00 after the first batch: 7.00 is too much.
            _batch((b, "7.00"), reference="too-much"),
        ]
    }

    response = xero.send("PUT", "/BatchPayments", body, params={"summarizeErrors": "false"})

    assert response.status_code == 200
    ok, has_draft, too_much = parse(response)["BatchPayments"]
    assert ok["StatusAttributeString"] == "OK" and ok["BatchPaymentID"]
    assert has_draft["StatusAttributeString"] == "ERROR"
    assert _messages(has_draft) == [NOT_AUTHORISED]
    assert _messages(too_much) == [EXCEEDS]
    assert [x["Reference"] for x in state.xero.batch_payments(tenant)] == ["ok"]
    assert (_due(state, tenant, a), _due(state, tenant, b)) == (0, Decimal("6.00"))
    assert _due(state, tenant, c) == Decimal("10.00")


def test_invoices_of_different_contacts_share_a_batch_but_not_kinds_or_currencies(
    xero: XeroClient, state: SandboxState
) -> None:
    tenant = xero.tenant_id
    customers = [c["ContactID"] for c in state.xero.contacts(tenant) if c["IsCustomer"]]
    a = _new(state, tenant, "10.00", contact_id=customers[0])
    b = _new(state, tenant, "10.00", contact_id=customers[1])
    bill = _new(state, tenant, "10.00", type="ACCPAY")
    euro = _new(state, tenant, "10.00", currency="EUR")

    # Paying several suppliers (or customers) in one bank transaction is what batch
    # payments are for: Xero does not ask for one contact.
    mixed_contacts = xero.send("PUT", "/BatchPayments", _batch((a, "10.00"), (b, "10.00")))
    assert mixed_contacts.status_code == 200
    mixed_kinds = xero.send("PUT", "/BatchPayments", _batch((euro, "1.00"), (bill, "1.00")))
    assert mixed_kinds.status_code == 400
    [element] = parse(mixed_kinds)["Elements"]
    assert _messages(element) == [
        "A batch payment can pay sales invoices or bills, not both",
        "All invoices of a batch payment must be in the same currency",
    ]
    assert _due(state, tenant, bill) == Decimal("10.00")
    assert _due(state, tenant, euro) == Decimal("10.00")


def test_bills_make_a_paybatch(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    one = _new(state, tenant, "80.00", type="ACCPAY")
    two = _new(state, tenant, "20.00", type="ACCPAY")
    response = xero.send("PUT", "/BatchPayments", _batch((one, "80.00"), (two, "20.00")))
    [batch] = parse(response)["BatchPayments"]
    assert batch["Type"] == "PAYBATCH"
    members = [
        p for p in state.xero.payments(tenant) if p.get("BatchPaymentID") == batch["BatchPaymentID"]
    ]
    assert {p["PaymentType"] for p in members} == {"ACCPAYPAYMENT"}
    assert _due(state, tenant, one) == _due(state, tenant, two) == 0


def test_deleting_a_batch_reverses_every_payment_and_members_cannot_go_alone(
    xero: XeroClient, state: SandboxState
) -> None:
    tenant = xero.tenant_id
    a, b = _new(state, tenant, "10.00"), _new(state, tenant, "20.00")
    [batch] = parse(xero.send("PUT", "/BatchPayments", _batch((a, "10.00"), (b, "20.00"))))[
        "BatchPayments"
    ]
    batch_id = batch["BatchPaymentID"]
    member = batch["Payments"][0]["PaymentID"]

    alone = xero.send("POST", f"/Payments/{member}", {"Status": "DELETED"})
    assert alone.status_code == 400
    assert "batch payment" in parse(alone)["Elements"][0]["ValidationErrors"][0]["Message"]
    assert _due(state, tenant, a) == 0

    deleted = xero.send("POST", "/BatchPayments", {"BatchPaymentID": batch_id, "Status": "DELETED"})
    assert deleted.status_code == 200
    [gone] = parse(deleted)["BatchPayments"]
    assert gone["Status"] == "DELETED" and gone["Payments"] == []
    assert (_due(state, tenant, a), _due(state, tenant, b)) == (Decimal("10.00"), Decimal("20.00"))
    statuses = {
        p["Status"]
        for p in state.xero.payments(tenant, include_deleted=True)
        if p.get("BatchPaymentID") == batch_id
    }
    assert statuses == {"DELETED"}
    again = xero.send("POST", f"/BatchPayments/{batch_id}", {"Status": "DELETED"})
    assert again.status_code == 400
    assert _messages(parse(again)["Elements"][0]) == ["This batch payment has already been deleted"]


def test_an_idempotency_key_replays_the_batch(xero: XeroClient, state: SandboxState) -> None:
    tenant = xero.tenant_id
    a, b = _new(state, tenant, "10.00"), _new(state, tenant, "20.00")
    body = _batch((a, "1.00"), (b, "2.00"))
    headers = {"Idempotency-Key": "batch-key-1"}
    first = xero.send("PUT", "/BatchPayments", body, headers=headers)
    second = xero.send("PUT", "/BatchPayments", body, headers=headers)
    assert second.headers.get("X-Sandbox-Idempotent-Replay") == "true"
    assert parse(first)["BatchPayments"] == parse(second)["BatchPayments"]
    assert len(state.xero.batch_payments(tenant)) == 1
    assert _due(state, tenant, a) == Decimal("9.00")


def test_malformed_batch_bodies_are_post_data_invalid(xero: XeroClient) -> None:
    response = xero.send(
        "PUT", "/BatchPayments", {"BatchPayments": [{"Payments": [{"Amount": "abc"}]}]}
    )
    assert response.status_code == 400
    error = parse(response)
    assert error["Type"] == "PostDataInvalidException"
    assert "BatchPayments[0].Payments[0].Amount" in error["Message"]
    empty = xero.send("PUT", "/BatchPayments", {"BatchPayments": [{"Account": {"Code": "090"}}]})
    assert empty.status_code == 400
    assert "at least one payment" in parse(empty)["Elements"][0]["ValidationErrors"][0]["Message"]


def test_every_batch_payment_response_matches_the_official_spec(
    make_server: ServerFactory,
) -> None:
    from .test_openapi import RATE_LIMITS, Session, load_spec, validate_all

    server = make_server(seed=1, clock=frozen_clock(), rate_limits=RATE_LIMITS)
    session = Session(server)
    session.login()
    state, tenant = server.state, session.tenant
    a, b = _new(state, tenant, "50.00"), _new(state, tenant, "25.00")
    created = session.send("PUT", "/BatchPayments", _batch((a, "20.00"), (b, "25.00")))
    batch_id = created.json()["BatchPayments"][0]["BatchPaymentID"]
    session.send("PUT", "/BatchPayments", _batch((a, "999.00")))  # 400: exceeds
    session.send(
        "PUT",
        "/BatchPayments",
        {"BatchPayments": [_batch((a, "1.00")), _batch((b, "1.00"))]},
        summarizeErrors="false",
    )
    session.get("/BatchPayments")
    session.get("/BatchPayments", where='Status=="AUTHORISED"')
    session.get(f"/BatchPayments/{batch_id}")
    session.get("/Payments", where=f'BatchPaymentID==guid("{batch_id}")')
    session.send("POST", f"/BatchPayments/{batch_id}", {"Status": "DELETED"})
    session.send("POST", "/BatchPayments", {"BatchPaymentID": batch_id, "Status": "DELETED"})

    failures, validated = validate_all(
        session.recorded, load_spec("xero_accounting.yaml"), load_spec("xero-identity.yaml")
    )
    session.http.close()
    assert failures == []
    assert {
        ("PUT", "/BatchPayments", 200),
        ("PUT", "/BatchPayments", 400),
        ("GET", "/BatchPayments", 200),
        ("GET", "/BatchPayments/{id}", 200),
        ("GET", "/Payments", 200),
        ("POST", "/BatchPayments/{id}", 200),
        ("POST", "/BatchPayments", 400),
    } <= validated
