"""Install sequence, app-context methods and event delivery of the sandbox portal, against a tiny fake app."""
from __future__ import annotations

import time
import uuid
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from flask import Flask, request

from b24app.sandbox.portal import phpquery
from b24app.sandbox.portal.app import create_portal_sandbox
from b24app.sandbox.server import serve_in_thread

SECRET = "secret"


def fake_app(records: dict) -> Flask:
    """An app whose install page binds what `records["bind"]` lists, then calls installFinish."""
    app = Flask("fake_b24_app")

    @app.post("/install")
    def install() -> str:
        records["install"].append({"args": request.args.to_dict(), "form": request.form.to_dict()})
        base = f"http://{request.args['DOMAIN']}/rest/"
        me = request.host_url.rstrip("/")
        with httpx.Client(timeout=5) as client:
            for event in records.get("bind", []):
                r = client.post(base + "event.bind.json", json={"event": event, "handler": f"{me}/events",
                                                                "auth": request.form["AUTH_ID"]})
                records["bind_results"].append(r.json())
            r = client.post(base + "placement.bind.json", json={"PLACEMENT": "CRM_DEAL_DETAIL_TAB",
                                                                "HANDLER": f"{me}/tab", "TITLE": "Оплаты",
                                                                "auth": request.form["AUTH_ID"]})
            records["bind_results"].append(r.json())
        if records.get("no_finish"):
            return "<html><body>Настройка…</body></html>"
        return "<html><script src='/api/v1/'></script><script>BX24.init(function(){BX24.installFinish();});</script></html>"

    @app.post("/events")
    def events() -> tuple[str, int]:
        raw = request.get_data(as_text=True)
        records["events"].append({"raw": raw, "form": phpquery.parse(raw),
                                  "content_type": request.headers.get("Content-Type")})
        return "ok", int(records.get("event_status", 200))

    @app.post("/app")
    def main() -> str:
        return "main"

    return app


@pytest.fixture(scope="module")
def world():
    records: dict = defaultdict(list)
    fake = serve_in_thread(fake_app(records))
    server = serve_in_thread(create_portal_sandbox(portals=(), event_delivery="sync"))
    client = httpx.Client(base_url=server.url, timeout=10)
    yield client, server, fake, records
    client.close()
    server.stop()
    fake.stop()


@pytest.fixture()
def env(world):
    """A fresh portal and a freshly registered app (its client_id) per test; records cleared."""
    client, server, fake, records = world
    records.clear()
    client.post("/sandbox/config", json={"event_delivery": "sync", "access_ttl": 3600})
    code = f"p{uuid.uuid4().hex[:10]}"
    client_id = f"local.{uuid.uuid4().hex[:8]}"
    assert client.post("/sandbox/portals", json={"code": code}).status_code == 200
    assert client.post("/sandbox/apps", json={"client_id": client_id, "client_secret": SECRET,
                                              "install_url": f"{fake.url}/install",
                                              "handler_url": f"{fake.url}/app"}).status_code == 200
    return client, server, fake, records, code, client_id


def install(client: httpx.Client, code: str, client_id: str) -> dict:
    r = client.post(f"/p/{code}/sandbox/install", json={"client_id": client_id, "user_id": 1, "lang": "ru"})
    assert r.status_code == 200, r.text
    return r.json()


def rest(client: httpx.Client, code: str, method: str, token: str, **params) -> httpx.Response:
    return client.post(f"/p/{code}/rest/{method}", json={**params, "auth": token})


def webhook(client: httpx.Client, code: str, method: str, **params) -> httpx.Response:
    return client.post(f"/p/{code}/rest/1/sandboxhook/{method}.json", json=params)


