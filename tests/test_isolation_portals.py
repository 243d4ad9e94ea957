"""Tenant isolation: two portals installed from the same portal sandbox, each with its own bank company and
the same invoice numbers. Events, tokens, frame tokens, ids and webhook secrets of one never reach the other."""
from __future__ import annotations

import html
import json
import re
import time
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from b24app.pipeline import sync
from b24app.storage.db import Base
from b24app.storage.models import (
    Allocation,
    BankAccount,
    BankLink,
    Decision,
    Invoice,
    InvoiceRefresh,
    Operation,
    OutboxItem,
    Portal,
)
from b24app.sandbox.stack import APP_CLIENT_ID, link_bank, seed_crm
from b24app.pipeline.worker import Worker
from conftest import fresh_database_url

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
OPEN, PAID = "DT31_2:N", "DT31_2:P"
B_COMPANY = {"inn": "7702345672", "kpp": "770201001", "name": "ООО «Второй портал»", "phones": ["+79990000002"],
             "accounts": [{"currency": "RUB"}, {"currency": "RUB"}]}
# Same invoice numbers as portal A's demo deals, other amounts and clients.
B_DEALS = [("Чужая поставка", 2, "ООО «Бета»", "7811111111", "1207", "5000.00"),
           ("Чужой сервис", 3, "ООО «Бета»", "7811111111", "СЧ-00412", "777.00")]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    from b24app.pipeline.invoices import refresh_all
    from b24app.sandbox.stack import start_stack

    directory = tmp_path_factory.mktemp("isolation")
    a = start_stack(data_dir=str(directory / "data"), database_url=fresh_database_url(directory),
                    event_delivery="sync")
    try:
        assert a.install()["install_finish"]
        httpx.post(f"{a.sandbox_url}/sandbox/portals", json={"code": "other"}, timeout=30).raise_for_status()
        b = replace(a, portal_code="other", _tmp=None)
        assert b.install()["install_finish"]
        a.deals, b.deals = seed_crm(a), seed_crm(b, B_DEALS)
        httpx.post(f"{a.bank_url}/sandbox/companies", json=B_COMPANY, timeout=30).raise_for_status()
        assert 'id="link-ok"' in link_bank(a).text
        assert 'id="link-ok"' in link_bank(b, inn=B_COMPANY["inn"], kpp=B_COMPANY["kpp"],
                                           phone=B_COMPANY["phones"][0]).text
        for st in (a, b):
            refresh_all(a.ctx, a.ctx.portals.find(st.member_id()))
        yield a, b
    finally:
        a.stop()


# -- helpers ------------------------------------------------------------------------------------------------------------
def pid(st) -> int:
    return st.ctx.portals.find(st.member_id()).id


def rows_of(st, portal_id: int) -> dict[str, list]:
    """Every row that belongs to a portal, as comparable tuples."""
    out = {}
    with st.ctx.db.session() as s:
        for table in Base.metadata.sorted_tables:
            if "portal_id" in table.c:
                rows = s.execute(table.select().where(table.c.portal_id == portal_id)).all()
            elif table.name == "portals":
                rows = s.execute(table.select().where(table.c.id == portal_id)).all()
            else:
                continue
            out[table.name] = sorted((tuple(str(v) for v in r) for r in rows))
    return out


