"""Eight OS processes refresh the same portal's Bitrix24 token and the same bank link's token at the same moment:
exactly one refresh happens on each side, everyone ends with the same valid pair, nobody sees invalid_grant.
Runs on SQLite here and on PostgreSQL when B24APP_TEST_DATABASE_URL is set (the `database_url` fixture)."""
from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod

import httpx
import pytest
from sqlalchemy import select

from b24app.storage.models import BankLink

PROCESSES = 8


def _refresh_in_a_process(settings, member_id: str, link_id: int, barrier, results) -> None:
    """Child process: its own AppContext (engine, HTTP client), then both refreshes at the barrier."""
    from b24app.banklinks.tbank import LinkTokens
    from b24app.context import AppContext

    out: dict = {"pid": os.getpid()}
    ctx = AppContext(settings)
    try:
        ctx.portals.find(member_id)  # connect before the race starts
        barrier.wait(120)
        try:
            out["user"] = ctx.bitrix(member_id).call("user.current")["ID"]
            out["portal_access"] = ctx.portals.load(member_id).access_token
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            out["portal_error"] = repr(exc)
        barrier.wait(120)
        try:
            out["bank_access"] = LinkTokens(ctx, link_id)()
        except Exception as exc:  # noqa: BLE001
            out["bank_error"] = repr(exc)
    except Exception as exc:  # noqa: BLE001
        out["error"] = repr(exc)
    finally:
        ctx.close()
        results.put(out)


def _portal_refresh_tokens(stack) -> list[dict]:
    return [t for t in stack.portal_state()["issued_tokens"] if t["kind"] == "refresh"]


def _bank_refresh_tokens(stack) -> list[dict]:
    return [t for t in stack.bank_state()["issued_tokens"] if t["kind"] == "refresh"]


def test_eight_processes_refreshing_at_once_end_with_one_valid_pair(linked):
    member_id = linked.member_id()
    with linked.ctx.db.session() as s:
        link = s.scalar(select(BankLink))
        link.access_expires_at = linked.ctx.clock.now()  # our copy knows it is due
    portal_before = linked.ctx.portals.find(member_id)
    portal_refresh_before = _portal_refresh_tokens(linked)
    bank_refresh_before = _bank_refresh_tokens(linked)
    stored_refresh = linked.ctx.portals.load(member_id).refresh_token
    assert [t["used"] for t in portal_refresh_before if t["token"] == stored_refresh] == [False]
    # Both sides now refuse the current access tokens.
    assert httpx.post(f"{linked.portal_url}/sandbox/expire-tokens", timeout=30).json()["expired"] >= 1
    assert httpx.post(f"{linked.bank_url}/sandbox/expire-tokens", timeout=30).json()["expired"] >= 1

    spawn = mp.get_context("spawn")
    barrier, results = spawn.Barrier(PROCESSES), spawn.Queue()
    procs = [spawn.Process(target=_refresh_in_a_process, args=(linked.settings, member_id, link.id, barrier, results),
                           daemon=True) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    outs = []
    try:
        for _ in procs:
            outs.append(results.get(timeout=180))
    except queue_mod.Empty:
        pytest.fail(f"only {len(outs)} of {PROCESSES} processes reported: {outs}")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    assert len({o["pid"] for o in outs}) == PROCESSES
    errors = [o for o in outs if {"error", "portal_error", "bank_error"} & o.keys()]
    assert errors == [], errors

    # Bitrix24: one refresh, one live pair, and it is the one stored
    portal_after = linked.ctx.portals.find(member_id)
    assert portal_after.token_generation == portal_before.token_generation + 1
    creds = linked.ctx.portals.load(member_id)
    assert {o["portal_access"] for o in outs} == {creds.access_token}
    refresh_after = _portal_refresh_tokens(linked)
    assert len(refresh_after) == len(portal_refresh_before) + 1  # exactly one refresh grant
    by_value = {t["token"]: t for t in refresh_after}
    assert by_value[stored_refresh]["used"] is True
    assert creds.refresh_token not in {t["token"] for t in portal_refresh_before}
    assert by_value[creds.refresh_token]["used"] is False and by_value[creds.refresh_token]["revoked"] is False
    assert {str(o["user"]) for o in outs} == {"1"}

    # T-Bank: one refresh, one live refresh token, everyone holds the same access token
    with linked.ctx.db.session() as s:
        after = s.get(BankLink, link.id)
    owner = f"bank:{after.portal_id}:{after.inn}:{after.kpp}"
    assert after.status == "active" and after.token_generation == link.token_generation + 1
    access = linked.ctx.cipher.decrypt(owner, after.access_token_enc)
    assert {o["bank_access"] for o in outs} == {access}
    bank_after = _bank_refresh_tokens(linked)
    assert len(bank_after) == len(bank_refresh_before) + 1
    assert [t["token"] for t in bank_after if t["status"] == "active"] == [
        linked.ctx.cipher.decrypt(owner, after.refresh_token_enc)]
    # and the pair works
    assert str(linked.ctx.bitrix(member_id).call("user.current")["ID"]) == "1"
    from b24app.banklinks.tbank import bank_api
    assert len(bank_api(linked.ctx, link.id).accounts()) == 3
