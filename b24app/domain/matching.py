"""Decide which open invoices an incoming payment pays, and how sure we are (Business Central style).

Three signals, as in Microsoft Business Central's payment-application matrix: the invoice number
found in the purpose, the payer's INN against the invoice's client, and the amount against what is
still due. Only a HIGH decision with a PAID / UNDERPAID / OVERPAID outcome may be applied without a
human; everything else is REVIEW (with candidates and, when there is one clear proposal, allocations
to pre-fill the review) or UNMATCHED.

Policy details beyond the brief:
- overpayment is "large" (REVIEW) when the surplus exceeds the full amount of the invoice that absorbs
  it (the last one in a multi-invoice payment);
- an invoice already fully paid that is referenced again goes to REVIEW (a likely double payment); when every
  number of the purpose names only paid invoices (open ones with nothing due, or closed as paid, which the
  index knows by number through `paid=`), the decision proposes nothing: no candidates, no hints by INN or
  amount, and no search by the end of the number (that is how money used to land on another deal);
- if some numbers of the purpose were not found among the candidates, the decision stays HIGH only when
  the amount equals exactly what is due on the invoices that were found;
- exact-number hits are resolved before suffix hits, so «№ 00412 (СЧ-00412)» is one exact hit.

When the purpose names no invoice (issue #15), the payer's INN leads to that client's open invoices: exactly one
whose remaining amount equals the payment, or exactly one set of 2-5 of them whose remaining amounts sum to it,
is a MEDIUM proposal (PAID outcome, never applied unless the rules say so); anything else is REVIEW with the
candidates. The set search looks at the oldest `MAX_INN_CANDIDATES` invoices only and examines at most
`COMBINATION_BUDGET` partial sets (meet in the middle over pair sums); when either bound cuts the search the
decision says so and stays a review. Payments from our own INN and bank categories the rules exclude are IGNORED.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Iterable, Protocol, Sequence

from .errors import DuplicateInvoiceError, InvalidInvoiceError, InvalidPaymentError, MoneyError
from .money import normalize_currency, parse_amount
from .numbers import normalize_invoice_number, number_tail_key, tail_of_key
from .purposes import extract_invoice_numbers

__all__ = [
    "Share", "Confidence", "IncomingPayment", "InvoiceIndex", "MatchDecision", "OpenInvoice",
    "Outcome", "Reason", "match_payment", "naive_match", "settle", "MAX_HINT_CANDIDATES", "MAX_INN_CANDIDATES",
    "COMBINATION_BUDGET", "find_combinations",
]

#: At most this many invoices are offered as LOW-confidence hints for one payment.
MAX_HINT_CANDIDATES = 20
#: The INN fallback searches sets among at most this many open invoices of one payer (the oldest).
MAX_INN_CANDIDATES = 30
#: Sets of 2..MAX_COMBINATION invoices are considered.
MAX_COMBINATION = 5
#: At most this many partial sets are examined per payment (the bound of `find_combinations`).
COMBINATION_BUDGET = 50_000
_ZERO = Decimal("0.00")


class Outcome(str, Enum):
    PAID = "paid"
    UNDERPAID = "underpaid"
    OVERPAID = "overpaid"
    REVIEW = "review"
    UNMATCHED = "unmatched"
    IGNORED = "ignored"      # not a client's payment at all (our own transfer, an excluded bank category)


class Confidence(str, Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    NONE = "none"


def _clean_inn(value: str | None) -> str | None:
    if value is None:
        return None
    text = "".join(str(value).split())
    return text or None


def _amount(value: object, what: str, error: type[Exception]) -> Decimal:
    try:
        return parse_amount(value)  # type: ignore[arg-type]
    except MoneyError as exc:
        raise error(f"{what}: {exc}") from exc


def _currency(value: str, error: type[Exception]) -> str:
    try:
        return normalize_currency(value)
    except MoneyError as exc:
        raise error(str(exc)) from exc


@dataclass(frozen=True)
class OpenInvoice:
    """A Bitrix24 smart invoice (entityTypeId 31) that can still receive money."""

    id: int
    number: str
    amount: Decimal
    currency: str
    paid: Decimal = Decimal(0)
    payer_inn: str | None = None
    mycompany_id: int | None = None
    deal_id: int | None = None
    created: datetime | None = None

    def __post_init__(self) -> None:
        amount = _amount(self.amount, "invoice amount", InvalidInvoiceError)
        paid = _amount(self.paid, "invoice paid", InvalidInvoiceError)
        if amount < 0 or paid < 0:
            raise InvalidInvoiceError(f"invoice {self.id}: negative amount or paid")
        if self.created is not None and self.created.utcoffset() is None:
            raise InvalidInvoiceError(f"invoice {self.id}: created must be timezone-aware")
        object.__setattr__(self, "amount", amount)
        object.__setattr__(self, "paid", paid)
        object.__setattr__(self, "currency", _currency(self.currency, InvalidInvoiceError))
        object.__setattr__(self, "payer_inn", _clean_inn(self.payer_inn))
        object.__setattr__(self, "number", str(self.number))

    @property
    def remaining(self) -> Decimal:
        """What is still due (never negative)."""
        return max(self.amount - self.paid, _ZERO)


@dataclass(frozen=True)
class IncomingPayment:
    """Money received on one of our accounts, with the purpose the payer wrote."""

    amount: Decimal
    currency: str
    purpose: str
    payer_inn: str | None = None
    payer_name: str | None = None
    mycompany_id: int | None = None
    category: str | None = None  # T-Bank's statement `category` (e.g. incomePeople), when given

    def __post_init__(self) -> None:
        amount = _amount(self.amount, "payment amount", InvalidPaymentError)
        if amount <= 0:
            raise InvalidPaymentError("payment amount must be positive")
        object.__setattr__(self, "amount", amount)
        object.__setattr__(self, "currency", _currency(self.currency, InvalidPaymentError))
        object.__setattr__(self, "purpose", self.purpose or "")
        object.__setattr__(self, "payer_inn", _clean_inn(self.payer_inn))


@dataclass(frozen=True)
class Share:
    """Money from one payment put on one invoice; `amount` includes any surplus (`overpaid_by`)."""

    invoice_id: int
    invoice_number: str
    amount: Decimal
    outcome: Outcome
    remaining: Decimal = _ZERO
    overpaid_by: Decimal = _ZERO


@dataclass(frozen=True)
class Reason:
    """One machine-readable reason of a decision; `explain()` renders it for people."""

    code: str
    params: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class MatchDecision:
    """What to do with one payment and why."""

    outcome: Outcome
    confidence: Confidence
    allocations: tuple[Share, ...] = ()
    candidates: tuple[int, ...] = ()
    numbers: tuple[str, ...] = ()
    reasons: tuple[Reason, ...] = ()

    @property
    def auto_apply(self) -> bool:
        """True only when a machine may apply the allocations without a human."""
        return self.confidence is Confidence.HIGH and self.outcome in (
            Outcome.PAID, Outcome.UNDERPAID, Outcome.OVERPAID,
        )

    @property
    def medium_proposal(self) -> bool:
        """A MEDIUM match by INN and amount: applied only when the rules say so, else a one-click review."""
        return self.confidence is Confidence.MEDIUM and self.outcome in (
            Outcome.PAID, Outcome.UNDERPAID, Outcome.OVERPAID,
        )


# --- lookups: the index and the naive scan answer the same four questions ---


class _Lookup(Protocol):
    def by_key(self, key: str) -> Sequence[OpenInvoice]: ...
    def by_tail(self, tail: str) -> Sequence[OpenInvoice]: ...
    def by_inn(self, inn: str) -> Sequence[OpenInvoice]: ...
    def by_remaining(self, currency: str, remaining: Decimal) -> Sequence[OpenInvoice]: ...
    def paid_by_key(self, key: str) -> Sequence[OpenInvoice]: ...


class InvoiceIndex:
    """Open invoices keyed by number, number tail, payer INN and remaining amount; O(1) per lookup.
    Invoices already closed as paid are known by number only (`paid_by_key`): never matched, but a payment
    naming one is recognised as a likely double payment."""

    def __init__(self) -> None:
        self._by_key: dict[str, list[OpenInvoice]] = defaultdict(list)
        self._by_tail: dict[str, list[OpenInvoice]] = defaultdict(list)
        self._by_inn: dict[str, list[OpenInvoice]] = defaultdict(list)
        self._by_remaining: dict[tuple[str, Decimal], list[OpenInvoice]] = defaultdict(list)
        self._ids: set[int] = set()
        self._by_id: dict[int, OpenInvoice] = {}
        self._paid_by_key: dict[str, list[OpenInvoice]] = defaultdict(list)

    @classmethod
    def from_invoices(cls, invoices: Iterable[OpenInvoice], paid: Iterable[OpenInvoice] = ()) -> InvoiceIndex:
        """`invoices`: those that can still receive money; `paid`: those closed as paid (known by number)."""
        index = cls()
        for invoice in invoices:
            index._add(invoice)
        for invoice in paid:
            index._paid_by_key[normalize_invoice_number(invoice.number)].append(invoice)
        return index

    def _add(self, invoice: OpenInvoice) -> None:
        if invoice.id in self._ids:
            raise DuplicateInvoiceError(f"invoice id {invoice.id} given twice")
        self._ids.add(invoice.id)
        self._by_id[invoice.id] = invoice
        key = normalize_invoice_number(invoice.number)
        self._by_key[key].append(invoice)
        tail = tail_of_key(key)
        if tail:
            self._by_tail[tail].append(invoice)
        if invoice.payer_inn:
            self._by_inn[invoice.payer_inn].append(invoice)
        self._by_remaining[(invoice.currency, invoice.remaining)].append(invoice)

    def replace(self, invoice: OpenInvoice) -> None:
        """Swap in a newer state of an indexed invoice (e.g. more paid) without rebuilding the index."""
        old = self._by_id.get(invoice.id)
        if old is None:
            raise InvalidInvoiceError(f"invoice id {invoice.id} is not in the index")
        key = normalize_invoice_number(old.number)
        for table, k in ((self._by_key, key), (self._by_tail, tail_of_key(key)), (self._by_inn, old.payer_inn),
                         (self._by_remaining, (old.currency, old.remaining))):
            rows = table.get(k)
            if rows is not None:
                rows[:] = [r for r in rows if r.id != invoice.id]
                if not rows:
                    del table[k]
        self._ids.discard(invoice.id)
        self._add(invoice)

    def __len__(self) -> int:
        return len(self._ids)

    def by_key(self, key: str) -> Sequence[OpenInvoice]:
        return self._by_key.get(key, ())

    def by_tail(self, tail: str) -> Sequence[OpenInvoice]:
        return self._by_tail.get(tail, ())

    def by_inn(self, inn: str) -> Sequence[OpenInvoice]:
        return self._by_inn.get(inn, ())

    def by_remaining(self, currency: str, remaining: Decimal) -> Sequence[OpenInvoice]:
        return self._by_remaining.get((currency, remaining), ())

    def paid_by_key(self, key: str) -> Sequence[OpenInvoice]:
        return self._paid_by_key.get(key, ())


class _LinearLookup:
    """The same questions answered by scanning every invoice (benchmark baseline)."""

    def __init__(self, invoices: Sequence[OpenInvoice], paid: Sequence[OpenInvoice] = ()) -> None:
        self._invoices = invoices
        self._paid = paid

    def paid_by_key(self, key: str) -> Sequence[OpenInvoice]:
        return [i for i in self._paid if normalize_invoice_number(i.number) == key]

    def by_key(self, key: str) -> Sequence[OpenInvoice]:
        return [i for i in self._invoices if normalize_invoice_number(i.number) == key]

    def by_tail(self, tail: str) -> Sequence[OpenInvoice]:
        return [i for i in self._invoices if tail and number_tail_key(i.number) == tail]

    def by_inn(self, inn: str) -> Sequence[OpenInvoice]:
        return [i for i in self._invoices if i.payer_inn == inn]

    def by_remaining(self, currency: str, remaining: Decimal) -> Sequence[OpenInvoice]:
        return [i for i in self._invoices if i.currency == currency and i.remaining == remaining]


def settle(amount: Decimal, due: Decimal) -> tuple[Outcome, Decimal, Decimal]:
    """What putting `amount` on an invoice with `due` left to pay makes of it: (outcome, still due, surplus).

    PAID when it covers the due exactly, UNDERPAID with what remains, OVERPAID with the surplus. The one place
    that decides it: the matcher, a person's assignment and an applied credit all ask here.
    """
    if amount == due:
        return Outcome.PAID, _ZERO, _ZERO
    if amount < due:
        return Outcome.UNDERPAID, due - amount, _ZERO
    return Outcome.OVERPAID, _ZERO, amount - due


def match_payment(payment: IncomingPayment, index: InvoiceIndex, *, own_inns: Iterable[str] = (),
                  ignore_categories: Iterable[str] = ()) -> MatchDecision:
    """The decision for one payment against an index of open invoices. `own_inns`: our companies' INNs (a payment
    from one is a transfer between our own accounts); `ignore_categories`: bank categories that are never a client's
    payment."""
    return _excluded(payment, own_inns, ignore_categories) or _decide(payment, index)


def naive_match(payment: IncomingPayment, invoices: list[OpenInvoice],
                paid: Sequence[OpenInvoice] = (), *, own_inns: Iterable[str] = (),
                ignore_categories: Iterable[str] = ()) -> MatchDecision:
    """Same rules as `match_payment` with a linear scan per lookup (only for benchmarks and tests)."""
    return _excluded(payment, own_inns, ignore_categories) or _decide(payment, _LinearLookup(invoices, paid))


def _excluded(payment: IncomingPayment, own_inns: Iterable[str], ignore_categories: Iterable[str]
              ) -> MatchDecision | None:
    """IGNORED when the payment is not a client's: from one of our own INNs, or in an excluded bank category."""
    inn = payment.payer_inn
    if inn and inn in {_clean_inn(i) for i in own_inns}:
        return MatchDecision(Outcome.IGNORED, Confidence.NONE, reasons=(Reason("own_transfer", {"inn": inn}),))
    category = (payment.category or "").strip()
    if category and category.lower() in {str(c).strip().lower() for c in ignore_categories}:
        return MatchDecision(Outcome.IGNORED, Confidence.NONE,
                             reasons=(Reason("ignored_category", {"category": category}),))
    return None


