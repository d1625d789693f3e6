"""Exactly once through the real PushEngine against the QuickBooks sandbox ledger.

Every scenario runs for AR (invoice → Payment) and AP (bill → BillPayment) and asserts
on the ledger's state: the payments that carry the intent's reference.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import col, select

from connector.state import Attempt, PaymentIntent
from connector.sync.push import SimulatedCrash
from tests.adapters.quickbooks.conftest import Qbo

KINDS = ["invoice", "bill"]
PAY_ENTITY = {"invoice": "Payment", "bill": "BillPayment"}
DOC_ENTITY = {"invoice": "Invoice", "bill": "Bill"}


def phases(qbo: Qbo, intent: PaymentIntent) -> list[str]:
    with qbo.store.session() as s:
        rows = s.exec(
            select(Attempt).where(Attempt.intent_id == intent.id).order_by(col(Attempt.id))
        ).all()
    return [a.phase for a in rows]


def amount_of(payment: dict[str, Any]) -> Decimal:
    return Decimal(str(payment["TotalAmt"]))


def linked_to(qbo: Qbo, kind: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Live payments with a line applied to the document."""
    return [
        p
        for p in qbo.payments(kind)
        if any(link["TxnId"] == doc["Id"] for ln in p["Line"] for link in ln["LinkedTxn"])
    ]


def balance_of(qbo: Qbo, kind: str, doc: dict[str, Any]) -> Decimal:
    return Decimal(str(qbo.document(kind, doc["Id"])["Balance"]))


@pytest.mark.parametrize("kind", KINDS)
def test_full_payment_settles_the_document(qbo: Qbo, kind: str) -> None:
    doc = qbo.new_document(kind, "250.00")
    engine = qbo.push_engine()
    intent = qbo.drive(engine, qbo.intake(engine, kind, doc, "250.00", "k-full"))

    assert intent.state == "applied"
    [payment] = qbo.ours(kind, intent, include_deleted=True)
    assert payment["Id"] == intent.remote_payment_id
    assert amount_of(payment) == Decimal("250.00")
    assert payment["Line"][0]["LinkedTxn"] == [{"TxnId": doc["Id"], "TxnType": DOC_ENTITY[kind]}]
    assert payment["PrivateNote"] == intent.reference
    # The reference fits 21 characters: it is also the check/reference number.
    short = "PaymentRefNum" if kind == "invoice" else "DocNumber"
    assert payment[short] == intent.reference
    if kind == "bill":
        checking = qbo.ledger.realm(qbo.realm).accounts["checking"]
        assert payment["PayType"] == "Check"
        assert payment["CheckPayment"]["BankAccountRef"]["value"] == checking
    assert balance_of(qbo, kind, doc) == 0
    assert intent.result_balance == 0
    assert intent.result_status == "Paid"


@pytest.mark.parametrize("kind", KINDS)
def test_partial_payment_lowers_the_balance(qbo: Qbo, kind: str) -> None:
    doc = qbo.new_document(kind, "100.00")
    engine = qbo.push_engine()
    intent = qbo.drive(engine, qbo.intake(engine, kind, doc, "40.01", "k-part"))

    assert intent.state == "applied"
    [payment] = qbo.ours(kind, intent)
    assert amount_of(payment) == Decimal("40.01")
    assert balance_of(qbo, kind, doc) == Decimal("59.99")
    assert intent.result_status == "Partially paid"


@pytest.mark.parametrize("kind", KINDS)
def test_paid_elsewhere_before_preflight_is_already_settled_without_a_write(
    qbo: Qbo, kind: str
) -> None:
    doc = qbo.new_document(kind, "75.00")
    engine = qbo.push_engine()
    intent = qbo.intake(engine, kind, doc, "75.00", "k-paid")
    other = qbo.pay_elsewhere(kind, doc["Id"], "75.00")
    before = len(qbo.payments(kind, include_deleted=True))

    final = qbo.drive(engine, intent)

    assert final.state == "already_settled"
    assert len(qbo.payments(kind, include_deleted=True)) == before  # nothing was written
    assert [p["Id"] for p in linked_to(qbo, kind, doc)] == [other["Id"]]
    assert "send" not in phases(qbo, final)


@pytest.mark.parametrize("kind", KINDS)
def test_paid_elsewhere_during_the_send_is_already_settled(qbo: Qbo, kind: str) -> None:
    doc = qbo.new_document(kind, "60.00")
    engine = qbo.push_engine()
    intent = qbo.intake(engine, kind, doc, "60.00", "k-race")
    qbo.faults.update({"paid_elsewhere_next": 1})  # a person pays just before our write

    final = qbo.drive(engine, intent)

    assert final.state == "already_settled"
    assert qbo.ours(kind, final, include_deleted=True) == []
    assert balance_of(qbo, kind, doc) == 0
    assert len(linked_to(qbo, kind, doc)) == 1  # only the person's payment


