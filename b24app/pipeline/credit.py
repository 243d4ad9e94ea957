"""The client's credit by payer INN (issue #15): the surplus of an overpayment, or a payment a person kept whole as
credit, and its application to the same payer's open invoices, oldest first.

A ledger (`models.Credit`): + `surplus` / `kept`, − `applied`; the balance is the sum of rows not revoked. Each
application is a decision of its own (its `reasons` say why) with its own Bitrix24 effects (outbox keys
`credit<id>:…`), and can be undone alone. The admin chooses: credit waits for a person (default) or is applied
automatically (`Rules.credit_auto_apply`).
"""
from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from sqlalchemy import func, select

from . import paidfield, paymentrecords
from b24app.domain.formatting import format_money
from b24app.domain.matching import Outcome, settle
from b24app.storage.models import Allocation, Credit, Invoice, Operation, OutboxItem, Portal
from .notices import text
from .effects import DealStage, EffectKind, InvoicePaid, InvoicePartial, Notify, Timeline, undo_of, undo_suffix
from .errors import ReconcileError
from .queue import enqueue
from .rules import load_rules

ZERO = Decimal("0.00")
# Effects of an application that move money state in Bitrix24 (undo moves them back) / that cannot be taken back.
_MONEY_STATE = tuple(k for k in EffectKind if k.moves_money_state)
_IRREVERSIBLE = tuple(k for k in EffectKind if k.irreversible)