# --- the rules ---


@dataclass(frozen=True)
class _Hit:
    number: str
    exact: bool
    invoices: tuple[OpenInvoice, ...]


def _age_order(invoice: OpenInvoice) -> tuple:
    created = invoice.created
    return (created is None, created.timestamp() if created else 0.0, invoice.id)


def _eligible(
    payment: IncomingPayment, invoices: Iterable[OpenInvoice], number: str | None, reasons: list[Reason] | None
) -> list[OpenInvoice]:
    """Invoices in the payment's currency and own company; the others explained in `reasons`."""
    kept = []
    for inv in invoices:
        if inv.currency != payment.currency:
            if reasons is not None:
                reasons.append(Reason("currency_mismatch", {
                    "number": number, "invoice": inv.number, "invoice_id": inv.id,
                    "invoice_currency": inv.currency, "payment_currency": payment.currency,
                }))
        elif payment.mycompany_id is not None and inv.mycompany_id not in (None, payment.mycompany_id):
            if reasons is not None:
                reasons.append(Reason("other_company", {
                    "number": number, "invoice": inv.number, "invoice_id": inv.id,
                }))
        else:
            kept.append(inv)
    return kept


def _decide(payment: IncomingPayment, lookup: _Lookup) -> MatchDecision:
    numbers = tuple(extract_invoice_numbers(payment.purpose))
    reasons: list[Reason] = []
    keys = [normalize_invoice_number(n) for n in numbers]
    exact: list[list[OpenInvoice]] = []
    seen_exact: list[set[int]] = []
    paid_hits: list[Reason] = []
    for number, key in zip(numbers, keys):
        found = lookup.by_key(key)
        seen_exact.append({inv.id for inv in found})
        eligible = _eligible(payment, found, number, reasons)
        due = [inv for inv in eligible if inv.remaining > 0]
        paid = [inv for inv in eligible if inv.remaining <= 0]
        if not eligible:  # not open: maybe closed as paid already
            paid = _eligible(payment, lookup.paid_by_key(key), number, reasons)
        if not due and paid:
            paid_hits.extend(Reason("already_paid", {"number": number, "invoice": inv.number, "invoice_id": inv.id})
                             for inv in sorted(paid, key=_age_order))
            seen_exact[-1].update(inv.id for inv in paid)
            exact.append([])
            continue
        exact.append(due)
    used: set[int] = {inv.id for invs in exact for inv in invs}
    hits: list[_Hit] = []
    unresolved: list[str] = []
    for number, invs, seen in zip(numbers, exact, seen_exact):
        if invs:
            hits.append(_Hit(number, True, tuple(sorted(invs, key=_age_order))))
            continue
        if seen and any(r.params["number"] == number for r in paid_hits):
            continue  # this number names an invoice that is paid already: no guess by its end
        tail = number_tail_key(number)
        found = [inv for inv in lookup.by_tail(tail) if inv.id not in seen] if tail else []
        tails = _eligible(payment, found, number, reasons)
        fresh = [inv for inv in tails if inv.id not in used]
        if fresh:
            used.update(inv.id for inv in fresh)
            hits.append(_Hit(number, False, tuple(sorted(fresh, key=_age_order))))
        elif tails:
            continue  # the same invoice was already referenced by another number
        else:
            unresolved.append(number)
            if not seen and not found:
                reasons.append(Reason("number_not_found", {"number": number}))
    if not hits:
        if paid_hits:
            # A likely double payment: say so, and propose nothing (a person decides: refund, credit, pay over).
            return MatchDecision(Outcome.REVIEW, Confidence.LOW, (), (), numbers, tuple(reasons + paid_hits))
        return _fallback(payment, lookup, numbers, reasons)
    candidates = tuple(inv.id for hit in hits for inv in hit.invoices)
    ambiguous = [hit for hit in hits if len(hit.invoices) > 1]
    if ambiguous:
        for hit in ambiguous:
            reasons.append(Reason("number_ambiguous", {
                "number": hit.number, "count": len(hit.invoices),
                "invoices": [inv.number for inv in hit.invoices],
                "invoice_ids": [inv.id for inv in hit.invoices],
            }))
        return MatchDecision(Outcome.REVIEW, Confidence.MEDIUM, (), candidates, numbers, tuple(reasons + paid_hits))
    decision = _allocate(payment, hits, unresolved, numbers, candidates, reasons)
    if paid_hits:  # some numbers found open invoices, others paid ones: a person looks
        return MatchDecision(Outcome.REVIEW, Confidence.MEDIUM, decision.allocations, candidates, numbers,
                             decision.reasons + tuple(paid_hits))
    return decision


