"""Match new credits to open invoices and record the decision and its Bitrix24 effects in one transaction.

Exactly once: a decision is unique per operation (partial unique index), allocations per (operation,
invoice), outbox items per key. Re-running this after a crash finds the decision already there.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace
from decimal import Decimal

from sqlalchemy import select

from b24app.adapters.banks.operations import MSK
from b24app.domain import (
    IncomingPayment,
    InvoiceIndex,
    OpenInvoice,
    Outcome,
    extract_invoice_numbers,
    match_payment,
    normalize_invoice_number,
    settle,
)
from b24app.domain.explain import explain_reason
from b24app.domain.states import (
    CLOSE_ACTIONS,  # noqa: F401  (importers use these)
    CLOSED_STATES,
    REVIEW_STATES,
    OpState,
)
from . import credit, paidfield, paymentrecords
from b24app.adapters.bitrix.crm import EntityType
from .effects import (DealStage, EffectKind, InvoicePaid, InvoicePartial, Notify, Task, Timeline, Trigger, undo_of,
                      undo_suffix)
from b24app.domain.formatting import format_money
from b24app.storage.models import Allocation, BankAccount, BankLink, Decision, Invoice, Operation, OutboxItem, Portal
from .notices import bbcode_escape, text
from .errors import ReconcileError
from .queue import enqueue
from .rules import Rules, deal_stage_targets, load_rules

log = logging.getLogger("b24app.pipeline.reconcile")


def open_invoices(s, portal_id: int) -> list[OpenInvoice]:
    paid = credit.paid_by_invoice(s, portal_id)
    rows = s.scalars(select(Invoice).where(Invoice.portal_id == portal_id, Invoice.stage_semantics.is_(None)))
    return [OpenInvoice(id=inv.b24_id, number=inv.number, amount=inv.amount, currency=inv.currency,
                        paid=paid.get(inv.b24_id, Decimal("0")), payer_inn=inv.payer_inn,
                        mycompany_id=inv.mycompany_id, deal_id=inv.deal_id, created=inv.created)
            for inv in rows if inv.number]


def paid_invoices(s, portal_id: int, purposes: list[str]) -> list[OpenInvoice]:
    """Invoices closed as paid (success stage) whose numbers these purposes name: the domain knows them by number
    to spot a double payment (only those named are read: a portal's paid invoices only grow)."""
    keys = sorted({normalize_invoice_number(n) for p in purposes for n in extract_invoice_numbers(p or "")} - {""})
    if not keys:
        return []
    rows = s.scalars(select(Invoice).where(Invoice.portal_id == portal_id, Invoice.stage_semantics == "S",
                                           Invoice.number_key.in_(keys)))
    return [OpenInvoice(id=inv.b24_id, number=inv.number, amount=inv.amount, currency=inv.currency,
                        paid=inv.amount, payer_inn=inv.payer_inn, mycompany_id=inv.mycompany_id,
                        deal_id=inv.deal_id, created=inv.created)
            for inv in rows if inv.number]


def related_invoices(decision) -> list[int]:
    """Invoices a decision names: its candidates, then those its reasons name (e.g. an invoice paid already)."""
    out = [int(c) for c in decision.candidates]
    for r in decision.reasons:
        inv_id = r.params.get("invoice_id")
        if isinstance(inv_id, int) and inv_id not in out:
            out.append(inv_id)
    return out


def reasons_json(decision) -> list[dict]:
    return [{"code": r.code, "params": {k: (str(v) if isinstance(v, Decimal) else v) for k, v in r.params.items()}}
            for r in decision.reasons]


def reconcile_portal(ctx, portal: Portal, *, limit: int = 500) -> dict:
    """Decide every new Transaction credit of the portal (oldest first)."""
    counts: dict[str, int] = defaultdict(int)
    with ctx.db.session() as s:
        ops = list(s.scalars(select(Operation).where(Operation.portal_id == portal.id, Operation.state == OpState.NEW)
                             .order_by(Operation.operation_date, Operation.id).limit(limit)))
        if ops:
            index_rows = open_invoices(s, portal.id)
            paid_rows = paid_invoices(s, portal.id, [op.purpose for op in ops])
            accounts = {a.id: a for a in s.scalars(select(BankAccount).where(BankAccount.portal_id == portal.id))}
            # Our own companies (every bank link, also unlinked ones): money from them is a transfer, not a payment.
            own_inns = set(s.scalars(select(BankLink.inn).where(BankLink.portal_id == portal.id)))
    if not ops:
        return _auto_credit(ctx, portal, {})  # outside the session: it takes the portal's row lock
    rules = load_rules(portal.settings)
    index = InvoiceIndex.from_invoices(index_rows, paid=paid_rows)
    by_id = {inv.id: inv for inv in index_rows}
    for op in ops:
        account = accounts.get(op.account_id)
        payment = IncomingPayment(amount=op.amount, currency=op.currency, purpose=op.purpose or "",
                                  payer_inn=op.payer_inn or None, payer_name=op.payer_name,
                                  mycompany_id=account.mycompany_id if account else None, category=op.category)
        decision = match_payment(payment, index, own_inns=own_inns, ignore_categories=rules.ignore_categories)
        outcome = _record(ctx, portal, op.id, decision, rules, actor=None)
        counts[outcome] += 1
        if outcome in ("paid", "underpaid", "overpaid"):
            # Later payments in this run see the money just allocated.
            for alloc in decision.allocations:
                inv = by_id.get(alloc.invoice_id)
                if inv is not None:
                    by_id[inv.id] = inv = replace(inv, paid=inv.paid + alloc.amount)
                    index.replace(inv)
    return _auto_credit(ctx, portal, dict(counts))


def _auto_credit(ctx, portal: Portal, counts: dict) -> dict:
    """With the rule on, the clients' credit goes onto their open invoices, oldest first (#15)."""
    if load_rules(portal.settings).credit_auto_apply:
        applied = credit.apply_due(ctx, portal)
        if applied:
            counts["credit_applied"] = applied
    return counts


def _record(ctx, portal: Portal, op_pk: int, decision, rules: Rules, actor: int | None) -> str:
    """Store the decision, allocations and effects for one operation, or nothing if it was decided already."""
    now = ctx.clock.now()
    with ctx.db.session() as s:
        op = s.get(Operation, op_pk)
        if op is None or op.state != OpState.NEW:
            return "already"
        if s.scalar(select(Decision.id).where(Decision.operation_pk == op_pk, Decision.superseded_at.is_(None))):
            return "already"
        medium = rules.apply_medium and decision.medium_proposal
        apply = decision.auto_apply or medium
        outcome = decision.outcome.value if apply or decision.outcome in (
            Outcome.REVIEW, Outcome.UNMATCHED, Outcome.IGNORED) else Outcome.REVIEW.value
        reasons = reasons_json(decision) + ([{"code": "applied_medium", "params": {}}] if medium else [])
        d = Decision(portal_id=portal.id, operation_pk=op_pk, outcome=outcome,
                     confidence=decision.confidence.value, numbers=list(decision.numbers),
                     candidates=list(decision.candidates), reasons=reasons,
                     actor_user_id=actor, created_at=now)
        s.add(d)
        s.flush()
        if apply:
            for alloc in decision.allocations:
                s.add(Allocation(portal_id=portal.id, decision_id=d.id, operation_pk=op_pk,
                                 invoice_b24_id=alloc.invoice_id, amount=alloc.amount,
                                 outcome=alloc.outcome.value, created_at=now))
            allocs = [(a.invoice_id, a.outcome.value, a.amount, a.remaining, a.overpaid_by)
                      for a in decision.allocations]
            _effects(s, ctx, portal, op, d, allocs, rules)
            credit.keep_surplus(s, ctx, portal, op, d, allocs)
            op.state = OpState.OVERPAID if any(a.outcome == Outcome.OVERPAID for a in decision.allocations) \
                else OpState.MATCHED
        elif outcome == Outcome.IGNORED.value:
            op.state = OpState.IGNORED  # our own transfer or an excluded category: no invoice, nobody to tell
        else:
            op.state = OpState.UNMATCHED if outcome == Outcome.UNMATCHED.value else OpState.REVIEW
            if rules.review_notify and op.state == OpState.REVIEW:
                _review_notices(s, ctx, portal, op, decision)
        op.reconciled_at = now
        return str(op.state) if op.state != OpState.MATCHED else outcome


def _effects(s, ctx, portal: Portal, op: Operation, d: Decision, allocs, rules: Rules) -> None:
    lang = portal.lang or "ru"
    invoices = {i.b24_id: i for i in s.scalars(select(Invoice).where(
        Invoice.portal_id == portal.id, Invoice.b24_id.in_([a[0] for a in allocs])))}
    payer = bbcode_escape(op.payer_name or op.payer_inn or "—")
    date = op.operation_date.astimezone(MSK).strftime("%d.%m.%Y")  # the bank's (Moscow) day, as statements date it
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
                enqueue(s, portal.id, f"{key}:invoice_paid", InvoicePaid(inv_id), op.id, now=d.created_at)
            if deal_id and (any(stages.values()) or not pipelines_known):
                enqueue(s, portal.id, f"{key}:deal_stage", DealStage(deal_id, stages, default="success"), op.id,
                        now=d.created_at)
            if rules.paid_timeline and deal_id:
                enqueue(s, portal.id, f"{key}:timeline", Timeline(deal_id, lang=lang, comment=text(
                    "timeline_paid", lang, number=number, amount=fmt(amount), payer=payer, date=date,
                    purpose=bbcode_escape(op.purpose or ""))), op.id, now=d.created_at)
            if manager and (rules.paid_notify if outcome == "paid" else rules.overpaid_notify):
                msg = text("paid", lang, number=number, amount=fmt(amount), payer=payer) if outcome == "paid" else \
                    text("overpaid_credit" if op.payer_inn else "overpaid", lang, number=number, inn=op.payer_inn,
                         received=fmt(paid_total + Decimal(excess)), due=fmt(inv.amount), excess=fmt(excess))
                enqueue(s, portal.id, f"{key}:notify", Notify(manager, msg), op.id, now=d.created_at)
        elif outcome == "underpaid":
            if rules.partial_invoice_stage:  # the "partly paid" stage of the invoice's funnel (#15)
                enqueue(s, portal.id, f"{key}:invoice_partial", InvoicePartial(inv_id, rules.partial_invoice_stage),
                        op.id, now=d.created_at)
            values = dict(number=number, received=fmt(paid_total), due=fmt(inv.amount), remaining=fmt(remaining),
                          payer=payer, amount=fmt(amount), date=date, purpose=bbcode_escape(op.purpose or ""))
            if rules.underpaid_notify and manager:
                enqueue(s, portal.id, f"{key}:notify", Notify(manager, text("underpaid", lang, **values)), op.id,
                        now=d.created_at)
            if rules.underpaid_task and manager:
                enqueue(s, portal.id, f"{key}:task", Task(
                    manager, title=text("task_title", lang, **values),
                    description=text("underpaid", lang, **values), deal_id=deal_id), op.id, now=d.created_at)
            if rules.underpaid_timeline and deal_id:
                enqueue(s, portal.id, f"{key}:timeline",
                        Timeline(deal_id, lang=lang, comment=text("timeline_underpaid", lang, **values)), op.id,
                        now=d.created_at)
        # a paid payment record of what went onto the invoice (the surplus is credit: its own record when applied)
        put = Decimal(amount) - Decimal(excess or 0)
        comment = text("record_partly", lang, number=number, amount=fmt(put), payer=payer, received=fmt(paid_total),
                       due=fmt(inv.amount), remaining=fmt(remaining)) if outcome == "underpaid" else \
            text("record_paid", lang, number=number, amount=fmt(put), payer=payer)
        paymentrecords.enqueue_record(s, portal.id, rules, deal_id, inv_id, put, op.currency, key, op.id,
                                      d.created_at, comment=comment)
        paidfield.enqueue_sum(s, portal.id, rules, deal_id, key, op.id, d.created_at)  # the «Оплачено» field
        if rules.fire_trigger and deal_id:
            trig = ctx.manifest.automation_triggers[0]["code"] if ctx.manifest.automation_triggers else None
            if trig:
                enqueue(s, portal.id, f"{key}:trigger", Trigger(trig, deal_id, owner_type_id=EntityType.DEAL), op.id,
                        now=d.created_at)
    s.execute(Portal.__table__.update().where(Portal.id == portal.id).values(work_due_at=d.created_at))


def _review_notices(s, ctx, portal: Portal, op: Operation, decision) -> None:
    """Tell the managers of the invoices a review decision names; a likely double payment is said as such
    (the explanation comes from the domain) and names no other invoice."""
    doubles = [r for r in decision.reasons if r.code == "already_paid"]
    related = related_invoices(decision) if doubles and not decision.candidates else list(decision.candidates)
    managers = sorted({m for m in s.scalars(select(Invoice.assigned_by_id).where(
        Invoice.portal_id == portal.id, Invoice.b24_id.in_(related or [-1]))) if m})
    if not managers:
        return
    lang = portal.lang or "ru"
    payer = bbcode_escape(op.payer_name or op.payer_inn or "—")
    amount = format_money(op.amount, op.currency, lang)
    if doubles and not decision.candidates:
        why = "; ".join(explain_reason(r, lang) for r in doubles)
        msg = text("review_double", lang, amount=amount, payer=payer, why=bbcode_escape(why))
    else:
        numbers = ", ".join(s.scalars(select(Invoice.number).where(
            Invoice.portal_id == portal.id, Invoice.b24_id.in_(related or [-1])))) or "—"
        msg = text("review", lang, amount=amount, payer=payer, numbers=bbcode_escape(numbers))
    for m in managers:
        enqueue(s, portal.id, f"op{op.id}:review:u{m}", Notify(m, msg), op.id, now=ctx.clock.now())
    s.execute(Portal.__table__.update().where(Portal.id == portal.id).values(work_due_at=ctx.clock.now()))


# -- people correcting the app ---------------------------------------------------------------------------
def _reviewable(s, portal_id: int, operation_pk: int) -> tuple[Portal, Operation]:
    """The portal and a payment of it that waits for a person: settled, incoming, in review or unmatched."""
    portal = s.get(Portal, portal_id)
    op = s.get(Operation, operation_pk)
    if portal is None or op is None or op.portal_id != portal_id:
        raise ReconcileError("not_found")
    if op.state not in REVIEW_STATES:
        raise ReconcileError("not_in_review")
    if not (op.is_credit and op.bank_status == "Transaction"):
        raise ReconcileError("not_a_settled_credit")
    return portal, op


def assign_manually(ctx, portal_id: int, operation_pk: int, invoice_b24_id: int, user_id: int, *,
                    pay_over: bool = False) -> Decision:
    """A person says: this payment is for that invoice. Replaces a review/unmatched decision.
    An invoice that is paid already (nothing due, or in its success stage) takes money only with `pay_over`."""
    with ctx.db.session() as s:
        portal, op = _reviewable(s, portal_id, operation_pk)
        inv = s.scalar(select(Invoice).where(Invoice.portal_id == portal_id, Invoice.b24_id == invoice_b24_id))
        if inv is None:
            raise ReconcileError("invoice_not_found")
        if inv.currency != op.currency:
            raise ReconcileError("currency_mismatch")
        if inv.stage_semantics == "F":
            raise ReconcileError("invoice_closed")
        paid = credit.paid_by_invoice(s, portal_id).get(inv.b24_id, Decimal("0"))
        remaining = max(Decimal("0"), inv.amount - paid)
        if (remaining <= 0 or inv.stage_semantics == "S") and not pay_over:
            raise ReconcileError("invoice_paid")
        if inv.stage_semantics == "S":
            remaining = Decimal("0")  # paid outside the app: all of this payment is over the amount
        settled, left, excess = settle(op.amount, remaining)
        outcome = settled.value
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
        credit.keep_surplus(s, ctx, portal, op, d, [(inv.b24_id, outcome, op.amount, left, excess)])
        op.state = OpState.OVERPAID if outcome == "overpaid" else OpState.MATCHED
        op.reconciled_at = now
        return d


#: Reasons of a decision that carry a proposal (`invoice_ids`) a person may accept with one click.
PROPOSAL_CODES = ("inn_amount_unique", "inn_amount_combination", "inn_combination_unconfirmed")


def proposal_of(reasons) -> list[int]:
    """The invoices a decision proposes to pay in full (the INN and amount fallback), else []."""
    for r in reasons or []:
        if isinstance(r, dict) and r.get("code") in PROPOSAL_CODES:
            ids = (r.get("params") or {}).get("invoice_ids")
            if isinstance(ids, list) and ids and all(isinstance(i, int) for i in ids):
                return ids
    return []


def accept_proposal(ctx, portal_id: int, operation_pk: int, user_id: int) -> Decision:
    """A person accepts the app's proposal for a payment in review: the proposed invoices are paid in full.
    Checked again now: every invoice still open, in the payment's currency, and what is due on them together
    still equals the payment exactly (else `proposal_stale`: nothing is applied)."""
    with ctx.db.session() as s:
        portal, op = _reviewable(s, portal_id, operation_pk)
        current = _current(s, op)
        ids = proposal_of(current.reasons if current else [])
        if not ids:
            raise ReconcileError("no_proposal")
        invoices = {i.b24_id: i for i in s.scalars(select(Invoice).where(Invoice.portal_id == portal_id,
                                                                         Invoice.b24_id.in_(ids)))}
        paid = credit.paid_by_invoice(s, portal_id)
        due: list[tuple[Invoice, Decimal]] = []
        for inv_id in ids:
            inv = invoices.get(inv_id)
            if inv is None or inv.stage_semantics is not None or inv.currency != op.currency:
                raise ReconcileError("proposal_stale")
            remaining = inv.amount - paid.get(inv_id, Decimal("0"))
            if remaining <= 0:
                raise ReconcileError("proposal_stale")
            due.append((inv, remaining))
        if sum(r for _, r in due) != op.amount:
            raise ReconcileError("proposal_stale")
        now = ctx.clock.now()
        current.superseded_at = now
        s.flush()
        d = Decision(portal_id=portal_id, operation_pk=op.id, outcome="paid", confidence="manual",
                     numbers=list(current.numbers or []), candidates=ids, actor_user_id=user_id, created_at=now,
                     reasons=[{"code": "accepted_proposal", "params": {"user_id": user_id}}]
                     + _carried(current.reasons))
        s.add(d)
        s.flush()
        for inv, remaining in due:
            s.add(Allocation(portal_id=portal_id, decision_id=d.id, operation_pk=op.id, invoice_b24_id=inv.b24_id,
                             amount=remaining, outcome="paid", created_at=now))
        _effects(s, ctx, portal, op, d, [(inv.b24_id, "paid", r, Decimal("0"), Decimal("0")) for inv, r in due],
                 load_rules(portal.settings))
        op.state = OpState.MATCHED
        op.reconciled_at = now
        return d


# Reasons people add; the machine's reasons are carried over below them so that none is ever lost.
_PEOPLE_CODES = ("undone", "reopened", "closed_ignored", "closed_refund", "closed_credit", "accepted_proposal")
# Which effects undo moves back and which it cannot take back: EffectKind.moves_money_state / .irreversible.
_MONEY_STATE = tuple(k for k in EffectKind if k.moves_money_state)
_IRREVERSIBLE = tuple(k for k in EffectKind if k.irreversible)


def _carried(reasons) -> list[dict]:
    """The reasons of a decision being replaced, without what people added on top of them before."""
    return [r for r in reasons or [] if not (isinstance(r, dict) and r.get("code") in _PEOPLE_CODES)]


def _current(s, op: Operation) -> Decision | None:
    return s.scalar(select(Decision).where(Decision.operation_pk == op.id, Decision.superseded_at.is_(None)))


def _managers_for(s, portal_id: int, op: Operation, current: Decision | None) -> list[int]:
    """Whom to tell about a payment that pays no invoice: managers of the invoices its decision named, else
    of the payer's open invoices."""
    named = [int(c) for c in (current.candidates if current else []) if str(c).isdigit()]
    for r in (current.reasons if current else []) or []:
        inv_id = (r.get("params") or {}).get("invoice_id") if isinstance(r, dict) else None
        if isinstance(inv_id, int):
            named.append(inv_id)
    q = select(Invoice.assigned_by_id).where(Invoice.portal_id == portal_id)
    managers = set(s.scalars(q.where(Invoice.b24_id.in_(named or [-1]))))
    if not any(managers) and op.payer_inn:
        managers = set(s.scalars(q.where(Invoice.payer_inn == op.payer_inn, Invoice.stage_semantics.is_(None))))
    return sorted(m for m in managers if m)


def close_review(ctx, portal_id: int, operation_pk: int, user_id: int, action: str, reason: str = "") -> Decision:
    """A person closes a review item that is no invoice payment: `ignore` (with a reason), `refund` to the payer
    (the manager is told in chat) or `credit` (kept as the credit of the payer's INN). Undo reopens it."""
    state = CLOSE_ACTIONS.get(action)
    if state is None:
        raise ReconcileError("unknown_action")
    reason = " ".join(str(reason or "").split())[:500]
    with ctx.db.session() as s:
        portal, op = _reviewable(s, portal_id, operation_pk)
        if state == OpState.IGNORED and not reason:
            raise ReconcileError("reason_required")
        if state == OpState.CREDIT and not op.payer_inn:
            raise ReconcileError("no_payer_inn")
        now = ctx.clock.now()
        current = _current(s, op)
        managers = _managers_for(s, portal_id, op, current) if state == OpState.REFUND else []
        if state == OpState.REFUND and not managers:
            managers = [user_id]  # nobody else to tell: the person who decided gets the reminder
        if current is not None:
            current.superseded_at = now
            s.flush()
        params = {"user_id": user_id, "reason": reason, "amount": str(op.amount), "currency": op.currency,
                  "inn": op.payer_inn or "", "from_state": op.state}
        if managers:
            params["told"] = managers
        d = Decision(portal_id=portal_id, operation_pk=op.id, outcome=state, confidence="manual",
                     numbers=list(current.numbers if current else []), candidates=[], actor_user_id=user_id,
                     created_at=now, reasons=[{"code": f"closed_{state}", "params": params}]
                     + _carried(current.reasons if current else []))
        s.add(d)
        s.flush()
        if state == OpState.REFUND:
            lang = portal.lang or "ru"
            msg = text("refund", lang, amount=format_money(op.amount, op.currency, lang),
                       payer=bbcode_escape(op.payer_name or op.payer_inn or "—"),
                       date=op.operation_date.strftime("%d.%m.%Y"), user=user_id, reason=bbcode_escape(reason or "—"))
            for m in managers:
                enqueue(s, portal_id, f"op{op.id}:d{d.id}:refund:u{m}", Notify(m, msg), op.id, now=now)
            portal.work_due_at = now
        if state == OpState.CREDIT:
            credit.keep_payment(s, op, d)  # the client's credit by INN, in the ledger (#15)
        op.state = state
        op.reconciled_at = now
        return d


def undo(ctx, portal_id: int, operation_pk: int, user_id: int) -> Decision:
    """Take a decision back, everything it did that can be: allocations revoked; the invoice and the deal moved
    back through the outbox (each only if it still stands where we put it); effects not sent yet cancelled.
    A sent chat message, comment, task or trigger cannot be taken back: the new decision says which.
    A closed review item (ignored, refund, credit) is reopened. The replaced decision's reasons are kept."""
    with ctx.db.session() as s:
        portal = s.get(Portal, portal_id)
        op = s.get(Operation, operation_pk)
        if portal is None or op is None or op.portal_id != portal_id:
            raise ReconcileError("not_found")
        if op.state in CLOSED_STATES:
            return _reopen(s, ctx, portal, op, user_id)
        allocs = list(s.scalars(select(Allocation).where(Allocation.operation_pk == op.id,
                                                         Allocation.revoked_at.is_(None))))
        if not allocs:
            raise ReconcileError("nothing_to_undo")
        undone_ids = {a.decision_id for a in allocs}
        items = [item for item in s.scalars(select(OutboxItem).where(
            OutboxItem.portal_id == portal_id, OutboxItem.operation_pk == op.id).order_by(OutboxItem.id))
            if any(item.key.startswith(f"op{op.id}:d{did}:") for did in undone_ids)]
        if any(item.status == "sending" and item.kind in _MONEY_STATE for item in items):
            # The invoice or deal stage is on its way to Bitrix24 (or a worker died sending it and Bitrix24 is to
            # be checked first): where it ends up is not known yet, so it could not be moved back reliably.
            raise ReconcileError("effects_in_flight")
        now = ctx.clock.now()
        credit.revoke_for(s, op, undone_ids, now)  # the surplus kept as credit goes with it (unless it is in use)
        lang = portal.lang or "ru"
        current = _current(s, op)
        if current is not None:
            current.superseded_at = now
        s.flush()
        not_reverted: list[str] = []
        reverse: list[tuple[str, object]] = []  # (key suffix, effect), keyed by the new decision below
        for item in items:
            result = item.result or {}
            if item.status == "pending":
                item.status, item.result, item.done_at = "skipped", {"why": "cancelled by undo"}, now
            elif item.status == "sending":
                not_reverted.append(item.kind)  # a message on its way to Bitrix24 right now
            elif item.status not in ("done", "skipped"):  # skipped: may still have moved it (interrupted)
                continue
            elif (back := undo_of(item.kind, item.payload, result)) is not None:
                reverse.append((undo_suffix(back), back))
            elif item.kind in _IRREVERSIBLE:
                not_reverted.append(item.kind)
        params = {"user_id": user_id, "not_reverted": sorted(set(not_reverted))}
        d = Decision(portal_id=portal_id, operation_pk=op.id, outcome="review", confidence="manual",
                     numbers=list(current.numbers if current else []),
                     candidates=[a.invoice_b24_id for a in allocs], actor_user_id=user_id, created_at=now,
                     reasons=[{"code": "undone", "params": params}] + _carried(current.reasons if current else []))
        s.add(d)
        s.flush()
        for suffix, back in reverse:
            enqueue(s, portal_id, f"undo:d{d.id}:{suffix}", back, op.id, now=now)
        rules = load_rules(portal.settings)
        for a in allocs:
            a.revoked_at = now
            inv = s.scalar(select(Invoice).where(Invoice.portal_id == portal_id, Invoice.b24_id == a.invoice_b24_id))
            if inv is not None:
                paidfield.enqueue_sum(s, portal_id, rules, inv.deal_id, f"undo:d{d.id}:inv{inv.b24_id}", op.id, now)
            if inv is not None and inv.deal_id:
                enqueue(s, portal_id, f"undo:d{d.id}:inv{a.invoice_b24_id}:timeline", Timeline(
                    inv.deal_id, lang=lang, comment=text(
                        "timeline_undo", lang, amount=format_money(a.amount, op.currency, lang),
                        payer=bbcode_escape(op.payer_name or op.payer_inn or "—"), number=inv.number,
                        user=user_id)), op.id, now=now)
        op.state = OpState.REVIEW
        portal.work_due_at = now
        return d


def _reopen(s, ctx, portal: Portal, op: Operation, user_id: int) -> Decision:
    """Undo of a closed review item: back to review; a refund message already sent stays sent."""
    now = ctx.clock.now()
    current = _current(s, op)
    closed = next((r for r in (current.reasons if current else []) or []
                   if isinstance(r, dict) and str(r.get("code", "")).startswith("closed_")), {})
    was = (closed.get("params") or {}).get("from_state")
    not_reverted = []
    if current is not None:
        credit.revoke_for(s, op, [current.id], now)  # a payment kept as credit: taken out of the ledger
        for item in s.scalars(select(OutboxItem).where(OutboxItem.portal_id == portal.id,
                                                       OutboxItem.operation_pk == op.id)):
            if not item.key.startswith(f"op{op.id}:d{current.id}:"):
                continue
            if item.status == "pending":
                item.status, item.result, item.done_at = "skipped", {"why": "cancelled by undo"}, now
            elif item.status in ("sending", "done"):
                not_reverted.append(item.kind)
        current.superseded_at = now
        s.flush()
    d = Decision(portal_id=portal.id, operation_pk=op.id, outcome="review", confidence="manual",
                 numbers=list(current.numbers if current else []), candidates=[], actor_user_id=user_id,
                 created_at=now, reasons=[{"code": "reopened", "params": {
                     "user_id": user_id, "was": op.state, "not_reverted": sorted(set(not_reverted))}}]
                 + _carried(current.reasons if current else []))
    s.add(d)
    s.flush()
    op.state = OpState(was) if was in REVIEW_STATES else OpState.REVIEW
    return d
