"""Matching payments to open invoices: outcomes, confidence rules, filters, allocation and index equivalence."""
from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from b24app.domain import (
    Confidence,
    IncomingPayment,
    InvoiceIndex,
    MatchDecision,
    OpenInvoice,
    Outcome,
    explain,
    match_payment,
    naive_match,
)
from b24app.domain.errors import DuplicateInvoiceError, InvalidInvoiceError, InvalidPaymentError
from b24app.domain.explain import explain_reason

D = Decimal
INN_A = "7701234567"
INN_B = "5009876543"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def inv(id: int, number: str, amount: str | int, **kw) -> OpenInvoice:
    kw.setdefault("currency", "RUB")
    return OpenInvoice(id=id, number=number, amount=D(amount), **kw)


def pay(amount: str | int, purpose: str, **kw) -> IncomingPayment:
    kw.setdefault("currency", "RUB")
    return IncomingPayment(amount=D(amount), purpose=purpose, **kw)


def decide(payment: IncomingPayment, invoices: list[OpenInvoice]) -> MatchDecision:
    decision = match_payment(payment, InvoiceIndex.from_invoices(invoices))
    assert naive_match(payment, invoices) == decision
    _check_invariants(payment, decision)
    return decision


def _check_invariants(payment: IncomingPayment, decision: MatchDecision) -> None:
    assert {a.invoice_id for a in decision.allocations} <= set(decision.candidates)
    if decision.allocations:
        assert sum(a.amount for a in decision.allocations) == payment.amount
    for a in decision.allocations:
        for value in (a.amount, a.remaining, a.overpaid_by):
            assert value.as_tuple().exponent == -2 and value >= 0
        assert a.outcome in (Outcome.PAID, Outcome.UNDERPAID, Outcome.OVERPAID)
    if decision.confidence is Confidence.HIGH:
        assert decision.outcome in (Outcome.PAID, Outcome.UNDERPAID, Outcome.OVERPAID)
        assert decision.auto_apply
    else:
        assert not decision.auto_apply
    if decision.outcome is Outcome.UNMATCHED:
        assert decision.confidence is Confidence.NONE and not decision.candidates
    assert decision.reasons
    codes = [r.code for r in decision.reasons]
    for lang in ("ru", "en"):
        for reason in decision.reasons:
            assert not explain_reason(reason, lang).startswith(reason.code), (reason, lang)
    assert len(codes) == len(decision.reasons)


def codes(decision: MatchDecision) -> list[str]:
    return [r.code for r in decision.reasons]


# --- one invoice, exact number ---


def test_exact_number_and_amount_is_paid_high() -> None:
    d = decide(pay(12000, "Оплата по счету 1207"), [inv(1, "1207", 12000), inv(2, "1208", 12000)])
    assert (d.outcome, d.confidence, d.auto_apply) == (Outcome.PAID, Confidence.HIGH, True)
    assert d.numbers == ("1207",) and d.candidates == (1,)
    assert hash(d) == hash(decide(pay(12000, "Оплата по счету 1207"), [inv(1, "1207", 12000)]))
    [a] = d.allocations
    assert (a.invoice_id, a.invoice_number, a.amount, a.outcome, a.remaining, a.overpaid_by) == (
        1, "1207", D("12000.00"), Outcome.PAID, D("0.00"), D("0.00"))
    assert explain(d, "ru") == (
        "Номер «1207» из назначения платежа совпал со счётом 1207; "
        "сумма 12\u00a0000,00\u00a0₽ равна остатку по счёту 12\u00a0000,00\u00a0₽."
    )
    assert explain(d, "en") == (
        "Number «1207» in the payment purpose matches invoice 1207; "
        "amount 12,000.00 RUB equals the amount due 12,000.00 RUB."
    )


def test_exact_number_less_money_is_underpaid_high() -> None:
    d = decide(pay("7000.50", "по сч. СЧ-00412"), [inv(5, "СЧ-412", 10000)])
    assert (d.outcome, d.confidence) == (Outcome.UNDERPAID, Confidence.HIGH)
    [a] = d.allocations
    assert (a.amount, a.outcome, a.remaining) == (D("7000.50"), Outcome.UNDERPAID, D("2999.50"))
    assert "не хватает 2\u00a0999,50\u00a0₽" in explain(d)