def _allocate(
    payment: IncomingPayment, hits: list[_Hit], unresolved: list[str], numbers: tuple[str, ...],
    candidates: tuple[int, ...], reasons: list[Reason],
) -> MatchDecision:
    invoices = [hit.invoices[0] for hit in hits]
    currency = payment.currency
    for hit, inv in zip(hits, invoices):
        reasons.append(Reason("number_found" if hit.exact else "number_tail_match", {
            "number": hit.number, "invoice": inv.number, "invoice_id": inv.id,
        }))
    total_due = sum((inv.remaining for inv in invoices), _ZERO)
    amount = payment.amount
    comparison = "equal" if amount == total_due else ("less" if amount < total_due else "more")
    if len(invoices) == 1:
        inv = invoices[0]
        code = {"equal": "amount_equals_due", "less": "amount_less_than_due", "more": "amount_exceeds_due"}
        reasons.append(Reason(code[comparison], {
            "amount": amount, "due": total_due, "currency": currency,
            "difference": abs(amount - total_due), "invoice": inv.number,
        }))
    else:
        reasons.append(Reason("multi_allocation", {
            "count": len(invoices), "amount": amount, "total_due": total_due, "currency": currency,
            "comparison": comparison, "difference": abs(amount - total_due),
        }))

    allocations: list[Share] = []
    left = amount
    last = len(invoices) - 1
    review: list[Reason] = []
    for position, inv in enumerate(invoices):
        due = inv.remaining
        if due == 0:
            review.append(Reason("already_paid", {"invoice": inv.number, "invoice_id": inv.id}))
        if left <= 0:
            reasons.append(Reason("not_covered", {"invoice": inv.number, "invoice_id": inv.id}))
            continue
        put = left if position == last else min(left, due)  # only the last invoice takes a surplus
        outcome, remaining, surplus = settle(put, due)
        if outcome is Outcome.OVERPAID and surplus > inv.amount:
            review.append(Reason("overpaid_large", {
                "invoice": inv.number, "invoice_id": inv.id, "excess": surplus,
                "invoice_amount": inv.amount, "currency": currency,
            }))
        if put > 0:
            allocations.append(Share(inv.id, inv.number, put, outcome, remaining, surplus))
        left -= put

    inn = payment.payer_inn
    mismatched = [inv for inv in invoices if inn and inv.payer_inn and inv.payer_inn != inn]
    for inv in mismatched:
        review.append(Reason("inn_mismatch", {
            "payment_inn": inn, "invoice_inn": inv.payer_inn, "invoice": inv.number, "invoice_id": inv.id,
        }))
    inn_matches_all = bool(inn) and all(inv.payer_inn == inn for inv in invoices)
    if inn_matches_all:
        reasons.append(Reason("inn_match", {"inn": inn}))
    if any(not hit.exact for hit in hits):
        strong_tail = len(invoices) == 1 and comparison == "equal" and inn_matches_all
        if not strong_tail:
            review.append(Reason("tail_match_needs_review", {
                "numbers": [hit.number for hit in hits if not hit.exact],
            }))
    if unresolved and comparison != "equal":
        review.append(Reason("unresolved_numbers", {"numbers": list(unresolved)}))

    outcomes = {a.outcome for a in allocations}
    if Outcome.OVERPAID in outcomes:
        outcome = Outcome.OVERPAID
    elif Outcome.UNDERPAID in outcomes or comparison == "less":
        outcome = Outcome.UNDERPAID
    else:
        outcome = Outcome.PAID
    confidence = Confidence.HIGH
    if review:
        outcome, confidence = Outcome.REVIEW, Confidence.MEDIUM
        reasons.extend(review)
    return MatchDecision(outcome, confidence, tuple(allocations), candidates, numbers, tuple(reasons))


