"""Read models: the queries that build what the widget and the admin page show (no Flask, no HTTP)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from .domain.formatting import visible_text  # noqa: F401  (the `plain` template filter comes from here)
from .domain.explain import explain_reason
from .domain.formatting import format_money, language
from .domain.matching import Reason
from .domain.numbers import normalize_invoice_number
from . import credit
from .models import (Allocation, BankAccount, BankLink, Credit, Decision, Invoice, Operation, OutboxItem, Portal,
                     QuarantinedOperation)

ZERO = Decimal("0.00")
REVIEW_STATES = ("review", "unmatched")          # operation states a person may assign
QUEUE_STATES = ("review", "unmatched", "overpaid")  # what the admin's review queue lists
CLOSED_STATES = ("ignored", "refund", "credit")     # review items a person closed without an invoice
STATUSES = ("paid", "partly_paid", "overpaid", "awaiting", "review", "cancelled")
MAX_QUEUE = 200


# -- value objects ------------------------------------------------------------------------------
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

    @property
    def subtitle(self) -> str:
        """The invoice's title unless it only repeats the number ("Счёт 1207")."""
        rest = self.title.replace(self.number, "").strip(" №#-:.")
        return "" if rest.lower() in ("", "счёт", "счет", "invoice", "inv") else self.title


@dataclass(frozen=True)
class ReviewLine:
    """A payment waiting for a person: unmatched, ambiguous, or overpaid."""

    operation_pk: int
    date: datetime
    payer_name: str
    payer_inn: str | None
    amount: Decimal
    currency: str
    purpose: str
    state: str
    outcome: str
    reasons: tuple[Any, ...]
    candidates: tuple[int, ...]
    numbers: tuple[str, ...]
    proposal: tuple[str, ...] = ()  # invoice numbers the app proposes (INN and amount), one click to accept


def _proposal(reasons) -> tuple[str, ...]:
    """Numbers of the invoices a decision proposes to pay (see reconcile.PROPOSAL_CODES)."""
    for r in reasons or ():
        if isinstance(r, dict) and r.get("code") in ("inn_amount_unique", "inn_amount_combination",
                                                     "inn_combination_unconfirmed"):
            params = r.get("params") or {}
            numbers = params.get("invoices") or ([params["invoice"]] if params.get("invoice") else [])
            return tuple(str(n) for n in numbers)
    return ()


@dataclass(frozen=True)
class AccountLine:
    id: int
    number: str
    name: str
    currency: str
    watched: bool
    last_synced_at: datetime | None
    next_sync_at: datetime | None
    sync_requested_at: datetime | None
    last_error: str | None
    failures: int
    error_code: str | None = None  # bank.errors.SyncErrorCode of last_error

    @property
    def masked(self) -> str:
        return mask_account(self.number)


def mask_account(number: str) -> str:
    """An account number as pages and the API show it: its last four digits only."""
    return f"•••• {number[-4:]}" if len(number) > 4 else number


@dataclass(frozen=True)
class BankState:
    """The portal's bank link as a person needs to see it."""

    linked: bool
    link_id: int | None = None
    kind: str | None = None
    health: str = "not_linked"  # not_linked | ok | needs_consent | rate_limited | error | syncing | no_accounts
    company: str | None = None
    inn: str | None = None
    last_error: str | None = None
    accounts: tuple[AccountLine, ...] = ()
    quarantined: int = 0  # statement items kept raw because they were malformed; never matched
    live_off: str | None = None  # why the bank does not push operations (scope | email | refused); None: it does
    poll_every: int | None = None  # seconds between statement polls
    last_failure: dict | None = None  # the last link attempt that did not complete: at, reason, detail, user_id

    @property
    def last_synced_at(self) -> datetime | None:
        times = [a.last_synced_at for a in self.accounts if a.watched and a.last_synced_at]
        return max(times) if times else None

    @property
    def watched_count(self) -> int:
        return sum(1 for a in self.accounts if a.watched)


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


# -- pure helpers -------------------------------------------------------------------------------
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


def candidate_ids(candidates: Any) -> tuple[int, ...]:
    """Invoice ids named by a decision's candidates, whatever their stored shape (ids or dicts)."""
    out: list[int] = []
    for c in candidates or []:
        value = c
        if isinstance(c, dict):
            value = next((c[k] for k in ("invoice_b24_id", "b24_id", "invoice_id", "invoice", "id") if k in c), None)
        if isinstance(value, bool):
            continue
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            if int(value) not in out:
                out.append(int(value))
    return tuple(out)


def _dec(value) -> Decimal:
    return Decimal(value if value is not None else 0).quantize(Decimal("0.01"))


