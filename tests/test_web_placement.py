"""The deal and invoice tabs over the real portal sandbox: one verifying REST call, framing policy, the JSON
API with its frame token, who may act, isolation between deals and portals, and escaping of payer text."""
from __future__ import annotations

import html
import json
import re
import time
from decimal import Decimal
from urllib.parse import urlsplit
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import select

from b24app.pipeline import reconcile
from b24app.storage.models import Allocation, BankAccount, Invoice, Operation, Portal

from conftest import start_seeded_stack, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One linked portal with the demo deals (deal 1 and 2 belong to user 2, deal 3 and 4 to user 3)."""
    st = start_seeded_stack(tmp_path_factory.mktemp("placement"), link=True)
    yield st
    st.stop()


def frame_form(st, kind: str, entity: int, user: int, lang: str = "ru") -> tuple[str, dict]:
    """What the portal page posts into the tab iframe: the app URL (with its query) and the form fields."""
    path = "deal" if kind == "deal" else "type/31"
    page = httpx.get(f"{st.portal_url}/crm/{path}/details/{entity}/",
                     params={"user": user, "tab": 0, "lang": lang}, timeout=30)
    page.raise_for_status()
    m = re.search(r'<form id="app-form-0" method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    assert m, "the deal card has no app tab"
    fields = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', m.group(2))}
    return html.unescape(m.group(1)), fields


def open_tab(st, kind: str, entity: int, user: int = 2, lang: str = "ru", **override):
    """POST the tab as Bitrix24 would. The module's tests share one portal and spend its request budget: a 503
    ("Bitrix24 is busy, try again", with Retry-After) is waited out, as a person reloading the tab would."""
    action, fields = frame_form(st, kind, entity, user, lang)
    fields.update(override)
    url = urlsplit(action)
    deadline = time.monotonic() + 30
    while True:
        resp = st.flask_app.test_client().post(f"{url.path}?{url.query}", data=fields)
        if resp.status_code != 503 or time.monotonic() > deadline:
            return resp
        time.sleep(min(5, int(resp.headers.get("Retry-After", "1"))))


def config_of(resp) -> dict:
    m = re.search(r'<script type="application/json" id="b24app-config">(.*?)</script>', resp.get_data(as_text=True),
                  re.S)
    assert m, "no page config"
    return json.loads(m.group(1))


def portal_id(st) -> int:
    with st.ctx.db.session() as s:
        return s.scalar(select(Portal.id).where(Portal.member_id == st.member_id()))


def add_payment(st, amount: str, purpose: str, *, inn: str | None = None, payer: str = "ООО «Вектор»",
                portal: int | None = None) -> int:
    """A settled credit on the linked account, decided by the real reconciliation (no worker needed)."""
    pid = portal or portal_id(st)
    with st.ctx.db.session() as s:
        account = s.scalar(select(BankAccount).where(BankAccount.portal_id == pid).order_by(BankAccount.id))
        op = Operation(portal_id=pid, account_id=account.id, operation_id=str(uuid4()), fingerprint=uuid4().hex,
                       bank_status="Transaction", is_credit=True, amount=Decimal(amount), currency="RUB",
                       operation_date=st.ctx.clock.now(), purpose=purpose, payer_name=payer, payer_inn=inn,
                       state="new")
        s.add(op)
        s.flush()
        op_pk = op.id
        portal_row = s.get(Portal, pid)
    reconcile.reconcile_portal(st.ctx, portal_row)
    return op_pk


def api(st, method: str, url: str, token: str | None, body: dict | None = None, **headers):
    client = st.flask_app.test_client()
    if token is not None:
        headers["X-Frame-Token"] = token
    if method == "GET":
        return client.get(url, headers=headers)
    return client.post(url, json=body, headers=headers)


def deal(st, n: int) -> dict:
    return st.deals[n - 1]


# -- entering the tab ------------------------------------------------------------------------------------
def test_get_is_refused_and_a_forged_auth_id_gets_no_token(env):
    client = env.flask_app.test_client()
    assert client.get("/placement/deal").status_code == 400
    resp = open_tab(env, "deal", deal(env, 1)["deal_id"], AUTH_ID="forged-token-0000000000000000")
    assert resp.status_code == 403
    assert "b24app-config" not in resp.get_data(as_text=True)
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


def test_tab_renders_with_one_rest_call_and_only_the_portal_may_frame_it(env):
    d = deal(env, 1)
    with env.ctx.db.session() as s:  # the render itself fills the cache
        s.query(Invoice).filter(Invoice.b24_id == d["invoice_id"]).delete()
    before = env.portal_state()["requests"]
    resp = open_tab(env, "deal", d["deal_id"])
    after = env.portal_state()["requests"]
    assert resp.status_code == 200
    assert after - before == 1, "the tab must cost exactly one Bitrix24 REST call"
    csp = resp.headers["Content-Security-Policy"]
    origin = env.sandbox_url
    assert f"frame-ancestors {origin}" in csp and "'none'" not in csp.split("frame-ancestors")[1].split(";")[0]
    assert f"script-src 'self' {origin}" in csp
    assert "X-Frame-Options" not in resp.headers
    body = resp.get_data(as_text=True)
    assert d["number"] in body and f'data-invoice="{d["invoice_id"]}"' in body
    assert f'src="{env.settings.bx24_js_url}"' in body
    with env.ctx.db.session() as s:
        inv = s.scalar(select(Invoice).where(Invoice.b24_id == d["invoice_id"]))
        assert inv is not None and inv.deal_id == d["deal_id"] and inv.assigned_by_id == 2
        assert inv.stage_semantics is None and inv.number == d["number"]
    assert config_of(resp)["token"]
    # Every other route still refuses to be framed.
    other = env.flask_app.test_client().get("/healthz")
    assert "frame-ancestors 'none'" in other.headers["Content-Security-Policy"]
    assert other.headers["X-Frame-Options"] == "DENY"


def test_a_change_in_bitrix24_reaches_the_cache_on_the_next_render(env):
    d = deal(env, 3)  # INV-2025-0042, 7 350.50
    env.rest("crm.item.update", {"entityTypeId": 31, "id": d["invoice_id"],
                                 "fields": {"opportunity": "8000.00", "stageId": "DT31_2:D"}})
    try:
        resp = open_tab(env, "deal", d["deal_id"], user=3)
        assert resp.status_code == 200
        with env.ctx.db.session() as s:
            inv = s.scalar(select(Invoice).where(Invoice.b24_id == d["invoice_id"]))
            assert inv.amount == Decimal("8000.00") and inv.stage_id == "DT31_2:D" and inv.stage_semantics == "F"
        assert 'data-status="cancelled"' in resp.get_data(as_text=True)
    finally:
        env.rest("crm.item.update", {"entityTypeId": 31, "id": d["invoice_id"],
                                     "fields": {"opportunity": d["amount"], "stageId": "DT31_2:N"}})
        open_tab(env, "deal", d["deal_id"], user=3)
    with env.ctx.db.session() as s:
        inv = s.scalar(select(Invoice).where(Invoice.b24_id == d["invoice_id"]))
        assert inv.amount == Decimal(d["amount"]) and inv.stage_semantics is None


def test_invoice_tab_shows_that_invoice_only(env):
    d1 = deal(env, 1)
    resp = open_tab(env, "invoice", d1["invoice_id"], user=2)
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert f'data-invoice="{d1["invoice_id"]}"' in body
    assert f'data-invoice="{deal(env, 2)["invoice_id"]}"' not in body
    cfg = config_of(resp)
    assert cfg["kind"] == "invoice" and cfg["entity"] == d1["invoice_id"]


def test_wrong_placement_for_the_route_is_refused(env):
    resp = open_tab(env, "deal", deal(env, 1)["deal_id"], PLACEMENT="CRM_SMART_INVOICE_DETAIL_TAB")
    assert resp.status_code == 400


def test_language_comes_from_lang(env):
    d = deal(env, 1)
    en = open_tab(env, "deal", d["deal_id"], lang="en").get_data(as_text=True)
    ru = open_tab(env, "deal", d["deal_id"], lang="ru").get_data(as_text=True)
    assert '<html lang="en">' in en and "12,000.00 RUB" in en
    assert '<html lang="ru">' in ru and "12\u00a0000,00\u00a0₽" in ru
    assert "Invoice payments" in en and "Invoice payments" not in ru


# -- the JSON API ------------------------------------------------------------------------------------------
def test_api_needs_the_token_of_this_tab(env):
    d1, d2 = deal(env, 1), deal(env, 2)
    token = config_of(open_tab(env, "deal", d1["deal_id"]))["token"]
    url = f"/placement/api/deal/{d1['deal_id']}"
    ok = api(env, "GET", url, token)
    assert ok.status_code == 200
    data = ok.get_json()
    assert [i["number"] for i in data["invoices"]] == [d1["number"]]
    assert "html" in data and data["version"]
    assert api(env, "GET", url, None).status_code == 401
    assert api(env, "GET", url, token[:-3] + "abc").status_code == 401
    assert api(env, "GET", f"/placement/api/deal/{d2['deal_id']}", token).status_code == 403
    assert api(env, "GET", f"/placement/api/invoice/{d1['invoice_id']}", token).status_code == 403
    # Unchanged data is not sent again.
    etag = ok.headers["ETag"]
    assert api(env, "GET", url, token, **{"If-None-Match": etag}).status_code == 304
    # A token is no credential for the admin page's API either.
    assert api(env, "GET", "/app/api/review", token).status_code == 403


def test_responsible_assigns_a_review_payment_and_undoes_it(env):
    d2 = deal(env, 2)  # СЧ-00412, 48 500, user 2, INN 7801234567
    op = add_payment(env, "500.00", "Оплата по договору поставки", inn=d2["inn"], payer="АО «Север»")
    with env.ctx.db.session() as s:
        assert s.get(Operation, op).state in ("review", "unmatched")
    resp = open_tab(env, "deal", d2["deal_id"], user=2)
    body = resp.get_data(as_text=True)
    assert f'data-action="assign" data-operation="{op}"' in body
    token = config_of(resp)["token"]
    base = f"/placement/api/deal/{d2['deal_id']}"
    r = api(env, "POST", base + "/assign", token, {"operation": op, "invoice": d2["invoice_id"]})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["outcome"] == "underpaid"
    data = api(env, "GET", base, token).get_json()
    inv = data["invoices"][0]
    assert op in inv["payments"] and Decimal(inv["paid"]) >= Decimal("500.00") and inv["status"] == "partly_paid"
    # A second assignment of the same payment is refused with a reason, not a crash.
    again = api(env, "POST", base + "/assign", token, {"operation": op, "invoice": d2["invoice_id"]})
    assert again.status_code == 409 and again.get_json()["error"] == "not_in_review"
    r = api(env, "POST", base + "/undo", token, {"operation": op})
    assert r.status_code == 200
    with env.ctx.db.session() as s:
        assert s.get(Operation, op).state == "review"
        assert s.scalar(select(Allocation).where(Allocation.operation_pk == op, Allocation.revoked_at.is_(None))) is None
    data = api(env, "GET", base, token).get_json()
    assert op not in data["invoices"][0]["payments"]
    assert op in [r["operation"] for r in data["review"]]


def test_others_read_only_enforced_on_the_server(env):
    d1 = deal(env, 1)  # responsible: user 2; user 3 is neither responsible nor admin
    op = add_payment(env, "700.00", "Оплата без номера", inn=d1["inn"])
    resp = open_tab(env, "deal", d1["deal_id"], user=3)
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert 'data-action="assign"' not in body and 'data-action="undo"' not in body
    assert config_of(resp)["token"]
    token = config_of(resp)["token"]
    base = f"/placement/api/deal/{d1['deal_id']}"
    assert api(env, "GET", base, token).get_json()["can_act"] is False
    assert api(env, "POST", base + "/assign", token, {"operation": op, "invoice": d1["invoice_id"]}).status_code == 403
    assert api(env, "POST", base + "/sync", token, {}).status_code == 403
    with env.ctx.db.session() as s:
        assert s.get(Operation, op).state in ("review", "unmatched")
    # The admin (user 1) may act on any deal.
    admin_token = config_of(open_tab(env, "deal", d1["deal_id"], user=1))["token"]
    r = api(env, "POST", base + "/assign", admin_token, {"operation": op, "invoice": d1["invoice_id"]})
    assert r.status_code == 200
    assert api(env, "POST", base + "/undo", token, {"operation": op}).status_code == 403
    assert api(env, "POST", base + "/undo", admin_token, {"operation": op}).status_code == 200


def test_ids_of_another_deal_or_portal_are_not_found(env):
    d1, d3 = deal(env, 1), deal(env, 3)
    token = config_of(open_tab(env, "deal", d1["deal_id"], user=1))["token"]
    base = f"/placement/api/deal/{d1['deal_id']}"
    op = add_payment(env, "800.00", "Оплата без номера", inn="500100732259", payer="ИП Петров")
    # An invoice of another deal of the same portal.
    assert api(env, "POST", base + "/assign", token, {"operation": op, "invoice": d3["invoice_id"]}).status_code == 404
    # An operation and an invoice of another portal.
    with env.ctx.db.session() as s:
        other = Portal(member_id="other-portal-" + uuid4().hex[:8], domain="other.example", client_endpoint="https://other.example/rest/",
                       server_endpoint="https://oauth.example/rest/", status="installed", settings={})
        s.add(other)
        s.flush()
        from b24app.storage.models import BankLink
        link = BankLink(portal_id=other.id, kind="static", inn="7700000000", kpp="0")
        s.add(link)
        s.flush()
        acc = BankAccount(portal_id=other.id, link_id=link.id, account_number="40702810000000000001", watched=True)
        s.add(acc)
        s.add(Invoice(portal_id=other.id, b24_id=987654, number="X-1", amount=Decimal("10"), currency="RUB",
                      stage_id="N", deal_id=d1["deal_id"]))
        s.flush()
        foreign = Operation(portal_id=other.id, account_id=acc.id, operation_id="x1", fingerprint="x1",
                            bank_status="Transaction", is_credit=True, amount=Decimal("10"), currency="RUB",
                            operation_date=env.ctx.clock.now(), purpose="", state="review")
        s.add(foreign)
        s.flush()
        foreign_pk = foreign.id
    assert api(env, "POST", base + "/assign", token, {"operation": foreign_pk, "invoice": d1["invoice_id"]}).status_code == 404
    assert api(env, "POST", base + "/assign", token, {"operation": op, "invoice": 987654}).status_code == 404
    assert api(env, "POST", base + "/undo", token, {"operation": foreign_pk}).status_code == 404
    assert api(env, "POST", base + "/assign", token, {"operation": "1; drop", "invoice": 1}).status_code == 400
    with env.ctx.db.session() as s:
        assert s.get(Operation, foreign_pk).state == "review"


def test_payer_text_is_escaped(env):
    d4 = deal(env, 4)  # invoice 1208, 3 000
    purpose = "Оплата по счету № 1208 <script>alert('x')</script> \u202eevil\u0007 &amp;"
    op = add_payment(env, "3000.00", purpose, inn=d4["inn"], payer="<b>ООО</b> \u202bВектор\u0001")
    with env.ctx.db.session() as s:
        assert s.get(Operation, op).state == "matched"
    body = open_tab(env, "deal", d4["deal_id"], user=1).get_data(as_text=True)
    assert "<script>alert" not in body and "&lt;script&gt;alert(" in body
    assert "&lt;b&gt;ООО&lt;/b&gt;" in body
    for raw in ("\u202e", "\u202b", "\u0007", "\u0001"):
        assert raw not in body
    assert "\\u202eevil\\u0007" in body and "&amp;amp;" in body


def test_check_the_bank_now_makes_accounts_due_and_reports_progress(env):
    d1 = deal(env, 1)
    token = config_of(open_tab(env, "deal", d1["deal_id"], user=2))["token"]
    base = f"/placement/api/deal/{d1['deal_id']}/sync"
    with env.ctx.db.session() as s:
        watched = list(s.scalars(select(BankAccount.id).where(BankAccount.watched.is_(True),
                                                              BankAccount.portal_id == portal_id(env))))
    r = api(env, "POST", base, token, {})
    assert r.status_code == 202
    body = r.get_json()
    assert sorted(body["requested"]) == sorted(watched) and body["accounts"] == len(watched)
    assert body["finished"] is False and body["pending"] == len(watched)
    status = api(env, "GET", base, token).get_json()
    assert status["pending"] == len(watched) and 0 <= status["percent"] < 100


# -- caching: nothing that carries data may be stored ------------------------------------------------------------
def _no_store(resp, what) -> None:
    assert "no-store" in resp.headers.get("Cache-Control", ""), (what, resp.status_code, resp.headers)
    assert "x-frame-token" in resp.headers.get("Vary", "").lower(), (what, resp.headers)


def test_data_routes_say_no_store_and_vary_on_the_frame_token(env):
    from b24app.sandbox.stack import APP_CLIENT_ID, link_ticket

    d = deal(env, 1)
    tab = open_tab(env, "deal", d["deal_id"], user=2)
    assert tab.status_code == 200
    _no_store(tab, "deal tab")
    inv_tab = open_tab(env, "invoice", d["invoice_id"], user=2)
    _no_store(inv_tab, "invoice tab")
    page = httpx.get(f"{env.portal_url}/marketplace/app/{APP_CLIENT_ID}/", params={"user": 1}, timeout=30)
    m = re.search(r'<form id="app-form-0" method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    fields = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', m.group(2))}
    admin_page = env.flask_app.test_client().post("/app", data=fields)
    assert admin_page.status_code == 200
    _no_store(admin_page, "admin page")
    admin = config_of(admin_page)["token"]
    tab_token = config_of(tab)["token"]
    for url, token in (("/app/api/review", admin), ("/app/api/history", admin), ("/app/api/bank", admin),
                       ("/bank/accounts", admin), ("/app/api/sync", admin),
                       (f"/placement/api/deal/{d['deal_id']}", tab_token),
                       (f"/placement/api/deal/{d['deal_id']}/sync", tab_token)):
        r = api(env, "GET", url, token)
        assert r.status_code == 200, (url, r.status_code)
        _no_store(r, url)
    start = env.flask_app.test_client().get("/bank/start", query_string={"ticket": link_ticket(env)})
    assert start.status_code == 200
    _no_store(start, "/bank/start")
    # Every other route and method too, whatever it answers (errors included); static files may be cached.
    client = env.flask_app.test_client()
    args = {"kind": "deal", "entity_id": d["deal_id"], "link_id": 1}
    urls = env.flask_app.url_map.bind("localhost")
    for rule in env.flask_app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = urls.build(rule.endpoint, {name: args[name] for name in rule.arguments})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            r = client.open(path, method=method, json={} if method == "POST" else None,
                            headers={"X-Frame-Token": admin})
            _no_store(r, (method, path))
    static = client.get("/static/b24app.css")
    assert static.status_code == 200 and "no-store" not in static.headers.get("Cache-Control", "")


def test_a_user_bitrix24_will_not_show_the_deal_to_sees_no_payments(env):
    """crm.deal.get answers "Access denied" for a user who may read only their own deals: the tab refuses with a
    clear 403 page instead of showing the cached invoices and payments of that deal."""
    d = deal(env, 1)  # user 2's deal, with an invoice and a payment in the cache
    op = add_payment(env, "500.00", f"Оплата по счету № {d['number']} частично")
    user = env.portal_http("POST", "/sandbox/users", json={"name": "Ограниченный", "deal_read": "own"}).json()
    assert user["deal_read"] == "own"
    refused = open_tab(env, "deal", d["deal_id"], user=user["id"])
    text = refused.get_data(as_text=True)
    assert refused.status_code == 403, refused.status_code
    assert 'not_readable' in text and d["number"] not in text and "500" not in text
    assert "У вас нет доступа к этой сделке в Битрикс24" in text
    assert f"frame-ancestors {env.sandbox_url}" in refused.headers["Content-Security-Policy"]  # shown in the tab
    assert "b24app-config" not in text  # no frame token either
    own = open_tab(env, "deal", d["deal_id"], user=2)
    assert own.status_code == 200 and d["number"] in own.get_data(as_text=True)
    assert op
    admin = open_tab(env, "deal", d["deal_id"], user=1)
    assert admin.status_code == 200


def test_a_responsible_may_assign_only_payments_offered_for_their_deal(env):
    """Issue #11 item 4: the tab's assign took any unmatched payment of the portal, one it never offered."""
    from b24app.pipeline.invoices import refresh_all
    from b24app.sandbox.stack import seed_crm

    # A deal of user 2 whose client no other deal has, so its open invoice is the payment's only candidate.
    [d1] = seed_crm(env, [("Поставка стеллажей", 2, "ООО «Стеллаж»", "7733333333", "СТ-9001", "5000.00")])
    refresh_all(env.ctx, env.ctx.portals.find(env.member_id()))
    d3 = deal(env, 3)  # user 3's, INN 500100732259
    theirs = add_payment(env, "777.00", "Оплата без номера", inn=d3["inn"], payer="ИП Петров")
    nobodys = add_payment(env, "901.00", "Перевод средств", inn="7799999999", payer="ООО «Никто»")
    offered = add_payment(env, "703.00", "Оплата без номера", inn=d1["inn"], payer="ООО «Стеллаж»")
    with env.ctx.db.session() as s:
        assert {s.get(Operation, o).state for o in (theirs, nobodys, offered)} <= {"review", "unmatched"}
    # seeding spent the portal's request budget: the tab opens once the portal's rate limit lets it verify
    resp = wait_for(lambda: (r := open_tab(env, "deal", d1["deal_id"], user=2)).status_code == 200 and r)
    token = config_of(resp)["token"]
    base = f"/placement/api/deal/{d1['deal_id']}"
    for op in (theirs, nobodys):
        r = api(env, "POST", base + "/assign", token, {"operation": op, "invoice": d1["invoice_id"]})
        assert r.status_code == 403, r.get_json()
        assert "администратор" in r.get_json()["message"]  # a reason, in the tab's language
    with env.ctx.db.session() as s:
        assert {s.get(Operation, o).state for o in (theirs, nobodys)} <= {"review", "unmatched"}
        assert s.scalar(select(Allocation).where(Allocation.operation_pk.in_([theirs, nobodys]))) is None
    r = api(env, "POST", base + "/assign", token, {"operation": offered, "invoice": d1["invoice_id"]})
    assert r.status_code == 200, r.get_json()
    # An administrator may still assign any payment (e.g. one no invoice was found for) from the tab.
    admin_tab = wait_for(lambda: (r := open_tab(env, "deal", d1["deal_id"], user=1)).status_code == 200 and r)
    admin_token = config_of(admin_tab)["token"]
    r = api(env, "POST", base + "/assign", admin_token, {"operation": nobodys, "invoice": d1["invoice_id"]})
    assert r.status_code == 200, r.get_json()
    for op in (offered, nobodys):
        assert api(env, "POST", base + "/undo", admin_token, {"operation": op}).status_code == 200


