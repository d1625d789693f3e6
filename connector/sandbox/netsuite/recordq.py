"""The ``q`` filter of record collections (``GET record/v1/invoice?q=...``).

Grammar (Oracle "Record Collection Filtering", fact sheet §3): conditions
``<field> <OPERATOR> [<value>]`` joined by ``AND``/``OR`` (no parentheses, AND binds
tighter). Values are ``"quoted"``, bare words or numbers; ``ANY_OF``/``NONE_OF`` take
``[a, b]`` or ``a, b``. Operators: ``IS IS_NOT EQUAL EQUAL_NOT GREATER GREATER_OR_EQUAL
LESS LESS_OR_EQUAL ANY_OF NONE_OF START_WITH CONTAIN EMPTY EMPTY_NOT`` and the date
operators ``AFTER BEFORE ON ON_OR_AFTER ON_OR_BEFORE`` with their ``_NOT`` forms.

Dates must be written in the account's date format (``5/27/2025``, optionally
``5/27/2025 2:30 pm``); anything else is 400 ``INVALID_PARAMETER`` "Unparseable date"
(fact sheet §11). Field names are the REST ones, case-insensitive; an unknown field is
400 ``NONEXISTENT_FIELD`` (samples: nonexistent_field_in_q_filter_400).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.sandbox.netsuite.errors import NetSuiteError

__all__ = ["compile_filter"]

_TOKEN = re.compile(r'\s*(?:"(?P<q>[^"]*)"|(?P<p>[\[\],])|(?P<w>[^\s\[\],"]+))')
_DATE = re.compile(
    r"(\d{1,2})/(\d{1,2})/(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([aApP][mM])?)?"
)
_DATE_OPS = {"AFTER", "BEFORE", "ON", "ON_OR_AFTER", "ON_OR_BEFORE"}
_VALUE_OPS = {
    "IS",
    "IS_NOT",
    "EQUAL",
    "EQUAL_NOT",
    "GREATER",
    "GREATER_OR_EQUAL",
    "LESS",
    "LESS_OR_EQUAL",
    "START_WITH",
    "START_WITH_NOT",
    "CONTAIN",
    "CONTAIN_NOT",
}
_LIST_OPS = {"ANY_OF", "ANY_OF_NOT", "NONE_OF"}
_UNARY_OPS = {"EMPTY", "EMPTY_NOT"}
_VALUE_AS_DATE = {
    "IS": "ON",
    "EQUAL": "ON",
    "IS_NOT": "ON_NOT",
    "EQUAL_NOT": "ON_NOT",
    "GREATER": "AFTER",
    "GREATER_OR_EQUAL": "ON_OR_AFTER",
    "LESS": "BEFORE",
    "LESS_OR_EQUAL": "ON_OR_BEFORE",
}

Predicate = Callable[[Mapping[str, Any]], bool]


def _invalid(detail: str) -> NetSuiteError:
    return NetSuiteError(400, "INVALID_PARAMETER", detail, extra={"o:errorQueryParam": "q"})


def _nonexistent(name: str) -> NetSuiteError:
    return NetSuiteError(
        400,
        "NONEXISTENT_FIELD",
        f"Unknown field name '{name}' in the search query. The field does not exist on this "
        "record type.",
        extra={"o:errorQueryParam": "q"},
    )


def _parse_date(text: str) -> tuple[datetime, bool]:
    """The moment and whether a time of day was given."""
    match = _DATE.fullmatch(text.strip())
    if match is None:
        raise _invalid(f'Unparseable date: "{text}"')
    month, day, year = int(match[1]), int(match[2]), int(match[3])
    hour = int(match[4]) if match[4] else 0
    minute = int(match[5]) if match[5] else 0
    second = int(match[6]) if match[6] else 0
    if match[7]:
        hour = hour % 12 + (12 if match[7].lower() == "pm" else 0)
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC), bool(match[4])
    except ValueError:
        raise _invalid(f'Unparseable date: "{text}"') from None


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return None


def _date_predicate(field: str, op: str, text: str) -> Predicate:
    negate = op.endswith("_NOT")
    base = op[: -len("_NOT")] if negate else op
    moment, timed = _parse_date(text)
    start = moment
    end = moment + (timedelta(minutes=1) if timed else timedelta(days=1))

    def test(record: Mapping[str, Any]) -> bool:
        value = _moment(record.get(field))
        if value is None:
            return False
        if base == "AFTER":
            result = value >= end
        elif base == "BEFORE":
            result = value < start
        elif base == "ON":
            result = start <= value < end
        elif base == "ON_OR_AFTER":
            result = value >= start
        else:
            result = value < end
        return result != negate

    return test


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return Decimal(value)
    return value


def _number(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _matches(value: Any, text: str) -> bool:
    value = _scalar(value)
    if value is None:
        return False
    if isinstance(value, bool):
        return text.lower() in ({"true", "t"} if value else {"false", "f"})
    if isinstance(value, Decimal):
        number = _number(text)
        return number is not None and number == value
    return str(value).lower() == text.lower()


def _value_predicate(field: str, op: str, text: str) -> Predicate:
    def test(record: Mapping[str, Any]) -> bool:
        value = _scalar(record.get(field))
        if op in {"IS", "EQUAL"}:
            return _matches(value, text)
        if op in {"IS_NOT", "EQUAL_NOT"}:
            return not _matches(value, text)
        if op.startswith("START_WITH") or op.startswith("CONTAIN"):
            shown = "" if value is None else str(value).lower()
            hit = (
                shown.startswith(text.lower()) if op.startswith("START") else text.lower() in shown
            )
            return hit != op.endswith("_NOT")
        number = _number(text)
        if number is None or not isinstance(value, Decimal):
            return False
        if op == "GREATER":
            return value > number
        if op == "GREATER_OR_EQUAL":
            return value >= number
        if op == "LESS":
            return value < number
        return value <= number

    return test


def compile_filter(q: str, fields: Mapping[str, str], date_fields: set[str]) -> Predicate:
    """Compile ``q`` for records given as dicts keyed by canonical field names.

    Args:
        q: The filter text.
        fields: Lower-cased REST field name → key in the record dict.
        date_fields: Keys holding dates or date-times.

    Raises:
        NetSuiteError: 400 ``NONEXISTENT_FIELD`` or ``INVALID_PARAMETER``.
    """
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = q.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise _invalid(f"Invalid search query: {q}")
        pos = match.end()
        if match["q"] is not None:
            tokens.append(("v", match["q"]))
        elif match["p"] is not None:
            tokens.append(("p", match["p"]))
        elif match["w"] is not None:
            tokens.append(("w", match["w"]))
    index = 0

    def take() -> tuple[str, str]:
        nonlocal index
        if index >= len(tokens):
            raise _invalid(f"Invalid search query: {q}")
        index += 1
        return tokens[index - 1]

    def condition() -> Predicate:
        kind, name = take()
        if kind != "w":
            raise _invalid(f"Invalid search query: {q}")
        key = fields.get(name.lower())
        if key is None:
            raise _nonexistent(name)
        _, op_text = take()
        op = op_text.upper()
        if op in _UNARY_OPS:
            empty = op == "EMPTY"
            return lambda r: (r.get(key) in (None, "")) == empty
        if op in _LIST_OPS:
            values: list[str] = []
            bracket = index < len(tokens) and tokens[index] == ("p", "[")
            if bracket:
                take()
            while True:
                kind, value = take()
                if kind == "p":
                    raise _invalid(f"Invalid search query: {q}")
                values.append(value)
                if index < len(tokens) and tokens[index] == ("p", ","):
                    take()
                    continue
                break
            if bracket and take() != ("p", "]"):
                raise _invalid(f"Invalid search query: {q}")
            negate = op != "ANY_OF"
            return lambda r: any(_matches(r.get(key), v) for v in values) != negate
        kind, value = take()
        if kind == "p":
            raise _invalid(f"Invalid search query: {q}")
        base = op[: -len("_NOT")] if op.endswith("_NOT") else op
        if base in _DATE_OPS:
            if key not in date_fields:
                raise _invalid(f"Invalid search query: {q}")
            return _date_predicate(key, op, value)
        if op in _VALUE_OPS:
            if key in date_fields:
                mapped = _VALUE_AS_DATE.get(op)
                if mapped is None:
                    raise _invalid(f"Invalid search query: {q}")
                return _date_predicate(key, mapped, value)
            return _value_predicate(key, op, value)
        raise _invalid(f"Invalid search query: {q}")

    def conjunction() -> Predicate:
        parts = [condition()]
        while index < len(tokens) and tokens[index][1].upper() == "AND":
            take()
            parts.append(condition())
        return lambda r: all(p(r) for p in parts)

    disjuncts = [conjunction()]
    while index < len(tokens) and tokens[index][1].upper() == "OR":
        take()
        disjuncts.append(conjunction())
    if index != len(tokens):
        raise _invalid(f"Invalid search query: {q}")
    return lambda r: any(d(r) for d in disjuncts)
