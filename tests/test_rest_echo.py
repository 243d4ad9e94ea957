"""Issue 17: a lone payment costs two Bitrix24 requests, the echo of our own crm.item.update costs none, and
an event of anybody else's change is still read."""
from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from b24app.pipeline import invoices, outbox, reconcile, sync
from b24app.storage.models import BankAccount, Invoice, InvoiceRefresh, OutboxItem, Portal
from b24app.sandbox.stack import APP_CLIENT_ID, APP_CLIENT_SECRET
from b24app.pipeline.worker import Worker

from test_reconcile_e2e import deliver_and_die

PAID = "DT31_2:P"


def requests_at_portal(stack) -> int:
    return stack.portal_state()["requests"]


def idle(stack, rounds=20) -> None:
    w = Worker(stack.ctx, concurrency=1)
    for _ in range(rounds):
        if not w.run_once():
            break


def portal_row(stack) -> Portal:
    with stack.ctx.db.session() as s:
        return s.scalar(select(Portal))


def cached(stack, invoice_id) -> Invoice:
    with stack.ctx.db.session() as s:
        return s.scalar(select(Invoice).where(Invoice.b24_id == invoice_id))


def pay_and_decide(stack, d) -> Portal:
    """The payment is read from the bank and decided; its effects wait in the outbox."""
    invoices.refresh_requested(stack.ctx, portal_row(stack))   # the seeded invoices' own events
    stack.pay(d["amount"], f"Оплата по счету № {d['number']} от 14.01.2026", payerInn=d["inn"], payerName=d["company"])
    portal = portal_row(stack)
    with stack.ctx.db.session() as s:
        accounts = list(s.scalars(select(BankAccount.id).where(BankAccount.watched.is_(True))))
    for account_id in accounts:
        sync.sync_account(stack.ctx, account_id)
    assert reconcile.reconcile_portal(stack.ctx, portal)
    return portal


def token_of(stack, user_id: int) -> str:
    """An access token of another user of the portal for our app (the OAuth code flow, as that user)."""
    r = httpx.get(f"{stack.portal_url}/oauth/authorize/", params={"client_id": APP_CLIENT_ID, "user": user_id},
                  timeout=30)
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    t = httpx.post(f"{stack.sandbox_url}/oauth/token/", data={
        "grant_type": "authorization_code", "client_id": APP_CLIENT_ID, "client_secret": APP_CLIENT_SECRET,
        "code": code}, timeout=30)
    t.raise_for_status()
    return t.json()["access_token"]


def as_user(stack, token: str, method: str, params: dict) -> dict:
    r = httpx.post(f"{stack.portal_url}/rest/{method}.json", json={**params, "auth": token}, timeout=30)
    r.raise_for_status()
    return r.json()


def test_a_lone_payment_costs_one_read_and_one_write_batch(linked):
    """The deal moves to its pipeline's success stage (the default) too. Before issue 17: 5 requests (read,
    write, then list + stages + requisites because our own crm.item.update came back as
    ONCRMDYNAMICITEMUPDATE); once deals moved by default: 6 (a second read for the pipeline's stage list, and
    the ONCRMDEALUPDATE echo of our own crm.deal.update re-read the deal's invoices: list + two batches)."""
    d = linked.deals[0]
    idle(linked)  # the first invoice read, not part of the payment
    before = requests_at_portal(linked)
    linked.pay(d["amount"], f"Оплата по счету № {d['number']} от 14.01.2026", payerInn=d["inn"], payerName=d["company"])
    sync.request_sync(linked.ctx, portal_row(linked).id)
    idle(linked)
    assert linked.rest("crm.item.get", {"entityTypeId": 31, "id": d["invoice_id"]})["result"]["item"]["stageId"] == PAID
    assert requests_at_portal(linked) - before == 2 + 1   # + the test's own check just above
    assert linked.rest("crm.deal.get", {"id": d["deal_id"]})["result"]["STAGE_ID"] == "WON"   # moved by default
    inv = cached(linked, d["invoice_id"])
    assert inv.stage_id == PAID and inv.stage_semantics == "S"   # the cache follows our update's answer
    with linked.ctx.db.session() as s:
        assert s.scalar(select(InvoiceRefresh)) is None           # the echo was recognised and dropped
        assert {i.status for i in s.scalars(select(OutboxItem))} == {"done"}


