"""The Bitrix24 REST client against the portal sandbox: expiry, pacing, batch, paging, rename."""
from __future__ import annotations

import threading

import httpx
import pytest
from sqlalchemy import select

from b24app.bitrix.client import BitrixClient
from b24app.bitrix.errors import ExpiredToken, InvalidArgument, MethodNotFound, NotFound, QueryLimitExceeded
from b24app.bitrix.pacing import LocalPacer
from b24app.models import Portal


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


def test_expired_token_error_is_typed_when_refresh_is_impossible(installed):
    from b24app.bitrix.client import PortalCredentials

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
    from b24app.bitrix.errors import InvalidToken
    with pytest.raises(InvalidToken):
        client.call("user.current")
