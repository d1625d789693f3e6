"""Allocation files for ``connector import`` / ``connector plan``: parse and check them.

Pure: nothing here reads the ledger or the store. A file is CSV (a header line,
then one allocation per row) or JSON Lines (one JSON object per line). Every
row is checked and every problem is reported with the file's own line number
(the CSV header is line 1), so a file is either entirely well-formed or the
caller gets the full list of what to fix.

Columns (CSV) / keys (JSON Lines)::

    connection_id     the connection (optional when a default is given)
    document          invoice/bill number or remote id
    amount            in the document's currency (or in ``currency`` with ``currency_rate``)
    document_type     invoice (AR, default) or bill (AP)
    transaction_date  YYYY-MM-DD (default: today in the ledger's calendar)
    currency          the payment's currency (ISO 4217)
    currency_rate     document-currency units per payment-currency unit
    account_code      bank account code (default: the connection's)
    reference         your reference, shown on the payment
    idempotency_key   optional; default derived from the row's content
    allocations       JSON Lines only: [{"document": …, "amount": …}, …]

Amounts are never floats: CSV cells are text, and JSON numbers are read as
``Decimal`` straight from their literal (``49.99`` stays ``49.99``).

Without ``idempotency_key`` a row's key is derived from what it asks for
(connection, document type, document, amount, date, account, reference,
currency, rate), so importing the same file again adds nothing, and a row that
was edited is a new allocation. Two rows asking for exactly the same thing in
one file are refused (``duplicate_row``): give each its own ``idempotency_key``
to pay twice on purpose.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.money import AmountError, minor_units, parse_amount, to_decimal
from connector.sync.push import AllocationLine, AllocationRequest

__all__ = [
    "COLUMNS",
    "FORMATS",
    "ImportRow",
    "ParsedFile",
    "RowError",
    "detect_format",
    "parse_csv",
    "parse_file",
    "parse_jsonl",
    "parse_text",
]

#: Every CSV column / JSON Lines key, in the order the README lists them.
COLUMNS: tuple[str, ...] = (
    "connection_id",
    "document",
    "amount",
    "document_type",
    "transaction_date",
    "currency",
    "currency_rate",
    "account_code",
    "reference",
    "idempotency_key",
)
#: JSON Lines only: a multi-document allocation.
LINES_KEY = "allocations"
FORMATS = ("csv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# No currency has more decimals than this (CLF, UYW): more is wrong whatever the document.
_MAX_PLACES = 4
_MAX_KEY = 255


@dataclass(frozen=True)
class RowError:
    """One problem of one row (``line`` is the file's line number, 1-based)."""

    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.code}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"line": self.line, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class ImportRow:
    """A well-formed row: where it is in the file and the allocation it asks for."""

    line: int
    request: AllocationRequest


@dataclass
class ParsedFile:
    """The rows of a file, or the reasons it cannot be imported (then ``rows`` is empty)."""

    rows: list[ImportRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every row is well-formed (and there is at least one)."""
        return not self.errors


def detect_format(path: str | Path, explicit: str | None = None) -> str:
    """``csv`` or ``jsonl``, from ``explicit`` or from the file's extension.

    Raises:
        ValueError: an unknown format, or an extension that says none.
    """
    if explicit is not None:
        fmt = explicit.strip().lower()
        if fmt == "ndjson":
            fmt = "jsonl"
        if fmt not in FORMATS:
            raise ValueError(f"format {explicit!r} is unknown; use csv or jsonl")
        return fmt
    suffix = Path(str(path)).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    raise ValueError(
        f"cannot tell the format of {str(path)!r} from its extension; name it .csv, .jsonl "
        f"or .ndjson, or pass --format csv|jsonl"
    )


def parse_file(
    path: str | Path,
    fmt: str,
    *,
    default_connection: str | None = None,
    known_connections: Collection[str] | None = None,
) -> ParsedFile:
    """Read and check a file (``fmt`` from :func:`detect_format`).

    Raises:
        OSError: the file cannot be read.
    """
    data = Path(path).read_bytes()
    return parse_bytes(
        data, fmt, default_connection=default_connection, known_connections=known_connections
    )


def parse_bytes(
    data: bytes,
    fmt: str,
    *,
    default_connection: str | None = None,
    known_connections: Collection[str] | None = None,
) -> ParsedFile:
    """Decode (UTF-8, an optional BOM) and check."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return ParsedFile(
            errors=[
                RowError(
                    line,
                    "invalid_encoding",
                    f"byte {exc.start} is not UTF-8 ({exc.reason}); save the file as UTF-8",
                )
            ]
        )
    return parse_text(
        text, fmt, default_connection=default_connection, known_connections=known_connections
    )


