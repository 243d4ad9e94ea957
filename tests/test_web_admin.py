"""The app page (placement DEFAULT) over the real portal sandbox: bank card, rules with deal stages read
once and cached, review queue search and assignment, history, chart, backfill; admins only for changes."""
from __future__ import annotations

import html
import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import quote
from uuid import uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from b24app.pipeline import reconcile
from b24app.storage.models import BankAccount, Invoice, Operation, Portal
from b24app.queries.admin_page import daily_chart
from b24app.pipeline.rules import load_rules
from b24app.sandbox.stack import APP_CLIENT_ID
from b24app.web.charts import chart_geometry

from conftest import start_seeded_stack

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    st = start_seeded_stack(tmp_path_factory.mktemp("admin"), link=True)
    yield st
    st.stop()


def open_app(st, user: int = 1, lang: str = "ru", **override):
    page = httpx.get(f"{st.portal_url}/marketplace/app/{APP_CLIENT_ID}/", params={"user": user, "lang": lang},
                     timeout=30)
    m = re.search(r'<form id="app-form-0" method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    assert m, page.text[:300]
    fields = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', m.group(2))}
    fields.update(override)
    action = html.unescape(m.group(1))
    path = action.split("://", 1)[1].split("/", 1)[1]
    return st.flask_app.test_client().post("/" + path, data=fields)


def token_of(resp) -> str:
    m = re.search(r'id="b24app-config">(.*?)</script>', resp.get_data(as_text=True), re.S)
    return json.loads(m.group(1))["token"]


def api(st, method: str, url: str, token: str, body: dict | None = None):
    client = st.flask_app.test_client()
    headers = {"X-Frame-Token": token}
    return client.get(url, headers=headers) if method == "GET" else client.post(url, json=body, headers=headers)


def portal_row(st) -> Portal:
    return st.ctx.portals.find(st.member_id())


def add_payment(st, amount: str, purpose: str, *, inn: str | None = None, payer: str = "ООО «Ромашка»",
                when: datetime | None = None) -> int:
    portal = portal_row(st)
    with st.ctx.db.session() as s:
        account = s.scalar(select(BankAccount).where(BankAccount.portal_id == portal.id).order_by(BankAccount.id))
        op = Operation(portal_id=portal.id, account_id=account.id, operation_id=str(uuid4()), fingerprint=uuid4().hex,
                       bank_status="Transaction", is_credit=True, amount=Decimal(amount), currency="RUB",
                       operation_date=when or st.ctx.clock.now(), purpose=purpose, payer_name=payer, payer_inn=inn,
                       state="new")
        s.add(op)
        s.flush()
        pk = op.id
    reconcile.reconcile_portal(st.ctx, portal)
    return pk


# -- the page ------------------------------------------------------------------------------------------------
def test_page_renders_for_admin_and_reads_deal_stages_once(env):
    client = env.flask_app.test_client()
    assert client.get("/app").status_code == 400
    assert open_app(env, AUTH_ID="forged-0000000000000000000000000").status_code == 403
    first = open_app(env, user=1)
    assert first.status_code == 200
    body = first.get_data(as_text=True)
    for section in ('id="bank"', 'id="review"', 'id="rules"', 'id="history"', 'id="chart"', "<svg"):
        assert section in body
    assert f"frame-ancestors {env.sandbox_url}" in first.headers["Content-Security-Policy"]
    # Stages of both demo pipelines are offered for the "paid" rule.
    assert 'data-pipeline="0"' in body and 'data-pipeline="1"' in body and 'value="WON"' in body
    assert 'value="LOSE"' not in body  # a failure stage is no target for a paid invoice
    before = env.portal_state()["requests"]
    again = open_app(env, user=1)
    assert again.status_code == 200
    assert env.portal_state()["requests"] - before == 1, "stages must come from the cache on later renders"
    assert 'data-pipeline="1"' in again.get_data(as_text=True)


def test_non_admin_sees_but_cannot_change(env):
    resp = open_app(env, user=2)
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert '<fieldset disabled' in body and 'data-action="link"' not in body and 'data-action="unlink"' not in body
    token = token_of(resp)
    op = add_payment(env, "111.00", "Оплата без ссылки на счёт")
    assert api(env, "GET", "/app/api/review", token).status_code == 200
    assert api(env, "POST", "/app/api/rules", token, {"paid_notify": False}).status_code == 403
    inv = env.deals[0]["invoice_id"]
    assert api(env, "POST", "/app/api/assign", token, {"operation": op, "invoice": inv}).status_code == 403
    assert api(env, "POST", "/app/api/sync", token, {"days": 3}).status_code == 403
    assert api(env, "POST", "/app/api/stages", token, {}).status_code == 403
    assert load_rules(portal_row(env).settings).paid_notify is True


def test_rules_are_saved_and_validated(env):
    token = token_of(open_app(env, user=1))
    r = api(env, "POST", "/app/api/rules", token, {"paid_notify": False, "underpaid_task": True,
                                                  "paid_deal_stage": {"0": "WON", "1": ""}, "sync_interval": 120})
    assert r.status_code == 200, r.get_json()
    rules = load_rules(portal_row(env).settings)
    assert rules.paid_notify is False and rules.underpaid_task is True and rules.sync_interval == 120
    assert rules.paid_deal_stage == {"0": "WON", "1": ""}  # "" = the admin chose not to move pipeline 1's deals
    bad_stage = api(env, "POST", "/app/api/rules", token, {"paid_deal_stage": {"0": "C1:WON"}})
    assert bad_stage.status_code == 400
    assert api(env, "POST", "/app/api/rules", token, {"sync_interval": 1}).status_code == 400
    assert load_rules(portal_row(env).settings).paid_deal_stage == {"0": "WON", "1": ""}
    body = open_app(env, user=1).get_data(as_text=True)
    assert re.search(r'<option value="WON"\s+selected>', body)
    assert not re.search(r'name="paid_notify" data-rule\s+checked', body)
    api(env, "POST", "/app/api/rules", token, {"paid_notify": True, "underpaid_task": False, "paid_deal_stage": {}})


def test_review_queue_search_and_one_click_assign(env):
    token = token_of(open_app(env, user=1))
    a = add_payment(env, "1234.50", "Благотворительный взнос", payer="Фонд «Рассвет»")
    b = add_payment(env, "999.00", "Оплата за услуги связи", payer="ООО «Звезда»", inn="7707083893")
    queue = api(env, "GET", "/app/api/review", token).get_json()
    assert {a, b} <= set(queue["operations"])
    assert api(env, "GET", "/app/api/review?q=взнос", token).get_json()["operations"] == [a]
    assert api(env, "GET", "/app/api/review?q=звезда", token).get_json()["operations"] == [b]
    assert api(env, "GET", "/app/api/review?q=1 234,50", token).get_json()["operations"] == [a]
    assert api(env, "GET", "/app/api/review?q=7707083893", token).get_json()["operations"] == [b]
    found = api(env, "GET", "/app/api/review?q=нет такого", token).get_json()
    assert found["operations"] == [] and found["count"] == 0
    target = env.deals[2]  # INV-2025-0042, 7 350.50
    r = api(env, "POST", "/app/api/assign", token, {"operation": a, "invoice": target["invoice_id"]})
    assert r.status_code == 200 and r.get_json()["outcome"] == "underpaid"
    assert a not in api(env, "GET", "/app/api/review", token).get_json()["operations"]
    r = api(env, "POST", "/app/api/undo", token, {"operation": a})
    assert r.status_code == 200
    assert a in api(env, "GET", "/app/api/review", token).get_json()["operations"]
    assert api(env, "POST", "/app/api/assign", token, {"operation": a, "invoice": 10 ** 9}).status_code == 404
    assert api(env, "POST", "/app/api/undo", token, {"operation": 10 ** 9}).status_code == 404


def test_review_search_reads_an_amount_however_its_groups_are_spaced(env):
    """One amount parser (domain.money): the search box takes the thin and narrow no-break spaces other
    programs group digits with (a French locale copies "2\u202f468,10"), not only the plain and no-break ones."""
    token = token_of(open_app(env, user=1))
    a = add_payment(env, "2468.10", "Пожертвование", payer="Фонд «Закат»")
    for q in ("2\u202f468,10", "2\u2009468,10 ₽", "2\u00a0468.1", "2468,10"):
        found = api(env, "GET", f"/app/api/review?q={quote(q)}", token).get_json()["operations"]
        assert found == [a], q


def test_history_explains_why_a_deal_was_marked_paid(env):
    token = token_of(open_app(env, user=1, lang="en"))
    d = env.deals[0]  # invoice 1207, 12 000, deal of user 2
    op = add_payment(env, "12000.00", "Оплата по счету № 1207, НДС не облагается", inn=d["inn"], payer="ООО «Вектор»")
    with env.ctx.db.session() as s:
        assert s.get(Operation, op).state == "matched"
    r = api(env, "GET", f"/app/api/history?deal={d['deal_id']}", token).get_json()
    assert r["decisions"], r
    text = r["html"]
    assert "Paid in full" in text and "1207" in text
    assert "matches invoice 1207" in text  # the domain's explanation, in the user's language
    assert "Invoice moved to its paid stage" in text  # the Bitrix24 action it queued
    other = api(env, "GET", f"/app/api/history?deal={env.deals[3]['deal_id']}", token).get_json()
    assert not set(r["decisions"]) & set(other["decisions"])
    only_review = api(env, "GET", "/app/api/history?outcome=review", token).get_json()
    assert not set(r["decisions"]) & set(only_review["decisions"])
    assert api(env, "GET", "/app/api/history?outcome=nonsense", token).status_code == 400
    by_number = api(env, "GET", "/app/api/history?invoice=1207", token).get_json()
    assert set(r["decisions"]) <= set(by_number["decisions"])


def test_backfill_makes_watched_accounts_read_from_n_days_ago(env):
    token = token_of(open_app(env, user=1))
    assert api(env, "POST", "/app/api/sync", token, {"days": 0}).status_code == 400
    assert api(env, "POST", "/app/api/sync", token, {"days": "30"}).status_code == 400
    r = api(env, "POST", "/app/api/sync", token, {"days": 30})
    assert r.status_code == 202
    ids = r.get_json()["requested"]
    assert ids
    now = env.ctx.clock.now()
    with env.ctx.db.session() as s:
        for acc in s.scalars(select(BankAccount).where(BankAccount.id.in_(ids))):
            assert acc.watched and acc.sync_requested_at is not None
            assert now - timedelta(days=31) < acc.synced_until < now - timedelta(days=29)
    status = api(env, "GET", "/app/api/sync", token).get_json()
    assert status["accounts"] == len(ids) and status["pending"] == len(ids)


def test_refresh_stages_reads_bitrix24_again(env):
    token = token_of(open_app(env, user=1))
    before = env.portal_state()["requests"]
    r = api(env, "POST", "/app/api/stages", token, {})
    assert r.status_code == 200
    assert env.portal_state()["requests"] - before >= 1
    names = {p["id"]: [s["id"] for s in p["stages"]] for p in r.get_json()["pipelines"]}
    assert "C1:WON" in names[1] and "WON" in names[0]


def test_daily_chart_sums_received_and_matched_per_day(env):
    portal = portal_row(env)
    today = datetime.now(timezone.utc).astimezone(ZoneInfo("Europe/Moscow")).date()
    with env.ctx.db.session() as s:
        before = {d.day: d for d in daily_chart(s, portal.id, today)}
    three_days_ago = env.ctx.clock.now() - timedelta(days=3)
    add_payment(env, "100.00", "Без номера", when=three_days_ago)
    add_payment(env, "3000.00", "Оплата по счету 1208", inn=env.deals[3]["inn"], payer="ООО «Вектор»",
                when=three_days_ago)
    with env.ctx.db.session() as s:
        days = daily_chart(s, portal.id, today)
    assert len(days) == 30 and days[-1].day == today
    day = three_days_ago.astimezone(ZoneInfo("Europe/Moscow")).date()
    got = {d.day: d for d in days}[day]
    old = before.get(day)
    assert got.received - (old.received if old else 0) == Decimal("3100.00")
    assert got.matched - (old.matched if old else 0) == Decimal("3000.00")
    geom = chart_geometry(days)
    assert len(geom.bars) == 30 and max(b[3] for b in geom.bars) <= geom.height


def test_operations_of_another_portal_stay_invisible(env):
    with env.ctx.db.session() as s:
        other = Portal(member_id="other-" + uuid4().hex[:8], domain="o.example", client_endpoint="https://o.example/rest/",
                       server_endpoint="https://oauth.example/rest/", status="installed", settings={})
        s.add(other)
        s.flush()
        from b24app.storage.models import BankLink
        link = BankLink(portal_id=other.id, kind="static", inn="7700000001", kpp="0")
        s.add(link)
        s.flush()
        acc = BankAccount(portal_id=other.id, link_id=link.id, account_number="40702810000000000002", watched=True)
        s.add(acc)
        s.flush()
        s.add(Invoice(portal_id=other.id, b24_id=555001, number="SECRET-1", amount=Decimal("5"), currency="RUB",
                      stage_id="N"))
        op = Operation(portal_id=other.id, account_id=acc.id, operation_id="o1", fingerprint="o1",
                       bank_status="Transaction", is_credit=True, amount=Decimal("5"), currency="RUB",
                       operation_date=env.ctx.clock.now(), purpose="чужой платёж", state="review")
        s.add(op)
        s.flush()
        foreign = op.id
    token = token_of(open_app(env, user=1))
    queue = api(env, "GET", "/app/api/review?q=чужой", token).get_json()
    assert foreign not in queue["operations"] and "SECRET-1" not in queue["html"]
    assert api(env, "POST", "/app/api/assign", token, {"operation": foreign,
                                                       "invoice": env.deals[0]["invoice_id"]}).status_code == 404
    assert api(env, "POST", "/app/api/assign", token, {"operation": foreign, "invoice": 555001}).status_code == 404
    assert api(env, "POST", "/app/api/undo", token, {"operation": foreign}).status_code == 404



def test_history_names_who_decided_with_a_link_to_the_profile(env):
    token = token_of(open_app(env, user=1))
    a = add_payment(env, "432.10", "Перевод без назначения", payer="ООО «Луч»")
    target = env.deals[2]
    assert api(env, "POST", "/app/api/assign", token, {"operation": a, "invoice": target["invoice_id"]}).status_code == 200
    body = open_app(env, user=1).get_data(as_text=True)
    link = f'href="{env.portal_url}/company/personal/user/1/" target="_top">Анна Админова</a>'
    assert link in body and "пользователь 1" not in body and "пользователем 1" not in body
    page = api(env, "GET", "/app/api/history", token).get_json()["html"]   # the JSON API: from the cache
    assert link in page
    api(env, "POST", "/app/api/undo", token, {"operation": a})


def test_assign_offers_this_payers_and_deals_invoices_and_finds_any_other_by_search(env):
    from b24app.storage.models import Invoice as Inv

    portal = portal_row(env)
    with env.ctx.db.session() as s:   # many other open invoices in the cache (other clients)
        for n in range(70):
            s.add(Inv(portal_id=portal.id, b24_id=900000 + n, number=f"ДР-{n:03d}", title=f"Счёт ДР-{n:03d}",
                      amount=Decimal(1000 + n), currency="RUB", stage_id="DT31_2:N", deal_id=None,
                      payer_inn="7700000000"))
    d2 = env.deals[1]   # СЧ-00412, payer INN 7801234567
    op = add_payment(env, "250.00", "Оплата по договору", inn=d2["inn"], payer="АО «Север»")
    token = token_of(open_app(env, user=1))
    html_ = api(env, "GET", "/app/api/review", token).get_json()["html"]
    form = re.search(rf'<form class="b24-assign" data-action="assign" data-operation="{op}">(.*?)</form>', html_, re.S)
    assert form, "no assign form for the payment"
    options = re.findall(r'<option value="(\d+)"', form.group(1))
    assert str(d2["invoice_id"]) in options and len(options) <= 20
    assert not any(o.startswith("9000") for o in options)         # not a 60-item list of everybody's invoices
    assert 'data-invoice-search="%d"' % op in form.group(1)
    found = api(env, "GET", f"/app/api/invoices?operation={op}&q=ДР-042", token).get_json()["invoices"]
    assert [f["id"] for f in found] == [900042] and "ДР-042" in found[0]["label"]
    by_amount = api(env, "GET", f"/app/api/invoices?operation={op}&q=1 069,00", token).get_json()["invoices"]
    assert [f["id"] for f in by_amount] == [900069]
    assert api(env, "GET", "/app/api/invoices?operation=abc", token).status_code == 400
    with env.ctx.db.session() as s:
        s.query(Inv).filter(Inv.b24_id >= 900000).delete()