def test_who_assigned_a_payment_is_named_and_linked_to_the_profile_and_the_tab_still_costs_one_call(env):
    d2 = deal(env, 2)
    op = add_payment(env, "300.00", "Оплата по договору хранения", inn=d2["inn"], payer="АО «Север»")
    resp = open_tab(env, "deal", d2["deal_id"], user=2)
    base = f"/placement/api/deal/{d2['deal_id']}"
    assert api(env, "POST", base + "/assign", config_of(resp)["token"],
               {"operation": op, "invoice": d2["invoice_id"]}).status_code == 200
    before = env.portal_state()["requests"]
    body = open_tab(env, "deal", d2["deal_id"], user=2).get_data(as_text=True)
    assert env.portal_state()["requests"] - before == 1, "names must come in the render's one REST call"
    profile = f'href="{env.portal_url}/company/personal/user/2/" target="_top">Борис Менеджеров</a>'
    assert profile in body
    assert "пользователь 2" not in body
    assert "Борис Менеджеров" in httpx.get(f"{env.portal_url}/company/personal/user/2/", timeout=30).text
    # The JSON refresh (no REST call) names him too, from what the render remembered.
    tab = open_tab(env, "deal", d2["deal_id"], user=2)
    refreshed = api(env, "GET", base, config_of(tab)["token"]).get_json()["html"]
    assert profile in refreshed
    api(env, "POST", base + "/undo", config_of(tab)["token"], {"operation": op})


