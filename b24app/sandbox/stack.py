"""The whole story on loopback: portal sandbox, bank sandbox, the app (web + worker) wired together.

Used by `b24app demo`, the end-to-end tests and the benchmarks. Every piece talks to the others over
real sockets; nothing is patched.
"""
from __future__ import annotations

import errno
import html
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx

from ..config import Settings, finalize
from .server import RunningServer, listening_socket, serve_in_thread

APP_CLIENT_ID = "local.b24app.demo"
APP_CLIENT_SECRET = "demo-b24-secret-0123456789"
BANK_CLIENT_ID = "b24app-demo"
BANK_CLIENT_SECRET = "demo-secret"
DEMO_INN, DEMO_KPP, DEMO_PHONE = "7701234560", "770101001", "+79990000001"
TOCHKA_CLIENT_ID, TOCHKA_CLIENT_SECRET = "b24app-tochka-demo", "tochka-demo-secret"


class PortInUse(Exception):
    """A port the stack was asked to use is taken (another demo, or any other program)."""

    def __init__(self, port: int):
        super().__init__(f"port {port} is already in use")
        self.port = port


def _bind_all(base_port: int, count: int = 4) -> list:
    """Sockets for the app, the portal, T-Bank and Tochka on base_port, +1, +2, +3 (free ports when 0)."""
    socks = []
    for n in range(count):
        port = base_port + n if base_port else 0
        try:
            socks.append(listening_socket(port=port))
        except OSError as exc:
            for sock in socks:
                sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(port) from exc
            raise
    return socks


