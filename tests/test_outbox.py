"""The outbox's plan, table by table: one stored item and what Bitrix24 shows -> the command it sends (or why not).

Pure: `outbox._plan` and the effect types need no servers and no database (items are unsaved rows).
"""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from b24app.pipeline import outbox, queue
from b24app.adapters.bitrix.crm import DEAL_TYPE, INVOICE_TYPE, EntityType
from b24app.pipeline.effects import TYPES, EffectKind, InvoicePaid, Notify, UnknownEffect, load, undo_of
from b24app.pipeline.paymentrecords import marker
from b24app.storage.models import OutboxItem

STAGES = [  # crm.status.list of invoice funnel 2, as Bitrix24 answers it (crm/status/crm-status-list.md)
    {"STATUS_ID": "DT31_2:N", "SORT": 10, "SEMANTICS": None},
    {"STATUS_ID": "DT31_2:PP", "SORT": 15, "SEMANTICS": None},
    {"STATUS_ID": "DT31_2:P", "SORT": 20, "SEMANTICS": "S"},
    {"STATUS_ID": "DT31_2:D", "SORT": 30, "SEMANTICS": "F"},
]
DEAL_STAGES = [{"STATUS_ID": "NEW", "SORT": 10}, {"STATUS_ID": "WON", "SORT": 20, "SEMANTICS": "S"},
               {"STATUS_ID": "LOSE", "SORT": 30, "SEMANTICS": "F"}]


def inv(stage: str) -> dict:
    return {"inv7": {"item": {"id": 7, "stageId": stage, "categoryId": 2}}, "st2": STAGES}


def deal(stage: str, closed: str = "N", **fields) -> dict:
    return {"deal5": {"ID": "5", "CATEGORY_ID": "0", "STAGE_ID": stage, "CLOSED": closed, **fields}}


def row(kind: str, payload: dict, key: str = "op12:d3:inv7:x", result: dict | None = None) -> OutboxItem:
    return OutboxItem(id=41, portal_id=1, key=key, kind=kind, payload=payload, result=result)


MOVE_7 = ("crm.item.update", {"entityTypeId": 31, "id": 7, "fields": {"stageId": "DT31_2:P"}})
PLANNED = {"planned": {"from_stage": "DT31_2:N", "to_stage": "DT31_2:P"}}
TL_KEY = "op12:d3:inv7:timeline"
MARK = marker("op12:d3:inv7:record")
REC = {"deal_id": 5, "invoice_id": 7, "amount": "1500.00", "currency": "RUB", "marker": MARK, "ref": "op12:d3:inv7"}


def REC_ROW(pid: int, paid: str, amount: str) -> dict:  # noqa: N802  (a row of crm.item.payment.list)
    return {"id": pid, "accountNumber": f"5/{pid}", "paid": paid, "sum": amount, "currency": "RUB"}


def MARKED(*ids: int) -> dict:  # noqa: N802  (sale.payment.list filtered by our xmlId)
    return {"payments": [{"id": i, "xmlId": MARK} for i in ids]}