def test_install_posts_bitrix_fields_and_delivers_onappinstall(env):
    client, server, fake, records, code, client_id = env
    records["bind"] = ["ONAPPINSTALL"]
    result = install(client, code, client_id)
    assert result["install_status"] == 200 and result["install_finish"] is True and result["installed"] is True
    host = server.url.removeprefix("http://")
    posted = records["install"][0]
    assert posted["args"]["DOMAIN"] == f"{host}/p/{code}" and posted["args"]["PROTOCOL"] == "0"
    assert posted["args"]["LANG"] == "ru" and len(posted["args"]["APP_SID"]) == 32
    form = posted["form"]
    assert form["AUTH_ID"] == result["access_token"] and form["REFRESH_ID"] == result["refresh_token"]
    assert form["AUTH_EXPIRES"] == "3600" and form["SERVER_ENDPOINT"] == f"{server.url}/rest/"
    assert form["member_id"] == result["member_id"] and form["status"] == "L"
    assert form["PLACEMENT"] == "DEFAULT" and form["PLACEMENT_OPTIONS"] == "{}"
    assert form["APPLICATION_TOKEN"] == result["application_token"]
    assert [r["result"] for r in records["bind_results"]] == [True, True]  # REST works during install

    assert [d["status"] for d in result["onappinstall"]] == [200]
    event = records["events"][0]
    assert event["content_type"] == "application/x-www-form-urlencoded"
    payload = event["form"]
    assert payload["event"] == "ONAPPINSTALL" and payload["data"]["VERSION"] == "1"
    assert payload["data"]["LANGUAGE_ID"] == "ru" and payload["ts"].isdigit() and payload["event_handler_id"]
    auth = payload["auth"]
    assert auth["application_token"] == result["application_token"] and auth["refresh_token"]
    assert auth["member_id"] == result["member_id"] and auth["domain"] == f"{host}/p/{code}"
    assert auth["client_endpoint"] == f"{server.url}/p/{code}/rest/" and auth["status"] == "L"
    assert auth["server_endpoint"] == f"{server.url}/rest/" and auth["user_id"] == "1"
    assert auth["expires_in"] == "3600" and int(auth["expires"]) > time.time()
    assert "auth[access_token]=" in event["raw"].replace("%5B", "[").replace("%5D", "]")
    assert rest(client, code, "user.current", auth["access_token"]).json()["result"]["ID"] == "1"

    state = client.get(f"/p/{code}/sandbox/state").json()
    app_state = next(a for a in state["installed_apps"] if a["client_id"] == client_id)
    assert app_state["installed"] is True and app_state["application_token"] == result["application_token"]
    assert app_state["member_id"] == result["member_id"] and app_state["version"] == 1
    assert [d["status"] for d in state["event_deliveries"]] == [200]


def test_events_wait_for_install_finish_and_token_stays_stable(env):
    client, _, _, records, code, client_id = env
    records["bind"] = ["ONCRMDEALUPDATE"]
    records["no_finish"] = True
    first = install(client, code, client_id)
    assert first["install_finish"] is False and first["installed"] is False and first["onappinstall"] == []
    deal = webhook(client, code, "crm.deal.add", fields={"TITLE": "x"}).json()["result"]
    webhook(client, code, "crm.deal.update", id=deal, fields={"TITLE": "y"})
    assert records["events"] == []  # Bitrix24 delivers nothing before installFinish
    records["no_finish"] = False
    records["bind"] = []
    second = install(client, code, client_id)
    assert second["installed"] is True and second["application_token"] == first["application_token"]
    assert second["access_token"] != first["access_token"]
    webhook(client, code, "crm.deal.update", id=deal, fields={"TITLE": "z"})
    assert [e["form"]["event"] for e in records["events"]] == ["ONCRMDEALUPDATE"]


def test_crm_changes_deliver_events_with_nested_fields(env):
    client, _, _, records, code, client_id = env
    records["bind"] = ["ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDYNAMICITEMUPDATE"]
    result = install(client, code, client_id)
    deal = webhook(client, code, "crm.deal.add", fields={"TITLE": "x"}).json()["result"]
    item = rest(client, code, "crm.item.add", result["access_token"], entityTypeId=31,
                fields={"title": "inv", "parentId2": deal}).json()["result"]["item"]
    rest(client, code, "crm.item.update", result["access_token"], entityTypeId=31, id=item["id"],
         fields={"stageId": "DT31_2:P"})
    webhook(client, code, "crm.deal.update", id=deal, fields={"STAGE_ID": "WON"})
    forms = [e["form"] for e in records["events"]]
    assert [f["event"] for f in forms] == ["ONCRMDEALADD", "ONCRMDYNAMICITEMUPDATE", "ONCRMDEALUPDATE"]
    assert forms[0]["data"] == {"FIELDS": {"ID": str(deal)}}
    assert forms[1]["data"] == {"FIELDS": {"ID": str(item["id"]), "ENTITY_TYPE_ID": "31"}}
    for form in forms:
        assert "refresh_token" not in form["auth"]
        assert form["auth"]["application_token"] == result["application_token"]
        assert rest(client, code, "crm.deal.get", form["auth"]["access_token"], id=deal).status_code == 200


