"""Exact money: Decimal amounts quantized to kopecks, and the ISO 4217 codes we accept.

One amount parser (`parse_amount`, with explicit options for the callers that differ) and one currency
table (`CURRENCIES`) for the whole app: bank JSON, 1C files, Bitrix24 values, the search box.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from .errors import MoneyError

__all__ = ["AMOUNT_LIMIT", "CENT", "CURRENCIES", "ZERO", "cents", "currency_alpha", "normalize_currency",
           "parse_amount", "parse_search_amount"]

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

#: ISO 4217 alphabetic -> numeric code, for the currencies we accept (source: the ISO 4217 list kept by SIX,
#: https://www.six-group.com/en/products-services/financial-information/data-standards.html). The set is the
#: rouble plus the currencies a Russian business account is held in: the main trade currencies and those of
#: the CIS neighbours. T-Bank sends the numeric code as a string ("643"), Tochka the alphabetic one.
CURRENCIES: dict[str, str] = {
    "RUB": "643", "USD": "840", "EUR": "978", "CNY": "156", "BYN": "933", "KZT": "398", "GBP": "826",
    "CHF": "756", "JPY": "392", "TRY": "949", "AMD": "051", "UZS": "860", "KGS": "417", "TJS": "972",
    "AZN": "944", "GEL": "981", "AED": "784", "HKD": "344", "INR": "356",
}
#: Numeric -> alphabetic; 810 is the pre-1998 rouble code still found inside Russian account numbers.
_BY_NUMERIC: dict[str, str] = {num: alpha for alpha, num in CURRENCIES.items()} | {"810": "RUB"}

_AMOUNT_TEXT = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?")
_GROUP_SPACES = str.maketrans("", "", " \u00a0\u202f\u2009\u2007")
#: What a search box may hold around an amount besides group spaces.
_CURRENCY_SIGNS = str.maketrans("", "", "₽")
#: The largest amount our tables hold (models: Numeric(18, 2)) is below this.
AMOUNT_LIMIT = Decimal(10) ** 16


def parse_amount(value: int | str | Decimal | float, *, negative: bool = True, zero: bool = True,
                 below: Decimal | None = None, round_cents: bool = False, grouped: bool = True) -> Decimal:
    """An exact amount quantized to 0.01; rejects NaN/inf, bools and (unless `round_cents`) non-zero
    digits past the kopecks.

    Strings may use a comma or a dot as decimal mark and spaces as thousands separators
    ("1 234,50"). Finite floats are taken by their shortest repr (3916.5 -> 3916.50), so an
    inexact float such as 0.1 + 0.2 is rejected rather than silently rounded.

    Options, each for a caller that truly differs: `grouped=False` refuses thousands separators (a machine's
    number, as in bank JSON, never has them: "12 000,00" there is malformed); `negative=False` / `zero=False`
    refuse amounts below / at zero (bank operations, 1C files, the search box); `below` is an exclusive upper
    bound (what a column holds); `round_cents` rounds half-even to kopecks instead of refusing (values we only
    display or compare, such as Bitrix24's `opportunity` and database sums).
    """
    number = _number(value, grouped)
    if not number.is_finite():
        raise MoneyError(f"not a finite amount: {value!r}")
    if not negative and number < 0:
        raise MoneyError(f"negative amount: {value!r}")
    if not zero and not number:
        raise MoneyError(f"not a positive amount: {value!r}")
    if below is not None and abs(number) >= below:
        raise MoneyError(f"amount out of range ({below} or more): {str(value)[:40]}")
    try:
        quantized = number.quantize(CENT)
    except InvalidOperation as exc:
        raise MoneyError(f"amount out of range: {str(value)[:40]}") from exc
    if quantized != number and not round_cents:
        raise MoneyError(f"more than two decimal places: {value!r}")
    if not zero and not quantized:
        raise MoneyError(f"not a positive amount: {value!r}")
    return quantized if quantized else ZERO  # turns -0.00 into 0.00


def cents(value: int | str | Decimal | float | None) -> Decimal:
    """A stored or computed amount (None counts as 0) rounded half-even to kopecks: `parse_amount` in its
    rounding mode, for sums and cached values we only display or compare."""
    return parse_amount(ZERO if value is None else value, round_cents=True)


def parse_search_amount(text: str) -> Decimal | None:
    """The lenient reading of what a person typed in a search box ("1 207,50 ₽"): a positive amount,
    rounded to kopecks, or None when the text is not one."""
    try:
        return parse_amount(str(text).translate(_CURRENCY_SIGNS), negative=False, zero=False,
                            below=AMOUNT_LIMIT, round_cents=True)
    except MoneyError:
        return None


def _number(value: object, grouped: bool) -> Decimal:
    if isinstance(value, bool):
        raise MoneyError("a boolean is not an amount")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MoneyError(f"not a finite amount: {value!r}")
        return Decimal(repr(value))
    if isinstance(value, str):
        text = value.strip()
        text = text.translate(_GROUP_SPACES) if grouped else text
        if not _AMOUNT_TEXT.fullmatch(text):
            raise MoneyError(f"not an amount: {value[:40]!r}")
        return Decimal(text.replace(",", "."))
    raise MoneyError(f"unsupported amount type: {type(value).__name__}")


def normalize_currency(code: str) -> str:
    """An upper-case ISO 4217 alphabetic code ("rub" -> "RUB")."""
    if not isinstance(code, str):
        raise MoneyError(f"currency must be a string, got {type(code).__name__}")
    text = code.strip().upper()
    if len(text) != 3 or not ("A" <= text[0] <= "Z" and "A" <= text[1] <= "Z" and "A" <= text[2] <= "Z"):
        raise MoneyError(f"not an ISO 4217 alphabetic currency code: {code!r}")
    return text


def currency_alpha(code: object) -> str:
    """The alphabetic code for a numeric ISO 4217 code ("643", "51" -> "RUB", "AMD"); an alphabetic code
    comes back upper-cased, and an unknown numeric one as given (the caller decides whether to refuse it)."""
    text = str(code).strip()
    if text.isascii() and text.isdigit():
        return _BY_NUMERIC.get(text.zfill(3), text)
    return text.upper()
