"""Batched reads and lookups, several-document payments and unapplied remainders of the
NetSuite adapter, against the sandbox ledger over real HTTP (its state is what the
assertions read)."""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal
from typing import Any

import httpx

from connector.adapters.base import PaymentLine, PaymentRequest
from connector.adapters.netsuite import NetSuiteAdapter, load_netsuite_mapping
from connector.errors import AmountExceedsBalance, DocumentNotPayable, ValidationRejected
from tests.adapters.netsuite.conftest import NS

PARTY_KW = {"invoice": "customer_id", "bill": "vendor_id"}


class Recorder(httpx.HTTPTransport):
    """The real transport, recording requests and the most record GETs in flight.

    With ``meet`` set, the first ``meet`` record GETs wait for one another (a barrier):
    they can only all get through if they are in flight at the same time.
    """

    def __init__(self, meet: int = 0) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []
        self.in_flight = 0
        self.most = 0
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(meet) if meet else None
        self._met = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        record_get = request.method == "GET" and "/record/v1/" in request.url.path
        with self._lock:
            if record_get:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
            wait = record_get and self._barrier is not None and self._met < self._barrier.parties
            if wait:
                self._met += 1
        try:
            if wait and self._barrier is not None:
                self._barrier.wait(timeout=10)
            return super().handle_request(request)
        finally:
            if record_get:
                with self._lock:
                    self.in_flight -= 1

    def suiteql(self) -> list[str]:
        import json

        return [json.loads(r.content)["q"] for r in self.sent if r.url.path.endswith("/suiteql")]

    def record_gets(self) -> int:
        return sum(1 for r in self.sent if r.method == "GET" and "/record/v1/" in r.url.path)


def request(
    kind: str,
    lines: list[tuple[dict[str, Any], str]],
    reference: str,
    *,
    intent: str = "i-1",
    key: str | None = None,
    unapplied: str = "0",
) -> PaymentRequest:
    paid = tuple(PaymentLine(doc["id"], Decimal(amount)) for doc, amount in lines)
    return PaymentRequest(
        intent_id=intent,
        document_remote_id=lines[0][0]["id"],
        amount=sum((line.amount for line in paid), Decimal(0)),
        currency="USD",
        transaction_date=date(2025, 5, 27),
        reference=reference,
        account_code="1",
        document_type=kind,
        contact_remote_id=lines[0][0]["entity"]["id"],
        provider_key=key or f"{intent}-v1",
        lines=paid if len(paid) > 1 else (),
        unapplied=Decimal(unapplied),
    )


def ours(ns: NS, kind: str, reference: str) -> list[dict[str, Any]]:
    return [p for p in ns.payments(kind, include_deleted=True) if p.get("memo") == reference]


# -- get_documents ------------------------------------------------------------------------------
def test_get_documents_is_get_document_for_many(ns: NS, kind: str) -> None:
    recorder = Recorder()
    adapter = ns.adapter(transport=recorder)
    docs = [
        ns.add_document(kind, "100.00"),
        ns.add_document(kind, "80.00", amount_remaining=Decimal("30.00")),
        ns.add_document(kind, "10.00", amount_remaining=Decimal("0")),
        ns.add_document(kind, "10.00", status="D"),
    ]
    other_kind = ns.add_document("bill" if kind == "invoice" else "invoice", "5.00")
    by_number = docs[0]["tranId"]
    asked = [d["id"] for d in docs] + [by_number, "99999999", other_kind["id"]]
    recorder.sent.clear()

    batched = adapter.get_documents(asked, kind)

    assert set(batched) == {d["id"] for d in docs} | {by_number}
    statements = [q for q in recorder.suiteql() if "FROM currency" not in q]
    # One GET per ref that is digits (an invoice number is digits too: tried as an id,
    # then found with one query; its document was read already), and for bills one
    # query for the open amounts.
    assert recorder.record_gets() == sum(1 for ref in asked if ref.isdigit())
    assert len(statements) == (2 if kind == "bill" else 1)
    assert "t.tranid IN (" in statements[0]
    for ref, snapshot in batched.items():
        assert snapshot == adapter.get_document(ref, kind)
    assert batched[docs[1]["id"]].balance == Decimal("30.00")
    assert batched[docs[2]["id"]].status == "paid"
    assert batched[docs[3]["id"]].status == "submitted"
    assert batched[by_number].remote_id == docs[0]["id"]