def test_exact_number_more_money_is_overpaid_high() -> None:
    d = decide(pay(15000, "Оплата по счету № 00064"), [inv(3, "64", 10000)])
    assert (d.outcome, d.confidence) == (Outcome.OVERPAID, Confidence.HIGH)
    [a] = d.allocations
    assert (a.amount, a.remaining, a.overpaid_by, a.outcome) == (D(15000), D(0), D(5000), Outcome.OVERPAID)
    assert "overpaid by 5,000.00 RUB" in explain(d, "en")


def test_overpaid_by_more_than_the_invoice_goes_to_review() -> None:
    invoices = [inv(3, "64", 1000)]
    assert decide(pay(2000, "по счету 64"), invoices).confidence is Confidence.HIGH  # surplus == amount
    d = decide(pay("2000.01", "по счету 64"), invoices)
    assert (d.outcome, d.confidence) == (Outcome.REVIEW, Confidence.MEDIUM)
    assert "overpaid_large" in codes(d)
    assert d.allocations[0].overpaid_by == D("1000.01")  # proposal kept for the reviewer


def test_payer_inn_equal_is_reported_and_stays_high() -> None:
    d = decide(pay(100, "по счету 9", payer_inn=INN_A), [inv(1, "9", 100, payer_inn=INN_A)])
    assert (d.outcome, d.confidence) == (Outcome.PAID, Confidence.HIGH)
    assert "inn_match" in codes(d)


def test_payer_inn_different_downgrades_to_review() -> None:
    d = decide(pay(100, "по счету 9", payer_inn=INN_B), [inv(1, "9", 100, payer_inn=INN_A)])
    assert (d.outcome, d.confidence) == (Outcome.REVIEW, Confidence.MEDIUM)
    assert "inn_mismatch" in codes(d) and d.candidates == (1,)
    assert INN_B in explain(d) and INN_A in explain(d, "en")


def test_payer_inn_unknown_on_one_side_does_not_downgrade() -> None:
    assert decide(pay(100, "по счету 9"), [inv(1, "9", 100, payer_inn=INN_A)]).confidence is Confidence.HIGH
    assert decide(pay(100, "по счету 9", payer_inn=INN_B), [inv(1, "9", 100)]).confidence is Confidence.HIGH


def test_number_matching_several_invoices_is_review_with_candidates() -> None:
    invoices = [inv(1, "77", 100, created=T0 + timedelta(days=2)), inv(2, "0077", 100, created=T0), inv(3, "78", 100)]
    d = decide(pay(100, "по счету 77"), invoices)
    assert (d.outcome, d.confidence, d.allocations) == (Outcome.REVIEW, Confidence.MEDIUM, ())
    assert d.candidates == (2, 1)  # oldest first
    assert codes(d) == ["number_ambiguous"]


def test_already_paid_invoice_goes_to_review() -> None:
    d = decide(pay(100, "по счету 9"), [inv(1, "9", 100, paid=D(100))])
    assert d.outcome is Outcome.REVIEW and "already_paid" in codes(d)


def decide_with_paid(payment: IncomingPayment, invoices: list[OpenInvoice], paid: list[OpenInvoice]) -> MatchDecision:
    decision = match_payment(payment, InvoiceIndex.from_invoices(invoices, paid=paid))
    assert naive_match(payment, invoices, paid) == decision
    _check_invariants(payment, decision)
    return decision


def test_second_payment_of_a_closed_invoice_is_a_double_payment_and_proposes_nothing() -> None:
    """А-101 was paid and closed; the client pays it again. Another deal's invoice «101» (same number tail,
    same amount) and the payer's other open invoice are not proposed: the money is not theirs by default."""
    closed = inv(1, "А-101", 5000, payer_inn=INN_A, paid=D(5000))
    other_deal = inv(2, "101", 5000, payer_inn=INN_B)
    same_payer = inv(3, "А-102", 5000, payer_inn=INN_A)
    d = decide_with_paid(pay(5000, "Оплата по счету № А-101", payer_inn=INN_A), [other_deal, same_payer], [closed])
    assert (d.outcome, d.confidence, d.candidates, d.allocations) == (Outcome.REVIEW, Confidence.LOW, (), ())
    assert codes(d) == ["already_paid"] and d.reasons[0].params["invoice_id"] == 1
    assert explain(d, "ru") == "Счёт А-101 уже оплачен — вероятно, повторная оплата."
    assert explain(d, "en") == "Invoice А-101 is already paid — a likely double payment."