@pytest.mark.parametrize(
    ("kind", "how", "code"),
    [
        ("invoice", "void", "document_not_payable"),
        ("invoice", "delete", "document_not_found"),
        ("bill", "delete", "document_not_found"),  # QuickBooks cannot void a bill
    ],
)
def test_void_or_deleted_document_is_rejected(qbo: Qbo, kind: str, how: str, code: str) -> None:
    doc = qbo.new_document(kind, "90.00")
    engine = qbo.push_engine()
    intent = qbo.intake(engine, kind, doc, "90.00", "k-gone")
    if how == "void":
        qbo.ledger.void_invoice(qbo.realm, doc["Id"])
    else:
        qbo.delete(DOC_ENTITY[kind], doc["Id"])
    before = len(qbo.payments(kind, include_deleted=True))

    final = qbo.drive(engine, intent)

    assert final.state == "rejected"
    assert final.reason_code == code
    assert len(qbo.payments(kind, include_deleted=True)) == before
    assert qbo.ours(kind, final, include_deleted=True) == []


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_edit_during_the_send_still_pays_once(qbo: Qbo, kind: str) -> None:
    # A payment does not carry the document's SyncToken: a person saving the
    # document meanwhile does not make our create stale, and nothing is sent twice.
    doc = qbo.new_document(kind, "80.00")
    engine = qbo.push_engine()
    intent = qbo.intake(engine, kind, doc, "30.00", "k-edit")
    qbo.faults.update({"concurrent_edit_next": 1})

    final = qbo.drive(engine, intent)

    assert final.state == "applied"
    assert len(qbo.ours(kind, final)) == 1
    assert balance_of(qbo, kind, doc) == Decimal("50.00")
    # The edit and our payment both moved the document's row version.
    assert int(qbo.document(kind, doc["Id"])["SyncToken"]) == int(doc["SyncToken"]) + 2
    assert final.preflight_row_version == doc["SyncToken"]


@pytest.mark.parametrize("kind", KINDS)
def test_document_changed_between_preflight_and_send_is_decided_again(qbo: Qbo, kind: str) -> None:
    doc = qbo.new_document(kind, "100.00")
    engine = qbo.push_engine()
    intent = qbo.intake(engine, kind, doc, "80.00", "k-moved")

    def someone_changes_it() -> None:
        if kind == "invoice":  # the invoice is edited down to 50.00
            line = {
                "Amount": Decimal("50.00"),
                "DetailType": "SalesItemLineDetail",
                "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "TaxCodeRef": {"value": "NON"}},
            }
            qbo.ledger.edit_invoice(qbo.realm, doc["Id"], Line=[line])
        else:  # half the bill is paid by a person
            qbo.pay_elsewhere(kind, doc["Id"], "50.00")

    qbo.before_push.append(someone_changes_it)
    final = qbo.drive(engine, intent)

    # QuickBooks refused (6000, above the open balance); the engine read the
    # document again and found its balance now below the allocation.
    assert final.state == "conflict"
    assert final.reason_code == "balance_moved"
    assert qbo.ours(kind, final, include_deleted=True) == []
    assert balance_of(qbo, kind, doc) == Decimal("50.00")
    assert final.result_balance == Decimal("50.00")


@pytest.mark.parametrize("kind", KINDS)
def test_crash_before_send_then_paid_elsewhere_is_decided_from_a_fresh_read(
    qbo: Qbo, kind: str
) -> None:
    doc = qbo.new_document(kind, "40.00")
    crashing = qbo.push_engine(crash_at={"after_store"})
    intent = qbo.intake(crashing, kind, doc, "40.00", "k-crash")
    with pytest.raises(SimulatedCrash, match="after_store"):
        crashing.run_once(intent_ids=[intent.id])
    qbo.pay_elsewhere(kind, doc["Id"], "40.00")
    qbo.clock.advance(10_000)  # past the dead worker's lease

    final = qbo.drive(qbo.push_engine(), intent)

    assert final.state == "already_settled"
    assert final.key_version == 2  # the lookup found nothing: new key, fresh preflight
    assert qbo.ours(kind, final, include_deleted=True) == []


