"""What the deal (or invoice) tab shows: the invoices, the payments on them, the payments waiting for review
that point at them, and the client's credit."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from b24app.pipeline import credit
from b24app.storage.models import Allocation, BankAccount, BankLink, Credit, Decision, Invoice, Operation, OutboxItem
from .account_sources import bank_label, payment_banks
from .bank import BankState, bank_state
from ..domain.money import cents
from .review import MAX_QUEUE, ZERO, ReviewLine, _number_keys, _review_lines, related


@dataclass(frozen=True)
class PaymentLine:
    """One bank payment applied (wholly or partly) to an invoice."""

    operation_pk: int
    date: datetime
    payer_name: str
    payer_inn: str | None
    amount: Decimal            # the part applied to this invoice
    operation_amount: Decimal  # the whole payment
    currency: str
    purpose: str
    outcome: str
    reasons: tuple[Any, ...]
    manual: bool
    decided_at: datetime
    state: str
    actor_user_id: int | None = None
    credit_id: int | None = None  # the client's credit put on the invoice (#15): undone on the admin page
    record_key: str = ""          # its payment record's outbox key (#15)
    record: str | None = None     # made | pending | needs_sale | needs_admin | not_made; None: none asked for
    bank: tuple[str, str] | None = None  # (bank, how) the payment came: the tab's label (account_sources.payment_banks)


@dataclass(frozen=True)
class InvoiceLine:
    """One smart invoice with what has been received against it."""

    b24_id: int
    number: str
    title: str
    amount: Decimal
    currency: str
    paid: Decimal
    remaining: Decimal
    percent: int
    status: str
    stage_id: str
    stage_semantics: str | None
    assigned_by_id: int | None
    deal_id: int | None
    payments: tuple[PaymentLine, ...] = ()

    excess: Decimal = ZERO  # received beyond the amount: the part of its overpaying payments applied nowhere

    @property
    def overpaid(self) -> Decimal:
        """How much more than the invoice's amount has been received (0 when not overpaid)."""
        over = max(ZERO, self.paid - self.amount) if self.amount > ZERO else ZERO
        return max(over, self.excess)


@dataclass(frozen=True)
class Totals:
    currency: str
    amount: Decimal
    paid: Decimal
    remaining: Decimal


@dataclass(frozen=True)
class WidgetData:
    """Everything the deal (or invoice) tab shows."""

    kind: str  # deal | invoice
    entity_id: int
    deal_id: int | None
    invoices: tuple[InvoiceLine, ...]
    review: tuple[ReviewLine, ...]
    bank: BankState
    totals: tuple[Totals, ...]
    owner_ids: frozenset[int] = field(default_factory=frozenset)
    selected: dict = field(default_factory=dict)  # review operation -> the invoice to pre-select (related only)
    credit: tuple = ()  # (INN, currency, credit left) of the clients of these invoices (#15)


def invoice_status(amount: Decimal, paid: Decimal, semantics: str | None, has_review: bool = False) -> str:
    """The badge: overpaid / paid / needs review / partly paid / awaiting payment / cancelled."""
    if semantics == "F" and paid <= ZERO:
        return "cancelled"
    if amount > ZERO and paid > amount:
        return "overpaid"
    if (amount > ZERO and paid >= amount) or semantics == "S":
        return "paid"
    if paid > ZERO:
        return "partly_paid"
    if has_review:
        return "review"
    return "awaiting"


def percent(amount: Decimal, paid: Decimal) -> int:
    if amount <= ZERO:
        return 100 if paid > ZERO else 0
    return max(0, min(100, int((paid * 100 / amount).to_integral_value(rounding="ROUND_FLOOR"))))


