"""The Bitrix24 REST client against the portal sandbox: expiry, pacing, batch, paging, rename."""
from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest
from sqlalchemy import select

from b24app.adapters.bitrix.client import BitrixClient, request_refresh
from b24app.adapters.bitrix.errors import (
    BitrixServerError,
    ExpiredToken,
    InvalidArgument,
    MethodNotFound,
    NotFound,
    QueryLimitExceeded,
)
from b24app.adapters.bitrix.pacing import LocalPacer
from b24app.storage.models import Portal


def portal_row(stack) -> Portal:
    with stack.ctx.db.session() as s:
        return s.scalar(select(Portal))


def refreshes(stack) -> list[dict]:
    return [t for t in stack.portal_state()["issued_tokens"] if t["kind"] == "refresh"]


def test_token_expiry_mid_run_refreshes_once_persists_and_retries(installed):
    member = installed.member_id()
    client = installed.ctx.bitrix(member)
    assert client.call("user.current")["ID"] == "1"
    before = portal_row(installed)
    issued_before = len(refreshes(installed))
    assert httpx.post(f"{installed.portal_url}/sandbox/expire-tokens", timeout=30).status_code == 200
    assert client.call("user.current")["ID"] == "1"   # refreshed inside the call
    after = portal_row(installed)
    assert after.token_generation == before.token_generation + 1
    assert after.refresh_token_enc != before.refresh_token_enc
    assert len(refreshes(installed)) == issued_before + 1
    # the persisted pair is the live one: a brand-new client (another process) uses it without refreshing
    fresh = installed.ctx.bitrix(member)
    assert fresh.call("user.current")["ID"] == "1"
    assert len(refreshes(installed)) == issued_before + 1


def test_concurrent_refresh_yields_one_new_pair(installed):
    member = installed.member_id()
    installed.ctx.bitrix(member).call("user.current")
    httpx.post(f"{installed.portal_url}/sandbox/expire-tokens", timeout=30)
    issued_before = len(refreshes(installed))
    errors: list[Exception] = []

    def call():
        try:
            installed.ctx.bitrix(member).call("user.current")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(refreshes(installed)) == issued_before + 1


def drained(stack):
    """Let the portal's bucket (filled by seeding, at most 50 deep) drain at the new 20 req/s."""
    import time
    time.sleep(50 / 20.0 + 0.1)


def test_paced_under_the_rate_limit_instead_of_failing(installed):
    httpx.post(f"{installed.sandbox_url}/sandbox/config", json={"rate": 20.0, "burst": 5}, timeout=30)
    drained(installed)  # seeding the portal used its bucket too
    member = installed.member_id()
    before = installed.portal_state()["rate_limited"]
    client = BitrixClient(member, installed.ctx.portals, installed.ctx.bitrix_app, installed.ctx.http,
                          LocalPacer(rate=20.0, burst=5))
    for _ in range(15):
        client.call("user.current")
    assert installed.portal_state()["rate_limited"] == before


class NoPacer:
    def acquire(self, key):
        return None


def test_without_pacing_the_limit_answers_503_and_the_client_backs_off(installed):
    httpx.post(f"{installed.sandbox_url}/sandbox/config", json={"rate": 20.0, "burst": 3}, timeout=30)
    drained(installed)
    sleeps: list[float] = []
    client = BitrixClient(installed.member_id(), installed.ctx.portals, installed.ctx.bitrix_app,
                          installed.ctx.http, NoPacer(), sleep=lambda s: (sleeps.append(s), __import__("time").sleep(s)))
    for _ in range(8):
        client.call("user.current")
    assert installed.portal_state()["rate_limited"] > 0
    assert sleeps, "the client waited before retrying"
    no_retry = BitrixClient(installed.member_id(), installed.ctx.portals, installed.ctx.bitrix_app,
                            installed.ctx.http, NoPacer(), sleep=lambda s: None, max_retries=0)
    with pytest.raises(QueryLimitExceeded):
        for _ in range(10):
            no_retry.call("user.current")


def test_batch_returns_typed_errors_per_command_and_chunks_by_50(installed):
    client = installed.ctx.bitrix(installed.member_id())
    cmds = {f"u{i}": ("user.current", {}) for i in range(120)}
    cmds["missing"] = ("crm.deal.get", {"id": 999999})
    cmds["nomethod"] = ("no.such.method", {})
    res = client.batch(cmds)
    assert len([k for k in res.results if k.startswith("u")]) == 120
    assert isinstance(res.errors["missing"], (NotFound, InvalidArgument))
    assert isinstance(res.errors["nomethod"], MethodNotFound)