@dataclass
class Stack:
    settings: Settings
    portal_server: RunningServer
    bank_server: RunningServer
    app_server: RunningServer
    ctx: object
    flask_app: object
    data_dir: Path
    portal_code: str = "demo"
    worker: object | None = None
    worker_thread: threading.Thread | None = None
    _tmp: object | None = field(default=None, repr=False)
    tochka_server: RunningServer | None = None
    tochka_app: object | None = None

    @property
    def app_url(self) -> str:
        return self.app_server.url

    @property
    def sandbox_url(self) -> str:
        return self.portal_server.url

    @property
    def portal_url(self) -> str:
        return f"{self.portal_server.url}/p/{self.portal_code}"

    @property
    def bank_url(self) -> str:
        return self.bank_server.url

    @property
    def hook(self) -> str:
        """Inbound webhook of the portal (admin user 1): seed and inspect CRM data like a person would."""
        return f"{self.portal_url}/rest/1/sandboxhook/"

    def portal_http(self, method: str, path: str, *, timeout: float = 30, **kw) -> httpx.Response:
        """`method` on `{portal_url}{path}`. A renamed portal answers with a redirect to its new code: it is
        followed with the same method and body (httpx would turn a POST into a GET on a 302), and
        `portal_code` moves along, so the next call goes to the new code directly."""
        url = f"{self.portal_url}{path}"
        for _ in range(10):
            r = httpx.request(method, url, timeout=timeout, follow_redirects=False, **kw)
            if r.status_code not in (301, 302, 307, 308) or not r.headers.get("location"):
                break
            url = urljoin(url, r.headers["location"])
            prefix = f"{self.sandbox_url}/p/"
            if url.startswith(prefix):
                self.portal_code = url[len(prefix):].split("/", 1)[0]
        return r

    def rest(self, method: str, params: dict | None = None) -> dict:
        """Call the portal as its admin would through a webhook (waits out the portal's rate limit)."""
        for attempt in range(60):
            r = self.portal_http("POST", f"/rest/1/sandboxhook/{method}.json", json=params or {})
            if r.status_code != 503:
                break
            time.sleep(0.5)
        r.raise_for_status()
        return r.json()

    def portal_state(self) -> dict:
        return self.portal_http("GET", "/sandbox/state").json()

    @property
    def tochka_url(self) -> str:
        return self.tochka_server.url

    def tochka_state(self) -> dict:
        return httpx.get(f"{self.tochka_url}/sandbox/state", timeout=30).json()

    def pay_tochka(self, amount, purpose: str, **kw) -> dict:
        """An incoming payment into the demo company's Tochka account (in the statement, and pushed)."""
        r = httpx.post(f"{self.tochka_url}/sandbox/operations",
                       json={"amount": str(Decimal(str(amount))), "purpose": purpose, **kw}, timeout=30)
        r.raise_for_status()
        return r.json()

    def bank_state(self) -> dict:
        return httpx.get(f"{self.bank_url}/sandbox/state", timeout=30).json()

    def install(self) -> dict:
        r = self.portal_http("POST", "/sandbox/install", json={"client_id": APP_CLIENT_ID, "user_id": 1},
                             timeout=60)
        r.raise_for_status()
        return r.json()

    def member_id(self) -> str:
        return self.portal_state()["member_id"]

    def pay(self, amount, purpose: str, **kw) -> dict:
        body = {"amount": str(Decimal(str(amount))), "payPurpose": purpose, **kw}
        r = httpx.post(f"{self.bank_url}/sandbox/operations", json=body, timeout=30)
        r.raise_for_status()
        return r.json()

    def worker_env(self) -> dict[str, str]:
        """B24APP_* variables that make `b24app worker` in another process join this stack."""
        s = self.settings
        return {"B24APP_MODE": s.mode, "B24APP_DATA_DIR": str(self.data_dir), "B24APP_DATABASE_URL": s.database_url,
                "B24APP_SECRET_KEY": s.secret_key, "B24APP_TOKEN_KEYS": ",".join(s.token_keys),
                "B24APP_PUBLIC_URL": s.public_url, "B24APP_BITRIX_CLIENT_ID": s.bitrix_client_id,
                "B24APP_BITRIX_CLIENT_SECRET": s.bitrix_client_secret,
                "B24APP_BITRIX_OAUTH_SERVERS": ",".join(s.bitrix_oauth_servers),
                "B24APP_TBANK_CLIENT_ID": s.tbank_client_id, "B24APP_TBANK_CLIENT_SECRET": s.tbank_client_secret,
                "B24APP_TBANK_ID_URL": s.tbank_id_url, "B24APP_TBANK_API_URL": s.tbank_api_url,
                "B24APP_SYNC_INTERVAL": str(s.sync_interval), "B24APP_LEASE_SECONDS": str(s.lease_seconds),
                "B24APP_INVOICE_REFRESH_INTERVAL": str(s.invoice_refresh_interval),
                "B24APP_BITRIX_RATE": str(s.bitrix_rate), "B24APP_BITRIX_BURST": str(s.bitrix_burst),
                "B24APP_OPERATOR_EMAIL": s.operator_email,
                "B24APP_TOCHKA_CLIENT_ID": s.tochka_client_id, "B24APP_TOCHKA_CLIENT_SECRET": s.tochka_client_secret,
                "B24APP_TOCHKA_AUTH_URL": s.tochka_auth_url, "B24APP_TOCHKA_API_URL": s.tochka_api_url,
                "B24APP_TOCHKA_WEBHOOK_KEY_URL": s.tochka_webhook_key_url}

    def start_worker(self, **kw) -> None:
        from b24app.pipeline.worker import Worker

        self.worker = Worker(self.ctx, **kw)
        self.worker_thread = threading.Thread(target=self.worker.run, name="b24app-worker", daemon=True)
        self.worker_thread.start()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stopping.set()
            self.worker_thread.join(timeout=30)
            self.worker = self.worker_thread = None

    def stop(self) -> None:
        self.stop_worker()
        if self.tochka_app is not None:
            self.tochka_app.extensions["tochka_sandbox"].stop()
        for server in (self.app_server, self.portal_server, self.bank_server, self.tochka_server):
            if server is not None:
                server.stop()
        self.ctx.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def start_stack(*, base_port: int = 0, data_dir: str | None = None, database_url: str | None = None,
                sync_interval: int = 2, access_ttl: int = 3600, bank_access_ttl: int = 1800,
                rate: float = 2.0, burst: int = 50, event_delivery: str = "async",
                bank_rate_limit_rps: float = 20.0, clock=None, pacer=None, mode: str = "demo",
                operator_email: str = "operator@b24app.test") -> Stack:
    """Start the sandboxes and the app (no worker yet) on base_port, +1, +2 (free ports when 0)."""
    from .. import create_app
    from ..context import AppContext
    from ..manifest import Manifest
    from b24app.storage.migrate import upgrade
    from b24app.sandbox.tbank.app import create_bank_sandbox
    from b24app.sandbox.portal.app import create_portal_sandbox
    from b24app.sandbox.tochka.app import create_tochka_sandbox

    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="b24app-")
        data_dir = tmp.name
    # Bound before anything starts: each server must know the others' addresses.
    socks = _bind_all(base_port)
    ports = [sock.getsockname()[1] for sock in socks]
    app_url, sandbox_url, bank_url, tochka_url = (f"http://127.0.0.1:{p}" for p in ports)

    portal_app = create_portal_sandbox(access_ttl=access_ttl, rate=rate, burst=burst, event_delivery=event_delivery,
                                       apps=[{"client_id": APP_CLIENT_ID, "client_secret": APP_CLIENT_SECRET,
                                              "install_url": f"{app_url}/install", "handler_url": f"{app_url}/app",
                                              "scope": ",".join(Manifest.load().scopes)}])
    bank_app = create_bank_sandbox(access_ttl=bank_access_ttl, rate_limit_rps=bank_rate_limit_rps,
                                   redirect_uris=[f"{app_url}/bank/callback"])
    portal_server = serve_in_thread(portal_app, sock=socks[1])
    bank_server = serve_in_thread(bank_app, sock=socks[2])
    tochka_app = create_tochka_sandbox(redirect_uris=[f"{app_url}/bank/tochka/callback"],
                                       demo_company={"inn": DEMO_INN, "kpp": DEMO_KPP, "phone": DEMO_PHONE})
    tochka_server = serve_in_thread(tochka_app, sock=socks[3])

    settings = finalize(Settings(
        mode=mode, data_dir=data_dir, database_url=database_url or "", public_url=app_url,
        bitrix_client_id=APP_CLIENT_ID, bitrix_client_secret=APP_CLIENT_SECRET,
        bitrix_oauth_servers=(sandbox_url,), bx24_js_url=f"{sandbox_url}/api/v1/",
        tbank_client_id=BANK_CLIENT_ID, tbank_client_secret=BANK_CLIENT_SECRET,
        tbank_id_url=bank_url, tbank_api_url=f"{bank_url}/openapi", sync_interval=sync_interval,
        invoice_refresh_interval=300, lease_seconds=30, bitrix_rate=rate, bitrix_burst=burst,
        operator_email=operator_email, tochka_client_id=TOCHKA_CLIENT_ID, tochka_client_secret=TOCHKA_CLIENT_SECRET,
        tochka_auth_url=f"{tochka_url}/connect", tochka_api_url=f"{tochka_url}/uapi",
        tochka_webhook_key_url=f"{tochka_url}/doc/openapi/static/keys/public"))
    upgrade(settings.database_url)
    ctx = AppContext.for_worker(settings, clock=clock, pacer=pacer)  # the demo's worker runs in this process
    flask_app = create_app(settings, context=ctx)
    app_server = serve_in_thread(flask_app, sock=socks[0])
    return Stack(settings=settings, portal_server=portal_server, bank_server=bank_server, app_server=app_server,
                 ctx=ctx, flask_app=flask_app, data_dir=Path(data_dir), _tmp=tmp, tochka_server=tochka_server,
                 tochka_app=tochka_app)