def test_async_delivery_and_failed_handler_is_not_retried(env):
    client, _, _, records, code, client_id = env
    records["bind"] = ["ONCRMDEALADD"]
    install(client, code, client_id)
    client.post("/sandbox/config", json={"event_delivery": "async"})
    records["event_status"] = 500
    webhook(client, code, "crm.deal.add", fields={"TITLE": "async"})
    deadline = time.monotonic() + 5
    deliveries: list = []
    while time.monotonic() < deadline:
        deliveries = client.get(f"/p/{code}/sandbox/state").json()["event_deliveries"]
        if deliveries and deliveries[-1]["done"]:
            break
        time.sleep(0.02)
    assert [(d["event"], d["status"]) for d in deliveries] == [("ONCRMDEALADD", 500)]
    time.sleep(0.2)
    assert len(client.get(f"/p/{code}/sandbox/state").json()["event_deliveries"]) == 1
    assert len(records["events"]) == 1


def test_event_and_placement_binding_rules(env):
    client, _, fake, records, code, client_id = env
    token = install(client, code, client_id)["access_token"]
    handler = f"{fake.url}/events"
    assert rest(client, code, "event.bind", token, event="onCrmDealUpdate", handler=handler).json()["result"] is True
    dup = rest(client, code, "event.bind", token, event="ONCRMDEALUPDATE", handler=handler)
    assert dup.status_code == 400
    assert dup.json() == {"error": "ERROR_CORE", "error_description": "Unable to set event handler: Handler already binded"}
    assert rest(client, code, "event.bind", token, event="ONNOTHING", handler=handler).json()["error"] == "ERROR_EVENT_NOT_FOUND"
    assert rest(client, code, "event.get", token).json()["result"] == [
        {"event": "ONCRMDEALUPDATE", "handler": handler, "auth_type": "0", "offline": 0}]
    assert rest(client, code, "event.unbind", token, event="ONCRMDEALUPDATE", handler=handler).json()["result"] == {"count": 1}
    assert webhook(client, code, "event.bind", event="ONCRMDEALADD", handler=handler).json()["error"] == "WRONG_AUTH_TYPE"

    tab = f"{fake.url}/tab"  # the install page bound it already
    again = rest(client, code, "placement.bind", token, PLACEMENT="CRM_DEAL_DETAIL_TAB", HANDLER=tab)
    assert again.json() == {"error": "ERROR_CORE", "error_description": "Unable to set placement handler: Handler already binded"}
    unknown = rest(client, code, "placement.bind", token, PLACEMENT="CRM_NOWHERE", HANDLER=tab)
    assert unknown.json()["error"] == "ERROR_PLACEMENT_NOT_FOUND"
    missing = rest(client, code, "placement.bind", token, HANDLER=tab)
    assert missing.json()["error"] == "ERROR_ARGUMENT" and missing.json()["argument"] == "PLACEMENT"
    listed = rest(client, code, "placement.get", token).json()["result"]
    assert [(p["placement"], p["handler"], p["title"]) for p in listed] == [("CRM_DEAL_DETAIL_TAB", tab, "Оплаты")]
    assert rest(client, code, "placement.unbind", token, PLACEMENT="CRM_DEAL_DETAIL_TAB").json()["result"] == {"count": 1}
    assert rest(client, code, "placement.bind", token, PLACEMENT="CRM_SMART_INVOICE_DETAIL_TAB",
                HANDLER="http://localhost/x").json()["error"] == "ERROR_WRONG_HANDLER_URL"


def test_manager_token_cannot_bind_and_scope_is_enforced(env):
    client, _, fake, _, code, client_id = env
    install(client, code, client_id)
    location = client.get(f"/p/{code}/oauth/authorize/", params={"client_id": client_id, "user": 2}).headers["Location"]
    auth_code = parse_qs(urlsplit(location).query)["code"][0]
    manager = client.post("/oauth/token/", data={"grant_type": "authorization_code", "client_id": client_id,
                                                 "client_secret": SECRET, "code": auth_code}).json()
    denied = rest(client, code, "placement.bind", manager["access_token"], PLACEMENT="CRM_DEAL_DETAIL_TAB",
                  HANDLER=f"{fake.url}/other")
    assert denied.status_code == 403 and denied.json()["error"] == "ACCESS_DENIED"
    assert rest(client, code, "user.admin", manager["access_token"]).json()["result"] is False

    narrow = f"local.{uuid.uuid4().hex[:8]}"
    client.post("/sandbox/apps", json={"client_id": narrow, "client_secret": SECRET, "scope": "crm",
                                       "install_url": f"{fake.url}/install", "handler_url": f"{fake.url}/app"})
    token = install(client, code, narrow)["access_token"]
    for method in ("im.notify.system.add", "user.current", "tasks.task.add"):
        r = rest(client, code, method, token, USER_ID=1, MESSAGE="x")
        assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    assert rest(client, code, "crm.deal.list", token).status_code == 200