def frame_form(st, path: str, user: int = 1) -> tuple[str, dict]:
    """What the portal page posts into the app's iframe (the app URL and the hidden fields)."""
    page = httpx.get(f"{st.portal_url}/{path}", params={"user": user, "tab": 0}, timeout=30)
    page.raise_for_status()
    m = re.search(r'<form id="app-form-0" method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    assert m, page.text[:300]
    fields = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', m.group(2))}
    return html.unescape(m.group(1)), fields


def open_frame(st, action: str, fields: dict):
    """POST the frame as Bitrix24 would. Seeding two portals fills their request buckets: a 503 ("Bitrix24 is
    busy, try again", with Retry-After) is waited out, as a person reloading the tab would."""
    url = urlsplit(action)
    deadline = time.monotonic() + 30
    while True:
        resp = st.flask_app.test_client().post(f"{url.path}?{url.query}", data=fields)
        if resp.status_code != 503 or time.monotonic() > deadline:
            return resp
        time.sleep(min(5, int(resp.headers.get("Retry-After", "1"))))


def config_token(resp) -> str | None:
    m = re.search(r'id="b24app-config">(.*?)</script>', resp.get_data(as_text=True), re.S)
    return json.loads(m.group(1))["token"] if m else None


def api(st, method: str, url: str, token: str, body=None):
    client = st.flask_app.test_client()
    headers = {"X-Frame-Token": token}
    return client.get(url, headers=headers) if method == "GET" else client.post(url, json=body, headers=headers)


def app_token(st) -> str:
    return st.portal_state()["installed_apps"][0]["application_token"]


def event_body(st, event: str, token: str, **data) -> dict:
    state = st.portal_state()
    body = {"event": event, "auth[member_id]": state["member_id"], "auth[domain]": state["domain"],
            "auth[client_endpoint]": state["client_endpoint"], "auth[server_endpoint]": f"{st.sandbox_url}/rest/",
            "auth[application_token]": token}
    body.update({f"data[{k}]": v for k, v in data.items()})
    return body


def process(*stacks) -> None:
    for st in stacks:
        sync.request_sync(st.ctx, pid(st))
    w = Worker(stacks[0].ctx, concurrency=1)
    for _ in range(20):
        if not w.run_once():
            break


def stage(st, invoice_id: int) -> str:
    return st.rest("crm.item.get", {"entityTypeId": 31, "id": invoice_id})["result"]["item"]["stageId"]


def account_numbers(st) -> list[str]:
    portal_id = pid(st)
    with st.ctx.db.session() as s:
        return list(s.scalars(select(BankAccount.account_number).where(BankAccount.portal_id == portal_id,
                                                                       BankAccount.watched.is_(True))
                              .order_by(BankAccount.id)))


# -- events ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, event, data", [
    ("/events/app", "ONAPPUNINSTALL", {"CLEAN": "1"}),
    ("/events/app", "ONAPPUPDATE", {"VERSION": "9"}),
    ("/events/crm", "ONCRMDEALUPDATE", {"FIELDS][ID": "1"}),
    ("/events/crm", "ONCRMDYNAMICITEMUPDATE", {"FIELDS][ID": "1", "FIELDS][ENTITY_TYPE_ID": "31"}),
])
def test_an_event_for_one_portal_with_the_others_application_token_is_refused(two, path, event, data):
    a, b = two
    with a.ctx.db.session() as s:
        s.query(InvoiceRefresh).delete()
    before_a, before_b = rows_of(a, pid(a)), rows_of(a, pid(b))
    r = httpx.post(a.app_url + path, data=event_body(a, event, app_token(b), **data), timeout=30)
    assert r.status_code == 401, r.text
    assert rows_of(a, pid(a)) == before_a and rows_of(a, pid(b)) == before_b
    # the same event with B's own member id and token acts on B only
    if path == "/events/crm":
        ok = httpx.post(a.app_url + path, data=event_body(b, event, app_token(b), **data), timeout=30)
        assert ok.status_code == 200
        pb = pid(b)
        with a.ctx.db.session() as s:
            assert {r.portal_id for r in s.scalars(select(InvoiceRefresh))} == {pb}


# -- placements --------------------------------------------------------------------------------------------------------
def test_forged_posts_against_one_portal_spend_only_that_portals_budget(two):
    """Forgeries for portal A from many addresses exhaust A's budget of failed sign-ins (then 429 without a
    Bitrix24 call); B's users, even from one of those addresses, still get in."""
    import secrets

    a, b = two
    throttle = a.flask_app.extensions["b24app.throttle"]
    action_a, fields_a = frame_form(a, "crm/deal/details/1/")
    action_b, fields_b = frame_form(b, "crm/deal/details/1/")
    client = a.flask_app.test_client()
    url = urlsplit(action_a)
    try:
        before = a.portal_state()["requests"]
        codes = [client.post(f"{url.path}?{url.query}", data={**fields_a, "AUTH_ID": secrets.token_hex(16)},
                             environ_base={"REMOTE_ADDR": f"10.9.0.{i}"}).status_code for i in range(60)]
        spent = a.portal_state()["requests"] - before
        # 403 while A's budget lasts, then 429; (503 if A's own bucket overflowed: then nobody asks A for a while)
        assert spent <= 30 and set(codes) <= {403, 429, 503} and codes[-20:] == [codes[-1]] * 20, (spent, codes)
        assert codes[-1] in (429, 503)
        url_b = urlsplit(action_b)
        own_b = client.post(f"{url_b.path}?{url_b.query}", data=fields_b, environ_base={"REMOTE_ADDR": "10.9.1.1"})
        assert own_b.status_code == 200 and config_token(own_b)
    finally:
        throttle.storage.reset()  # the other tests of this module start with fresh windows


