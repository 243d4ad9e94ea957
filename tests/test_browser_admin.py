"""The app page in Debian's chromium: search the review queue and assign in one click, save rules,
unwatch an account, backfill with a progress bar, filter the history; all inside the portal's iframe."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from conftest import fresh_page, open_admin_page, start_seeded_stack

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

@pytest.fixture
def live(tmp_path):
    st = start_seeded_stack(tmp_path, link=True, worker=True, sync_interval=2)
    yield st
    st.stop()


def wait_until(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met")


def count_states(st, states) -> int:
    from b24app.storage.models import Operation

    with st.ctx.db.session() as s:  # a short session each time: SQLite sessions hold the write lock
        return len(list(s.scalars(select(Operation.id).where(Operation.state.in_(states)))))


def watched(st, account_id: int) -> bool:
    from b24app.storage.models import BankAccount

    with st.ctx.db.session() as s:
        return s.get(BankAccount, account_id).watched


def test_admin_page_actions(browser, live):
    from b24app.storage.models import Operation
    from b24app.pipeline.rules import load_rules

    d = live.deals[2]  # INV-2025-0042, 7 350,50 ₽, ИП Петров
    live.pay("7350.50", "Оплата по договору монтажа", payerInn=d["inn"], payerName=d["company"])
    live.pay("1500.00", "Благотворительный взнос", payerName="Фонд «Рассвет»", payerInn="7700000011")
    wait_until(lambda: count_states(live, ("review", "unmatched")) >= 2)

    context, page, app, errors = open_admin_page(browser, live)
    try:
        assert app.locator("#review-list .b24-review__item").count() == 2

        # Search, then assign the payment that is left in one click.
        app.locator("#review-q").fill("монтаж")
        app.locator("#review-search button").click()
        wait_until(lambda: app.locator("#review-list .b24-review__item").count() == 1)
        item = app.locator("#review-list .b24-review__item").first
        op = int(item.get_attribute("data-operation"))
        item.locator("select").select_option(str(d["invoice_id"]))
        item.locator("form[data-action=assign] button[type=submit]").click()
        app.locator("#flash", has_text="Платёж привязан к счёту.").wait_for()
        with live.ctx.db.session() as s:
            assert s.get(Operation, op).state == "matched"
        app.locator("#review-q").fill("")
        app.locator("#review-search button").click()
        wait_until(lambda: app.locator("#review-list .b24-review__item").count() == 1)

        # The other payment (a charity, no invoice of its payer): the selector offers nothing until searched.
        other = app.locator("#review-list .b24-review__item").first
        assert other.locator("select option[value]:not([value=''])").count() == 0
        other.locator("input[data-invoice-search]").fill("1207")
        other.locator("select[data-found='1']").wait_for()
        assert other.locator("select option").first.get_attribute("value") == str(live.deals[0]["invoice_id"])

        # History filtered by the deal explains the manual assignment.
        app.locator("#tab-history").click()
        app.locator("#h-deal").fill(str(d["deal_id"]))
        app.locator("#history-filter button").click()
        app.locator("#history-list", has_text="вручную отнесён к счёту INV-2025-0042").wait_for()

        # Rules: stop notifying about paid invoices, move deals of the main pipeline to "won".
        app.locator("#tab-rules").click()
        app.locator("input[name=paid_notify]").uncheck()
        app.locator("select[data-pipeline='0']").select_option("WON")
        app.locator("input[name=sync_interval]").fill("120")
        app.locator("#rules-form button[type=submit]").click()
        app.locator("#flash", has_text="Сохранено.").wait_for()
        rules = load_rules(live.ctx.portals.find(live.member_id()).settings)
        assert rules.paid_notify is False and rules.paid_deal_stage == {"0": "WON", "1": "C1:WON"} and rules.sync_interval == 120

        # Unwatch the second account.
        app.locator("#tab-bank").click()
        boxes = app.locator("input[data-account]")
        second = int(boxes.nth(1).get_attribute("data-account"))
        boxes.nth(1).uncheck()
        app.locator("#flash", has_text="Сохранено.").wait_for()
        wait_until(lambda: not watched(live, second))

        # Backfill 7 days: the progress bar shows, then the worker finishes and it hides again; the message
        # says how many operations the load found that the app had not seen (one from 5 days ago).
        from datetime import datetime, timedelta, timezone
        old_day = (datetime.now(timezone.utc) - timedelta(days=5)).replace(microsecond=0).isoformat()
        live.pay("640.00", "Оплата за аренду", payerInn="7700000022", payerName="ООО «Давний»",
                 operationDate=old_day)
        app.locator("#backfill-days").fill("7")
        app.locator("form[data-action=backfill] button").click()
        app.locator("#sync-progress").wait_for(state="visible")
        app.locator("#flash", has_text="Выписка загружена: новых операций — 1.").wait_for(timeout=45_000)
        app.locator("#sync-progress").wait_for(state="hidden")

        # Unlink (two clicks): the message says so, not «Сохранено.».
        unlink = app.locator("[data-action=unlink]")
        unlink.click()
        unlink.click()
        app.locator("#flash", has_text="Т-Банк отключён").wait_for()
        assert "Сохранено" not in app.locator("#flash").inner_text()
        assert errors == []
    finally:
        context.close()


def test_admin_page_is_tabs_one_section_at_a_time(browser, live):
    context, page, app, errors = open_admin_page(browser, live)
    try:
        tabs = app.locator("[role=tablist] [role=tab]")
        assert [tabs.nth(i).inner_text().split(" ·")[0] for i in range(tabs.count())] == \
            ["Банк", "Очередь разбора", "Правила", "История"]
        for name, visible in (("bank", "#bank-card"), ("review", "#review-list"), ("rules", "#rules-form"),
                              ("history", "#history-list")):
            app.locator(f"#tab-{name}").click()
            assert app.locator(f"#tab-{name}").get_attribute("aria-selected") == "true"
            assert app.locator(visible).is_visible()
            assert app.locator(".b24-tabpanel:visible").count() == 1
            height = app.locator("#b24app").evaluate("e => e.getBoundingClientRect().height")
            assert height < 1600, f"the {name} tab is {height:.0f} px tall"
        assert errors == []
    finally:
        context.close()


def test_history_is_one_line_per_decision_with_its_actions_folded(browser, live):
    from b24app.storage.models import OutboxItem
    from b24app.sandbox.stack import APP_CLIENT_ID

    for d in live.deals[:2]:
        live.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"], payerName=d["company"])

    def sent() -> int:
        with live.ctx.db.session() as s:
            return len(list(s.scalars(select(OutboxItem.id).where(OutboxItem.status == "done"))))
    wait_until(lambda: count_states(live, ("matched",)) >= 2 and sent() >= 6, timeout=40)

    page = fresh_page(browser)
    context = page.context
    try:
        page.goto(f"{live.portal_url}/marketplace/app/{APP_CLIENT_ID}/?user=1&lang=ru")
        app = page.frame_locator("#app-frame")
        app.locator("#tab-history").click()
        app.locator("#history-list").wait_for()
        lines = app.locator("#history-list .b24-history > li")
        assert lines.count() == 2
        for i in range(2):
            assert lines.nth(i).evaluate("e => e.getBoundingClientRect().height") < 60   # one line each
            assert not lines.nth(i).locator(".b24-history__actions").is_visible()
        first = lines.first
        assert "действий:" in first.locator("summary").inner_text()
        first.locator("summary").click()
        actions = first.locator(".b24-history__actions")
        assert actions.is_visible() and "Счёт переведён в стадию «Оплачен» — выполнено" in actions.inner_text()
        # Filter by outcome still works on the folded list.
        app.locator("#h-outcome").select_option("underpaid")
        app.locator("#history-filter button").click()
        app.locator("#history-list", has_text="Решений пока нет").wait_for()
    finally:
        context.close()