def test_uninstall_and_update_events(env):
    client, _, _, records, code, client_id = env
    records["bind"] = ["ONAPPUPDATE", "ONAPPUNINSTALL"]
    first = install(client, code, client_id)
    updated = client.post(f"/p/{code}/sandbox/update", json={"client_id": client_id, "version": 2}).json()
    assert updated["previous_version"] == 1 and updated["application_token"] != first["application_token"]
    upd = records["events"][-1]["form"]
    assert upd["event"] == "ONAPPUPDATE" and upd["data"]["VERSION"] == "2" and upd["data"]["PREVIOUS_VERSION"] == "1"
    assert upd["auth"]["application_token"] == updated["application_token"] and upd["auth"]["refresh_token"]

    gone = client.post(f"/p/{code}/sandbox/uninstall", json={"client_id": client_id, "clean": True}).json()
    assert [d["status"] for d in gone["onappuninstall"]] == [200]
    un = records["events"][-1]["form"]
    assert un["event"] == "ONAPPUNINSTALL" and un["data"] == {"LANGUAGE_ID": "ru", "CLEAN": "1"}
    assert "access_token" not in un["auth"] and un["auth"]["application_token"] == updated["application_token"]
    state = client.get(f"/p/{code}/sandbox/state").json()
    assert state["placements"] == [] and state["events"] == [] and state["installed_apps"] == []
    assert client.post(f"/p/{code}/sandbox/uninstall", json={"client_id": client_id}).status_code == 404
    again = install(client, code, client_id)
    assert again["installed"] is True and again["application_token"] != updated["application_token"]


def test_automation_triggers_and_expired_token_in_batch(env):
    client, _, _, _, code, client_id = env
    token = install(client, code, client_id)["access_token"]
    assert rest(client, code, "crm.automation.trigger.add", token, CODE="paid", NAME="Оплата получена").json()["result"]
    assert rest(client, code, "crm.automation.trigger.list", token).json()["result"] == [
        {"NAME": "Оплата получена", "CODE": "paid"}]
    deal = webhook(client, code, "crm.deal.add", fields={"TITLE": "t"}).json()["result"]
    assert rest(client, code, "crm.automation.trigger.execute", token, CODE="paid", OWNER_TYPE_ID=2,
                OWNER_ID=deal).json()["result"] is True
    assert rest(client, code, "crm.automation.trigger.execute", token, CODE="nope", OWNER_TYPE_ID=2,
                OWNER_ID=deal).status_code == 400
    outside = webhook(client, code, "crm.automation.trigger.add", CODE="x", NAME="y").json()  # trigger-add.md
    assert outside == {"error": "ACCESS_DENIED", "error_description": "Access denied! Application context required"}
    executions = client.get(f"/p/{code}/sandbox/state").json()["trigger_executions"]
    assert [(e["code"], e["owner_type_id"], e["owner_id"]) for e in executions] == [("paid", 2, deal)]

    client.post(f"/p/{code}/sandbox/expire-tokens")
    expired = rest(client, code, "batch", token, cmd={"a": "user.current"})
    assert expired.status_code == 401 and expired.json()["error"] == "expired_token"


def test_expired_token_fault_hits_fresh_tokens_only_while_active(env):
    client, _, _, _, code, client_id = env
    token = install(client, code, client_id)["access_token"]
    client.post("/sandbox/faults", json={"kinds": {"expired_token": 1.0}})
    try:
        r = rest(client, code, "user.current", token)
        assert r.status_code == 401 and r.json()["error"] == "expired_token"
    finally:
        client.delete("/sandbox/faults")
    assert rest(client, code, "user.current", token).status_code == 200
    assert client.get(f"/p/{code}/sandbox/state").json()["faults"] == {"expired_token": 1}