def test_another_users_change_after_ours_is_read_even_if_our_echo_was_lost(linked):
    """Bitrix24 loses our echo; a manager (user 2) changes the amount in the same second: never taken for ours."""
    d = linked.deals[1]
    portal = pay_and_decide(linked, d)
    outbox.deliver(linked.ctx, portal)
    with linked.ctx.db.session() as s:   # the echo never arrives
        s.query(InvoiceRefresh).delete()
    manager = token_of(linked, 2)
    as_user(linked, manager, "crm.item.update", {"entityTypeId": 31, "id": d["invoice_id"],
                                                   "fields": {"opportunity": 50000, "accountNumber": "СЧ-00999"}})
    with linked.ctx.db.session() as s:
        [row] = s.scalars(select(InvoiceRefresh))
        assert row.event_user == 2 and row.event_ts is not None
    invoices.refresh_requested(linked.ctx, portal)
    inv = cached(linked, d["invoice_id"])
    assert inv.amount == Decimal("50000.00") and inv.number == "СЧ-00999"


def test_a_second_event_after_our_echo_is_read(linked):
    """The portal's admin (the very user our app acts as) changes the invoice right after our update, before the
    worker looked at the echo: two events for one invoice are never one echo."""
    d = linked.deals[0]
    portal = pay_and_decide(linked, d)
    outbox.deliver(linked.ctx, portal)
    linked.rest("crm.item.update", {"entityTypeId": 31, "id": d["invoice_id"], "fields": {"stageId": "DT31_2:D"}})
    before = requests_at_portal(linked)
    invoices.refresh_requested(linked.ctx, portal)
    assert requests_at_portal(linked) > before
    inv = cached(linked, d["invoice_id"])
    assert inv.stage_id == "DT31_2:D" and inv.stage_semantics == "F"


def test_a_change_after_our_echo_was_recognised_is_read(linked):
    """Our echo is recognised (no request); the admin's change in the same second afterwards is read."""
    d = linked.deals[0]
    portal = pay_and_decide(linked, d)
    outbox.deliver(linked.ctx, portal)
    before = requests_at_portal(linked)
    invoices.refresh_requested(linked.ctx, portal)
    assert requests_at_portal(linked) == before   # the echo: nothing read
    linked.rest("crm.item.update", {"entityTypeId": 31, "id": d["invoice_id"], "fields": {"opportunity": 13000}})
    invoices.refresh_requested(linked.ctx, portal)
    assert cached(linked, d["invoice_id"]).amount == Decimal("13000.00")


@pytest.mark.parametrize("stamp", [{"ts": None}, {"auth[user_id]": None}, {"auth[user_id]": "2"},
                                   {"ts": "+1700000000"}, {"auth[user_id]": "0"}])
def test_an_event_without_our_stamp_is_read(linked, stamp):
    """Our echo was lost; an event in the same second without auth[user_id] (a robot or workflow changed the
    invoice), with another user, or with a malformed stamp is read, never taken for our echo."""
    d = linked.deals[0]
    portal = pay_and_decide(linked, d)
    outbox.deliver(linked.ctx, portal)
    with linked.ctx.db.session() as s:   # the echo never arrives
        s.query(InvoiceRefresh).delete()
    own = cached(linked, d["invoice_id"])
    [app] = [a for a in linked.portal_state()["installed_apps"] if a["client_id"] == APP_CLIENT_ID]
    form = {"event": "ONCRMDYNAMICITEMUPDATE", "data[FIELDS][ID]": str(d["invoice_id"]),
            "data[FIELDS][ENTITY_TYPE_ID]": "31", "ts": str(int(own.own_update_time.timestamp())),
            "auth[user_id]": str(own.own_update_by), "auth[member_id]": linked.member_id(),
            "auth[application_token]": app["application_token"]}
    form.update(stamp)
    r = httpx.post(f"{linked.app_url}/events/crm", data={k: v for k, v in form.items() if v is not None}, timeout=30)
    assert r.status_code == 200, r.text
    before = requests_at_portal(linked)
    invoices.refresh_requested(linked.ctx, portal)
    assert requests_at_portal(linked) > before


