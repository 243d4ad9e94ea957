"""Seeding a demo stack's portal with many invoices fast (webhook `batch`) and watching it from inside.

The measured parts of the benchmarks read the portal sandbox's state in-process (no REST call), so
looking never adds to the request counters that are being measured.
"""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

from sqlalchemy import func, select

PAID_STAGE = "DT31_2:P"  # the success stage of the sandbox's default invoice category


@dataclass(frozen=True)
class SeededInvoice:
    invoice_id: int
    deal_id: int
    number: str
    amount: Decimal
    inn: str
    company: str


def portal_of(stack):
    """The sandbox's in-memory portal object of the stack (read it under `state.lock`)."""
    state = stack.portal_server.app.extensions["portal_sandbox"]
    return state, state.portals[stack.portal_code]


def requests_so_far(stack) -> tuple[int, int]:
    """(HTTP requests, of which refused by the rate limit) the portal has seen so far."""
    state, portal = portal_of(stack)
    with state.lock:
        return portal.requests, portal.rate_limited


def stages(stack, invoice_ids: list[int]) -> dict[int, str]:
    state, portal = portal_of(stack)
    with state.lock:
        return {i: str(portal.invoices[i].get("stageId")) for i in invoice_ids if i in portal.invoices}


def seed_invoices(stack, count: int, *, companies: int = 50, prefix: str = "Б", seed: int = 7) -> list[SeededInvoice]:
    """`count` deals, each with one open smart invoice of one of `companies` client companies (with INN),
    created through the inbound webhook in `batch` calls of 50 commands."""
    rng = random.Random(seed)
    clients = []
    for start in range(0, companies, 25):  # two commands per company: company + requisite
        cmd = {}
        for n in range(start, min(companies, start + 25)):
            inn = str(7_700_000_000 + rng.randint(0, 99_999_999))
            name = f"ООО «Клиент {n}»"
            cmd[f"c{n}"] = {"method": "crm.company.add", "params": {"fields": {"TITLE": name}}}
            cmd[f"r{n}"] = {"method": "crm.requisite.add", "params": {"fields": {
                "ENTITY_TYPE_ID": 4, "ENTITY_ID": f"$result[c{n}]", "PRESET_ID": 1, "NAME": name, "RQ_INN": inn}}}
            clients.append((n, name, inn))
        result = _batch(stack, cmd)
        for n, name, inn in clients[start:]:
            clients[n] = (int(result[f"c{n}"]), name, inn)
    out: list[SeededInvoice] = []
    for start in range(0, count, 25):  # two commands per invoice: deal + invoice
        cmd, planned = {}, []
        for n in range(start, min(count, start + 25)):
            company_id, name, inn = clients[n % len(clients)]
            number = f"{prefix}-{10_000 + n}"
            amount = Decimal(rng.randint(100_00, 2_000_000_00)) / 100
            user = 2 + n % 2
            cmd[f"d{n}"] = {"method": "crm.deal.add", "params": {"fields": {
                "TITLE": f"Сделка {number}", "ASSIGNED_BY_ID": user, "OPPORTUNITY": str(amount),
                "CURRENCY_ID": "RUB", "COMPANY_ID": company_id}}}
            cmd[f"i{n}"] = {"method": "crm.item.add", "params": {"entityTypeId": 31, "fields": {
                "title": f"Счёт {number}", "accountNumber": number, "opportunity": str(amount), "currencyId": "RUB",
                "parentId2": f"$result[d{n}]", "assignedById": user, "companyId": company_id}}}
            planned.append((n, number, amount, inn, name))
        result = _batch(stack, cmd)
        for n, number, amount, inn, name in planned:
            out.append(SeededInvoice(int(result[f"i{n}"]["item"]["id"]), int(result[f"d{n}"]), number, amount,
                                     inn, name))
    return out


def _batch(stack, cmd: dict) -> dict:
    """Each command goes as the string `method?params` (settings/how-to-call-rest-api/batch.md), as the
    portal sandbox now insists (`$result[...]` references stay in the values)."""
    from b24app.adapters.bitrix.query import build_query
    cmd = {k: f"{c['method']}?{build_query(c['params'])}" for k, c in cmd.items()}
    body = stack.rest("batch", {"halt": 1, "cmd": cmd})["result"]
    errors = body.get("result_error") or {}
    if errors:
        raise RuntimeError(f"seeding batch failed: {errors}")
    return body["result"]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> float:
    """Poll until predicate() is truthy; returns the seconds waited. Raises TimeoutError."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not reached within {timeout:.0f}s")
        time.sleep(interval)


def app_is_idle(stack) -> bool:
    """Nothing left for the worker: no undecided credit, no queued invoice refresh, no pending effect."""
    from b24app.storage.models import InvoiceRefresh, Operation, OutboxItem

    with stack.ctx.db.session() as s:
        new_ops = s.scalar(select(func.count()).select_from(Operation).where(Operation.state == "new"))
        refreshes = s.scalar(select(func.count()).select_from(InvoiceRefresh))
        pending = s.scalar(select(func.count()).select_from(OutboxItem).where(
            OutboxItem.status.in_(("pending", "sending"))))
    return not (new_ops or refreshes or pending)


def settle(stack, timeout: float, quiet: float = 3.0) -> float:
    """Wait until the app is idle and the portal has seen no request for `quiet` seconds."""
    started = time.monotonic()
    last = requests_so_far(stack)[0]
    last_change = time.monotonic()
    while True:
        now = time.monotonic()
        current = requests_so_far(stack)[0]
        if current != last:
            last, last_change = current, now
        if app_is_idle(stack) and now - last_change >= quiet:
            return now - started
        if now - started > timeout:
            raise TimeoutError(f"the app did not settle within {timeout:.0f}s")
        time.sleep(0.1)


class RestCallLog:
    """The app's own Bitrix24 REST requests by method, and the commands inside its `batch` requests,
    counted from an httpx event hook on the app's HTTP client."""

    def __init__(self, stack):
        self._prefix = f"{stack.sandbox_url}/p/"
        self._lock = threading.Lock()
        self.methods: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        stack.ctx.http.event_hooks["request"].append(self._on_request)

    def _on_request(self, request) -> None:
        url = str(request.url)
        if not (url.startswith(self._prefix) and "/rest/" in url):
            return
        method = url.rsplit("/", 1)[-1].removesuffix(".json")
        inner: list[str] = []
        if method == "batch":
            try:
                cmd = json.loads(request.content or b"{}").get("cmd") or {}
            except ValueError:
                cmd = {}
            inner = [str(c).split("?", 1)[0] for c in (cmd.values() if isinstance(cmd, dict) else cmd)]
        with self._lock:
            self.methods[method] += 1
            self.commands.update(inner or [method])

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        """(requests by method, commands by method with batches opened)."""
        with self._lock:
            return Counter(self.methods), Counter(self.commands)


def quiet_logs() -> None:
    """Only warnings from the app while a benchmark prints its tables (call after start_stack)."""
    import logging

    logging.getLogger("b24app").setLevel(logging.WARNING)