def test_open_invoice_with_nothing_due_is_a_double_payment_too() -> None:
    d = decide(pay(100, "по счету 9"), [inv(1, "9", 100, paid=D(100)), inv(2, "19", 100)])
    assert (d.outcome, d.candidates, codes(d)) == (Outcome.REVIEW, (), ["already_paid"])


def test_paid_number_beside_an_open_one_keeps_the_open_one_for_review() -> None:
    d = decide_with_paid(pay(300, "счета 7 и 8"), [inv(2, "8", 300)], [inv(1, "7", 100, paid=D(100))])
    assert d.outcome is Outcome.REVIEW and d.candidates == (2,) and "already_paid" in codes(d)


# --- accumulation over several payments ---


def test_top_up_brings_paid_to_amount() -> None:
    invoice = inv(1, "321", 50000, paid=D(30000))
    d = decide(pay(20000, "Доплата по счету № 321 от 01.03.2024 г."), [invoice])
    assert (d.outcome, d.confidence) == (Outcome.PAID, Confidence.HIGH)
    assert d.allocations[0].amount == D(20000)


def test_payments_accumulate_until_paid() -> None:
    invoice = inv(1, "321", 1000)
    outcomes = []
    for amount in ("300", "300", "400"):
        d = decide(pay(amount, "по счету 321"), [invoice])
        outcomes.append((d.outcome, d.allocations[0].remaining))
        invoice = replace(invoice, paid=invoice.paid + d.allocations[0].amount)
    assert outcomes == [(Outcome.UNDERPAID, D(700)), (Outcome.UNDERPAID, D(400)), (Outcome.PAID, D(0))]


# --- several invoices in one payment ---

THREE = [inv(11, "738", 100), inv(12, "791", 200), inv(13, "792", 300)]


def test_several_numbers_exact_total_all_paid() -> None:
    d = decide(pay(600, "Оплата по счетам № 738, 791 и 792"), THREE)
    assert (d.outcome, d.confidence) == (Outcome.PAID, Confidence.HIGH)
    assert [(a.invoice_id, a.amount, a.outcome) for a in d.allocations] == [
        (11, D(100), Outcome.PAID), (12, D(200), Outcome.PAID), (13, D(300), Outcome.PAID)]


def test_several_numbers_allocated_in_order_of_appearance() -> None:
    d = decide(pay(250, "Оплата по счетам № 792, 738"), THREE)
    assert [(a.invoice_id, a.amount, a.outcome, a.remaining) for a in d.allocations] == [
        (13, D(250), Outcome.UNDERPAID, D(50))]
    assert d.candidates == (13, 11) and "not_covered" in codes(d)
    assert (d.outcome, d.confidence) == (Outcome.UNDERPAID, Confidence.HIGH)


def test_several_numbers_less_money_last_underpaid() -> None:
    d = decide(pay(450, "по счетам 738, 791, 792"), THREE)
    assert [(a.invoice_id, a.amount, a.outcome, a.remaining) for a in d.allocations] == [
        (11, D(100), Outcome.PAID, D(0)), (12, D(200), Outcome.PAID, D(0)), (13, D(150), Outcome.UNDERPAID, D(150))]
    assert (d.outcome, d.confidence) == (Outcome.UNDERPAID, Confidence.HIGH)


def test_several_numbers_more_money_last_overpaid() -> None:
    d = decide(pay(700, "по счетам 738, 791, 792"), THREE)
    assert [(a.invoice_id, a.outcome, a.overpaid_by) for a in d.allocations][-1] == (13, Outcome.OVERPAID, D(100))
    assert (d.outcome, d.confidence) == (Outcome.OVERPAID, Confidence.HIGH)
    large = decide(pay("1000.01", "по счетам 738, 791, 792"), THREE)  # surplus 400.01 > invoice 792 (300)
    assert (large.outcome, large.confidence) == (Outcome.REVIEW, Confidence.MEDIUM)


def test_several_numbers_with_one_ambiguous_is_review() -> None:
    d = decide(pay(300, "по счетам 738, 791"), THREE + [inv(14, "791", 200, created=T0)])
    assert d.outcome is Outcome.REVIEW and set(d.candidates) == {11, 12, 14}


def test_several_numbers_with_a_tail_match_is_review() -> None:
    d = decide(pay(300, "по счетам 738, 5"), [inv(11, "738", 100), inv(15, "СЧ-5", 200)])
    assert (d.outcome, d.confidence) == (Outcome.REVIEW, Confidence.MEDIUM)
    assert "number_tail_match" in codes(d) and len(d.allocations) == 2


