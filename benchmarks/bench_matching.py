"""Matching throughput: the InvoiceIndex against a naive scan, on 10k and 100k open invoices, same run.

    .venv/bin/python -m benchmarks.bench_matching [--full] [--sizes 10000,100000] [--json PATH]

Invoices and payments are generated from a fixed seed with the numbering styles and purposes seen in
the dev corpus (plain numbers, `СЧ-00412`, `INV-2025-0042`, `19-685`, `106/3-6`; keyword forms, dates,
VAT tails, contract numbers as traps). The payment mix: 60 % pay one invoice in full, 10 % underpay,
10 % pay two invoices of the same client, 10 % write a number that does not exist, 10 % write no
number at all (the INN/amount fallback). Both paths decide the same payments and must reach identical decisions.

A second mix, run side by side with the first (issue #15), has no invoice number in any purpose: 30 % pay one
invoice of the payer exactly (INN fallback), 30 % pay 2-5 invoices of the payer together, 20 % come from a payer
with 40 open invoices (over the 30-invoice cap: sets of two among the oldest, or an amount no set gives), 20 %
an amount that fits nothing of that payer (the worst case: the whole bounded set search runs).
Repeats alternate index and naive passes so machine noise hits both alike; the speed-up is the
ratio of the medians. Parsing alone (`extract_invoice_numbers`) is timed too, to show where the
index path spends its time.
"""
from __future__ import annotations

import argparse
import random
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from b24app.domain import IncomingPayment, InvoiceIndex, OpenInvoice, extract_invoice_numbers, match_payment, naive_match

from .reporting import Report, Table, emit, fmt, median, percentile

SEED = 20260114
PURPOSES_ONE = (
    "Оплата по счету № {n} от {d}, в т.ч. НДС 20% - {vat}",
    "Оплата по сч. {n} от {d} по договору № {c} от 11.01.2025. НДС не облагается",
    "ОПЛАТА ПО СЧЕТУ №{n} ОТ {d}Г В Т.Ч. НДС (20%) {vat}",
    "Предоплата по дог. {c} от 29.12.2024 по сч {n} от {d} за поставку. В т.ч.НДС(20%) {vat}",
    "Payment for invoice {n} dated {d}",
    "оплата по счёт-договору N {n} за услуги, без НДС",
    "Оплата за товар согласно счета №{n} от {d}. Контракт № {c} от 25.12.2024г. без НДС",
)
PURPOSES_TWO = (
    "Оплата по счетам № {n} и {m} от {d}, в т.ч. НДС {vat}",
    "ПО СЧЕТУ № {n} И СЧЕТУ № {m}",
)
PURPOSES_NONE = (
    "Оплата по договору № {c} от {d} за услуги связи, НДС не облагается",
    "Возврат излишне перечисленных средств по акту сверки от {d}",
    "Оплата за товар, в т.ч. НДС 20% {vat}",
)


def _number(rng: random.Random, serial: int) -> str:
    style = serial % 5
    if style == 0:
        return str(100000 + serial)
    if style == 1:
        return f"СЧ-{serial:06d}"
    if style == 2:
        return f"INV-2025-{serial:06d}"
    if style == 3:
        return f"{rng.randint(10, 99)}-{serial}"
    return f"{serial}/{rng.randint(1, 9)}-{rng.randint(1, 9)}"


