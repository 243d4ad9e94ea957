"""Catalogs complete and compiled, language picked from Bitrix24's LANG, numbers, money and dates per locale."""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal
from io import BytesIO
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from b24app.web import i18n

REPO = Path(__file__).resolve().parents[1]
TRANSLATIONS = REPO / "b24app" / "translations"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def catalog(lang: str):
    with open(TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f, locale=lang)


def extracted_ids() -> set[str]:
    """What the code and templates pass to gettext right now (the mapping in babel.cfg)."""
    from babel.messages.frontend import parse_mapping_cfg

    with open(TRANSLATIONS / "babel.cfg") as f:
        method_map, options_map = parse_mapping_cfg(f)
    return {msg[2] if isinstance(msg[2], str) else msg[2][0]
            for msg in extract_from_dir(str(REPO), method_map, options_map,
                                        keywords={"_": None, "gettext": None, "lazy_gettext": None})}


def test_every_ui_string_has_a_russian_translation_with_the_same_placeholders():
    ru = catalog("ru")
    ids = extracted_ids()
    assert len(ids) > 100
    in_catalog = {m.id for m in ru if m.id}
    assert ids <= in_catalog, f"run scripts/compile_translations.sh and translate: {sorted(ids - in_catalog)[:10]}"
    for m in ru:
        if not m.id:
            continue
        assert m.string, f"untranslated: {m.id!r}"
        assert not m.fuzzy, f"fuzzy: {m.id!r}"
        assert set(PLACEHOLDER.findall(m.id)) == set(PLACEHOLDER.findall(m.string)), m.id
        assert m.id.count("%%") == m.string.count("%%"), m.id


@pytest.mark.parametrize("lang", ["ru", "en"])
def test_compiled_catalogs_match_their_sources(lang):
    po = catalog(lang)
    expected = BytesIO()
    write_mo(expected, po)
    with open(TRANSLATIONS / lang / "LC_MESSAGES" / "messages.mo", "rb") as f:
        compiled = read_mo(f)
    got = {m.id: m.string for m in compiled if m.id}
    want = {m.id: m.string for m in read_mo(BytesIO(expected.getvalue())) if m.id}
    assert got == want, "the .mo is stale: run scripts/compile_translations.sh compile"


@pytest.mark.parametrize("raw, fallback, expected", [
    ("ru", None, "ru"), ("en", None, "en"), ("EN", None, "en"), ("de", None, "en"), ("ua", None, "ru"),
    ("", None, "ru"), (None, "en", "en"), ("", "de", "en"), ("ru_RU", None, "ru"),
])
def test_language_from_bitrix24_lang(raw, fallback, expected):
    assert i18n.pick_lang(raw, fallback) == expected


def test_money_and_numbers_per_locale():
    assert i18n.money(Decimal("1234.5"), "RUB", "ru") == "1\u00a0234,50\u00a0₽"
    assert i18n.money(Decimal("1234.5"), "RUB", "en") == "1,234.50 RUB"
    assert i18n.money(Decimal("-0.5"), "USD", "ru") == "-0,50\u00a0USD"
    assert i18n.number(Decimal("1234567.25"), "ru") == "1\u00a0234\u00a0567,25"
    assert i18n.number(Decimal("1234567.25"), "en") == "1,234,567.25"


@pytest.fixture
def app(tmp_path):
    from b24app import create_app

    return create_app(mode="test", data_dir=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}")


@pytest.mark.parametrize("lang, paid, month", [("ru", "Оплачено", "нояб."), ("en", "Paid", "Nov")])
def test_translations_and_dates_follow_the_request_language(app, lang, paid, month):
    from flask_babel import gettext

    moment = datetime(2026, 11, 27, 22, 30, tzinfo=timezone.utc)  # already the 28th in Moscow
    with app.test_request_context(f"/?LANG={lang}"):
        assert i18n.current_lang() == lang
        assert gettext("Paid") == paid
        assert "28" in i18n.day(moment) and month in i18n.day(moment)
        assert "01:30" in i18n.when(moment) or "1:30" in i18n.when(moment)
        assert i18n.day(date(2026, 11, 28), "day_month").startswith(("28", "Nov"))
        i18n.set_lang("en" if lang == "ru" else "ru")
        assert gettext("Paid") == ("Paid" if lang == "ru" else "Оплачено")


def test_jinja_filters_render_in_the_chosen_language(app):
    template = "{{ 12000|money('RUB') }} · {{ _('Paid') }} · {{ 'a\u202eb'|plain }}"
    with app.test_request_context("/?LANG=ru"):
        assert app.jinja_env.from_string(template).render() == "12\u00a0000,00\u00a0₽ · Оплачено · a\\u202eb"
    with app.test_request_context("/?LANG=en"):
        assert app.jinja_env.from_string(template).render() == "12,000.00 RUB · Paid · a\\u202eb"


def test_the_year_and_its_abbreviation_are_separated_by_a_space_every_font_shows(app):
    """Babel's CLDR data puts U+202F (narrow no-break space) in «2026 г.»; many fonts draw it as nothing,
    so people read «2026г.». A plain no-break space keeps the two together and visible."""
    moment = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    with app.test_request_context("/?LANG=ru"):
        assert i18n.day(moment) == "27 нояб. 2026\u00a0г."
        for text in (i18n.day(moment), i18n.when(moment, "medium"), i18n.day(date(2026, 1, 14), "long")):
            assert "\u202f" not in text and "2026\u00a0г." in text, repr(text)
