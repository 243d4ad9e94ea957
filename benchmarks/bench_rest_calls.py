"""Bitrix24 REST calls per reconciled payment: one payment, and a statement of 500 payments for 500 invoices.

    .venv/bin/python -m benchmarks.bench_rest_calls [--payments 500] [--records on,off] [--json PATH]

Payment records (#15) are on by default; `--records on,off` measures both, side by side, each on a fresh stack
(a record is 3 commands in the batch that sends the payment's other effects, not a request of its own).

Runs the demo stack (portal and bank sandboxes, the app, its threaded worker) over loopback, with the
portal's real limit (2 req/s, burst 50). Calls are counted by the portal sandbox (every HTTP request
to the portal; a `batch` of 50 commands is one request), split into seeding (the test's own webhook
calls), the app's warm-up (install, first invoice read) and the measured part, which is the worker
alone: reading the statement, matching, refreshing the invoices its own updates touched, and sending
every effect (invoice to paid, timeline comment, notification, automation trigger).

Single payment: the worker is running, one payment arrives (bank webhook → sync → match → effects).
Statement of N: the worker is stopped, N payments arrive, the worker starts and reads them in one
statement. The measured part ends when every invoice is paid, nothing is pending and the portal has
seen no request for 3 s. "All paid after" counts from the first payment posted (posting 500 takes a while),
"after the worker started" from the moment the worker was started again.
"""
from __future__ import annotations

import argparse
import time

from .reporting import Report, Table, emit, fmt
from .seeding import (PAID_STAGE, RestCallLog, quiet_logs, requests_so_far, seed_invoices, settle, stages,
                      wait_until)


def _pay(stack, inv, day: str = "14.01.2026") -> None:
    stack.pay(inv.amount, f"Оплата по счету № {inv.number} от {day}, в т.ч. НДС 20%",
              payerInn=inv.inn, payerName=inv.company)


def _measure(stack, log: RestCallLog, invoices, *, stop_worker_first: bool, timeout: float) -> dict:
    before, limited_before = requests_so_far(stack)
    methods_before, commands_before = log.snapshot()
    if stop_worker_first:
        stack.stop_worker()
    started = time.monotonic()
    for inv in invoices:
        _pay(stack, inv)
    posted = time.monotonic() - started
    if stop_worker_first:
        stack.start_worker()
    worker_started = time.monotonic()  # the worker runs already for a single payment: then right after it
    ids = [inv.invoice_id for inv in invoices]
    wait_until(lambda: all(s == PAID_STAGE for s in stages(stack, ids).values()), timeout)
    all_paid = time.monotonic() - started
    paid_after_start = time.monotonic() - worker_started
    settle(stack, timeout)
    after, limited_after = requests_so_far(stack)
    methods, commands = log.snapshot()
    methods, commands = methods - methods_before, commands - commands_before
    calls = after - before
    return {"payments": len(invoices), "calls": calls, "per_payment": calls / len(invoices),
            "rate_limited": limited_after - limited_before, "methods": dict(methods), "commands": dict(commands),
            "post_s": posted, "all_paid_s": all_paid, "paid_after_start_s": paid_after_start}


def _scenario(full: bool, payments: int, records: bool) -> dict:
    """One fresh stack: install, the lone payment, then the statement of `payments`; with records on or off."""
    from b24app.pipeline.rules import save_rules
    from b24app.sandbox.stack import link_bank, start_stack

    stack = start_stack(sync_interval=60, rate=2.0, burst=50, event_delivery="async")
    quiet_logs()
    try:
        log = RestCallLog(stack)
        result = stack.install()
        if not result.get("install_finish"):
            raise RuntimeError(f"install failed: {result}")
        save_rules(stack.ctx, stack.ctx.portals.find(stack.member_id()).id, {"payment_records": records})
        after_install = requests_so_far(stack)[0]
        seeded = seed_invoices(stack, 4, companies=2, prefix="Д")
        page = link_bank(stack)
        if 'id="link-ok"' not in page.text:
            raise RuntimeError("bank link failed")
        seeding_small = requests_so_far(stack)[0] - after_install
        stack.start_worker()
        settle(stack, 120)
        warm_small = requests_so_far(stack)[0] - after_install - seeding_small

        single = _measure(stack, log, seeded[:1], stop_worker_first=False, timeout=120)

        mark = requests_so_far(stack)[0]
        many = seed_invoices(stack, payments, companies=50, prefix="С")
        seeding_many = requests_so_far(stack)[0] - mark
        settle(stack, 300)
        warm_many = requests_so_far(stack)[0] - mark - seeding_many

        statement = _measure(stack, log, many, stop_worker_first=True, timeout=600 if full else 240)
        state = stack.portal_state()
        statement["records"] = sum(1 for p in state.get("payments", []) if p.get("paid") == "Y")
    finally:
        stack.stop()
    return {"single": single, "statement": statement, "after_install": after_install, "seeding_small": seeding_small,
            "warm_small": warm_small, "seeding_many": seeding_many, "warm_many": warm_many}