def test_unfound_number_is_tolerated_only_when_the_amount_fits() -> None:
    invoices = [inv(11, "738", 100)]
    fits = decide(pay(100, "по счетам 738, 999"), invoices)
    assert (fits.outcome, fits.confidence) == (Outcome.PAID, Confidence.HIGH)
    assert "number_not_found" in codes(fits)
    short = decide(pay(50, "по счетам 738, 999"), invoices)
    assert (short.outcome, short.confidence) == (Outcome.REVIEW, Confidence.MEDIUM)
    assert "unresolved_numbers" in codes(short)


# --- tail (suffix) matches ---


def test_tail_match_is_medium_review() -> None:
    d = decide(pay(500, "по счету 1300"), [inv(2, "СЧ-1300", 500)])
    assert (d.outcome, d.confidence) == (Outcome.REVIEW, Confidence.MEDIUM)
    assert d.allocations and d.allocations[0].invoice_id == 2


def test_tail_match_with_amount_and_inn_is_high() -> None:
    invoices = [inv(2, "СЧ-1300", 500, payer_inn=INN_A)]
    d = decide(pay(500, "по счету 1300", payer_inn=INN_A), invoices)
    assert (d.outcome, d.confidence) == (Outcome.PAID, Confidence.HIGH)
    assert codes(d)[:3] == ["number_tail_match", "amount_equals_due", "inn_match"]
    assert decide(pay(499, "по счету 1300", payer_inn=INN_A), invoices).confidence is Confidence.MEDIUM
    assert decide(pay(500, "по счету 1300", payer_inn=INN_B), invoices).confidence is Confidence.MEDIUM


def test_prefixed_number_in_purpose_finds_unprefixed_invoice_by_tail() -> None:
    d = decide(pay(500, "Оплата СЧ-1300"), [inv(2, "1300", 500)])
    assert codes(d)[0] == "number_tail_match" and d.outcome is Outcome.REVIEW


def test_exact_hit_wins_over_tail_of_same_invoice() -> None:
    d = decide(pay(500, "оплата по счету № 00412 (СЧ-00412)"), [inv(2, "СЧ-412", 500)])
    assert (d.outcome, d.confidence) == (Outcome.PAID, Confidence.HIGH)
    assert len(d.allocations) == 1


def test_homoglyph_number_matches_exactly() -> None:
    d = decide(pay(100, "ОПЛАТА ПО СЧЕТУ №1000001-В24"), [inv(1, "1000001-B24", 100)])
    assert (d.outcome, d.confidence) == (Outcome.PAID, Confidence.HIGH)


# --- currency and own company ---


def test_other_currency_invoice_is_never_a_candidate() -> None:
    d = decide(pay(100, "по счету 55"), [inv(1, "55", 100, currency="USD")])
    assert d.outcome is Outcome.UNMATCHED and d.candidates == ()
    assert "currency_mismatch" in codes(d)
    assert "USD" in explain(d, "en")


def test_same_number_in_two_currencies_picks_the_payment_currency() -> None:
    invoices = [inv(1, "55", 100, currency="USD"), inv(2, "55", 100)]
    d = decide(pay(100, "по счету 55"), invoices)
    assert (d.outcome, d.confidence, d.candidates) == (Outcome.PAID, Confidence.HIGH, (2,))
    usd = decide(pay(100, "по счету 55", currency="usd"), invoices)
    assert usd.candidates == (1,) and usd.allocations[0].invoice_id == 1


def test_own_company_filter() -> None:
    invoices = [inv(1, "55", 100, mycompany_id=2), inv(2, "56", 100, mycompany_id=None), inv(3, "57", 100, mycompany_id=1)]
    other = decide(pay(100, "по счету 55", mycompany_id=1), invoices)
    assert other.outcome is Outcome.UNMATCHED and "other_company" in codes(other)
    assert decide(pay(100, "по счету 56", mycompany_id=1), invoices).outcome is Outcome.PAID
    assert decide(pay(100, "по счету 57", mycompany_id=1), invoices).outcome is Outcome.PAID
    assert decide(pay(100, "по счету 55"), invoices).outcome is Outcome.PAID  # no own company given


# --- no number: low-confidence hints ---


