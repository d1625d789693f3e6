"""The Xero adapter's batched reads, lookups and several-invoice payments, against the
sandbox ledger over real HTTP (its own state is what the assertions read)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connector.adapters.base import PaymentLine, PaymentRequest
from connector.adapters.xero import XeroAdapter
from connector.errors import AmountExceedsBalance, ValidationRejected
from tests.conftest import Env

TYPES = {"invoice": "ACCREC", "bill": "ACCPAY"}


@pytest.fixture
def adapter(env: Env) -> Iterator[XeroAdapter]:
    a = XeroAdapter(env.xero, env.store, clock=env.clock)
    yield a
    a.close()


@pytest.fixture
def wire(adapter: XeroAdapter) -> list[httpx.Request]:
    """Every request the adapter sends (after authentication)."""
    sent: list[httpx.Request] = []
    adapter.http.client.event_hooks["request"].append(sent.append)
    return sent


def api_calls(wire: list[httpx.Request]) -> list[str]:
    return [f"{r.method} {r.url.path.rsplit('/', 1)[-1]}" for r in wire if "api.xro" in r.url.path]


def document(env: Env, kind: str = "invoice", total: str = "100.00", **kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = env.state.xero.add_invoice(
        env.tenant, total=Decimal(total), type=TYPES[kind], **kw
    )
    return doc


def due(env: Env, doc: dict[str, Any]) -> Decimal:
    return Decimal(str(env.state.xero.invoice(env.tenant, doc["InvoiceID"])["AmountDue"]))


def request(
    kind: str,
    lines: list[tuple[dict[str, Any], str]],
    reference: str,
    *,
    intent: str = "i-1",
    unapplied: str = "0",
) -> PaymentRequest:
    paid = tuple(PaymentLine(doc["InvoiceID"], Decimal(amount)) for doc, amount in lines)
    return PaymentRequest(
        intent_id=intent,
        document_remote_id=lines[0][0]["InvoiceID"],
        amount=sum((line.amount for line in paid), Decimal(0)),
        currency="USD",
        transaction_date=date(2024, 5, 1),
        reference=reference,
        account_code="090",
        document_type=kind,
        contact_remote_id=lines[0][0]["Contact"]["ContactID"],
        lines=paid if len(paid) > 1 else (),
        unapplied=Decimal(unapplied),
    )


# -- get_documents -------------------------------------------------------------------------
def test_get_documents_returns_what_get_document_does(
    env: Env, adapter: XeroAdapter, wire: list[httpx.Request]
) -> None:
    open_ = document(env, total="80.00")
    partly = document(env, total="80.00", amount_paid=Decimal("30.00"))
    paid = document(env, total="10.00", status="PAID")
    voided = document(env, total="10.00", status="VOIDED")
    deleted = document(env, total="10.00", status="DELETED")
    bill = document(env, "bill", total="55.00")
    missing = "00000000-0000-4000-8000-000000000000"
    ids = [d["InvoiceID"] for d in (open_, partly, paid, voided, deleted)]
    asked = [ids[0].upper(), *ids[1:], open_["InvoiceNumber"], missing, bill["InvoiceID"]]

    batched = adapter.get_documents(asked)

    # IDs in one request, numbers in another; the bill is no invoice, the missing id none.
    assert api_calls(wire) == ["GET Invoices", "GET Invoices"]
    assert wire[0].url.params["IDs"].split(",") == [r for r in asked if "-" in r and r != asked[5]]
    assert set(batched) == {ids[0].upper(), *ids[1:], open_["InvoiceNumber"]}
    for ref, snapshot in batched.items():
        assert snapshot == adapter.get_document(ref)
    assert [batched[i].status for i in ids[1:]] == ["authorised", "paid", "void", "deleted"]
    assert batched[ids[1]].balance == Decimal("50.00")
    assert batched[open_["InvoiceNumber"]].remote_id == open_["InvoiceID"]
    assert batched[ids[0].upper()].contact_remote_id == open_["Contact"]["ContactID"]
    bills = adapter.get_documents([bill["InvoiceID"], open_["InvoiceID"]], "bill")
    assert list(bills) == [bill["InvoiceID"]]
    assert bills[bill["InvoiceID"]] == adapter.get_document(bill["InvoiceID"], "bill")


def test_get_documents_asks_fifty_ids_a_request(
    env: Env, adapter: XeroAdapter, wire: list[httpx.Request]
) -> None:
    ids = [document(env, total="1.00")["InvoiceID"] for _ in range(61)]
    assert adapter.get_documents([]) == {} and adapter.find_payments([]) == {}
    assert wire == []
    batched = adapter.get_documents(ids)
    assert api_calls(wire) == ["GET Invoices", "GET Invoices"]
    assert [len(r.url.params["IDs"].split(",")) for r in wire] == [50, 11]
    assert list(batched) == ids


# -- payments of several invoices ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["invoice", "bill"])
def test_several_invoices_are_paid_by_one_batch_payment(
    env: Env, adapter: XeroAdapter, wire: list[httpx.Request], kind: str
) -> None:
    a, b = document(env, kind, "100.00"), document(env, kind, "40.00")
    req = request(kind, [(a, "60.00"), (b, "40.00")], "cx-multi-1")

    [result] = adapter.push_payments([req], "k-multi-1")

    assert api_calls(wire) == ["PUT BatchPayments"]
    assert wire[0].headers["Idempotency-Key"] == "k-multi-1"
    assert result.error is None and result.payment is not None
    [batch] = env.state.xero.batch_payments(env.tenant)
    assert batch["Type"] == ("PAYBATCH" if kind == "bill" else "RECBATCH")
    payment = result.payment
    assert payment.remote_id == batch["BatchPaymentID"]
    assert payment.document_remote_id == a["InvoiceID"]
    assert payment.amount == Decimal("100.00")
    assert payment.allocations == (
        PaymentLine(a["InvoiceID"], Decimal("60.00")),
        PaymentLine(b["InvoiceID"], Decimal("40.00")),
    )
    assert payment.record["allocations"] == [
        {"id": a["InvoiceID"], "type": kind, "amount": Decimal("60.00")},
        {"id": b["InvoiceID"], "type": kind, "amount": Decimal("40.00")},
    ]
    assert payment.record["total_amount"] == Decimal("100.00")
    assert payment.reference == "cx-multi-1" and payment.status == "authorised"
    # The ledger: each invoice owes its line less, one batch of two payments, ours.
    assert (due(env, a), due(env, b)) == (Decimal("40.00"), Decimal("0.00"))
    members = [
        p
        for p in env.state.xero.payments(env.tenant)
        if p.get("BatchPaymentID") == batch["BatchPaymentID"]
    ]
    assert sorted(p["Amount"] for p in members) == [Decimal("40.00"), Decimal("60.00")]
    assert {p["Reference"] for p in members} == {"cx-multi-1"}


def test_a_line_over_the_amount_due_refuses_the_whole_batch(env: Env, adapter: XeroAdapter) -> None:
    a, b = document(env, total="100.00"), document(env, total="40.00")
    [result] = adapter.push_payments([request("invoice", [(a, "60.00"), (b, "40.01")], "r")], "k")
    assert isinstance(result.error, AmountExceedsBalance)
    assert result.payment is None
    assert (due(env, a), due(env, b)) == (Decimal("100.00"), Decimal("40.00"))
    assert env.state.xero.batch_payments(env.tenant) == []


def test_one_call_with_single_and_several_invoice_payments_is_safe_to_resend(
    env: Env, adapter: XeroAdapter, wire: list[httpx.Request]
) -> None:
    a, b, c = (document(env, total="30.00") for _ in range(3))
    single = request("invoice", [(a, "30.00")], "cx-single", intent="i-single")
    multi = request("invoice", [(b, "10.00"), (c, "20.00")], "cx-multi", intent="i-multi")

    first = adapter.push_payments([multi, single], "k-mixed")
    again = adapter.push_payments([multi, single], "k-mixed")

    assert api_calls(wire) == ["PUT Payments", "PUT BatchPayments"] * 2
    assert [r.headers["Idempotency-Key"] for r in wire] == ["k-mixed", "k-mixed-batch"] * 2
    assert [r.intent_id for r in first] == ["i-multi", "i-single"]
    assert [r.payment.remote_id for r in first if r.payment] == [
        r.payment.remote_id for r in again if r.payment
    ]
    assert len(env.state.xero.batch_payments(env.tenant)) == 1
    assert [due(env, d) for d in (a, b, c)] == [Decimal("0.00"), Decimal("20.00"), Decimal("10.00")]


def test_nothing_can_be_left_unapplied_on_xero(
    env: Env, adapter: XeroAdapter, wire: list[httpx.Request]
) -> None:
    assert adapter.capabilities.unapplied_credit is False
    a = document(env, total="30.00")
    [result] = adapter.push_payments([request("invoice", [(a, "30.00")], "r", unapplied="5")], "k")
    assert isinstance(result.error, ValidationRejected)
    assert result.error.provider_code == "unapplied_not_supported"
    assert api_calls(wire) == []
    assert due(env, a) == Decimal("30.00")


# -- find_payments ----------------------------------------------------------------------------
def test_find_payments_finds_single_and_batch_payments_in_one_call(
    env: Env, adapter: XeroAdapter, wire: list[httpx.Request]
) -> None:
    a, b, c, d = (document(env, total="50.00") for _ in range(4))
    single = request("invoice", [(a, "50.00")], "cx-find-single", intent="i-single")
    multi = request("invoice", [(b, "20.00"), (c, "30.00")], "cx-find-multi", intent="i-multi")
    unsent = request("invoice", [(d, "5.00")], "cx-find-none", intent="i-none")
    pushed = {r.intent_id: r.payment for r in adapter.push_payments([single, multi], "k-find")}
    # Someone else's payment on one of our invoices, with another reference.
    env.state.xero.apply_payment(env.tenant, b["InvoiceID"], Decimal("1.00"), "not ours")
    wire.clear()

    found = adapter.find_payments([single, multi, unsent])

    assert api_calls(wire) == ["GET Payments"]
    where = wire[0].url.params["where"]
    assert where.count("Invoice.InvoiceID==guid(") == 4 and where.count(" OR ") == 3
    assert set(found) == {"i-single", "i-multi", "i-none"}
    assert found["i-none"] == []
    [one] = found["i-single"]
    assert pushed["i-single"] is not None and one.remote_id == pushed["i-single"].remote_id
    assert one.amount == Decimal("50.00") and one.reference == "cx-find-single"
    [batch] = found["i-multi"]
    assert pushed["i-multi"] is not None and batch.remote_id == pushed["i-multi"].remote_id
    assert batch.amount == Decimal("50.00") and batch.status == "authorised"
    assert batch.allocations == (
        PaymentLine(b["InvoiceID"], Decimal("20.00")),
        PaymentLine(c["InvoiceID"], Decimal("30.00")),
    )
    # Alone, the lookup is the one find_payment always made (Reference=="…").
    wire.clear()
    [alone] = adapter.find_payment(multi)
    assert wire[0].url.params["where"] == 'Reference=="cx-find-multi"'
    assert alone.remote_id == batch.remote_id and alone.allocations == batch.allocations

    ok, _ = env.state.xero.delete_batch_payment(env.tenant, batch.remote_id)
    assert ok
    [dead] = adapter.find_payment(multi)
    assert dead.status == "deleted" and dead.remote_id == batch.remote_id
