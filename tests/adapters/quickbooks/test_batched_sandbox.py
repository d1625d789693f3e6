"""Batched reads and lookups, several-document payments and unapplied remainders of the
QuickBooks adapter, against the sandbox ledger over real HTTP (its state is what the
assertions read)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connector.adapters.base import PaymentLine, PaymentRequest
from connector.adapters.quickbooks import QuickBooksAdapter, load_quickbooks_mapping
from connector.errors import AmountExceedsBalance, ValidationRejected
from tests.adapters.quickbooks.conftest import Qbo

PARTY = {"invoice": "CustomerRef", "bill": "VendorRef"}
DOC = {"invoice": "Invoice", "bill": "Bill"}


@pytest.fixture
def adapter(qbo: Qbo) -> QuickBooksAdapter:
    return qbo.adapter()


@pytest.fixture
def wire(adapter: QuickBooksAdapter) -> list[httpx.Request]:
    sent: list[httpx.Request] = []
    adapter.http.client.event_hooks["request"].append(sent.append)
    return sent


def queries(wire: list[httpx.Request]) -> list[str]:
    """The query statements sent (in the URL or as a POST body)."""
    out = []
    for r in wire:
        if r.url.path.endswith("/query"):
            out.append(r.url.params.get("query") or r.content.decode())
    return out


def balance(qbo: Qbo, kind: str, doc: dict[str, Any]) -> Decimal:
    return Decimal(str(qbo.document(kind, doc["Id"])["Balance"]))


def request(
    qbo: Qbo,
    kind: str,
    lines: list[tuple[dict[str, Any], str]],
    reference: str,
    *,
    intent: str = "i-1",
    unapplied: str = "0",
    contact: bool = True,
    on: date = date(2024, 5, 1),
) -> PaymentRequest:
    paid = tuple(PaymentLine(doc["Id"], Decimal(amount)) for doc, amount in lines)
    return PaymentRequest(
        intent_id=intent,
        document_remote_id=lines[0][0]["Id"],
        amount=sum((line.amount for line in paid), Decimal(0)),
        currency="USD",
        transaction_date=on,
        reference=reference,
        account_code=qbo.settings.connections[0].payment_account_code,
        document_type=kind,
        contact_remote_id=lines[0][0][PARTY[kind]]["value"] if contact else None,
        provider_key=f"k-{intent}",
        lines=paid if len(paid) > 1 else (),
        unapplied=Decimal(unapplied),
    )


def ours(qbo: Qbo, kind: str, reference: str) -> list[dict[str, Any]]:
    return [
        p for p in qbo.payments(kind, include_deleted=True) if p.get("PrivateNote") == reference
    ]


# -- get_documents -----------------------------------------------------------------------------
def test_get_documents_is_get_document_in_one_query(
    qbo: Qbo, adapter: QuickBooksAdapter, wire: list[httpx.Request]
) -> None:
    open_ = qbo.new_document("invoice", "120.00")
    partly = qbo.new_document("invoice", "80.00")
    qbo.pay_elsewhere("invoice", partly["Id"], "30.00")
    voided = qbo.new_document("invoice", "10.00")
    qbo.ledger.void_invoice(qbo.realm, voided["Id"])
    numbered = qbo.new_document("invoice", "15.00", doc_number="A-7001")
    deleted = qbo.new_document("invoice", "10.00")
    qbo.delete("Invoice", deleted["Id"])
    bill = qbo.new_document("bill", "33.00")
    asked = [open_["Id"], partly["Id"], voided["Id"], "A-7001", deleted["Id"], bill["Id"], "999999"]
    wire.clear()

    batched = adapter.get_documents(asked)

    # One Id IN (…) query, one DocNumber IN (…) query for what no Id named.
    assert queries(wire) == [
        f"SELECT * FROM Invoice WHERE Id IN ('{open_['Id']}', '{partly['Id']}', "
        f"'{voided['Id']}', '{deleted['Id']}', '{bill['Id']}', '999999') "
        "STARTPOSITION 1 MAXRESULTS 1000",
        f"SELECT * FROM Invoice WHERE DocNumber IN ('A-7001', '{deleted['Id']}', "
        f"'{bill['Id']}', '999999') STARTPOSITION 1 MAXRESULTS 1000",
    ]
    assert set(batched) == {open_["Id"], partly["Id"], voided["Id"], "A-7001"}
    for ref, snapshot in batched.items():
        assert snapshot == adapter.get_document(ref)
    assert batched[partly["Id"]].balance == Decimal("50.00")
    assert batched[voided["Id"]].status == "void"
    assert batched["A-7001"].remote_id == numbered["Id"]
    bills = adapter.get_documents([bill["Id"], open_["Id"]], "bill")
    assert list(bills) == [bill["Id"]]
    assert bills[bill["Id"]] == adapter.get_document(bill["Id"], "bill")


def test_long_batched_reads_go_as_post_queries(
    qbo: Qbo, adapter: QuickBooksAdapter, wire: list[httpx.Request]
) -> None:
    docs = [qbo.new_document("invoice", "1.00") for _ in range(3)]
    ids = [d["Id"] for d in docs] + [str(100000 + n) for n in range(300)]
    wire.clear()
    assert adapter.get_documents([]) == {} and adapter.find_payments([]) == {}
    assert wire == []
    batched = adapter.get_documents(ids)
    assert list(batched) == [d["Id"] for d in docs]
    first = wire[0]
    assert first.method == "POST" and first.headers["Content-Type"] == "application/text"
    assert first.content.decode().startswith("SELECT * FROM Invoice WHERE Id IN (")


# -- several documents, one payment -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["invoice", "bill"])
def test_one_payment_pays_several_documents_of_one_contact(
    qbo: Qbo, adapter: QuickBooksAdapter, kind: str
) -> None:
    first = qbo.new_document(kind, "100.00")
    party = {"customer_id" if kind == "invoice" else "vendor_id": first[PARTY[kind]]["value"]}
    second = qbo.new_document(kind, "50.00", **party)
    req = request(qbo, kind, [(first, "70.00"), (second, "50.00")], "cx-multi-1")

    [result] = adapter.push_payments([req], "k-multi-1")

    assert result.error is None and result.payment is not None
    [payment] = ours(qbo, kind, "cx-multi-1")  # exactly one payment
    assert payment["Id"] == result.payment.remote_id
    assert Decimal(str(payment["TotalAmt"])) == Decimal("120.00")
    assert [(ln["Amount"], ln["LinkedTxn"]) for ln in payment["Line"]] == [
        (Decimal("70.00"), [{"TxnId": first["Id"], "TxnType": DOC[kind]}]),
        (Decimal("50.00"), [{"TxnId": second["Id"], "TxnType": DOC[kind]}]),
    ]
    assert (balance(qbo, kind, first), balance(qbo, kind, second)) == (Decimal("30.00"), 0)
    got = result.payment
    assert got.amount == Decimal("120.00")
    assert got.allocations == (
        PaymentLine(first["Id"], Decimal("70.00")),
        PaymentLine(second["Id"], Decimal("50.00")),
    )
    assert got.record["allocations"] == [
        {"id": first["Id"], "type": kind, "amount": Decimal("70.00")},
        {"id": second["Id"], "type": kind, "amount": Decimal("50.00")},
    ]
    [found] = adapter.find_payment(req)
    assert (found.remote_id, found.allocations) == (got.remote_id, got.allocations)


@pytest.mark.parametrize("kind", ["invoice", "bill"])
def test_documents_of_another_contact_refuse_the_payment(
    qbo: Qbo, adapter: QuickBooksAdapter, kind: str
) -> None:
    first = qbo.new_document(kind, "10.00")
    names = qbo.ledger.customers(qbo.realm) if kind == "invoice" else qbo.ledger.vendors(qbo.realm)
    other = next(n["Id"] for n in names if n["Id"] != first[PARTY[kind]]["value"])
    foreign = qbo.new_document(
        kind, "10.00", **{"customer_id" if kind == "invoice" else "vendor_id": other}
    )
    req = request(qbo, kind, [(first, "10.00"), (foreign, "10.00")], "cx-two-parties")

    [result] = adapter.push_payments([req], "k-two-parties")

    assert isinstance(result.error, ValidationRejected)
    assert result.error.provider_code == "6000"
    assert "another" in (result.error.provider_message or "")
    assert ours(qbo, kind, "cx-two-parties") == []
    assert (balance(qbo, kind, first), balance(qbo, kind, foreign)) == (Decimal("10.00"),) * 2


def test_a_line_over_its_balance_refuses_every_line(qbo: Qbo, adapter: QuickBooksAdapter) -> None:
    first = qbo.new_document("invoice", "40.00")
    second = qbo.new_document("invoice", "20.00", customer_id=first["CustomerRef"]["value"])
    req = request(qbo, "invoice", [(first, "40.00"), (second, "20.01")], "cx-over-multi")
    [result] = adapter.push_payments([req], "k-over-multi")
    assert isinstance(result.error, AmountExceedsBalance)
    assert ours(qbo, "invoice", "cx-over-multi") == []
    assert (balance(qbo, "invoice", first), balance(qbo, "invoice", second)) == (
        Decimal("40.00"),
        Decimal("20.00"),
    )


# -- unapplied remainder ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["invoice", "bill"])
def test_a_payment_above_its_lines_leaves_the_rest_unapplied(
    qbo: Qbo, adapter: QuickBooksAdapter, kind: str
) -> None:
    assert adapter.capabilities.unapplied_credit is True
    doc = qbo.new_document(kind, "100.00")
    req = request(qbo, kind, [(doc, "100.00")], "cx-unapplied", unapplied="15.50")

    [result] = adapter.push_payments([req], "k-unapplied")

    assert result.payment is not None
    [payment] = ours(qbo, kind, "cx-unapplied")
    assert Decimal(str(payment["TotalAmt"])) == Decimal("115.50")
    assert [ln["Amount"] for ln in payment["Line"]] == [Decimal("100.00")]
    if kind == "invoice":
        assert payment["UnappliedAmt"] == Decimal("15.50")
    assert balance(qbo, kind, doc) == 0
    assert result.payment.amount == Decimal("100.00")
    assert result.payment.record["total_amount"] == Decimal("115.50")


# -- find_payments ----------------------------------------------------------------------------
def test_find_payments_asks_once_per_kind_and_date(
    qbo: Qbo, adapter: QuickBooksAdapter, wire: list[httpx.Request]
) -> None:
    a = qbo.new_document("invoice", "30.00")
    customers = [c["Id"] for c in qbo.ledger.customers(qbo.realm)]
    b = qbo.new_document(
        "invoice", "30.00", customer_id=next(c for c in customers if c != a["CustomerRef"]["value"])
    )
    b2 = qbo.new_document("invoice", "30.00", customer_id=b["CustomerRef"]["value"])
    a2 = qbo.new_document("invoice", "30.00", customer_id=a["CustomerRef"]["value"])
    bill = qbo.new_document("bill", "30.00")
    single = request(qbo, "invoice", [(a, "30.00")], "cx-f-single", intent="i-single")
    multi = request(qbo, "invoice", [(b, "10.00"), (b2, "20.00")], "cx-f-multi", intent="i-multi")
    on_bill = request(qbo, "bill", [(bill, "5.00")], "cx-f-bill", intent="i-bill")
    voided = request(qbo, "invoice", [(a2, "0.01")], "cx-f-void", intent="i-void")
    none = request(qbo, "invoice", [(b, "1.00")], "cx-f-none", intent="i-none", contact=False)
    pushed = {
        r.intent_id: r.payment for r in adapter.push_payments([single, multi, on_bill], "k-f")
    }
    [dead] = adapter.push_payments([voided], "k-f-void")
    assert dead.payment is not None
    qbo.void_payment("Payment", dead.payment.remote_id)
    wire.clear()

    found = adapter.find_payments([single, multi, on_bill, voided, none])

    party_a, party_b = a["CustomerRef"]["value"], b["CustomerRef"]["value"]
    assert queries(wire) == [
        # The request without a contact: its document's, from a batched read.
        f"SELECT * FROM Invoice WHERE Id IN ('{b['Id']}') STARTPOSITION 1 MAXRESULTS 1000",
        f"SELECT * FROM Payment WHERE CustomerRef IN ('{party_a}', '{party_b}') "
        "AND TxnDate = '2024-05-01' STARTPOSITION 1 MAXRESULTS 1000",
        f"SELECT * FROM BillPayment WHERE VendorRef = '{bill['VendorRef']['value']}' "
        "AND TxnDate = '2024-05-01' STARTPOSITION 1 MAXRESULTS 1000",
    ]
    assert set(found) == {"i-single", "i-multi", "i-bill", "i-void", "i-none"}
    for intent in ("i-single", "i-multi", "i-bill"):
        [payment] = found[intent]
        assert payment.remote_id == pushed[intent].remote_id  # type: ignore[union-attr]
        assert payment.status == "authorised"
    assert found["i-multi"][0].amount == Decimal("30.00")
    assert [line.document_remote_id for line in found["i-multi"][0].allocations] == [
        b["Id"],
        b2["Id"],
    ]
    assert [(p.remote_id, p.status) for p in found["i-void"]] == [
        (dead.payment.remote_id, "deleted")
    ]
    assert found["i-none"] == []


def test_a_mapping_that_writes_one_line_refuses_several_documents(qbo: Qbo) -> None:
    one_line = "[{Amount: amount, LinkedTxn: [{TxnId: document_remote_id, TxnType: 'Invoice'}]}]"
    mapping = load_quickbooks_mapping(overrides={"write": {"payment": {"Line": one_line}}})
    adapter = QuickBooksAdapter(
        qbo.settings.connections[0], qbo.store, clock=qbo.clock, mapping=mapping
    )
    qbo.adapters.append(adapter)
    first = qbo.new_document("invoice", "10.00")
    second = qbo.new_document("invoice", "10.00", customer_id=first["CustomerRef"]["value"])
    req = request(qbo, "invoice", [(first, "10.00"), (second, "10.00")], "cx-one-line")

    [result] = adapter.push_payments([req], "k-one-line")

    assert isinstance(result.error, ValidationRejected)
    assert result.error.provider_code == "mapping"
    assert ours(qbo, "invoice", "cx-one-line") == []
    assert balance(qbo, "invoice", first) == Decimal("10.00")
