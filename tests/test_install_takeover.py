"""Install takeover by a portal user, and the wipe that followed: every user who opens the app is handed a
valid token of ours and the portal's APPLICATION_TOKEN (settings/oauth/simple-way.md,
api-reference/widgets/_includes/widget_data.md). None of that may install, update, uninstall or clean."""
from __future__ import annotations

import html
import re
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from b24app.storage.models import BankLink, Invoice, Portal
from b24app.portals.store import token_hash
from b24app.sandbox.stack import APP_CLIENT_ID

WATCHED = ("access_token_enc", "refresh_token_enc", "application_token_hash", "client_endpoint", "domain",
           "server_endpoint", "token_generation", "installed_by", "status")


def snapshot(st) -> dict:
    with st.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
        return {col: getattr(portal, col) for col in WATCHED} if portal else {}


def data_counts(st) -> dict:
    with st.ctx.db.session() as s:
        return {"portals": s.scalar(select(func.count(Portal.id))),
                "bank_links": s.scalar(select(func.count(BankLink.id))),
                "invoices": s.scalar(select(func.count(Invoice.id)))}


def app_frame(st, user: int) -> tuple[dict, dict]:
    """(query, form) the portal posts into the app page for `user`: that user's own fresh tokens and the
    portal's APPLICATION_TOKEN, exactly what their browser receives."""
    page = httpx.get(f"{st.portal_url}/marketplace/app/{APP_CLIENT_ID}/", params={"user": user}, timeout=30)
    page.raise_for_status()
    m = re.search(r'<form id="app-form-0" method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    assert m, "the app page has no frame form"
    form = {html.unescape(k): html.unescape(v)
            for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', m.group(2))}
    return dict(parse_qsl(urlsplit(html.unescape(m.group(1))).query)), form


def post_install(st, query: dict, form: dict) -> httpx.Response:
    return httpx.post(f"{st.app_url}/install", params=query, data=form, timeout=30)


def lifecycle_event(st, event: str, form: dict, application_token: str, **data) -> httpx.Response:
    """A lifecycle event built by hand from what a user's frame received."""
    state = st.portal_state()
    body = {"event": event, "ts": "1700000000", "auth[member_id]": state["member_id"],
            "auth[domain]": state["domain"], "auth[client_endpoint]": state["client_endpoint"],
            "auth[server_endpoint]": form["SERVER_ENDPOINT"], "auth[application_token]": application_token,
            "auth[access_token]": form["AUTH_ID"], "auth[refresh_token]": form["REFRESH_ID"],
            "auth[expires_in]": "3600", "auth[user_id]": "2"}
    body.update({f"data[{k}]": v for k, v in data.items()})
    return httpx.post(f"{st.app_url}/events/app", data=body, timeout=30)


@pytest.fixture
def with_data(linked):
    from b24app.pipeline import invoices
    with linked.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    invoices.refresh_all(linked.ctx, portal)
    counts = data_counts(linked)
    assert counts["bank_links"] == 1 and counts["invoices"] > 0
    return linked


def test_a_manager_cannot_take_the_install_over_nor_wipe_the_portal(with_data):
    """User 2 (not an administrator) posts /install with their own tokens and an application token of their
    choice, then ONAPPUNINSTALL CLEAN=1 with it, and with the genuine one their frame was given."""
    st = with_data
    before, counts = snapshot(st), data_counts(st)
    query, form = app_frame(st, user=2)
    genuine = form["APPLICATION_TOKEN"]
    assert token_hash(genuine) == before["application_token_hash"], "every user's frame gets the real token"
    chosen = "c" * 32

    r = post_install(st, {**query, "PROTOCOL": "1"}, {**form, "APPLICATION_TOKEN": chosen})
    assert r.status_code == 403 and 'data-reason="not_admin"' in r.text
    assert snapshot(st) == before

    for event, data in (("ONAPPINSTALL", {}), ("ONAPPUPDATE", {"VERSION": "2", "PREVIOUS_VERSION": "1"})):
        r = lifecycle_event(st, event, form, chosen, **data)
        assert r.status_code == 401 and r.json()["error"] == "not_admin", (event, r.text)
        assert snapshot(st) == before, event

    r = lifecycle_event(st, "ONAPPUNINSTALL", form, chosen, CLEAN="1")
    assert r.status_code == 401 and r.json()["error"] == "invalid_application_token"
    # The genuine token proves only that the caller could open the app: the installation still works.
    r = lifecycle_event(st, "ONAPPUNINSTALL", form, genuine, CLEAN="1")
    assert r.status_code == 401 and r.json()["error"] == "still_installed"
    assert snapshot(st) == before and data_counts(st) == counts

    # and the app keeps working with the stored tokens
    assert st.ctx.bitrix(st.member_id()).call("app.info")["INSTALLED"] is True


@pytest.mark.parametrize("query_override, status, reason", [
    ({"PROTOCOL": "1"}, 200, None),
    ({"PROTOCOL": "0"}, 200, None),
    ({"DOMAIN": "evil.example"}, 403, "domain_mismatch"),
])
def test_protocol_and_domain_in_the_request_change_nothing(installed, query_override, status, reason):
    """The administrator's own frame posted to /install again: the portal's address comes from the OAuth
    server's app.info, whatever PROTOCOL or DOMAIN the request says."""
    st = installed
    before = snapshot(st)
    query, form = app_frame(st, user=1)
    r = post_install(st, {**query, **query_override}, form)
    assert r.status_code == status, r.text
    after = snapshot(st)
    assert after["client_endpoint"] == before["client_endpoint"] == st.portal_state()["client_endpoint"]
    assert after["domain"] == before["domain"]
    if reason:
        assert f'data-reason="{reason}"' in r.text
        assert after == before
    else:  # the same installation, by an administrator: fresh tokens, same application token
        assert after["application_token_hash"] == before["application_token_hash"]
        assert after["token_generation"] == before["token_generation"] + 1


def test_an_administrator_cannot_swap_the_application_token_of_a_live_installation(installed):
    st = installed
    before = snapshot(st)
    query, form = app_frame(st, user=1)
    r = post_install(st, query, {**form, "APPLICATION_TOKEN": "d" * 32})
    assert r.status_code == 403 and 'data-reason="already_installed"' in r.text
    assert snapshot(st) == before


def test_reinstall_after_an_uninstall_whose_event_was_lost(installed):
    """Bitrix24 never retries events: the app missed ONAPPUNINSTALL and still holds the old installation.
    A new install by an administrator is accepted once the stored tokens are seen to be dead."""
    st = installed
    st.ctx.bitrix(st.member_id()).call("event.unbind", {"event": "ONAPPUNINSTALL", "handler": st.app_url + "/events/app"})
    r = st.portal_http("POST", "/sandbox/uninstall", json={"client_id": APP_CLIENT_ID, "clean": False})
    assert r.status_code == 200 and r.json()["onappuninstall"] == []
    before = snapshot(st)
    assert before["status"] == "installed"  # we do not know yet
    result = st.install()
    assert result["install_status"] == 200 and result["install_finish"], result
    after = snapshot(st)
    assert after["application_token_hash"] == token_hash(result["application_token"]) != before["application_token_hash"]
    assert after["access_token_enc"] != before["access_token_enc"]
    assert st.ctx.bitrix(st.member_id()).call("app.info")["INSTALLED"] is True


def test_a_genuine_uninstall_is_confirmed_and_cleans(with_data):
    st = with_data
    r = st.portal_http("POST", "/sandbox/uninstall", json={"client_id": APP_CLIENT_ID, "clean": True})
    assert [d["status"] for d in r.json()["onappuninstall"]] == [200]
    assert data_counts(st) == {"portals": 0, "bank_links": 0, "invoices": 0}
    result = st.install()  # and a genuine administrator reinstall still works
    assert result["install_status"] == 200 and result["install_finish"], result
    assert snapshot(st)["status"] == "installed"


def test_an_install_whose_binding_fails_writes_nothing(stack):
    """The app registered without the `placement` scope: placement.bind fails, so the install fails, and
    nothing is stored (a later, working install starts clean)."""
    st = stack
    apps = httpx.get(f"{st.sandbox_url}/sandbox/apps", timeout=30).json()
    ours = next(a for a in apps if a["client_id"] == APP_CLIENT_ID)
    spec = {**ours, "client_secret": st.settings.bitrix_client_secret}
    httpx.post(f"{st.sandbox_url}/sandbox/apps", json={**spec, "scope": "crm,im,task,user_brief"},
               timeout=30).raise_for_status()
    result = st.install()
    assert result["install_status"] == 502 and not result["install_finish"], result
    assert snapshot(st) == {} and data_counts(st)["portals"] == 0

    httpx.post(f"{st.sandbox_url}/sandbox/apps", json=spec, timeout=30).raise_for_status()
    result = st.install()
    assert result["install_status"] == 200 and result["install_finish"], result
    assert snapshot(st)["status"] == "installed"


def test_a_token_refreshed_while_binding_is_the_one_stored(stack):
    """The installer's access token expires between the admin check and the binding: the pair refreshed in
    memory is what gets stored (the posted refresh token is spent by then)."""
    st = stack
    httpx.post(f"{st.sandbox_url}/sandbox/faults", json={"script": [None, "expired_token"]},
               timeout=30).raise_for_status()  # the portal's 1st REST request is user.admin, the 2nd the bind read
    result = st.install()
    assert result["install_status"] == 200 and result["install_finish"], result
    creds = st.ctx.portals.load(st.member_id())
    assert creds.refresh_token != result["refresh_token"]
    issued = {t["token"]: t for t in st.portal_state()["issued_tokens"]}
    assert issued[result["refresh_token"]]["used"] and not issued[creds.refresh_token]["used"]
    assert st.ctx.bitrix(st.member_id()).call("app.info")["INSTALLED"] is True
