"""Wire-format helpers shared by the sandbox providers.

* JSON output that writes :class:`~decimal.Decimal` verbatim, so money keeps its exact
  decimals on the wire (``229.00``, never ``229.0``), as Xero's .NET serializer does.
* JSON input parsed with ``parse_float=Decimal``; money never passes through ``float``.
* Microsoft JSON dates (``/Date(1552348800000+0000)/``) and the other date forms the
  Xero API reads and writes.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "date_string",
    "dumps",
    "dumps_slow",
    "iso_utc_seconds",
    "loads",
    "money",
    "ms_date",
    "ms_date_plain",
    "parse_date_value",
    "parse_http_datetime",
    "to_decimal",
    "truncate_ms",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# dumps() lets the C JSON encoder do the work: each Decimal becomes a marker string
# ("\x00" + a per-process nonce + its digits), which the encoder escapes as
# "\u0000<nonce>229.00"; one regex pass then unquotes the markers. A client-supplied
# string cannot forge a marker without guessing the nonce. This is ~3x faster than
# walking the value in Python, and JSON rendering is the sandbox's hottest path.
_NONCE = secrets.token_hex(8)
_MARK = "\x00" + _NONCE
_MARKER = re.compile(r'"\\u0000' + _NONCE + r'(-?[0-9.]+)"')


def _decimal_marker(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot encode non-finite Decimal {value}")
        # "f" keeps trailing zeros and never switches to exponent notation (1E+2).
        return _MARK + format(value, "f")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    separators=(",", ":"),
    default=_decimal_marker,
    allow_nan=False,
)


def dumps(value: Any) -> str:
    """Serialize to compact JSON, writing Decimals verbatim (``Decimal("229.00")`` → ``229.00``).

    Raises:
        TypeError: For values JSON cannot represent.
        ValueError: For a non-finite Decimal or float.
    """
    return _MARKER.sub(_unquote, _ENCODER.encode(value))


def _unquote(match: re.Match[str]) -> str:
    return match.group(1)


def dumps_slow(value: Any) -> str:
    """Reference implementation of :func:`dumps` in pure Python (used by the tests)."""
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts)


def _encode(value: Any, out: list[str]) -> None:
    if value is None or isinstance(value, bool | int | str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot encode non-finite Decimal {value}")
        # "f" keeps trailing zeros and never switches to exponent notation (1E+2).
        out.append(format(value, "f"))
    elif isinstance(value, float):
        out.append(json.dumps(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(data: bytes | str) -> Any:
    """Parse JSON with every non-integer number as a Decimal.

    Raises:
        ValueError: On malformed JSON, including the NaN/Infinity extensions that the
            standard library would otherwise accept.
    """
    if isinstance(data, bytes):
        data = data.decode("utf-8-sig")
    return json.loads(data, parse_float=Decimal, parse_constant=_reject_constant)


_QUANTA = {places: Decimal(1).scaleb(-places) for places in range(7)}


def money(value: Decimal, places: int = 2) -> Decimal:
    """Quantize an amount to ``places`` decimals, rounding half away from zero."""
    quantum = _QUANTA.get(places) or Decimal(1).scaleb(-places)
    return value.quantize(quantum, rounding=ROUND_HALF_UP)


def to_decimal(value: object) -> Decimal:
    """Convert a JSON number or numeric string to a finite Decimal.

    Raises:
        ValueError: If the value is not a finite number (booleans are rejected).
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, Decimal | int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
    elif isinstance(value, float):
        # Only reachable for callers that did not parse with parse_float=Decimal.
        result = Decimal(repr(value))
    else:
        raise ValueError(f"{value!r} is not a number")
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return result


def truncate_ms(moment: datetime) -> datetime:
    """Drop sub-millisecond precision (Xero timestamps carry milliseconds)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def ms_date(value: datetime | date) -> str:
    """Render ``/Date(ms+0000)/``; a plain date is midnight UTC."""
    moment = value if isinstance(value, datetime) else datetime.combine(value, time(), UTC)
    return f"/Date({_epoch_ms(moment)}+0000)/"


def ms_date_plain(moment: datetime) -> str:
    """Render ``/Date(ms)/`` (the envelope's ``DateTimeUTC`` form)."""
    return f"/Date({_epoch_ms(moment)})/"


def iso_utc_seconds(moment: datetime) -> str:
    """Render ``2019-03-12T23:10:38Z`` (``UpdatedDateUTCString``)."""
    m = moment.astimezone(UTC)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}Z"


def date_string(value: date) -> str:
    """Render ``2019-03-12T00:00:00`` (``DateString``/``DueDateString``)."""
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}T00:00:00"


def parse_date_value(value: object) -> date:
    """Parse a request date: ``YYYY-MM-DD``, ``/Date(ms)/``, ``/Date(ms±hhmm)/`` or ISO datetime.

    A moment with an offset is converted to UTC before taking the date, as Xero does
    (so ``2024-05-01T01:00:00+02:00`` is 30 April).

    Raises:
        ValueError: If the value is not a date in one of those forms.
    """
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a date")
    text = value.strip()
    match = _MS_DATE.match(text)
    if match:
        # The ms count is UTC already; the optional offset is informational only.
        return (_EPOCH + timedelta(milliseconds=int(match.group(1)))).date()
    if _ISO_DATE.match(text):
        return date.fromisoformat(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date()


def parse_http_datetime(value: str) -> datetime | None:
    """Parse an ``If-Modified-Since`` value; None if it is not a recognisable date.

    Accepts ISO 8601 with or without fraction and offset (naive means UTC), the MS JSON
    form, and RFC 1123 (``Tue, 12 Nov 2009 00:00:00 GMT``).
    """
    text = value.strip()
    if not text:
        return None
    match = _MS_DATE.match(text)
    if match:
        return _EPOCH + timedelta(milliseconds=int(match.group(1)))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
