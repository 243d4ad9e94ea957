"""Language of every page: Flask-Babel catalogs (ru, en), chosen from Bitrix24's LANG, plus locale formatting."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date, format_datetime, format_skeleton
from babel.numbers import format_decimal
from flask import g, has_request_context, request
from flask_babel import Babel, gettext, lazy_gettext

from ..domain.formatting import format_money

LANGS = ("ru", "en")
DEFAULT_LANG = "ru"
DEFAULT_TZ = "Europe/Moscow"
TRANSLATIONS = Path(__file__).resolve().parents[1] / "translations"


def pick_lang(raw: str | None, fallback: str | None = None) -> str:
    """Bitrix24's LANG ("ru", "en", "de", "ua"...) mapped to a catalog: absent -> fallback or ru, other -> en."""
    value = (raw or "").strip().lower()[:2]
    if not value:
        value = (fallback or DEFAULT_LANG).strip().lower()[:2]
    if value in LANGS:
        return value
    return "ru" if value in ("ua", "by", "kz") else "en"


def current_lang() -> str:
    """The language of this request: the frame's, else `?LANG=`, else Russian."""
    if not has_request_context():
        return DEFAULT_LANG
    lang = g.get("lang")
    if lang in LANGS:
        return lang
    return pick_lang(request.args.get("LANG") or request.args.get("lang"))


def set_lang(lang: str) -> None:
    g.lang = pick_lang(lang)
    from flask_babel import refresh
    refresh()


def current_tz() -> ZoneInfo:
    name = g.get("tz") if has_request_context() else None
    try:
        return ZoneInfo(name or DEFAULT_TZ)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TZ)


def money(amount: Decimal | int | str | None, currency: str = "RUB", lang: str | None = None) -> str:
    """`1 234,50 ₽` in Russian, `1,234.50 RUB` in English."""
    return format_money(Decimal(str(amount if amount is not None else "0")), currency or "RUB",
                        lang or current_lang())


def number(value, lang: str | None = None) -> str:
    return format_decimal(value, locale=lang or current_lang())


def when(value: datetime | None, fmt: str = "short", lang: str | None = None) -> str:
    """A date and time in the user's zone, formatted for the locale."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return _spaced(format_datetime(value, fmt, tzinfo=current_tz(), locale=lang or current_lang()))


def _spaced(text: str) -> str:
    """CLDR's narrow no-break space (U+202F, «2026 г.», «12:00 PM») is drawn as nothing by many fonts:
    use the ordinary no-break space, which every font shows and which still keeps the parts together."""
    return text.replace("\u202f", "\u00a0")


def day(value: datetime | date | None, fmt: str = "medium", lang: str | None = None) -> str:
    """A calendar date in the user's zone; `fmt` is a Babel format or "day_month" (28 нояб. / Nov 28)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(current_tz()).date()
    lang = lang or current_lang()
    cache = _memo("day")  # a tab lists many payments of the same few days
    key = (value, fmt, lang)
    if key not in cache:
        cache[key] = _spaced(format_skeleton("MMMd", value, locale=lang) if fmt == "day_month" else
                             format_date(value, fmt, locale=lang))
    return cache[key]


BANK_NAMES = {"tbank": lazy_gettext("T-Bank"), "tochka": lazy_gettext("Tochka"), "file": lazy_gettext("1C file")}


def bank_name(kind: str) -> str:
    """A source of payments by name: T-Bank, Tochka, 1C file (another kind as it is)."""
    name = BANK_NAMES.get(kind)
    return str(name) if name is not None else kind


def payment_bank(bank: tuple[str, str]) -> str:
    """The deal tab's label of where a payment came from, (bank, how) of queries.account_sources.bank_label:
    "T-Bank", "T-Bank, 1C file", "1C file". Kept per request: a tab lists hundreds of payments of one or two banks."""
    cache = _memo("payment_bank")
    key = (tuple(bank), current_lang())
    if key not in cache:
        kind, how = bank
        cache[key] = gettext("1C file") if kind == "file" else \
            gettext("%(bank)s, 1C file", bank=bank_name(kind)) if how == "file" else bank_name(kind)
    return cache[key]


def _memo(name: str) -> dict:
    """A per-request cache (nothing survives the request)."""
    if not has_request_context():
        return {}
    memo = g.setdefault("_i18n_memo", {})
    return memo.setdefault(name, {})


def init_app(app) -> None:
    Babel(app, default_locale=DEFAULT_LANG, default_translation_directories=str(TRANSLATIONS),
          locale_selector=current_lang, timezone_selector=lambda: str(current_tz()))
    from ..domain.explain import explain_reasons
    from ..domain.formatting import visible_text
    from .display import invoice_subtitle, mask_account

    def explain(reasons, currency: str = "RUB") -> list[str]:
        return explain_reasons(reasons, current_lang(), currency, names=g.get("people"))

    app.jinja_env.filters.update(money=money, number=number, when=when, day=day, plain=visible_text,
                                 explain=explain, masked=mask_account, subtitle=invoice_subtitle,
                                 bank_name=bank_name, payment_bank=payment_bank)
    from .people import person
    app.jinja_env.globals.update(current_lang=current_lang, person=person)
