"""A payment lands in the bank sandbox; seconds later Bitrix24 shows it. Every outcome, exactly once."""
from __future__ import annotations

from collections import Counter
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from b24app.pipeline import outbox, queue, reconcile, sync
from b24app.pipeline.effects import Timeline, Trigger
from b24app.storage.models import BankAccount, Decision, Operation, OutboxItem, Portal
from b24app.pipeline.rules import save_rules
from b24app.pipeline.worker import Worker



def item(stack, invoice_id):
    return stack.rest("crm.item.get", {"entityTypeId": 31, "id": invoice_id})["result"]["item"]


def deal(stack, deal_id):
    return stack.rest("crm.deal.get", {"id": deal_id})["result"]


def notes_for(stack, user_id):
    """What the user sees: notifications not replaced by a later one with the same TAG."""
    return [n["message"] for n in stack.portal_state()["notifications"]
            if n["user_id"] == user_id and not n.get("replaced_by")]


def comments(stack, deal_id):
    return [c["COMMENT"] for c in stack.portal_state()["timeline_comments"] if str(c["ENTITY_ID"]) == str(deal_id)]


def run_worker_until_idle(stack, rounds=20):
    """Drive the worker synchronously (deterministic; the threaded loop is covered elsewhere)."""
    w = Worker(stack.ctx, concurrency=1)
    for _ in range(rounds):
        if not w.run_once():
            break
    return w


def sync_now(stack):
    with stack.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    sync.request_sync(stack.ctx, portal.id)
    run_worker_until_idle(stack)
    return portal