# (name, kind, payload, interrupted attempt, what Bitrix24 shows, item.result, expected (command, info))
CASES = [
    ("invoice paid: open -> success stage", "invoice_paid", {"invoice_id": 7}, False, inv("DT31_2:N"), None,
     (MOVE_7, {"from_stage": "DT31_2:N", "to_stage": "DT31_2:P"})),
    ("invoice paid: already paid", "invoice_paid", {"invoice_id": 7}, False, inv("DT31_2:P"), None,
     (None, {"why": "invoice already in final stage DT31_2:P", "from_stage": None})),
    ("invoice paid: deleted", "invoice_paid", {"invoice_id": 7}, False, {"inv7": None, "st2": STAGES}, None,
     (None, {"why": "invoice deleted"})),
    ("invoice paid: no success stage", "invoice_paid", {"invoice_id": 7}, False,
     {**inv("DT31_2:N"), "st2": STAGES[:2]}, None, (None, {"why": "no success stage in the invoice's category"})),
    ("invoice paid: moved by the interrupted attempt", "invoice_paid", {"invoice_id": 7}, True, inv("DT31_2:P"),
     PLANNED, (None, {"why": "moved by an interrupted attempt", "from_stage": "DT31_2:N", "to_stage": "DT31_2:P"})),
    ("invoice partial: to the funnel's partly-paid stage", "invoice_partial",
     {"invoice_id": 7, "stages": {"2": "DT31_2:PP"}}, False, inv("DT31_2:N"), None,
     (("crm.item.update", {"entityTypeId": 31, "id": 7, "fields": {"stageId": "DT31_2:PP"}}),
      {"from_stage": "DT31_2:N", "to_stage": "DT31_2:PP"})),
    ("invoice partial: no stage for this funnel", "invoice_partial", {"invoice_id": 7, "stages": {"3": "X"}}, False,
     inv("DT31_2:N"), None, (None, {"why": "no partly-paid stage chosen for this funnel"})),
    ("invoice partial: a final stage is no partly-paid stage", "invoice_partial",
     {"invoice_id": 7, "stages": {"2": "DT31_2:P"}}, False, inv("DT31_2:N"), None,
     (None, {"why": "stage DT31_2:P is not an in-progress stage of the funnel"})),
    ("invoice partial: already there", "invoice_partial", {"invoice_id": 7, "stages": {"2": "DT31_2:PP"}}, False,
     inv("DT31_2:PP"), None, (None, {"why": "invoice already there"})),
    ("invoice reopen: still where we put it", "invoice_reopen",
     {"invoice_id": 7, "paid_stage": "DT31_2:P", "to_stage": "DT31_2:N"}, False, inv("DT31_2:P"), None,
     (("crm.item.update", {"entityTypeId": 31, "id": 7, "fields": {"stageId": "DT31_2:N"}}),
      {"to_stage": "DT31_2:N", "to_semantics": None})),
    ("invoice reopen: a person moved it since", "invoice_reopen",
     {"invoice_id": 7, "paid_stage": "DT31_2:P", "to_stage": "DT31_2:N"}, False, inv("DT31_2:D"), None,
     (None, {"why": "invoice was changed by a person since; left as it is"})),
    ("deal stage: the pipeline's chosen stage", "deal_stage", {"deal_id": 5, "stages": {"0": "WON"}}, False,
     deal("NEW"), None, (("crm.deal.update", {"id": 5, "fields": {"STAGE_ID": "WON"}}),
                         {"from_stage": "NEW", "to_stage": "WON"})),
    ("deal stage: success stage read with the deal", "deal_stage",
     {"deal_id": 5, "stages": {}, "default": "success"}, False, {**deal("NEW"), "dst0": DEAL_STAGES}, None,
     (("crm.deal.update", {"id": 5, "fields": {"STAGE_ID": "WON"}}), {"from_stage": "NEW", "to_stage": "WON"})),
    ("deal stage: closed", "deal_stage", {"deal_id": 5, "stages": {"0": "WON"}}, False, deal("LOSE", "Y"), None,
     (None, {"why": "deal already there or closed"})),
    ("deal stage: no stage for this pipeline", "deal_stage", {"deal_id": 5, "stages": {"1": "C1:WON"}}, False,
     deal("NEW"), None, (None, {"why": "no stage chosen for this pipeline"})),
    ("deal stage: deleted", "deal_stage", {"deal_id": 5, "stages": {"0": "WON"}}, False, {"deal5": None}, None,
     (None, {"why": "deal not found (deleted, or not readable by the app's user)"})),
    ("deal paid sum: differs", "deal_paid_sum", {"deal_id": 5, "field": "UF_CRM_PAID", "value": "1500.00|RUB"},
     False, deal("NEW", UF_CRM_PAID="1000|RUB"), None,
     (("crm.deal.update", {"id": 5, "fields": {"UF_CRM_PAID": "1500.00|RUB"}}), {"value": "1500.00|RUB"})),
    ("deal paid sum: already shown", "deal_paid_sum", {"deal_id": 5, "field": "UF_CRM_PAID", "value": "1500.00|RUB"},
     False, deal("NEW", UF_CRM_PAID="1500|RUB"), None,
     (None, {"why": "the field already shows 1500.00|RUB", "value": "1500.00|RUB"})),
    ("deal paid sum: no value filled", "deal_paid_sum", {"deal_id": 5, "field": "UF_CRM_PAID"}, False, deal("NEW"),
     None, (None, {"why": "nothing to set"})),
    ("deal reopen: still where we put it", "deal_reopen", {"deal_id": 5, "moved_stage": "WON", "to_stage": "NEW"},
     False, deal("WON"), None, (("crm.deal.update", {"id": 5, "fields": {"STAGE_ID": "NEW"}}),
                                {"from_stage": "WON", "to_stage": "NEW"})),
    ("deal reopen: a person moved it since", "deal_reopen", {"deal_id": 5, "moved_stage": "WON", "to_stage": "NEW"},
     False, deal("LOSE"), None, (None, {"why": "deal was moved by a person since; left as it is"})),
    ("timeline: a comment with its reference", "timeline", {"deal_id": 5, "lang": "en", "comment": "Paid"}, False,
     {}, None, (("crm.timeline.comment.add", {"fields": {
         "ENTITY_ID": 5, "ENTITY_TYPE": "deal", "COMMENT": "Paid\n(payment No. 12 in the app, record 3/7)"}}), {})),
    ("timeline: found after an interrupted attempt", "timeline", {"deal_id": 5, "comment": "Paid"}, True,
     {"tl5": [{"COMMENT": "Paid\n(платёж № 12 в приложении, запись 3/7)"}]}, None,
     (None, {"why": "already on the timeline"})),
    ("notify: replaced, not duplicated, by its tag", "notify", {"user_id": 2, "message": "hi"}, False, {}, None,
     (("im.notify.system.add", {"USER_ID": 2, "MESSAGE": "hi", "TAG": outbox.tag_for(TL_KEY)}), {})),
    ("task: on the deal", "task", {"responsible_id": 2, "title": "Underpaid", "description": "d", "deal_id": 5},
     False, {}, None, (("tasks.task.add", {"fields": {
         "TITLE": f"Underpaid ({outbox.marker_for(TL_KEY)})", "RESPONSIBLE_ID": 2, "DESCRIPTION": "d",
         "UF_CRM_TASK": ["D_5"]}}), {})),
    ("task: found after an interrupted attempt", "task",
     {"responsible_id": 2, "title": "Underpaid", "description": "d", "deal_id": None}, True,
     {"task41": {"tasks": [{"ID": "9"}]}}, None, (None, {"why": "task already exists"})),
    ("trigger: on the deal", "trigger", {"code": "b24app_paid", "owner_type_id": 2, "owner_id": 5}, False, {}, None,
     (("crm.automation.trigger.execute", {"CODE": "b24app_paid", "OWNER_TYPE_ID": 2, "OWNER_ID": 5}), {})),
    ("trigger: never fired twice", "trigger", {"code": "b24app_paid", "owner_type_id": 2, "owner_id": 5}, True, {},
     None, (None, {"why": "not re-fired after an interrupted attempt"})),
    ("a kind this app does not know", "fax", {"to": "+7"}, False, {}, None, (None, {"why": "unknown kind fax"})),
    # payment records (#15): add + sum and marker + pay, named after the item (i41), for one batch
    ("payment record: add, sum and marker, pay", "payment_record", REC, False, deal("NEW", CURRENCY_ID="RUB"), None,
     ({"i41_add": ("crm.item.payment.add", {"entityTypeId": 2, "entityId": 5}),
       "i41_sum": ("sale.payment.update", {"id": "$result[i41_add]",
                                           "fields": {"sum": Decimal("1500.00"), "xmlId": MARK}}),
       "i41_pay": ("crm.item.payment.pay", {"id": "$result[i41_sum][payment][id]"})}, {})),
    ("payment record: deal deleted", "payment_record", REC, False, {"deal5": None}, None,
     (None, {"why": "deal deleted"})),
    ("payment record: the deal is in another currency", "payment_record", REC, False,
     deal("NEW", CURRENCY_ID="USD"), None, (None, {"why": "no payment record: the deal is in USD, the payment in RUB"})),
    ("payment record: interrupted, none made", "payment_record", REC, True,
     {**deal("NEW", CURRENCY_ID="RUB"), "rec41_deal": [REC_ROW(8, "Y", "900")], "rec41_mark": {"payments": []}},
     None, (outbox._plan(row("payment_record", REC, key=TL_KEY), False, deal("NEW", CURRENCY_ID="RUB"))[0], {})),
    ("payment record: interrupted, found complete", "payment_record", REC, True,
     {**deal("NEW"), "rec41_deal": [REC_ROW(9, "Y", "1500")], "rec41_mark": MARKED(9)}, None,
     (None, {"why": "payment record made by an interrupted attempt", "payment_id": 9, "found": True})),
    ("payment record: interrupted, found half-made", "payment_record", REC, True,
     {**deal("NEW"), "rec41_deal": [REC_ROW(9, "N", "1500")], "rec41_mark": MARKED(9)}, None,
     ({"i41_pay": ("crm.item.payment.pay", {"id": 9})}, {"payment_id": 9, "found": True})),
    ("payment record: interrupted, found twice", "payment_record", REC, True,
     {**deal("NEW"), "rec41_deal": [REC_ROW(9, "Y", "1500"), REC_ROW(10, "Y", "1500")],
      "rec41_mark": MARKED(9, 10)}, None,
     ({"i41_dup10_unpay": ("crm.item.payment.unpay", {"id": 10}),
       "i41_dup10_delete": ("crm.item.payment.delete", {"id": 10})}, {"payment_id": 9, "found": True})),
    ("payment record undo: unpay and delete", "payment_record_undo", {"deal_id": 5, "payment_id": 9, "marker": MARK},
     False, {}, None, ({"i41_unpay": ("crm.item.payment.unpay", {"id": 9}),
                        "i41_delete": ("crm.item.payment.delete", {"id": 9})}, {"payment_id": 9})),
    ("payment record undo: interrupted, already gone", "payment_record_undo",
     {"deal_id": 5, "payment_id": 9, "marker": MARK}, True, {"rec41_deal": [], "rec41_mark": {"payments": []}}, None,
     (None, {"why": "payment record already removed", "payment_id": 9})),
    ("payment record undo: interrupted, unpaid, not deleted", "payment_record_undo",
     {"deal_id": 5, "payment_id": 9, "marker": MARK}, True, {"rec41_deal": [REC_ROW(9, "N", "1500")]}, None,
     ({"i41_delete": ("crm.item.payment.delete", {"id": 9})}, {"payment_id": 9})),
]


