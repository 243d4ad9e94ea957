"""What the app's own page shows: the review queue and where each payment may go, the history of decisions,
the 30-day chart's numbers and the first-run checklist."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from b24app.pipeline import credit
from ..domain.money import cents, parse_search_amount
from ..domain.numbers import normalize_invoice_number
from ..domain.states import OpState
from b24app.storage.models import Allocation, BankAccount, BankLink, Decision, Invoice, Operation, OutboxItem
from .bank import BankState
from .review import (CLOSED_STATES, MAX_QUEUE, QUEUE_STATES, ZERO, ReviewLine, _icontains, _review_lines,
                     _search, named_invoices, related)


@dataclass(frozen=True)
class HistoryLine:
    decision_id: int
    operation_pk: int
    created_at: datetime
    superseded_at: datetime | None
    outcome: str
    confidence: str
    actor_user_id: int | None
    reasons: tuple[Any, ...]
    date: datetime
    payer_name: str
    amount: Decimal
    currency: str
    purpose: str
    invoices: tuple[tuple[int, str, Decimal, bool], ...]  # (b24_id, number, amount, revoked)
    deal_ids: tuple[int, ...]
    actions: tuple[dict, ...]


@dataclass(frozen=True)
class ChartDay:
    day: date
    received: Decimal
    matched: Decimal


def review_queue(s: Session, portal_id: int, search: str = "", limit: int = 100, *,
                 closed: bool = False) -> list[ReviewLine]:
    """Unmatched, ambiguous and overpaid payments (or, with `closed`, those a person closed without an
    invoice), newest first, optionally searched."""
    return _review_lines(s, portal_id, limit=min(limit, MAX_QUEUE), search=search,
                         states=CLOSED_STATES if closed else QUEUE_STATES)


@dataclass(frozen=True)
class AssignTargets:
    """What the assign selector of one review item offers."""

    open: tuple[Invoice, ...]        # invoices with something due, candidates first
    paid: tuple[Invoice, ...]        # paid already: offered only with an explicit "pay over"
    selected: int | None             # a candidate the payer relates to (by INN or by number), else nothing


def paid_amounts(s: Session, portal_id: int, ids: Iterable[int]) -> dict[int, Decimal]:
    ids = list(ids)
    if not ids:
        return {}
    rows = s.execute(select(Allocation.invoice_b24_id, func.sum(Allocation.amount))
                     .where(Allocation.portal_id == portal_id, Allocation.revoked_at.is_(None),
                            Allocation.invoice_b24_id.in_(ids)).group_by(Allocation.invoice_b24_id))
    out = {int(i): cents(v) for i, v in rows}
    for inv_id, put in credit.applied_by_invoice(s, portal_id, ids).items():
        out[inv_id] = out.get(inv_id, ZERO) + put
    return out


def is_paid(inv: Invoice, paid: Decimal) -> bool:
    """Nothing left to pay: closed as paid, or the money received covers the amount."""
    return inv.stage_semantics == "S" or (inv.amount > ZERO and paid >= inv.amount)


def assign_targets(s: Session, portal_id: int, line: ReviewLine, limit: int = 20) -> AssignTargets:
    """Where a queued payment may go: its candidates and the invoices its reasons name (e.g. the one paid
    already), the invoices of their deals and of the same payer (INN), same currency. Those with something due
    come first (candidates first); those paid already apart, offered only with "pay over"; pre-selected only a
    candidate the payer relates to, so one click never sends money to a stranger's deal. Anything else is found
    by searching (`find_open_invoices`)."""
    cands = list(line.candidates) + [i for i in named_invoices(line) if i not in line.candidates]
    deals = set(s.scalars(select(Invoice.deal_id).where(
        Invoice.portal_id == portal_id, Invoice.b24_id.in_(cands or [-1]), Invoice.deal_id.is_not(None))))
    near = [Invoice.b24_id.in_(cands or [-1]), Invoice.deal_id.in_(deals or [-1])]
    if line.payer_inn:
        near.append(Invoice.payer_inn == line.payer_inn)
    rows = [i for i in s.scalars(select(Invoice).where(
        Invoice.portal_id == portal_id, Invoice.currency == line.currency, or_(*near),
        or_(Invoice.stage_semantics.is_(None), Invoice.b24_id.in_(cands or [-1])))
        .order_by(Invoice.b24_id.desc()).limit(limit)) if i.stage_semantics != "F"]
    order = {b: n for n, b in enumerate(cands)}
    rows.sort(key=lambda i: (order.get(i.b24_id, len(order)), -i.b24_id))
    paid = paid_amounts(s, portal_id, [i.b24_id for i in rows])
    due = tuple(i for i in rows if not is_paid(i, paid.get(i.b24_id, ZERO)))
    done = tuple(i for i in rows if is_paid(i, paid.get(i.b24_id, ZERO)))
    selected = next((i.b24_id for i in due if i.b24_id in line.candidates and related(i, line)), None)
    return AssignTargets(due, done, selected)


def find_open_invoices(s: Session, portal_id: int, currency: str, text: str, limit: int = 20) -> list[Invoice]:
    """Open invoices in `currency` whose number, title or amount matches what a person typed."""
    text = (text or "").strip()[:100]
    q = select(Invoice).where(Invoice.portal_id == portal_id, Invoice.currency == currency,
                              Invoice.stage_semantics.is_(None))
    if text:
        conds = [*_icontains(Invoice.number, text), *_icontains(Invoice.title, text)]
        key = normalize_invoice_number(text)
        if key:
            conds.append(Invoice.number_key.contains(key))
        amount = parse_search_amount(text)
        if amount is not None:
            conds.append(Invoice.amount == amount)
        if text.isdigit() and len(text) < 18:
            conds.append(Invoice.deal_id == int(text))
        q = q.where(or_(*conds))
    return list(s.scalars(q.order_by(Invoice.b24_id.desc()).limit(limit)))


def history(s: Session, portal_id: int, *, outcome: str = "", search: str = "", deal_id: int | None = None,
            invoice: str = "", before_id: int | None = None, limit: int = 50) -> list[HistoryLine]:
    """Every decision, newest first, with its allocations and the Bitrix24 actions it caused."""
    q = (select(Decision, Operation).join(Operation, Operation.id == Decision.operation_pk)
         .where(Decision.portal_id == portal_id))
    if outcome:
        q = q.where(Decision.outcome == outcome)
    if before_id:
        q = q.where(Decision.id < before_id)
    if deal_id or invoice:
        inv_q = select(Invoice.b24_id).where(Invoice.portal_id == portal_id)
        if deal_id:
            inv_q = inv_q.where(Invoice.deal_id == deal_id)
        if invoice:
            inv_q = inv_q.where(or_(Invoice.number_key == normalize_invoice_number(invoice),
                                    Invoice.b24_id == (int(invoice) if invoice.isdigit() and len(invoice) < 18
                                                       else -1)))
        q = q.where(Decision.id.in_(select(Allocation.decision_id).where(
            Allocation.portal_id == portal_id, Allocation.invoice_b24_id.in_(inv_q))))
    q = _search(q, search)
    rows = list(s.execute(q.order_by(Decision.id.desc()).limit(min(limit, 200))))
    dec_ids = [d.id for d, _ in rows]
    op_ids = list({op.id for _, op in rows})
    allocs: dict[int, list[Allocation]] = defaultdict(list)
    inv_nums: dict[int, tuple[str, int | None]] = {}
    actions: dict[int, list[dict]] = defaultdict(list)
    if dec_ids:
        for a in s.scalars(select(Allocation).where(Allocation.decision_id.in_(dec_ids)).order_by(Allocation.id)):
            allocs[a.decision_id].append(a)
        b24_ids = {a.invoice_b24_id for v in allocs.values() for a in v}
        if b24_ids:
            for inv in s.scalars(select(Invoice).where(Invoice.portal_id == portal_id,
                                                       Invoice.b24_id.in_(b24_ids))):
                inv_nums[inv.b24_id] = (inv.number, inv.deal_id)
        for item in s.scalars(select(OutboxItem).where(OutboxItem.portal_id == portal_id,
                                                       OutboxItem.operation_pk.in_(op_ids))
                              .order_by(OutboxItem.id)):
            actions[item.operation_pk].append({"kind": item.kind, "status": item.status, "attempts": item.attempts,
                                               "created_at": item.created_at, "done_at": item.done_at,
                                               "last_error": item.last_error})
    out = []
    for dec, op in rows:
        lines = tuple((a.invoice_b24_id, inv_nums.get(a.invoice_b24_id, (str(a.invoice_b24_id), None))[0],
                       cents(a.amount), a.revoked_at is not None) for a in allocs.get(dec.id, []))
        deals = tuple(sorted({d for b, *_ in lines if (d := inv_nums.get(b, ("", None))[1])}))
        out.append(HistoryLine(
            decision_id=dec.id, operation_pk=op.id, created_at=dec.created_at, superseded_at=dec.superseded_at,
            outcome=dec.outcome, confidence=dec.confidence, actor_user_id=dec.actor_user_id,
            reasons=tuple(dec.reasons or ()), date=op.operation_date, payer_name=op.payer_name or "",
            amount=cents(op.amount), currency=op.currency, purpose=op.purpose or "", invoices=lines,
            deal_ids=deals, actions=tuple(actions.get(op.id, ()))))
    return out


def daily_chart(s: Session, portal_id: int, today: date, days: int = 30, tz: str = "Europe/Moscow",
                currency: str = "RUB") -> list[ChartDay]:
    """Received (credit transactions) and matched (current allocations) per day, oldest first."""
    zone = ZoneInfo(tz)
    first = today - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=zone).astimezone(timezone.utc)
    received: dict[date, Decimal] = defaultdict(lambda: ZERO)
    matched: dict[date, Decimal] = defaultdict(lambda: ZERO)
    base = (Operation.portal_id == portal_id, Operation.is_credit.is_(True), Operation.currency == currency,
            Operation.bank_status == "Transaction", Operation.operation_date >= start)
    for when, amount in s.execute(select(Operation.operation_date, Operation.amount).where(*base)):
        received[when.astimezone(zone).date()] += amount
    for when, amount in s.execute(
            select(Operation.operation_date, Allocation.amount).join(Allocation, Allocation.operation_pk == Operation.id)
            .where(*base, Allocation.revoked_at.is_(None), Allocation.portal_id == portal_id)):
        matched[when.astimezone(zone).date()] += amount
    return [ChartDay(d, cents(received[d]), cents(matched[d]))
            for d in (first + timedelta(days=n) for n in range(days))]


@dataclass(frozen=True)
class FirstRun:
    """The admin page's first-run checklist: link the bank, choose accounts, check the rules, a first payment."""

    linked: bool
    accounts: bool
    rules: bool
    payment: bool

    @property
    def done(self) -> bool:
        return self.linked and self.accounts and self.rules and self.payment

    @property
    def steps(self) -> tuple[tuple[str, bool], ...]:
        return (("link", self.linked), ("accounts", self.accounts), ("rules", self.rules), ("payment", self.payment))


def payments_seen(s: Session, portal_id: int) -> bool:
    """Whether the app has decided at least one incoming payment of this portal."""
    return s.scalar(select(Operation.id).where(Operation.portal_id == portal_id, Operation.is_credit.is_(True),
                                               Operation.state != OpState.NEW).limit(1)) is not None


def first_run(s: Session, portal_id: int, bank: BankState, rules_saved: bool) -> FirstRun:
    """A portal that works from 1C files has its bank (the statement it imported) and its accounts (those the
    files named), though no live link."""
    from_files = bool(s.scalar(select(func.count()).select_from(BankAccount).join(BankLink, BankLink.id ==
                                                                                  BankAccount.link_id)
                               .where(BankLink.portal_id == portal_id, BankLink.provider == "file",
                                      BankLink.status == "active", BankAccount.file_imported_at.is_not(None))))
    return FirstRun(linked=bank.linked or from_files, accounts=bank.watched_count > 0 or from_files,
                    rules=rules_saved, payment=payments_seen(s, portal_id))