# -- bank -----------------------------------------------------------------------------------------
def bank_state(s: Session, portal_id: int) -> BankState:
    link = s.scalar(select(BankLink).where(BankLink.portal_id == portal_id, BankLink.status != "unlinked")
                    .order_by(BankLink.updated_at.desc(), BankLink.id.desc()).limit(1))
    portal = s.get(Portal, portal_id)
    failure = (portal.settings or {}).get("bank_link_failure") if portal is not None else None
    failure = failure if isinstance(failure, dict) and failure.get("reason") else None
    if link is None:
        return BankState(linked=False, last_failure=failure)
    accounts = tuple(AccountLine(
        id=a.id, number=a.account_number, name=a.name or "", currency=a.currency, watched=bool(a.watched),
        last_synced_at=a.last_synced_at, next_sync_at=a.next_sync_at, sync_requested_at=a.sync_requested_at,
        last_error=a.last_error, failures=a.failures or 0, error_code=a.last_error_code)
        for a in s.scalars(select(BankAccount).where(BankAccount.link_id == link.id).order_by(BankAccount.id)))
    quarantined = s.scalar(select(func.count()).select_from(QuarantinedOperation).where(
        QuarantinedOperation.portal_id == portal_id)) or 0
    return BankState(linked=True, link_id=link.id, kind=link.kind, health=link_health(link, accounts),
                     company=link.company_name, inn=link.inn, last_error=link.last_error, accounts=accounts,
                     quarantined=quarantined, last_failure=failure)


def link_health(link: BankLink, accounts: Iterable[AccountLine]) -> str:
    accounts = list(accounts)
    if link.status == "needs_consent":
        return "needs_consent"
    health = health_of_errors([a.error_code or ("bank_error" if a.last_error else None)
                               for a in accounts if a.watched] + ["bank_error" if link.last_error else None])
    if health is not None:
        return health
    if not any(a.watched for a in accounts):
        return "no_accounts"
    return "ok"


def health_of_errors(codes: Iterable[str | None]) -> str | None:
    """The link's health from its accounts' stored error codes (bank.errors.SyncErrorCode), never from the
    words of a message (a "corporate" card's error is not a rate limit): rate_limited before needs_consent
    before error; None when there is no error."""
    codes = {c for c in codes if c}
    if "rate_limited" in codes:
        return "rate_limited"
    if "needs_consent" in codes:
        return "needs_consent"
    return "error" if codes else None


# -- the widget ---------------------------------------------------------------------------------
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
                   Decision.actor_user_id, Decision.created_at)
            .join(Operation, Operation.id == Allocation.operation_pk)
            .join(Decision, Decision.id == Allocation.decision_id)
            .where(Allocation.portal_id == portal_id, Allocation.invoice_b24_id.in_(ids),
                   Allocation.revoked_at.is_(None), Operation.portal_id == portal_id)
            .order_by(Operation.operation_date.desc(), Operation.id.desc()))
        for (inv_id, alloc_amount, alloc_outcome, op_id, op_date, payer, inn, op_amount, currency, purpose, state,
             outcome, reasons, actor, decided_at) in rows:
            payments[inv_id].append(PaymentLine(
                operation_pk=op_id, date=op_date, payer_name=payer or "", payer_inn=inn, amount=_dec(alloc_amount),
                operation_amount=_dec(op_amount), currency=currency, purpose=purpose or "",
                outcome=alloc_outcome or outcome, reasons=tuple(reasons or ()), manual=actor is not None,
                decided_at=decided_at, state=state, actor_user_id=actor))
    _credit_payments(s, portal_id, ids, payments)
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
        amount = _dec(inv.amount)
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
    rows = s.scalars(select(Credit).where(Credit.portal_id == portal_id, Credit.kind == "applied",
                                          Credit.revoked_at.is_(None), Credit.invoice_b24_id.in_(ids)))
    for c in rows:
        payments[int(c.invoice_b24_id)].append(PaymentLine(
            operation_pk=c.operation_pk, date=c.created_at, payer_name="", payer_inn=c.inn, amount=_dec(-c.amount),
            operation_amount=_dec(-c.amount), currency=c.currency, purpose="", outcome="credit",
            reasons=tuple(c.reasons or ()), manual=c.actor_user_id is not None, decided_at=c.created_at,
            state="credit", credit_id=c.id))


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


def _number_keys(numbers: Iterable[str]) -> list[str]:
    return [normalize_invoice_number(str(n)) for n in numbers if n]