def _fallback(
    payment: IncomingPayment, lookup: _Lookup, numbers: tuple[str, ...], reasons: list[Reason]
) -> MatchDecision:
    """No usable number: the payer's INN leads to its open invoices; one exact remaining amount, or exactly one
    set of 2-5 invoices summing to the payment, is a MEDIUM proposal. Everything else is a hint for a human."""
    if not numbers:
        reasons.append(Reason("no_number", {}))
    amount, currency, inn = payment.amount, payment.currency, payment.payer_inn
    by_inn = sorted(
        (inv for inv in _eligible(payment, lookup.by_inn(inn), None, None) if inv.remaining > 0),
        key=_age_order,
    ) if inn else []
    chosen: list[OpenInvoice] = []
    both = [inv for inv in by_inn if inv.remaining == amount]
    if len(both) == 1:
        inv = both[0]
        reasons.append(Reason("inn_amount_unique", {
            "inn": inn, "invoice": inv.number, "invoice_id": inv.id, "amount": amount, "currency": currency,
            "invoice_ids": [inv.id],
        }))
        return MatchDecision(Outcome.PAID, Confidence.MEDIUM,
                             (Share(inv.id, inv.number, amount, Outcome.PAID),), (inv.id,), numbers,
                             tuple(reasons))
    if both:
        chosen = both[:MAX_HINT_CANDIDATES]
        reasons.append(Reason("inn_and_amount_hint", {
            "inn": inn, "count": len(both), "amount": amount, "currency": currency,
        }))
    elif len(by_inn) >= 2:
        pool = by_inn[:MAX_INN_CANDIDATES]
        if len(by_inn) > MAX_INN_CANDIDATES:
            reasons.append(Reason("inn_candidates_capped", {"inn": inn, "count": len(by_inn),
                                                            "cap": MAX_INN_CANDIDATES}))
        found, complete = find_combinations([inv.remaining for inv in pool], amount)
        if not complete:
            reasons.append(Reason("combination_search_bounded", {"budget": COMBINATION_BUDGET}))
        sure = complete and len(by_inn) <= MAX_INN_CANDIDATES
        if len(found) == 1:
            invs = sorted((pool[i] for i in found[0]), key=_age_order)
            params = {"inn": inn, "count": len(invs), "invoices": [i.number for i in invs],
                      "invoice_ids": [i.id for i in invs], "amount": amount, "currency": currency}
            allocations = tuple(Share(i.id, i.number, i.remaining, Outcome.PAID) for i in invs)
            cands = tuple(i.id for i in invs)
            if sure:
                reasons.append(Reason("inn_amount_combination", params))
                return MatchDecision(Outcome.PAID, Confidence.MEDIUM, allocations, cands, numbers, tuple(reasons))
            # The search did not see every invoice of this payer: propose, but a person confirms.
            reasons.append(Reason("inn_combination_unconfirmed", params))
            return MatchDecision(Outcome.REVIEW, Confidence.LOW, allocations, cands, numbers, tuple(reasons))
        if len(found) > 1:
            seen: list[OpenInvoice] = []
            for combo in found:
                seen.extend(pool[i] for i in combo if pool[i] not in seen)
            chosen = sorted(seen, key=_age_order)[:MAX_HINT_CANDIDATES]
            reasons.append(Reason("inn_combinations_ambiguous", {"inn": inn, "amount": amount, "currency": currency}))
    if not chosen:
        by_amount = [
            inv for inv in _eligible(payment, lookup.by_remaining(currency, amount), None, None)
            if inv.remaining > 0
        ]
        if len(by_amount) == 1:
            chosen.append(by_amount[0])
            reasons.append(Reason("amount_only_hint", {
                "invoice": by_amount[0].number, "invoice_id": by_amount[0].id,
                "amount": amount, "currency": currency,
            }))
        if by_inn:
            chosen_ids = {inv.id for inv in chosen}
            chosen.extend(inv for inv in by_inn[:MAX_HINT_CANDIDATES] if inv.id not in chosen_ids)
            reasons.append(Reason("inn_hint", {"inn": inn, "count": len(by_inn)}))
    if not chosen:
        reasons.append(Reason("nothing_found", {}))
        return MatchDecision(Outcome.UNMATCHED, Confidence.NONE, (), (), numbers, tuple(reasons))
    candidates = tuple(inv.id for inv in chosen[:MAX_HINT_CANDIDATES])
    return MatchDecision(Outcome.REVIEW, Confidence.LOW, (), candidates, numbers, tuple(reasons))


