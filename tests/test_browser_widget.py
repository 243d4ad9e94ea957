"""The tab as a person sees it: Debian's chromium (Playwright, no browser download) opens the sandbox
portal's deal card, the widget loads in its iframe, the bank is linked by SMS in a popup, a payment is
injected and the invoice turns paid without a reload; a review payment is assigned and undone; languages.

Screenshots go to a temporary directory, or to docs/screenshots with B24APP_UPDATE_SCREENSHOTS=1."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import BROWSER_STEP_MS as STEP, start_seeded_stack

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("B24APP_UPDATE_SCREENSHOTS") == "1":
        out = REPO / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def live(tmp_path):
    """Sandboxes + app + worker, installed, demo deals seeded, bank NOT linked yet."""
    st = start_seeded_stack(tmp_path, link=False, worker=True, sync_interval=2)
    yield st
    st.stop()


def open_deal(page, st, deal_id: int, user: int = 2, lang: str = "ru"):
    page.goto(f"{st.portal_url}/crm/deal/details/{deal_id}/?user={user}&tab=0&lang={lang}")
    frame = page.frame_locator("#app-frame")
    frame.locator("#b24app").wait_for()
    return frame


def invoice(frame, invoice_id: int):
    return frame.locator(f'[data-invoice="{invoice_id}"]')


def wait_attr(locator, name: str, value: str, timeout: float = STEP / 1000) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = locator.get_attribute(name, timeout=STEP)
        if last == value:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name}={last!r}, expected {value!r}")


def test_link_by_sms_then_a_payment_turns_the_invoice_paid_without_reload(page, live):
    from b24app.sandbox.stack import DEMO_INN, DEMO_KPP, DEMO_PHONE

    d = live.deals[0]  # invoice 1207, 12 000 ₽, responsible user 2
    frame = open_deal(page, live, d["deal_id"], user=1)  # linking the bank is for administrators (user 1)
    assert frame.locator("text=Подключите расчётный счёт в Т-Банке").is_visible()
    assert invoice(frame, d["invoice_id"]).get_attribute("data-status") == "awaiting"
    # The frame asked Bitrix24 to fit its height (BX24 shim records the messages on the iframe).
    page.wait_for_function("document.getElementById('app-frame').getAttribute('data-height') !== null")
    frame.locator("#b24app").evaluate("() => { window.__notReloaded = true; }")

    with page.expect_popup() as info:
        frame.locator('[data-action="link"]').first.click()
    popup = info.value
    popup.wait_for_load_state()
    popup.locator("#inn").fill(DEMO_INN)
    popup.locator("#kpp").fill(DEMO_KPP)
    popup.locator("#continue").click()
    popup.locator("#phone").fill(DEMO_PHONE)
    popup.locator("#submit").click()
    code = popup.locator("#sms-code").inner_text()
    popup.locator("#code").fill(code)
    popup.locator("#submit").click()
    popup.locator("#allow").click()
    popup.locator("#link-ok").wait_for()
    # The button closes its own window: the click may finish after the page is gone.
    try:
        popup.locator("#close").click(no_wait_after=True)
    except Exception as exc:  # playwright's TargetClosedError
        if "closed" not in str(exc).lower():
            raise
    deadline = time.monotonic() + STEP / 1000
    while not popup.is_closed() and time.monotonic() < deadline:
        page.wait_for_timeout(50)  # lets Playwright see the popup's close event (time.sleep would not)
    assert popup.is_closed()

    # The tab notices the closed popup and shows the linked state.
    frame.locator('[data-action="check"]:visible').wait_for()
    assert frame.locator('[data-action="link"]').count() == 0

    live.pay("12000.00", "Оплата по счету № 1207 от 01.11.2026, НДС не облагается",
             payerInn=d["inn"], payerName=d["company"])
    frame.locator('[data-action="check"]').click()
    wait_attr(invoice(frame, d["invoice_id"]), "data-status", "paid", timeout=40)
    card = invoice(frame, d["invoice_id"])
    assert "12 000,00 ₽" in card.locator('[data-field="paid"]').inner_text().replace("\u00a0", " ")
    assert card.locator('[role="progressbar"]').get_attribute("aria-valuenow") == "100"
    assert frame.locator("#b24app").evaluate("() => window.__notReloaded === true")
    card.locator("summary").first.click()
    assert "1207" in card.locator(".b24-reasons").inner_text()
    assert page.errors == []


def test_assign_a_review_payment_and_undo_it(page, live):
    from b24app.sandbox.stack import link_bank

    assert link_bank(live).status_code == 200
    d = live.deals[1]  # СЧ-00412, 48 500 ₽, INN 7801234567, user 2
    live.pay("15000.00", "Оплата по договору оказания услуг", payerInn=d["inn"], payerName=d["company"])
    frame = open_deal(page, live, d["deal_id"])
    review = frame.locator(".b24-review__item")
    deadline = time.monotonic() + 40
    while review.count() == 0 and time.monotonic() < deadline:
        frame.locator('[data-action="check"]').click()
        frame.locator('[data-action="check"]:enabled').wait_for(timeout=STEP)
    assert review.count() == 1, "the payment never reached the review list"
    op = review.first.get_attribute("data-operation")
    frame.locator(f'form[data-operation="{op}"] button[type="submit"]').click()
    card = invoice(frame, d["invoice_id"])
    card.locator(f'tr[data-operation="{op}"]').wait_for()
    wait_attr(card, "data-status", "partly_paid")
    assert frame.locator(".b24-review__item").count() == 0
    assert "Платёж привязан к счёту." in frame.locator("#flash").inner_text()

    undo = card.locator(f'tr[data-operation="{op}"] [data-action="undo"]')
    undo.click()
    assert undo.text_content().strip() == "Точно отменить?"  # a second click confirms; no browser dialog
    undo.click()
    frame.locator(f'.b24-review__item[data-operation="{op}"]').wait_for()
    assert card.locator(f'tr[data-operation="{op}"]').count() == 0
    wait_attr(card, "data-status", "review")
    assert page.errors == []


def test_language_switch_and_screenshots(page, live, shots):
    """ru and en from Bitrix24's LANG; also the screenshots of the widget and the admin page."""
    from b24app.sandbox.stack import APP_CLIENT_ID, link_bank

    assert link_bank(live).status_code == 200
    d = live.deals[1]
    # A second invoice on the deal, a partial payment and a payment waiting for review, for a full picture.
    item = live.rest("crm.item.add", {"entityTypeId": 31, "fields": {
        "title": "Счёт СЧ-00413 (монтаж)", "accountNumber": "СЧ-00413", "opportunity": "12500.00",
        "currencyId": "RUB", "parentId2": d["deal_id"], "assignedById": 2, "companyId": 2}})["result"]["item"]
    live.pay("20000.00", "Оплата по счету СЧ-00412 от 03.11.2026 (аванс 40%)", payerInn=d["inn"],
             payerName=d["company"])
    live.pay("12500.00", "Оплата по сч. СЧ-00413 за монтаж, без НДС", payerInn=d["inn"], payerName=d["company"])
    live.pay("7000.00", "Перевод по договору №12/24", payerInn=d["inn"], payerName=d["company"])

    frame = open_deal(page, live, d["deal_id"], lang="ru")
    deadline = time.monotonic() + 40
    while (invoice(frame, item["id"]).count() == 0 or frame.locator(".b24-review__item").count() == 0
           or invoice(frame, item["id"]).get_attribute("data-status") != "paid") and time.monotonic() < deadline:
        frame.locator('[data-action="check"]').click()
        frame.locator('[data-action="check"]:enabled').wait_for()
        time.sleep(0.3)
    assert invoice(frame, item["id"]).get_attribute("data-status") == "paid"
    ru_text = frame.locator("#b24app").inner_text()
    assert "Оплаты по счетам" in ru_text and "20 000,00 ₽" in ru_text.replace("\u00a0", " ")
    frame.locator("details.b24-why").first.evaluate("e => e.open = true")
    page.wait_for_timeout(300)
    page.locator("#app-frame").screenshot(path=str(shots / "widget-ru.png"))

    frame = open_deal(page, live, d["deal_id"], lang="en")
    en_text = frame.locator("#b24app").inner_text()
    assert "Invoice payments" in en_text and "20,000.00 RUB" in en_text
    assert "Оплаты по счетам" not in en_text
    frame.locator("details.b24-why").first.evaluate("e => e.open = true")
    page.wait_for_timeout(300)
    page.locator("#app-frame").screenshot(path=str(shots / "widget-en.png"))

    for lang in ("ru", "en"):
        page.goto(f"{live.portal_url}/marketplace/app/{APP_CLIENT_ID}/?user=1&lang={lang}")
        admin = page.frame_locator("#app-frame")
        admin.locator("#b24app[data-page='admin']").wait_for()
        title = admin.locator("h1").first.inner_text()
        assert title == ("Оплаты Т-Банка" if lang == "ru" else "T-Bank payments")
        assert admin.locator(".b24-review__item").count() >= 1
        page.wait_for_function("parseInt(document.getElementById('app-frame').style.height || '0') > 300")
        page.wait_for_timeout(300)
        page.locator("#app-frame").screenshot(path=str(shots / f"admin-{lang}.png"))
    assert page.errors == []
    for name in ("widget-ru", "widget-en", "admin-ru", "admin-en"):
        assert (shots / f"{name}.png").stat().st_size > 10_000