def parse_text(
    text: str,
    fmt: str,
    *,
    default_connection: str | None = None,
    known_connections: Collection[str] | None = None,
) -> ParsedFile:
    """Check the text of a file in format ``fmt`` (``csv`` or ``jsonl``)."""
    if fmt == "csv":
        parsed = parse_csv(
            text, default_connection=default_connection, known_connections=known_connections
        )
    elif fmt == "jsonl":
        parsed = parse_jsonl(
            text, default_connection=default_connection, known_connections=known_connections
        )
    else:
        raise ValueError(f"format {fmt!r} is unknown; use csv or jsonl")
    return parsed


# -- CSV ------------------------------------------------------------------------------


class _CsvError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _csv_records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line of the record, fields); blank lines are skipped.

    Raises:
        _CsvError: malformed quoting, with the line where the record starts.
    """
    source = io.StringIO(text, newline="")
    reader = csv.reader(source, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _CsvError(start, f"{exc} (check the quotes of this row)") from None
        if not record or all(not cell.strip() for cell in record):
            continue
        yield start, record


def parse_csv(
    text: str,
    *,
    default_connection: str | None = None,
    known_connections: Collection[str] | None = None,
) -> ParsedFile:
    """Check a CSV file: a header of known columns, then one allocation per row."""
    out = ParsedFile()
    records = _csv_records(text)
    try:
        first = next(records, None)
    except _CsvError as exc:
        out.errors.append(RowError(exc.line, "invalid_csv", exc.message))
        return out
    if first is None:
        out.errors.append(
            RowError(1, "empty_file", f"the file is empty; the header names the columns: {_cols()}")
        )
        return out
    header_line, header = first
    names = [h.strip().lower() for h in header]
    for name, count in _counts(names).items():
        if count > 1:
            out.errors.append(
                RowError(header_line, "duplicate_column", f"column {name!r} appears {count} times")
            )
    for name in names:
        if name == LINES_KEY:
            out.errors.append(
                RowError(
                    header_line,
                    "unknown_column",
                    f"column {name!r} is for JSON Lines only; in CSV pay one document per row. "
                    f"Accepted columns: {_cols()}",
                )
            )
        elif name not in COLUMNS:
            out.errors.append(
                RowError(
                    header_line,
                    "unknown_column",
                    f"unknown column {name!r}; accepted columns: {_cols()}",
                )
            )
    required = ["document", "amount"]
    if default_connection is None:
        required.insert(0, "connection_id")
    missing = [r for r in required if r not in names]
    if missing:
        hint = " (or pass --connection for every row)" if "connection_id" in missing else ""
        out.errors.append(
            RowError(
                header_line,
                "missing_column",
                f"the header has no {', '.join(repr(m) for m in missing)} column{hint}; "
                f"accepted columns: {_cols()}",
            )
        )
    if out.errors:
        return out  # rows cannot be read against a header that is wrong
    checker = _Checker(default_connection, known_connections)
    try:
        for line, record in records:
            if len(record) != len(names):
                checker.errors.append(
                    RowError(
                        line,
                        "bad_row",
                        f"{len(record)} fields, but the header has {len(names)} columns "
                        f"(a missing or extra comma? quote values that contain commas)",
                    )
                )
                continue
            values = {n: (v.strip() or None) for n, v in zip(names, record, strict=True)}
            checker.row(line, values)
    except _CsvError as exc:
        checker.errors.append(RowError(exc.line, "invalid_csv", exc.message))
    return checker.finish()


# -- JSON Lines -------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number an allocation can use")


def parse_jsonl(
    text: str,
    *,
    default_connection: str | None = None,
    known_connections: Collection[str] | None = None,
) -> ParsedFile:
    """Check a JSON Lines file: one object per line; blank lines are skipped."""
    checker = _Checker(default_connection, known_connections)
    seen_any = False
    # Split on "\n" only: a JSON string may hold U+2028 and friends, which are not lines.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        seen_any = True
        try:
            obj = json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant)
        except ValueError as exc:
            checker.errors.append(RowError(number, "invalid_json", str(exc)))
            continue
        if not isinstance(obj, dict):
            checker.errors.append(
                RowError(
                    number, "bad_row", f"each line must be a JSON object, not {_json_kind(obj)}"
                )
            )
            continue
        values, problems, bad = _json_values(obj)
        checker.row(number, values, problems=problems, reported=bad)
    if not seen_any:
        return ParsedFile(
            errors=[
                RowError(1, "empty_file", "the file has no allocations (one JSON object a line)")
            ]
        )
    return checker.finish()


def _json_values(
    obj: dict[str, Any],
) -> tuple[dict[str, Any], list[tuple[str, str]], set[str]]:
    """The usable values, the problems of the others, and the keys with a problem."""
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    bad: set[str] = set()
    for key, value in obj.items():
        if key == LINES_KEY:
            values[key] = value
            continue
        if key not in COLUMNS:
            problems.append(
                ("unknown_key", f"unknown key {key!r}; accepted keys: {_cols()}, {LINES_KEY}")
            )
            continue
        if value is None:
            continue
        if key in ("amount", "currency_rate"):
            if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
                problems.append(
                    (
                        f"invalid_{key}",
                        f'{key} must be a number or a string like "49.99", not {_json_kind(value)}',
                    )
                )
                bad.add(key)
                continue
            values[key] = _number_value(value)
            continue
        if not isinstance(value, str):
            problems.append(
                (
                    "invalid_value",
                    f"{key} must be a JSON string, not {_json_kind(value)} "
                    f'(write it quoted, e.g. "{key}": "…")',
                )
            )
            bad.add(key)
            continue
        values[key] = value.strip() or None
    return values, problems, bad


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | Decimal):
        return f"the number {value}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# -- the row checks, shared -------------------------------------------------------------


class _Checker:
    """Builds requests from rows' values and collects every problem."""

    def __init__(
        self, default_connection: str | None, known_connections: Collection[str] | None
    ) -> None:
        self.default_connection = default_connection
        self.known = set(known_connections) if known_connections is not None else None
        self.rows: list[ImportRow] = []
        self.errors: list[RowError] = []
        self.keys: dict[tuple[str, str], int] = {}

    def finish(self) -> ParsedFile:
        if not self.rows and not self.errors:
            self.errors.append(RowError(1, "empty_file", "the file has no allocations"))
        if self.errors:
            self.errors.sort(key=lambda e: e.line)
            return ParsedFile(rows=[], errors=self.errors)
        return ParsedFile(rows=self.rows, errors=[])

    def row(
        self,
        line: int,
        values: dict[str, Any],
        *,
        problems: list[tuple[str, str]] | None = None,
        reported: Collection[str] = (),
    ) -> None:
        """Check one row; ``problems`` already found in it (``reported``: their keys)."""
        problems = list(problems or [])

        def problem(code: str, message: str) -> None:
            problems.append((code, message))

        connection = values.get("connection_id") or self.default_connection
        if connection is None and "connection_id" not in reported:
            problem("missing_connection", "connection_id is empty (or pass --connection)")
        elif connection is not None and self.known is not None and connection not in self.known:
            problem(
                "unknown_connection",
                f"connection_id {connection!r} is not in the config; known: "
                f"{', '.join(sorted(self.known)) or 'none'}",
            )

        document_type = (values.get("document_type") or "invoice").lower()
        if document_type not in ("invoice", "bill"):
            problem(
                "invalid_document_type",
                f"document_type {values.get('document_type')!r} must be invoice (AR) or bill (AP)",
            )

        transaction_date: date | None = None
        raw_date = values.get("transaction_date")
        if raw_date is not None:
            try:
                if not _DATE.match(raw_date):
                    raise ValueError
                transaction_date = date.fromisoformat(raw_date)
            except ValueError:
                problem(
                    "invalid_date",
                    f"transaction_date {raw_date!r} is not a date; use YYYY-MM-DD",
                )

        currency = values.get("currency")
        if currency is not None:
            try:
                minor_units(currency)
                currency = currency.upper()
            except AmountError as exc:
                problem("invalid_currency", str(exc))
                currency = None

        rate = values.get("currency_rate")
        if rate is not None:
            if _positive(rate) is None:
                problem("invalid_currency_rate", _not_positive("currency_rate", rate))
            elif values.get("currency") is None:
                problem(
                    "invalid_currency_rate",
                    "currency_rate needs currency (the payment's currency; the rate is "
                    "document-currency units per payment-currency unit)",
                )

        lines: tuple[AllocationLine, ...] = ()
        lines_ok = True
        if LINES_KEY in values:
            before = len(problems)
            lines = self._lines(values[LINES_KEY], problem)
            lines_ok = len(problems) == before

        document = values.get("document")
        if document is None and lines:
            document = lines[0].document
        if document is None and "document" not in reported and lines_ok:
            problem("missing_document", "document is empty: name the invoice/bill (number or id)")

        amount = values.get("amount")
        if amount is None and LINES_KEY in values:
            if lines_ok:  # the total of the lines
                amount = sum((to_decimal(line.amount) for line in lines), Decimal(0))
        elif amount is None and "amount" not in reported:
            problem("invalid_amount", "amount is empty")
        if amount is not None:
            message = self._amount_problem(amount, currency)
            if message:
                problem("invalid_amount", message)

        key = values.get("idempotency_key")
        if key is not None and len(key) > _MAX_KEY:
            problem("invalid_key", f"idempotency_key is {len(key)} characters; at most {_MAX_KEY}")

        if problems:
            self.errors.extend(RowError(line, code, message) for code, message in problems)
            return
        assert not reported
        assert connection is not None and document is not None and amount is not None
        request = AllocationRequest(
            connection_id=connection,
            document=document,
            amount=amount,
            transaction_date=transaction_date,
            account_code=values.get("account_code"),
            reference=values.get("reference"),
            idempotency_key=key,
            document_type=document_type,
            currency=currency,
            currency_rate=rate,
            lines=lines,
        )
        effective = key or f"auto-{request.fingerprint()[:40]}"
        earlier = self.keys.get((connection, effective))
        if earlier is not None:
            if key is None:
                self.errors.append(
                    RowError(
                        line,
                        "duplicate_row",
                        f"the same allocation as line {earlier}; to pay it twice on purpose, "
                        f"give each row its own idempotency_key",
                    )
                )
            else:
                self.errors.append(
                    RowError(
                        line,
                        "duplicate_key",
                        f"idempotency_key {key!r} is also used by line {earlier}; "
                        f"each row needs its own key",
                    )
                )
            return
        self.keys[(connection, effective)] = line
        self.rows.append(ImportRow(line, request))

    @staticmethod
    def _amount_problem(amount: Any, currency: str | None) -> str | None:
        value = _positive(amount)
        if value is None:
            return _not_positive("amount", amount)
        if currency is not None:
            try:
                parse_amount(value, currency)
            except AmountError as exc:
                return str(exc).replace(repr(value), _shown(amount))
            return None
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > _MAX_PLACES:
            return (
                f"amount {_shown(amount)} has more decimals than any currency allows; "
                f"round it before importing"
            )
        return None

    def _lines(self, raw: Any, problem: Any) -> tuple[AllocationLine, ...]:
        if not isinstance(raw, list) or not raw:
            problem(
                "invalid_allocations",
                f'{LINES_KEY} must be a non-empty list of {{"document": …, "amount": …}}',
            )
            return ()
        lines: list[AllocationLine] = []
        for n, item in enumerate(raw, start=1):
            if not isinstance(item, dict) or set(item) - {"document", "amount"}:
                problem(
                    "invalid_allocations",
                    f'{LINES_KEY}[{n}] must be {{"document": "…", "amount": "…"}} and nothing else',
                )
                continue
            document = item.get("document")
            amount = item.get("amount")
            if not isinstance(document, str) or not document.strip():
                problem("invalid_allocations", f"{LINES_KEY}[{n}].document must be a string")
                continue
            if (
                isinstance(amount, bool)
                or not isinstance(amount, str | int | Decimal)
                or _positive(amount) is None
            ):
                problem(
                    "invalid_allocations",
                    f"{LINES_KEY}[{n}].amount {_shown(amount)} must be a number greater than zero",
                )
                continue
            lines.append(AllocationLine(document.strip(), _number_value(amount)))
        return tuple(lines)


def _positive(value: Any) -> Decimal | None:
    """``value`` as a finite ``Decimal`` > 0, or None."""
    try:
        dec = to_decimal(value)
    except AmountError:
        return None
    if not dec.is_finite() or dec <= 0:
        return None
    return dec


def _number_value(value: str | int | Decimal) -> str | Decimal:
    """A JSON amount as the engine takes it: text stripped, integers as ``Decimal``."""
    if isinstance(value, str):
        return value.strip()
    return Decimal(value)


def _not_positive(name: str, value: Any) -> str:
    try:
        to_decimal(value)
    except AmountError:
        return f"{name} {_shown(value)} is not a number (write it like 49.99)"
    return f"{name} {_shown(value)} must be a number greater than zero"


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _counts(names: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _cols() -> str:
    return ", ".join(COLUMNS)