def test_our_echo_with_its_stamp_is_not_read(linked):
    """The control for the test above: the same event with our update's stamp costs nothing."""
    d = linked.deals[0]
    portal = pay_and_decide(linked, d)
    outbox.deliver(linked.ctx, portal)
    own = cached(linked, d["invoice_id"])
    with linked.ctx.db.session() as s:
        [row] = s.scalars(select(InvoiceRefresh).where(InvoiceRefresh.entity == "invoice"))
        assert row.event_user == own.own_update_by and row.event_ts == own.own_update_time
    before = requests_at_portal(linked)
    invoices.refresh_requested(linked.ctx, portal)
    assert requests_at_portal(linked) == before
    with linked.ctx.db.session() as s:
        assert s.scalar(select(InvoiceRefresh)) is None


def test_the_next_lone_payment_reads_only_its_deal(linked):
    """Once the funnel's stage list has been read, an invoice that is open in the cache, with no event about it
    waiting, moves to paid without a read; the deal is read (its pipeline and stage are not cached) in one
    request, and the pipeline's success stage read with the first payment is remembered: two requests, and
    neither echo (invoice, deal) costs one."""
    first, second = linked.deals[0], linked.deals[3]
    portal = pay_and_decide(linked, first)
    outbox.deliver(linked.ctx, portal)
    invoices.refresh_requested(linked.ctx, portal)   # our echo: nothing read
    portal = pay_and_decide(linked, second)
    before = requests_at_portal(linked)
    # invoice, deal, payment record (#15: its 3 commands ride in the same batch), timeline, notice, trigger
    assert outbox.deliver(linked.ctx, portal)["sent"] == 6
    assert requests_at_portal(linked) - before == 2
    invoices.refresh_requested(linked.ctx, portal)
    assert requests_at_portal(linked) - before == 2
    assert item_stage(linked, second["invoice_id"]) == PAID
    assert linked.rest("crm.deal.get", {"id": second["deal_id"]})["result"]["STAGE_ID"] == "WON"


def item_stage(stack, invoice_id) -> str:
    return stack.rest("crm.item.get", {"entityTypeId": 31, "id": invoice_id})["result"]["item"]["stageId"]


def test_a_change_whose_event_waits_is_read_before_moving_the_invoice(linked):
    """A manager declines the invoice after the payment was decided; the event is there, not yet read: the move
    to paid reads Bitrix24 first and leaves the invoice declined."""
    first, second = linked.deals[0], linked.deals[3]
    portal = pay_and_decide(linked, first)
    outbox.deliver(linked.ctx, portal)               # the stage list is known from here on
    invoices.refresh_requested(linked.ctx, portal)
    portal = pay_and_decide(linked, second)
    linked.rest("crm.item.update", {"entityTypeId": 31, "id": second["invoice_id"], "fields": {"stageId": "DT31_2:D"}})
    outbox.deliver(linked.ctx, portal)
    assert item_stage(linked, second["invoice_id"]) == "DT31_2:D"
    with linked.ctx.db.session() as s:
        [paid] = s.scalars(select(OutboxItem).where(OutboxItem.kind == "invoice_paid",
                                                    OutboxItem.payload["invoice_id"].as_integer() == second["invoice_id"]))
        assert paid.status == "skipped"


