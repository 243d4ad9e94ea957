"""Amount parsing (one parser and its options), the currency table and locale formatting."""
from __future__ import annotations

from decimal import Decimal

import pytest

from b24app.domain import CURRENCIES, currency_alpha, format_money, parse_amount, parse_search_amount
from b24app.domain.errors import DomainError, MoneyError
from b24app.domain.money import AMOUNT_LIMIT, cents, normalize_currency


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


@pytest.mark.parametrize(
    ("value", "options", "expected"),
    [
        # bank JSON: not negative, below what the column holds
        (Decimal("0"), {"negative": False}, "0.00"),
        ("1234,56", {"negative": False, "grouped": False}, "1234.56"),
        (Decimal("9999999999999999.99"), {"negative": False, "below": AMOUNT_LIMIT}, "9999999999999999.99"),
        # a balance may be negative
        (Decimal("-12.5"), {"below": AMOUNT_LIMIT}, "-12.50"),
        # 1C files: positive only
        ("0.01", {"zero": False}, "0.01"),
        # cached Bitrix24 values and sums: rounded half-even, not refused
        ("12.345", {"round_cents": True}, "12.34"),
        ("12.355", {"round_cents": True}, "12.36"),
        (Decimal("0.1") + Decimal("0.2"), {"round_cents": True}, "0.30"),
        (0.1 + 0.2, {"round_cents": True}, "0.30"),
    ],
)
def test_parse_amount_options_accept(value: object, options: dict, expected: str) -> None:
    assert str(parse_amount(value, **options)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "options", "message"),
    [
        (Decimal("-0.01"), {"negative": False}, "negative"),
        ("-5", {"negative": False}, "negative"),
        ("0", {"zero": False}, "positive"),
        ("0.001", {"zero": False, "round_cents": True}, "positive"),
        (Decimal(10) ** 16, {"negative": False, "below": AMOUNT_LIMIT}, "out of range"),
        ("10000000000000000.00", {"below": AMOUNT_LIMIT}, "out of range"),
        ("12 000,00", {"grouped": False}, "not an amount"),
        ("12\u00a0000", {"grouped": False}, "not an amount"),
        (Decimal("NaN"), {"round_cents": True}, "finite"),
        ("1.234", {}, "two decimal places"),
        (None, {"round_cents": True}, "unsupported"),
    ],
)
def test_parse_amount_options_reject(value: object, options: dict, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        parse_amount(value, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1 207,50", "1207.50"), ("1\u00a0207,50 ₽", "1207.50"), ("500", "500.00"), (" 12.345 ", "12.34"),
     ("3916.1", "3916.10")],
)
def test_parse_search_amount_reads_what_a_person_types(text: str, expected: str) -> None:
    assert str(parse_search_amount(text)) == expected


@pytest.mark.parametrize("text", ["", "Оплата по счету 5", "0", "-5", "0,001", "1e3", "NaN", "inf", "1,234.56",
                                  "10000000000000000", "5 шт"])
def test_parse_search_amount_is_none_for_other_text(text: str) -> None:
    assert parse_search_amount(text) is None


@pytest.mark.parametrize(("value", "expected"), [(None, "0.00"), (Decimal("5"), "5.00"), (Decimal("-3.005"), "-3.00"),
                                                 (7, "7.00"), ("12000.0000", "12000.00"), (3916.5, "3916.50")])
def test_cents_rounds_stored_values(value: object, expected: str) -> None:
    assert str(cents(value)) == expected  # type: ignore[arg-type]


def test_money_errors_share_the_domain_root() -> None:
    assert issubclass(MoneyError, DomainError) and issubclass(MoneyError, ValueError)


@pytest.mark.parametrize(
    ("code", "alpha"),
    [("643", "RUB"), (643, "RUB"), ("810", "RUB"), ("840", "USD"), ("978", "EUR"), ("156", "CNY"), ("398", "KZT"),
     ("933", "BYN"), ("949", "TRY"), ("784", "AED"), ("356", "INR"), ("51", "AMD"), ("051", "AMD"), (" 643 ", "RUB"),
     ("826", "GBP"), ("860", "UZS"), ("rub", "RUB"), ("USD", "USD")],
)
def test_currency_alpha(code: object, alpha: str) -> None:
    assert currency_alpha(code) == alpha


@pytest.mark.parametrize("code", ["999", "0", "9999", "６４３", "XTS"])
def test_currency_alpha_leaves_unknown_codes_as_given(code: str) -> None:
    assert currency_alpha(code) == code.upper()


def test_currency_table_is_one_to_one_iso_4217() -> None:
    assert len(CURRENCIES) == 19 and len(set(CURRENCIES.values())) == len(CURRENCIES)
    for alpha, numeric in CURRENCIES.items():
        assert normalize_currency(alpha) == alpha and len(numeric) == 3 and numeric.isdigit()
        assert currency_alpha(numeric) == alpha


@pytest.mark.parametrize("currency", ["RU", "RUBL", "12A", "", "РУБ"])
def test_normalize_currency_rejects(currency: str) -> None:
    with pytest.raises(MoneyError):
        normalize_currency(currency)


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
