"""The review queue in Debian's chromium, as a new admin uses it: a second payment of a paid invoice is shown as
a likely double payment with nothing pre-selected and the paid invoice behind "pay over"; a payment that is no
invoice payment is closed with a reason, found under the closed filter and reopened."""
from __future__ import annotations

import os

import pytest

from conftest import fresh_page, open_admin_page, start_seeded_stack
from test_browser_admin import count_states, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
SHOTS = os.environ.get("B24APP_REVIEW_SHOTS", "")


@pytest.fixture
def live(tmp_path):
    st = start_seeded_stack(tmp_path, link=True, worker=True, sync_interval=2)
    yield st
    st.stop()


def state_of(st, op_pk: int) -> str:
    from b24app.storage.models import Operation

    with st.ctx.db.session() as s:
        return s.get(Operation, op_pk).state


def test_double_payment_and_closing_a_review_item_in_the_admin_page(browser, live):
    d = live.deals[0]  # 1207, 12 000 ₽, ООО «Вектор»
    purpose = f"Оплата по счету № {d['number']}"
    live.pay(d["amount"], purpose, payerInn=d["inn"], payerName=d["company"])
    wait_until(lambda: count_states(live, ("matched",)) >= 1)
    wait_until(lambda: live.rest("crm.item.get", {"entityTypeId": 31, "id": d["invoice_id"]})
               ["result"]["item"]["stageId"] == "DT31_2:P")
    live.pay(d["amount"], purpose, payerInn=d["inn"], payerName=d["company"])  # the client pays again
    live.pay("1500.00", "Благотворительный взнос", payerName="Фонд «Рассвет»")
    wait_until(lambda: count_states(live, ("review", "unmatched")) >= 2)

    context, page, app, errors = open_admin_page(browser, live, height=1000)
    try:
        double = app.locator("#review-list .b24-review__item", has_text="повторная оплата")
        double.wait_for()
        assert "Счёт 1207 уже оплачен — вероятно, повторная оплата" in double.inner_text()
        assert double.locator("select").input_value() == ""           # nothing pre-selected
        op = int(double.get_attribute("data-operation"))

        # One click on "Assign" does nothing but ask for an invoice.
        double.locator("form[data-action=assign] button[type=submit]").click()
        app.locator("#flash", has_text="Выберите счёт").wait_for()
        # The paid invoice is there only under "pay over", which must be ticked first.
        double.locator("select").select_option(str(d["invoice_id"]))
        over = double.locator("[data-pay-over]")
        over.wait_for(state="visible")
        double.locator("form[data-action=assign] button[type=submit]").click()
        app.locator("#flash", has_text="сверх оплаты").wait_for()
        assert state_of(live, op) == "review"
        if SHOTS:
            page.locator("#app-frame").screenshot(path=os.path.join(SHOTS, "review-double-payment-ru.png"))

        # The donation is no invoice payment: close it with a reason; it leaves the open queue.
        gift = app.locator("#review-list .b24-review__item", has_text="Благотворительный взнос")
        gift_op = int(gift.get_attribute("data-operation"))
        gift.locator("details.b24-close summary").click()
        gift.locator("input[name=reason]").fill("пожертвование фонду")
        gift.locator("form[data-action=close] button[type=submit]").click()
        app.locator("#flash", has_text="это не оплата счёта").wait_for()
        wait_until(lambda: state_of(live, gift_op) == "ignored")
        wait_until(lambda: app.locator(f'#review-list [data-operation="{gift_op}"]').count() == 0)

        # Under "closed" it is listed with its reason, and undo brings it back.
        app.locator("#review-state").select_option("closed")
        app.locator("#review-search button[type=submit]").click()
        closed = app.locator(f'#review-list .b24-review__item[data-operation="{gift_op}"]')
        closed.wait_for()
        assert "пожертвование фонду" in closed.inner_text()
        if SHOTS:
            page.locator("#app-frame").screenshot(path=os.path.join(SHOTS, "review-closed-ru.png"))
        undo = closed.locator("[data-action=undo]")
        undo.click()
        undo.click()  # the second click confirms
        app.locator("#flash", has_text="снова ждёт разбора").wait_for()
        wait_until(lambda: state_of(live, gift_op) == "unmatched")
        assert errors == []
    finally:
        context.close()


def test_deal_tab_after_relink_with_nothing_watched_and_after_undo(browser, live):
    """The tab says plainly that no account is watched and lets an admin tick one; after an undo the invoice's
    badge is no longer «Оплачен» beside 0,00 ₽ and the deal is back in its stage."""
    from b24app.banklinks import tbank as banklink
    from b24app.storage.models import BankAccount, BankLink
    from b24app.pipeline.rules import save_rules
    from b24app.sandbox.stack import link_bank
    from sqlalchemy import select

    portal = live.ctx.portals.find(live.member_id())
    save_rules(live.ctx, portal.id, {"paid_deal_stage": {"0": "WON"}})
    d = live.deals[0]
    stage_before = live.rest("crm.deal.get", {"id": d["deal_id"]})["result"]["STAGE_ID"]
    live.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"], payerName=d["company"])
    wait_until(lambda: live.rest("crm.deal.get", {"id": d["deal_id"]})["result"]["STAGE_ID"] == "WON")

    page = fresh_page(browser)
    context, errors = page.context, page.errors
    try:
        # Undo in the tab (admin): the money, the invoice stage, the badge and the deal stage all go back.
        page.goto(f"{live.portal_url}/crm/deal/details/{d['deal_id']}/?user=1&tab=0&lang=ru")
        frame = page.frame_locator("#app-frame")
        card = frame.locator(f'[data-invoice="{d["invoice_id"]}"]')
        card.wait_for()
        wait_until(lambda: card.get_attribute("data-status") == "paid")
        undo = card.locator("[data-action=undo]")
        undo.click()
        undo.click()
        frame.locator("#flash", has_text="Уже отправлено и не отменено: сообщение в чат").wait_for()
        wait_until(lambda: live.rest("crm.deal.get", {"id": d["deal_id"]})["result"]["STAGE_ID"] == stage_before)
        wait_until(lambda: live.rest("crm.item.get", {"entityTypeId": 31, "id": d["invoice_id"]})
                   ["result"]["item"]["stageId"] == "DT31_2:N")
        page.reload()
        card = page.frame_locator("#app-frame").locator(f'[data-invoice="{d["invoice_id"]}"]')
        card.wait_for()
        assert card.get_attribute("data-status") != "paid"
        assert "Оплачен" not in card.locator(".b24-invoice__head").inner_text()

        # Unwatch everything, unlink, link again: the tab says no account is watched, and an admin ticks one.
        with live.ctx.db.session() as s:
            link_id = s.scalar(select(BankLink.id))
        banklink.set_watched(live.ctx, portal.id, set())
        banklink.unlink(live.ctx, portal.id, link_id)
        assert 'id="no-watched"' in link_bank(live).text
        page.reload()
        frame = page.frame_locator("#app-frame")
        frame.locator("#no-watched").wait_for()
        assert frame.locator("#sync-line").inner_text().strip() == "Ни один счёт в банке не отслеживается"
        frame.locator("#no-watched input[data-account]").first.check()
        frame.locator("#flash", has_text="Сохранено.").wait_for()
        with live.ctx.db.session() as s:
            assert s.scalar(select(BankAccount.id).where(BankAccount.watched.is_(True))) is not None
        frame.locator("#no-watched").wait_for(state="detached")
        if SHOTS:
            page.screenshot(path=os.path.join(SHOTS, "tab-after-undo-ru.png"))
        assert errors == []
    finally:
        context.close()
