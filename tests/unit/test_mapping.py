from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from connector.adapters.xero import MODELS, WRITE_FIELDS
from connector.jsonutil import loads
from connector.mapping import MappingError, load_mapping, parse_mapping, parse_ms_date

SAMPLES = Path(__file__).parents[1] / "fixtures" / "shared" / "samples" / "xero"


def test_ms_dates() -> None:
    assert parse_ms_date("/Date(1552348800000+0000)/") == datetime(2019, 3, 12, tzinfo=UTC)
    assert parse_ms_date("/Date(1451988985943+1300)/").tzinfo is UTC


def test_xero_mapping_reads_the_spec_example_invoice() -> None:
    mapping = load_mapping("xero", models=MODELS, write_fields=WRITE_FIELDS)
    doc = loads((SAMPLES / "spec_examples_payments_invoices.json").read_text())
    raw = doc["GET /Invoices/{InvoiceID} response"]["Invoices"][0]
    rec = mapping.reader("invoice").read(raw)
    assert rec["remote_id"] == "a03ffcd2-5d91-4c7e-b483-318584e9e439"
    assert rec["status"] == "paid"
    assert rec["total"] == Decimal("148062.76")
    assert rec["balance"] == Decimal("0.0")
    assert rec["row_version"] == raw["UpdatedDateUTC"]
    assert rec["remote_updated_at"] == parse_ms_date(raw["UpdatedDateUTC"])


def test_xero_mapping_writes_a_payment() -> None:
    mapping = load_mapping("xero", models=MODELS, write_fields=WRITE_FIELDS)
    payload = mapping.write_payment(
        {
            "document_remote_id": "inv-1",
            "account_code": "090",
            "transaction_date": date(2026, 1, 2).isoformat(),
            "amount": Decimal("12.30"),
            "reference": "cx-1",
            "currency_rate": None,
        }
    )
    assert payload == {
        "Invoice": {"InvoiceID": "inv-1"},
        "Account": {"Code": "090"},
        "Date": "2026-01-02",
        "Amount": Decimal("12.30"),
        "Reference": "cx-1",
    }


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"read": {"invoice": {"remote_id": "InvoiceID"}}}, "provider: missing"),
        (
            {"provider": "x", "read": {"invoice": {"nope": "InvoiceID"}}},
            "read.invoice.nope: invoice has no field",
        ),
        ({"provider": "x", "read": {"invoice": {"total": "Total[["}}}, "bad JMESPath"),
        (
            {"provider": "x", "read": {"invoice": {"total": {"expr": "Total", "type": "float"}}}},
            "unknown type",
        ),
        (
            {"provider": "x", "read": {"invoice": {"status": {"expr": "S", "enum": "missing"}}}},
            "not defined under [enums]",
        ),
        ({"provider": "x", "read": {"widget": {}}}, "unknown entity"),
        (
            {"provider": "x", "write": {"payment": {"Amount": "amount_typo"}}},
            "unknown request field",
        ),
        (
            {"provider": "x", "read": {"invoice": {"total": {"expr": "Total", "eval": "1"}}}},
            "unknown option",
        ),
    ],
)
def test_bad_mappings_stop_with_file_key_problem(doc: dict[str, object], fragment: str) -> None:
    with pytest.raises(MappingError) as info:
        parse_mapping(doc, source="m.toml", models=MODELS, write_fields=WRITE_FIELDS)
    assert "m.toml" in str(info.value)
    assert fragment in str(info.value)
