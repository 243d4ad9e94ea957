"""The admin page's first run in Debian's chromium: a checklist (link the bank → choose accounts → check the
rules → a first payment) ticks itself off step by step and disappears when all are done."""
from __future__ import annotations

import time

import pytest

from conftest import fresh_page, start_seeded_stack

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture
def live(tmp_path):
    st = start_seeded_stack(tmp_path, link=False, worker=True, sync_interval=2)
    yield st
    st.stop()


def steps(app) -> dict[str, str]:
    items = app.locator("#first-run [data-step]")
    return {items.nth(i).get_attribute("data-step"): items.nth(i).get_attribute("data-done")
            for i in range(items.count())}


def test_first_run_checklist_ticks_off_and_disappears(browser, live):
    from b24app.sandbox.stack import APP_CLIENT_ID, link_bank

    page = fresh_page(browser)
    context, errors = page.context, page.errors
    url = f"{live.portal_url}/marketplace/app/{APP_CLIENT_ID}/?user=1&lang=ru"
    try:
        page.goto(url)
        app = page.frame_locator("#app-frame")
        app.locator("#first-run").wait_for()
        assert steps(app) == {"link": "0", "accounts": "0", "rules": "0", "payment": "0"}
        review = app.locator("#review-list").inner_text()
        assert "каждый платёж нашёл свой счёт" not in review and "Платежей пока нет" in review

        assert 'id="link-ok"' in link_bank(live).text
        page.goto(url)
        app = page.frame_locator("#app-frame")
        app.locator("#first-run").wait_for()
        assert steps(app) == {"link": "1", "accounts": "1", "rules": "0", "payment": "0"}

        app.locator('#first-run a[data-tab-link="rules"]').click()
        app.locator("#rules-form button[type=submit]").click()
        app.locator('#first-run [data-step="rules"][data-done="1"]').wait_for()   # without a reload

        d = live.deals[0]
        live.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"], payerName=d["company"])
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            page.goto(url)
            app = page.frame_locator("#app-frame")
            app.locator("#b24app[data-page='admin']").wait_for()
            if app.locator("#first-run").count() == 0:
                break
            time.sleep(1)
        assert app.locator("#first-run").count() == 0
        assert errors == []
    finally:
        context.close()
