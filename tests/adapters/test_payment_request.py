"""PaymentRequest with several documents and an unapplied remainder: its rules."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from connector.adapters.base import Capabilities, PaymentLine, PaymentRequest
from connector.adapters.netsuite import NetSuiteAdapter
from connector.adapters.quickbooks import QuickBooksAdapter
from connector.adapters.xero import XeroAdapter


def make(**kw: Any) -> PaymentRequest:
    values: dict[str, Any] = {
        "intent_id": "i-1",
        "document_remote_id": "d-1",
        "amount": Decimal("30.00"),
        "currency": "USD",
        "transaction_date": date(2024, 5, 1),
        "reference": "cx-1",
    }
    values.update(kw)
    return PaymentRequest(**values)


def test_a_single_document_request_is_one_line() -> None:
    request = make()
    assert request.applied_lines == (PaymentLine("d-1", Decimal("30.00")),)
    assert request.document_ids == ("d-1",)
    assert not request.multi
    assert request.total == Decimal("30.00")
    data = request.as_mapping_input()
    assert data["lines"] == [{"document_remote_id": "d-1", "amount": Decimal("30.00")}]
    assert data["total_amount"] == Decimal("30.00") and data["unapplied"] == 0


def test_lines_name_the_documents_and_add_up_to_the_amount() -> None:
    lines = [PaymentLine("d-1", Decimal("10.00")), PaymentLine("d-2", Decimal("20.00"))]
    request = make(document_remote_id="", lines=lines, unapplied=Decimal("5.00"))
    assert request.document_remote_id == "d-1"  # filled in from the first line
    assert request.lines == tuple(lines)  # a list becomes a tuple: the request stays hashable
    assert request.multi and request.document_ids == ("d-1", "d-2")
    assert request.total == Decimal("35.00")
    assert request.as_mapping_input()["total_amount"] == Decimal("35.00")
    assert request.as_mapping_input()["lines"][1] == {
        "document_remote_id": "d-2",
        "amount": Decimal("20.00"),
    }


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"lines": (PaymentLine("d-1", Decimal("10")), PaymentLine("d-2", Decimal("10")))}, "add up"),
        ({"lines": (PaymentLine("d-1", Decimal("30")), PaymentLine("d-1", Decimal("0")))}, "twice"),
        ({"lines": (PaymentLine("d-1", Decimal("40")), PaymentLine("d-2", Decimal("-10")))}, "positive"),
        ({"lines": (PaymentLine("d-2", Decimal("15")), PaymentLine("d-1", Decimal("15")))}, "first line"),
        ({"unapplied": Decimal("-1")}, "negative"),
    ],
)  # fmt: skip
def test_inconsistent_requests_are_refused(kw: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        make(**kw)


def test_each_provider_says_whether_it_keeps_unapplied_credit() -> None:
    assert Capabilities(1, 1, 1, "", None, 1).unapplied_credit is False
    assert XeroAdapter.capabilities.unapplied_credit is False
    assert QuickBooksAdapter.capabilities.unapplied_credit is True
    assert NetSuiteAdapter.capabilities.unapplied_credit is True