def test_the_tab_explains_a_manual_assignment_and_an_undo_with_the_domains_reason_texts(env):
    """One table of reason texts (domain/explain.py): what the tab says about a payment assigned by hand, and
    about one whose match was undone, is the domain's sentence for that stored reason (the person by name)."""
    from b24app.domain.explain import explain_reason
    from b24app.domain.matching import Reason
    from b24app.storage.models import Decision

    d2 = deal(env, 2)
    op = add_payment(env, "275.00", "Оплата по договору аренды", inn=d2["inn"], payer="АО «Север»")
    base = f"/placement/api/deal/{d2['deal_id']}"

    def shown(code: str) -> tuple[str, str]:
        """(the domain's sentence for the payment's stored `code` reason, the tab's text now)."""
        with env.ctx.db.session() as s:
            reasons = s.scalars(select(Decision.reasons).where(Decision.operation_pk == op)
                                .order_by(Decision.id.desc())).first()
        [stored] = [r for r in reasons if r["code"] == code]
        text = explain_reason(Reason(code, stored["params"]), "ru").replace("пользователь 2", "Борис Менеджеров")
        page = html.unescape(open_tab(env, "deal", d2["deal_id"], user=2).get_data(as_text=True))
        return (text[:1].upper() + text[1:]).replace("\xa0", " "), page  # the `plain` filter shows a plain space

    token = config_of(open_tab(env, "deal", d2["deal_id"], user=2))["token"]
    assert api(env, "POST", base + "/assign", token, {"operation": op, "invoice": d2["invoice_id"]}).status_code == 200
    expected, page = shown("manual_assignment")
    assert "вручную отнесён к счёту" in expected and f"<li>{expected}</li>" in page, expected
    assert api(env, "POST", base + "/undo", token, {"operation": op}).status_code == 200
    expected, page = shown("undone")
    assert expected.startswith("Сопоставление отменил(а) Борис Менеджеров") and f"<li>{expected}</li>" in page, expected