def _review_lines(s: Session, portal_id: int, *, limit: int, search: str = "",
                  states: tuple[str, ...] = REVIEW_STATES) -> list[ReviewLine]:
    q = (select(Operation, Decision)
         .outerjoin(Decision, and_(Decision.operation_pk == Operation.id, Decision.superseded_at.is_(None)))
         .where(Operation.portal_id == portal_id, Operation.is_credit.is_(True), Operation.state.in_(states)))
    q = _search(q, search)
    q = q.order_by(Operation.operation_date.desc(), Operation.id.desc()).limit(limit)
    lines = []
    for op, dec in s.execute(q):
        lines.append(ReviewLine(
            operation_pk=op.id, date=op.operation_date, payer_name=op.payer_name or "", payer_inn=op.payer_inn,
            amount=_dec(op.amount), currency=op.currency, purpose=op.purpose or "", state=op.state,
            outcome=(dec.outcome if dec else op.state), reasons=tuple(dec.reasons or ()) if dec else (),
            candidates=candidate_ids(dec.candidates) if dec else (),
            numbers=tuple(str(n) for n in (dec.numbers or ())) if dec else (),
            proposal=_proposal(dec.reasons) if dec and op.state in REVIEW_STATES else ()))
    return lines


def _search(q, search: str):
    """Filter by purpose or payer (substring, case-insensitive) or by amount when the text is a number."""
    text = (search or "").strip()[:200]
    if not text:
        return q
    conds = [*_icontains(Operation.purpose, text), *_icontains(Operation.payer_name, text),
             Operation.payer_inn == text]
    amount = parse_search_amount(text)
    if amount is not None:
        conds.append(Operation.amount == amount)
    return q.where(or_(*conds))


def _icontains(column, text: str) -> list:
    """Case-insensitive substring match. SQLite's lower() folds ASCII only, so the usual spellings of a
    Cyrillic word (as typed, lower, Capitalised, UPPER) are tried as well; PostgreSQL's lower() is enough."""
    variants = {text, text.lower(), text.upper(), text[:1].upper() + text[1:].lower()}
    return [func.lower(column).contains(text.lower(), autoescape=True)] + \
        [column.contains(v, autoescape=True) for v in sorted(variants)]


def parse_search_amount(text: str) -> Decimal | None:
    cleaned = text.replace("\u00a0", "").replace(" ", "").replace("₽", "").replace(",", ".")
    try:
        value = Decimal(cleaned)
    except ArithmeticError:
        return None
    if not value.is_finite() or value <= 0 or value > Decimal("1e15"):
        return None
    return value.quantize(Decimal("0.01"))


# -- admin ----------------------------------------------------------------------------------------
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
    out = {int(i): _dec(v) for i, v in rows}
    for inv_id, put in credit.applied_by_invoice(s, portal_id, ids).items():
        out[inv_id] = out.get(inv_id, ZERO) + put
    return out


def is_paid(inv: Invoice, paid: Decimal) -> bool:
    """Nothing left to pay: closed as paid, or the money received covers the amount."""
    return inv.stage_semantics == "S" or (inv.amount > ZERO and paid >= inv.amount)


def related(inv: Invoice, line: ReviewLine) -> bool:
    """The payer has something to do with this invoice: its INN, or a number the purpose names."""
    if line.payer_inn and inv.payer_inn and inv.payer_inn == line.payer_inn:
        return True
    return bool(inv.number_key) and inv.number_key in set(_number_keys(line.numbers))


def named_invoices(line: ReviewLine) -> tuple[int, ...]:
    """Invoices the stored reasons name (e.g. the one paid already), besides the candidates."""
    out = []
    for r in line.reasons:
        inv_id = (r.get("params") or {}).get("invoice_id") if isinstance(r, dict) else None
        if isinstance(inv_id, int) and not isinstance(inv_id, bool) and inv_id not in out:
            out.append(inv_id)
    return tuple(out)


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
                                               Operation.state != "new").limit(1)) is not None


