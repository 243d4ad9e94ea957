"""Tochka linked as a person does it: chromium opens the deal tab, the link popup offers Tochka, the admin signs
in at the Tochka sandbox (phone, SMS code, permissions), and a payment turns the invoice paid in the tab."""
from __future__ import annotations

import pytest

from conftest import start_seeded_stack
from test_browser_widget import invoice, open_deal, wait_attr

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture
def live(tmp_path):
    st = start_seeded_stack(tmp_path, link=False, worker=True, sync_interval=2)
    yield st
    st.stop()


def test_link_tochka_by_its_consent_flow_then_a_payment_turns_the_invoice_paid(page, live):
    from b24app.sandbox.stack import DEMO_INN, DEMO_KPP, DEMO_PHONE

    d = live.deals[0]  # invoice 1207, 12 000 ₽
    frame = open_deal(page, live, d["deal_id"], user=1)
    with page.expect_popup() as info:
        frame.locator('[data-action="link"]').first.click()
    popup = info.value
    popup.wait_for_load_state()
    popup.locator("#link-tochka").click()
    popup.locator("#inn").fill(DEMO_INN)
    popup.locator("#kpp").fill(DEMO_KPP)
    popup.locator("#continue").click()            # → Tochka's sign-in page (the sandbox)
    popup.locator("#phone").fill(DEMO_PHONE)
    popup.locator("#submit").click()
    popup.locator("#code").fill(popup.locator("#sms-code").inner_text())
    popup.locator("#submit").click()
    assert popup.locator('input[name="permission"][value="ReadStatements"]').is_checked()
    popup.locator("#allow").click()
    popup.locator("#link-ok").wait_for()
    assert "Точка подключена" in popup.locator("#link-ok").inner_text()
    popup.close()

    live.pay_tochka("12000.00", "Оплата по счету № 1207 от 01.11.2026, НДС не облагается",
                    payer_inn=d["inn"], payer_name=d["company"])
    frame.locator('[data-action="check"]:visible').wait_for()
    frame.locator('[data-action="check"]').click()
    wait_attr(invoice(frame, d["invoice_id"]), "data-status", "paid", timeout=40)
    assert page.errors == []