def test_list_all_follows_next_through_pages(installed):
    for i in range(60):
        installed.rest("crm.deal.add", {"fields": {"TITLE": f"bulk {i}"}})
    client = installed.ctx.bitrix(installed.member_id())
    answered: list[str] = []
    client.on_call = lambda method, status: answered.append(method) if status == 200 else None
    deals = list(client.list_all("crm.deal.list", {"select": ["ID"]}))
    assert len(deals) == 60 + len(installed.deals)
    assert len({d["ID"] for d in deals}) == len(deals)
    assert answered == ["crm.deal.list", "crm.deal.list"]  # 64 deals = two pages of 50


def test_portal_rename_redirect_is_followed_with_the_body(installed):
    member = installed.member_id()
    r = httpx.post(f"{installed.portal_url}/sandbox/rename", json={"new_code": "renamed"}, timeout=30)
    assert r.status_code == 200, r.text
    client = installed.ctx.bitrix(member)
    deal = client.call("crm.deal.get", {"id": installed.deals[0]["deal_id"]})   # POST body must survive the 302
    assert deal["ID"] == str(installed.deals[0]["deal_id"])
    assert portal_row(installed).client_endpoint.endswith("/p/renamed/rest/")


def portal_faults(stack, kinds: dict | None, seed: int = 0) -> None:
    if kinds:
        r = httpx.post(f"{stack.sandbox_url}/sandbox/faults", json={"kinds": kinds, "seed": seed}, timeout=30)
        r.raise_for_status()
    else:
        httpx.delete(f"{stack.sandbox_url}/sandbox/faults", timeout=30).raise_for_status()


def unpaced_client(stack, **kw) -> BitrixClient:
    httpx.post(f"{stack.sandbox_url}/sandbox/config", json={"rate": 1000, "burst": 100000}, timeout=30)
    return BitrixClient(stack.member_id(), stack.ctx.portals, stack.ctx.bitrix_app, stack.ctx.http, NoPacer(),
                        sleep=lambda s: None, **kw)


def test_random_renames_every_write_lands_once_and_the_stored_portal_follows(installed):
    host = installed.sandbox_url.split("://", 1)[1]
    client = unpaced_client(installed)
    statuses: list[int] = []
    client.on_call = lambda method, status: statuses.append(status)
    before = installed.portal_state()
    generation = portal_row(installed).token_generation
    portal_faults(installed, {"rename": 0.3}, seed=5)
    ids = []
    for i in range(24):
        if i == 12:  # mid-run the tokens expire: refreshed at the central OAuth server, wherever the portal is
            assert installed.portal_http("POST", "/sandbox/expire-tokens").json()["expired"] >= 1
        item = client.call("crm.item.add", {"entityTypeId": 31, "fields": {"title": f"rename-run {i}",
                                                                           "opportunity": "5"}})["item"]
        ids.append(int(item["id"]))
    deal_id = installed.deals[0]["deal_id"]
    res = client.batch({f"c{i}": ("crm.timeline.comment.add", {"fields": {
        "ENTITY_ID": deal_id, "ENTITY_TYPE": "deal", "COMMENT": f"rename-run comment {i}"}}) for i in range(5)})
    portal_faults(installed, None)
    assert res.errors == {} and len(res.results) == 5

    renames = httpx.get(f"{installed.sandbox_url}/sandbox/state", timeout=30).json()["faults_fired"]["rename"]
    final = f"demo-r{renames}"
    assert renames >= 3, "seed 5 at 0.3 renames the portal several times"
    assert statuses.count(302) == renames  # every 302 was a fresh rename: never a stale address twice
    state = installed.portal_state()  # the helper follows the portal from its old code
    assert installed.portal_code == final and state["code"] == final and state["faults"] == {"rename": renames}
    assert state["client_endpoint"] == f"{installed.sandbox_url}/p/{final}/rest/"
    assert state["domain"] == f"{host}/p/{final}"
    row = portal_row(installed)
    assert (row.client_endpoint, row.domain) == (state["client_endpoint"], state["domain"])
    assert row.token_generation == generation + 1  # the mid-run refresh happened, once
    # every write exactly once
    assert len(set(ids)) == 24 and state["counts"]["invoices"] == before["counts"]["invoices"] + 24
    listed = installed.rest("crm.item.list", {"entityTypeId": 31, "select": ["id", "title"]})["result"]["items"]
    titles = Counter(i["title"] for i in listed)
    assert all(titles[f"rename-run {i}"] == 1 for i in range(24)), titles
    comments = [c["COMMENT"] for c in state["timeline_comments"] if c["COMMENT"].startswith("rename-run")]
    assert sorted(comments) == sorted(f"rename-run comment {i}" for i in range(5))
    # events reached the app from every address the portal had, one per created item, all accepted
    adds = [d for d in state["event_deliveries"] if d["event"] == "ONCRMDYNAMICITEMADD"
            and int(d["payload"]["data"]["FIELDS"]["ID"]) in ids]
    assert sorted(int(d["payload"]["data"]["FIELDS"]["ID"]) for d in adds) == sorted(ids)
    assert {d["status"] for d in adds} == {200}
    domains = {d["payload"]["auth"]["domain"] for d in adds}
    assert len(domains) >= 2 and f"{host}/p/{final}" in domains
    # with the faults off the next call goes straight to the new address, and its event carries it
    statuses.clear()
    last = int(client.call("crm.item.add", {"entityTypeId": 31, "fields": {"title": "after"}})["item"]["id"])
    assert statuses == [200]
    delivery = [d for d in installed.portal_state()["event_deliveries"]
                if d["event"] == "ONCRMDYNAMICITEMADD" and d["payload"]["data"]["FIELDS"]["ID"] == str(last)][0]
    assert delivery["payload"]["auth"]["domain"] == f"{host}/p/{final}"
    assert delivery["payload"]["auth"]["client_endpoint"] == row.client_endpoint


