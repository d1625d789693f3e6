"""Column types that keep money exact and times aware on every database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["Money", "UTCDateTime", "utcnow"]


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class Money(TypeDecorator[Decimal]):
    """Exact decimal money: ``NUMERIC(20, 6)`` on PostgreSQL, canonical text on SQLite.

    SQLite has no decimal type (it would store a binary float), so amounts are
    stored there as their exact decimal string.
    """

    impl = sa.String(40)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.Numeric(20, 6, asdecimal=True))
        return dialect.type_descriptor(sa.String(40))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money column needs Decimal, got {type(value).__name__}")
        return value if dialect.name == "postgresql" else format(value, "f")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        dec = Decimal(str(value)) if not isinstance(value, Decimal) else value
        # PostgreSQL pads NUMERIC(20,6) with zeros; drop them (never into 1E+2 form)
        # so both databases return the same value. Display code quantizes per currency.
        dec = dec.normalize()
        exponent = dec.as_tuple().exponent
        if isinstance(exponent, int) and exponent > 0:
            dec = dec.quantize(Decimal(1))
        return dec


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