def widget_data(s: Session, portal_id: int, *, deal_id: int | None = None, invoice_id: int | None = None,
                review_limit: int = 50) -> WidgetData:
    """Invoices of one deal (or one invoice), their payments, and the payments waiting for review."""
    q = select(Invoice).where(Invoice.portal_id == portal_id)
    if invoice_id is not None:
        q = q.where(Invoice.b24_id == invoice_id)
        kind, entity = "invoice", invoice_id
    else:
        q = q.where(Invoice.deal_id == deal_id)
        kind, entity = "deal", int(deal_id or 0)
    invoices = list(s.scalars(q.order_by(Invoice.created.is_(None), Invoice.created, Invoice.b24_id)))
    ids = [i.b24_id for i in invoices]
    if invoice_id is not None and invoices:
        deal_id = invoices[0].deal_id
    payments: dict[int, list[PaymentLine]] = defaultdict(list)
    if ids:
        rows = s.execute(  # plain columns, not entities: a deal may carry hundreds of payments
            select(Allocation.invoice_b24_id, Allocation.amount, Allocation.outcome, Operation.id,
                   Operation.operation_date, Operation.payer_name, Operation.payer_inn, Operation.amount,
                   Operation.currency, Operation.purpose, Operation.state, Decision.outcome, Decision.reasons,
                   Decision.actor_user_id, Decision.created_at, Allocation.decision_id, Operation.source, BankLink.id,
                   BankLink.provider)
            .join(Operation, Operation.id == Allocation.operation_pk)
            .join(Decision, Decision.id == Allocation.decision_id)
            .outerjoin(BankAccount, BankAccount.id == Operation.account_id)  # the bank label, in the same read
            .outerjoin(BankLink, BankLink.id == BankAccount.link_id)
            .where(Allocation.portal_id == portal_id, Allocation.invoice_b24_id.in_(ids),
                   Allocation.revoked_at.is_(None), Operation.portal_id == portal_id)
            .order_by(Operation.operation_date.desc(), Operation.id.desc()))
        for (inv_id, alloc_amount, alloc_outcome, op_id, op_date, payer, inn, op_amount, currency, purpose, state,
             outcome, reasons, actor, decided_at, decision_id, source, link_id, provider) in rows:
            payments[inv_id].append(PaymentLine(
                operation_pk=op_id, date=op_date, payer_name=payer or "", payer_inn=inn, amount=cents(alloc_amount),
                operation_amount=cents(op_amount), currency=currency, purpose=purpose or "",
                outcome=alloc_outcome or outcome, reasons=tuple(reasons or ()), manual=actor is not None,
                decided_at=decided_at, state=state, actor_user_id=actor,
                record_key=f"op{op_id}:d{decision_id}:inv{inv_id}:record",
                bank=bank_label(source, provider) if link_id is not None else None))
    _credit_payments(s, portal_id, ids, payments)
    _records(s, portal_id, payments)
    review = review_for(s, portal_id, invoices, limit=review_limit)
    flagged = {c for r in review for c in r.candidates}
    applied: dict[int, Decimal] = defaultdict(lambda: ZERO)  # per payment: how much went to invoices
    for pays in payments.values():
        for p in pays:
            applied[p.operation_pk] += p.amount
    lines = []
    for inv in invoices:
        pays = payments.get(inv.b24_id, [])
        paid = sum((p.amount for p in pays), ZERO)
        excess = sum((p.operation_amount - applied[p.operation_pk] for p in pays if p.outcome == "overpaid"), ZERO)
        amount = cents(inv.amount)
        lines.append(InvoiceLine(
            b24_id=inv.b24_id, number=inv.number or str(inv.b24_id), title=inv.title or "", amount=amount,
            currency=inv.currency, paid=paid, remaining=max(ZERO, amount - paid),
            percent=percent(amount, paid),
            status="overpaid" if excess > ZERO and inv.stage_semantics != "F" else
            invoice_status(amount, paid, inv.stage_semantics, inv.b24_id in flagged), excess=max(ZERO, excess),
            stage_id=inv.stage_id, stage_semantics=inv.stage_semantics, assigned_by_id=inv.assigned_by_id,
            deal_id=inv.deal_id, payments=tuple(pays)))
    status = {line.b24_id: line.status for line in lines}
    selected = {r.operation_pk: next((i.b24_id for i in invoices if i.b24_id in r.candidates and related(i, r)
                                      and status[i.b24_id] not in ("paid", "overpaid", "cancelled")), None)
                for r in review}
    inns = {i.payer_inn for i in invoices if i.payer_inn}
    left = tuple((inn, cur, bal) for (inn, cur), bal in sorted(credit.balances(s, portal_id, inns).items()) if bal > 0)
    return WidgetData(kind=kind, entity_id=entity, deal_id=deal_id, invoices=tuple(lines), review=tuple(review),
                      bank=bank_state(s, portal_id), totals=totals(lines),
                      owner_ids=frozenset(i.assigned_by_id for i in invoices if i.assigned_by_id), selected=selected,
                      credit=left)


