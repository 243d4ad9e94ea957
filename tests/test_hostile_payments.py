"""Hostile payments from the bank: script, BB-code, RTL and control characters in the purpose and payer name,
and amounts with a wrong sign, precision or currency. Text is stored as received and sent escaped; a bad
amount is never applied. Everything runs through the real bank statement, the worker and Bitrix24."""
from __future__ import annotations

import logging
import unicodedata
from decimal import Decimal

import pytest
from sqlalchemy import select

from b24app.pipeline import sync
from b24app.storage.models import Allocation, BankAccount, Invoice, Operation, OutboxItem, Portal
from b24app.pipeline.worker import Worker

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
OPEN, PAID = "DT31_2:N", "DT31_2:P"
BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}


def sync_now(stack, rounds: int = 20) -> Portal:
    with stack.ctx.db.session() as s:
        portal = s.scalar(select(Portal).where(Portal.member_id == stack.member_id()))
    sync.request_sync(stack.ctx, portal.id)
    worker = Worker(stack.ctx, concurrency=1)
    for _ in range(rounds):
        if not worker.run_once():
            break
    return portal


def stage(stack, invoice_id) -> str:
    return stack.rest("crm.item.get", {"entityTypeId": 31, "id": invoice_id})["result"]["item"]["stageId"]


def tamper(stack, operation_id: str, **fields) -> None:
    """Make the bank sandbox serve this operation with other field values (what a buggy bank might send)."""
    bank = stack.bank_server.app.extensions["bank_sandbox"]
    with bank.lock:
        bank.operations[operation_id].data.update(fields)


def texts_sent(stack) -> list[str]:
    """Every text the app put into Bitrix24: chat notifications, timeline comments, tasks."""
    state = stack.portal_state()
    out = [n["message"] for n in state["notifications"]]
    out += [c["COMMENT"] for c in state["timeline_comments"]]
    for task in state["tasks"]:
        out += [str(task.get(k, "")) for k in ("TITLE", "title", "DESCRIPTION", "description")]
    return [t for t in out if t]


def frame_token(stack, placement="DEFAULT", entity=None) -> str:
    from b24app.web.security import Frame, issue_frame_token

    with stack.flask_app.test_request_context():
        return issue_frame_token(Frame(stack.member_id(), 1, True, placement, entity, "ru"))


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def logs():
    handler = Capture()
    logger = logging.getLogger("b24app")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(old)


# -- text ------------------------------------------------------------------------------------------------------
PURPOSE = ("Оплата по счету № 1207 <script>alert('x')</script> [url=https://evil.example]жми[/url] "
           "[b]срочно[/b] \"кавычки\" & амперсанд")
PAYER = "<img src=x onerror=alert(1)> [url=javascript:alert(1)]ООО[/url] «Вектор»"