# -- seeding the portal like a sales team would ---------------------------------------------------------
DEMO_DEALS = [
    # (deal title, responsible user, client company, client INN, invoice number, amount)
    ("Поставка картриджей", 2, "ООО «Вектор»", "7712345678", "1207", "12000.00"),
    ("Годовое обслуживание", 2, "АО «Север»", "7801234567", "СЧ-00412", "48500.00"),
    ("Монтаж сигнализации", 3, "ИП Петров", "500100732259", "INV-2025-0042", "7350.50"),
    ("Консультации, январь", 3, "ООО «Вектор»", "7712345678", "1208", "3000.00"),
]


def seed_crm(stack: Stack, deals=DEMO_DEALS) -> list[dict]:
    """Companies with INN requisites, deals, and a smart invoice per deal, through the REST API; and the
    portal's own company (the demo bank customer's INN in its requisites)."""
    out = []
    companies: dict[str, int] = {}
    for title, user, company, inn, number, amount in deals:
        if company not in companies:
            cid = stack.rest("crm.company.add", {"fields": {"TITLE": company}})["result"]
            stack.rest("crm.requisite.add", {"fields": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": cid, "PRESET_ID": 1,
                                                        "NAME": company, "RQ_INN": inn}})
            companies[company] = cid
        deal_id = stack.rest("crm.deal.add", {"fields": {"TITLE": title, "ASSIGNED_BY_ID": user,
                                                         "OPPORTUNITY": amount, "CURRENCY_ID": "RUB",
                                                         "COMPANY_ID": companies[company]}})["result"]
        item = stack.rest("crm.item.add", {"entityTypeId": 31, "fields": {
            "title": f"Счёт {number}", "accountNumber": number, "opportunity": amount, "currencyId": "RUB",
            "parentId2": deal_id, "assignedById": user, "companyId": companies[company]}})["result"]["item"]
        out.append({"deal_id": deal_id, "invoice_id": item["id"], "number": number, "amount": amount,
                    "user": user, "inn": inn, "company": company})
    ensure_own_company(stack, DEMO_INN, DEMO_KPP)  # the company that collects the payments
    return out