def test_no_number_unique_amount_is_low_review() -> None:
    d = decide(pay(4321, "Оплата за товар"), [inv(1, "1", 4321), inv(2, "2", 100)])
    assert (d.outcome, d.confidence, d.candidates, d.allocations) == (Outcome.REVIEW, Confidence.LOW, (1,), ())
    assert codes(d) == ["no_number", "amount_only_hint"]


def test_no_number_ambiguous_amount_without_inn_is_unmatched() -> None:
    d = decide(pay(100, "Оплата за товар"), [inv(1, "1", 100), inv(2, "2", 100)])
    assert (d.outcome, d.confidence) == (Outcome.UNMATCHED, Confidence.NONE)


def test_no_number_inn_hints_oldest_first() -> None:
    invoices = [inv(1, "1", 100, payer_inn=INN_A, created=T0 + timedelta(days=5)),
                inv(2, "2", 200, payer_inn=INN_A, created=T0),
                inv(3, "3", 300, payer_inn=INN_B),
                inv(4, "4", 50, payer_inn=INN_A, paid=D(50))]  # fully paid: no hint
    d = decide(pay(999, "НДС не облагается.", payer_inn=INN_A), invoices)
    assert (d.outcome, d.confidence, d.candidates) == (Outcome.REVIEW, Confidence.LOW, (2, 1))
    both = decide(pay(100, "НДС не облагается.", payer_inn=INN_A), invoices)  # one exact by INN: MEDIUM (#15)
    assert both.candidates == (1,) and codes(both) == ["no_number", "inn_amount_unique"]
    assert (both.outcome, both.confidence) == (Outcome.PAID, Confidence.MEDIUM)


def test_nothing_at_all_is_unmatched() -> None:
    d = decide(pay(5, "Оплата 2001 за услуги", payer_inn=INN_B), [inv(1, "2001", 100, payer_inn=INN_A)])
    assert (d.outcome, d.confidence, d.candidates) == (Outcome.UNMATCHED, Confidence.NONE, ())
    assert d.numbers == ()
    assert explain(d) == "В назначении платежа нет номера счёта. Подходящих открытых счетов не найдено."


def test_number_not_found_falls_back_to_hints() -> None:
    d = decide(pay(4321, "по счету 999"), [inv(1, "1", 4321)])
    assert (d.outcome, d.confidence, d.candidates) == (Outcome.REVIEW, Confidence.LOW, (1,))
    assert codes(d) == ["number_not_found", "amount_only_hint"]


# --- validation ---


def test_inputs_are_validated() -> None:
    with pytest.raises(InvalidPaymentError):
        pay(0, "x")
    with pytest.raises(InvalidPaymentError):
        pay("-1", "x")
    with pytest.raises(InvalidPaymentError):
        IncomingPayment(D("1.001"), "RUB", "x")
    with pytest.raises(InvalidInvoiceError):
        inv(1, "1", -1)
    with pytest.raises(InvalidInvoiceError):
        inv(1, "1", 1, created=datetime(2026, 1, 1))
    with pytest.raises(InvalidInvoiceError):
        inv(1, "1", 1, currency="рубли")
    with pytest.raises(DuplicateInvoiceError):
        InvoiceIndex.from_invoices([inv(1, "1", 1), inv(1, "2", 1)])
    p = pay("10.5", "x", payer_inn=" 7701 234567 ")
    assert p.amount == D("10.50") and str(p.amount) == "10.50" and p.payer_inn == INN_A


# --- index and naive scan agree on a generated set ---


def _generated(seed: int = 424242, n_invoices: int = 3000, n_payments: int = 150):
    rng = random.Random(seed)
    inns = [str(7700000000 + i) for i in range(40)]
    invoices = []
    for i in range(1, n_invoices + 1):
        style = rng.random()
        base = rng.randint(1, n_invoices * 2)  # some collisions make ambiguous numbers
        if style < 0.4:
            number = str(base)
        elif style < 0.6:
            number = f"{base:05d}"
        elif style < 0.85:
            number = f"СЧ-{base:05d}"
        else:
            number = f"INV-2025-{base:04d}"
        amount = D(rng.randint(1, 500) * 100)
        paid = rng.choice([D(0), D(0), D(0), amount / 2, amount])
        invoices.append(OpenInvoice(
            id=i, number=number, amount=amount, paid=paid,
            currency=rng.choice(["RUB"] * 9 + ["USD"]),
            payer_inn=rng.choice(inns + [None] * 10),
            mycompany_id=rng.choice([None, 1, 2]),
            created=rng.choice([None, T0 + timedelta(days=rng.randint(0, 400))]),
        ))
    payments = []
    for _ in range(n_payments):
        refs = rng.sample(invoices, rng.choice([0, 1, 1, 1, 2, 3]))
        words = []
        for ref in refs:
            text = ref.number
            if rng.random() < 0.2:
                text = text.split("-")[-1]  # drop the prefix: tail match
            words.append(text)
        purpose = rng.choice(["Оплата по счетам № {}", "по сч. {} от 01.02.2026", "Оплата {}"]).format(", ".join(words))
        due = sum((r.remaining for r in refs), D(0))
        amount = rng.choice([due, due - 1, due + 1, due * 3, D(rng.randint(1, 500) * 100)])
        if amount <= 0:
            amount = D(100)
        payments.append(IncomingPayment(
            amount=amount, purpose=purpose,
            currency=refs[0].currency if refs and rng.random() < 0.9 else rng.choice(["RUB", "USD"]),
            payer_inn=rng.choice([None, refs[0].payer_inn if refs else None, rng.choice(inns)]),
            mycompany_id=rng.choice([None, None, None, 1, 2]),
        ))
    return invoices, payments


