"""Payments waiting for a person (unmatched, ambiguous, overpaid), as the tab and the admin page list them, and
the small helpers both read models share (search, amounts, candidates)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterable

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from ..domain.money import cents, parse_search_amount
from ..domain.numbers import normalize_invoice_number
from ..domain.states import CLOSED_STATES, REVIEW_STATES, OpState
from b24app.storage.models import Decision, Invoice, Operation

ZERO = Decimal("0.00")
# REVIEW_STATES: operation states a person may assign; CLOSED_STATES: review items a person closed without
# an invoice (both from domain/states.py)
QUEUE_STATES = (*REVIEW_STATES, OpState.OVERPAID)  # what the admin's review queue lists
STATUSES = ("paid", "partly_paid", "overpaid", "awaiting", "review", "cancelled")
MAX_QUEUE = 200


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


def candidate_ids(candidates: Any) -> tuple[int, ...]:
    """Invoice ids a decision names (`Decision.candidates` holds Bitrix24 invoice ids, as reconcile writes them)."""
    return tuple(dict.fromkeys(int(c) for c in candidates or ()))


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
            amount=cents(op.amount), currency=op.currency, purpose=op.purpose or "", state=op.state,
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