@pytest.mark.parametrize(("kind", "payload", "uncertain", "reads", "result", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(kind, payload, uncertain, reads, result, expected):
    assert outbox._plan(row(kind, payload, key=TL_KEY, result=result), uncertain, reads) == expected


def test_every_kind_has_a_row_in_the_table():
    assert {c[1] for c in CASES} >= {k.value for k in EffectKind}


# Payloads exactly as the code before b24app/pipeline/effects.py wrote them (reconcile, credit, paidfield, notices, undo;
# the outbox adds `value` to deal_paid_sum when it sends): rows already stored must load and be written back
# byte for byte.
STORED = [
    ("invoice_paid", {"invoice_id": 7}),
    ("invoice_partial", {"invoice_id": 7, "stages": {"2": "DT31_2:PP"}}),
    ("invoice_reopen", {"invoice_id": 7, "paid_stage": "DT31_2:P", "to_stage": "DT31_2:N"}),
    ("deal_stage", {"deal_id": 5, "stages": {"0": "WON", "1": None}, "default": "success"}),   # reconcile
    ("deal_stage", {"deal_id": 5, "stages": {"0": "WON"}}),                                    # credit
    ("deal_reopen", {"deal_id": 5, "moved_stage": "WON", "to_stage": "NEW"}),
    ("deal_paid_sum", {"deal_id": 5, "field": "UF_CRM_PAID"}),
    ("deal_paid_sum", {"deal_id": 5, "field": "UF_CRM_PAID", "value": "1500.00|RUB"}),
    ("timeline", {"deal_id": 5, "lang": "ru", "comment": "Оплачен счёт"}),                    # reconcile
    ("timeline", {"deal_id": 5, "comment": "Зачтено"}),                                      # credit
    ("notify", {"user_id": 2, "message": "Счёт оплачен"}),
    ("task", {"responsible_id": 2, "title": "t", "description": "d", "deal_id": None}),
    ("trigger", {"code": "b24app_payment_received", "owner_type_id": 2, "owner_id": 5}),
    ("trigger", {"code": "b24app_payment_received", "owner_id": 5}),   # an old test row without the type
    ("payment_record", {"deal_id": 5, "invoice_id": 7, "amount": "1500.00", "currency": "RUB",
                        "marker": "b24app:0123456789abcdef01234567", "ref": "op12:d3:inv7"}),
    ("payment_record_undo", {"deal_id": 5, "payment_id": 9, "marker": "b24app:0123456789abcdef01234567"}),
]


@pytest.mark.parametrize(("kind", "payload"), STORED, ids=[f"{k}-{n}" for n, (k, _) in enumerate(STORED)])
def test_stored_payloads_load_and_are_written_back_byte_for_byte(kind, payload):
    effect = load(kind, payload)
    assert type(effect) is TYPES[EffectKind(kind)] and effect.kind == kind
    if "owner_type_id" not in payload and kind == "trigger":
        assert effect.owner_type_id == EntityType.DEAL
        return
    assert json.dumps(effect.to_payload(), ensure_ascii=False) == json.dumps(payload, ensure_ascii=False)


def test_every_kind_has_a_stored_payload_and_kinds_keep_their_strings():
    assert {k for k, _ in STORED} == set(TYPES) == set(EffectKind)
    assert EffectKind.INVOICE_PAID == "invoice_paid" and f"{EffectKind.DEAL_PAID_SUM}" == "deal_paid_sum"


def test_what_each_kind_reads_replaces_the_outbox_kind_lists():
    def having(prop):
        return {k.value for k in EffectKind if getattr(k, prop)}
    assert having("reads_invoice") == {"invoice_paid", "invoice_reopen", "invoice_partial"}
    assert having("reads_deal") == {"deal_stage", "deal_reopen", "deal_paid_sum", "payment_record"}
    assert having("moves_deal") == {"deal_stage", "deal_reopen"}
    assert having("moves_money_state") == {"invoice_paid", "deal_stage", "invoice_partial", "payment_record"}
    assert having("irreversible") == {"notify", "timeline", "task", "trigger"}
    assert having("records_payment") == {"payment_record", "payment_record_undo"}
    assert set(outbox._MONEY_FIRST) == having("reads_invoice") | having("moves_deal")
    assert set(outbox._RECORDS) == having("records_payment")


def test_undo_of_a_recorded_stage_move():
    assert undo_of("invoice_partial", {"invoice_id": 7}, {"from_stage": "A", "to_stage": "B"}).to_payload() == {
        "invoice_id": 7, "paid_stage": "B", "to_stage": "A"}
    assert undo_of("deal_stage", {"deal_id": 5, "stages": {}}, {"from_stage": "NEW", "to_stage": "WON"}).to_payload() \
        == {"deal_id": 5, "moved_stage": "WON", "to_stage": "NEW"}
    assert undo_of("invoice_paid", {"invoice_id": 7}, {"why": "invoice already in final stage P",
                                                       "from_stage": None}) is None
    assert undo_of("notify", {"user_id": 2, "message": "m"}, {"from_stage": "x"}) is None
    assert undo_of("payment_record", REC, {"payment_id": 9}).to_payload() == {
        "deal_id": 5, "payment_id": 9, "marker": MARK}
    assert undo_of("payment_record", REC, {"why": "deal deleted"}) is None  # nothing made, nothing to undo


def _items(*sizes_and_kinds):
    """Planned items for outbox._chunks: (number of commands, kind) each, keyed i1, i2, ..."""
    commands, plan = {}, {}
    for n, (size, kind) in enumerate(sizes_and_kinds, 1):
        commands[f"i{n}"] = {f"i{n}_{c}": ("m", {}) for c in range(size)}
        plan[f"i{n}"] = (row(kind, {}), {})
    return commands, plan


def test_a_payment_records_commands_stay_in_one_batch():
    # 48 single commands, then a record's 3: 51 would split the record across two requests, where its
    # `$result[...]` references could not reach (batch.md); it goes whole into the next batch
    commands, plan = _items(*[(1, "notify")] * 48, (3, "payment_record"), (1, "notify"))
    chunks = outbox._chunks(commands, plan)
    assert [sum(len(commands[k]) for k in c) for c in chunks] == [48, 4]
    assert chunks[1][0] == "i49"
    # with a deal move in the batch, one command is kept for the read after it
    commands, plan = _items((1, "deal_stage"), *[(1, "notify")] * 46, (3, "payment_record"))
    assert [len(c) for c in outbox._chunks(commands, plan)] == [47, 1]
    commands, plan = _items(*[(3, "payment_record")] * 17)   # 51 commands: 16 records, then 1
    assert [len(c) for c in outbox._chunks(commands, plan)] == [16, 1]


def test_unknown_kinds_and_loose_strings_are_refused():
    with pytest.raises(UnknownEffect):
        load("fax", {})
    with pytest.raises(TypeError):
        queue.enqueue(None, 1, "k", "notify", {"user_id": 2, "message": "m"})
    assert Notify(2, "m").kind == "notify" and InvoicePaid(7).to_payload() == {"invoice_id": 7}


def test_one_definition_of_the_entity_type_ids():
    assert (INVOICE_TYPE, DEAL_TYPE) == (31, 2) and json.dumps({"t": EntityType.INVOICE}) == '{"t": 31}'
