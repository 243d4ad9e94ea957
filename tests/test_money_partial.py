"""Issue #15, part 2: an underpaid invoice moves to the "partly paid" stage the admin chose (or asked the app to
create with crm.status.add) and on to its paid stage when topped up; undo moves it back. Through the sandboxes."""
from __future__ import annotations

import pytest

from test_reconcile_e2e import comments, item, notes_for, sync_now
from test_review_money import op_by_purpose
from test_web_admin import api, open_app, token_of
from test_web_placement import open_tab

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
FUNNEL = 2  # the sandbox's smart-invoice funnel
PARTLY = f"DT31_{FUNNEL}:PARTLY_PAID"


def invoice_stages(st) -> list[dict]:
    return st.rest("crm.status.list", {"filter": {"ENTITY_ID": f"SMART_INVOICE_STAGE_{FUNNEL}"}})["result"]


def test_admin_creates_the_partly_paid_stage_once_and_only_when_asked(linked):
    token = token_of(open_app(linked, user=1, lang="ru"))
    assert PARTLY not in {s["STATUS_ID"] for s in invoice_stages(linked)}  # nothing created by itself
    viewer = token_of(open_app(linked, user=3, lang="ru"))
    assert api(linked, "GET", "/app/api/partial_stages", viewer).status_code == 403
    assert api(linked, "POST", "/app/api/partial_stages/create", viewer, {"category_id": FUNNEL}).status_code == 403
    listing = api(linked, "GET", "/app/api/partial_stages", token).get_json()
    assert f'data-invoice-funnel="{FUNNEL}"' in listing["html"] and 'data-action="partialCreate"' in listing["html"]
    # a success or failure stage cannot be chosen as "partly paid"
    r = api(linked, "POST", "/app/api/rules", token, {"partial_invoice_stage": {str(FUNNEL): f"DT31_{FUNNEL}:P"}})
    assert r.status_code == 400 and r.get_json()["error"] == "partial_invoice_stage"

    for _ in range(2):  # a repeated click finds the stage, adds no second one
        r = api(linked, "POST", "/app/api/partial_stages/create", token, {"category_id": FUNNEL})
        assert r.status_code == 200, r.get_json()
    made = [s for s in invoice_stages(linked) if s["STATUS_ID"] == PARTLY]
    assert len(made) == 1 and made[0]["NAME"] == "Частично оплачен" and made[0]["SEMANTICS"] in (None, "")
    sorts = {s["STATUS_ID"]: int(s["SORT"]) for s in invoice_stages(linked)}
    assert sorts[f"DT31_{FUNNEL}:S"] < sorts[PARTLY] < sorts[f"DT31_{FUNNEL}:P"]  # before the paid stage
    rules = api(linked, "POST", "/app/api/rules", token, {}).get_json()["rules"]
    assert rules["partial_invoice_stage"] == {str(FUNNEL): PARTLY}
    r = api(linked, "POST", "/app/api/partial_stages/create", token, {"category_id": 999})
    assert r.status_code == 409 and r.get_json()["error"] == "unknown_funnel"


def test_underpaid_invoice_moves_to_partly_paid_then_to_paid_and_undo_moves_it_back(linked):
    token = token_of(open_app(linked, user=1, lang="ru"))
    assert api(linked, "POST", "/app/api/partial_stages/create", token, {"category_id": FUNNEL}).status_code == 200
    d = linked.deals[0]  # invoice 1207, 12 000
    linked.pay("5000.00", "Оплата по счету № 1207, часть", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == PARTLY
    assert any("Осталось оплатить 7\u00a0000,00" in m for m in notes_for(linked, d["user"]))
    assert any("Осталось 7\u00a0000,00" in c for c in comments(linked, d["deal_id"]))
    tab = open_tab(linked, "deal", d["deal_id"], user=1, lang="ru").get_data(as_text=True)
    assert "7\u00a0000,00" in tab

    linked.pay("7000.00", "Доплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == f"DT31_{FUNNEL}:P"

    top_up = op_by_purpose(linked, "Доплата по счету № 1207")
    assert api(linked, "POST", "/app/api/undo", token, {"operation": top_up.id}).status_code == 200
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == PARTLY
    first = op_by_purpose(linked, "Оплата по счету № 1207, часть")
    assert api(linked, "POST", "/app/api/undo", token, {"operation": first.id}).status_code == 200
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == f"DT31_{FUNNEL}:N"


def test_without_a_chosen_stage_an_underpaid_invoice_stays(linked):
    d = linked.deals[0]
    linked.pay("5000.00", "Оплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == f"DT31_{FUNNEL}:N"