def first_run(s: Session, portal_id: int, bank: BankState, rules_saved: bool) -> FirstRun:
    return FirstRun(linked=bank.linked, accounts=bank.watched_count > 0, rules=rules_saved,
                    payment=payments_seen(s, portal_id))




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
                       _dec(a.amount), a.revoked_at is not None) for a in allocs.get(dec.id, []))
        deals = tuple(sorted({d for b, *_ in lines if (d := inv_nums.get(b, ("", None))[1])}))
        out.append(HistoryLine(
            decision_id=dec.id, operation_pk=op.id, created_at=dec.created_at, superseded_at=dec.superseded_at,
            outcome=dec.outcome, confidence=dec.confidence, actor_user_id=dec.actor_user_id,
            reasons=tuple(dec.reasons or ()), date=op.operation_date, payer_name=op.payer_name or "",
            amount=_dec(op.amount), currency=op.currency, purpose=op.purpose or "", invoices=lines,
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
    return [ChartDay(d, _dec(received[d]), _dec(matched[d]))
            for d in (first + timedelta(days=n) for n in range(days))]


@dataclass(frozen=True)
class ChartGeometry:
    """Bars for an inline SVG: no JavaScript chart library needed."""

    width: int
    height: int
    max_value: Decimal
    bars: tuple[tuple[ChartDay, float, float, float, float, float], ...]  # day, x, w, h_received, h_matched, base


def chart_geometry(days: list[ChartDay], width: int = 600, height: int = 140) -> ChartGeometry:
    top = max([d.received for d in days] + [d.matched for d in days] + [ZERO])
    scale = float(top) if top > 0 else 1.0
    n = max(1, len(days))
    slot = width / n
    w = max(1.0, slot * 0.38)
    base = float(height)
    bars = tuple((d, round(i * slot + slot * 0.1, 2), round(w, 2),
                  round(float(d.received) / scale * (height - 4), 2),
                  round(float(d.matched) / scale * (height - 4), 2), base)
                 for i, d in enumerate(days))
    return ChartGeometry(width, height, top, bars)


# -- explanations ---------------------------------------------------------------------------------
_PEOPLE_REASONS = {
    "ru": {"manual_assignment": "платёж {amount} вручную отнесён к счёту {invoice} ({user})",
           "manual_assignment/short": "платёж вручную отнесён к счёту {invoice} ({user})",
           "undone": "сопоставление отменил(а) {user}",
           "reopened": "закрытие отменил(а) {user}, платёж снова ждёт разбора",
           "closed_ignored": "не оплата счёта ({user}): {reason}",
           "closed_refund": "вернуть плательщику ({user}); менеджеру сообщено в чат",
           "closed_credit": "оставлен авансом клиента с ИНН {inn} ({user})",
           "not_reverted": "уже отправлено и не отменено: {what}",
           "user": "пользователь {user_id}",
           "kinds": {"notify": "сообщение в чат", "timeline": "комментарий в ленте сделки", "task": "задача",
                     "trigger": "триггер автоматизации"}},
    "en": {"manual_assignment": "payment {amount} assigned to invoice {invoice} by hand ({user})",
           "manual_assignment/short": "payment assigned to invoice {invoice} by hand ({user})",
           "undone": "the match was undone by {user}",
           "reopened": "the closing was undone by {user}; the payment waits for review again",
           "closed_ignored": "not an invoice payment ({user}): {reason}",
           "closed_refund": "to be refunded to the payer ({user}); the manager was told in chat",
           "closed_credit": "kept as the credit of the client with INN {inn} ({user})",
           "not_reverted": "already sent and not taken back: {what}",
           "user": "user {user_id}",
           "kinds": {"notify": "the chat message", "timeline": "the deal timeline comment", "task": "the task",
                     "trigger": "the automation trigger"}},
}


_PEOPLE_CODES = ("manual_assignment", "undone", "reopened", "closed_ignored", "closed_refund", "closed_credit")


def explain_reasons(reasons: Iterable[Any], lang: str, currency: str = "RUB",
                    names: dict[str, str] | None = None) -> list[str]:
    """Stored reasons (`{"code", "params"}`) as sentences in the user's language, one per reason; people by
    name where `names` ({"id": "Name Last"}) knows them."""
    lang = language(lang)
    out: list[str] = []
    for raw in reasons or ():
        if isinstance(raw, str):
            text = raw
        elif isinstance(raw, dict) and isinstance(raw.get("code"), str):
            params = raw.get("params") if isinstance(raw.get("params"), dict) else {}
            code = raw["code"]
            if code in _PEOPLE_CODES:
                values = {k: str(v) for k, v in params.items()}
                values.setdefault("reason", "—")
                values.setdefault("inn", "—")
                values["user"] = (names or {}).get(values.get("user_id", "")) or \
                    _PEOPLE_REASONS[lang]["user"].format(user_id=values.get("user_id", "?"))
                if "amount" in params:
                    try:
                        values["amount"] = format_money(Decimal(str(params["amount"])), currency, lang)
                    except ArithmeticError:
                        pass
                key = code if code != "manual_assignment" or "amount" in values else "manual_assignment/short"
                try:
                    text = _PEOPLE_REASONS[lang][key].format(**values)
                except KeyError:
                    text = code
                kinds = params.get("not_reverted") if code in ("undone", "reopened") else None
                if kinds and isinstance(kinds, list):
                    kind_names = _PEOPLE_REASONS[lang]["kinds"]
                    text += "; " + _PEOPLE_REASONS[lang]["not_reverted"].format(
                        what=", ".join(kind_names.get(str(k), str(k)) for k in kinds))
            else:
                try:
                    text = explain_reason(Reason(code, dict(params)), lang)
                except (ArithmeticError, ValueError, TypeError):
                    text = code
        else:
            continue
        text = text.strip()
        if text:
            out.append(text[:1].upper() + text[1:])
    return out