def test_get_documents_reads_up_to_the_concurrency_limit_at_once(ns: NS) -> None:
    limit = NetSuiteAdapter.capabilities.concurrency
    recorder = Recorder(meet=limit)  # the first `limit` reads only pass together
    adapter = ns.adapter(transport=recorder)
    docs = [ns.add_document("invoice", "1.00") for _ in range(limit * 2)]
    recorder.sent.clear()

    batched = adapter.get_documents([d["id"] for d in docs])

    assert list(batched) == [d["id"] for d in docs]
    assert recorder.most == limit
    assert recorder.record_gets() == limit * 2


# -- several documents, one payment ----------------------------------------------------------
def test_one_payment_applies_to_several_documents(ns: NS, kind: str) -> None:
    adapter = ns.adapter(ns.settings(bill_payment_account_code=None))
    first = ns.add_document(kind, "100.00")
    second = ns.add_document(kind, "40.00", **{PARTY_KW[kind]: first["entity"]["id"]})
    req = request(kind, [(first, "60.00"), (second, "40.00")], "cx-multi-ns")

    [result] = adapter.push_payments([req], "cx-multi-ns-v1")

    assert result.error is None and result.payment is not None
    [payment] = ours(ns, kind, "cx-multi-ns")
    assert payment["id"] == result.payment.remote_id
    assert [(i["doc"]["id"], i["amount"]) for i in payment["apply"]["items"]] == [
        (first["id"], Decimal("60.00")),
        (second["id"], Decimal("40.00")),
    ]
    assert payment["unapplied"] == 0
    assert (ns.open_amount(first), ns.open_amount(second)) == (Decimal("40.00"), 0)
    assert ns.status(kind, second) == "B"
    assert result.payment.allocations == (
        PaymentLine(first["id"], Decimal("60.00")),
        PaymentLine(second["id"], Decimal("40.00")),
    )
    assert [a["amount"] for a in result.payment.record["allocations"]] == [
        Decimal("60.00"),
        Decimal("40.00"),
    ]
    [found] = adapter.find_payment(req)
    assert found.remote_id == result.payment.remote_id
    assert found.allocations == result.payment.allocations
    assert found.amount == Decimal("100.00")

    # The same externalId again: NetSuite refuses the duplicate, the adapter adopts ours.
    [again] = adapter.push_payments([req], "cx-multi-ns-v1")
    assert again.payment is not None and again.payment.remote_id == result.payment.remote_id
    assert len(ours(ns, kind, "cx-multi-ns")) == 1


def test_documents_of_another_entity_refuse_the_payment(ns: NS, kind: str) -> None:
    adapter = ns.adapter(ns.settings(bill_payment_account_code=None))
    first = ns.add_document(kind, "10.00")
    entities = (
        ns.ledger.customers(ns.account) if kind == "invoice" else ns.ledger.vendors(ns.account)
    )
    other = next(
        e["id"]
        for e in entities
        if e["id"] != first["entity"]["id"] and e.get("currency", {}).get("id") == "1"
    )
    foreign = ns.add_document(kind, "10.00", **{PARTY_KW[kind]: other})
    req = request(kind, [(first, "10.00"), (foreign, "10.00")], "cx-two-entities")

    [result] = adapter.push_payments([req], "cx-two-entities-v1")

    assert type(result.error) is DocumentNotPayable
    assert result.error.provider_code == "INVALID_CONTENT"
    assert ours(ns, kind, "cx-two-entities") == []
    assert (ns.open_amount(first), ns.open_amount(foreign)) == (Decimal("10.00"),) * 2


def test_a_line_over_the_amount_due_refuses_every_line(ns: NS, kind: str) -> None:
    adapter = ns.adapter(ns.settings(bill_payment_account_code=None))
    first = ns.add_document(kind, "10.00")
    second = ns.add_document(kind, "10.00", **{PARTY_KW[kind]: first["entity"]["id"]})
    req = request(kind, [(first, "10.00"), (second, "10.01")], "cx-over-ns")
    [result] = adapter.push_payments([req], "cx-over-ns-v1")
    assert type(result.error) is AmountExceedsBalance
    assert ours(ns, kind, "cx-over-ns") == []
    assert (ns.open_amount(first), ns.open_amount(second)) == (Decimal("10.00"),) * 2


