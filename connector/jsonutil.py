"""JSON with exact money: Decimals in, Decimals out, never through float."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

__all__ = ["dumps", "loads"]

_MARK = "\u0000dec:"
_MARKED = re.compile(r'"\\u0000dec:(-?[0-9]+(?:\.[0-9]+)?)"')


def _prepare(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise ValueError(f"cannot encode non-finite amount {obj}")
        return f"{_MARK}{format(obj, 'f')}"
    if isinstance(obj, dict):
        return {k: _prepare(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_prepare(v) for v in obj]
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    """Serialize ``obj``; a ``Decimal`` becomes a JSON number written digit for digit."""
    return _MARKED.sub(r"\1", json.dumps(_prepare(obj), **kw))


def loads(data: str | bytes) -> Any:
    """Parse JSON with every non-integer number as ``Decimal``."""
    return json.loads(data, parse_float=Decimal)
