"""Issue #15, part 4 (first slice): the deal's «Оплачено» money field, created when the admin asks and kept equal
to what the app put on the deal's invoices, read back from the Bitrix24 sandbox; exactly once after a crash."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from b24app.storage.models import OutboxItem

from test_reconcile_e2e import deal, sync_now
from test_review_money import op_by_purpose
from test_web_admin import api, open_app, token_of

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
FIELD = "UF_CRM_B24APP_PAID"


def create_field(st) -> str:
    token = token_of(open_app(st, user=1, lang="ru"))
    viewer = token_of(open_app(st, user=3, lang="ru"))
    assert api(st, "POST", "/app/api/paid_field", viewer, {}).status_code == 403
    r = api(st, "POST", "/app/api/paid_field", token, {})
    assert r.status_code == 200 and r.get_json()["field"] == FIELD, r.get_json()
    return token


def test_the_sandbox_keeps_a_money_field_only_in_its_documented_format(linked):
    create_field(linked)
    deal_id = linked.deals[0]["deal_id"]
    for sent, shown in (("1700,00|RUB", ""), ("1700.00|руб", ""), ("1700.00|RUB", "1700|RUB"),
                        ("1750.25|RUB", "1750.25|RUB")):
        assert linked.rest("crm.deal.update", {"id": deal_id, "fields": {FIELD: sent}})["result"] is True
        assert deal(linked, deal_id).get(FIELD) == shown, sent


def test_paid_field_follows_payments_top_ups_and_undo(linked):
    token = create_field(linked)
    d = linked.deals[0]  # 1207, 12 000
    assert FIELD not in deal(linked, d["deal_id"]) or not deal(linked, d["deal_id"])[FIELD]
    linked.pay("5000.00", "Оплата по счету № 1207, часть", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    assert deal(linked, d["deal_id"])[FIELD] == "5000|RUB"
    linked.pay("7000.00", "Доплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    assert deal(linked, d["deal_id"])[FIELD] == "12000|RUB"
    top_up = op_by_purpose(linked, "Доплата по счету № 1207")
    assert api(linked, "POST", "/app/api/undo", token, {"operation": top_up.id}).status_code == 200
    sync_now(linked)
    assert deal(linked, d["deal_id"])[FIELD] == "5000|RUB"
    assert deal(linked, linked.deals[1]["deal_id"]).get(FIELD) in (None, "")  # other deals untouched


def test_a_worker_killed_after_sending_does_not_write_twice(linked):
    create_field(linked)
    d = linked.deals[0]
    linked.pay("5000.00", "Оплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    before = deal(linked, d["deal_id"])
    assert before[FIELD] == "5000|RUB"
    # As if the worker died after Bitrix24 took the update and before it recorded it: the item is still "sending".
    with linked.ctx.db.session() as s:
        [item_id] = s.scalars(select(OutboxItem.id).where(OutboxItem.kind == "deal_paid_sum"))
        s.execute(update(OutboxItem).where(OutboxItem.id == item_id).values(
            status="sending", result=None, lease_owner="dead-worker",
            lease_until=linked.ctx.clock.now() - timedelta(seconds=1)))
    sync_now(linked)
    with linked.ctx.db.session() as s:
        item = s.get(OutboxItem, item_id)
        assert item.status == "skipped" and "already shows" in item.result["why"]
    after = deal(linked, d["deal_id"])
    assert after[FIELD] == "5000|RUB" and after.get("DATE_MODIFY") == before.get("DATE_MODIFY")