def make_invoices(count: int, rng: random.Random) -> list[OpenInvoice]:
    """`count` open invoices with unique numbers; clients (INNs) have about five invoices each."""
    clients = [str(rng.randint(10**9, 10**10 - 1)) for _ in range(max(1, count // 5))]
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    return [OpenInvoice(id=i + 1, number=_number(rng, i + 1),
                        amount=Decimal(rng.randint(10_000, 50_000_000)) / 100, currency="RUB",
                        payer_inn=rng.choice(clients), created=start + timedelta(minutes=i))
            for i in range(count)]


def make_payments(count: int, invoices: list[OpenInvoice], rng: random.Random) -> list[IncomingPayment]:
    def date() -> str:
        return f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2025"

    def contract() -> str:
        return f"{rng.randint(1, 999)}/{rng.randint(20, 25)}-П"

    by_client: dict[str, list[OpenInvoice]] = {}
    for inv in invoices:
        by_client.setdefault(inv.payer_inn, []).append(inv)
    out = []
    for _ in range(count):
        roll = rng.random()
        inv = rng.choice(invoices)
        vat = f"{rng.randint(100, 99999)}.{rng.randint(0, 99):02d}"
        if roll < 0.7:  # one invoice: in full (0.6) or half of it (0.1)
            amount = inv.amount if roll < 0.6 else (inv.amount / 2).quantize(Decimal("0.01"))
            purpose = rng.choice(PURPOSES_ONE).format(n=inv.number, d=date(), vat=vat, c=contract())
        elif roll < 0.8:
            other = rng.choice(by_client[inv.payer_inn])  # two invoices of the same client
            amount = inv.amount + other.amount if other.id != inv.id else inv.amount
            purpose = rng.choice(PURPOSES_TWO).format(n=inv.number, m=other.number, d=date(), vat=vat)
        elif roll < 0.9:
            amount = Decimal(rng.randint(10_000, 5_000_000)) / 100
            purpose = rng.choice(PURPOSES_ONE).format(n=f"Z-{rng.randint(1, 10**6)}", d=date(), vat=vat,
                                                      c=contract())
        else:
            amount = inv.amount if rng.random() < 0.5 else Decimal(rng.randint(10_000, 5_000_000)) / 100
            purpose = rng.choice(PURPOSES_NONE).format(c=contract(), d=date(), vat=vat)
        out.append(IncomingPayment(amount=amount, currency="RUB", purpose=purpose, payer_inn=inv.payer_inn))
    return out


HEAVY_INN = "7799999999"


def add_heavy_payer(invoices: list[OpenInvoice], rng: random.Random, count: int = 40) -> list[OpenInvoice]:
    """The invoices plus `count` open invoices of one payer (more than the fallback's 30-invoice cap)."""
    start = datetime(2024, 6, 1, tzinfo=timezone.utc)
    first = len(invoices) + 1
    return invoices + [OpenInvoice(id=first + i, number=f"H-{first + i}", currency="RUB", payer_inn=HEAVY_INN,
                                   amount=Decimal(rng.randint(10_000, 5_000_000)) / 100,
                                   created=start + timedelta(hours=i)) for i in range(count)]


def make_payments_no_number(count: int, invoices: list[OpenInvoice], rng: random.Random) -> list[IncomingPayment]:
    """Payments whose purpose names no invoice: the INN fallback, 2-5 invoice sets, the heavy payer (#15)."""
    by_client: dict[str, list[OpenInvoice]] = {}
    for inv in invoices:
        by_client.setdefault(inv.payer_inn, []).append(inv)
    heavy = sorted(by_client.get(HEAVY_INN, []), key=lambda i: i.created)
    clients = [c for c, invs in by_client.items() if c != HEAVY_INN]
    multi = [c for c in clients if len(by_client[c]) >= 2]
    out = []
    for _ in range(count):
        roll = rng.random()
        purpose = rng.choice(PURPOSES_NONE).format(c=f"{rng.randint(1, 999)}/24-П", d="01.02.2025",
                                                   vat=f"{rng.randint(100, 9999)}.00")
        if roll < 0.3:
            inv = rng.choice(invoices)
            inn, amount = inv.payer_inn, inv.amount
        elif roll < 0.6:
            inn = rng.choice(multi)
            own = by_client[inn]
            amount = sum((i.amount for i in rng.sample(own, rng.randint(2, min(5, len(own))))), Decimal(0))
        elif roll < 0.8 and heavy:
            inn = HEAVY_INN
            pair = rng.sample(heavy[:30], 2)
            amount = pair[0].amount + pair[1].amount if rng.random() < 0.5 else Decimal("1.01")
        else:
            inn = rng.choice(multi)
            amount = Decimal(rng.randint(50_000_000, 150_000_000)) / 100  # fits no set: the full bounded search
        out.append(IncomingPayment(amount=amount, currency="RUB", purpose=purpose, payer_inn=inn))
    return out


def _timed_pass(decide, payments) -> tuple[float, list[float], list]:
    """Total seconds, per-payment seconds and decisions for one pass."""
    each, decisions = [], []
    clock = time.perf_counter
    started = clock()
    for p in payments:
        t = clock()
        decisions.append(decide(p))
        each.append(clock() - t)
    return clock() - started, each, decisions


def measure(size: int, index_payments: int, naive_payments: int, repeats: int, rng: random.Random,
            mix: str = "today") -> dict:
    invoices = make_invoices(size, rng)
    if mix == "no number":
        invoices = add_heavy_payer(invoices, rng)
        payments = make_payments_no_number(index_payments, invoices, rng)
    else:
        payments = make_payments(index_payments, invoices, rng)
    builds = []
    for _ in range(repeats):
        t = time.perf_counter()
        index = InvoiceIndex.from_invoices(invoices)
        builds.append(time.perf_counter() - t)
    naive_sample = payments[:naive_payments]
    idx_rates, naive_rates, parse_rates, idx_each, naive_each = [], [], [], [], []
    identical = True
    for _ in range(repeats):
        total, each, decisions = _timed_pass(lambda p: match_payment(p, index), payments)
        idx_rates.append(len(payments) / total)
        idx_each += each
        total, each, naive_decisions = _timed_pass(lambda p: naive_match(p, invoices), naive_sample)
        naive_rates.append(len(naive_sample) / total)
        naive_each += each
        identical &= naive_decisions == decisions[:len(naive_sample)]
        t = time.perf_counter()
        for p in payments:
            extract_invoice_numbers(p.purpose)
        parse_rates.append(len(payments) / (time.perf_counter() - t))
    outcomes: dict[str, int] = {}
    for d in decisions:
        outcomes[d.outcome.value] = outcomes.get(d.outcome.value, 0) + 1
    return {
        "mix": mix, "invoices": size, "index_payments": len(payments), "naive_payments": len(naive_sample),
        "repeats": repeats, "build_s_median": median(builds),
        "index_per_s_median": median(idx_rates), "naive_per_s_median": median(naive_rates),
        "parse_per_s_median": median(parse_rates),
        "speedup": median(idx_rates) / median(naive_rates),
        "index_us_p50": percentile(idx_each, 50) * 1e6, "index_us_p95": percentile(idx_each, 95) * 1e6,
        "naive_ms_p50": percentile(naive_each, 50) * 1e3, "naive_ms_p95": percentile(naive_each, 95) * 1e3,
        "identical_decisions": identical, "outcomes": outcomes,
    }


def run(full: bool = False, sizes: tuple[int, ...] = (10_000, 100_000),
        mixes: tuple[str, ...] = ("today", "no number"), index_payments: int | None = None,
        repeats: int | None = None) -> Report:
    rng = random.Random(SEED)
    results = []
    for size in sizes:
        # The naive scan costs O(invoices) per lookup: fewer payments keep the quick run short.
        naive = max(10, (200_000 if full else 400_000) // size) if size >= 1000 else 200
        for mix in mixes:
            results.append(measure(size, index_payments=index_payments or (5000 if full else 2000),
                                   naive_payments=min(naive, 2000), repeats=repeats or (7 if full else 5), rng=rng,
                                   mix=mix))
    table = Table("Matching throughput (payments/s), index vs naive scan, both mixes in the same run",
                  ["mix", "open invoices", "index build", "index pay/s", "naive pay/s", "speed-up",
                   "index p50 / p95 per payment", "naive p50 / p95 per payment", "parse only pay/s",
                   "same decisions"])
    for r in results:
        table.add(r["mix"], f"{r['invoices']:,}", f"{fmt(r['build_s_median'] * 1000, 0)} ms", fmt(r["index_per_s_median"], 0),
                  fmt(r["naive_per_s_median"], 2), f"{fmt(r['speedup'], 0)}×",
                  f"{fmt(r['index_us_p50'], 0)} / {fmt(r['index_us_p95'], 0)} µs",
                  f"{fmt(r['naive_ms_p50'], 1)} / {fmt(r['naive_ms_p95'], 1)} ms",
                  fmt(r["parse_per_s_median"], 0), "yes" if r["identical_decisions"] else "NO")
    report = Report("bench_matching", [table], {"results": results})
    report.notes.append(f"payments per pass: index {results[0]['index_payments'] if results else 0}, naive "
                        f"{', '.join(str(r['naive_payments']) for r in results)}; repeats "
                        f"{results[0]['repeats'] if results else 0}, medians of alternating passes")
    for r in results:
        report.notes.append(f"outcomes, {r['mix']} at {r['invoices']:,}: {r['outcomes']}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more payments and repeats")
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated open-invoice counts")
    parser.add_argument("--mixes", default="today,no number", help="comma-separated: today, no number")
    parser.add_argument("--payments", type=int, help="payments per index pass (default 2000, --full 5000)")
    parser.add_argument("--repeats", type=int, help="alternating passes (default 5, --full 7)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    emit(run(args.full, tuple(int(s) for s in args.sizes.split(",")), tuple(args.mixes.split(",")),
             args.payments, args.repeats), args.json)


if __name__ == "__main__":
    main()
