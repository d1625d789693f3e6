"""The push engine's multi-document payments and unapplied remainders, on QuickBooks.

Asserted against the QuickBooks sandbox ledger's own records.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import select

from connector.state import PaymentIntent
from connector.sync.push import AllocationLine, AllocationRequest, IntakeError
from tests.adapters.quickbooks.conftest import Qbo


def balance(qbo: Qbo, kind: str, doc: dict[str, Any]) -> Decimal:
    return Decimal(str(qbo.document(kind, doc["Id"])["Balance"]))


def with_overpayment(qbo: Qbo, policy: str) -> None:
    conns = [c.model_copy(update={"overpayment": policy}) for c in qbo.settings.connections]
    qbo.settings = qbo.settings.model_copy(update={"connections": conns})


def test_one_payment_over_two_invoices_of_one_customer(qbo: Qbo) -> None:
    first = qbo.new_document("invoice", "100.00")
    second = qbo.new_document("invoice", "80.00", customer_id=first["CustomerRef"]["value"])
    engine = qbo.push_engine()
    intent = engine.intake(
        AllocationRequest(
            qbo.conn_id,
            "",
            "",
            idempotency_key="multi-1",
            lines=(AllocationLine(first["Id"], "30.00"), AllocationLine(second["Id"], "80.00")),
        )
    ).intent
    assert intent.amount == Decimal("110.00")
    final = qbo.drive(engine, intent)
    assert final.state == "applied"
    [payment] = qbo.live_ours("invoice", final)
    assert Decimal(str(payment["TotalAmt"])) == Decimal("110.00")
    linked = sorted(
        (line["LinkedTxn"][0]["TxnId"], Decimal(str(line["Amount"]))) for line in payment["Line"]
    )
    assert linked == sorted([(first["Id"], Decimal("30.00")), (second["Id"], Decimal("80.00"))])
    assert balance(qbo, "invoice", first) == Decimal("70.00")
    assert balance(qbo, "invoice", second) == 0
    # Sent again under the same key: nothing new.
    again = engine.intake(
        AllocationRequest(
            qbo.conn_id,
            "",
            "",
            idempotency_key="multi-1",
            lines=(AllocationLine(first["Id"], "30.00"), AllocationLine(second["Id"], "80.00")),
        )
    )
    assert not again.created and len(qbo.live_ours("invoice", final)) == 1


def test_one_bill_payment_over_two_bills_of_one_vendor(qbo: Qbo) -> None:
    first = qbo.new_document("bill", "60.00")
    second = qbo.new_document("bill", "40.00", vendor_id=first["VendorRef"]["value"])
    engine = qbo.push_engine()
    intent = engine.intake(
        AllocationRequest(
            qbo.conn_id,
            "",
            "",
            document_type="bill",
            idempotency_key="multi-ap",
            lines=(AllocationLine(first["Id"], "60.00"), AllocationLine(second["Id"], "10.00")),
        )
    ).intent
    final = qbo.drive(engine, intent)
    assert final.state == "applied"
    [payment] = qbo.live_ours("bill", final)
    assert Decimal(str(payment["TotalAmt"])) == Decimal("70.00")
    assert balance(qbo, "bill", first) == 0 and balance(qbo, "bill", second) == Decimal("30.00")


def test_documents_of_two_customers_are_refused_and_nothing_is_stored(qbo: Qbo) -> None:
    first = qbo.new_document("invoice", "100.00")
    others = [
        inv
        for inv in qbo.ledger.invoices(qbo.realm)
        if inv["CustomerRef"]["value"] != first["CustomerRef"]["value"]
        and Decimal(str(inv["Balance"])) > 0
    ]
    with pytest.raises(IntakeError) as err:
        qbo.push_engine().intake(
            AllocationRequest(
                qbo.conn_id,
                "",
                "",
                lines=(AllocationLine(first["Id"], "10.00"), AllocationLine(others[0]["Id"], "1")),
            )
        )
    assert err.value.code == "mixed_contacts"
    with qbo.store.session() as s:
        assert s.exec(select(PaymentIntent)).all() == []


def test_a_line_paid_by_someone_else_after_intake_makes_the_payment_a_conflict(qbo: Qbo) -> None:
    first = qbo.new_document("invoice", "100.00")
    second = qbo.new_document("invoice", "50.00", customer_id=first["CustomerRef"]["value"])
    engine = qbo.push_engine()
    intent = engine.intake(
        AllocationRequest(
            qbo.conn_id,
            "",
            "",
            lines=(AllocationLine(first["Id"], "40.00"), AllocationLine(second["Id"], "50.00")),
        )
    ).intent
    qbo.pay_elsewhere("invoice", second["Id"], "50.00")
    final = qbo.drive(engine, intent)
    assert final.state == "conflict" and final.reason_code == "partly_settled"
    assert not qbo.live_ours("invoice", final)
    assert balance(qbo, "invoice", first) == Decimal("100.00")


def test_leave_unapplied_sends_the_whole_amount_and_leaves_the_rest_as_credit(qbo: Qbo) -> None:
    with_overpayment(qbo, "leave_unapplied")
    doc = qbo.new_document("invoice", "100.00")
    engine = qbo.push_engine()
    intent = qbo.intake(engine, "invoice", doc, "150.00", "over-1")
    final = qbo.drive(engine, intent)
    assert final.state == "applied" and final.reason_code == "left_unapplied"
    [payment] = qbo.live_ours("invoice", final)
    assert Decimal(str(payment["TotalAmt"])) == Decimal("150.00")
    assert Decimal(str(payment["UnappliedAmt"])) == Decimal("50.00")
    assert balance(qbo, "invoice", doc) == 0


def test_apply_up_to_balance_on_a_bill(qbo: Qbo) -> None:
    with_overpayment(qbo, "apply_up_to_balance")
    doc = qbo.new_document("bill", "40.00")
    engine = qbo.push_engine()
    intent = qbo.intake(engine, "bill", doc, "55.00", "over-ap")
    final = qbo.drive(engine, intent)
    assert final.state == "applied" and final.send_amount == Decimal("40.00")
    [payment] = qbo.live_ours("bill", final)
    assert Decimal(str(payment["TotalAmt"])) == Decimal("40.00")
    assert balance(qbo, "bill", doc) == 0
