"""Install, rebind, forged requests, uninstall: the app against the portal sandbox over real HTTP."""
from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from b24app.manifest import Manifest
from b24app.storage.models import Invoice, Portal
from b24app.sandbox.stack import APP_CLIENT_ID

MANIFEST = Manifest.load()


def ours(stack, rows, key):
    return sorted((r[key], r["handler"]) for r in rows if r["client_id"] == APP_CLIENT_ID)


def expected_placements(stack):
    return sorted((p.placement, stack.app_url + p.path) for p in MANIFEST.placements)


def expected_events(stack):
    return sorted((e.event, stack.app_url + e.path) for e in MANIFEST.events)


def portal_row(stack) -> Portal:
    with stack.ctx.db.session() as s:
        return s.scalar(select(Portal))


def test_install_binds_exactly_the_manifest(installed):
    state = installed.portal_state()
    assert ours(installed, state["placements"], "placement") == expected_placements(installed)
    assert ours(installed, state["events"], "event") == expected_events(installed)
    codes = [t["CODE"] for t in state["automation_triggers"]]
    assert codes == [t["code"] for t in MANIFEST.automation_triggers]
    portal = portal_row(installed)
    assert portal.member_id == state["member_id"] and portal.status == "installed"
    assert portal.client_endpoint == state["client_endpoint"]
    assert portal.installed_by == 1


def test_reinstall_and_update_rebind_without_duplicates(installed):
    installed.install()
    r = httpx.post(f"{installed.portal_url}/sandbox/update", json={"client_id": APP_CLIENT_ID, "version": 2},
                   timeout=30)
    assert r.status_code == 200, r.text
    state = installed.portal_state()
    assert ours(installed, state["placements"], "placement") == expected_placements(installed)
    assert ours(installed, state["events"], "event") == expected_events(installed)
    assert len(state["automation_triggers"]) == 1
    deliveries = [d for d in state["event_deliveries"] if d["event"] == "ONAPPUPDATE"]
    assert deliveries and all(d["status"] == 200 for d in deliveries), deliveries


def test_rebind_removes_a_handler_the_manifest_no_longer_lists(installed):
    from b24app.portals.install import bind

    client = installed.ctx.bitrix(installed.member_id())
    stale = installed.app_url + "/placement/old-tab"
    client.call("placement.bind", {"PLACEMENT": "CRM_DEAL_DETAIL_TAB", "HANDLER": stale, "TITLE": "old"})
    assert stale in [p["handler"] for p in installed.portal_state()["placements"]]
    bind(installed.ctx, installed.member_id())
    assert ours(installed, installed.portal_state()["placements"], "placement") == expected_placements(installed)


def install_post(stack, **override):
    state = stack.portal_state()
    form = {"AUTH_ID": "forged-token", "AUTH_EXPIRES": "3600", "REFRESH_ID": "forged-refresh",
            "SERVER_ENDPOINT": f"{stack.sandbox_url}/rest/", "member_id": state["member_id"], "status": "L",
            "PLACEMENT": "DEFAULT", "PLACEMENT_OPTIONS": "{}", "APPLICATION_TOKEN": "forged-app-token"}
    form.update(override)
    return httpx.post(f"{stack.app_url}/install", params={"DOMAIN": state["domain"], "PROTOCOL": "0", "LANG": "ru"},
                      data=form, timeout=30)


@pytest.mark.parametrize("override, reason", [
    ({}, "invalid_token"),
    ({"SERVER_ENDPOINT": "http://127.0.0.1:9/rest/"}, "untrusted_server"),
    ({"AUTH_ID": ""}, "missing_fields"),
])
def test_forged_install_changes_nothing(installed, override, reason):
    before = portal_row(installed)
    r = install_post(installed, **override)
    assert r.status_code in (400, 403)
    assert f'data-reason="{reason}"' in r.text
    after = portal_row(installed)
    for col in ("access_token_enc", "refresh_token_enc", "application_token_hash", "client_endpoint",
                "token_generation"):
        assert getattr(after, col) == getattr(before, col), col


def test_install_with_a_real_token_of_another_portal_is_refused(installed):
    """A valid token proves nothing about a different member_id."""
    r = httpx.post(f"{installed.sandbox_url}/sandbox/portals", json={"code": "other"}, timeout=30)
    other = r.json()
    res = httpx.post(f"{installed.sandbox_url}/p/other/sandbox/install", json={"client_id": APP_CLIENT_ID},
                     timeout=30).json()
    state = installed.portal_state()
    before = portal_row(installed)
    forged = install_post(installed, AUTH_ID=res["access_token"], REFRESH_ID=res["refresh_token"])
    assert forged.status_code == 403 and 'data-reason="member_mismatch"' in forged.text
    assert portal_row(installed).access_token_enc == before.access_token_enc
    assert other["member_id"] != state["member_id"]


def app_event(stack, event, application_token, **data):
    state = stack.portal_state()
    body = {"event": event, "ts": "1700000000", "auth[member_id]": state["member_id"],
            "auth[domain]": state["domain"], "auth[client_endpoint]": state["client_endpoint"],
            "auth[server_endpoint]": f"{stack.sandbox_url}/rest/", "auth[application_token]": application_token}
    body.update({f"data[{k}]": v for k, v in data.items()})
    return body