def test_a_crash_after_the_write_on_the_one_request_path_is_still_exactly_once(linked):
    """The worker dies after the write batch of a payment sent without a read; whoever takes the effects over
    reads Bitrix24 (the attempt was interrupted) and sends nothing twice."""
    from collections import Counter
    first, second = linked.deals[0], linked.deals[3]
    portal = pay_and_decide(linked, first)
    outbox.deliver(linked.ctx, portal)
    invoices.refresh_requested(linked.ctx, portal)
    portal = pay_and_decide(linked, second)
    before = requests_at_portal(linked)
    deliver_and_die(linked.ctx, portal)   # the process dies after the batch call
    assert requests_at_portal(linked) - before == 2      # the deal read and the write batch: no invoice read
    sent_once = linked.portal_state()
    with linked.ctx.db.session() as s:
        for i in s.scalars(select(OutboxItem).where(OutboxItem.status == "sending")):
            i.lease_until = linked.ctx.clock.now()    # its leases run out
        s.query(InvoiceRefresh).delete()              # and the echo of the write has not arrived (yet)
    outbox.deliver(linked.ctx, portal)                # another worker takes over
    after = linked.portal_state()
    assert item_stage(linked, second["invoice_id"]) == PAID
    assert len(after["timeline_comments"]) == len(sent_once["timeline_comments"]) == 2
    assert len(after["trigger_executions"]) == len(sent_once["trigger_executions"]) == 2
    visible = Counter(n["user_id"] for n in after["notifications"] if not n.get("replaced_by"))
    assert sum(visible.values()) == 2
    with linked.ctx.db.session() as s:
        assert {i.status for i in s.scalars(select(OutboxItem))} <= {"done", "skipped"}
        moved = s.scalar(select(OutboxItem).where(OutboxItem.kind == "invoice_paid",
                                                  OutboxItem.payload["invoice_id"].as_integer() == second["invoice_id"]))
        assert moved.status == "skipped" and moved.result["why"] == "moved by an interrupted attempt"
        assert moved.result["from_stage"] and moved.result["to_stage"] == PAID   # undo still knows where from
        deal_moved = s.scalar(select(OutboxItem).where(OutboxItem.kind == "deal_stage",
                                                       OutboxItem.payload["deal_id"].as_integer() == second["deal_id"]))
        assert deal_moved.status == "skipped" and deal_moved.result["why"] == "moved by an interrupted attempt"
    assert deal_stage_of(linked, second["deal_id"]) == "WON"


def test_edits_made_in_bitrix24_during_a_run_reach_the_cache(linked):
    """The threaded worker runs and pays invoices; right after one is paid, the admin renumbers it and changes its
    amount, and a manager declines another: the cache shows all of it within seconds (events → re-read), and
    no edit is taken for the echo of our own update."""
    from conftest import wait_for
    paid, declined = linked.deals[0], linked.deals[1]
    linked.start_worker()
    try:
        linked.pay(paid["amount"], f"Оплата по счету № {paid['number']}", payerInn=paid["inn"])
        wait_for(lambda: item_stage(linked, paid["invoice_id"]) == PAID, timeout=30)
        linked.rest("crm.item.update", {"entityTypeId": 31, "id": paid["invoice_id"],
                                        "fields": {"accountNumber": "1207-К", "opportunity": 12500}})
        manager = token_of(linked, 2)
        as_user(linked, manager, "crm.item.update", {"entityTypeId": 31, "id": declined["invoice_id"],
                                                       "fields": {"stageId": "DT31_2:D"}})
        wait_for(lambda: (cached(linked, paid["invoice_id"]).number, cached(linked, paid["invoice_id"]).amount,
                          cached(linked, declined["invoice_id"]).stage_id)
                 == ("1207-К", Decimal("12500.00"), "DT31_2:D"), timeout=10)
    finally:
        linked.stop_worker()


# -- the echo of our own deal move (ONCRMDEALUPDATE carries only FIELDS[ID]) ------------------------------------
def deal_rows(stack) -> list[InvoiceRefresh]:
    with stack.ctx.db.session() as s:
        return list(s.scalars(select(InvoiceRefresh).where(InvoiceRefresh.entity == "deal")))


