"""Money value object, amount parsing, numeric currency codes and locale formatting."""
from __future__ import annotations

from decimal import Decimal

import pytest

from b24app.domain import Money, currency_from_numeric, format_money, parse_amount
from b24app.domain.errors import CurrencyMismatchError, DomainError, MoneyError, UnknownCurrencyError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, "5.00"),
        ("5", "5.00"),
        ("1234.5", "1234.50"),
        ("1234,50", "1234.50"),
        ("1 234,56", "1234.56"),
        ("1\u00a0234\u202f567,00", "1234567.00"),
        (" -10.10 ", "-10.10"),
        (Decimal("1.230"), "1.23"),
        (Decimal("7.000000"), "7.00"),
        (3916.5, "3916.50"),
        ("-0", "0.00"),
    ],
)
def test_parse_amount_accepts(value: object, expected: str) -> None:
    result = parse_amount(value)  # type: ignore[arg-type]
    assert result == Decimal(expected)
    assert result.as_tuple().exponent == -2
    assert str(result) == expected


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), Decimal("NaN"), Decimal("Infinity"), "nan", "inf",
     "1.234", Decimal("0.001"), 0.1 + 0.2, "", "abc", "1,234.56", "1e3", True, None, [1], "12.", Decimal("1e40")],
)
def test_parse_amount_rejects(value: object) -> None:
    with pytest.raises(MoneyError):
        parse_amount(value)  # type: ignore[arg-type]


def test_money_quantizes_and_normalizes_currency() -> None:
    m = Money(Decimal("10.5"), "rub")
    assert m.amount == Decimal("10.50") and str(m.amount) == "10.50"
    assert m.currency == "RUB"
    assert Money("10.50", "RUB") == m


def test_money_arithmetic_same_currency() -> None:
    a, b = Money(Decimal("100.10"), "RUB"), Money(Decimal("0.90"), "RUB")
    assert a + b == Money(Decimal("101.00"), "RUB")
    assert a - b == Money(Decimal("99.20"), "RUB")
    assert -b == Money(Decimal("-0.90"), "RUB")
    assert b < a and a > b and a >= a and b <= b
    assert Money.zero("USD").is_zero and not a.is_zero


def test_money_refuses_mixed_currencies() -> None:
    rub, usd = Money(Decimal(1), "RUB"), Money(Decimal(1), "USD")
    with pytest.raises(CurrencyMismatchError):
        rub + usd
    with pytest.raises(CurrencyMismatchError):
        rub - usd
    with pytest.raises(CurrencyMismatchError):
        rub < usd
    assert rub != usd  # equality is allowed and false
    with pytest.raises(TypeError):
        rub + 1  # type: ignore[operator]


@pytest.mark.parametrize("currency", ["RU", "RUBL", "12A", "", "РУБ"])
def test_money_rejects_bad_currency(currency: str) -> None:
    with pytest.raises(MoneyError):
        Money(Decimal(1), currency)


def test_money_errors_share_the_domain_root() -> None:
    assert issubclass(MoneyError, DomainError) and issubclass(CurrencyMismatchError, MoneyError)
    assert issubclass(UnknownCurrencyError, MoneyError)


@pytest.mark.parametrize(
    ("code", "alpha"),
    [("643", "RUB"), (643, "RUB"), ("840", "USD"), ("978", "EUR"), ("156", "CNY"), ("398", "KZT"),
     ("933", "BYN"), ("949", "TRY"), ("784", "AED"), ("356", "INR"), ("51", "AMD"), ("051", "AMD"), (" 643 ", "RUB")],
)
def test_currency_from_numeric(code: object, alpha: str) -> None:
    assert currency_from_numeric(code) == alpha  # type: ignore[arg-type]


@pytest.mark.parametrize("code", ["999", "0", "", "RUB", "64 3", "６４３", True])
def test_currency_from_numeric_unknown(code: object) -> None:
    with pytest.raises(UnknownCurrencyError):
        currency_from_numeric(code)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "currency", "lang", "expected"),
    [
        (Decimal("12000"), "RUB", "ru", "12\u00a0000,00\u00a0₽"),
        (Decimal("12000"), "RUB", "en", "12,000.00 RUB"),
        (Decimal("1234567.891"), "USD", "ru", "1\u00a0234\u00a0567,89\u00a0USD"),
        (Decimal("0.5"), "EUR", "en-US", "0.50 EUR"),
        (Decimal("-5"), "RUB", "ru_RU", "-5,00\u00a0₽"),
        (Decimal("999.995"), "RUB", "de", "1,000.00 RUB"),
    ],
)
def test_format_money(amount: Decimal, currency: str, lang: str, expected: str) -> None:
    assert format_money(amount, currency, lang) == expected
