"""Binding races, updates and the end of an installation, against the portal sandbox."""
from __future__ import annotations

import threading

import httpx
import pytest
from sqlalchemy import select

from b24app.adapters.bitrix.client import request_refresh
from b24app.adapters.bitrix.errors import PortalGone
from b24app.portals.install import bind
from b24app.storage.models import Portal
from b24app.portals.store import token_hash
from b24app.sandbox.stack import APP_CLIENT_ID

from test_install import expected_events, expected_placements, ours


def test_two_racing_binds_both_succeed_and_bind_once(installed):
    """Two installs/updates binding at once: the loser's binds answer ERROR_CORE "Handler already binded"
    (what Bitrix24 answers, whatever the docs' error tables say), which is success."""
    st = installed
    member = st.member_id()
    client = st.ctx.bitrix(member)
    for p, handler in ours(st, st.portal_state()["placements"], "placement"):
        client.call("placement.unbind", {"PLACEMENT": p, "HANDLER": handler})
    for e, handler in ours(st, st.portal_state()["events"], "event"):
        client.call("event.unbind", {"event": e, "handler": handler})
    httpx.post(f"{st.sandbox_url}/sandbox/config", json={"latency_ms": 300}, timeout=30).raise_for_status()
    start, outcomes = threading.Barrier(2), []

    def run():
        start.wait()
        try:
            outcomes.append(bind(st.ctx, member))
        except Exception as exc:  # noqa: BLE001  (the test reports it)
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    httpx.post(f"{st.sandbox_url}/sandbox/config", json={"latency_ms": 0}, timeout=30)
    assert all(isinstance(o, dict) for o in outcomes), outcomes
    assert all(o["changed"] for o in outcomes), "both saw the handlers missing: a real race"
    state = st.portal_state()
    assert ours(st, state["placements"], "placement") == expected_placements(st)
    assert ours(st, state["events"], "event") == expected_events(st)


def test_update_drops_onappinstall_and_the_app_binds_it_again(installed):
    """On update the core deletes the app's ONAPPINSTALL handlers and issues a new application_token
    (api-reference/common/events/on-app-update.md); ONAPPUPDATE rebinds and takes the new token."""
    st = installed
    r = st.portal_http("POST", "/sandbox/update", json={"client_id": APP_CLIENT_ID, "version": 2})
    assert [d["status"] for d in r.json()["onappupdate"]] == [200], r.text
    assert ours(st, st.portal_state()["events"], "event") == expected_events(st)
    with st.ctx.db.session() as s:
        assert s.scalar(select(Portal.application_token_hash)) == token_hash(r.json()["application_token"])


def test_a_refresh_after_uninstall_means_the_portal_is_gone(installed):
    """After an uninstall the OAuth server refuses the refresh with invalid_client: the client says PortalGone."""
    st = installed
    creds = st.ctx.portals.load(st.member_id())
    st.ctx.bitrix(st.member_id()).call("event.unbind", {"event": "ONAPPUNINSTALL", "handler": st.app_url + "/events/app"})
    st.portal_http("POST", "/sandbox/uninstall", json={"client_id": APP_CLIENT_ID, "clean": False}).raise_for_status()
    with pytest.raises(PortalGone) as caught:
        request_refresh(st.ctx.http, st.ctx.bitrix_app, creds)
    assert caught.value.code == "invalid_client"