class CreditError(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def balances(s, portal_id: int, inns=None) -> dict[tuple[str, str], Decimal]:
    """(INN, currency) -> credit left, for every INN with a row (or only `inns`)."""
    q = (select(Credit.inn, Credit.currency, func.sum(Credit.amount))
         .where(Credit.portal_id == portal_id, Credit.revoked_at.is_(None)).group_by(Credit.inn, Credit.currency))
    if inns is not None:
        q = q.where(Credit.inn.in_(list(inns) or [""]))
    return {(inn, cur): Decimal(total) for inn, cur, total in s.execute(q)}


def applied_by_invoice(s, portal_id: int, ids=None) -> dict[int, Decimal]:
    """Credit put on each invoice (positive amounts), for the invoices' paid totals."""
    q = (select(Credit.invoice_b24_id, func.sum(-Credit.amount))
         .where(Credit.portal_id == portal_id, Credit.kind == "applied", Credit.revoked_at.is_(None))
         .group_by(Credit.invoice_b24_id))
    if ids is not None:
        q = q.where(Credit.invoice_b24_id.in_(list(ids) or [-1]))
    return {int(i): Decimal(v) for i, v in s.execute(q)}


def paid_by_invoice(s, portal_id: int) -> dict[int, Decimal]:
    """Money on each invoice of the portal: its live allocations plus the client's credit put on it."""
    rows = s.execute(select(Allocation.invoice_b24_id, func.sum(Allocation.amount))
                     .where(Allocation.portal_id == portal_id, Allocation.revoked_at.is_(None))
                     .group_by(Allocation.invoice_b24_id))
    paid = {int(i): Decimal(v) for i, v in rows}
    for inv_id, put in applied_by_invoice(s, portal_id).items():
        paid[inv_id] = paid.get(inv_id, Decimal("0")) + put
    return paid


def keep_surplus(s, ctx, portal: Portal, op: Operation, d, allocs) -> None:
    """Inside the decision's transaction: the surplus of each overpaid allocation becomes the payer's credit.
    Without a payer INN there is nobody to keep it for: nothing kept."""
    if not op.payer_inn:
        return
    for inv_id, outcome, _amount, _remaining, excess in allocs:
        if outcome == "overpaid" and Decimal(excess) > 0:
            s.add(Credit(portal_id=portal.id, inn=op.payer_inn, currency=op.currency, amount=Decimal(excess),
                         kind="surplus", operation_pk=op.id, decision_id=d.id, created_at=d.created_at,
                         reasons=[{"code": "credit_surplus", "params": {"invoice_id": inv_id}}]))
    # The manager hears of it in the overpayment message itself (notices "overpaid_credit", reconcile._effects).


def keep_payment(s, op: Operation, d) -> None:
    """A person closed a review item as the client's credit: the whole payment is kept."""
    s.add(Credit(portal_id=op.portal_id, inn=op.payer_inn, currency=op.currency, amount=op.amount, kind="kept",
                 operation_pk=op.id, decision_id=d.id, created_at=d.created_at, actor_user_id=d.actor_user_id,
                 reasons=[{"code": "credit_kept", "params": {}}]))


def revoke_for(s, op: Operation, decision_ids, now) -> None:
    """Undo of a decision that kept credit: its rows are revoked, unless that credit is already on an invoice
    (then `credit_in_use`: undo those applications first, nothing is changed)."""
    rows = list(s.scalars(select(Credit).where(Credit.operation_pk == op.id, Credit.kind.in_(("surplus", "kept")),
                                               Credit.decision_id.in_(list(decision_ids) or [-1]),
                                               Credit.revoked_at.is_(None))))
    if not rows:
        return
    left = balances(s, op.portal_id, [op.payer_inn]).get((rows[0].inn, rows[0].currency), ZERO)
    if left - sum((r.amount for r in rows), ZERO) < 0:
        raise ReconcileError("credit_in_use")
    for r in rows:
        r.revoked_at = now


def apply_credit(ctx, portal_id: int, inn: str, currency: str, user_id: int | None = None) -> list[int]:
    """Put the INN's credit on its open invoices in that currency, oldest first, until it runs out; returns the
    new application rows' ids (none: no credit or no open invoice). Serialised per portal by a row lock."""
    made: list[int] = []
    with ctx.db.session() as s:
        portal = s.scalar(select(Portal).where(Portal.id == portal_id).with_for_update())
        if portal is None:
            raise CreditError("not_found")
        left = balances(s, portal_id, [inn]).get((inn, currency), ZERO)
        if left <= 0:
            return made
        source = s.scalar(select(Credit.operation_pk).where(  # the oldest credit still standing funds it
            Credit.portal_id == portal_id, Credit.inn == inn, Credit.currency == currency, Credit.amount > 0,
            Credit.revoked_at.is_(None)).order_by(Credit.id))
        invoices = list(s.scalars(select(Invoice).where(
            Invoice.portal_id == portal_id, Invoice.payer_inn == inn, Invoice.currency == currency,
            Invoice.stage_semantics.is_(None)).order_by(Invoice.created.is_(None), Invoice.created, Invoice.b24_id)))
        paid = paid_by_invoice(s, portal_id)
        rules = load_rules(portal.settings)
        lang = portal.lang or "ru"
        now = ctx.clock.now()
        for inv in invoices:
            if left <= 0:
                break
            due = inv.amount - paid.get(inv.b24_id, ZERO)
            if due <= 0:
                continue
            put = min(left, due)
            left -= put
            outcome, remaining, _surplus = settle(put, due)
            params = {"inn": inn, "invoice": inv.number or str(inv.b24_id), "invoice_id": inv.b24_id,
                      "amount": str(put), "currency": currency, "remaining": str(remaining), "left": str(left),
                      "user_id": user_id}
            row = Credit(portal_id=portal_id, inn=inn, currency=currency, amount=-put, kind="applied",
                         operation_pk=source, invoice_b24_id=inv.b24_id, actor_user_id=user_id, created_at=now,
                         reasons=[{"code": "credit_applied" if user_id is None else "credit_applied_by",
                                   "params": params}])
            s.add(row)
            s.flush()
            made.append(row.id)
            _effects(s, portal_id, row, inv, put, outcome, remaining, left, rules, lang, source, now)
        if made:
            portal.work_due_at = now
    return made


def _effects(s, portal_id, row: Credit, inv: Invoice, put, outcome: Outcome, remaining, left, rules, lang, op_pk,
             now) -> None:
    key = f"credit{row.id}:inv{inv.b24_id}"
    fmt = lambda v: format_money(v, row.currency, lang)  # noqa: E731
    number = inv.number or str(inv.b24_id)
    if outcome is Outcome.PAID:
        if rules.paid_invoice_stage:
            enqueue(s, portal_id, f"{key}:invoice_paid", InvoicePaid(inv.b24_id), op_pk, now=now)
        if rules.paid_deal_stage and inv.deal_id:
            enqueue(s, portal_id, f"{key}:deal_stage", DealStage(inv.deal_id, rules.paid_deal_stage), op_pk, now=now)
    elif rules.partial_invoice_stage:
        enqueue(s, portal_id, f"{key}:invoice_partial", InvoicePartial(inv.b24_id, rules.partial_invoice_stage),
                op_pk, now=now)
    paymentrecords.enqueue_record(s, portal_id, rules, inv.deal_id, inv.b24_id, put, row.currency, key, op_pk, now,
                                  comment=text("record_credit", lang, number=number, inn=row.inn, amount=fmt(put),
                                               remaining=fmt(remaining)))
    paidfield.enqueue_sum(s, portal_id, rules, inv.deal_id, key, op_pk, now)
    values = dict(inn=row.inn, number=number, amount=fmt(put), remaining=fmt(remaining), balance=fmt(left))
    if inv.deal_id:
        enqueue(s, portal_id, f"{key}:timeline", Timeline(inv.deal_id, text("timeline_credit", lang, **values)),
                op_pk, now=now)
    if inv.assigned_by_id:
        enqueue(s, portal_id, f"{key}:notify", Notify(inv.assigned_by_id, text("credit_applied", lang, **values)),
                op_pk, now=now)


def apply_due(ctx, portal: Portal) -> int:
    """With `credit_auto_apply` on: every INN's credit goes onto its open invoices; returns how many rows."""
    with ctx.db.session() as s:
        due = [k for k, v in balances(s, portal.id).items() if v > 0]
        if not due:
            return 0
        have = set(s.execute(select(Invoice.payer_inn, Invoice.currency).distinct().where(
            Invoice.portal_id == portal.id, Invoice.stage_semantics.is_(None),
            Invoice.payer_inn.in_([inn for inn, _ in due]))).all())
    return sum(len(apply_credit(ctx, portal.id, inn, cur)) for inn, cur in due if (inn, cur) in have)


def undo_credit(ctx, portal_id: int, credit_id: int, user_id: int) -> list[str]:
    """Take one application back: the row revoked (the credit is the client's again), effects not sent yet
    cancelled, the invoice and the deal moved back where they still stand as we left them. Returns what was
    sent already and cannot be taken back (chat, comment)."""
    with ctx.db.session() as s:
        row = s.get(Credit, credit_id)
        if row is None or row.portal_id != portal_id or row.kind != "applied":
            raise CreditError("not_found")
        if row.revoked_at is not None:
            raise CreditError("nothing_to_undo")
        items = list(s.scalars(select(OutboxItem).where(OutboxItem.portal_id == portal_id,
                                                        OutboxItem.key.startswith(f"credit{row.id}:"))))
        if any(i.status == "sending" and i.kind in _MONEY_STATE for i in items):
            raise CreditError("effects_in_flight")
        now = ctx.clock.now()
        not_reverted = []
        for item in items:
            result = item.result or {}
            if item.status == "pending":
                item.status, item.result, item.done_at = "skipped", {"why": "cancelled by undo"}, now
            elif item.status == "sending" or (item.status == "done" and item.kind in _IRREVERSIBLE):
                not_reverted.append(item.kind)
            elif (back := undo_of(item.kind, item.payload, result)) is not None:
                enqueue(s, portal_id, f"undo:credit{row.id}:{undo_suffix(back)}", back, row.operation_pk, now=now)
        row.revoked_at = now
        row.reasons = list(row.reasons or []) + [{"code": "credit_undone", "params": {"user_id": user_id}}]
        deal_id = s.scalar(select(Invoice.deal_id).where(Invoice.portal_id == portal_id,
                                                         Invoice.b24_id == row.invoice_b24_id))
        portal = s.get(Portal, portal_id)
        paidfield.enqueue_sum(s, portal_id, load_rules(portal.settings), deal_id, f"undo:credit{row.id}",
                              row.operation_pk, now)
        s.execute(Portal.__table__.update().where(Portal.id == portal_id).values(work_due_at=now))
        return sorted(set(not_reverted))


def credit_lines(s, portal_id: int, limit: int = 200) -> list[dict]:
    """For the admin page: each INN's credit left, and the latest rows (applications with their undo)."""
    left = balances(s, portal_id)
    rows = list(s.scalars(select(Credit).where(Credit.portal_id == portal_id).order_by(Credit.id.desc()).limit(limit)))
    names = dict(s.execute(select(Operation.payer_inn, Operation.payer_name).where(
        Operation.portal_id == portal_id, Operation.payer_inn.in_([inn for inn, _ in left] or [""]))).all())
    by_inn = defaultdict(list)
    for r in rows:
        by_inn[(r.inn, r.currency)].append(r)
    return [{"inn": inn, "currency": cur, "balance": bal, "name": names.get(inn) or "", "rows": by_inn[(inn, cur)]}
            for (inn, cur), bal in sorted(left.items())]