@pytest.mark.parametrize("page", ["deal", "app"])
def test_a_placement_post_with_another_portals_auth_id_is_refused(two, page):
    a, b = two
    path = {"deal": "crm/deal/details/1/", "app": f"marketplace/app/{APP_CLIENT_ID}/"}[page]
    action_a, fields_a = frame_form(a, path)
    action_b, fields_b = frame_form(b, path)
    assert fields_a["member_id"] != fields_b["member_id"]
    for member, auth in ((fields_a["member_id"], fields_b["AUTH_ID"]), (fields_b["member_id"], fields_a["AUTH_ID"])):
        r = open_frame(a, action_a, {**fields_a, "member_id": member, "AUTH_ID": auth})
        assert r.status_code == 403 and config_token(r) is None
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    # each portal's own POST works and shows only its own invoice 1207
    own_a, own_b = open_frame(a, action_a, fields_a), open_frame(b, action_b, fields_b)
    assert own_a.status_code == own_b.status_code == 200
    if page == "deal":
        text_a, text_b = own_a.get_data(as_text=True), own_b.get_data(as_text=True)
        assert "12\u00a0000,00" in text_a and "5\u00a0000,00" not in text_a
        assert "5\u00a0000,00" in text_b and "12\u00a0000,00" not in text_b


def test_frame_tokens_reach_only_their_own_portals_data(two):
    a, b = two
    # a payment on each side waits in review (no invoice number)
    a.pay("111.11", "Оплата по договору без номера (А)", payerInn="7799999999", payerName="Плательщик Альфа",
          accountNumber=account_numbers(a)[0])
    b.pay("222.22", "Оплата по договору без номера (Б)", payerInn="7788888888", payerName="Плательщик Бета",
          accountNumber=account_numbers(b)[0])
    process(a, b)
    pa, pb = pid(a), pid(b)
    with a.ctx.db.session() as s:
        op_a = s.scalar(select(Operation.id).where(Operation.portal_id == pa, Operation.payer_name == "Плательщик Альфа"))
        op_b = s.scalar(select(Operation.id).where(Operation.portal_id == pb, Operation.payer_name == "Плательщик Бета"))
        links = {p: s.scalar(select(BankLink.id).where(BankLink.portal_id == p)) for p in (pa, pb)}
        accounts = {p: list(s.scalars(select(BankAccount.id).where(BankAccount.portal_id == p))) for p in (pa, pb)}
        inv_a = s.scalar(select(Invoice.b24_id).where(Invoice.portal_id == pa, Invoice.number == "INV-2025-0042"))
    assert op_a and op_b
    admin_b = config_token(open_frame(b, *frame_form(b, f"marketplace/app/{APP_CLIENT_ID}/")))
    deal_b = config_token(open_frame(b, *frame_form(b, "crm/deal/details/1/")))
    before_a = rows_of(a, pid(a))
    # lists show B's own things only
    review = api(b, "GET", "/app/api/review?q=Альфа", admin_b).get_json()
    assert op_a not in review["operations"] and "Альфа" not in review["html"]
    assert op_b in api(b, "GET", "/app/api/review", admin_b).get_json()["operations"]
    history = api(b, "GET", "/app/api/history?deal=1", admin_b).get_json()
    assert "12\u00a0000" not in history["html"] and "Альфа" not in history["html"]
    listing = api(b, "GET", "/bank/accounts", admin_b).get_json()
    assert [l["id"] for l in listing["links"]] == [links[pid(b)]]
    assert {x["id"] for x in listing["accounts"]} == set(accounts[pid(b)])
    tab = api(b, "GET", "/placement/api/deal/1", deal_b).get_json()
    assert [i["amount"] for i in tab["invoices"]] == ["5000.00"]
    # acting on A's ids with B's tokens: not found, nothing changes
    assert api(b, "POST", "/app/api/assign", admin_b, {"operation": op_a, "invoice": 1}).status_code == 404
    assert api(b, "POST", "/app/api/assign", admin_b, {"operation": op_b, "invoice": inv_a}).status_code == 404
    assert api(b, "POST", "/app/api/undo", admin_b, {"operation": op_a}).status_code == 404
    assert api(b, "POST", "/placement/api/deal/1/assign", deal_b, {"operation": op_a, "invoice": 1}).status_code == 404
    assert api(b, "POST", "/placement/api/deal/1/undo", deal_b, {"operation": op_a}).status_code == 404
    assert api(b, "POST", "/bank/unlink", admin_b, {"link_id": links[pid(a)]}).status_code == 404
    r = api(b, "POST", "/bank/accounts", admin_b, {"watched": accounts[pid(a)] + accounts[pid(b)][:1]})
    assert r.status_code in (200, 400)
    assert rows_of(a, pid(a)) == before_a
    if r.status_code == 200:  # B's own choice applied to B only; put it back
        api(b, "POST", "/bank/accounts", admin_b, {"watched": accounts[pid(b)]})