def test_script_and_bb_code_are_stored_intact_and_sent_escaped(linked):
    d = linked.deals[0]  # 1207, 12 000.00, manager 2
    linked.pay(d["amount"], PURPOSE, payerInn=d["inn"], payerName=PAYER)
    portal = sync_now(linked)
    with linked.ctx.db.session() as s:
        [op] = s.scalars(select(Operation).where(Operation.portal_id == portal.id))
    assert (op.purpose, op.payer_name, op.state) == (PURPOSE, PAYER, "matched")
    assert stage(linked, d["invoice_id"]) == PAID
    sent = texts_sent(linked)
    assert sent, "the payment should have been announced in Bitrix24"
    for text in sent:
        low = text.lower()
        for tag in ("[url", "[/url]", "[b]", "[/b]"):
            assert tag not in low, (tag, text)
    [comment] = [c["COMMENT"] for c in linked.portal_state()["timeline_comments"]]
    assert "(url=https://evil.example)жми(/url)" in comment and "(b)срочно(/b)" in comment
    assert "(url=javascript:alert(1))ООО(/url)" in comment
    # HTML pages: the admin history and the deal tab show the text, escaped.
    client = linked.flask_app.test_client()
    history = client.get("/app/api/history", headers={"X-Frame-Token": frame_token(linked)})
    tab = client.get(f"/placement/api/deal/{d['deal_id']}",
                     headers={"X-Frame-Token": frame_token(linked, "CRM_DEAL_DETAIL_TAB", d["deal_id"])})
    assert history.status_code == tab.status_code == 200
    for html in (history.get_json()["html"], tab.get_json()["html"]):
        assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(" in history.get_json()["html"]
    assert "&lt;img src=x onerror=alert(1)&gt;" in history.get_json()["html"]


def test_bb_code_in_an_invoice_number_never_reaches_bitrix24_texts(linked):
    """Issue #11 item 7: values from the CRM (the invoice number) were put into chat and timeline texts as is."""
    from b24app.pipeline.invoices import refresh_all

    evil = "[URL=https://evil.example]1207[/URL]"
    d = linked.deals[0]  # 12 000.00, manager 2
    linked.rest("crm.item.update", {"entityTypeId": 31, "id": d["invoice_id"], "fields": {"accountNumber": evil}})
    portal = linked.ctx.portals.find(linked.member_id())
    refresh_all(linked.ctx, portal)
    linked.pay(d["amount"], "Оплата по счету", payerInn=d["inn"])
    sync_now(linked)
    with linked.ctx.db.session() as s:
        [op] = s.scalars(select(Operation).where(Operation.portal_id == portal.id))
        assert s.scalar(select(Invoice.number).where(Invoice.b24_id == d["invoice_id"])) == evil
    if op.state != "matched":  # no number in the purpose: an administrator assigns it from the review queue
        r = linked.flask_app.test_client().post("/app/api/assign", json={"operation": op.id, "invoice": d["invoice_id"]},
                                                headers={"X-Frame-Token": frame_token(linked)})
        assert r.status_code == 200, r.get_json()
        sync_now(linked)
    assert stage(linked, d["invoice_id"]) == PAID
    state = linked.portal_state()
    notices = [n["message"] for n in state["notifications"]]
    comments = [c["COMMENT"] for c in state["timeline_comments"]]
    assert notices and comments
    for text in notices + comments:
        assert "[url" not in text.lower() and "[/url]" not in text.lower(), text
    assert any("(URL=https://evil.example)1207(/URL)" in t for t in notices)
    assert any("(URL=https://evil.example)1207(/URL)" in t for t in comments)


def test_bidi_and_control_characters_never_reach_bitrix24_texts(linked):
    d = linked.deals[3]  # 1208, 3 000.00
    purpose = "Оплата по счету № 1208 \u202eлипмоК\u202c \u2066x\u2069 звонок\x07 \x1b[31mкрасный\x1b[0m"
    payer = "ООО \u202bВектор\u202c\x08"
    linked.pay(d["amount"], purpose, payerInn=d["inn"], payerName=payer)
    portal = sync_now(linked)
    with linked.ctx.db.session() as s:
        [op] = s.scalars(select(Operation).where(Operation.portal_id == portal.id))
    assert (op.purpose, op.payer_name) == (purpose, payer)  # stored as the bank sent it
    assert stage(linked, d["invoice_id"]) == PAID
    sent = texts_sent(linked)
    assert sent
    for text in sent:
        bad = [hex(ord(c)) for c in text if c in BIDI or (unicodedata.category(c) == "Cc" and c != "\n")]
        assert bad == [], (bad, text)


def test_nul_in_purpose_does_not_stop_the_statement(linked):
    d = linked.deals[0]
    linked.pay(d["amount"], "Оплата по счету № 1207 \x00 с нулём", payerInn=d["inn"], payerName="ООО\x00Вектор")
    portal = sync_now(linked)
    with linked.ctx.db.session() as s:
        ops = list(s.scalars(select(Operation).where(Operation.portal_id == portal.id)))
    assert len(ops) == 1
    kept = ops[0].purpose
    assert kept.replace("\ufffd", "\x00") == "Оплата по счету № 1207 \x00 с нулём" or kept == "Оплата по счету № 1207  с нулём"
    assert stage(linked, d["invoice_id"]) == PAID


# -- amounts -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, field", [
    ({"accountAmount": -12000, "operationAmount": -12000}, "accountAmount"),
    ({"accountAmount": "12000.001", "operationAmount": "12000.001"}, "accountAmount"),
    ({"accountAmount": "NaN", "operationAmount": "NaN"}, "accountAmount"),
    ({"accountAmount": "Infinity"}, "accountAmount"),
    ({"accountAmount": "12 000,00"}, "accountAmount"),
    ({"accountAmount": True}, "accountAmount"),
    ({"accountAmount": None, "operationAmount": -1}, "operationAmount"),
    ({"typeOfOperation": "Refund"}, "typeOfOperation"),
], ids=["negative", "three-decimals", "nan", "infinity", "spaces-and-comma", "boolean", "negative-fallback",
        "unknown-direction"])
def test_malformed_amounts_from_the_bank_are_never_applied(linked, logs, fields, field):
    d = linked.deals[0]
    op = linked.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"])
    tamper(linked, op["operationId"], **fields)
    portal = sync_now(linked)
    with linked.ctx.db.session() as s:
        stored = list(s.scalars(select(Operation).where(Operation.portal_id == portal.id)))
        assert s.scalar(select(Allocation)) is None and s.scalar(select(OutboxItem)) is None
        errors = [a.last_error for a in s.scalars(select(BankAccount)) if a.last_error]
    assert stored == [], "a malformed operation must not be stored"
    assert stage(linked, d["invoice_id"]) == OPEN
    assert linked.portal_state()["notifications"] == []
    # the refusal is explained: the account says which field, and a warning was logged
    assert errors and field in errors[0], errors
    assert any(r.levelno >= logging.WARNING and "MalformedOperation" in str(getattr(r, "error", "")) for r in logs)