def run(full: bool = False, payments: int = 500, modes: tuple[bool, ...] = (True,)) -> Report:
    runs = {on: _scenario(full, payments, on) for on in modes}
    table = Table("Bitrix24 REST calls per reconciled payment (counted at the portal sandbox)",
                  ["scenario", "payment records", "worker calls", "calls / payment", "rate-limited (503)",
                   "all paid after", "all paid after the worker started", "requests by method",
                   "commands (batches opened)"])

    def by_count(counts: dict) -> str:
        return ", ".join(f"{m} {n}" for m, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    for name, key in (("single payment", "single"), (f"statement of {payments} payments", "statement")):
        for on, got in runs.items():
            r = got[key]
            table.add(name, ("on" + (f" ({r['records']} paid)" if "records" in r else "")) if on else "off",
                      r["calls"], fmt(r["per_payment"], 3), r["rate_limited"], f"{fmt(r['all_paid_s'], 1)} s",
                      f"{fmt(r['paid_after_start_s'], 1)} s", by_count(r["methods"]), by_count(r["commands"]))
    first = runs[modes[0]]
    single, statement = first["single"], first["statement"]
    after_install, seeding_small, warm_small = first["after_install"], first["seeding_small"], first["warm_small"]
    seeding_many, warm_many = first["seeding_many"], first["warm_many"]
    seeding = Table("Calls that are not the worker's (excluded above)",
                    ["part", "requests"])
    seeding.add("install (the app's install page and ONAPPINSTALL, binding events and placements)", after_install)
    seeding.add("seeding 4 demo invoices (webhook batch) + bank link", seeding_small)
    seeding.add("app warm-up: first invoice read after the 4", warm_small)
    seeding.add(f"seeding {payments} invoices (webhook batch, 50 commands per request)", seeding_many)
    seeding.add(f"app refresh of the {payments} new invoices (events → batched re-read)", warm_many)
    report = Report("bench_rest_calls", [table, seeding],
                    {"single": single, "statement": statement, "install": after_install,
                     "seeding_small": seeding_small, "warm_small": warm_small, "seeding_many": seeding_many,
                     "warm_many": warm_many, "by_records": {("on" if k else "off"): v for k, v in runs.items()}})
    if True in runs and False in runs:
        on, off = runs[True]["statement"]["calls"], runs[False]["statement"]["calls"]
        report.notes.append(f"payment records: the statement costs {on} requests with them, {off} without "
                            f"({fmt(on / off if off else 0, 2)}x; the issue's bound: not double)")
    report.notes.append(f"portal limit 2 req/s, burst 50 (the app paces itself at 90 % of it); the {payments} "
                        f"payments were posted in {fmt(statement['post_s'], 1)} s with the worker stopped")
    report.notes.append("target: well under 0.2 calls per payment for the statement: "
                        + ("met" if statement["per_payment"] < 0.2 else "NOT met"))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="longer timeouts (same sizes)")
    parser.add_argument("--payments", type=int, default=500)
    parser.add_argument("--records", default="on", help="on, off or on,off (side by side, each on a fresh stack)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    modes = tuple(dict.fromkeys({"on": True, "off": False}[m.strip()] for m in args.records.split(",")))
    emit(run(args.full, args.payments, modes), args.json)


if __name__ == "__main__":
    main()