def test_one_links_webhook_secret_does_not_open_another(two):
    a, b = two
    pa, pb = pid(a), pid(b)
    with a.ctx.db.session() as s:
        la = s.scalar(select(BankLink).where(BankLink.portal_id == pa))
        lb = s.scalar(select(BankLink).where(BankLink.portal_id == pb))
        for acc in s.scalars(select(BankAccount)):
            acc.sync_requested_at = None
    secret_a = a.ctx.cipher.decrypt(f"webhook:{la.id}", la.webhook_secret_enc)
    secret_b = a.ctx.cipher.decrypt(f"webhook:{lb.id}", lb.webhook_secret_enc)
    assert secret_a != secret_b
    r = httpx.post(f"{a.app_url}/bank/webhook/{la.id}", json={"accountNumber": account_numbers(a)[0]},
                   headers={"Authorization": f"Bearer {secret_b}"}, timeout=30)
    assert r.status_code == 401
    # B's own webhook naming A's account makes nothing due
    r = httpx.post(f"{a.app_url}/bank/webhook/{lb.id}", json={"accountNumber": account_numbers(a)[0]},
                   headers={"Authorization": f"Bearer {secret_b}"}, timeout=30)
    assert r.status_code == 200 and r.json()["accounts"] == 0
    with a.ctx.db.session() as s:
        assert all(acc.sync_requested_at is None for acc in s.scalars(select(BankAccount)))


# -- money -------------------------------------------------------------------------------------------------------------
def test_a_payment_applies_only_in_its_own_portal(two):
    a, b = two
    da, db = a.deals[0], b.deals[0]  # both numbered 1207: A's is 12 000, B's is 5 000
    notes_b = len(b.portal_state()["notifications"])
    a.pay(da["amount"], "Оплата по счету № 1207", payerInn=da["inn"], accountNumber=account_numbers(a)[0])
    # A's number and A's client, but paid into B's account: B has no such invoice
    a_only = a.deals[2]  # INV-2025-0042
    b.pay(a_only["amount"], f"Оплата по счету № {a_only['number']}", payerInn=a_only["inn"],
          accountNumber=account_numbers(b)[0])
    process(a, b)
    assert stage(a, da["invoice_id"]) == PAID
    assert stage(b, db["invoice_id"]) == OPEN
    assert stage(a, a_only["invoice_id"]) == OPEN
    state_b = b.portal_state()
    assert len(state_b["notifications"]) == notes_b and state_b["timeline_comments"] == []
    assert state_b["trigger_executions"] == []
    pa, pb = pid(a), pid(b)
    with a.ctx.db.session() as s:
        assert {al.portal_id for al in s.scalars(select(Allocation))} == {pa}
        assert not s.scalar(select(func.count()).select_from(OutboxItem).where(
            OutboxItem.portal_id == pb, OutboxItem.kind.in_(("invoice_paid", "timeline", "trigger"))))
    # B's own 1207 is paid by B's own client into B's account
    b.pay(db["amount"], "Оплата по счету № 1207", payerInn=db["inn"], accountNumber=account_numbers(b)[1])
    process(a, b)
    assert stage(b, db["invoice_id"]) == PAID


def test_refreshing_one_portals_token_leaves_the_other_alone(two):
    a, b = two
    gen_a, gen_b = a.ctx.portals.find(a.member_id()).token_generation, a.ctx.portals.find(b.member_id()).token_generation
    creds_b = a.ctx.portals.load(b.member_id())
    httpx.post(f"{a.portal_url}/sandbox/expire-tokens", timeout=30).raise_for_status()
    assert a.ctx.bitrix(a.member_id()).call("user.current")["ID"]
    assert a.ctx.bitrix(b.member_id()).call("user.current")["ID"]
    assert a.ctx.portals.find(a.member_id()).token_generation == gen_a + 1
    assert a.ctx.portals.find(b.member_id()).token_generation == gen_b
    assert a.ctx.portals.load(b.member_id()).access_token == creds_b.access_token


def test_uninstalling_one_portal_with_clean_keeps_the_other(two):
    a, b = two
    pb = pid(b)
    before_b = rows_of(a, pb)
    assert sum(len(v) for v in before_b.values()) > 10
    r = httpx.post(f"{a.portal_url}/sandbox/uninstall", json={"client_id": APP_CLIENT_ID, "clean": True}, timeout=30)
    assert r.status_code == 200 and r.json()["onappuninstall"], r.text
    member_a = a.member_id()
    with a.ctx.db.session() as s:
        assert s.scalar(select(Portal).where(Portal.member_id == member_a)) is None
        for model in (Operation, Decision, Allocation, Invoice, BankLink, BankAccount, OutboxItem):
            assert {x.portal_id for x in s.scalars(select(model))} <= {pb}, model.__name__
    assert rows_of(a, pb) == before_b
    # B carries on: a new payment is applied
    db = b.deals[1]
    b.pay(db["amount"], f"Оплата по счету № {db['number']}", payerInn=db["inn"], accountNumber=account_numbers(b)[0])
    process(b)
    assert stage(b, db["invoice_id"]) == PAID