@pytest.mark.parametrize("fields, state", [
    ({"accountCurrencyDigitalCode": "840", "operationCurrencyDigitalCode": "840"}, ("review", "unmatched")),
    ({"accountCurrencyDigitalCode": "978"}, ("review", "unmatched")),
    ({"typeOfOperation": "Debit"}, ("ignored",)),
], ids=["usd-on-a-rub-invoice", "eur-on-a-rub-invoice", "debit"])
def test_wrong_currency_or_direction_is_stored_but_never_applied(linked, fields, state):
    d = linked.deals[0]
    op = linked.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"])
    tamper(linked, op["operationId"], **fields)
    portal = sync_now(linked)
    with linked.ctx.db.session() as s:
        [row] = s.scalars(select(Operation).where(Operation.portal_id == portal.id))
        assert s.scalar(select(Allocation)) is None
        assert not [i for i in s.scalars(select(OutboxItem)) if i.kind in ("invoice_paid", "timeline", "trigger")]
    assert row.state in state and row.amount == Decimal(d["amount"])
    assert stage(linked, d["invoice_id"]) == OPEN


def test_one_malformed_operation_does_not_hold_back_the_rest_of_the_statement(linked):
    d_bad, d_good = linked.deals[3], linked.deals[0]
    bad = linked.pay(d_bad["amount"], f"Оплата по счету № {d_bad['number']}", payerInn=d_bad["inn"])
    tamper(linked, bad["operationId"], accountAmount=-3000, operationAmount=-3000)
    linked.pay(d_good["amount"], f"Оплата по счету № {d_good['number']}", payerInn=d_good["inn"])
    sync_now(linked)
    assert stage(linked, d_good["invoice_id"]) == PAID
    assert stage(linked, d_bad["invoice_id"]) == OPEN
    with linked.ctx.db.session() as s:
        ops = list(s.scalars(select(Operation)))
    assert [o.amount for o in ops] == [Decimal(d_good["amount"])]


def test_out_of_range_operations_are_quarantined_and_the_statement_goes_on(linked):
    """Issue #11 item 9: an amount of 10^16 or an operationId over 128 characters crashed the account's sync on
    PostgreSQL on every poll (SQLite stored the amount as a float). Now they are kept raw, never matched."""
    from b24app.storage.models import QuarantinedOperation

    d = linked.deals[0]
    huge = linked.pay("10000000000000000.00", f"Оплата по счету № {d['number']}", payerInn=d["inn"])
    long_id = linked.pay("100.00", "Перевод", operationId="x" * 200, payerInn=d["inn"])
    linked.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"])
    portal = sync_now(linked)
    assert stage(linked, d["invoice_id"]) == PAID

    def stored():
        with linked.ctx.db.session() as s:
            ops = list(s.scalars(select(Operation).where(Operation.portal_id == portal.id)))
            quarantined = list(s.scalars(select(QuarantinedOperation).order_by(QuarantinedOperation.id)))
            accounts = [a for a in s.scalars(select(BankAccount)) if a.watched]
        return ops, quarantined, accounts

    ops, quarantined, accounts = stored()
    assert [o.amount for o in ops] == [Decimal(d["amount"])]
    assert sorted(q.operation_id for q in quarantined) == sorted([huge["operationId"], "x" * 128])
    by_id = {q.operation_id: q for q in quarantined}
    assert "accountAmount" in by_id[huge["operationId"]].reason and "operationId" in by_id["x" * 128].reason
    assert '"operationId": "' + "x" * 200 + '"' in by_id["x" * 128].raw  # the raw item, untruncated
    assert long_id["operationId"] == "x" * 200
    cursor = {a.id: a.synced_until for a in accounts}
    assert all(cursor.values()) and all(a.last_synced_at for a in accounts)

    # Polling again: nothing duplicated, the quarantined items are only seen again; the cursor moves on.
    portal = sync_now(linked)
    ops2, quarantined2, accounts2 = stored()
    assert len(ops2) == 1 and [q.id for q in quarantined2] == [q.id for q in quarantined]
    assert all(q.seen_count >= 2 for q in quarantined2)
    assert all(a.synced_until > cursor[a.id] for a in accounts2)
    # The admin page says so in the bank's health.
    bank = linked.flask_app.test_client().get("/app/api/bank", headers={"X-Frame-Token": frame_token(linked)})
    assert 'id="bank-quarantined" data-count="2"' in bank.get_json()["html"]