def test_an_open_tab_shows_a_reconciled_payment_within_two_seconds_and_asks_nothing_while_hidden(page, live):
    from sqlalchemy import select

    from b24app.storage.models import Allocation
    from b24app.sandbox.stack import link_bank

    assert link_bank(live).status_code == 200
    d = live.deals[0]
    answers: list[int] = []
    page.on("response", lambda r: answers.append(r.status) if "/placement/api/deal/" in r.url else None)
    frame = open_deal(page, live, d["deal_id"])
    frame.locator("#sync-line", has_text="Банк проверен").wait_for()   # the worker's first statement read
    page.wait_for_timeout(300)
    answers.clear()
    page.wait_for_timeout(4500)
    # Every 2 s a cheap conditional request, answered 304 "nothing new" (a 200 at most when the minute the
    # tab prints as the bank's check time rolls over).
    assert answers.count(304) >= 1 and answers.count(200) <= 1 and len(answers) >= 2, answers

    live.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"], payerName=d["company"])
    card = invoice(frame, d["invoice_id"])
    reconciled = shown = None
    deadline = time.monotonic() + 40
    while shown is None and time.monotonic() < deadline:
        if reconciled is None:
            with live.ctx.db.session() as s:
                if s.scalar(select(Allocation.id).where(Allocation.invoice_b24_id == d["invoice_id"])):
                    reconciled = time.monotonic()
        if card.get_attribute("data-status") == "paid":
            shown = time.monotonic()
        page.wait_for_timeout(50)
    assert reconciled is not None and shown is not None
    assert shown - reconciled < 2.5, f"the tab showed the payment {shown - reconciled:.1f} s after it was reconciled"

    # Hidden (another browser tab in front): no requests at all; visible again: one at once.
    frame.locator("#b24app").evaluate("""() => {
        Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
        document.dispatchEvent(new Event('visibilitychange')); }""")
    page.wait_for_timeout(300)
    before = len(answers)
    page.wait_for_timeout(4500)
    assert len(answers) == before
    frame.locator("#b24app").evaluate("""() => {
        Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'visible'});
        document.dispatchEvent(new Event('visibilitychange')); }""")
    page.wait_for_timeout(700)
    assert len(answers) == before + 1
    assert page.errors == []
