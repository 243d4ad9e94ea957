"""Who the tab and the admin page believe the user is: only a token of OUR app opens them (checked the way a real
portal answers app.info), and a frame token outlives Bitrix24's check by FRAME_MAX_AGE at most."""
from __future__ import annotations

import time

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from b24app.web import security
from b24app.web.security import FRAME_SALT

from test_install_takeover import app_frame
from test_web_placement import config_of, open_tab

OTHER_APP = "local.other.app"
FRAME_MAX_AGE = getattr(security, "FRAME_MAX_AGE", 8 * 3600)


def install_other_app(st) -> str:
    """A second app on the same portal (its install page is unreachable; the admin finishes it anyway):
    returns a token the portal issued to that app for its administrator."""
    r = httpx.post(f"{st.sandbox_url}/sandbox/apps", json={
        "client_id": OTHER_APP, "client_secret": "other-secret", "install_url": "http://127.0.0.1:9/install",
        "handler_url": "http://127.0.0.1:9/app"}, timeout=30)
    r.raise_for_status()
    result = st.portal_http("POST", "/sandbox/install", json={"client_id": OTHER_APP, "user_id": 1}).json()
    st.portal_http("POST", "/sandbox/install-finish", json={"client_id": OTHER_APP, "user_id": 1}).raise_for_status()
    token = result["access_token"]
    info = httpx.post(f"{st.portal_url}/rest/app.info.json", json={"auth": token}, timeout=30).json()["result"]
    assert info["CODE"] == OTHER_APP and info["INSTALLED"] is True
    return token


def test_another_apps_token_opens_neither_the_tab_nor_the_admin_page(installed):
    st = installed
    token = install_other_app(st)
    deal = st.deals[0]["deal_id"]
    assert open_tab(st, "deal", deal, user=1).status_code == 200  # our own frame opens it
    r = open_tab(st, "deal", deal, user=1, AUTH_ID=token)
    assert r.status_code == 403, r.get_data(as_text=True)[:300]
    query, form = app_frame(st, user=1)
    client = st.flask_app.test_client()
    assert client.post("/app", query_string=query, data=form).status_code == 200
    assert client.post("/app", query_string=query, data={**form, "AUTH_ID": token}).status_code == 403


# -- frame token age ------------------------------------------------------------------------------------
def serializer(st, signed_at: float | None = None) -> URLSafeTimedSerializer:
    class At(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(signed_at if signed_at is not None else time.time())

    return URLSafeTimedSerializer(st.flask_app.config["SECRET_KEY"], salt=FRAME_SALT, signer=At)


def widget_api(st, deal: int, token: str):
    return st.flask_app.test_client().get(f"/placement/api/deal/{deal}", headers={"X-Frame-Token": token})


@pytest.fixture
def tab(installed):
    deal = installed.deals[0]["deal_id"]
    resp = open_tab(installed, "deal", deal, user=2)
    assert resp.status_code == 200
    token = config_of(resp)["token"]
    payload = serializer(installed).loads(token)
    assert abs(payload["v"] - time.time()) < 60, "the frame says when Bitrix24 vouched for it"
    return installed, deal, payload


def test_a_frame_vouched_for_too_long_ago_must_be_reopened(tab):
    st, deal, payload = tab
    old = serializer(st).dumps({**payload, "v": time.time() - FRAME_MAX_AGE - 60})  # freshly signed
    r = widget_api(st, deal, old)
    assert r.status_code == 401 and r.get_json()["message"] == "frame_reverify"
    assert "X-Frame-Token" not in r.headers


def test_renewal_keeps_the_time_of_the_check(tab):
    st, deal, payload = tab
    vouched = time.time() - FRAME_MAX_AGE + 600
    half_old = serializer(st, signed_at=time.time() - 20 * 60).dumps({**payload, "v": vouched})
    r = widget_api(st, deal, half_old)
    assert r.status_code == 200
    renewed = serializer(st).loads(r.headers["X-Frame-Token"])
    assert renewed["v"] == pytest.approx(vouched), "renewal must not move the check forward"
    # the renewed token itself stops working once the check is FRAME_MAX_AGE old
    expired = serializer(st).dumps({**renewed, "v": time.time() - FRAME_MAX_AGE - 1})
    assert widget_api(st, deal, expired).status_code == 401


@pytest.mark.browser
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_tab_asks_to_be_reloaded_once_bitrix24s_check_is_too_old(browser, installed, monkeypatch):
    """In chromium: the deal tab's frame passes FRAME_MAX_AGE; its next call says so once, polling stops, and
    a button reloads the frame through BX24 (a fresh POST from the portal, verified again)."""
    from conftest import BROWSER_STEP_MS

    st = installed
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="ru-RU")
    context.set_default_timeout(BROWSER_STEP_MS)
    page = context.new_page()
    try:
        page.goto(f"{st.portal_url}/crm/deal/details/{st.deals[0]['deal_id']}/?user=2&tab=0")
        frame = page.frame_locator("#app-frame")
        frame.locator("#b24app").wait_for()
        monkeypatch.setattr(security, "FRAME_MAX_AGE", 0)  # the app runs in this process: Bitrix24's check is now old
        frame.locator("body").evaluate("() => window.b24app.refresh()")
        flash = frame.locator("#flash")
        flash.get_by_text("Откройте её заново").wait_for()
        calls = []
        page.on("request", lambda req: calls.append(req.url) if "/placement/api/" in req.url else None)
        page.wait_for_timeout(12000)  # longer than one poll interval
        assert calls == [], "a dead frame must stop polling"
        monkeypatch.setattr(security, "FRAME_MAX_AGE", 8 * 3600)
        with page.expect_request(lambda req: "/placement/deal" in req.url and req.method == "POST"):
            flash.get_by_role("button", name="Обновить вкладку").click()
        # the old document may still be showing right after the POST left: wait for the new one to replace it
        frame.locator("#flash").get_by_text("Откройте её заново").wait_for(state="hidden")
        frame.locator("#b24app").wait_for()
    finally:
        context.close()