@pytest.mark.slow  # a size/stress check: out of the fast tier, in `make test`
def test_index_and_naive_scan_give_the_same_decisions() -> None:
    invoices, payments = _generated()
    index = InvoiceIndex.from_invoices(invoices)
    seen = set()
    for payment in payments:
        decision = match_payment(payment, index)
        assert naive_match(payment, invoices) == decision, payment
        _check_invariants(payment, decision)
        seen.add((decision.outcome, decision.confidence))
    # the generated set exercises every kind of decision
    assert {o for o, _ in seen} == set(Outcome) - {Outcome.IGNORED}  # IGNORED needs own INNs: test_domain_fallback
    assert {c for _, c in seen} == set(Confidence)


@pytest.mark.slow  # a size/stress check: out of the fast tier, in `make test`
def test_index_handles_100k_invoices() -> None:
    invoices = [OpenInvoice(i, f"СЧ-{i:06d}", D(i % 997 + 1), "RUB", payer_inn=str(7700000000 + i % 5000))
                for i in range(1, 100_001)]
    index = InvoiceIndex.from_invoices(invoices)
    assert len(index) == 100_000
    d = match_payment(pay(D(54321 % 997 + 1), "Оплата по счету СЧ-054321 и сч. 99999"), index)
    assert [a.invoice_id for a in d.allocations] == [54321]
    assert d.candidates == (54321, 99999)


def test_index_replace_updates_lookups_without_a_rebuild():
    from decimal import Decimal
    from b24app.domain import InvoiceIndex, OpenInvoice
    a = OpenInvoice(id=1, number="СЧ-00412", amount=Decimal("100.00"), currency="RUB", payer_inn="7712345678")
    b = OpenInvoice(id=2, number="412", amount=Decimal("50.00"), currency="RUB")
    index = InvoiceIndex.from_invoices([a, b])
    paid = OpenInvoice(id=1, number="СЧ-00412", amount=Decimal("100.00"), currency="RUB",
                       paid=Decimal("60.00"), payer_inn="7712345678")
    index.replace(paid)
    assert len(index) == 2
    assert [i.paid for i in index.by_inn("7712345678")] == [Decimal("60.00")]
    assert index.by_remaining("RUB", Decimal("100.00")) == ()
    assert [i.id for i in index.by_remaining("RUB", Decimal("40.00"))] == [1]
    assert [i.id for i in index.by_remaining("RUB", Decimal("50.00"))] == [2]


@pytest.mark.parametrize(
    ("amount", "due", "outcome", "still_due", "surplus"),
    [
        ("100.00", "100.00", Outcome.PAID, "0.00", "0.00"),
        ("40.00", "100.00", Outcome.UNDERPAID, "60.00", "0.00"),
        ("100.01", "100.00", Outcome.OVERPAID, "0.00", "0.01"),
        ("5.00", "0.00", Outcome.OVERPAID, "0.00", "5.00"),   # an invoice paid already: all of it is surplus
        ("0.00", "0.00", Outcome.PAID, "0.00", "0.00"),
    ],
)
def test_settle_is_the_one_place_that_says_paid_underpaid_or_overpaid(amount, due, outcome, still_due, surplus):
    from b24app.domain import settle

    assert settle(Decimal(amount), Decimal(due)) == (outcome, Decimal(still_due), Decimal(surplus))