# -- the bank link, driven over HTTP the way a browser would --------------------------------------------
class _Forms(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action") or "", "method": (a.get("method") or "get").lower(),
                               "fields": [], "buttons": []})
        elif self.forms and tag == "input":
            kind = (a.get("type") or "text").lower()
            if kind == "checkbox" and "checked" not in a:
                return
            if kind in ("submit", "button"):
                self.forms[-1]["buttons"].append((a.get("name"), a.get("value", "")))
            elif a.get("name"):
                self.forms[-1]["fields"].append((a["name"], a.get("value", "")))
        elif self.forms and tag == "button" and a.get("name"):
            self.forms[-1]["buttons"].append((a["name"], a.get("value", "")))

    def handle_data(self, data):
        self.text.append(data)


def submit_form(client: httpx.Client, response: httpx.Response, values: dict, button: str | None = None) -> httpx.Response:
    """Fill and submit the page's first form, as a browser would (hidden fields and ticked boxes kept)."""
    parser = _Forms()
    parser.feed(response.text)
    if not parser.forms:
        raise AssertionError(f"no form on {response.url}: {html.unescape(''.join(parser.text))[:300]}")
    form = parser.forms[0]
    fields = [(k, v) for k, v in form["fields"] if k not in values] + [
        (k, x) for k, v in values.items() for x in (v if isinstance(v, list) else [v])]
    if button:
        fields.append((button, dict(form["buttons"]).get(button, "1")))
    url = urljoin(str(response.url), form["action"] or str(response.url))
    data: dict[str, list[str]] = {}
    for k, v in fields:
        data.setdefault(k, []).append(v)
    if form["method"] == "post":
        return client.post(url, data=data)
    return client.get(url, params=data)


def link_ticket(stack: Stack, user_id: int = 1, is_admin: bool = True, lang: str = "ru") -> str:
    from b24app.web.tbank import issue_link_ticket
    from ..web.security import Frame

    with stack.flask_app.test_request_context():
        return issue_link_ticket(Frame(stack.member_id(), user_id, is_admin, "DEFAULT", None, lang))


