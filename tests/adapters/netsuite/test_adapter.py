"""The adapter's own contract against the sandbox ledger: reads, lookups, write errors."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connector import jsonutil
from connector.adapters.base import PaymentRequest
from connector.adapters.netsuite import NetSuiteAdapter
from connector.errors import (
    AmountExceedsBalance,
    DocumentNotFound,
    DocumentNotPayable,
    ValidationRejected,
)
from tests.adapters.netsuite.conftest import NS


def _request(
    doc: dict[str, Any],
    kind: str,
    amount: str,
    *,
    reference: str = "cx-ref-0001",
    key: str = "cx-0001-v1",
    account: str = "1",
    doc_id: str | None = None,
) -> PaymentRequest:
    return PaymentRequest(
        intent_id="intent-1",
        document_remote_id=doc_id or doc["id"],
        amount=Decimal(amount),
        currency="USD",
        transaction_date=date(2025, 5, 27),
        reference=reference,
        account_code=account,
        document_type=kind,
        contact_remote_id=doc["entity"]["id"],
        provider_key=key,
    )


# -- get_document ------------------------------------------------------------------------
def test_get_document_by_id_and_by_number(ns: NS) -> None:
    adapter = ns.adapter()
    inv = ns.add_document("invoice", "123.45", amount_remaining=Decimal("100.00"))

    by_id = adapter.get_document(inv["id"])
    # Invoice numbers are numeric too: "1013" is no internal id, so it is a number.
    by_number = adapter.get_document(inv["tranId"])
    by_transaction_number = adapter.get_document(f"INV{inv['tranId']}")

    for snap in (by_id, by_number, by_transaction_number):
        assert snap.remote_id == inv["id"]
        assert snap.number == inv["tranId"]
        assert snap.kind == "invoice"
        assert snap.status == "authorised"
        assert snap.provider_status == "Open"
        assert snap.payable
        assert snap.currency == "USD"
        assert snap.total == Decimal("123.45")
        assert snap.balance == Decimal("100.00")
        assert snap.row_version == inv["lastModifiedDate"]
        assert snap.contact_remote_id == inv["entity"]["id"]
        assert snap.record["customer_name"] == inv["entity"]["refName"]


def test_get_bill_reads_the_open_amount_from_suiteql(ns: NS) -> None:
    adapter = ns.adapter()
    bill = ns.add_document("bill", "500.00", amount_remaining=Decimal("123.40"))
    assert "amountRemaining" not in bill  # REST does not show it for bills

    snap = adapter.get_document(bill["tranId"], "bill")

    assert snap.remote_id == bill["id"]
    assert snap.kind == "bill"
    assert snap.total == Decimal("500.00")  # positive, though SuiteQL signs bills negative
    assert snap.balance == Decimal("123.40") == ns.open_amount(bill)
    assert snap.record["supplier_id"] == bill["entity"]["id"]


def test_get_document_statuses_and_currency(ns: NS) -> None:
    adapter = ns.adapter()
    pending = ns.add_document("invoice", "10.00", status="D")
    paid = ns.add_document("invoice", "10.00", amount_remaining=Decimal("0"))
    euro = ns.add_document("invoice", "10.00", currency="EUR")

    pending_snap = adapter.get_document(pending["id"])
    assert (pending_snap.status, pending_snap.provider_status) == ("submitted", "Pending Approval")
    assert not pending_snap.payable
    paid_snap = adapter.get_document(paid["id"])
    assert (paid_snap.status, paid_snap.balance) == ("paid", Decimal("0.00"))
    assert adapter.get_document(euro["id"]).currency == "EUR"


@pytest.mark.parametrize("ref", ["99999999", "INV-NOPE", "1'; DROP"])
def test_get_document_unknown_is_not_found(ns: NS, ref: str) -> None:
    with pytest.raises(DocumentNotFound, match="no invoice"):
        ns.adapter().get_document(ref)


def test_get_document_of_the_wrong_kind_is_not_found(ns: NS) -> None:
    bill = ns.add_document("bill")
    with pytest.raises(DocumentNotFound):
        ns.adapter().get_document(bill["id"], "invoice")


# -- push_payments: per-item refusals -------------------------------------------------------
def test_push_refusals_are_per_item_errors(ns: NS, kind: str) -> None:
    adapter = ns.adapter(ns.settings(bill_payment_account_code=None))
    doc = ns.add_document(kind, "50.00")
    paid = ns.add_document(kind, "50.00", amount_remaining=Decimal("0"))
    before = len(ns.payments(kind))

    [too_much] = adapter.push_payments([_request(doc, kind, "50.01")], "k")
    [bad_account] = adapter.push_payments([_request(doc, kind, "5.00", account="6")], "k")
    [not_open] = adapter.push_payments([_request(paid, kind, "5.00")], "k")
    [gone] = adapter.push_payments([_request(doc, kind, "5.00", doc_id="77777777")], "k")

    assert type(too_much.error) is AmountExceedsBalance
    assert too_much.error.provider_code == "USER_ERROR"
    assert too_much.status_code == 400
    assert type(bad_account.error) is ValidationRejected
    assert bad_account.error.provider_code == "INVALID_CONTENT"
    # NetSuite says "Invalid Field Value … doc" for both; a re-read tells them apart.
    assert type(not_open.error) is DocumentNotPayable
    assert type(gone.error) is DocumentNotFound
    assert all(r.payment is None for r in (too_much, bad_account, not_open, gone))
    assert len(ns.payments(kind)) == before


def test_push_takes_one_payment_per_request(ns: NS) -> None:
    doc = ns.add_document("invoice")
    request = _request(doc, "invoice", "1.00")
    with pytest.raises(ValueError, match="1 payment per request"):
        ns.adapter().push_payments([request, request], "k")
    assert ns.payments_on("invoice", doc) == []


def test_bill_payment_account_code_wins_for_bills(ns: NS) -> None:
    settings = ns.settings(bill_payment_account_code="2")
    adapter = ns.adapter(settings)
    bill = ns.add_document("bill", "10.00")
    [result] = adapter.push_payments([_request(bill, "bill", "10.00", account="1")], "k")
    assert result.payment is not None
    [payment] = ns.payments_on("bill", bill)
    assert payment["account"]["id"] == "2"


# -- idempotency: the externalId -------------------------------------------------------------
def test_duplicate_external_id_is_adopted_not_paid_twice(ns: NS, kind: str) -> None:
    adapter = ns.adapter()
    doc = ns.add_document(kind, "80.00")
    request = _request(doc, kind, "30.00", key="cx-dup-v1")

    [first] = adapter.push_payments([request], request.provider_key)
    [second] = adapter.push_payments([request], request.provider_key)

    assert first.payment is not None and second.payment is not None
    assert second.payment.remote_id == first.payment.remote_id
    assert second.payment.amount == Decimal("30.00")
    assert second.payment.reference == request.reference
    assert len(ns.payments_on(kind, doc)) == 1
    assert ns.open_amount(doc) == Decimal("50.00")


def test_duplicate_external_id_of_another_payment_is_rejected(ns: NS, kind: str) -> None:
    adapter = ns.adapter()
    doc = ns.add_document(kind, "80.00")
    other = ns.add_document(kind, "80.00")
    [first] = adapter.push_payments([_request(doc, kind, "30.00", key="cx-x-v1")], "k")
    assert first.payment is not None

    [clash] = adapter.push_payments([_request(other, kind, "30.00", key="cx-x-v1")], "k")

    assert clash.payment is None
    assert type(clash.error) is ValidationRejected
    assert first.payment.remote_id in clash.error.message
    assert ns.payments_on(kind, other) == []


def test_find_payment_sees_every_key_version_and_the_memo(ns: NS, kind: str) -> None:
    adapter = ns.adapter()
    doc = ns.add_document(kind, "90.00")
    other = ns.add_document(kind, "90.00")
    v1 = _request(doc, kind, "10.00", reference="cx-abc (cx-00ff)", key="cx-intent-7-v1")
    [sent] = adapter.push_payments([v1], v1.provider_key)
    assert sent.payment is not None
    adapter.push_payments([_request(other, kind, "10.00", reference=v1.reference, key="o-v1")], "o")

    # The engine moved to key version 3: the externalId changed, the memo did not.
    v3 = _request(doc, kind, "10.00", reference=v1.reference, key="cx-intent-7-v3")
    # Someone edited our memo: the externalId stem still finds it.
    v3_other_memo = _request(doc, kind, "10.00", reference="edited", key="cx-intent-7-v3")
    # Neither our key nor our memo: not ours.
    stranger = _request(doc, kind, "10.00", reference="cx-zzz", key="cx-intent-8-v1")

    for request in (v1, v3, v3_other_memo):
        [found] = adapter.find_payment(request)
        assert found.remote_id == sent.payment.remote_id
        assert found.document_remote_id == doc["id"]
        assert found.amount == Decimal("10.00")
        assert found.reference == v1.reference
        assert found.status == "authorised"
        assert found.record["type"] == (
            "accounts_receivable" if kind == "invoice" else "accounts_payable"
        )
    assert adapter.find_payment(stranger) == []


def test_find_payment_on_a_clean_document_is_empty(ns: NS) -> None:
    adapter: NetSuiteAdapter = ns.adapter()
    doc = ns.add_document("invoice")
    assert adapter.find_payment(_request(doc, "invoice", "1.00")) == []


# -- SuiteQL edges the seeded ledger is too small for ----------------------------------------
def _fake_netsuite(ns: NS, answer: Any) -> tuple[NetSuiteAdapter, list[httpx.Request]]:
    """An adapter whose SuiteQL is answered by ``answer(q, limit, offset)`` (no sandbox)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(
                200, json={"access_token": "t", "expires_in": 3600, "token_type": "bearer"}
            )
        seen.append(request)
        q = jsonutil.loads(request.content)["q"]
        limit = int(request.url.params.get("limit", "1000"))
        offset = int(request.url.params.get("offset", "0"))
        items, has_more = answer(q, limit, offset)
        return httpx.Response(200, json={"items": items, "hasMore": has_more})

    return ns.adapter(transport=httpx.MockTransport(handler)), seen