def deal_stage_of(stack, deal_id) -> str:
    return stack.rest("crm.deal.get", {"id": deal_id})["result"]["STAGE_ID"]


def moved_and_echoed(stack, d) -> Portal:
    """The payment's effects went out (the deal is in WON); the echoes of our updates wait to be looked at."""
    portal = pay_and_decide(stack, d)
    outbox.deliver(stack.ctx, portal)
    assert deal_stage_of(stack, d["deal_id"]) == "WON"
    [row] = deal_rows(stack)
    assert row.entity_id == d["deal_id"] and row.event_user is not None and row.event_ts is not None
    return portal


def test_our_deal_echo_costs_no_read(linked):
    d = linked.deals[0]
    portal = moved_and_echoed(linked, d)
    before = requests_at_portal(linked)
    invoices.refresh_requested(linked.ctx, portal)
    assert requests_at_portal(linked) == before
    with linked.ctx.db.session() as s:
        assert s.scalar(select(InvoiceRefresh)) is None


def test_another_users_deal_change_after_our_move_is_read_even_if_our_echo_was_lost(linked):
    """Bitrix24 loses the echo of our deal move; a manager (user 2) changes the deal's company in the same
    second: the deal's invoices are re-read, and an invoice change that came without its own event shows."""
    d = linked.deals[0]
    portal = moved_and_echoed(linked, d)
    with linked.ctx.db.session() as s:   # the echoes never arrive
        s.query(InvoiceRefresh).delete()
    linked.rest("crm.item.update", {"entityTypeId": 31, "id": d["invoice_id"], "fields": {"title": "Счёт (изм.)"}})
    with linked.ctx.db.session() as s:   # ...nor that invoice's own event: only the deal's below can tell
        s.query(InvoiceRefresh).delete()
    as_user(linked, token_of(linked, 2), "crm.deal.update", {"id": d["deal_id"],
                                                             "fields": {"COMPANY_ID": 1}})
    [row] = deal_rows(linked)
    assert row.event_user == 2
    before = requests_at_portal(linked)
    invoices.refresh_requested(linked.ctx, portal)
    assert requests_at_portal(linked) > before
    assert cached(linked, d["invoice_id"]).title == "Счёт (изм.)"


def test_a_second_deal_event_after_our_move_is_read(linked):
    """The portal's admin (the very user our app acts as) changes the deal's company right after our move,
    before the worker looked at the echo: two events for one deal are never one echo."""
    d = linked.deals[0]
    portal = moved_and_echoed(linked, d)
    linked.rest("crm.deal.update", {"id": d["deal_id"], "fields": {"COMPANY_ID": 1}})
    [row] = deal_rows(linked)
    assert row.event_ts is None and row.event_user is None   # two events: a plain re-read
    before = requests_at_portal(linked)
    invoices.refresh_requested(linked.ctx, portal)
    assert requests_at_portal(linked) > before


def test_a_deal_change_after_our_echo_was_recognised_is_read(linked):
    d = linked.deals[0]
    portal = moved_and_echoed(linked, d)
    invoices.refresh_requested(linked.ctx, portal)
    before = requests_at_portal(linked)
    linked.rest("crm.deal.update", {"id": d["deal_id"], "fields": {"COMPANY_ID": 1}})
    invoices.refresh_requested(linked.ctx, portal)
    assert requests_at_portal(linked) > before


@pytest.mark.parametrize("stamp", [{"ts": None}, {"auth[user_id]": None}, {"auth[user_id]": "2"},
                                   {"ts": "+1700000000"}, {"auth[user_id]": "0"}, {"event": "ONCRMDEALADD"}])
