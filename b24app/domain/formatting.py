"""Human money formatting shared by explanations and the web layer."""
from __future__ import annotations

import unicodedata
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = ["format_money", "language", "visible_text"]

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


def visible_text(value: Any, limit: int | None = None) -> str:
    """Text a payer wrote, safe to show: control and bidi-override characters become visible `\\uXXXX`
    escapes (HTML escaping is the template's job), whitespace runs become one space."""
    text = "" if value is None else str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():  # the common case: nothing to escape (isprintable is False for Cc/Cf/Z*/Co/Cs)
        return text if "  " not in text else " ".join(text.split())
    out: list[str] = []
    for ch in text:
        if ch in "\t\r\n\u00a0":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs", "Zl", "Zp"):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return " ".join("".join(out).split())
