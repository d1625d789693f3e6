"""connector.importer: files of allocations parsed and checked, nothing else touched."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from connector.importer import (
    COLUMNS,
    ParsedFile,
    RowError,
    detect_format,
    parse_bytes,
    parse_file,
    parse_text,
)
from connector.sync.push import AllocationLine, AllocationRequest

KNOWN = {"acme", "beta"}


def csv_(text: str, default_connection: str | None = None) -> ParsedFile:
    return parse_text(text, "csv", default_connection=default_connection, known_connections=KNOWN)


def jsonl(text: str) -> ParsedFile:
    return parse_text(text, "jsonl", known_connections=KNOWN)


def codes(parsed: ParsedFile) -> list[tuple[int, str]]:
    return [(e.line, e.code) for e in parsed.errors]


# -- formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "explicit", "expected"),
    [
        ("a.csv", None, "csv"),
        ("A.CSV", None, "csv"),
        ("a.jsonl", None, "jsonl"),
        ("a.ndjson", None, "jsonl"),
        ("a.txt", "csv", "csv"),
        ("a.csv", "jsonl", "jsonl"),
        ("-", "ndjson", "jsonl"),
    ],
)
def test_format_from_extension_or_flag(path: str, explicit: str | None, expected: str) -> None:
    assert detect_format(path, explicit) == expected


@pytest.mark.parametrize(("path", "explicit"), [("a.json", None), ("a", None), ("a.csv", "xml")])
def test_unknown_format_is_refused_with_the_fix(path: str, explicit: str | None) -> None:
    with pytest.raises(ValueError, match="csv") as info:
        detect_format(path, explicit)
    assert ("--format" in str(info.value)) or ("xml" in str(info.value))


# -- CSV ---------------------------------------------------------------------------------


def test_csv_rows_become_requests_with_every_column() -> None:
    parsed = csv_(
        "connection_id,document,amount,document_type,transaction_date,currency,currency_rate,"
        "account_code,reference,idempotency_key\n"
        "acme,INV-0001,49.99,,,,,,,\n"
        'beta, BILL-7 ,"1000.50",BILL,2026-11-21,eur,1.0825,090,"order 42, part 1",k-1\n'
    )
    assert parsed.ok, parsed.errors
    first, second = parsed.rows
    assert first.line == 2
    assert first.request == AllocationRequest(
        connection_id="acme", document="INV-0001", amount="49.99"
    )
    assert second.line == 3
    assert second.request == AllocationRequest(
        connection_id="beta",
        document="BILL-7",
        amount="1000.50",
        transaction_date=date(2026, 11, 21),
        account_code="090",
        reference="order 42, part 1",
        idempotency_key="k-1",
        document_type="bill",
        currency="EUR",
        currency_rate="1.0825",
    )
    # Amounts stay text: no float ever enters.
    assert isinstance(second.request.amount, str)


def test_csv_default_connection_fills_empty_cells_and_missing_column() -> None:
    parsed = csv_("document,amount\nINV-1,1.00\n", default_connection="acme")
    assert [r.request.connection_id for r in parsed.rows] == ["acme"]
    mixed = csv_(
        "connection_id,document,amount\n,INV-1,1.00\nbeta,INV-2,2.00\n", default_connection="acme"
    )
    assert [r.request.connection_id for r in mixed.rows] == ["acme", "beta"]


def test_csv_unknown_column_names_it_and_the_accepted_ones() -> None:
    parsed = csv_("connection_id,document,amount,colour\nacme,INV-1,1.00,red\n")
    assert codes(parsed) == [(1, "unknown_column")]
    message = parsed.errors[0].message
    assert "'colour'" in message
    for column in COLUMNS:
        assert column in message
    assert parsed.rows == []


def test_csv_header_problems_are_all_reported() -> None:
    parsed = csv_("Document,document,price\nINV-1,INV-1,1\n")
    assert sorted(codes(parsed)) == [
        (1, "duplicate_column"),
        (1, "missing_column"),
        (1, "unknown_column"),
    ]
    missing = next(e for e in parsed.errors if e.code == "missing_column")
    assert "'connection_id'" in missing.message and "'amount'" in missing.message
    assert "--connection" in missing.message


def test_csv_allocations_column_is_for_json_lines_only() -> None:
    parsed = csv_("connection_id,document,amount,allocations\nacme,INV-1,1,x\n")
    assert codes(parsed) == [(1, "unknown_column")]
    assert "JSON Lines only" in parsed.errors[0].message


def test_csv_every_bad_row_is_reported_with_its_file_line() -> None:
    text = (
        "connection_id,document,amount,document_type,transaction_date,currency,currency_rate\n"
        "acme,INV-1,10.00,,,,\n"  # 2 fine
        "acme,INV-2,abc,,,,\n"  # 3 not a number
        "acme,INV-3,-5,,,,\n"  # 4 negative
        "\n"  # 5 blank: skipped, still counted
        "acme,INV-4,1.234,,,USD,\n"  # 6 too precise for USD
        "acme,INV-5,10.5,,,JPY,\n"  # 7 too precise for JPY
        "acme,INV-6,1.00001,,,,\n"  # 8 too precise for any currency
        "acme,INV-7,1,credit,,,\n"  # 9 document type
        "acme,INV-8,1,,21/11/2026,,\n"  # 10 date
        "acme,INV-9,1,,20261121,,\n"  # 11 date (compact ISO refused too)
        "acme,INV-10,1,,,US,\n"  # 12 currency
        "acme,INV-11,1,,,,1.1\n"  # 13 rate without currency
        "acme,INV-12,1,,,EUR,0\n"  # 14 rate zero
        "nope,INV-13,1,,,,\n"  # 15 connection
        "acme,,1,,,,\n"  # 16 document
        "acme,INV-14,,,,,\n"  # 17 amount empty
        "acme,INV-15,1,,,\n"  # 18 too few fields
        "acme,INV-16,1,,,,,\n"  # 19 too many fields
    )
    parsed = csv_(text)
    assert parsed.rows == []
    assert codes(parsed) == [
        (3, "invalid_amount"),
        (4, "invalid_amount"),
        (6, "invalid_amount"),
        (7, "invalid_amount"),
        (8, "invalid_amount"),
        (9, "invalid_document_type"),
        (10, "invalid_date"),
        (11, "invalid_date"),
        (12, "invalid_currency"),
        (13, "invalid_currency_rate"),
        (14, "invalid_currency_rate"),
        (15, "unknown_connection"),
        (16, "missing_document"),
        (17, "invalid_amount"),
        (18, "bad_row"),
        (19, "bad_row"),
    ]
    by_line = {e.line: e.message for e in parsed.errors}
    assert "'abc' is not a number" in by_line[3]
    assert "greater than zero" in by_line[4]
    assert "more decimals than USD allows" in by_line[6]
    assert "more decimals than JPY allows" in by_line[7]
    assert "needs currency" in by_line[13]
    assert "'nope'" in by_line[15] and "acme, beta" in by_line[15]
    assert by_line[18].startswith("6 fields") and by_line[19].startswith("8 fields")
    assert str(parsed.errors[0]) == "line 3: invalid_amount: " + by_line[3]
    assert parsed.errors[0].as_dict() == {
        "line": 3,
        "code": "invalid_amount",
        "message": by_line[3],
    }


def test_csv_line_numbers_count_quoted_newlines() -> None:
    parsed = csv_(
        'connection_id,document,amount,reference\nacme,INV-1,1.00,"two\nlines"\nacme,INV-2,x,\n'
    )
    assert codes(parsed) == [(4, "invalid_amount")]


def test_csv_broken_quotes_are_a_row_error() -> None:
    parsed = csv_('connection_id,document,amount\nacme,INV-1,1.00\nacme,"INV-2,1.00\n')
    assert codes(parsed) == [(3, "invalid_csv")]


def test_csv_bom_and_crlf_are_read() -> None:
    data = "\ufeffconnection_id,document,amount\r\nacme,INV-1,1.00\r\n".encode()
    parsed = parse_bytes(data, "csv", known_connections=KNOWN)
    assert parsed.ok and parsed.rows[0].request.document == "INV-1"


def test_not_utf8_names_the_line() -> None:
    parsed = parse_bytes(b"connection_id,document,amount\nacme,INV-\xe9,1\n", "csv")
    assert codes(parsed) == [(2, "invalid_encoding")]


@pytest.mark.parametrize("text", ["", "\n\n", "connection_id,document,amount\n"])
def test_empty_file_is_an_error(text: str) -> None:
    assert [e.code for e in csv_(text).errors] == ["empty_file"]


def test_identical_rows_are_refused_unless_keyed() -> None:
    parsed = csv_(
        "connection_id,document,amount\nacme,INV-1,5.00\nacme,INV-2,5.00\nacme,INV-1,5.0\n"
    )
    assert codes(parsed) == [(4, "duplicate_row")]
    assert "line 2" in parsed.errors[0].message
    keyed = csv_(
        "connection_id,document,amount,idempotency_key\n"
        "acme,INV-1,5.00,a\nacme,INV-1,5.00,b\nbeta,INV-1,5.00,a\n"
    )
    assert keyed.ok and len(keyed.rows) == 3
    reused = csv_("connection_id,document,amount,idempotency_key\nacme,X,1,a\nacme,Y,2,a\n")
    assert codes(reused) == [(3, "duplicate_key")]


def test_same_content_gives_the_same_key_and_an_edit_a_new_one() -> None:
    text = "connection_id,document,amount,reference\nacme,INV-1,5.00,r\n"
    once = csv_(text).rows[0].request
    again = csv_(text.replace("5.00", "5.0")).rows[0].request
    edited = csv_(text.replace(",r\n", ",r2\n")).rows[0].request
    assert once.idempotency_key is None  # the engine derives it from the content
    assert once.fingerprint() == again.fingerprint()
    assert once.fingerprint() != edited.fingerprint()


def test_parse_file_reads_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("connection_id,document,amount\nacme,INV-1,1.00\n")
    parsed = parse_file(path, detect_format(path), known_connections=KNOWN)
    assert [r.request.document for r in parsed.rows] == ["INV-1"]


# -- JSON Lines --------------------------------------------------------------------------


def test_jsonl_numbers_are_read_as_decimal_from_their_literal() -> None:
    parsed = jsonl(
        '{"connection_id": "acme", "document": "INV-1", "amount": 0.1}\n'
        '{"connection_id": "acme", "document": "INV-2", "amount": "49.99", '
        '"currency": "EUR", "currency_rate": 1.0825}\n'
        '{"connection_id": "acme", "document": "INV-3", "amount": 7}\n'
    )
    assert parsed.ok, parsed.errors
    amounts = [r.request.amount for r in parsed.rows]
    assert amounts == [Decimal("0.1"), "49.99", Decimal(7)]
    assert all(not isinstance(a, float) for a in amounts)
    assert str(amounts[0]) == "0.1"  # the literal, not 0.1000000000000000055…
    assert parsed.rows[1].request.currency_rate == Decimal("1.0825")


def test_jsonl_errors_per_line() -> None:
    parsed = jsonl(
        '{"connection_id": "acme", "document": "INV-1", "amount": "1.00"}\n'  # 1 ok
        "\n"  # 2 blank
        '{"document": "INV-2", "amount": true}\n'  # 3 bool amount, no connection
        "[1, 2]\n"  # 4 not an object
        "{broken\n"  # 5 not JSON
        '{"connection_id": "acme", "document": "INV-3", "amount": NaN}\n'  # 6 NaN
        '{"connection_id": "acme", "document": 42, "amount": "1"}\n'  # 7 number as text field
        '{"connection_id": "acme", "document": "INV-4", "amount": "1", "colour": "red"}\n'  # 8
        '{"connection_id": "acme", "document": "INV-5", "amount": 1.001, "currency": "USD"}\n'
    )
    assert parsed.rows == []
    assert codes(parsed) == [
        (3, "invalid_amount"),
        (3, "missing_connection"),
        (4, "bad_row"),
        (5, "invalid_json"),
        (6, "invalid_json"),
        (7, "invalid_value"),
        (8, "unknown_key"),
        (9, "invalid_amount"),
    ]
    by_code = {e.code: e.message for e in parsed.errors}
    assert "not a boolean" in parsed.errors[0].message
    assert "'colour'" in by_code["unknown_key"] and "allocations" in by_code["unknown_key"]
    assert "JSON string" in by_code["invalid_value"]
    assert "more decimals than USD allows" in parsed.errors[-1].message


def test_jsonl_allocations_become_lines_with_their_total() -> None:
    parsed = jsonl(
        '{"connection_id": "acme", "allocations": '
        '[{"document": "INV-1", "amount": "10.00"}, {"document": "INV-2", "amount": 2.5}]}\n'
        '{"connection_id": "acme", "document": "INV-9", "amount": "20", "allocations": '
        '[{"document": "INV-9", "amount": "5"}]}\n'
    )
    assert parsed.ok, parsed.errors
    first, second = (r.request for r in parsed.rows)
    assert first.lines == (
        AllocationLine("INV-1", "10.00"),
        AllocationLine("INV-2", Decimal("2.5")),
    )
    assert first.document == "INV-1" and Decimal(first.amount) == Decimal("12.50")
    assert second.amount == "20" and second.lines == (AllocationLine("INV-9", "5"),)


@pytest.mark.parametrize(
    "allocations",
    [
        "[]",
        '"INV-1"',
        '[{"document": "INV-1"}]',
        '[{"document": "INV-1", "amount": "-1"}]',
        '[{"document": "", "amount": "1"}]',
        '[{"document": "INV-1", "amount": "1", "extra": 1}]',
    ],
)
def test_jsonl_bad_allocations_are_refused(allocations: str) -> None:
    parsed = jsonl(f'{{"connection_id": "acme", "allocations": {allocations}}}\n')
    assert codes(parsed) == [(1, "invalid_allocations")]


def test_jsonl_line_numbers_ignore_unicode_line_separators() -> None:
    parsed = jsonl(
        '{"connection_id": "acme", "document": "INV-1", "amount": "1", "reference": "a\u2028b"}\n'
        '{"connection_id": "acme", "document": "INV-2", "amount": "x"}\n'
    )
    assert codes(parsed) == [(2, "invalid_amount")]


def test_row_error_text() -> None:
    assert str(RowError(7, "invalid_amount", "bad")) == "line 7: invalid_amount: bad"
