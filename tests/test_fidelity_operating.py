"""Bitrix24's per-method operating-time limit (limits.md): a blocked method waits for its bucket to reset,
in the outbox, without holding a worker thread and without losing or repeating an effect."""
from __future__ import annotations

import time

import httpx
from sqlalchemy import select

from b24app.pipeline import sync
from b24app.storage.models import OutboxItem, Portal
from b24app.sandbox.stack import APP_CLIENT_ID
from b24app.pipeline.worker import Worker

WINDOW = 6.0  # the sandbox's 10-minute window, shortened for the test (buckets stay a tenth of it)


def stage(st, invoice_id) -> str:
    return st.rest("crm.item.get", {"entityTypeId": 31, "id": invoice_id})["result"]["item"]["stageId"]


def notes_for(st, user_id) -> list[str]:
    return [n["message"] for n in st.portal_state()["notifications"]
            if n["user_id"] == user_id and not n.get("replaced_by")]


def rounds(st, n: int = 20) -> float:
    """Worker rounds until idle; returns how long they took."""
    started = time.monotonic()
    w = Worker(st.ctx, concurrency=1)
    for _ in range(n):
        if not w.run_once():
            break
    return time.monotonic() - started


def sync_now(st) -> float:
    with st.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    sync.request_sync(st.ctx, portal.id)
    return rounds(st)


def test_sandbox_counts_operating_time_per_method_and_blocks_until_the_bucket_resets(installed):
    st = installed
    httpx.post(f"{st.sandbox_url}/sandbox/config", json={"operating_window": WINDOW}).raise_for_status()
    answer = st.portal_http("POST", "/rest/1/sandboxhook/crm.deal.list.json", json={}).json()
    assert answer["time"]["operating"] >= 0 and answer["time"]["operating_reset_at"] <= time.time() + WINDOW + 1
    blocked = st.portal_http("POST", "/sandbox/operating",
                             json={"method": "crm.deal.list", "seconds": 500}).json()
    assert blocked["blocked"] and blocked["operating"] >= 500
    r = st.portal_http("POST", "/rest/1/sandboxhook/crm.deal.list.json", json={})
    assert r.status_code == 429 and r.json()["error"] == "OPERATION_TIME_LIMIT"
    assert st.portal_http("POST", "/rest/1/sandboxhook/crm.deal.get.json", json={"id": 1}).status_code == 200
    batch = st.rest("batch", {"cmd": {"a": "crm.deal.list", "b": "user.current"}})["result"]
    assert batch["result_error"]["a"]["error"] == "OPERATION_TIME_LIMIT" and batch["result"]["b"]["ID"] == "1"
    assert batch["result_time"]["b"]["operating_reset_at"] > 0
    time.sleep(max(0.0, blocked["operating_reset_at"] - time.time()) + 0.3)
    assert st.portal_http("POST", "/rest/1/sandboxhook/crm.deal.list.json", json={}).status_code == 200


