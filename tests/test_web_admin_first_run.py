"""The admin page on a fresh portal (a database of its own per test): what the first run shows."""
from __future__ import annotations

import re

import pytest

from test_web_admin import api, open_app, token_of

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_first_run_shows_the_success_stage_of_each_pipeline_as_the_default(installed):
    body = open_app(installed, user=1).get_data(as_text=True)
    assert 'id="stages-default"' in body                  # the admin sees the choice before saving anything
    assert re.search(r'<option value="WON"\s+selected>', body)
    assert re.search(r'<option value="C1:WON"\s+selected>', body)
    token = token_of(open_app(installed, user=1))
    assert api(installed, "POST", "/app/api/rules", token, {"paid_deal_stage": {"0": "", "1": "C1:WON"}}).status_code == 200
    body = open_app(installed, user=1).get_data(as_text=True)
    assert 'id="stages-default"' not in body
    assert re.search(r'<option value=""\s+selected>', body) and re.search(r'<option value="C1:WON"\s+selected>', body)


def test_without_a_bank_the_review_queue_does_not_claim_every_payment_was_matched(installed):
    body = open_app(installed, user=1).get_data(as_text=True)
    assert "каждый платёж нашёл свой счёт" not in body.lower()
    assert "Платежей пока нет" in body
    assert 'id="first-run"' in body and body.count('data-done="0"') == 4
