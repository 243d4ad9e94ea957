"""The documented answers (tests/contracts/) replayed through the app's own clients and parsers: a tiny
local HTTP server answers each fixture's documented response, the real BitrixClient / BankAPI / TIDClient
read it, and the app's parsing code must get the fields it relies on out of it."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from b24app.adapters.banks.tbank import BankAPI
from b24app.adapters.banks.tid import TIDClient
from b24app.adapters.bitrix.client import BitrixClient, OAuthApp, PortalCredentials, request_refresh
from b24app.adapters.bitrix.pacing import LocalPacer
from b24app.contracts import load_contracts, missing_relied
from b24app.web.eventdata import parse_nested_form
from b24app.pipeline.invoices import apply_item, fetch_items, payer_inns, stage_semantics
from b24app.storage.models import Invoice

CONTRACTS = load_contracts()


def replayed(name: str):
    """What the server answers for a contract: the documented response, or its shape where the fixture says
    the example lacks fields the app reads (`"replay": "shape"`)."""
    c = CONTRACTS[name]
    return c.shape if json.loads(c.path.read_text(encoding="utf-8")).get("replay") == "shape" else c.response
BY_SYSTEM = {s: sorted(n for n, c in CONTRACTS.items() if c.system == s and c.kind in ("method", "endpoint")) for s in
             ("bitrix24", "tbank", "tid")}
EVENTS = sorted(n for n, c in CONTRACTS.items() if c.kind == "event" and c.system == "bitrix24")


class DocumentedServer:
    """Answers Bitrix24 REST calls, batch included, and the bank's paths with the documented responses."""

    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self):
                path = urlsplit(self.path).path
                outer.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = outer.route(self.command, path, raw)
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, verb: str, path: str, raw: bytes):
        if path.startswith("/rest/"):
            method = path[len("/rest/"):].removesuffix(".json")
            if method == "batch":
                cmd = json.loads(raw or b"{}").get("cmd") or {}
                if any(line.split("?", 1)[0] not in CONTRACTS for line in cmd.values()):
                    return 200, CONTRACTS["batch"].response  # the documented batch itself
                out = {"result": {}, "result_error": [], "result_total": {}, "result_next": [], "result_time": {}}
                for key, line in cmd.items():
                    doc = replayed(line.split("?", 1)[0])
                    out["result"][key] = doc["result"]
                    if "total" in doc:
                        out["result_total"][key] = doc["total"]
                return 200, {"result": out, "time": CONTRACTS["batch"].response["time"]}
            return 200, replayed(method)
        if path == "/oauth/token/":
            return 200, CONTRACTS["oauth/token refresh"].response
        if path.startswith("/auth/"):
            name = {"/auth/introspect": "tid POST /auth/introspect", "/auth/revoke": "tid POST /auth/revoke"}.get(path)
            if name is None:
                grant = dict(parse_qsl(raw.decode())).get("grant_type")
                name = "tid POST /auth/token (code)" if grant == "authorization_code" else "tid POST /auth/token (refresh)"
            return 200, CONTRACTS[name].response
        for name, c in CONTRACTS.items():
            if c.system == "tbank" and c.kind == "endpoint":
                verb_, template = name.split(" ", 2)[1:]
                prefix = "/openapi" + template.split("{", 1)[0]
                if verb == verb_ and (path == "/openapi" + template or ("{" in template and path.startswith(prefix))):
                    return 200, c.response
        return 404, {"error": "NOT_FOUND"}

    def stop(self):
        self.server.shutdown()


class Store:
    def __init__(self, url):
        self.creds = PortalCredentials("m1", f"{url}/rest/", f"{url}/rest/", "at", "rt")

    def load(self, member_id):
        return self.creds

    def refresh(self, member_id, stale, grant):
        raise AssertionError("no refresh expected")

    def moved(self, member_id, endpoint):
        raise AssertionError("no move expected")


@pytest.fixture(scope="module")
def documented():
    server = DocumentedServer()
    yield server
    server.stop()


@pytest.fixture
def client(documented):
    with httpx.Client(timeout=10) as http:
        yield BitrixClient("m1", Store(documented.url), OAuthApp("app", "secret"), http,
                           LocalPacer(rate=1000, burst=1000), sleep=lambda s: None)


@pytest.mark.parametrize("name", BY_SYSTEM["bitrix24"])
def test_documented_bitrix_answer_reads_through_the_client(client, name):
    contract = CONTRACTS[name]
    body = client.call_raw(name, contract.request or {})
    assert missing_relied(contract, body) == []
    # and through batch, which is how the app calls most methods
    if name != "batch":
        res = client.batch({"k": (name, contract.request or {})})
        assert res.errors == {} and res.results["k"] == replayed(name)["result"]


def test_documented_stage_list_gives_semantics(client):
    semantics = stage_semantics(client, {0})
    rows = CONTRACTS["crm.status.list"].response["result"]
    assert semantics == {r["STATUS_ID"]: r["SEMANTICS"] for r in rows}
    assert "S" in semantics.values() and "F" in semantics.values()


def test_documented_requisites_give_payer_inns(client):
    assert payer_inns(client, {3027}) == {3027: replayed("crm.requisite.list")["result"][0]["RQ_INN"]}


