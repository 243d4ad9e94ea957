"""Exact money: Decimal amounts quantized to kopecks, never mixed across currencies."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from .errors import CurrencyMismatchError, MoneyError, UnknownCurrencyError

__all__ = ["CENT", "Money", "currency_from_numeric", "normalize_currency", "parse_amount"]

CENT = Decimal("0.01")

#: ISO 4217 numeric codes T-Bank sends in `operationCurrencyDigitalCode` (810 is the legacy rouble code
#: still found inside Russian account numbers).
_NUMERIC_CURRENCIES = {
    643: "RUB", 810: "RUB", 840: "USD", 978: "EUR", 156: "CNY", 398: "KZT",
    933: "BYN", 949: "TRY", 784: "AED", 356: "INR", 51: "AMD",
}
_AMOUNT_TEXT = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?")
_GROUP_SPACES = str.maketrans("", "", " \u00a0\u202f\u2009\u2007")


def parse_amount(value: int | str | Decimal | float) -> Decimal:
    """An exact amount quantized to 0.01; rejects NaN/inf, bools and non-zero digits past the kopecks.

    Strings may use a comma or a dot as decimal mark and spaces as thousands separators
    ("1 234,50"). Finite floats are taken by their shortest repr (3916.5 -> 3916.50), so an
    inexact float such as 0.1 + 0.2 is rejected rather than silently rounded.
    """
    if isinstance(value, bool):
        raise MoneyError("a boolean is not an amount")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise MoneyError(f"not a finite amount: {value!r}")
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip().translate(_GROUP_SPACES)
        if not _AMOUNT_TEXT.fullmatch(text):
            raise MoneyError(f"not an amount: {value!r}")
        number = Decimal(text.replace(",", "."))
    else:
        raise MoneyError(f"unsupported amount type: {type(value).__name__}")
    if not number.is_finite():
        raise MoneyError(f"not a finite amount: {value!r}")
    try:
        quantized = number.quantize(CENT)
    except InvalidOperation as exc:
        raise MoneyError(f"amount out of range: {value!r}") from exc
    if quantized != number:
        raise MoneyError(f"more than two decimal places: {value!r}")
    return quantized if quantized else CENT * 0  # turns -0.00 into 0.00


def normalize_currency(code: str) -> str:
    """An upper-case ISO 4217 alphabetic code ("rub" -> "RUB")."""
    if not isinstance(code, str):
        raise MoneyError(f"currency must be a string, got {type(code).__name__}")
    text = code.strip().upper()
    if len(text) != 3 or not ("A" <= text[0] <= "Z" and "A" <= text[1] <= "Z" and "A" <= text[2] <= "Z"):
        raise MoneyError(f"not an ISO 4217 alphabetic currency code: {code!r}")
    return text


def currency_from_numeric(code: str | int) -> str:
    """The alphabetic code for a numeric ISO 4217 code as T-Bank sends it ("643" -> "RUB")."""
    text = str(code).strip()
    if isinstance(code, bool) or not text.isascii() or not text.isdigit():
        raise UnknownCurrencyError(f"not a numeric currency code: {code!r}")
    try:
        return _NUMERIC_CURRENCIES[int(text)]
    except KeyError:
        raise UnknownCurrencyError(f"unknown numeric currency code: {code!r}") from None


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in one currency; arithmetic and ordering only with the same currency."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", parse_amount(self.amount))
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)

    def _same(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented  # type: ignore[return-value]
        if other.currency != self.currency:
            raise CurrencyMismatchError(f"{self.currency} vs {other.currency}")
        return other

    def __add__(self, other: Money) -> Money:
        o = self._same(other)
        if o is NotImplemented:
            return NotImplemented
        return Money(self.amount + o.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        o = self._same(other)
        if o is NotImplemented:
            return NotImplemented
        return Money(self.amount - o.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        o = self._same(other)
        return NotImplemented if o is NotImplemented else self.amount < o.amount

    def __le__(self, other: Money) -> bool:
        o = self._same(other)
        return NotImplemented if o is NotImplemented else self.amount <= o.amount

    def __gt__(self, other: Money) -> bool:
        o = self._same(other)
        return NotImplemented if o is NotImplemented else self.amount > o.amount

    def __ge__(self, other: Money) -> bool:
        o = self._same(other)
        return NotImplemented if o is NotImplemented else self.amount >= o.amount

    @property
    def is_zero(self) -> bool:
        return not self.amount

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"
