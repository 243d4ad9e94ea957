"""Pages of the sandbox portal: deal/invoice cards with app tabs, the app page, the BX24 shim in a browser."""
from __future__ import annotations

import json
import os
import uuid
from collections import defaultdict
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from flask import Flask, request

from b24app.sandbox.portal.app import create_portal_sandbox
from b24app.sandbox.server import serve_in_thread

CHROMIUM = "/usr/bin/chromium"


class Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self.iframes: list[dict] = []
        self.tabs: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "target": a.get("target"), "fields": {}})
        elif tag == "input" and self.forms:
            self.forms[-1]["fields"][a.get("name")] = a.get("value", "")
        elif tag == "iframe":
            self.iframes.append(a)
        elif tag == "button" and "data-app-tab" in a:
            self.tabs.append(a)


def parse(html: str) -> Forms:
    parser = Forms()
    parser.feed(html)
    return parser


def fake_app(box: dict) -> Flask:
    """Install page binds the deal tab then finishes; the tab page reads its deal through BX24 and fits."""
    app = Flask("fake_frame_app")

    @app.post("/install")
    def install() -> str:
        if box.get("no_finish"):
            return "<html><body>Настройка…</body></html>"
        return f"""<html><body>Установка…<script src="{box['sandbox']}/api/v1/"></script><script>
          BX24.init(function () {{
            BX24.callMethod('placement.bind', {{PLACEMENT: 'CRM_DEAL_DETAIL_TAB',
                HANDLER: '{box['app']}/tab', TITLE: 'Оплаты'}}, function (r) {{
              document.body.setAttribute('data-bind', r.error() ? String(r.error()) : 'ok');
              BX24.installFinish();
            }});
          }});</script></body></html>"""

    @app.post("/app")
    def main() -> str:
        box["main_forms"].append(request.form.to_dict())
        return "<html><body><h1 id='main'>Главная приложения</h1></body></html>"

    @app.post("/tab")
    def tab() -> str:
        box["tab_forms"].append({"args": request.args.to_dict(), "form": request.form.to_dict()})
        return f"""<html><body style="margin:0"><div id="out">…</div><div style="height:640px"></div>
          <script src="{box['sandbox']}/api/v1/"></script><script>
          BX24.init(function () {{
            var info = BX24.placement.info();
            document.getElementById('out').setAttribute('data-placement', info.placement);
            BX24.callMethod('crm.deal.get', {{id: info.options.ID}}, function (r) {{
              document.getElementById('out').textContent = r.error() ? String(r.error()) : r.data().TITLE;
              BX24.fitWindow();
            }});
          }});</script></body></html>"""

    return app


@pytest.fixture(scope="module")
def world():
    box: dict = defaultdict(list)
    fake = serve_in_thread(fake_app(box))
    server = serve_in_thread(create_portal_sandbox(portals=(), event_delivery="sync"))
    box["sandbox"], box["app"] = server.url, fake.url
    client = httpx.Client(base_url=server.url, timeout=10)
    yield client, server, fake, box
    client.close()
    server.stop()
    fake.stop()


@pytest.fixture()
def env(world):
    client, server, fake, box = world
    code = f"p{uuid.uuid4().hex[:10]}"
    client_id = f"local.{uuid.uuid4().hex[:8]}"
    client.post("/sandbox/portals", json={"code": code})
    client.post("/sandbox/apps", json={"client_id": client_id, "client_secret": "s", "install_url": f"{fake.url}/install",
                                       "handler_url": f"{fake.url}/app"})
    hook = f"/p/{code}/rest/1/sandboxhook/"
    deal = client.post(hook + "crm.deal.add", json={"fields": {"TITLE": "Сделка с вкладкой", "OPPORTUNITY": "1200"}}).json()["result"]
    item = client.post(hook + "crm.item.add", json={"entityTypeId": 31, "fields": {
        "title": "Счёт 77", "accountNumber": "77", "opportunity": "1200", "parentId2": deal}}).json()["result"]["item"]
    return client, server, fake, box, code, client_id, deal, item["id"]


def bind_tab(client: httpx.Client, box: dict, code: str, client_id: str, fake_url: str, finish: bool = True,
             placement: str = "CRM_DEAL_DETAIL_TAB") -> None:
    """Install without a browser (the control API posts an install page that does not finish), bind, finish."""
    box["no_finish"] = True
    try:
        assert client.post(f"/p/{code}/sandbox/install", json={"client_id": client_id}).json()["installed"] is False
    finally:
        box["no_finish"] = False
    token = next(t["token"] for t in client.get(f"/p/{code}/sandbox/state").json()["issued_tokens"]
                 if t["kind"] == "access" and t["client_id"] == client_id)
    r = client.post(f"/p/{code}/rest/placement.bind", json={"PLACEMENT": placement, "HANDLER": f"{fake_url}/tab",
                                                             "TITLE": "Оплаты", "auth": token})
    assert r.json()["result"] is True
    if finish:
        assert client.post(f"/p/{code}/sandbox/install-finish", json={"client_id": client_id}).status_code == 200


