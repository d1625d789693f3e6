"""Money: ``Decimal`` amounts quantized to the currency's ISO 4217 minor units.

Floats never enter: amounts are parsed from strings (or ints/Decimals), checked,
and quantized with ``ROUND_HALF_UP`` only where a provider hands us a value that
is already money (a balance), never to "fix" what a caller asked us to pay.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = ["AmountError", "minor_units", "parse_amount", "quantize", "to_decimal"]

# ISO 4217 minor units for currencies that do not use two decimals. Every other
# well-formed code uses 2, which is the ISO default for the vast majority.
_MINOR_UNITS: dict[str, int] = {
    # zero decimals
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0,
    # three decimals
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # four decimals
    "CLF": 4, "UYW": 4,
}  # fmt: skip


class AmountError(ValueError):
    """An amount that cannot be money: zero, negative, NaN, or over-precise."""


def _check_currency(currency: str) -> str:
    code = currency.strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise AmountError(
            f"currency {currency!r} is not an ISO 4217 code (three letters, e.g. USD)"
        )
    return code


def minor_units(currency: str) -> int:
    """Return the number of decimals of ``currency`` (USD → 2, JPY → 0, BHD → 3)."""
    return _MINOR_UNITS.get(_check_currency(currency), 2)


def to_decimal(value: object) -> Decimal:
    """Convert a provider value (str, int, Decimal) to ``Decimal`` without float."""
    if isinstance(value, bool | float):
        # A float has already lost the exact value; refuse rather than guess.
        raise AmountError(f"amount {value!r} is a binary float; pass a string or Decimal")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            raise AmountError(f"amount {value!r} is not a number") from None
    raise AmountError(f"amount {value!r} has unsupported type {type(value).__name__}")


def quantize(value: Decimal, currency: str) -> Decimal:
    """Round ``value`` half-up to the currency's minor units (for provider balances)."""
    exp = Decimal(1).scaleb(-minor_units(currency))
    return value.quantize(exp, rounding=ROUND_HALF_UP)


def parse_amount(value: object, currency: str) -> Decimal:
    """Validate an amount someone asked us to pay and return it quantized.

    Refuses zero, negative, NaN/infinite and amounts with more decimals than the
    currency has (``49.999 USD``, ``10.5 JPY``): rounding a payment silently
    would move money nobody asked to move.

    Raises:
        AmountError: with a message that says what is wrong and what is allowed.
    """
    dec = to_decimal(value)
    places = minor_units(currency)
    code = _check_currency(currency)
    if not dec.is_finite():
        raise AmountError(f"amount {value!r} is not a finite number")
    if dec <= 0:
        raise AmountError(f"amount {value!r} must be greater than zero")
    exponent = dec.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked above
    if -exponent > places:
        raise AmountError(
            f"amount {value!r} has more decimals than {code} allows ({places}); "
            f"round it before sending"
        )
    return quantize(dec, code)
