"""Automation triggers need an administrator (crm-automation-trigger-*.md). The app holds the installer's
tokens; when that user loses admin rights, payments still go through, the trigger is skipped with a reason
and the admin page says why — instead of failing every delivery."""
from __future__ import annotations

import html
import re

import httpx
from sqlalchemy import select

from b24app.pipeline import sync
from b24app.storage.models import OutboxItem, Portal
from b24app.sandbox.stack import APP_CLIENT_ID
from b24app.pipeline.worker import Worker


def sync_now(st) -> None:
    with st.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    sync.request_sync(st.ctx, portal.id)
    w = Worker(st.ctx, concurrency=1)
    for _ in range(20):
        if not w.run_once():
            break


def open_admin(st, lang: str, user: int = 1) -> str:
    page = httpx.get(f"{st.portal_url}/marketplace/app/{APP_CLIENT_ID}/", params={"user": user, "lang": lang},
                     timeout=30)
    m = re.search(r'<form id="app-form-0" method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    fields = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', m.group(2))}
    path = html.unescape(m.group(1)).split("://", 1)[1].split("/", 1)[1]
    resp = st.flask_app.test_client().post("/" + path, data=fields)
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def test_sandbox_refuses_triggers_to_a_non_admin_token_as_documented(linked):
    st = linked
    client = st.ctx.bitrix(st.member_id())
    assert client.call("crm.automation.trigger.list")  # the installer is an administrator
    st.portal_http("POST", "/sandbox/users/1", json={"admin": False}).raise_for_status()
    res = client.batch({k: (f"crm.automation.trigger.{k}", p) for k, p in (
        ("list", {}), ("execute", {"CODE": "b24app_payment_received", "OWNER_TYPE_ID": 2, "OWNER_ID": 1}),
        ("add", {"CODE": "x", "NAME": "y"}))})
    assert {k: (e.code, e.description) for k, e in res.errors.items()} == {
        k: ("ACCESS_DENIED", "Access denied! Admin permissions required") for k in ("list", "execute", "add")}


def test_demoted_installer_payment_paid_and_notified_trigger_skipped_admin_page_warns(linked):
    st = linked
    first, second = st.deals[0], st.deals[3]
    st.portal_http("POST", "/sandbox/users/1", json={"admin": False}).raise_for_status()  # the installer
    st.pay(first["amount"], f"Оплата по счету № {first['number']}", payerInn=first["inn"])
    sync_now(st)
    state = st.portal_state()
    item = st.rest("crm.item.get", {"entityTypeId": 31, "id": first["invoice_id"]})["result"]["item"]
    assert item["stageId"] == "DT31_2:P"
    assert [n for n in state["notifications"] if n["user_id"] == first["user"]]
    assert state["trigger_executions"] == []
    with st.ctx.db.session() as s:
        trig = s.scalar(select(OutboxItem).where(OutboxItem.kind == "trigger"))
        assert trig.status == "skipped" and trig.result["needs_admin"] is True and "admin" in trig.result["why"]
        assert {i.status for i in s.scalars(select(OutboxItem))} <= {"done", "skipped"}  # nothing failing
        assert s.scalar(select(Portal)).settings["trigger_access"]["user_id"] == 1
    ru, en = open_admin(st, "ru"), open_admin(st, "en")
    assert 'id="needs-admin"' in en and "no longer a Bitrix24 administrator" in en
    assert "больше не администратор Битрикс24" in ru

    # rights given back: the next payment fires the trigger and the warning goes away
    st.portal_http("POST", "/sandbox/users/1", json={"admin": True}).raise_for_status()
    st.pay(second["amount"], f"Оплата по счету № {second['number']}", payerInn=second["inn"])
    sync_now(st)
    assert [e["owner_id"] for e in st.portal_state()["trigger_executions"]] == [second["deal_id"]]
    assert 'id="needs-admin"' not in open_admin(st, "en")