def test_deal_card_posts_placement_form_into_iframe(env):
    client, server, fake, box, code, client_id, deal, item = env
    bind_tab(client, box, code, client_id, fake.url)
    page = client.get(f"/p/{code}/crm/deal/details/{deal}/", params={"user": 2, "lang": "ru", "tab": 0})
    assert page.status_code == 200 and "Сделка с вкладкой" in page.text and "Счёт 77" in page.text
    parsed = parse(page.text)
    assert [f["id"] for f in parsed.iframes] == ["app-frame"] and parsed.iframes[0]["name"] == "app-frame"
    assert [t.get("data-app-tab") for t in parsed.tabs] == ["0"]
    form = parsed.forms[0]
    assert form["target"] == "app-frame"
    action = urlsplit(form["action"])
    assert f"{action.scheme}://{action.netloc}{action.path}" == f"{fake.url}/tab"
    query = {k: v[0] for k, v in parse_qs(action.query).items()}
    assert query["DOMAIN"] == f"{server.url.removeprefix('http://')}/p/{code}" and query["PROTOCOL"] == "0"
    assert query["LANG"] == "ru" and len(query["APP_SID"]) == 32
    fields = form["fields"]
    assert fields["PLACEMENT"] == "CRM_DEAL_DETAIL_TAB" and json.loads(fields["PLACEMENT_OPTIONS"]) == {"ID": str(deal)}
    assert fields["status"] == "L" and fields["SERVER_ENDPOINT"] == f"{server.url}/rest/" and fields["REFRESH_ID"]
    state = client.get(f"/p/{code}/sandbox/state").json()
    assert fields["member_id"] == state["member_id"]
    assert fields["APPLICATION_TOKEN"] == state["installed_apps"][0]["application_token"]
    me = client.post(f"/p/{code}/rest/user.current", json={"auth": fields["AUTH_ID"]}).json()["result"]
    assert me["ID"] == "2"  # the token is issued for the user who opened the card


def test_unfinished_install_hides_tab_from_managers_only(env):
    client, _, fake, box, code, client_id, deal, _ = env
    bind_tab(client, box, code, client_id, fake.url, finish=False)
    assert parse(client.get(f"/p/{code}/crm/deal/details/{deal}/", params={"user": 2}).text).tabs == []
    assert len(parse(client.get(f"/p/{code}/crm/deal/details/{deal}/", params={"user": 1}).text).tabs) == 1
    assert client.get(f"/p/{code}/crm/deal/details/99999/").status_code == 404


def test_invoice_card_uses_its_own_placement(env):
    client, _, fake, box, code, client_id, deal, item = env
    bind_tab(client, box, code, client_id, fake.url, placement="CRM_SMART_INVOICE_DETAIL_TAB")
    assert parse(client.get(f"/p/{code}/crm/deal/details/{deal}/").text).forms == []
    parsed = parse(client.get(f"/p/{code}/crm/type/31/details/{item}/").text)
    fields = parsed.forms[0]["fields"]
    assert fields["PLACEMENT"] == "CRM_SMART_INVOICE_DETAIL_TAB" and json.loads(fields["PLACEMENT_OPTIONS"]) == {"ID": str(item)}


def test_app_page_opens_installer_until_finished(env):
    client, _, fake, _, code, client_id, _, _ = env
    first = parse(client.get(f"/p/{code}/marketplace/app/{client_id}/", params={"user": 1}).text)
    assert first.forms[0]["action"].startswith(f"{fake.url}/install?")
    assert first.forms[0]["fields"]["PLACEMENT"] == "DEFAULT"
    manager = client.get(f"/p/{code}/marketplace/app/{client_id}/", params={"user": 2})
    assert "не установлено" in manager.text and parse(manager.text).forms == []
    client.post(f"/p/{code}/sandbox/install-finish", json={"client_id": client_id})
    after = parse(client.get(f"/p/{code}/marketplace/app/{client_id}/", params={"user": 2}).text)
    assert after.forms[0]["action"].startswith(f"{fake.url}/app?")


def test_bx24_shim_is_served(world):
    client = world[0]
    js = client.get("/api/v1/")
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    for name in ("installFinish", "fitWindow", "resizeWindow", "callMethod", "getAuth", "placement"):
        assert name in js.text


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")
def test_browser_install_then_tab_fits_and_reads_deal(env):
    sync_api = pytest.importorskip("playwright.sync_api")
    client, _, _, box, code, client_id, deal, _ = env
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            page.goto(f"{box['sandbox']}/p/{code}/marketplace/app/{client_id}/?user=1&lang=ru")
            # installer frame binds the tab over REST, calls installFinish, the portal reloads into the app
            page.frame_locator("#app-frame").locator("#main").wait_for()
            state = client.get(f"/p/{code}/sandbox/state").json()
            assert state["installed_apps"][0]["installed"] is True
            assert [p["placement"] for p in state["placements"]] == ["CRM_DEAL_DETAIL_TAB"]

            page.goto(f"{box['sandbox']}/p/{code}/crm/deal/details/{deal}/?user=1&lang=ru&tab=0")
            out = page.frame_locator("#app-frame").locator("#out")
            out.filter(has_text="Сделка с вкладкой").wait_for()
            assert out.get_attribute("data-placement") == "CRM_DEAL_DETAIL_TAB"
            page.wait_for_function("document.getElementById('app-frame').getAttribute('data-height') !== null")
            frame = page.locator("#app-frame")
            assert int(frame.get_attribute("data-height")) >= 640
            assert frame.bounding_box()["height"] >= 640
            commands = [m["cmd"] for m in json.loads(frame.get_attribute("data-bx24-messages"))]
            assert commands[0] == "getInitData" and "fitWindow" in commands
        finally:
            browser.close()