@pytest.mark.parametrize("kind", KINDS)
def test_response_dropped_after_commit_gives_one_payment(qbo: Qbo, kind: str) -> None:
    doc = qbo.new_document(kind, "80.00")
    engine = qbo.push_engine()
    intent = qbo.intake(engine, kind, doc, "80.00", "k-drop")
    qbo.faults.update({"drop_after_commit_next": 1})

    engine.run_once(intent_ids=[intent.id])
    [after_drop] = engine.intents([intent.id])
    assert after_drop.state == "unknown"
    assert len(qbo.ours(kind, intent)) == 1  # QuickBooks did commit it

    final = qbo.drive(engine, intent)

    assert final.state == "applied"
    [payment] = qbo.ours(kind, final, include_deleted=True)
    assert final.remote_payment_id == payment["Id"]
    assert balance_of(qbo, kind, doc) == 0
    assert phases(qbo, final).count("send") == 1  # adopted by the lookup


@pytest.mark.parametrize("window", [None, timedelta(hours=1)], ids=["no-key-window", "key-window"])
@pytest.mark.parametrize("kind", KINDS)
def test_ignored_requestid_and_dropped_response_still_give_one_payment(
    qbo: Qbo, kind: str, window: timedelta | None
) -> None:
    # QuickBooks forgets requestids from now on (every write is processed as new),
    # and the first answer is lost. Even with a live key window the engine looks up
    # before resending, so the lookup by reference is what prevents a duplicate.
    qbo.key_window = window
    doc = qbo.new_document(kind, "70.00")
    engine = qbo.push_engine()
    intent = qbo.intake(engine, kind, doc, "25.00", "k-ignore")
    qbo.faults.update({"drop_after_commit_next": 1, "ignore_idempotency": 1.0})

    final = qbo.drive(engine, intent)

    assert final.state == "applied"
    [payment] = qbo.ours(kind, final, include_deleted=True)
    assert payment["Id"] == final.remote_payment_id
    assert balance_of(qbo, kind, doc) == Decimal("45.00")


@pytest.mark.parametrize("window", [None, timedelta(hours=1)], ids=["no-key-window", "key-window"])
@pytest.mark.parametrize("kind", KINDS)
def test_deleted_payment_and_replayed_requestid_version_the_key(
    qbo: Qbo, kind: str, window: timedelta | None
) -> None:
    # Our payment is committed, the answer lost, then a person deletes the payment.
    # Deleted payments vanish from queries, so the lookup finds nothing. With a key
    # window the engine resends the same requestid and QuickBooks replays the dead
    # payment's answer; the adapter reads it back, reports it stale, and the engine
    # mints a new key version. Without one it mints the new version at once.
    qbo.key_window = window
    doc = qbo.new_document(kind, "64.00")
    engine = qbo.push_engine()
    intent = qbo.intake(engine, kind, doc, "64.00", "k-replay")
    qbo.faults.update({"drop_after_commit_next": 1})
    engine.run_once(intent_ids=[intent.id])
    [dead] = qbo.ours(kind, intent)
    qbo.delete(PAY_ENTITY[kind], dead["Id"])
    assert qbo.live_ours(kind, intent) == []

    final = qbo.drive(engine, intent)

    assert final.state == "applied"
    assert final.key_version == 2
    [live] = qbo.live_ours(kind, final)
    assert live["Id"] == final.remote_payment_id != dead["Id"]
    assert {p["Id"] for p in qbo.ours(kind, final, include_deleted=True)} == {
        dead["Id"],
        live["Id"],
    }
    assert balance_of(qbo, kind, doc) == 0
    sends = [a for a in phases(qbo, final) if a == "send"]
    assert len(sends) == (3 if window else 2)  # dropped, [replayed dead,] new key
    with qbo.store.session() as s:
        replays = s.exec(
            select(Attempt).where(
                Attempt.intent_id == intent.id, Attempt.provider_code == "replayed_dead_payment"
            )
        ).all()
    assert len(replays) == (1 if window else 0)


@pytest.mark.parametrize("kind", KINDS)
def test_long_reference_goes_to_private_note_only(qbo: Qbo, kind: str) -> None:
    doc = qbo.new_document(kind, "55.00")
    engine = qbo.push_engine()
    caller = "Remittance 2024-05 batch 17 for ACME Holdings"
    intent = qbo.intake(engine, kind, doc, "55.00", "k-long", reference=caller)
    qbo.faults.update({"drop_after_commit_next": 1})  # found again by the long reference

    final = qbo.drive(engine, intent)

    assert final.state == "applied"
    assert len(final.reference) > 21
    [payment] = qbo.ours(kind, final)
    assert payment["PrivateNote"] == final.reference
    assert caller in payment["PrivateNote"]
    assert ("PaymentRefNum" if kind == "invoice" else "DocNumber") not in payment
