"""Issue #15, payment records: every amount the app applies leaves one paid payment record of that sum on the deal,
read back from the Bitrix24 sandbox; undo unpays and deletes it; exactly once after a worker dies; skipped, saying
why, where the portal did not grant scope `sale`."""
from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select

from b24app.pipeline import outbox
from b24app.sandbox.stack import APP_CLIENT_ID, APP_CLIENT_SECRET, link_bank, seed_crm
from b24app.storage.models import OutboxItem

from test_money_paidfield import FIELD, create_field
from test_money_partial import FUNNEL, PARTLY
from test_reconcile_e2e import deal, decided_not_sent, deliver_and_die, item, sync_now
from test_review_money import op_by_purpose
from test_web_admin import api, open_app, token_of
from test_web_placement import open_tab

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def records_of(st, deal_id: int) -> list[dict]:
    """The deal's payment records as the sandbox keeps them (with xmlId and sum)."""
    return [p for p in st.portal_state()["payments"] if p["entityTypeId"] == 2 and p["entityId"] == deal_id]


def listed(st, deal_id: int) -> list[dict]:
    """…and as Bitrix24's own API lists them (crm-item-payment-list.md)."""
    return st.rest("crm.item.payment.list", {"entityTypeId": 2, "entityId": deal_id})["result"]


def record_items(st) -> list[OutboxItem]:
    with st.ctx.db.session() as s:
        return list(s.scalars(select(OutboxItem).where(OutboxItem.kind == "payment_record").order_by(OutboxItem.id)))