def test_contacts_beyond_one_suiteql_page_are_merged_in_change_order(ns: NS) -> None:
    customers = [
        {
            "id": str(i),
            "companyname": f"C{i}",
            "lastmodified": f"2025-05-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
        }
        for i in range(1, 1201)
    ]
    vendors = [
        {"id": str(5000 + i), "companyname": f"V{i}", "lastmodified": "2025-05-01T00:10:00Z"}
        for i in range(3)
    ]

    def answer(q: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], bool]:
        rows = customers if " FROM customer " in q else vendors
        return rows[offset : offset + limit], offset + limit < len(rows)

    adapter, seen = _fake_netsuite(ns, answer)
    page = adapter.list_changed("contact", None, page=2, page_size=600)

    offsets = [(r.url.params["limit"], r.url.params["offset"]) for r in seen]
    assert offsets == [("1000", "0"), ("1000", "1000"), ("1000", "0")]
    assert len(page.records) == 600 and page.has_more
    stamps = [r["remote_updated_at"] for r in page.records]
    assert stamps == sorted(stamps)
    # The three vendors changed at 00:10:00 sit among the customers of that minute.
    assert {r["remote_id"] for r in page.records} >= {"5000", "5001", "5002"}
    assert all(r["is_supplier"] == r["remote_id"].startswith("500") for r in page.records)


