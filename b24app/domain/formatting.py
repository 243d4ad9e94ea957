"""Human money formatting shared by explanations and the web layer."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

__all__ = ["format_money", "language"]

NBSP = "\u00a0"
_RU_SYMBOLS = {"RUB": "₽"}


def language(lang: str | None) -> str:
    """"ru" or "en" from a locale tag ("ru-RU", "en_US"); anything else falls back to English."""
    base = (lang or "").replace("_", "-").split("-")[0].lower()
    return "ru" if base == "ru" else "en"


def format_money(amount: Decimal, currency: str, lang: str = "ru") -> str:
    """`12 000,00 ₽` (ru, no-break spaces) or `12,000.00 RUB` (en)."""
    value = Decimal(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    sign = "-" if value < 0 else ""
    digits = f"{abs(value):,.2f}"
    code = currency.upper()
    if language(lang) == "ru":
        digits = digits.replace(",", NBSP).replace(".", ",")
        return f"{sign}{digits}{NBSP}{_RU_SYMBOLS.get(code, code)}"
    return f"{sign}{digits} {code}"
