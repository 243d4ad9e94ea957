"""Match new credits to open invoices and record the decision and its Bitrix24 effects in one transaction.

Exactly once: a decision is unique per operation (partial unique index), allocations per (operation,
invoice), outbox items per key. Re-running this after a crash finds the decision already there.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace
from decimal import Decimal

from sqlalchemy import func, select

from .domain import IncomingPayment, InvoiceIndex, OpenInvoice, Outcome, match_payment
from .domain.formatting import format_money
from .models import Allocation, BankAccount, Decision, Invoice, Operation, OutboxItem, Portal
from .notices import bbcode_escape, text
from .outbox import enqueue
from .rules import Rules, deal_stage_targets, load_rules

log = logging.getLogger("b24app.reconcile")
DEAL_TYPE = 2


class ReconcileError(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _paid_by_invoice(s, portal_id: int) -> dict[int, Decimal]:
    rows = s.execute(select(Allocation.invoice_b24_id, func.sum(Allocation.amount))
                     .where(Allocation.portal_id == portal_id, Allocation.revoked_at.is_(None))
                     .group_by(Allocation.invoice_b24_id))
    return {int(i): Decimal(v) for i, v in rows}


def open_invoices(s, portal_id: int) -> list[OpenInvoice]:
    paid = _paid_by_invoice(s, portal_id)
    rows = s.scalars(select(Invoice).where(Invoice.portal_id == portal_id, Invoice.stage_semantics.is_(None)))
    return [OpenInvoice(id=inv.b24_id, number=inv.number, amount=inv.amount, currency=inv.currency,
                        paid=paid.get(inv.b24_id, Decimal("0")), payer_inn=inv.payer_inn,
                        mycompany_id=inv.mycompany_id, deal_id=inv.deal_id, created=inv.created)
            for inv in rows if inv.number]


def reasons_json(decision) -> list[dict]:
    return [{"code": r.code, "params": {k: (str(v) if isinstance(v, Decimal) else v) for k, v in r.params.items()}}
            for r in decision.reasons]


def reconcile_portal(ctx, portal: Portal, *, limit: int = 500) -> dict:
    """Decide every new Transaction credit of the portal (oldest first)."""
    counts: dict[str, int] = defaultdict(int)
    with ctx.db.session() as s:
        ops = list(s.scalars(select(Operation).where(Operation.portal_id == portal.id, Operation.state == "new")
                             .order_by(Operation.operation_date, Operation.id).limit(limit)))
        if not ops:
            return {}
        index_rows = open_invoices(s, portal.id)
        accounts = {a.id: a for a in s.scalars(select(BankAccount).where(BankAccount.portal_id == portal.id))}
    rules = load_rules(portal.settings)
    index = InvoiceIndex.from_invoices(index_rows)
    by_id = {inv.id: inv for inv in index_rows}
    for op in ops:
        account = accounts.get(op.account_id)
        payment = IncomingPayment(amount=op.amount, currency=op.currency, purpose=op.purpose or "",
                                  payer_inn=op.payer_inn or None, payer_name=op.payer_name,
                                  mycompany_id=account.mycompany_id if account else None)
        decision = match_payment(payment, index)
        outcome = _record(ctx, portal, op.id, decision, rules, actor=None)
        counts[outcome] += 1
        if outcome in ("paid", "underpaid", "overpaid"):
            # Later payments in this run see the money just allocated.
            for alloc in decision.allocations:
                inv = by_id.get(alloc.invoice_id)
                if inv is not None:
                    by_id[inv.id] = inv = replace(inv, paid=inv.paid + alloc.amount)
                    index.replace(inv)
    return dict(counts)


def _record(ctx, portal: Portal, op_pk: int, decision, rules: Rules, actor: int | None) -> str:
    """Store the decision, allocations and effects for one operation, or nothing if it was decided already."""
    now = ctx.clock.now()
    with ctx.db.session() as s:
        op = s.get(Operation, op_pk)
        if op is None or op.state != "new":
            return "already"
        if s.scalar(select(Decision.id).where(Decision.operation_pk == op_pk, Decision.superseded_at.is_(None))):
            return "already"
        apply = decision.auto_apply
        outcome = decision.outcome.value if apply or decision.outcome in (Outcome.REVIEW, Outcome.UNMATCHED) \
            else Outcome.REVIEW.value
        d = Decision(portal_id=portal.id, operation_pk=op_pk, outcome=outcome,
                     confidence=decision.confidence.value, numbers=list(decision.numbers),
                     candidates=list(decision.candidates), reasons=reasons_json(decision),
                     actor_user_id=actor, created_at=now)
        s.add(d)
        s.flush()
        if apply:
            for alloc in decision.allocations:
                s.add(Allocation(portal_id=portal.id, decision_id=d.id, operation_pk=op_pk,
                                 invoice_b24_id=alloc.invoice_id, amount=alloc.amount,
                                 outcome=alloc.outcome.value, created_at=now))
            _effects(s, ctx, portal, op, d, [(a.invoice_id, a.outcome.value, a.amount, a.remaining,
                                               getattr(a, "overpaid_by", Decimal("0"))) for a in decision.allocations],
                     rules)
            op.state = "overpaid" if any(a.outcome == Outcome.OVERPAID for a in decision.allocations) else "matched"
        else:
            op.state = "unmatched" if outcome == Outcome.UNMATCHED.value else "review"
            if rules.review_notify and op.state == "review":
                _review_notices(s, ctx, portal, op, decision.candidates)
        op.reconciled_at = now
        return op.state if op.state != "matched" else outcome


def _effects(s, ctx, portal: Portal, op: Operation, d: Decision, allocs, rules: Rules) -> None:
    lang = portal.lang or "ru"
    invoices = {i.b24_id: i for i in s.scalars(select(Invoice).where(
        Invoice.portal_id == portal.id, Invoice.b24_id.in_([a[0] for a in allocs])))}
    payer = bbcode_escape(op.payer_name or op.payer_inn or "—")
    date = op.operation_date.strftime("%d.%m.%Y")
    fmt = lambda v: format_money(Decimal(v), op.currency, lang)  # noqa: E731
    base = f"op{op.id}:d{d.id}"
    stages = deal_stage_targets(rules, portal.settings)  # a pipeline the caches do not know: the outbox finds its S
    pipelines_known = bool(((portal.settings or {}).get("deal_pipelines") or {}).get("pipelines"))
    for inv_id, outcome, amount, remaining, excess in allocs:
        inv = invoices.get(inv_id)
        if inv is None:
            continue
        key = f"{base}:inv{inv_id}"
        deal_id, manager = inv.deal_id, inv.assigned_by_id
        number = inv.number or str(inv_id)
        paid_total = inv.amount - Decimal(remaining) if outcome == "underpaid" else inv.amount
        if outcome in ("paid", "overpaid"):
            if rules.paid_invoice_stage:
                enqueue(s, portal.id, f"{key}:invoice_paid", "invoice_paid", {"invoice_id": inv_id}, op.id, now=d.created_at)
            if deal_id and (any(stages.values()) or not pipelines_known):
                enqueue(s, portal.id, f"{key}:deal_stage", "deal_stage",
                        {"deal_id": deal_id, "stages": stages, "default": "success"}, op.id, now=d.created_at)
            if rules.paid_timeline and deal_id:
                enqueue(s, portal.id, f"{key}:timeline", "timeline", {"deal_id": deal_id, "lang": lang, "comment": text(
                    "timeline_paid", lang, number=number, amount=fmt(amount), payer=payer, date=date,
                    purpose=bbcode_escape(op.purpose or ""))}, op.id, now=d.created_at)
            if manager and (rules.paid_notify if outcome == "paid" else rules.overpaid_notify):
                msg = text("paid", lang, number=number, amount=fmt(amount), payer=payer) if outcome == "paid" else \
                    text("overpaid", lang, number=number, received=fmt(paid_total + Decimal(excess)),
                         due=fmt(inv.amount), excess=fmt(excess))
                enqueue(s, portal.id, f"{key}:notify", "notify", {"user_id": manager, "message": msg}, op.id,
                        now=d.created_at)
        elif outcome == "underpaid":
            values = dict(number=number, received=fmt(paid_total), due=fmt(inv.amount), remaining=fmt(remaining),
                          payer=payer, amount=fmt(amount), date=date, purpose=bbcode_escape(op.purpose or ""))
            if rules.underpaid_notify and manager:
                enqueue(s, portal.id, f"{key}:notify", "notify",
                        {"user_id": manager, "message": text("underpaid", lang, **values)}, op.id, now=d.created_at)
            if rules.underpaid_task and manager:
                enqueue(s, portal.id, f"{key}:task", "task", {
                    "responsible_id": manager, "title": text("task_title", lang, **values),
                    "description": text("underpaid", lang, **values), "deal_id": deal_id}, op.id, now=d.created_at)
            if rules.underpaid_timeline and deal_id:
                enqueue(s, portal.id, f"{key}:timeline", "timeline",
                        {"deal_id": deal_id, "lang": lang, "comment": text("timeline_underpaid", lang, **values)}, op.id,
                        now=d.created_at)
        if rules.fire_trigger and deal_id:
            trig = ctx.manifest.automation_triggers[0]["code"] if ctx.manifest.automation_triggers else None
            if trig:
                enqueue(s, portal.id, f"{key}:trigger", "trigger", {"code": trig, "owner_type_id": DEAL_TYPE,
                                                                    "owner_id": deal_id}, op.id, now=d.created_at)
    s.execute(Portal.__table__.update().where(Portal.id == portal.id).values(work_due_at=d.created_at))


def _review_notices(s, ctx, portal: Portal, op: Operation, candidates) -> None:
    managers = sorted({m for m in s.scalars(select(Invoice.assigned_by_id).where(
        Invoice.portal_id == portal.id, Invoice.b24_id.in_(list(candidates) or [-1]))) if m})
    if not managers:
        return
    lang = portal.lang or "ru"
    numbers = ", ".join(s.scalars(select(Invoice.number).where(
        Invoice.portal_id == portal.id, Invoice.b24_id.in_(list(candidates))))) or "—"
    msg = text("review", lang, amount=format_money(op.amount, op.currency, lang),
               payer=bbcode_escape(op.payer_name or op.payer_inn or "—"), numbers=numbers)
    for m in managers:
        enqueue(s, portal.id, f"op{op.id}:review:u{m}", "notify", {"user_id": m, "message": msg}, op.id,
                now=ctx.clock.now())
    s.execute(Portal.__table__.update().where(Portal.id == portal.id).values(work_due_at=ctx.clock.now()))


# -- people correcting the app ---------------------------------------------------------------------------
def assign_manually(ctx, portal_id: int, operation_pk: int, invoice_b24_id: int, user_id: int) -> Decision:
    """A person says: this payment is for that invoice. Replaces a review/unmatched decision."""
    with ctx.db.session() as s:
        portal = s.get(Portal, portal_id)
        op = s.get(Operation, operation_pk)
        if portal is None or op is None or op.portal_id != portal_id:
            raise ReconcileError("not_found")
        if op.state not in ("review", "unmatched"):
            raise ReconcileError("not_in_review")
        if not (op.is_credit and op.bank_status == "Transaction"):
            raise ReconcileError("not_a_settled_credit")
        inv = s.scalar(select(Invoice).where(Invoice.portal_id == portal_id, Invoice.b24_id == invoice_b24_id))
        if inv is None:
            raise ReconcileError("invoice_not_found")
        if inv.currency != op.currency:
            raise ReconcileError("currency_mismatch")
        if inv.stage_semantics == "F":
            raise ReconcileError("invoice_closed")
        paid = _paid_by_invoice(s, portal_id).get(inv.b24_id, Decimal("0"))
        remaining = max(Decimal("0"), inv.amount - paid)
        if op.amount == remaining:
            outcome, left, excess = "paid", Decimal("0"), Decimal("0")
        elif op.amount < remaining:
            outcome, left, excess = "underpaid", remaining - op.amount, Decimal("0")
        else:
            outcome, left, excess = "overpaid", Decimal("0"), op.amount - remaining
        now = ctx.clock.now()
        for old in s.scalars(select(Decision).where(Decision.operation_pk == op.id, Decision.superseded_at.is_(None))):
            old.superseded_at = now
        s.flush()
        d = Decision(portal_id=portal_id, operation_pk=op.id, outcome=outcome, confidence="manual",
                     numbers=[], candidates=[inv.b24_id], actor_user_id=user_id, created_at=now,
                     reasons=[{"code": "manual_assignment", "params": {"user_id": user_id, "invoice": inv.number,
                                                                      "amount": str(op.amount), "currency": op.currency,
                                                                      "remaining": str(remaining)}}])
        s.add(d)
        s.flush()
        s.add(Allocation(portal_id=portal_id, decision_id=d.id, operation_pk=op.id, invoice_b24_id=inv.b24_id,
                         amount=op.amount, outcome=outcome, created_at=now))
        _effects(s, ctx, portal, op, d, [(inv.b24_id, outcome, op.amount, left, excess)], load_rules(portal.settings))
        op.state = "overpaid" if outcome == "overpaid" else "matched"
        op.reconciled_at = now
        return d


def undo(ctx, portal_id: int, operation_pk: int, user_id: int) -> Decision:
    """Take a match back: allocations revoked, invoices the app moved to paid go back, a comment explains."""
    with ctx.db.session() as s:
        portal = s.get(Portal, portal_id)
        op = s.get(Operation, operation_pk)
        if portal is None or op is None or op.portal_id != portal_id:
            raise ReconcileError("not_found")
        allocs = list(s.scalars(select(Allocation).where(Allocation.operation_pk == op.id,
                                                         Allocation.revoked_at.is_(None))))
        if not allocs:
            raise ReconcileError("nothing_to_undo")
        now = ctx.clock.now()
        lang = portal.lang or "ru"
        for old in s.scalars(select(Decision).where(Decision.operation_pk == op.id, Decision.superseded_at.is_(None))):
            old.superseded_at = now
        s.flush()
        d = Decision(portal_id=portal_id, operation_pk=op.id, outcome="review", confidence="manual", numbers=[],
                     candidates=[a.invoice_b24_id for a in allocs], actor_user_id=user_id, created_at=now,
                     reasons=[{"code": "undone", "params": {"user_id": user_id}}])
        s.add(d)
        s.flush()
        for a in allocs:
            a.revoked_at = now
            inv = s.scalar(select(Invoice).where(Invoice.portal_id == portal_id, Invoice.b24_id == a.invoice_b24_id))
            moved = s.scalars(select(OutboxItem).where(
                OutboxItem.portal_id == portal_id, OutboxItem.operation_pk == op.id, OutboxItem.kind == "invoice_paid",
                OutboxItem.status == "done")).all()
            for item in moved:
                if item.payload.get("invoice_id") == a.invoice_b24_id and (item.result or {}).get("from_stage"):
                    enqueue(s, portal_id, f"undo:d{d.id}:inv{a.invoice_b24_id}", "invoice_reopen", {
                        "invoice_id": a.invoice_b24_id, "paid_stage": item.result["to_stage"],
                        "to_stage": item.result["from_stage"]}, op.id, now=now)
            if inv is not None and inv.deal_id:
                enqueue(s, portal_id, f"undo:d{d.id}:inv{a.invoice_b24_id}:timeline", "timeline", {
                    "deal_id": inv.deal_id, "lang": lang, "comment": text(
                        "timeline_undo", lang, amount=format_money(a.amount, op.currency, lang),
                        payer=bbcode_escape(op.payer_name or op.payer_inn or "—"), number=inv.number,
                        user=user_id)}, op.id, now=now)
        op.state = "review"
        portal.work_due_at = now
        return d