def _credit_payments(s: Session, portal_id: int, ids: list[int], payments: dict) -> None:
    """The client's credit put on these invoices, as payment lines (#15)."""
    if not ids:
        return
    rows = list(s.scalars(select(Credit).where(Credit.portal_id == portal_id, Credit.kind == "applied",
                                               Credit.revoked_at.is_(None), Credit.invoice_b24_id.in_(ids))))
    banks = payment_banks(s, portal_id, sorted({c.operation_pk for c in rows}))  # no query when there is none
    for c in rows:
        payments[int(c.invoice_b24_id)].append(PaymentLine(
            operation_pk=c.operation_pk, date=c.created_at, payer_name="", payer_inn=c.inn, amount=cents(-c.amount),
            operation_amount=cents(-c.amount), currency=c.currency, purpose="", outcome="credit",
            reasons=tuple(c.reasons or ()), manual=c.actor_user_id is not None, decided_at=c.created_at,
            state="credit", credit_id=c.id, record_key=f"credit{c.id}:inv{c.invoice_b24_id}:record",
            bank=banks.get(c.operation_pk)))


def record_state(status: str, result: dict | None) -> str:
    """What became of a payment record's outbox item, as the tab says it."""
    result = result or {}
    if status in ("pending", "sending"):
        return "pending"
    if result.get("payment_id"):
        return "made"
    if result.get("needs_scope"):
        return "needs_sale"
    if result.get("needs_admin"):
        return "needs_admin"
    return "not_made"


def _records(s: Session, portal_id: int, payments: dict) -> None:
    """Whether each payment's record was made on the deal (or why not), from the outbox (#15)."""
    keys = [p.record_key for pays in payments.values() for p in pays if p.record_key]
    found: dict[str, str] = {}
    for n in range(0, len(keys), 500):
        for key, status, result in s.execute(select(OutboxItem.key, OutboxItem.status, OutboxItem.result).where(
                OutboxItem.portal_id == portal_id, OutboxItem.key.in_(keys[n:n + 500]))):
            found[key] = record_state(status, result)
    for inv, pays in payments.items():
        payments[inv] = [replace(p, record=found.get(p.record_key)) for p in pays]


def totals(lines: Iterable[InvoiceLine]) -> tuple[Totals, ...]:
    acc: dict[str, list[Decimal]] = {}
    for line in lines:
        if line.status == "cancelled":
            continue
        t = acc.setdefault(line.currency, [ZERO, ZERO, ZERO])
        t[0] += line.amount
        t[1] += line.paid
        t[2] += line.remaining
    return tuple(Totals(c, *v) for c, v in sorted(acc.items()))


def review_for(s: Session, portal_id: int, invoices: list[Invoice], limit: int = 50) -> list[ReviewLine]:
    """Payments waiting for review that point at these invoices: by candidate, payer INN or number."""
    if not invoices:
        return []
    ids = {i.b24_id for i in invoices}
    inns = {i.payer_inn for i in invoices if i.payer_inn}
    keys = {i.number_key for i in invoices if i.number_key}
    out = []
    for line in _review_lines(s, portal_id, limit=MAX_QUEUE):
        numbers = set(_number_keys(line.numbers))
        hit = [c for c in line.candidates if c in ids]
        if hit or (line.payer_inn and line.payer_inn in inns) or (numbers & keys):
            out.append(line)
        if len(out) >= limit:
            break
    return out
