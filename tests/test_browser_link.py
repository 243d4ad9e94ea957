"""The bank-link popup in Debian's chromium: a mistyped INN is shown in red next to the field at once,
before the user is sent to T-Bank's phone and SMS steps; a failed link offers a way back."""
from __future__ import annotations

import pytest

from conftest import fresh_page, start_seeded_stack

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
RED = "rgb(255, 87, 82)"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    st = start_seeded_stack(tmp_path_factory.mktemp("link"), link=False)
    yield st
    st.stop()


@pytest.fixture
def page(browser):
    """A narrow page (600×800): the link popup's layout at a phone-like width."""
    pg = fresh_page(browser, width=600, height=800)
    yield pg
    pg.context.close()


def color(locator) -> str:
    return locator.evaluate("e => getComputedStyle(e).color")


def test_wrong_inn_is_red_next_to_the_field_at_once_and_on_the_servers_answer(page, live):
    from b24app.sandbox.stack import link_ticket

    page.goto(f"{live.app_url}/bank/start?ticket={link_ticket(live)}")
    error = page.locator("#inn-error")
    assert not error.is_visible()
    page.locator("#inn").fill("7701234567")          # one digit off
    page.locator("#kpp").focus()                      # leaving the field checks it
    assert error.is_visible() and "контрольное число" in error.inner_text()
    assert color(error) == RED
    assert page.locator("#inn").get_attribute("aria-invalid") == "true"
    page.locator("#continue").click()
    assert "/bank/start" in page.url                  # still here, not at T-Bank's phone page
    page.locator("#inn").fill("7701234560")
    page.locator("#inn").blur()
    assert not error.is_visible()

    # Without the script (the server's own check): the same message, also red.
    with page.expect_navigation():  # the server's page replaces this one (not only "loaded": it already was)
        page.evaluate("document.getElementById('requisites').setAttribute('novalidate', '');"
                      "document.getElementById('inn').value = '7701234567';"
                      "HTMLFormElement.prototype.submit.call(document.getElementById('requisites'))")
    error = page.locator("#inn-error")
    assert error.get_attribute("data-error") == "checksum" and error.is_visible()
    assert color(error) == RED
    assert page.errors == []


def test_wrong_sms_three_times_ends_on_a_page_with_try_again_and_close(page, live):
    from b24app.sandbox.stack import DEMO_INN, DEMO_KPP, DEMO_PHONE, link_ticket

    page.goto(f"{live.app_url}/bank/start?ticket={link_ticket(live)}")
    page.locator("#inn").fill(DEMO_INN)
    page.locator("#kpp").fill(DEMO_KPP)
    page.locator("#continue").click()
    page.locator("#phone").fill(DEMO_PHONE)
    page.locator("#submit").click()
    right = page.locator("#sms-code").inner_text()
    for _ in range(3):
        page.locator("#code").fill("0000" if right != "0000" else "1111")
        page.locator("#submit").click()
    page.locator("#back-to-app").click()
    page.locator("#link-failed").wait_for()
    assert "слишком много раз" in page.locator("#link-why").inner_text()
    assert page.locator("#retry").is_visible() and page.locator("#close").is_visible()
    page.locator("#retry").click()
    page.locator("#inn").wait_for()
    assert "/bank/start" in page.url
    assert page.errors == []


def open_deal(page, st, deal_id: int, user: int, lang: str = "ru"):
    page.goto(f"{st.portal_url}/crm/deal/details/{deal_id}/?user={user}&tab=0&lang={lang}")
    frame = page.frame_locator("#app-frame")
    frame.locator("#b24app").wait_for()
    return frame


def test_a_deal_owner_who_is_not_an_administrator_is_told_to_ask_one(page, live):
    d = live.deals[0]                                  # responsible: user 2, not an administrator
    frame = open_deal(page, live, d["deal_id"], user=2)
    assert frame.locator("#ask-admin").inner_text() == "Попросите администратора подключить Т-Банк."
    assert frame.locator('[data-action="link"]').count() == 0
    admin = open_deal(page, live, d["deal_id"], user=1)
    assert admin.locator('[data-action="link"]').is_visible() and admin.locator("#ask-admin").count() == 0
    assert page.errors == []


def test_the_tab_is_as_tall_as_its_content_no_empty_band_below(page, live):
    from b24app.banklinks import tbank as banklink
    from b24app.sandbox.stack import link_bank

    assert 'id="link-ok"' in link_bank(live).text
    deal_id = live.rest("crm.deal.add", {"fields": {"TITLE": "Пустая сделка", "ASSIGNED_BY_ID": 2}})["result"]
    frame = open_deal(page, live, deal_id, user=2)   # a short tab: linked, no invoice yet
    page.wait_for_function("document.getElementById('app-frame').getAttribute('data-height') !== null")
    page.wait_for_timeout(500)

    def band() -> int:
        page.wait_for_timeout(400)
        content = frame.locator("#b24app").evaluate("e => Math.ceil(e.getBoundingClientRect().bottom)")
        height = page.evaluate("parseInt(document.getElementById('app-frame').style.height)")
        return height - content

    assert 0 <= band() <= 24
    # Content that grows (a payment arrives, a reason unfolds) and shrinks again: the frame follows both ways.
    frame.locator("#b24app").evaluate("e => { const d = document.createElement('div'); d.id = 'grow';"
                                      " d.style.height = '700px'; e.appendChild(d); }")
    assert 0 <= band() <= 24
    frame.locator("#grow").evaluate("e => e.remove()")
    assert 0 <= band() <= 24
    portal = live.ctx.portals.find(live.member_id())
    for link_id in {a["link_id"] for a in _accounts(live)}:
        banklink.unlink(live.ctx, portal.id, link_id)
    assert page.errors == []


def _accounts(st) -> list[dict]:
    from sqlalchemy import select

    from b24app.storage.models import BankAccount
    with st.ctx.db.session() as s:
        return [{"link_id": a.link_id} for a in s.scalars(select(BankAccount))]
