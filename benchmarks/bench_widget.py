"""Server time to render the deal tab with 20 invoices and 200 payments on the deal.

    .venv/bin/python benchmarks/bench_widget.py [--renders 60] [--database-url URL]

Variants, each measured on the same seeded deal:
  full render    POST /placement/deal over real HTTP: the one verifying batch call to the portal sandbox,
                 the invoice upsert, the read model and the template (what Bitrix24 waits for);
  server only    the same request with the Bitrix24 answer replayed from memory: our own work only;
  JSON refresh   GET /placement/api/deal/<id> with the frame token (what the open tab polls).
Prints median and p95 in milliseconds and the Bitrix24 REST calls per render (from the sandbox's counter).
"""
from __future__ import annotations

import argparse
import copy
import html
import re
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INVOICES = 20
PAYMENTS = 200


def seed(st) -> int:
    """One deal of user 2 with 20 invoices, 10 payments each matched by the real reconciliation."""
    import httpx
    from sqlalchemy import select

    from b24app.pipeline import reconcile
    from b24app.pipeline.invoices import refresh_all
    from b24app.storage.models import BankAccount, Operation

    company = st.rest("crm.company.add", {"fields": {"TITLE": "ООО «Бенчмарк»"}})["result"]
    st.rest("crm.requisite.add", {"fields": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": company, "PRESET_ID": 1,
                                             "NAME": "ООО «Бенчмарк»", "RQ_INN": "7712345678"}})
    deal = st.rest("crm.deal.add", {"fields": {"TITLE": "Бенчмарк", "ASSIGNED_BY_ID": 2, "COMPANY_ID": company,
                                               "OPPORTUNITY": "2000000", "CURRENCY_ID": "RUB"}})["result"]
    numbers = []
    for n in range(INVOICES):
        number = f"Б-{1000 + n}"
        st.rest("crm.item.add", {"entityTypeId": 31, "fields": {
            "title": f"Счёт {number}", "accountNumber": number, "opportunity": "100000.00", "currencyId": "RUB",
            "parentId2": deal, "assignedById": 2, "companyId": company}})
        numbers.append(number)
    portal = st.ctx.portals.find(st.member_id())
    refresh_all(st.ctx, portal)
    with st.ctx.db.session() as s:
        account = s.scalar(select(BankAccount).where(BankAccount.portal_id == portal.id).order_by(BankAccount.id))
        for i in range(PAYMENTS):
            number = numbers[i % INVOICES]
            s.add(Operation(portal_id=portal.id, account_id=account.id, operation_id=str(uuid4()),
                            fingerprint=uuid4().hex, bank_status="Transaction", is_credit=True,
                            amount=Decimal("1000.00"), currency="RUB", operation_date=st.ctx.clock.now(),
                            purpose=f"Оплата по счету № {number}, частичная оплата {i // INVOICES + 1}",
                            payer_name="ООО «Бенчмарк»", payer_inn="7712345678", state="new"))
    reconcile.reconcile_portal(st.ctx, portal, limit=PAYMENTS + 10)
    httpx.get(st.portal_url + "/sandbox/state", timeout=30)
    return deal


def frame_form(st, deal: int) -> tuple[str, dict]:
    import httpx

    page = httpx.get(f"{st.portal_url}/crm/deal/details/{deal}/", params={"user": 2, "tab": 0}, timeout=30)
    m = re.search(r'<form id="app-form-0" method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    fields = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', m.group(2))}
    return html.unescape(m.group(1)), fields


def timed(fn, n: int) -> list[float]:
    fn()  # warm-up (template compilation, connection pools)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=60)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)

    import logging

    import httpx

    from b24app.sandbox.stack import link_bank, start_stack
    from b24app.web import placement

    logging.disable(logging.INFO)
    # A generous sandbox rate limit: this measures rendering, not Bitrix24's leaky bucket.
    st = start_stack(event_delivery="sync", rate=10_000.0, burst=100_000, database_url=args.database_url)
    try:
        assert st.install()["install_finish"]
        assert link_bank(st).status_code == 200
        deal = seed(st)
        action, fields = frame_form(st, deal)
        http = httpx.Client(timeout=30)

        def full():
            r = http.post(action, data=fields)
            assert r.status_code == 200 and r.text.count('class="b24-card b24-invoice"') == INVOICES, r.status_code

        before = st.portal_state()["requests"]
        full_ms = timed(full, args.renders)
        calls = (st.portal_state()["requests"] - before) / (args.renders + 1)

        # Replay the verifying call's answer: everything but the REST round trip.
        url = urlsplit(action)
        client = st.flask_app.test_client()
        with st.flask_app.test_request_context(f"{url.path}?{url.query}", method="POST", data=fields):
            captured = placement.verify_placement(st.ctx, placement.tab_commands(st.ctx, "deal"))
        real = placement.verify_placement
        placement.verify_placement = lambda ctx, extra=None: copy.deepcopy(captured)
        try:
            def server_only():
                r = client.post(f"{url.path}?{url.query}", data=fields)
                assert r.status_code == 200

            server_ms = timed(server_only, args.renders)
            token = re.search(r'"token": "([^"]+)"', client.post(f"{url.path}?{url.query}", data=fields)
                              .get_data(as_text=True)).group(1)
        finally:
            placement.verify_placement = real

        def refresh():
            r = http.get(f"{st.app_url}/placement/api/deal/{deal}", headers={"X-Frame-Token": token})
            assert r.status_code == 200 and len(r.json()["invoices"]) == INVOICES

        refresh_ms = timed(refresh, args.renders)
        http.close()
    finally:
        st.stop()

    print(f"\nDeal tab with {INVOICES} invoices and {PAYMENTS} matched payments, {args.renders} renders each")
    print(f"{'variant':<16}{'median ms':>11}{'p95 ms':>9}{'REST calls/render':>19}")
    rows = [("full render", full_ms, f"{calls:.2f}"), ("server only", server_ms, "0 (replayed)"),
            ("JSON refresh", refresh_ms, "0")]
    for name, values, rest in rows:
        print(f"{name:<16}{statistics.median(values):>11.1f}{p95(values):>9.1f}{rest:>19}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
