"""Payment to paid: from `POST {bank}/sandbox/operations` to the invoice being paid in the portal sandbox.

    .venv/bin/python -m benchmarks.bench_latency [--full] [--payments N] [--gap S] [--latency-ms MS] [--json PATH]

The stack is the one `b24app demo` runs (portal and bank sandboxes, the app, the threaded worker, sync
interval 5 s), installed and linked through the real flows, with the portal's real limit (2 req/s,
burst 50). The bank sandbox delivers a webhook to the app on every operation, which makes the account
due at once; the worker then reads the statement, matches, and sends the effects.

One payment at a time, each for a different open invoice, started every `--gap` seconds (default 3.5 s:
each payment costs about 6 portal requests, and the portal refills 2 per second, so back-to-back
payments would measure the rate limit instead). For each payment we time, from the POST:
  paid     the invoice's stage in the portal is the paid stage (read from the sandbox's memory, no REST);
  notified the responsible manager's notification exists (the last effect of the batch).
Quick: 20 payments; --full: 50. `--latency-ms` makes both sandboxes answer every API call that much later
(`POST /sandbox/config {"latency_ms": N}`, set after seeding): realistic network delay.
"""
from __future__ import annotations

import argparse
import time

from .reporting import Report, Table, emit, fmt, median, percentile
from .seeding import PAID_STAGE, portal_of, quiet_logs, requests_so_far, seed_invoices, settle, wait_until


def _notifications(stack) -> int:
    state, portal = portal_of(stack)
    with state.lock:
        return len(portal.notifications)


def run(full: bool = False, payments: int | None = None, gap: float = 3.5, sync_interval: int = 5,
        latency_ms: float = 0) -> Report:
    from b24app.sandbox.stack import link_bank, start_stack

    count = payments or (50 if full else 20)
    stack = start_stack(sync_interval=sync_interval, event_delivery="async")
    quiet_logs()
    paid, notified, calls = [], [], []
    try:
        if not stack.install().get("install_finish"):
            raise RuntimeError("install failed")
        invoices = seed_invoices(stack, count, companies=10, prefix="Л")
        if 'id="link-ok"' not in link_bank(stack).text:
            raise RuntimeError("bank link failed")
        stack.start_worker()
        settle(stack, 120)
        time.sleep(5)  # let the portal's bucket drain a little after seeding and the first invoice read
        if latency_ms:
            import httpx
            for url in (stack.sandbox_url, stack.bank_url):
                httpx.post(f"{url}/sandbox/config", json={"latency_ms": latency_ms}, timeout=30).raise_for_status()
        state, portal = portal_of(stack)
        for inv in invoices:
            started = time.monotonic()
            before_calls = requests_so_far(stack)[0]
            notes_before = _notifications(stack)
            stack.pay(inv.amount, f"Оплата по счету № {inv.number} от 14.01.2026", payerInn=inv.inn,
                      payerName=inv.company)

            def is_paid() -> bool:
                with state.lock:
                    return portal.invoices[inv.invoice_id].get("stageId") == PAID_STAGE

            wait_until(is_paid, 120, interval=0.01)
            paid.append(time.monotonic() - started)
            wait_until(lambda: _notifications(stack) > notes_before, 120, interval=0.01)
            notified.append(time.monotonic() - started)
            calls.append(requests_so_far(stack)[0] - before_calls)
            rest = gap - (time.monotonic() - started)
            if rest > 0:
                time.sleep(rest)
    finally:
        stack.stop()

    table = Table(f"POST /sandbox/operations → invoice paid in the portal, {count} payments, one every {gap:g} s"
                  + (f", {latency_ms:g} ms per API request" if latency_ms else ""),
                  ["measure", "median", "p95", "min", "max"])
    for name, values in (("invoice paid", paid), ("manager notified", notified)):
        table.add(name, f"{fmt(median(values), 2)} s", f"{fmt(percentile(values, 95), 2)} s",
                  f"{fmt(min(values), 2)} s", f"{fmt(max(values), 2)} s")
    report = Report("bench_latency", [table], {"paid_s": paid, "notified_s": notified, "calls_seen": calls,
                                               "gap_s": gap, "sync_interval": sync_interval,
                                               "latency_ms": latency_ms})
    report.notes.append(f"demo stack: sync interval {sync_interval} s, worker idle poll 0.5 s, portal 2 req/s burst 50; "
                        f"portal requests seen per payment window: median {fmt(median(calls), 0)}")
    report.notes.append("goal: seconds, not minutes: " + ("met" if percentile(paid, 95) < 10 else "NOT met"))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="50 payments instead of 20")
    parser.add_argument("--payments", type=int, default=None)
    parser.add_argument("--gap", type=float, default=3.5, help="seconds between payment starts")
    parser.add_argument("--latency-ms", type=float, default=0, help="sandboxes answer every API call this late")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    emit(run(args.full, args.payments, args.gap, latency_ms=args.latency_ms), args.json)


if __name__ == "__main__":
    main()
