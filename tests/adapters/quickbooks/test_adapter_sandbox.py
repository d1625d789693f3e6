"""The adapter's own contract against the QuickBooks sandbox ledger, over real HTTP."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from connector.adapters.base import PaymentRequest
from connector.adapters.quickbooks import QuickBooksAdapter, qbo_request_id
from connector.errors import (
    AmountExceedsBalance,
    AuthRevoked,
    DocumentNotFound,
    RateLimited,
    StaleRowVersion,
    ValidationRejected,
)
from tests.adapters.quickbooks.conftest import Qbo


def request_for(
    qbo: Qbo,
    kind: str,
    doc: dict[str, Any],
    amount: str,
    reference: str,
    *,
    intent: str = "i-1",
    key: str = "",
) -> PaymentRequest:
    party = doc["VendorRef" if kind == "bill" else "CustomerRef"]["value"]
    return PaymentRequest(
        intent_id=intent,
        document_remote_id=doc["Id"],
        amount=Decimal(amount),
        currency="USD",
        transaction_date=date(2024, 5, 1),
        reference=reference,
        account_code=qbo.settings.connections[0].payment_account_code,
        document_type=kind,
        contact_remote_id=party,
        provider_key=key,
    )


@pytest.fixture
def adapter(qbo: Qbo) -> QuickBooksAdapter:
    return qbo.adapter()


# -- reads ---------------------------------------------------------------------------------
def test_get_document_by_id_number_and_state(qbo: Qbo, adapter: QuickBooksAdapter) -> None:
    inv = qbo.new_document("invoice", "120.00", doc_number="7001")
    by_id = adapter.get_document(inv["Id"])
    # A numeric number that is no Id: tried as an Id (610), then as a DocNumber.
    by_number = adapter.get_document("7001")
    assert by_id.remote_id == by_number.remote_id == inv["Id"]
    assert by_id.number == "7001"
    assert (by_id.status, by_id.provider_status, by_id.payable) == ("authorised", "Open", True)
    assert by_id.total == by_id.balance == Decimal("120.00")
    assert by_id.row_version == inv["SyncToken"]
    assert by_id.contact_remote_id == inv["CustomerRef"]["value"]

    qbo.pay_elsewhere("invoice", inv["Id"], "20.00")
    partial = adapter.get_document(inv["Id"])
    assert (partial.status, partial.provider_status) == ("authorised", "Partially paid")
    assert partial.balance == Decimal("100.00")
    assert partial.row_version != by_id.row_version

    qbo.pay_elsewhere("invoice", inv["Id"], "100.00")
    assert adapter.get_document(inv["Id"]).status == "paid"

    other = qbo.new_document("invoice", "10.00")
    qbo.ledger.void_invoice(qbo.realm, other["Id"])
    voided = adapter.get_document(other["Id"])
    assert (voided.status, voided.provider_status, voided.payable) == ("void", "Voided", False)

    bill = qbo.new_document("bill", "33.00")
    by_bill_number = adapter.get_document(bill["DocNumber"], "bill")
    assert by_bill_number.remote_id == bill["Id"]
    assert by_bill_number.kind == "bill"
    assert by_bill_number.contact_remote_id == bill["VendorRef"]["value"]

    qbo.delete("Invoice", other["Id"])
    with pytest.raises(DocumentNotFound):
        adapter.get_document(other["Id"])
    with pytest.raises(DocumentNotFound):
        adapter.get_document(inv["Id"], "bill")  # an invoice's Id is no bill


def test_changes_reports_deleted_documents(qbo: Qbo, adapter: QuickBooksAdapter) -> None:
    since = qbo.ledger.clock.now() - timedelta(seconds=1)
    kept = qbo.new_document("invoice", "10.00")
    gone = qbo.new_document("invoice", "11.00")
    qbo.delete("Invoice", gone["Id"])
    changes = adapter.changes(["invoice", "payment"], since)
    by_id = {r["remote_id"]: r for r in changes["invoice"]}
    assert by_id[kept["Id"]]["status"] == "authorised"
    assert by_id[kept["Id"]]["total"] == Decimal("10.00")
    assert by_id[gone["Id"]]["status"] == "deleted"
    assert by_id[gone["Id"]]["deleted"] is True
    assert changes["payment"] == []


# -- writes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["delete", "void"])
@pytest.mark.parametrize("kind", ["invoice", "bill"])
def test_replayed_requestid_of_a_dead_payment_is_stale(
    qbo: Qbo, adapter: QuickBooksAdapter, kind: str, how: str
) -> None:
    doc = qbo.new_document(kind, "50.00")
    request = request_for(qbo, kind, doc, "50.00", "cx-replay-1", key="k-replay-1")
    [first] = adapter.push_payments([request], "k-replay-1")
    assert first.payment is not None
    entity = "BillPayment" if kind == "bill" else "Payment"
    if how == "delete":
        qbo.delete(entity, first.payment.remote_id)
    else:
        qbo.void_payment(entity, first.payment.remote_id)
    count = len(qbo.payments(kind, include_deleted=True))

    [again] = adapter.push_payments([request], "k-replay-1")

    assert again.payment is None
    assert isinstance(again.error, StaleRowVersion)
    assert again.error.provider_code == "replayed_dead_payment"
    assert first.payment.remote_id in again.error.message
    assert len(qbo.payments(kind, include_deleted=True)) == count  # a replay: nothing new
    found = adapter.find_payment(request)
    if how == "void":  # still in queries, with no lines left: ours, and dead
        assert [(p.remote_id, p.status) for p in found] == [(first.payment.remote_id, "deleted")]
    else:  # deleted payments vanish from queries
        assert found == []


def test_find_payment_keeps_ours_on_the_document_only(qbo: Qbo, adapter: QuickBooksAdapter) -> None:
    inv = qbo.new_document("invoice", "90.00")
    other = qbo.new_document("invoice", "90.00", customer_id=inv["CustomerRef"]["value"])
    mine = request_for(qbo, "invoice", inv, "30.00", "cx-find-1", key="k-find-1")
    [ok] = adapter.push_payments([mine], "k-find-1")
    # The same reference on another document of the same customer, and on ours
    # a reference that merely starts with ours.
    adapter.push_payments(
        [request_for(qbo, "invoice", other, "5.00", "cx-find-1", key="k-find-2")], "k-find-2"
    )
    adapter.push_payments(
        [request_for(qbo, "invoice", inv, "5.00", "cx-find-10", key="k-find-3")], "k-find-3"
    )
    found = adapter.find_payment(mine)
    assert ok.payment is not None
    assert [(p.remote_id, p.status, p.amount) for p in found] == [
        (ok.payment.remote_id, "authorised", Decimal("30.00"))
    ]
    assert found[0].reference == "cx-find-1"
    assert found[0].document_remote_id == inv["Id"]
    assert found[0].record["type"] == "accounts_receivable"


def test_batch_push_has_per_item_results_and_replays_as_one(
    qbo: Qbo, adapter: QuickBooksAdapter
) -> None:
    inv = qbo.new_document("invoice", "40.00")
    bill = qbo.new_document("bill", "60.00")
    small = qbo.new_document("invoice", "10.00")
    batch = [
        request_for(qbo, "invoice", inv, "40.00", "cx-b-1", intent="i-1"),
        request_for(qbo, "bill", bill, "25.00", "cx-b-2", intent="i-2"),
        request_for(qbo, "invoice", small, "11.00", "cx-b-3", intent="i-3"),
    ]
    key = "cx-" + "0" * 36 + "-v1"  # 42 characters: above the batch's 36
    results = adapter.push_payments(batch, key)
    assert [r.intent_id for r in results] == ["i-1", "i-2", "i-3"]
    paid_invoice, paid_bill, too_much = results
    assert paid_invoice.payment is not None and paid_bill.payment is not None
    assert paid_bill.payment.record["type"] == "accounts_payable"
    assert isinstance(too_much.error, AmountExceedsBalance)
    assert too_much.error.provider_code == "6000"
    assert Decimal(str(qbo.document("bill", bill["Id"])["Balance"])) == Decimal("35.00")

    before = len(qbo.payments("invoice")) + len(qbo.payments("bill"))
    again = adapter.push_payments(batch, key)  # same key: QuickBooks replays the batch
    assert [r.payment.remote_id for r in again if r.payment] == [
        paid_invoice.payment.remote_id,
        paid_bill.payment.remote_id,
    ]
    assert len(qbo.payments("invoice")) + len(qbo.payments("bill")) == before


def test_long_keys_become_a_stable_hash_the_ledger_accepts(
    qbo: Qbo, adapter: QuickBooksAdapter
) -> None:
    key = "prefix1234-" + "7" * 36 + "-v12"  # 51 characters
    rid = qbo_request_id(key)
    assert len(rid) == 50 and rid == qbo_request_id(key) and rid != key
    assert qbo_request_id("short-key") == "short-key"
    assert len(qbo_request_id(key, 36)) == 36
    doc = qbo.new_document("invoice", "12.00")
    request = request_for(qbo, "invoice", doc, "12.00", "cx-long-key", key=key)
    [first] = adapter.push_payments([request], key)
    [second] = adapter.push_payments([request], key)
    assert first.payment is not None and second.payment is not None
    assert first.payment.remote_id == second.payment.remote_id  # the requestid worked


def test_business_rule_refusals_are_item_results(qbo: Qbo, adapter: QuickBooksAdapter) -> None:
    doc = qbo.new_document("bill", "20.00")
    [result] = adapter.push_payments([request_for(qbo, "bill", doc, "20.01", "cx-over")], "k-over")
    assert isinstance(result.error, AmountExceedsBalance)
    assert result.status_code == 400
    assert "exceeds its open balance" in (result.error.provider_message or "")
    assert [p for p in qbo.payments("bill", include_deleted=True) if "cx-over" in str(p)] == []
    assert Decimal(str(qbo.document("bill", doc["Id"])["Balance"])) == Decimal("20.00")


def test_refusals_before_processing_are_raised(qbo: Qbo, adapter: QuickBooksAdapter) -> None:
    doc = qbo.new_document("invoice", "20.00")
    request = request_for(qbo, "invoice", doc, "20.00", "cx-refused")
    qbo.faults.update({"rate_limit_next": 1})
    with pytest.raises(RateLimited) as limited:
        adapter.push_payments([request], "k-refused")
    assert limited.value.retry_after == 60
    assert Decimal(str(qbo.document("invoice", doc["Id"])["Balance"])) == Decimal("20.00")
    qbo.clock.advance(61)  # the realm's Retry-After is over (our limiter keeps to it)

    with pytest.raises(ValidationRejected) as bad_query:
        adapter._query("SELECT * FROM Invoice WHERE Id = '1' OR Id = '2'")
    assert bad_query.value.provider_code == "4001"

    qbo.ledger.revoke_grant(qbo.realm)
    with pytest.raises(AuthRevoked):
        adapter.get_document(doc["Id"])


def test_list_changed_merges_payments_and_bill_payments(
    qbo: Qbo, adapter: QuickBooksAdapter
) -> None:
    since = datetime.now(UTC) - timedelta(days=40)
    page = adapter.list_changed("payment", since, page=1, page_size=2)
    types = {r["type"] for r in page.records}
    assert types == {"accounts_receivable", "accounts_payable"}
    assert page.has_more is True
    # The cut-off is the earlier of the two full streams' last change.
    last = {t: max(r["remote_updated_at"] for r in page.records if r["type"] == t) for t in types}
    assert page.max_updated_at == min(last.values())
    for record in page.records:
        assert record["allocations"], record
        assert all(a["type"] in {"invoice", "bill"} for a in record["allocations"])