def test_documented_item_list_fills_an_invoice(client):
    items = fetch_items(client, {})
    documented = replayed("crm.item.list")["result"]["items"]
    assert [i["id"] for i in items] == [i["id"] for i in documented]
    inv = Invoice()
    apply_item(inv, documented[0], {"NEW": None}, {})
    assert inv.title == documented[0]["title"]
    assert inv.amount == Decimal(str(documented[0]["opportunity"]))
    assert inv.stage_id == documented[0]["stageId"] and inv.assigned_by_id == documented[0]["assignedById"]
    assert inv.number == documented[0]["accountNumber"] and inv.deal_id == documented[0]["parentId2"]


def test_documented_users_give_names(client, tmp_path):
    """user.get through the batch the tab sends (b24app/portals/usernames.py): each documented user by name."""
    from types import SimpleNamespace

    from b24app.storage.db import Base, Database
    from b24app.storage.models import Portal
    from b24app.portals import usernames

    db = Database(f"sqlite:///{tmp_path / 'names.sqlite3'}")
    Base.metadata.create_all(db.engine)
    with db.session() as s:
        s.add(Portal(member_id="m", domain="d", client_endpoint="https://d/rest/", server_endpoint="https://o/rest/",
                     settings={}))
    with db.session() as s:
        portal = s.query(Portal).one()
    res = client.batch(usernames.command([1, 3]))
    names = usernames.remember(SimpleNamespace(db=db), portal, dict(res.results))
    documented = CONTRACTS["user.get"].response["result"]
    assert names == {u["ID"]: f"{u['NAME']} {u['LAST_NAME']}" for u in documented}


def test_documented_oauth_refresh_gives_a_grant(documented):
    doc = CONTRACTS["oauth/token refresh"].response
    with httpx.Client(timeout=10) as http:
        grant = request_refresh(http, OAuthApp("app", "secret"),
                                PortalCredentials("m1", documented.url + "/rest/", documented.url + "/rest/", "a", "r"))
    assert (grant.access_token, grant.refresh_token, grant.expires_in) == (doc["access_token"], doc["refresh_token"], 3600)
    assert (grant.client_endpoint, grant.server_endpoint, grant.member_id) == (
        doc["client_endpoint"], doc["server_endpoint"], doc["member_id"])


@pytest.mark.parametrize("name", EVENTS)
def test_documented_event_parses_from_its_form_encoding(name):
    contract = CONTRACTS[name]

    def flatten(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from flatten(f"{prefix}[{k}]" if prefix else k, v)
        else:
            yield prefix, str(value)

    body = parse_nested_form(parse_qsl(urlencode(list(flatten("", contract.response)))))
    assert missing_relied(contract, body) == []
    assert body["auth"]["member_id"] == contract.response["auth"]["member_id"]


# -- T-Bank ------------------------------------------------------------------------------------------------
@pytest.fixture
def bank(documented):
    with httpx.Client(timeout=10) as http:
        yield BankAPI(documented.url + "/openapi", lambda force=False: "token", http=http, sleep=lambda s: None)


def test_documented_accounts_parse(bank):
    doc = CONTRACTS["tbank GET /api/v4/bank-accounts"].response[0]
    [account] = bank.accounts()
    assert account.account_number == doc["accountNumber"] and account.currency == "RUB" and account.main
    assert account.balance == Decimal(str(doc["balance"]["balance"]))


def test_documented_company_parses(bank):
    company = bank.company()
    assert company["requisites"]["inn"] == CONTRACTS["tbank GET /api/v1/company"].response["requisites"]["inn"]


def test_documented_statement_operation_parses(bank, documented):
    doc = CONTRACTS["tbank GET /api/v1/statement"].response["operations"][0]
    ops = list(bank.statement("40802810800000977213", datetime(2025, 4, 1, tzinfo=timezone.utc)))
    assert len(ops) == 1  # the documented cursor repeats: the client stops instead of looping
    op = ops[0]
    assert op.operation_id == doc["operationId"] and op.is_credit and op.amount == Decimal("3916")
    assert op.purpose == doc["payPurpose"] and op.payer_inn == doc["payer"]["inn"]
    assert op.operation_date == datetime(2025, 4, 1, 5, 16, 52, tzinfo=timezone.utc)


def test_documented_webhook_answers_parse(bank):
    assert bank.subscribe_webhook("https://example.com/h", "s") == CONTRACTS["tbank POST /api/v1/webhook"].response["id"]
    assert bank.list_webhooks()[0]["id"]
    bank.delete_webhook("6f2c3a4e-1b2d-4c5e-8f90-a1b2c3d4e5f6")


def test_documented_tid_answers_parse(documented):
    with httpx.Client(timeout=10) as http:
        tid = TIDClient(documented.url, "cid", "secret", http=http)
        tokens = tid.exchange_code("c.1aGiAXX3Ni", "https://myintegration.ru/auth/complete")
        assert tokens.access_token == CONTRACTS["tid POST /auth/token (code)"].response["access_token"]
        assert tid.refresh("r").refresh_token == CONTRACTS["tid POST /auth/token (refresh)"].response["refresh_token"]
        info = tid.introspect("t")
        assert info.active and info.has_scope("9999980892", "999991001", "payments/draft/create")
        tid.revoke("r")