def test_an_overpaid_invoice_shows_by_how_much(env):
    from b24app.pipeline.invoices import refresh_all

    d4 = deal(env, 4)
    item = env.rest("crm.item.add", {"entityTypeId": 31, "fields": {
        "title": "Счёт ПР-77", "accountNumber": "ПР-77", "opportunity": "2000.00", "currencyId": "RUB",
        "parentId2": d4["deal_id"], "assignedById": 2}})["result"]["item"]
    refresh_all(env.ctx, env.ctx.portals.find(env.member_id()))
    op = add_payment(env, "3000.00", "Оплата по счету ПР-77", inn=d4["inn"])
    body = open_tab(env, "deal", d4["deal_id"], user=2).get_data(as_text=True)
    card = body[body.index(f'data-invoice="{item["id"]}"'):]
    assert card[:200].count('data-status="overpaid"') == 1
    m = re.search(r'<dt>([^<]+)</dt><dd data-field="overpaid">([^<]+)</dd>', card)
    assert m and m.group(1) == "Переплата" and m.group(2).replace("\u00a0", " ") == "1 000,00 ₽"
    with env.ctx.db.session() as s:
        assert s.get(Operation, op).state == "overpaid"


def test_the_tab_reads_the_database_as_often_for_six_invoices_as_for_one(env):
    """The tab's reads are one per kind of row, bank labels included: invoices with payments added to a deal add
    no SQL statement to its render (the side-by-side benchmark of issue #14 found the bank label read once per
    invoice, with a portal lookup and a transaction each: 92 statements instead of 12 for 20 invoices)."""
    from sqlalchemy import event

    from b24app.pipeline.invoices import refresh_all

    inn = "7705554433"
    company = env.rest("crm.company.add", {"fields": {"TITLE": "ООО «Счётчик»"}})["result"]
    env.rest("crm.requisite.add", {"fields": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": company, "PRESET_ID": 1,
                                              "NAME": "ООО «Счётчик»", "RQ_INN": inn}})
    deal_id = env.rest("crm.deal.add", {"fields": {"TITLE": "Счётчик", "ASSIGNED_BY_ID": 2, "COMPANY_ID": company,
                                                   "OPPORTUNITY": "6000", "CURRENCY_ID": "RUB"}})["result"]
    ops: list[int] = []

    def add_invoices(first: int, count: int) -> None:
        for n in range(first, first + count):
            env.rest("crm.item.add", {"entityTypeId": 31, "fields": {
                "title": f"Счёт СЧТ-{n}", "accountNumber": f"СЧТ-{n}", "opportunity": "1000.00",
                "currencyId": "RUB", "parentId2": deal_id, "assignedById": 2, "companyId": company}})
        refresh_all(env.ctx, env.ctx.portals.find(env.member_id()))
        for n in range(first, first + count):
            ops.append(add_payment(env, "400.00", f"Оплата по счету № СЧТ-{n}", inn=inn, payer="ООО «Счётчик»"))

    def statements_per_refresh() -> tuple[int, str]:
        """SQL statements of one JSON refresh of the tab, and the tab's html."""
        token = config_of(open_tab(env, "deal", deal_id, user=2))["token"]
        seen: list[str] = []

        def count(conn, cursor, statement, *args):
            seen.append(statement)

        event.listen(env.ctx.db.engine, "before_cursor_execute", count)
        try:
            resp = api(env, "GET", f"/placement/api/deal/{deal_id}", token)
        finally:
            event.remove(env.ctx.db.engine, "before_cursor_execute", count)
        assert resp.status_code == 200
        return len(seen), resp.get_json()["html"]

    add_invoices(1, 1)
    one, _ = statements_per_refresh()
    add_invoices(2, 5)
    six, body = statements_per_refresh()
    assert body.count('class="b24-card b24-invoice"') == 6
    assert six == one, f"{one} statements for one invoice, {six} for six"
    for op in ops:  # every payment still says which bank it came through
        row = body[body.index(f'<tr data-operation="{op}">'):]
        assert 'data-bank="tbank" data-via="api"' in row[:row.index("</td>")], op