def test_an_ambiguous_bill_number_asks_for_the_internal_id(ns: NS) -> None:
    def answer(q: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], bool]:
        assert "t.tranid = 'VB-1'" in q
        return [{"id": "17"}, {"id": "42"}], False

    adapter, _ = _fake_netsuite(ns, answer)
    with pytest.raises(DocumentNotFound, match=r"2 bills are numbered 'VB-1'.*17, 42"):
        adapter.get_document("VB-1", "bill")


def test_the_registry_builds_it_once_netsuite_is_supported(
    ns: NS, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.adapters import base
    from connector.mapping import MappingError

    monkeypatch.setattr(base, "SUPPORTED_PROVIDERS", base.SUPPORTED_PROVIDERS | {"netsuite"})
    conn = ns.settings().connections[0]
    base.validate_connection_mapping(conn)
    adapter = base.build_adapter(conn, ns.store(), clock=ns.clock)
    ns.closers.append(adapter)
    assert isinstance(adapter, NetSuiteAdapter)
    doc = ns.add_document("invoice", "12.00")
    assert adapter.get_document(doc["id"]).balance == Decimal("12.00")

    bad = ns.settings(mapping={"write": {"customer_payment": {"memo": "nope"}}}).connections[0]
    with pytest.raises(MappingError, match=r"write\.customer_payment\.memo"):
        base.validate_connection_mapping(bad)