def ensure_own_company(stack: Stack, inn: str, kpp: str = "0", name: str = "ООО «Демо»") -> int:
    """The portal's own company ("my company", IS_MY_COMPANY=Y) with this INN in its requisites, as an admin
    keeps it in CRM → My company details; created through the REST API when missing."""
    mine = stack.rest("crm.company.list", {"filter": {"IS_MY_COMPANY": "Y"}, "select": ["ID"]})["result"]
    ids = [int(c["ID"]) for c in mine]
    if ids:
        reqs = stack.rest("crm.requisite.list", {"filter": {"ENTITY_TYPE_ID": 4, "@ENTITY_ID": ids},
                                                 "select": ["ENTITY_ID", "RQ_INN"]})["result"]
        for r in reqs:
            if str(r.get("RQ_INN")) == inn:
                return int(r["ENTITY_ID"])
    cid = stack.rest("crm.company.add", {"fields": {"TITLE": name, "IS_MY_COMPANY": "Y"}})["result"]
    stack.rest("crm.requisite.add", {"fields": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": cid, "PRESET_ID": 1, "NAME": name,
                                                "RQ_INN": inn, "RQ_KPP": "" if kpp == "0" else kpp}})
    return cid


def link_bank(stack: Stack, *, inn: str = DEMO_INN, kpp: str = DEMO_KPP, phone: str = DEMO_PHONE,
              untick: tuple[str, ...] = (), deny: bool = False, own_company: bool = True) -> httpx.Response:
    """Run the SMS link flow end to end over HTTP as the portal's admin; returns the app's final callback
    page. With `own_company` the INN is first made one of the portal's own companies (as it is on a real
    portal); without it the app asks to confirm a foreign company, and that page is returned."""
    if own_company:
        ensure_own_company(stack, inn, kpp)
    with httpx.Client(follow_redirects=True, timeout=30) as browser:
        page = browser.get(f"{stack.app_url}/bank/start", params={"ticket": link_ticket(stack)})
        page.raise_for_status()
        page = submit_form(browser, page, {"inn": inn, "kpp": kpp})   # → T-Bank sign-in page
        if page.status_code == 409:
            return page  # "not one of your companies": the admin must confirm
        page = submit_form(browser, page, {"phone": phone})             # → SMS code page
        code = re.search(r'id="sms-code">(\d{4})<', page.text)
        if not code:
            raise AssertionError("no SMS code on the sandbox page")
        page = submit_form(browser, page, {"code": code.group(1)})      # → consent page
        if deny:
            return submit_form(browser, page, {}, button="deny")
        parser = _Forms()
        parser.feed(page.text)
        scopes = [v for k, v in parser.forms[0]["fields"] if k == "scope" and not any(u in v for u in untick)]
        return submit_form(browser, page, {"scope": scopes}, button="allow")  # → app callback


def link_tochka(stack: Stack, *, inn: str = DEMO_INN, kpp: str = DEMO_KPP, phone: str = DEMO_PHONE,
                untick: tuple[str, ...] = (), deny: bool = False, own_company: bool = True) -> httpx.Response:
    """Link the demo company's Tochka account through Tochka's consent flow over HTTP, as the portal's admin:
    the INN page, Tochka's sign-in (phone), the SMS code, the permissions page; returns the app's last page."""
    if own_company:
        ensure_own_company(stack, inn, kpp)
    with httpx.Client(follow_redirects=True, timeout=30) as browser:
        page = browser.get(f"{stack.app_url}/bank/tochka/start", params={"ticket": link_ticket(stack)})
        page.raise_for_status()
        page = submit_form(browser, page, {"inn": inn, "kpp": kpp})   # → Tochka sign-in page
        if page.status_code != 200 or "/connect/" not in str(page.url):
            return page
        page = submit_form(browser, page, {"phone": phone})             # → SMS code page
        code = re.search(r'id="sms-code">(\d{4})<', page.text)
        if not code:
            raise AssertionError("no SMS code on the Tochka sandbox page")
        page = submit_form(browser, page, {"code": code.group(1)})      # → permissions page
        if deny:
            return submit_form(browser, page, {}, button="deny")
        parser = _Forms()
        parser.feed(page.text)
        perms = [v for k, v in parser.forms[0]["fields"] if k == "permission" and v not in untick]
        return submit_form(browser, page, {"permission": perms}, button="allow")  # → app callback
