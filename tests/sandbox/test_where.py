"""The where/order interpreter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pytest

from connector.sandbox.where import FieldTable, WhereError, compile_where, sort_key_for_order


@dataclass
class Row:
    name: str
    amount: Decimal
    day: date
    flag: bool


TABLE: FieldTable[Row] = FieldTable(
    "Row",
    {
        "Name": lambda r: r.name,
        "Amount": lambda r: r.amount,
        "Date": lambda r: r.day,
        "Flag": lambda r: r.flag,
    },
)
ROWS = [
    Row("Alpha", Decimal("10.00"), date(2024, 1, 1), True),
    Row("beta", Decimal("20.00"), date(2024, 2, 1), False),
    Row("Gamma", Decimal("30.00"), date(2024, 3, 1), True),
]


def _names(where: str) -> list[str]:
    predicate = compile_where(where, TABLE)
    return [r.name for r in ROWS if predicate(r)]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ('Name=="alpha"', ["Alpha"]),
        ('name = "BETA"', ["beta"]),
        ('Name != "Alpha"', ["beta", "Gamma"]),
        ("Amount > 15", ["beta", "Gamma"]),
        ("Amount >= 10 and Amount < 30", ["Alpha", "beta"]),
        ("Date >= DateTime(2024, 02, 01) && Flag", ["Gamma"]),
        ('Name=="Alpha" OR Name=="Gamma"', ["Alpha", "Gamma"]),
        ('(Name=="Alpha" || Name=="beta") AND Flag==true', ["Alpha"]),
        ("NOT Flag", ["beta"]),
        ('Name.Contains("amm")', ["Gamma"]),
        ('Name == "say \\"hi\\""', []),
    ],
)
def test_where_expressions(where: str, expected: list[str]) -> None:
    assert _names(where) == expected


@pytest.mark.parametrize(
    "where", ['Colour=="red"', "Name==", 'Name=="a" AND', '(Name=="a"', "Date > DateTime(2024)"]
)
def test_where_errors(where: str) -> None:
    with pytest.raises(WhereError):
        compile_where(where, TABLE)


def test_order() -> None:
    key = sort_key_for_order("Flag DESC, Amount", TABLE)
    assert [r.name for r in sorted(ROWS, key=key)] == ["Alpha", "Gamma", "beta"]
    with pytest.raises(WhereError):
        sort_key_for_order("Amount SIDEWAYS", TABLE)