def test_a_full_payment_leaves_one_paid_record_of_its_sum_and_the_field_equal(linked):
    create_field(linked)
    d = linked.deals[0]  # invoice 1207, 12 000
    linked.pay("12000.00", "Оплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    [rec] = records_of(linked, d["deal_id"])
    assert rec["paid"] == "Y" and Decimal(rec["sum"]) == Decimal("12000") and rec["currency"] == "RUB"
    assert rec["xmlId"].startswith("b24app:")
    [row] = listed(linked, d["deal_id"])
    assert row["paid"] == "Y" and Decimal(str(row["sum"])) == Decimal("12000") and row["id"] == rec["id"]
    assert deal(linked, d["deal_id"])[FIELD] == "12000|RUB"
    [it] = record_items(linked)
    assert it.status == "done" and it.result["payment_id"] == rec["id"]
    assert records_of(linked, linked.deals[1]["deal_id"]) == []   # other deals untouched
    tab = open_tab(linked, "deal", d["deal_id"], user=1, lang="en").get_data(as_text=True)
    assert 'data-record="made"' in tab and "Payment record made on the deal" in tab


def test_a_partial_payment_and_its_top_up_leave_two_records_summing_to_the_total_and_undo_removes_them(linked):
    token = token_of(open_app(linked, user=1, lang="ru"))
    assert api(linked, "POST", "/app/api/partial_stages/create", token, {"category_id": FUNNEL}).status_code == 200
    d = linked.deals[0]
    linked.pay("5000.00", "Оплата по счету № 1207, часть", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == PARTLY
    [first] = records_of(linked, d["deal_id"])
    assert first["paid"] == "Y" and Decimal(first["sum"]) == Decimal("5000")
    linked.pay("7000.00", "Доплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == f"DT31_{FUNNEL}:P"
    recs = records_of(linked, d["deal_id"])
    assert len(recs) == 2 and all(r["paid"] == "Y" for r in recs)
    assert sorted(Decimal(r["sum"]) for r in recs) == [Decimal("5000"), Decimal("7000")]
    assert sum(Decimal(r["sum"]) for r in recs) == Decimal("12000")
    assert len({r["xmlId"] for r in recs}) == 2

    top_up = op_by_purpose(linked, "Доплата по счету № 1207")
    assert api(linked, "POST", "/app/api/undo", token, {"operation": top_up.id}).status_code == 200
    sync_now(linked)
    assert [r["id"] for r in records_of(linked, d["deal_id"])] == [first["id"]]   # the top-up's record is gone
    assert item(linked, d["invoice_id"])["stageId"] == PARTLY
    part = op_by_purpose(linked, "Оплата по счету № 1207, часть")
    assert api(linked, "POST", "/app/api/undo", token, {"operation": part.id}).status_code == 200
    sync_now(linked)
    assert records_of(linked, d["deal_id"]) == [] and listed(linked, d["deal_id"]) == []
    with linked.ctx.db.session() as s:
        undos = list(s.scalars(select(OutboxItem).where(OutboxItem.kind == "payment_record_undo")))
    assert len(undos) == 2 and all(u.status == "done" for u in undos)
    assert sorted(u.payload["payment_id"] for u in undos) == sorted(r["id"] for r in recs)


def test_the_switch_off_makes_no_record(linked):
    token = token_of(open_app(linked, user=1, lang="ru"))
    r = api(linked, "POST", "/app/api/rules", token, {"payment_records": False})
    assert r.status_code == 200 and r.get_json()["rules"]["payment_records"] is False
    d = linked.deals[0]
    linked.pay("12000.00", "Оплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == f"DT31_{FUNNEL}:P"
    assert records_of(linked, d["deal_id"]) == [] and record_items(linked) == []


def test_without_scope_sale_no_record_the_rest_applied_and_the_admin_page_says_why(stack):
    scopes = "crm,placement,im,task,user_brief"   # the manifest's, without sale
    r = httpx.post(f"{stack.sandbox_url}/sandbox/apps", timeout=30, json={
        "client_id": APP_CLIENT_ID, "client_secret": APP_CLIENT_SECRET, "install_url": f"{stack.app_url}/install",
        "handler_url": f"{stack.app_url}/app", "scope": scopes})
    assert r.status_code == 200
    assert stack.install()["install_finish"]
    stack.deals = seed_crm(stack)
    assert 'id="link-ok"' in link_bank(stack).text
    create_field(stack)
    d = stack.deals[0]
    stack.pay("12000.00", "Оплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    sync_now(stack)
    assert item(stack, d["invoice_id"])["stageId"] == f"DT31_{FUNNEL}:P"    # the invoice is paid
    assert deal(stack, d["deal_id"])[FIELD] == "12000|RUB"                  # the «Оплачено» field works
    assert records_of(stack, d["deal_id"]) == []
    [it] = record_items(stack)
    assert it.status == "skipped" and it.result["needs_scope"] == "sale"
    page = open_app(stack, user=1, lang="en").get_data(as_text=True)
    assert 'id="records-need-sale"' in page and "scope sale" in page
    tab = open_tab(stack, "deal", d["deal_id"], user=1, lang="en").get_data(as_text=True)
    assert 'data-record="needs_sale"' in tab


def test_a_worker_killed_between_the_record_and_recording_it_leaves_exactly_one(linked):
    d = linked.deals[0]
    linked.pay("12000.00", "Оплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    portal = decided_not_sent(linked)

    deliver_and_die(linked.ctx, portal)   # the record and the stage reached Bitrix24; nothing of it recorded
    assert len(records_of(linked, d["deal_id"])) == 1
    with linked.ctx.db.session() as s:
        items = list(s.scalars(select(OutboxItem)))
        assert items and all(i.status == "sending" for i in items)
        for i in items:   # their leases expire
            i.lease_until = linked.ctx.clock.now()
    outbox.deliver(linked.ctx, portal)   # another worker takes over: it re-checks, makes no second record
    [rec] = records_of(linked, d["deal_id"])
    assert rec["paid"] == "Y" and Decimal(rec["sum"]) == Decimal("12000")
    assert item(linked, d["invoice_id"])["stageId"] == f"DT31_{FUNNEL}:P"
    [it] = record_items(linked)
    assert it.status == "skipped" and it.result["payment_id"] == rec["id"], it.result
    # the id found again is the one undo takes back
    token = token_of(open_app(linked, user=1, lang="ru"))
    op = op_by_purpose(linked, "Оплата по счету № 1207")
    assert api(linked, "POST", "/app/api/undo", token, {"operation": op.id}).status_code == 200
    sync_now(linked)
    assert records_of(linked, d["deal_id"]) == []


def test_a_half_made_record_found_after_a_crash_is_completed_not_made_again(linked):
    d = linked.deals[0]
    linked.pay("12000.00", "Оплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    portal = decided_not_sent(linked)
    deliver_and_die(linked.ctx, portal)
    [rec] = records_of(linked, d["deal_id"])
    assert linked.rest("crm.item.payment.unpay", {"id": rec["id"]})["result"] is True   # as if pay never ran
    with linked.ctx.db.session() as s:
        for i in s.scalars(select(OutboxItem)):
            i.lease_until = linked.ctx.clock.now()
    outbox.deliver(linked.ctx, portal)
    [again] = records_of(linked, d["deal_id"])
    assert again["id"] == rec["id"] and again["paid"] == "Y" and Decimal(again["sum"]) == Decimal("12000")
    [it] = record_items(linked)
    assert it.status == "done" and it.result["payment_id"] == rec["id"]


def test_an_installer_who_is_no_administrator_gets_no_record_and_the_rest_goes_on(linked):
    create_field(linked)
    r = linked.portal_http("POST", "/sandbox/users/1", json={"admin": False})   # the installer is demoted
    assert r.status_code == 200 and r.json()["admin"] is False
    d = linked.deals[0]
    linked.pay("12000.00", "Оплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == f"DT31_{FUNNEL}:P"
    assert deal(linked, d["deal_id"])[FIELD] == "12000|RUB"
    assert records_of(linked, d["deal_id"]) == []
    [it] = record_items(linked)
    assert it.status == "skipped" and it.result["needs_admin"] is True
    tab = open_tab(linked, "deal", d["deal_id"], user=2, lang="en").get_data(as_text=True)
    assert 'data-record="needs_admin"' in tab
    r = linked.portal_http("POST", "/sandbox/users", json={"id": 9, "name": "Admin", "admin": True})
    assert r.status_code == 200
    page = open_app(linked, user=9, lang="en").get_data(as_text=True)
    assert 'id="records-need-admin"' in page and "only an administrator" in page


def test_the_clients_credit_applied_is_a_record_of_its_own_and_its_undo_removes_it(linked):
    vector, second = linked.deals[0], linked.deals[3]   # ООО «Вектор»: 1207 (12 000), 1208 (3 000)
    linked.pay("13000.00", "Оплата по счету № 1207", payerInn=vector["inn"], payerName=vector["company"])
    sync_now(linked)
    [paid] = records_of(linked, vector["deal_id"])   # what went onto 1207; the surplus is the client's credit
    assert paid["paid"] == "Y" and Decimal(paid["sum"]) == Decimal("12000")
    assert records_of(linked, second["deal_id"]) == []
    token = token_of(open_app(linked, user=1, lang="ru"))
    r = api(linked, "POST", "/app/api/credits/apply", token, {"inn": vector["inn"], "currency": "RUB"})
    assert r.status_code == 200, r.get_json()
    sync_now(linked)
    [applied] = records_of(linked, second["deal_id"])
    assert applied["paid"] == "Y" and Decimal(applied["sum"]) == Decimal("1000") and applied["xmlId"] != paid["xmlId"]
    html = api(linked, "GET", "/app/api/credits", token).get_json()["html"]
    credit_id = int(html.split('data-credit="')[1].split('"')[0])
    r = api(linked, "POST", "/app/api/credits/undo", token, {"credit": credit_id})
    assert r.status_code == 200 and "payment_record" not in r.get_json()["not_reverted"]
    sync_now(linked)
    assert records_of(linked, second["deal_id"]) == []
    assert [p["id"] for p in records_of(linked, vector["deal_id"])] == [paid["id"]]   # the payment's own stays


def test_an_overpayment_kept_as_credit_leaves_the_record_and_the_field_at_what_the_invoice_took(linked):
    """The surplus of an overpayment is the client's credit, not money on this deal: the record and the «Оплачено»
    field both show the invoice's 12 000, and the 500 over it is counted where the credit is later applied."""
    create_field(linked)
    d = linked.deals[0]  # invoice 1207, 12 000
    linked.pay("12500.00", "Оплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    [rec] = records_of(linked, d["deal_id"])
    assert rec["paid"] == "Y" and Decimal(rec["sum"]) == Decimal("12000")
    assert deal(linked, d["deal_id"])[FIELD] == "12000|RUB"


def test_a_partial_payments_record_says_what_remains_due(linked):
    """The remaining balance is in the payment record too (issue #15), in the portal's language."""
    d = linked.deals[0]  # invoice 1207, 12 000
    linked.pay("5000.00", "Оплата по счету № 1207, часть", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    [rec] = records_of(linked, d["deal_id"])
    assert "1207" in rec["comments"] and "осталось 7" in rec["comments"] and "из 12" in rec["comments"]
    linked.pay("7000.00", "Доплата по счету № 1207", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    top_up = [r for r in records_of(linked, d["deal_id"]) if r["id"] != rec["id"]]
    assert len(top_up) == 1 and "оплачен полностью" in top_up[0]["comments"]