# -- unapplied remainder ----------------------------------------------------------------------
def test_a_payment_above_what_it_applies_keeps_the_rest_unapplied(ns: NS, kind: str) -> None:
    recorder = Recorder()
    adapter = ns.adapter(ns.settings(bill_payment_account_code=None), transport=recorder)
    assert adapter.capabilities.unapplied_credit is True
    doc = ns.add_document(kind, "100.00")
    req = request(kind, [(doc, "100.00")], "cx-unapplied-ns", unapplied="12.50")

    [result] = adapter.push_payments([req], "cx-unapplied-ns-v1")

    assert result.payment is not None
    import json

    [post] = [r for r in recorder.sent if r.method == "POST" and "/record/v1/" in r.url.path]
    body = json.loads(post.content)
    assert body["payment" if kind == "invoice" else "total"] == 112.5
    [payment] = ours(ns, kind, "cx-unapplied-ns")
    assert payment["total"] == Decimal("112.50")
    assert payment["unapplied"] == Decimal("12.50")
    assert ns.open_amount(doc) == 0
    assert result.payment.amount == Decimal("100.00")
    assert result.payment.record["total_amount"] == Decimal("112.50")


# -- find_payments ----------------------------------------------------------------------------
def test_find_payments_asks_one_query_per_payment_type(ns: NS) -> None:
    recorder = Recorder()
    adapter = ns.adapter(ns.settings(bill_payment_account_code=None), transport=recorder)
    a = ns.add_document("invoice", "30.00")
    b = ns.add_document("invoice", "30.00", customer_id=a["entity"]["id"])
    c = ns.add_document("invoice", "30.00", customer_id=a["entity"]["id"])
    bill = ns.add_document("bill", "30.00")
    single = request("invoice", [(a, "30.00")], "cx-f-1", intent="i-single")
    multi = request("invoice", [(b, "10.00"), (c, "20.00")], "cx-f-2", intent="i-multi")
    on_bill = request("bill", [(bill, "5.00")], "cx-f-3", intent="i-bill")
    none = request("invoice", [(b, "1.00")], "cx-f-4", intent="i-none")
    pushed = {}
    for r in (single, multi, on_bill):
        [result] = adapter.push_payments([r], r.provider_key)
        pushed[r.intent_id] = result.payment
    recorder.sent.clear()

    found = adapter.find_payments([single, multi, on_bill, none])

    statements = recorder.suiteql()
    assert len(statements) == 2
    assert "t.type = 'CustPymt'" in statements[0] and "t.type = 'VendPymt'" in statements[1]
    assert f"l.previousdoc IN ({a['id']}, {b['id']}, {c['id']})" in statements[0]
    assert set(found) == {"i-single", "i-multi", "i-bill", "i-none"}
    assert found["i-none"] == []
    for intent in ("i-single", "i-multi", "i-bill"):
        [payment] = found[intent]
        assert payment.remote_id == pushed[intent].remote_id  # type: ignore[union-attr]
    assert found["i-multi"][0].amount == Decimal("30.00")
    assert found["i-multi"][0].allocations == (
        PaymentLine(b["id"], Decimal("10.00")),
        PaymentLine(c["id"], Decimal("20.00")),
    )
    assert found["i-bill"][0].amount == Decimal("5.00")


def test_concurrent_reads_sign_each_request_with_token_based_auth(ns: NS) -> None:
    recorder = Recorder(meet=2)
    adapter = ns.adapter(ns.settings("tba"), transport=recorder)
    docs = [ns.add_document("invoice", "1.00") for _ in range(12)]
    batched = adapter.get_documents([d["id"] for d in docs])
    assert list(batched) == [d["id"] for d in docs]
    assert recorder.most >= 2
    signatures = [r.headers["Authorization"] for r in recorder.sent if "/record/v1/" in r.url.path]
    assert len(set(signatures)) == 12 and all(s.startswith("OAuth ") for s in signatures)
    assert adapter.get_documents([]) == {} and adapter.find_payments([]) == {}


def test_a_mapping_that_writes_one_apply_line_refuses_several_documents(ns: NS) -> None:
    one_line = "[{doc: {id: document_remote_id}, apply: `true`, amount: amount}]"
    mapping = load_netsuite_mapping(
        overrides={"write": {"customer_payment": {"apply.items": one_line}}}
    )
    settings = ns.settings(bill_payment_account_code=None)
    adapter = NetSuiteAdapter(settings.connections[0], ns.store(), clock=ns.clock, mapping=mapping)
    ns.closers.append(adapter)
    first = ns.add_document("invoice", "10.00")
    second = ns.add_document("invoice", "10.00", customer_id=first["entity"]["id"])
    req = request("invoice", [(first, "10.00"), (second, "10.00")], "cx-one-apply-line")

    [result] = adapter.push_payments([req], "cx-one-apply-line-v1")

    assert isinstance(result.error, ValidationRejected)
    assert result.error.provider_code == "mapping"
    assert ours(ns, "invoice", "cx-one-apply-line") == []
    assert ns.open_amount(first) == Decimal("10.00")
