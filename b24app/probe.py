"""`b24app probe`: a read-only conformance check of a real portal or bank against the documented contracts.

Every answer is compared with its fixture in tests/contracts/ by the same function the contract tests use
(b24app.contracts). The probe's transports refuse any Bitrix24 method or bank request outside a read-only
allow-list, and nothing it prints carries a token or a webhook's secret code.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import urljoin

import httpx

from b24app.adapters.bitrix.errors import BitrixError, error_from
from .contracts import Contract, load_contracts
from b24app.pipeline.invoices import ITEM_SELECT
from .manifest import Manifest
from b24app.adapters.bitrix.crm import INVOICE_TYPE

# Only these reach the portal or the bank: the probe writes nothing.
READ_ONLY_METHODS = frozenset({"app.info", "scope", "user.current", "crm.type.list", "crm.category.list",
                               "crm.status.list", "crm.item.list", "crm.requisite.list", "placement.get",
                               "event.get"})
READ_ONLY_BANK = frozenset({("GET", "/api/v4/bank-accounts"), ("GET", "/api/v1/company"),
                            ("GET", "/api/v1/statement"), ("GET", "/api/v1/webhook"), ("POST", "/auth/introspect")})
APP_CONTEXT_ERRORS = ("WRONG_AUTH_TYPE",)
SCOPE_ERRORS = ("insufficient_scope", "INSUFFICIENT_SCOPE")


class WriteRefused(Exception):
    """The probe was asked to send something outside its read-only allow-list."""


@dataclass
class Check:
    name: str
    status: str          # ok | differs | missing scope | n/a | error
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("differs", "missing scope", "error")


def judge(name: str, contract: Contract, body: Any) -> Check:
    """One answer against its contract: missing keys and wrong types fail; keys the docs do not show are
    reported (a real portal carries user fields and more) but do not fail."""
    diffs = contract.differences(body, ignore=() if contract.kind == "block" else ("time",))
    bad = [d for d in diffs if d.kind != "extra"]
    extra = [d for d in diffs if d.kind == "extra"]
    if bad:
        return Check(name, "differs", "; ".join(map(str, bad[:6])) + (f" (+{len(bad) - 6} more)" if len(bad) > 6 else ""))
    return Check(name, "ok", f"{len(extra)} undocumented key(s): {', '.join(d.path for d in extra[:4])}"
                 if extra else "")


# -- transports -------------------------------------------------------------------------------------------
class BitrixReader:
    """Calls only READ_ONLY_METHODS through `send(method, params) -> whole answer`; errors come back typed."""

    def __init__(self, send: Callable[[str, dict], dict], *, webhook: bool):
        self._send, self.webhook = send, webhook

    def call_raw(self, method: str, params: dict | None = None) -> dict:
        if method not in READ_ONLY_METHODS:
            raise WriteRefused(f"the probe does not call {method}")
        return self._send(method, params or {})


def webhook_sender(http: httpx.Client, webhook_url: str) -> Callable[[str, dict], dict]:
    base = webhook_url.rstrip("/") + "/"

    def send(method: str, params: dict) -> dict:
        try:
            resp = http.post(urljoin(base, f"{method}.json"), json=params)
        except httpx.HTTPError as exc:
            raise error_from("network_error", type(exc).__name__, None, method) from None
        try:
            body = resp.json()
        except ValueError:
            raise error_from("bad_response", f"HTTP {resp.status_code}", resp.status_code, method) from None
        if not isinstance(body, dict) or "error" in body or resp.status_code >= 300:
            body = body if isinstance(body, dict) else {}
            raise error_from(str(body.get("error", "bad_response")), str(body.get("error_description", "")),
                             resp.status_code, method)
        return body

    return send


def webhook_code(url: str) -> str:
    m = re.search(r"/rest/\d+/([^/]+)", url)
    return m.group(1) if m else ""


def mask_webhook(url: str) -> str:
    """`https://p.bitrix24.ru/rest/1/abc123/` -> `https://p.bitrix24.ru/rest/1/***/` (the code is a secret)."""
    return re.sub(r"(/rest/\d+/)[^/]+", r"\1***", url)


class BankReader:
    """GETs of READ_ONLY_BANK with a Bearer token (never printed), answers as parsed JSON."""

    def __init__(self, http: httpx.Client, api_url: str, token: Callable[[], str]):
        self.http, self.api_url, self._token = http, api_url.rstrip("/"), token

    def get(self, path: str, params: dict | None = None) -> httpx.Response:
        if ("GET", path) not in READ_ONLY_BANK:
            raise WriteRefused(f"the probe does not send GET {path}")
        return self.http.get(self.api_url + path, params=params,
                             headers={"Authorization": f"Bearer {self._token()}", "Accept": "application/json"})

    def request(self, verb: str, path: str, **kw) -> httpx.Response:
        if (verb, path) not in READ_ONLY_BANK:
            raise WriteRefused(f"the probe does not send {verb} {path}")
        return self.http.request(verb, self.api_url + path, **kw)


# -- Bitrix24 -----------------------------------------------------------------------------------------------
def probe_bitrix(reader: BitrixReader, contracts: dict[str, Contract] | None = None) -> list[Check]:
    contracts = contracts or load_contracts()
    checks: list[Check] = []

    def ask(name: str, method: str, params: dict, *, app_only: bool = False) -> Any:
        try:
            body = reader.call_raw(method, params)
        except BitrixError as exc:
            if exc.code in APP_CONTEXT_ERRORS and reader.webhook and app_only:
                checks.append(Check(name, "n/a", "n/a with a webhook (application context only)"))
            elif exc.code in SCOPE_ERRORS:
                checks.append(Check(name, "missing scope", f"{exc.code}: {exc.description}"))
            else:
                checks.append(Check(name, "error", f"{exc.code}: {exc.description}"))
            return None
        checks.append(judge(name, contracts[method], body))
        return body

    if reader.webhook:
        try:
            reader.call_raw("app.info", {})
            checks.append(Check("app.info", "n/a", "n/a with a webhook (the answer outside an application "
                                                   "is not documented); it answered"))
        except BitrixError as exc:
            checks.append(Check("app.info", "error", f"{exc.code}: {exc.description}"))
    else:
        ask("app.info", "app.info", {})
    body = ask("scope", "scope", {})
    if body is not None:
        granted = set(body.get("result") or [])
        wanted = set(Manifest.load().scopes)
        lacking = sorted(s for s in wanted if s not in granted and not (s == "user_brief" and "user" in granted))
        if lacking:
            checks.append(Check("scope covers the manifest", "missing scope", ", ".join(lacking)))
    user = ask("user.current", "user.current", {})
    if user is not None:
        checks.append(judge("time block", contracts["time"], user.get("time")) if "time" in user
                      else Check("time block", "differs", "time: missing"))
    ask("crm.type.list", "crm.type.list", {"filter": {"entityTypeId": INVOICE_TYPE}})
    cats = ask("invoice funnels (crm.category.list 31)", "crm.category.list", {"entityTypeId": INVOICE_TYPE})
    categories = [c.get("id") for c in ((cats or {}).get("result") or {}).get("categories") or []]
    if cats is not None and not categories:
        checks.append(Check("smart invoices available", "differs", "no invoice funnel: smart invoices are off?"))
    for cat in categories[:10]:
        stages = ask(f"invoice stages, funnel {cat}", "crm.status.list",
                     {"filter": {"ENTITY_ID": f"SMART_INVOICE_STAGE_{cat}"}})
        if stages is not None:
            sems = [row.get("SEMANTICS") for row in stages.get("result") or []]
            if "S" not in sems:
                checks.append(Check(f"paid stage, funnel {cat}", "differs",
                                    "no stage with SEMANTICS 'S' (the app could not mark an invoice paid)"))
    page = ask("invoices, one page", "crm.item.list",
               {"entityTypeId": INVOICE_TYPE, "select": ITEM_SELECT, "order": {"id": "ASC"}, "start": 0})
    companies = sorted({int(i["companyId"]) for i in ((page or {}).get("result") or {}).get("items") or []
                        if str(i.get("companyId") or "0").isdigit() and int(i["companyId"])})
    if companies:
        ask("payer requisites", "crm.requisite.list",
            {"filter": {"ENTITY_TYPE_ID": 4, "@ENTITY_ID": companies[:50]}, "select": ["ENTITY_ID", "RQ_INN"]})
    placements = ask("placement.get", "placement.get", {}, app_only=True)
    events = ask("event.get", "event.get", {}, app_only=True)
    manifest = Manifest.load()
    if placements is not None:
        bound = {str(p.get("placement") or "").upper() for p in placements.get("result") or []}
        unbound = [p.placement for p in manifest.placements if p.placement.upper() not in bound]
        checks.append(Check("manifest placements bound", "differs" if unbound else "ok",
                            f"not bound: {', '.join(unbound)}" if unbound else ""))
    if events is not None:
        bound = {str(e.get("event") or "").upper() for e in events.get("result") or []}
        # ONAPPINSTALL may be gone after an update (bitrix-tools/b24-rest-docs#370): the app re-binds then
        unbound = [e.event for e in manifest.events if e.event.upper() not in bound and e.event != "ONAPPINSTALL"]
        checks.append(Check("manifest events bound", "differs" if unbound else "ok",
                            f"not bound: {', '.join(unbound)}" if unbound else ""))
    return checks


# -- T-Bank ---------------------------------------------------------------------------------------------------
def probe_bank(reader: BankReader, contracts: dict[str, Contract] | None = None, *,
               introspect: Callable[[], httpx.Response] | None = None, now: datetime | None = None) -> list[Check]:
    contracts = contracts or load_contracts()
    checks: list[Check] = []
    now = now or datetime.now(timezone.utc)

    def answer(name: str, contract: str, resp: httpx.Response) -> Any:
        if resp.status_code == 403:
            checks.append(Check(name, "missing scope", _bank_error(resp)))
            return None
        if resp.status_code >= 300:
            checks.append(Check(name, "error", _bank_error(resp)))
            return None
        try:
            body = resp.json()
        except ValueError:
            checks.append(Check(name, "error", f"HTTP {resp.status_code}: not JSON"))
            return None
        checks.append(judge(name, contracts[contract], body))
        return body

    if introspect is not None:
        body = answer("introspect", "tid POST /auth/introspect", introspect())
        if body is not None and not body.get("active"):
            checks[-1] = Check("introspect", "differs", "the token is not active")
    else:
        checks.append(Check("introspect", "n/a", "n/a with a static cabinet token"))
    accounts = answer("accounts", "tbank GET /api/v4/bank-accounts", reader.get("/api/v4/bank-accounts"))
    answer("company", "tbank GET /api/v1/company", reader.get("/api/v1/company"))
    if accounts:
        number = str(accounts[0].get("accountNumber") or "")
        since = (now - timedelta(days=7)).isoformat().replace("+00:00", "Z")
        answer("statement, one page", "tbank GET /api/v1/statement",
               reader.get("/api/v1/statement", {"accountNumber": number, "from": since,
                                                "operationStatus": "Transaction", "limit": 50}))
    elif accounts is not None:
        checks.append(Check("statement, one page", "n/a", "no account to read"))
    resp = reader.get("/api/v1/webhook")
    if resp.status_code == 403:
        checks.append(Check("webhook permission", "missing scope", _bank_error(resp)))
    elif resp.status_code >= 300:
        checks.append(Check("webhook permission", "error", _bank_error(resp)))
    else:
        checks.append(Check("webhook permission", "ok", "the token may manage webhooks"))
    return checks


def _bank_error(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    return f"HTTP {resp.status_code} {body.get('errorCode') or body.get('error') or ''} " \
           f"{body.get('errorMessage') or body.get('error_description') or ''}".strip()


# -- output --------------------------------------------------------------------------------------------------
def render(title: str, checks: list[Check], secrets: tuple[str, ...] = ()) -> str:
    width = max([len(c.name) for c in checks] + [5])
    lines = [title, f"{'check'.ljust(width)}  {'result'.ljust(13)}  what differed", "-" * (width + 30)]
    for c in checks:
        lines.append(f"{c.name.ljust(width)}  {c.status.ljust(13)}  {c.detail}".rstrip())
    failed = sum(c.failed for c in checks)
    lines.append(f"{len(checks)} checks, {failed} not ok" if failed else f"{len(checks)} checks, all ok")
    text = "\n".join(lines)
    for secret in secrets:
        if secret and len(secret) >= 6:  # tokens, webhook URLs and codes; never a short common word
            text = text.replace(secret, "***")
    return text


def to_json(checks: list[Check]) -> str:
    return json.dumps([c.__dict__ for c in checks], ensure_ascii=False)
