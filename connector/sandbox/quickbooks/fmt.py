"""Wire formats of QuickBooks Online: timestamps with a Pacific offset, Java-style numbers.

* ``MetaData`` stamps: ``2015-01-16T15:08:12-08:00`` (seconds, company offset).
* The envelope's ``time``: ``2015-07-24T10:48:27.082-07:00`` (milliseconds).
* Legacy webhook ``lastUpdated``: ``2015-10-05T14:42:19-0700`` (offset without colon).
* CloudEvents ``time``: ``2025-09-10T21:31:25.179851517Z`` (UTC, nine fraction digits).
* Money as the samples show it: ``362.07``, ``275.0``, ``0`` — at least one decimal
  for a non-zero amount, a bare ``0`` for zero (a Decimal is written verbatim by
  :func:`connector.sandbox.wire.dumps`, so nothing passes through float).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = [
    "COMPANY_TZ",
    "cloudevents_time",
    "company_date",
    "envelope_time",
    "meta_time",
    "money",
    "parse_moment",
    "qbo_number",
    "render_numbers",
    "webhook_time",
]


def _company_tz() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("America/Los_Angeles")
    except Exception:  # no tz database: a fixed PST offset is close enough
        return timezone(timedelta(hours=-8), "PST")


#: Every sandbox company keeps its books in US Pacific time, as Intuit's samples do.
COMPANY_TZ = _company_tz()
_CENT = Decimal("0.01")


def money(value: Decimal) -> Decimal:
    """Round to cents, half away from zero."""
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def qbo_number(value: Decimal) -> Decimal:
    """The Decimal to write for an amount: ``275.00`` → ``275.0``, ``0.00`` → ``0``."""
    if value == 0:
        return Decimal(0)
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0")
        if text.endswith("."):
            text += "0"
    else:
        text += ".0"
    return Decimal(text)


def render_numbers(value: Any) -> Any:
    """Copy a JSON-like structure with every Decimal in :func:`qbo_number` form."""
    if isinstance(value, Decimal):
        return qbo_number(value)
    if isinstance(value, Mapping):
        return {k: render_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [render_numbers(v) for v in value]
    return value


def _local(moment: datetime) -> datetime:
    return moment.astimezone(COMPANY_TZ)


def meta_time(moment: datetime) -> str:
    """``MetaData`` form: ``2015-01-16T15:08:12-08:00``."""
    return _local(moment).replace(microsecond=0).isoformat()


def envelope_time(moment: datetime) -> str:
    """Envelope ``time`` form: ``2015-07-24T10:48:27.082-07:00``."""
    local = _local(moment)
    base = local.strftime("%Y-%m-%dT%H:%M:%S")
    offset = local.isoformat()[-6:]
    return f"{base}.{local.microsecond // 1000:03d}{offset}"


def webhook_time(moment: datetime) -> str:
    """Legacy webhook ``lastUpdated`` form: ``2015-10-05T14:42:19-0700``."""
    return _local(moment).strftime("%Y-%m-%dT%H:%M:%S%z")


def cloudevents_time(moment: datetime) -> str:
    """CloudEvents ``time`` form: ``2025-09-10T21:31:25.179851517Z`` (µs padded to ns)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{utc.microsecond:06d}000Z"


def company_date(moment: datetime) -> date:
    """The company's calendar date at ``moment`` (``TxnDate`` defaults to it)."""
    return _local(moment).date()


def parse_moment(text: str) -> datetime:
    """Parse a query/CDC timestamp: ISO date-time (offset optional) or a plain date.

    A missing offset means company time; a plain date means company midnight.

    Raises:
        ValueError: If the text is neither.
    """
    raw = text.strip()
    if len(raw) == 10:
        day = date.fromisoformat(raw)
        return datetime(day.year, day.month, day.day, tzinfo=COMPANY_TZ).astimezone(UTC)
    moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=COMPANY_TZ)
    return moment.astimezone(UTC)
