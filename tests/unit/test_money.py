from decimal import Decimal

import pytest

from connector.money import AmountError, minor_units, parse_amount, quantize, to_decimal


@pytest.mark.parametrize(("currency", "places"), [("USD", 2), ("JPY", 0), ("BHD", 3), ("eur", 2)])
def test_minor_units_follow_iso_4217(currency: str, places: int) -> None:
    assert minor_units(currency) == places


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        ("49.99", "USD", Decimal("49.99")),
        ("49.9", "USD", Decimal("49.90")),
        ("1000", "JPY", Decimal("1000")),
        ("1.234", "BHD", Decimal("1.234")),
        (Decimal("5"), "USD", Decimal("5.00")),
        (7, "USD", Decimal("7.00")),
    ],
)
def test_parse_amount_quantizes_to_the_currency(
    value: object, currency: str, expected: Decimal
) -> None:
    result = parse_amount(value, currency)
    assert result == expected
    assert result.as_tuple().exponent == -minor_units(currency)


@pytest.mark.parametrize(
    ("value", "currency", "fragment"),
    [
        ("0", "USD", "greater than zero"),
        ("-5", "USD", "greater than zero"),
        ("NaN", "USD", "finite"),
        ("Infinity", "USD", "finite"),
        ("49.999", "USD", "more decimals than USD allows (2)"),
        ("10.5", "JPY", "more decimals than JPY allows (0)"),
        ("1.2345", "BHD", "BHD allows (3)"),
        ("abc", "USD", "not a number"),
        (1.5, "USD", "binary float"),
        ("1", "US", "ISO 4217"),
    ],
)
def test_bad_amounts_are_refused_with_a_reason(value: object, currency: str, fragment: str) -> None:
    with pytest.raises(AmountError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_amount(value, currency)


def test_quantize_rounds_half_up_for_provider_balances() -> None:
    assert quantize(Decimal("2.345"), "USD") == Decimal("2.35")
    assert quantize(Decimal("2.5"), "JPY") == Decimal("3")


def test_to_decimal_never_accepts_float() -> None:
    assert to_decimal("0.1") + to_decimal("0.2") == Decimal("0.3")
    with pytest.raises(AmountError):
        to_decimal(0.1)