def test_a_blocked_crm_item_update_delays_the_invoice_without_holding_a_thread_or_losing_it(linked):
    st = linked
    httpx.post(f"{st.sandbox_url}/sandbox/config", json={"operating_window": WINDOW}).raise_for_status()
    first, second = st.deals[0], st.deals[3]  # 1207 (12 000) and 1208 (3 000)
    st.pay(first["amount"], f"Оплата по счету № {first['number']}", payerInn=first["inn"])
    sync_now(st)
    assert stage(st, first["invoice_id"]) == "DT31_2:P"

    # crm.item.update has spent its budget for this app: blocked until its oldest bucket leaves the window
    blocked = st.portal_http("POST", "/sandbox/operating", json={"client_id": APP_CLIENT_ID,
                                                                 "method": "crm.item.update", "seconds": 500}).json()
    assert blocked["blocked"]
    reset_at = blocked["operating_reset_at"]
    st.pay(second["amount"], f"Оплата по счету № {second['number']}", payerInn=second["inn"])
    took = sync_now(st)
    assert took < 10  # the client did not sit out the block (it used to retry for up to 45 s)
    assert stage(st, second["invoice_id"]) != "DT31_2:P"
    assert len(notes_for(st, second["user"])) == 1  # the chat notice went out all the same
    portal_state = st.portal_state()
    assert portal_state["method_blocked"] == {"crm.item.update": 1}
    with st.ctx.db.session() as s:
        waiting = s.scalar(select(OutboxItem).where(OutboxItem.kind == "invoice_paid", OutboxItem.status == "pending"))
        assert waiting is not None and "OPERATION_TIME_LIMIT" in (waiting.last_error or "")
        assert waiting.attempts == 0  # a block spends no attempt
        assert abs(waiting.next_attempt_at.timestamp() - reset_at) <= 1.0  # the reset Bitrix24 told us
        others = {i.kind: i.status for i in s.scalars(select(OutboxItem).where(OutboxItem.kind != "invoice_paid"))}
    assert others and set(others.values()) <= {"done", "skipped"}

    # until the reset: no tight loop — not one more crm.item.update
    while time.time() < reset_at - 1.0:
        rounds(st)
        time.sleep(0.2)
    assert st.portal_state()["method_calls"]["crm.item.update"] == 2  # A's update and the one blocked try

    time.sleep(max(0.0, reset_at - time.time()) + 0.5)
    rounds(st)
    assert stage(st, second["invoice_id"]) == "DT31_2:P"
    rounds(st)
    final = st.portal_state()
    assert final["method_calls"]["crm.item.update"] == 3 and final["method_blocked"] == {"crm.item.update": 1}
    assert len(notes_for(st, second["user"])) == 1
    with st.ctx.db.session() as s:
        assert {i.status for i in s.scalars(select(OutboxItem))} <= {"done", "skipped"}


def test_the_client_raises_a_blocked_method_at_once_with_the_reset_it_was_told(installed):
    """A direct call: no 45-second retry loop; reset_at is operating_reset_at of the last successful answer."""
    import pytest

    from b24app.adapters.bitrix.errors import OperationTimeLimit

    st = installed
    httpx.post(f"{st.sandbox_url}/sandbox/config", json={"operating_window": WINDOW}).raise_for_status()
    client = st.ctx.bitrix(st.member_id())
    told = client.call_raw("crm.deal.list", {"select": ["ID"]})["time"]["operating_reset_at"]
    st.portal_http("POST", "/sandbox/operating", json={"client_id": APP_CLIENT_ID, "method": "crm.deal.list",
                                                       "seconds": 500})
    started = time.monotonic()
    with pytest.raises(OperationTimeLimit) as caught:
        client.call("crm.deal.list", {"select": ["ID"]})
    assert time.monotonic() - started < 2 and caught.value.reset_at == told
    assert st.ctx.operating_limits.blocked_until(st.member_id(), "crm.deal.list") == told
    assert client.call("user.current")["ID"] == "1"  # other methods are not blocked


def test_without_a_usable_reset_time_the_wait_doubles_and_an_answer_ends_the_block():
    from b24app.adapters.bitrix.operating import FALLBACK_WAIT, MAX_WAIT, OperatingLimits

    now = [1_000.0]
    limits = OperatingLimits(clock=lambda: now[0])
    limits.seen("m", "crm.item.update", {"operating": 1.5, "operating_reset_at": 900})  # already past
    assert limits.block("m", "crm.item.update") == 1_000.0 + FALLBACK_WAIT
    assert limits.block("m", "crm.item.update") == 1_000.0 + 2 * FALLBACK_WAIT
    for _ in range(10):
        until = limits.block("m", "crm.item.update")
    assert until == 1_000.0 + MAX_WAIT
    assert limits.blocked_until("m", "CRM.ITEM.UPDATE") == until and limits.blocked_until("m", "crm.deal.update") is None
    limits.seen("m", "crm.item.update", {"operating": 0.1, "operating_reset_at": 1_500})
    assert limits.blocked_until("m", "crm.item.update") is None
    assert limits.block("m", "crm.item.update") == 1_500  # the reset the last answer gave, for the first retry