def test_a_portal_renamed_on_every_request_fails_the_call_but_the_store_keeps_up(installed):
    client = unpaced_client(installed, max_retries=1)
    invoices = installed.portal_state()["counts"]["invoices"]
    portal_faults(installed, {"rename": 1.0})
    with pytest.raises(BitrixServerError) as failed:
        client.call("crm.item.add", {"entityTypeId": 31, "fields": {"title": "never"}})
    portal_faults(installed, None)
    assert failed.value.code == "too_many_redirects"
    state = installed.portal_state()
    # 1 request + 3 free hops, then one retry (max_retries=1) that still went to the newest address
    assert state["faults"] == {"rename": 5} and state["code"] == "demo-r5"
    assert state["counts"]["invoices"] == invoices  # none of them ran
    assert portal_row(installed).client_endpoint == state["client_endpoint"]
    statuses: list[int] = []
    client.on_call = lambda method, status: statuses.append(status)
    assert client.call("user.current")["ID"] == "1" and statuses == [200]


def test_a_token_refresh_after_a_rename_stores_the_new_endpoint_and_domain(installed):
    member = installed.member_id()
    stale = installed.ctx.portals.load(member)
    assert installed.portal_http("POST", "/sandbox/rename", json={"new_code": "moved-on"}).status_code == 200
    fresh = installed.ctx.portals.refresh(
        member, stale, lambda creds: request_refresh(installed.ctx.http, installed.ctx.bitrix_app, creds))
    state = installed.portal_state()  # follows the 302 from "demo"
    row = portal_row(installed)
    assert installed.portal_code == "moved-on"
    assert fresh.client_endpoint == row.client_endpoint == state["client_endpoint"]
    assert row.client_endpoint.endswith("/p/moved-on/rest/")
    assert row.domain == state["domain"] and row.domain.endswith("/p/moved-on")


def test_expired_token_error_is_typed_when_refresh_is_impossible(installed):
    from b24app.adapters.bitrix.client import PortalCredentials

    class DeadStore:
        def load(self, member_id):
            creds = installed.ctx.portals.load(member_id)
            return PortalCredentials(creds.member_id, creds.client_endpoint, creds.server_endpoint,
                                     "not-a-token", creds.refresh_token, creds.generation)

        def refresh(self, member_id, stale, grant):
            raise ExpiredToken("expired_token", "no refresh here")

        def moved(self, *a):
            pass

    client = BitrixClient(installed.member_id(), DeadStore(), installed.ctx.bitrix_app, installed.ctx.http,
                          NoPacer())
    from b24app.adapters.bitrix.errors import InvalidToken
    with pytest.raises(InvalidToken):
        client.call("user.current")
