"""One table of reason texts (domain/explain.py): a stored reason reads the same whether the tab, the admin page
or a message renders it, and every entry of the table is reachable. Pure: no server starts."""
from __future__ import annotations

import pytest

from b24app.domain.explain import _PEOPLE_CODES, _TEMPLATES, explain_reason, explain_reasons
from b24app.domain.matching import Reason

PARAMS = {"user_id": 3, "invoice": "СЧ-1", "amount": "10.00", "currency": "RUB", "remaining": "5.00",
          "reason": "возврат", "inn": "7701234567", "not_reverted": ["notify"]}


@pytest.mark.parametrize("lang", ["ru", "en"])
@pytest.mark.parametrize("code", _PEOPLE_CODES)
def test_a_reason_a_person_caused_reads_the_same_from_either_entry_point(code, lang):
    one = explain_reason(Reason(code, dict(PARAMS)), lang)
    [listed] = explain_reasons([{"code": code, "params": dict(PARAMS)}], lang, "RUB")
    assert one != code and not one.startswith(f"{code} (") and "{" not in one, one  # not the fallback
    assert listed == one[:1].upper() + one[1:]


def test_people_are_named_where_the_page_knows_them():
    [text] = explain_reasons([{"code": "undone", "params": {"user_id": 3}}], "en", names={"3": "Ann Lee"})
    assert text == "The match was undone by Ann Lee"


@pytest.mark.parametrize("lang", ["ru", "en"])
def test_ru_and_en_tables_name_the_same_reasons(lang):
    assert set(_TEMPLATES[lang]) == set(_TEMPLATES["ru"])