def find_combinations(amounts: Sequence[Decimal], target: Decimal, *, limit: int = 2,
                      budget: int = COMBINATION_BUDGET) -> tuple[list[tuple[int, ...]], bool]:
    """Index sets of 2..MAX_COMBINATION `amounts` summing exactly to `target`; stops at `limit` sets.

    Meet in the middle: every pair sum is tabled once (n(n-1)/2 entries, 435 for 30 amounts); a set of 2 is one
    lookup, 3 is a single plus a later pair, 4 a pair plus a later pair, 5 a pair, a single and a later pair. Each
    lookup of the 5-set loop and each candidate looked at costs one unit of `budget`, so the work per payment is
    at most the pair table (n(n-1)/2), n + n(n-1)/2 lookups for 3- and 4-sets, and `budget` steps, whatever the
    amounts (n <= MAX_INN_CANDIDATES = 30: under 1,000 + 50,000 steps). Returns (sets, complete): complete is
    False when the budget ran out before the search ended (then the sets found are not known to be all)."""
    cents = [int(a * 100) for a in amounts]
    goal = int(target * 100)
    keep = [i for i, c in enumerate(cents) if 0 < c < goal]
    pairs: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for x, i in enumerate(keep):
        for j in keep[x + 1:]:
            s = cents[i] + cents[j]
            if s <= goal:
                pairs[s].append((i, j))
    found: list[tuple[int, ...]] = []
    spent = 0

    def take(combo: tuple[int, ...]) -> bool:
        found.append(combo)
        return len(found) >= limit

    for pair in pairs.get(goal, ()):  # two
        spent += 1
        if take(pair):
            return found, True
    for k in keep:  # three: a single and a pair after it
        for i, j in pairs.get(goal - cents[k], ()):
            spent += 1
            if spent > budget:
                return found, False
            if i > k and take((k, i, j)):
                return found, True
    flat = [(s, p) for s, ps in pairs.items() for p in ps]
    for s, (a, b) in flat:  # four: a pair and a pair after it
        for c, d in pairs.get(goal - s, ()):
            spent += 1
            if spent > budget:
                return found, False
            if c > b and take((a, b, c, d)):
                return found, True
    for s, (a, b) in flat:  # five: a pair, a single after it, a pair after that
        rest = goal - s
        for k in keep:
            if k <= b or cents[k] >= rest:
                continue
            spent += 1  # the lookup itself
            for c, d in pairs.get(rest - cents[k], ()):
                spent += 1
                if spent > budget:
                    return found, False
                if c > k and take((a, b, k, c, d)):
                    return found, True
    return found, True