@pytest.mark.parametrize("path, event, data", [
    ("/events/app", "ONAPPUNINSTALL", {"CLEAN": "1"}),
    ("/events/app", "ONAPPUPDATE", {"VERSION": "2"}),
    ("/events/crm", "ONCRMDYNAMICITEMUPDATE", {"FIELDS][ID": "1", "FIELDS][ENTITY_TYPE_ID": "31"}),
    ("/events/crm", "ONCRMDEALUPDATE", {"FIELDS][ID": "1"}),
])
@pytest.mark.parametrize("token", ["forged-0123456789abcdef", ""])
def test_event_with_forged_or_missing_application_token_is_refused(installed, path, event, data, token):
    from b24app.storage.models import InvoiceRefresh
    with installed.ctx.db.session() as s:
        s.query(InvoiceRefresh).delete()
    before = portal_row(installed)
    body = app_event(installed, event, token, **data)
    if not token:
        body.pop("auth[application_token]")
    r = httpx.post(installed.app_url + path, data=body, timeout=30)
    assert r.status_code == 401
    after = portal_row(installed)
    assert after.status == "installed" and after.refresh_token_enc == before.refresh_token_enc
    with installed.ctx.db.session() as s:
        assert s.scalar(select(InvoiceRefresh)) is None, "a refused event must not queue anything"


def test_crm_event_with_the_right_token_queues_a_refresh(installed):
    from b24app.storage.models import InvoiceRefresh
    token = installed.portal_state()["installed_apps"][0]["application_token"]
    with installed.ctx.db.session() as s:
        s.query(InvoiceRefresh).delete()
    body = app_event(installed, "ONCRMDYNAMICITEMUPDATE", token, **{"FIELDS][ID": "7", "FIELDS][ENTITY_TYPE_ID": "31"})
    r = httpx.post(installed.app_url + "/events/crm", data=body, timeout=30)
    assert r.status_code == 200
    with installed.ctx.db.session() as s:
        assert [(x.entity, x.entity_id) for x in s.scalars(select(InvoiceRefresh))] == [("invoice", 7)]


def test_uninstall_twice_is_idempotent_and_forgets_tokens(installed):
    token = installed.portal_state()["installed_apps"][0]["application_token"]
    r = httpx.post(f"{installed.portal_url}/sandbox/uninstall", json={"client_id": APP_CLIENT_ID, "clean": False},
                   timeout=30)
    assert r.status_code == 200, r.text
    delivered = [d for d in installed.portal_state()["event_deliveries"] if d["event"] == "ONAPPUNINSTALL"]
    assert [d["status"] for d in delivered] == [200]
    portal = portal_row(installed)
    assert portal.status == "uninstalled"
    assert portal.access_token_enc is None and portal.refresh_token_enc is None
    # Bitrix24 delivers the same event again: recognised, nothing changes.
    again = httpx.post(installed.app_url + "/events/app", data=app_event(installed, "ONAPPUNINSTALL", token, CLEAN="0"),
                       timeout=30)
    assert again.status_code == 200
    assert portal_row(installed).uninstalled_at == portal.uninstalled_at
    # but a forged one is still refused
    forged = httpx.post(installed.app_url + "/events/app",
                        data=app_event(installed, "ONAPPUNINSTALL", "f" * 32, CLEAN="1"), timeout=30)
    assert forged.status_code == 401 and portal_row(installed) is not None


def test_uninstall_with_clean_deletes_all_portal_data(linked):
    from b24app.pipeline import invoices
    invoices.refresh_all(linked.ctx, portal_row(linked))
    with linked.ctx.db.session() as s:
        assert s.scalar(select(Invoice)) is not None
    token = linked.portal_state()["installed_apps"][0]["application_token"]
    r = httpx.post(f"{linked.portal_url}/sandbox/uninstall", json={"client_id": APP_CLIENT_ID, "clean": True},
                   timeout=30)
    assert [d["status"] for d in r.json()["onappuninstall"]] == [200]
    from b24app.storage.db import Base
    with linked.ctx.db.session() as s:
        for table in Base.metadata.sorted_tables:
            assert s.execute(select(table)).first() is None, table.name
    # a second uninstall (Bitrix24 may repeat events) is harmless
    body = app_event(linked, "ONAPPUNINSTALL", token, CLEAN="1")
    assert httpx.post(linked.app_url + "/events/app", data=body, timeout=30).status_code == 401


def test_reinstall_after_uninstall_is_a_fresh_install(installed):
    httpx.post(f"{installed.portal_url}/sandbox/uninstall", json={"client_id": APP_CLIENT_ID, "clean": False}, timeout=30)
    result = installed.install()
    assert result["install_status"] == 200
    assert portal_row(installed).status == "installed"
    assert ours(installed, installed.portal_state()["placements"], "placement") == expected_placements(installed)


def test_install_page_get_explains_itself(stack):
    r = httpx.get(stack.app_url + "/install", timeout=30)
    assert r.status_code == 400 and "Битрикс24" in r.text
    assert r.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


def test_worker_rebinds_a_portal_whose_bindings_are_stale(installed):
    """A lost ONAPPUPDATE, or a new public URL, is repaired by the worker without a reinstall."""
    from b24app.pipeline.worker import Worker
    client = installed.ctx.bitrix(installed.member_id())
    for p in MANIFEST.placements:
        client.call("placement.unbind", {"PLACEMENT": p.placement, "HANDLER": installed.app_url + p.path})
    with installed.ctx.db.session() as s:
        s.scalar(select(Portal)).bindings_version = "0.0.0@old"
    Worker(installed.ctx, concurrency=1).run_once()
    assert ours(installed, installed.portal_state()["placements"], "placement") == expected_placements(installed)
    assert portal_row(installed).bindings_version == installed.ctx.bindings_signature