def test_a_deal_event_without_our_stamp_is_read(linked, stamp):
    """Our deal echo was lost; an event in the same second without auth[user_id] (a robot or workflow), by
    another user, with a malformed stamp, or of another kind is read, never taken for our echo."""
    from b24app.storage.models import OwnDealUpdate
    d = linked.deals[0]
    portal = moved_and_echoed(linked, d)
    with linked.ctx.db.session() as s:   # the echoes never arrive
        s.query(InvoiceRefresh).delete()
        own = s.get(OwnDealUpdate, (portal.id, d["deal_id"]))
        assert own is not None
        when, by = own.update_time, own.update_by
    [app] = [a for a in linked.portal_state()["installed_apps"] if a["client_id"] == APP_CLIENT_ID]
    form = {"event": "ONCRMDEALUPDATE", "data[FIELDS][ID]": str(d["deal_id"]), "ts": str(int(when.timestamp())),
            "auth[user_id]": str(by), "auth[member_id]": linked.member_id(),
            "auth[application_token]": app["application_token"]}
    control = dict(form)
    form.update(stamp)
    r = httpx.post(f"{linked.app_url}/events/crm", data={k: v for k, v in form.items() if v is not None}, timeout=30)
    assert r.status_code == 200, r.text
    before = requests_at_portal(linked)
    invoices.refresh_requested(linked.ctx, portal)
    assert requests_at_portal(linked) > before
    # the control: the same event with our move's stamp, once more, costs nothing
    r = httpx.post(f"{linked.app_url}/events/crm", data=control, timeout=30)
    assert r.status_code == 200, r.text
    before = requests_at_portal(linked)
    invoices.refresh_requested(linked.ctx, portal)
    assert requests_at_portal(linked) == before


def test_a_blocked_deal_read_delays_only_the_deal_move(linked):
    """The deals are read 50 per crm.deal.list command; when Bitrix24 blocks that method (OPERATION_TIME_LIMIT,
    limits.md), only the deal move and the payment record (which reads the deal) wait for the reset: the invoice
    moves and the notice goes out, nothing is lost, and the deal moves after the reset."""
    import time
    from test_fidelity_operating import WINDOW, rounds
    httpx.post(f"{linked.sandbox_url}/sandbox/config", json={"operating_window": WINDOW}).raise_for_status()
    first, d = linked.deals[0], linked.deals[3]
    outbox.deliver(linked.ctx, pay_and_decide(linked, first))   # crm.deal.list answered: its reset is known
    portal = pay_and_decide(linked, d)
    blocked = linked.portal_http("POST", "/sandbox/operating", json={"client_id": APP_CLIENT_ID,
                                                                     "method": "crm.deal.list", "seconds": 500}).json()
    assert blocked["blocked"]
    outbox.deliver(linked.ctx, portal)
    assert item_stage(linked, d["invoice_id"]) == PAID and deal_stage_of(linked, d["deal_id"]) != "WON"
    with linked.ctx.db.session() as s:
        waiting = s.scalar(select(OutboxItem).where(OutboxItem.kind == "deal_stage",
                                                    OutboxItem.payload["deal_id"].as_integer() == d["deal_id"]))
        assert waiting.status == "pending" and "OPERATION_TIME_LIMIT" in waiting.last_error and waiting.attempts == 0
        # the payment record reads the deal too (its currency): it waits for the same reset, also without an attempt
        record = s.scalar(select(OutboxItem).where(OutboxItem.kind == "payment_record",
                                                   OutboxItem.payload["deal_id"].as_integer() == d["deal_id"]))
        assert record.status == "pending" and record.attempts == 0
        assert {i.status for i in s.scalars(select(OutboxItem).where(
            OutboxItem.kind.not_in(("deal_stage", "payment_record"))))} == {"done"}
        due = waiting.next_attempt_at.timestamp()
    assert abs(due - blocked["operating_reset_at"]) <= 1.0, (due, blocked)
    time.sleep(max(0.0, blocked["operating_reset_at"] - time.time()) + 0.5)
    rounds(linked)
    assert deal_stage_of(linked, d["deal_id"]) == "WON"
    with linked.ctx.db.session() as s:
        assert {i.status for i in s.scalars(select(OutboxItem))} == {"done"}
