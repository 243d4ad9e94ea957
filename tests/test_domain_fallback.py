"""No invoice number in the purpose (issue #15): the payer's INN, exact amounts, sets of 2-5 invoices, the cap,
and payments that are never a client's (our own INN, excluded bank categories). Pure domain, table driven."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from b24app.domain import Confidence, IncomingPayment, InvoiceIndex, OpenInvoice, Outcome, explain, match_payment, naive_match
from b24app.domain.explain import explain_reason
from b24app.domain.matching import COMBINATION_BUDGET, MAX_INN_CANDIDATES, find_combinations

D = Decimal
INN = "7701234567"
OTHER = "5009876543"
OWN = "7800000001"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def inv(id: int, amount: str | int, *, inn: str = INN, paid: str | int = 0, **kw) -> OpenInvoice:
    return OpenInvoice(id=id, number=f"A-{id}", amount=D(amount), currency="RUB", payer_inn=inn, paid=D(paid),
                       created=T0 + timedelta(days=id), **kw)


def decide(amount, invoices, *, inn=INN, purpose="Оплата за товар, НДС не облагается", **kw):
    payment = IncomingPayment(amount=D(amount), currency="RUB", purpose=purpose, payer_inn=inn,
                              category=kw.pop("category", None))
    decision = match_payment(payment, InvoiceIndex.from_invoices(invoices), **kw)
    assert naive_match(payment, invoices, **kw) == decision
    for lang in ("ru", "en"):  # every reason has words in both languages
        for r in decision.reasons:
            assert not explain_reason(r, lang).startswith(r.code), (r.code, lang)
    if decision.allocations:
        assert sum(a.amount for a in decision.allocations) == payment.amount
    assert not decision.auto_apply  # nothing by INN alone is ever HIGH
    return decision


def codes(d):
    return [r.code for r in d.reasons]


CASES = [
    # (name, amount, invoices, outcome, confidence, allocated ids, key reason)
    ("unique exact remaining", 700, [inv(1, 700), inv(2, 300), inv(3, 700, inn=OTHER)],
     Outcome.PAID, Confidence.MEDIUM, [1], "inn_amount_unique"),
    ("unique exact after a part payment", 400, [inv(1, 1000, paid=600), inv(2, 1000)],
     Outcome.PAID, Confidence.MEDIUM, [1], "inn_amount_unique"),
    ("two exact remainings: review", 700, [inv(1, 700), inv(2, 700)],
     Outcome.REVIEW, Confidence.LOW, [], "inn_and_amount_hint"),
    ("pair sums exactly", 1000, [inv(1, 300), inv(2, 700), inv(3, 450)],
     Outcome.PAID, Confidence.MEDIUM, [1, 2], "inn_amount_combination"),
    ("five sum exactly", 1500, [inv(i, 100 * i) for i in range(1, 6)] + [inv(9, 5000)],
     Outcome.PAID, Confidence.MEDIUM, [1, 2, 3, 4, 5], "inn_amount_combination"),
    ("two different sets: review with candidates", 1000, [inv(1, 300), inv(2, 700), inv(3, 400), inv(4, 600)],
     Outcome.REVIEW, Confidence.LOW, [], "inn_combinations_ambiguous"),
    ("six would be needed: no set", 2100, [inv(i, 100 * i) for i in range(1, 7)],
     Outcome.REVIEW, Confidence.LOW, [], "inn_hint"),
    ("other payer's invoices are never used", 1000, [inv(1, 300), inv(2, 700, inn=OTHER)],
     Outcome.REVIEW, Confidence.LOW, [], "inn_hint"),
]


@pytest.mark.parametrize("name,amount,invoices,outcome,confidence,allocated,reason", CASES, ids=[c[0] for c in CASES])
def test_inn_fallback_table(name, amount, invoices, outcome, confidence, allocated, reason):
    d = decide(amount, invoices)
    assert (d.outcome, d.confidence) == (outcome, confidence)
    assert [a.invoice_id for a in d.allocations] == allocated
    assert reason in codes(d) and codes(d)[0] == "no_number"
    if outcome is Outcome.REVIEW:
        assert d.candidates  # the review is pre-filled, never empty


def test_combination_allocations_and_explanation_name_the_signals():
    d = decide("1000.50", [inv(1, "300.25"), inv(2, "700.25"), inv(3, 5)])
    assert [(a.invoice_id, a.amount, a.outcome) for a in d.allocations] == [
        (1, D("300.25"), Outcome.PAID), (2, D("700.25"), Outcome.PAID)]
    assert d.medium_proposal
    assert "ИНН плательщика 7701234567" in explain(d, "ru") and "A-1, A-2" in explain(d, "ru")
    assert "INN and the sum of a set of invoices matched" in explain(d, "en")
    unique = decide(5, [inv(1, "300.25"), inv(3, 5)])
    assert "(совпали ИНН и сумма)" in explain(unique, "ru") and "(INN and amount matched)" in explain(unique, "en")


def test_ambiguous_sets_prefill_every_invoice_of_both_sets():
    d = decide(1000, [inv(1, 300), inv(2, 700), inv(3, 400), inv(4, 600), inv(5, 1)])
    assert set(d.candidates) == {1, 2, 3, 4}
    assert "несколько разных наборов" in explain(d, "ru")


def test_cap_hit_is_said_and_a_set_found_is_only_proposed():
    many = [inv(i, 10_000 + i) for i in range(1, MAX_INN_CANDIDATES + 6)]  # 35 open invoices
    amount = many[0].remaining + many[1].remaining  # a pair among the oldest 30
    d = decide(amount, many)
    assert "inn_candidates_capped" in codes(d) and "inn_combination_unconfirmed" in codes(d)
    assert (d.outcome, d.confidence) == (Outcome.REVIEW, Confidence.LOW)
    assert [a.invoice_id for a in d.allocations] == [1, 2]  # pre-filled for one click
    assert f"открытых счетов {MAX_INN_CANDIDATES + 5}; наборы искались только среди {MAX_INN_CANDIDATES}" in explain(d)
    assert f"sets were searched among the {MAX_INN_CANDIDATES} oldest only" in explain(d, "en")


def test_own_transfer_and_excluded_category_are_ignored():
    invoices = [inv(1, 700)]
    own = decide(700, invoices, inn=OWN, own_inns=[OWN])
    assert (own.outcome, own.confidence, own.allocations, codes(own)) == (
        Outcome.IGNORED, Confidence.NONE, (), ["own_transfer"])
    assert "перевод между своими счетами" in explain(own)
    # even with an invoice number in the purpose
    numbered = decide(700, invoices, inn=OWN, own_inns=[OWN], purpose="Оплата по счету A-1")
    assert numbered.outcome is Outcome.IGNORED
    cat = decide(700, invoices, category="incomeLoan", ignore_categories=["incomeLoan"])
    assert (cat.outcome, codes(cat)) == (Outcome.IGNORED, ["ignored_category"])
    assert "«incomeLoan»" in explain(cat, "en")
    assert decide(700, invoices, category="incomePeople", ignore_categories=["incomeLoan"]).outcome is Outcome.PAID


def test_combination_search_is_bounded():
    # 30 equal amounts, goal not reachable by 2..5 of them: every lookup misses, the work stays bounded.
    amounts = [D(100)] * 30
    started = time.perf_counter()
    found, complete = find_combinations(amounts, D(50_000))
    assert (found, complete) == ([], True)
    # Pair sums all equal: the 4-set loop meets 435 x 435 candidates; the budget stops it and says so.
    found, complete = find_combinations(amounts, D(400) + D("0.01") - D("0.01"), limit=10 ** 9)
    assert not complete and len(found) <= COMBINATION_BUDGET
    assert time.perf_counter() - started < 2.0


def test_many_equal_invoices_give_ambiguous_sets_not_a_guess():
    invoices = [inv(i, 100) for i in range(1, 30)] + [inv(99, 150)]  # 30 invoices: 29 pairs of 100 + 150
    d = decide(250, invoices)
    assert (d.outcome, d.confidence) == (Outcome.REVIEW, Confidence.LOW)
    assert "inn_combinations_ambiguous" in codes(d) and "inn_candidates_capped" not in codes(d)
