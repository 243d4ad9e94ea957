"""Issue #15, part 3: the surplus of an overpayment is the client's credit (by INN): kept, shown in the deal tab and
the admin page, the manager told; applied by the admin (default) or automatically to the same payer's oldest open
invoice, each application a decision of its own that can be undone. Through the sandboxes and the app's API."""
from __future__ import annotations

import pytest

from test_reconcile_e2e import comments, item, notes_for, sync_now
from test_review_money import current_decision, op_by_purpose
from test_web_admin import api, open_app, token_of
from test_web_placement import open_tab

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
PAID = "DT31_2:P"
NBSP = "\u00a0"


def credits(st, token) -> dict:
    return {c["inn"]: c["balance"] for c in api(st, "GET", "/app/api/credits", token).get_json()["credits"]}


def tab(st, deal_id) -> str:
    return open_tab(st, "deal", deal_id, user=1, lang="ru").get_data(as_text=True)


def test_surplus_is_kept_shown_told_applied_by_the_admin_and_undone(linked):
    vector, second = linked.deals[0], linked.deals[3]   # ООО «Вектор»: 1207 (12 000), 1208 (3 000)
    inn = vector["inn"]
    linked.pay("13000.00", "Оплата по счету № 1207", payerInn=inn, payerName=vector["company"])
    sync_now(linked)
    source = op_by_purpose(linked, "Оплата по счету № 1207")
    assert current_decision(linked, source.id).outcome == "overpaid"
    token = token_of(open_app(linked, user=1, lang="ru"))
    assert credits(linked, token) == {inn: "1000.00"}
    assert any(f"Переплата 1{NBSP}000,00" in m and "аванс клиента" in m for m in notes_for(linked, vector["user"]))
    assert f"Аванс клиента (ИНН {inn}): 1{NBSP}000,00" in tab(linked, vector["deal_id"])
    assert item(linked, second["invoice_id"])["stageId"] != PAID  # default: waits for a person

    viewer = token_of(open_app(linked, user=3, lang="ru"))
    assert api(linked, "POST", "/app/api/credits/apply", viewer, {"inn": inn, "currency": "RUB"}).status_code == 403
    r = api(linked, "POST", "/app/api/credits/apply", token, {"inn": inn, "currency": "RUB"})
    assert r.status_code == 200, r.get_json()
    assert credits(linked, token) == {inn: "0.00"}
    assert "зачёл аванс клиента с ИНН 7712345678 в счёт 1208" in r.get_json()["html"]
    sync_now(linked)
    page = tab(linked, second["deal_id"])
    assert f"2{NBSP}000,00" in page and "Аванс клиента" in page  # remaining 2 000 after 1 000 of credit
    assert any("Зачтён аванс клиента" in c for c in comments(linked, second["deal_id"]))
    assert any("зачтён в счёт 1208" in m for m in notes_for(linked, second["user"]))

    # The source payment cannot be undone while its credit is on another invoice.
    r = api(linked, "POST", "/app/api/undo", token, {"operation": source.id})
    assert r.status_code == 409 and r.get_json()["error"] == "credit_in_use"
    [applied] = [row for row in api(linked, "GET", "/app/api/credits", token).get_json()["html"].split('data-credit="')[1:]]
    credit_id = int(applied.split('"')[0])
    r = api(linked, "POST", "/app/api/credits/undo", token, {"credit": credit_id})
    assert r.status_code == 200 and r.get_json()["not_reverted"] == ["notify", "timeline"]
    assert credits(linked, token) == {inn: "1000.00"}
    again = api(linked, "POST", "/app/api/credits/undo", token, {"credit": credit_id})
    assert again.status_code == 409 and again.get_json()["error"] == "nothing_to_undo"
    assert api(linked, "POST", "/app/api/undo", token, {"operation": source.id}).status_code == 200
    assert credits(linked, token) == {}  # the surplus went with the payment


def test_credit_applied_automatically_when_the_admin_says_so_and_a_top_up_pays_the_rest(linked):
    vector, second = linked.deals[0], linked.deals[3]
    token = token_of(open_app(linked, user=1, lang="ru"))
    assert api(linked, "POST", "/app/api/rules", token, {"credit_auto_apply": True}).status_code == 200
    linked.pay("13000.00", "Оплата по счету № 1207", payerInn=vector["inn"], payerName=vector["company"])
    sync_now(linked)
    assert credits(linked, token) == {vector["inn"]: "0.00"}
    assert "зачтён в счёт 1208 автоматически" in api(linked, "GET", "/app/api/credits", token).get_json()["html"]
    linked.pay("2000.00", "Доплата по счету № 1208", payerInn=vector["inn"], payerName=vector["company"])
    sync_now(linked)
    top_up = op_by_purpose(linked, "Доплата по счету № 1208")
    assert current_decision(linked, top_up.id).outcome == "paid"  # 3 000 - 1 000 of credit = 2 000 due
    assert item(linked, second["invoice_id"])["stageId"] == PAID


def test_a_payment_kept_as_credit_is_in_the_ledger_until_reopened(linked):
    d = linked.deals[0]
    linked.pay("2500.00", "Аванс по договору поставки", payerName=d["company"], payerInn=d["inn"])
    sync_now(linked)
    op = op_by_purpose(linked, "Аванс по договору поставки")
    token = token_of(open_app(linked, user=1, lang="ru"))
    assert api(linked, "POST", "/app/api/close", token, {"operation": op.id, "action": "credit",
                                                         "reason": ""}).status_code == 200
    assert credits(linked, token) == {d["inn"]: "2500.00"}
    assert api(linked, "POST", "/app/api/undo", token, {"operation": op.id}).status_code == 200
    assert credits(linked, token) == {}