def test_paid_in_full_marks_invoice_paid_comments_and_notifies_once(linked):
    d = linked.deals[0]  # 1207, 12 000.00, manager 2
    linked.pay(d["amount"], f"Оплата по счету № {d['number']} от 14.01.2026", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == "DT31_2:P"
    msgs = notes_for(linked, d["user"])
    assert len(msgs) == 1 and d["number"] in msgs[0] and "12\u00a0000,00\u00a0₽" in msgs[0]
    [comment] = comments(linked, d["deal_id"])
    assert d["company"] in comment and "14.01.2026" in comment
    execs = linked.portal_state()["trigger_executions"]
    assert [(e["code"], str(e["owner_id"])) for e in execs] == [("b24app_payment_received", str(d["deal_id"]))]
    # running again changes nothing in Bitrix24
    sync_now(linked)
    assert len(notes_for(linked, d["user"])) == 1 and len(comments(linked, d["deal_id"])) == 1


def test_underpaid_then_top_up_completes_the_invoice(linked):
    d = linked.deals[1]  # СЧ-00412, 48 500.00
    linked.pay("40000.00", "Оплата по сч. СЧ-00412 частично", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == "DT31_2:N"
    [msg] = notes_for(linked, d["user"])
    assert "40\u00a0000,00" in msg and "48\u00a0500,00" in msg and "8\u00a0500,00" in msg
    linked.pay("8500.00", "Доплата по счету СЧ-00412", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == "DT31_2:P"
    assert len(notes_for(linked, d["user"])) == 2


def test_one_payment_for_two_invoices(linked):
    a, b = linked.deals[0], linked.deals[3]  # 1207 (12 000) and 1208 (3 000), same client
    linked.pay("15000.00", "Оплата по счетам № 1207 и 1208", payerInn=a["inn"], payerName=a["company"])
    sync_now(linked)
    assert item(linked, a["invoice_id"])["stageId"] == "DT31_2:P"
    assert item(linked, b["invoice_id"])["stageId"] == "DT31_2:P"


def test_overpaid_goes_to_review_queue_and_manager_is_told(linked):
    d = linked.deals[2]  # INV-2025-0042, 7 350.50
    linked.pay("8000.00", "Payment for invoice INV-2025-0042", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    with linked.ctx.db.session() as s:
        [op] = s.scalars(select(Operation).where(Operation.is_credit.is_(True)))
        assert op.state == "overpaid"
    assert item(linked, d["invoice_id"])["stageId"] == "DT31_2:P"
    [msg] = notes_for(linked, d["user"])
    assert "649,50" in msg


@pytest.mark.parametrize("purpose, inn", [
    ("Оплата по договору 15 без номера счёта", None),                 # nothing to go on
    ("Оплата по счету № 1207", "7999999999"),                        # the number, but a stranger paid
])
def test_ambiguous_or_unknown_payments_are_never_applied(linked, purpose, inn):
    linked.pay("12000.00", purpose, **({"payerInn": inn} if inn else {}))
    sync_now(linked)
    for d in linked.deals:
        assert item(linked, d["invoice_id"])["stageId"] == "DT31_2:N"
    with linked.ctx.db.session() as s:
        states = [o.state for o in s.scalars(select(Operation))]
    assert states and all(st in ("review", "unmatched") for st in states)


def test_currency_must_agree(linked):
    usd = [a for a in linked.bank_state()["accounts"] if a.get("currency") in ("USD", "840")][0]
    with linked.ctx.db.session() as s:
        for acc in s.scalars(select(BankAccount)):
            acc.watched = True
    linked.pay("12000.00", "Оплата по счету № 1207", payerInn="7712345678", accountNumber=usd["accountNumber"],
               currency="USD")
    sync_now(linked)
    assert item(linked, linked.deals[0]["invoice_id"])["stageId"] == "DT31_2:N"


def test_same_operation_delivered_twice_is_stored_and_applied_once(linked):
    d = linked.deals[0]
    op = linked.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"], operationId="dup-1")
    linked.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"], operationId="dup-1")
    sync_now(linked)
    httpx.post(f"{linked.bank_url}/sandbox/operations/{op['operationId']}/reidentify", timeout=30)
    sync_now(linked)
    with linked.ctx.db.session() as s:
        ops = list(s.scalars(select(Operation)))
        assert len(ops) == 1
        assert len(list(s.scalars(select(Decision)))) == 1
    assert len(notes_for(linked, d["user"])) == 1


def test_authorization_is_pending_until_it_settles(linked):
    d = linked.deals[0]
    op = linked.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"], operationStatus="Authorization")
    sync_now(linked)
    with linked.ctx.db.session() as s:
        assert [o.state for o in s.scalars(select(Operation))] == ["pending"]
    assert item(linked, d["invoice_id"])["stageId"] == "DT31_2:N"
    httpx.post(f"{linked.bank_url}/sandbox/operations/{op['operationId']}/settle", timeout=30)
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == "DT31_2:P"


def test_manual_stage_change_in_bitrix24_is_respected(linked):
    d = linked.deals[0]
    linked.rest("crm.item.update", {"entityTypeId": 31, "id": d["invoice_id"], "fields": {"stageId": "DT31_2:D"}})
    linked.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"])
    sync_now(linked)
    assert item(linked, d["invoice_id"])["stageId"] == "DT31_2:D"  # declined by a person stays declined


def test_deal_moves_to_the_stage_the_admin_chose(linked):
    with linked.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    save_rules(linked.ctx, portal.id, {"paid_deal_stage": {"0": "EXECUTING"}})
    d = linked.deals[0]
    linked.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"])
    sync_now(linked)
    assert deal(linked, d["deal_id"])["STAGE_ID"] == "EXECUTING"


class WorkerDied(Exception):
    """Raised at the outbox's crash point: the worker dies between Bitrix24's answer and recording it."""


def _die(items):
    raise WorkerDied


def deliver_and_die(ctx, portal) -> None:
    """One delivery whose write batch reaches Bitrix24, by a worker that dies before recording anything of it:
    its items stay `sending` under their lease (outbox.deliver's `after_send` crash point)."""
    with pytest.raises(WorkerDied):
        outbox.deliver(ctx, portal, after_send=_die)


def decided_not_sent(st):
    """The worker's first half: read the statement, refresh the invoice cache, decide; nothing sent yet.
    Returns the portal (the stack's only one)."""
    from b24app.pipeline import invoices

    with st.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    sync.request_sync(st.ctx, portal.id)
    w = Worker(st.ctx, concurrency=1)
    for acc_id in w.claim_accounts(10):
        w.sync_one(acc_id)
    invoices.refresh_all(st.ctx, portal)
    reconcile.reconcile_portal(st.ctx, portal)
    return portal


def test_worker_killed_between_sending_and_recording_never_notifies_twice(linked):
    """Simulate the crash: the batch reached Bitrix24, the worker died before marking items done."""
    d = linked.deals[1]
    linked.pay("1000.00", "Оплата по счету СЧ-00412", payerInn=d["inn"])
    portal = decided_not_sent(linked)

    deliver_and_die(linked.ctx, portal)   # the process dies right after the batch call
    sent_once = linked.portal_state()
    with linked.ctx.db.session() as s:
        items = list(s.scalars(select(OutboxItem)))
        assert items and all(i.status == "sending" for i in items)
        for i in items:   # its leases expire
            i.lease_until = linked.ctx.clock.now()
    outbox.deliver(linked.ctx, portal)   # another worker picks them up
    after = linked.portal_state()
    assert len(after["timeline_comments"]) == len(sent_once["timeline_comments"]) == 1
    assert len(after["trigger_executions"]) == len(sent_once["trigger_executions"])
    # the notification carries the same TAG, so Bitrix24 replaces rather than adds it
    tags = Counter(n["tag"] for n in after["notifications"] if n["user_id"] == d["user"])
    visible = [n for n in after["notifications"] if n["user_id"] == d["user"] and not n.get("replaced_by")]
    assert len(tags) == 1 and len(visible) == 1
    with linked.ctx.db.session() as s:
        assert {i.status for i in s.scalars(select(OutboxItem))} <= {"done", "skipped"}


def test_with_several_own_companies_only_the_receiving_companys_invoices_are_candidates(linked):
    own_a = linked.rest("crm.company.add", {"fields": {"TITLE": "ООО «Ромашка»", "IS_MY_COMPANY": "Y"}})["result"]
    own_b = linked.rest("crm.company.add", {"fields": {"TITLE": "ООО «Лютик»", "IS_MY_COMPANY": "Y"}})["result"]
    for cid, inn in ((own_a, "7701234560"), (own_b, "7709999999")):
        linked.rest("crm.requisite.add", {"fields": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": cid, "PRESET_ID": 1,
                                                     "NAME": "own", "RQ_INN": inn}})
    d0, d3 = linked.deals[0], linked.deals[3]   # 1207 and 1208
    linked.rest("crm.item.update", {"entityTypeId": 31, "id": d0["invoice_id"], "fields": {"mycompanyId": own_b}})
    linked.rest("crm.item.update", {"entityTypeId": 31, "id": d3["invoice_id"], "fields": {"mycompanyId": own_a}})
    linked.pay(d0["amount"], "Оплата по счету № 1207", payerInn=d0["inn"])   # to Ромашка's account
    linked.pay(d3["amount"], "Оплата по счету № 1208", payerInn=d3["inn"])
    sync_now(linked)
    with linked.ctx.db.session() as s:
        assert {a.mycompany_id for a in s.scalars(select(BankAccount))} == {own_a}
    assert item(linked, d0["invoice_id"])["stageId"] == "DT31_2:N"   # Лютик's invoice is not Ромашка's money
    assert item(linked, d3["invoice_id"])["stageId"] == "DT31_2:P"


def test_an_interrupted_task_is_not_created_twice(linked):
    with linked.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    save_rules(linked.ctx, portal.id, {"underpaid_task": True})
    d = linked.deals[1]
    linked.pay("1000.00", "Оплата по счету СЧ-00412", payerInn=d["inn"])
    portal = decided_not_sent(linked)  # read again: with the rule just saved
    deliver_and_die(linked.ctx, portal)   # dies after the batch reached Bitrix24
    with linked.ctx.db.session() as s:
        for i in s.scalars(select(OutboxItem)):
            i.lease_until = linked.ctx.clock.now()
    outbox.deliver(linked.ctx, portal)
    tasks = linked.portal_state()["tasks"]
    assert len(tasks) == 1 and tasks[0]["responsibleId"] == str(d["user"])
    with linked.ctx.db.session() as s:
        assert {i.status for i in s.scalars(select(OutboxItem))} <= {"done", "skipped"}


@pytest.mark.parametrize("cache_knows_the_funnel", [True, False])
def test_moving_an_invoice_reads_its_stage_list_with_it_unless_it_changed_funnel(linked, cache_knows_the_funnel):
    """The stage list of the invoice's funnel (as cached) is read in the same batch as the invoice: one read
    batch and one write batch. If the invoice moved to another funnel since it was cached, that funnel's
    stage list costs a second read, and the invoice still lands in the right success stage."""
    from b24app.pipeline import invoices
    from b24app.storage.models import Invoice
    ctx = linked.ctx
    d = linked.deals[0]
    linked.pay(d["amount"], f"Оплата по счету № {d['number']} от 14.01.2026", payerInn=d["inn"], payerName=d["company"])
    with ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    invoices.refresh_all(ctx, portal)
    from b24app.portals.funnels import deal_pipelines
    deal_pipelines(ctx, portal, refresh=True)   # the admin page's first run: the deal moves to a known S stage
    portal = ctx.portals.find(portal.member_id)
    with ctx.db.session() as s:
        accounts = list(s.scalars(select(BankAccount.id).where(BankAccount.watched.is_(True))))
        if not cache_knows_the_funnel:
            s.get(Invoice, s.scalar(select(Invoice.id).where(Invoice.b24_id == d["invoice_id"]))).category_id = 99
    for account_id in accounts:
        sync.sync_account(ctx, account_id)
    assert reconcile.reconcile_portal(ctx, portal, limit=200)
    before = linked.portal_state()["requests"]
    sent = outbox.deliver(ctx, portal)
    assert linked.portal_state()["requests"] - before == (2 if cache_knows_the_funnel else 3)
    assert sent["sent"] >= 1
    assert item(linked, d["invoice_id"])["stageId"] == "DT31_2:P"


def _portal_faults(stack, script):
    httpx.post(f"{stack.sandbox_url}/sandbox/faults", json={"kinds": {}, "script": script},
               timeout=30).raise_for_status()


def _due_again(stack):
    """Every unfinished outbox item's back-off is over (the clock of a test does not wait minutes)."""
    past = stack.ctx.clock.now() - timedelta(seconds=1)
    with stack.ctx.db.session() as s:
        for i in s.scalars(select(OutboxItem).where(OutboxItem.status.in_(("pending", "sending")))):
            i.next_attempt_at = past
            if i.status == "sending":
                i.lease_until = past


def test_a_failed_second_batch_does_not_resend_the_first(linked):
    """62 effects need two requests of at most 50 commands. The second is refused (its token expires twice in
    a row): the 50 that went out are done and are not sent again; the 12 that did not go out are sent later."""
    ctx, deal_id = linked.ctx, linked.deals[0]["deal_id"]
    with ctx.db.session() as s:
        portal = s.scalar(select(Portal))
        for n in range(60):
            queue.enqueue(s, portal.id, f"test:tl:{n}", Timeline(deal_id, f"comment {n}"))
        for n in range(2):
            queue.enqueue(s, portal.id, f"test:tr:{n}", Trigger("b24app_payment_received", deal_id))
    before = linked.portal_state()
    # the read (user.admin, asked because triggers are due), the first write, then the second write refused
    _portal_faults(linked, [None, None, "expired_token", "expired_token"])
    first = outbox.deliver(ctx, portal)
    assert first["sent"] == 50 and first["retry"] == 12
    with ctx.db.session() as s:
        statuses = Counter(i.status for i in s.scalars(select(OutboxItem)))
    assert statuses == {"done": 50, "pending": 12}  # refused before any work: nothing uncertain
    _due_again(linked)
    assert outbox.deliver(ctx, portal)["sent"] == 12
    after = linked.portal_state()
    mine = [c["COMMENT"] for c in after["timeline_comments"] if str(c["ENTITY_ID"]) == str(deal_id)]
    assert len(mine) - len([c for c in before["timeline_comments"] if str(c["ENTITY_ID"]) == str(deal_id)]) == 60
    assert sorted(Counter(mine).values())[-1] == 1  # every comment once
    assert len(after["trigger_executions"]) - len(before["trigger_executions"]) == 2


def test_an_interrupted_attempt_stays_uncertain_when_the_check_fails(linked):
    """A worker died after its comment reached Bitrix24. The next worker cannot read the timeline (its token
    expires twice in a row): the item must stay an interrupted attempt, so that the read that finally works
    finds the comment instead of a plain retry posting it again."""
    ctx, deal_id = linked.ctx, linked.deals[0]["deal_id"]
    with ctx.db.session() as s:
        portal = s.scalar(select(Portal))
        queue.enqueue(s, portal.id, "test:tl:once", Timeline(deal_id, "paid"))
    deliver_and_die(ctx, portal)   # the process dies right after the batch call
    assert [c["COMMENT"] for c in linked.portal_state()["timeline_comments"]
            if str(c["ENTITY_ID"]) == str(deal_id) and c["COMMENT"].startswith("paid")] != []   # it was sent
    _due_again(linked)
    _portal_faults(linked, ["expired_token", "expired_token"])
    assert outbox.deliver(ctx, portal)["retry"] == 1
    with ctx.db.session() as s:
        assert [i.status for i in s.scalars(select(OutboxItem))] == ["sending"]
    _due_again(linked)
    assert outbox.deliver(ctx, portal)["skipped"] == 1
    comments = [c["COMMENT"] for c in linked.portal_state()["timeline_comments"]
                if str(c["ENTITY_ID"]) == str(deal_id) and c["COMMENT"].startswith("paid")]
    assert len(comments) == 1


def test_which_failed_requests_may_have_run_in_bitrix24():
    from b24app.adapters.bitrix.errors import (
        BitrixServerError,
        BitrixUnavailable,
        ExpiredToken,
        PortalGone,
        PortalMovedTooOften,
        QueryLimitExceeded,
    )
    refused = [QueryLimitExceeded("QUERY_LIMIT_EXCEEDED", "", 503, "batch"), ExpiredToken("expired_token", "", 401, "batch"),
               PortalGone("NOT_INSTALLED", "", 400, "batch"), PortalMovedTooOften("too_many_redirects", "", 302, "batch")]
    unknown = [BitrixUnavailable("timeout", "ReadTimeout", None, "batch"),
               BitrixServerError("INTERNAL_SERVER_ERROR", "", 500, "batch"), BitrixServerError("bad_response", "", 504, "batch")]
    assert [e.may_have_run for e in refused] == [False] * 4
    assert [e.may_have_run for e in unknown] == [True] * 3


def test_by_default_a_paid_deal_moves_to_its_pipelines_success_stage(linked):
    """Nobody opened the app page (no cached pipelines): the outbox reads the pipeline's stages and picks S."""
    d = linked.deals[0]
    assert deal(linked, d["deal_id"])["STAGE_ID"] != "WON"
    linked.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"])
    sync_now(linked)
    assert deal(linked, d["deal_id"])["STAGE_ID"] == "WON"


def test_the_success_stage_is_chosen_per_pipeline_and_do_not_move_is_kept(linked):
    from b24app.portals.funnels import deal_pipelines

    from b24app.pipeline.invoices import refresh_all

    portal = sync_now(linked)
    d0 = linked.deals[0]
    d1 = {"deal_id": linked.rest("crm.deal.add", {"fields": {"TITLE": "Монтаж", "CATEGORY_ID": 1,
                                                             "ASSIGNED_BY_ID": 2}})["result"],
          "number": "СЧ-7001", "amount": "5000.00", "inn": d0["inn"]}
    d1["invoice_id"] = linked.rest("crm.item.add", {"entityTypeId": 31, "fields": {
        "title": "Счёт СЧ-7001", "accountNumber": "СЧ-7001", "opportunity": "5000.00", "currencyId": "RUB",
        "parentId2": d1["deal_id"], "assignedById": 2}})["result"]["item"]["id"]
    refresh_all(linked.ctx, linked.ctx.portals.find(portal.member_id))
    assert deal(linked, d1["deal_id"])["STAGE_ID"] == "C1:NEW"
    deal_pipelines(linked.ctx, linked.ctx.portals.find(portal.member_id), refresh=True)  # the admin page's cache
    save_rules(linked.ctx, portal.id, {"paid_deal_stage": {"0": ""}})                  # general: do not move
    linked.pay(d0["amount"], f"Оплата по счету № {d0['number']}", payerInn=d0["inn"])
    linked.pay(d1["amount"], f"Оплата по счету {d1['number']}", payerInn=d1["inn"])
    sync_now(linked)
    assert item(linked, d0["invoice_id"])["stageId"] == "DT31_2:P"
    assert deal(linked, d0["deal_id"])["STAGE_ID"] != "WON"
    assert deal(linked, d1["deal_id"])["STAGE_ID"] == "C1:WON"


def test_the_success_stage_read_once_is_remembered_for_the_next_payment(linked):
    d0, d3 = linked.deals[0], linked.deals[3]
    linked.pay(d0["amount"], f"Оплата по счету № {d0['number']}", payerInn=d0["inn"])
    portal = sync_now(linked)
    assert deal(linked, d0["deal_id"])["STAGE_ID"] == "WON"
    assert linked.ctx.portals.find(portal.member_id).settings["deal_success_stages"] == {"0": "WON"}
    with linked.ctx.db.session() as s:
        [item0] = [i for i in s.scalars(select(OutboxItem).where(OutboxItem.kind == "deal_stage"))]
    linked.pay(d3["amount"], f"Оплата по счету № {d3['number']}", payerInn=d3["inn"])
    sync_now(linked)
    with linked.ctx.db.session() as s:
        later = [i for i in s.scalars(select(OutboxItem).where(OutboxItem.kind == "deal_stage")) if i.id != item0.id]
    assert [i.payload["stages"] for i in later] == [{"0": "WON"}]   # named in the payload: no stage read needed
    assert deal(linked, d3["deal_id"])["STAGE_ID"] == "WON"


def test_the_timeline_comment_ends_with_a_reference_a_person_reads(linked):
    d = linked.deals[0]
    linked.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"], payerName=d["company"])
    sync_now(linked)
    with linked.ctx.db.session() as s:
        op = s.scalar(select(Operation).where(Operation.state == "matched"))
        dec = s.scalar(select(Decision).where(Decision.operation_pk == op.id))
    [comment] = comments(linked, d["deal_id"])
    assert comment.endswith(f"\n(платёж № {op.id} в приложении, запись {dec.id}/{d['invoice_id']})")
    assert "[ref " not in comment


def test_a_retry_after_a_crash_still_recognises_a_comment_with_the_old_ref_tag(linked):
    d = linked.deals[0]
    linked.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"], payerName=d["company"])
    with linked.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
        accounts = list(s.scalars(select(BankAccount.id).where(BankAccount.watched.is_(True))))
    from b24app.pipeline import invoices
    invoices.refresh_all(linked.ctx, portal)
    for account_id in accounts:
        sync.sync_account(linked.ctx, account_id)
    reconcile.reconcile_portal(linked.ctx, portal, limit=50)
    with linked.ctx.db.session() as s:   # the comment went out under the old format, then the worker died
        item = s.scalar(select(OutboxItem).where(OutboxItem.kind == "timeline"))
        key = item.key
        item.status, item.lease_until = "sending", linked.ctx.clock.now() - timedelta(seconds=1)
    linked.rest("crm.timeline.comment.add", {"fields": {"ENTITY_ID": d["deal_id"], "ENTITY_TYPE": "deal",
                                                        "COMMENT": f"Оплачено\n[{outbox.marker_for(key)}]"}})
    outbox.deliver(linked.ctx, portal)
    assert len(comments(linked, d["deal_id"])) == 1
    with linked.ctx.db.session() as s:
        assert s.scalar(select(OutboxItem).where(OutboxItem.key == key)).status in ("done", "skipped")
