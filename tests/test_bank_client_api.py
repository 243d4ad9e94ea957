"""BankAPI against the bank sandbox over real HTTP: paging, filters, retries, token refresh, typed errors, webhooks."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from flask import Flask, jsonify

from b24app.adapters.banks import (
    BankAPI,
    BankServerError,
    BankUnavailable,
    Forbidden,
    InvalidData,
    RateLimited,
    TIDClient,
    Unauthorized,
)
from b24app.sandbox.tbank.app import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_INN, DEMO_KPP, create_bank_sandbox
from b24app.sandbox.tbank.state import BankSandboxState
from b24app.sandbox.tbank.testing import FakeClock, Receiver, drive_tid_login, slot_server
from b24app.sandbox.server import serve_in_thread

SINCE = datetime(2025, 1, 1, tzinfo=timezone.utc)
REDIRECT = "http://127.0.0.1:9/cb"


@dataclass
class Env:
    url: str
    clock: FakeClock
    state: BankSandboxState
    http: httpx.Client
    token: str
    account: str
    sent: list[httpx.Request] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    def control(self, path: str, body: dict | None = None) -> dict:
        r = self.http.post(f"{self.url}/sandbox{path}", json=body or {})
        assert r.status_code < 300, r.text
        return r.json()

    def api(self, token=None, advance_clock: bool = False, **kwargs) -> BankAPI:
        def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)
            if advance_clock:
                self.clock.advance(seconds)

        return BankAPI(f"{self.url}/openapi", token or (lambda force: self.token), http=self.http, sleep=sleep,
                       **kwargs)


@pytest.fixture(scope="module")
def server():
    with slot_server() as running:
        yield running


@pytest.fixture
def env(server):
    clock = FakeClock()
    app = server.app.app = create_bank_sandbox(clock=clock, redirect_uris=[REDIRECT], webhook_retry_delays=(0.05,))
    sent: list[httpx.Request] = []
    http = httpx.Client(timeout=5, event_hooks={"request": [sent.append]})
    token = http.post(f"{server.url}/sandbox/static-tokens", json={"inn": DEMO_INN, "kpp": DEMO_KPP}).json()["token"]
    account = http.get(f"{server.url}/sandbox/state").json()["accounts"][0]["accountNumber"]
    state = app.extensions["bank_sandbox"]
    yield Env(server.url, clock, state, http, token, account, sent)
    state.close()
    http.close()


def _seven(env: Env) -> list[str]:
    base = datetime(2025, 6, 1, 9, 0, tzinfo=timezone.utc)
    return [env.control("/operations", {"amount": f"{100 + i}.{i}5", "payPurpose": f"Оплата по счету № {i}",
                                        "operationDate": (base + timedelta(minutes=i)).isoformat()})["operationId"]
            for i in range(7)]


def test_accounts_and_company(env: Env):
    api = env.api()
    accounts = api.accounts()
    assert [a.account_number for a in accounts][0] == env.account
    assert {a.currency for a in accounts} == {"RUB", "USD"} and accounts[0].main and not accounts[1].main
    env.control("/operations", {"amount": "10.05", "payPurpose": "x"})
    assert api.accounts()[0].balance == Decimal("10.05")
    assert api.company()["requisites"]["inn"] == DEMO_INN


def test_statement_follows_cursors_with_limit_2(env: Env):
    ids = _seven(env)
    env.sent.clear()
    ops = list(env.api().statement(env.account, SINCE, limit=2))
    assert [op.operation_id for op in ops] == ids
    assert ops[3].amount == Decimal("103.35") and all(isinstance(op.amount, Decimal) for op in ops)
    statement_calls = [r for r in env.sent if r.url.path.endswith("/v1/statement")]
    assert len(statement_calls) == 4
    request_ids = [r.headers["X-Request-Id"] for r in statement_calls]
    assert len(set(request_ids)) == 4 and all(uuid.UUID(x).version == 4 for x in request_ids)
    first = parse_qs(urlsplit(str(statement_calls[0].url)).query)
    assert first["from"] == ["2025-01-01T00:00:00Z"] and first["operationStatus"] == ["Transaction"]
    assert "cursor" not in first and all("cursor=" in str(r.url) for r in statement_calls[1:])

    until = datetime(2025, 6, 1, 12, 4, tzinfo=timezone(timedelta(hours=3)))  # 09:04 UTC, exclusive
    window = list(env.api().statement(env.account, datetime(2025, 6, 1, 9, 1, tzinfo=timezone.utc), until))
    assert [op.operation_id for op in window] == ids[1:4]


def test_status_filter(env: Env):
    done = env.control("/operations", {"amount": "1", "payPurpose": "a"})["operationId"]
    pending = env.control("/operations", {"amount": "2", "payPurpose": "b", "operationStatus": "Authorization"})
    api = env.api()
    assert [op.operation_id for op in api.statement(env.account, SINCE)] == [done]
    only_pending = list(api.statement(env.account, SINCE, status="Authorization"))
    assert [op.operation_id for op in only_pending] == [pending["operationId"]]
    assert only_pending[0].status == "Authorization"
    assert len(list(api.statement(env.account, SINCE, status="All"))) == 2
    with pytest.raises(ValueError):
        next(api.statement(env.account, datetime(2025, 1, 1)))
    with pytest.raises(ValueError):
        next(api.statement(env.account, SINCE, limit=5001))


def test_429_then_success_with_backoff(env: Env):
    env.control("/config", {"rate_limit_rps": 1})
    api = env.api(advance_clock=True)
    assert api.company()["name"]
    assert env.sleeps == []
    assert api.company()["name"]  # second call within the same second: 429, sleep (advances clock), success
    assert 1 <= len(env.sleeps) <= api.max_retries
    for attempt, delay in enumerate(env.sleeps):
        ceiling = min(8.0, 0.5 * 2 ** attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert sum(env.sleeps) >= 0.5


def test_429_forever_raises_rate_limited_after_bounded_retries(env: Env):
    env.control("/faults", {"kinds": {"rate_limit": 1}})
    env.sent.clear()
    with pytest.raises(RateLimited) as info:
        env.api(max_retries=3).company()
    assert len(env.sleeps) == 3 and len(env.sent) == 4
    assert info.value.status == 429 and info.value.error_code == "TOO_MANY_REQUESTS"
    assert info.value.request_id == env.sent[-1].headers["X-Request-Id"] and info.value.error_id


def test_server_errors_are_retried_then_typed(env: Env):
    env.control("/faults", {"kinds": {"server_error": 1}})
    with pytest.raises(BankServerError) as info:
        env.api(max_retries=2).accounts()
    assert len(env.sleeps) == 2 and info.value.status == 500
    env.http.delete(f"{env.url}/sandbox/faults")
    env.control("/faults", {"kinds": {"server_error": 0.5}})
    assert env.api(max_retries=10).company()["requisites"]["kpp"] == DEMO_KPP


def test_post_is_not_retried_on_server_error(env: Env):
    env.control("/faults", {"kinds": {"server_error": 1}})
    env.sent.clear()
    with pytest.raises(BankServerError):
        env.api().subscribe_webhook("http://127.0.0.1:9/hook", "s")
    assert len(env.sent) == 1 and env.sleeps == []


def _oauth_tokens(env: Env) -> tuple[TIDClient, str, str]:
    tid = TIDClient(env.url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, http=env.http)
    final = drive_tid_login(env.http, tid.authorization_url(REDIRECT, "s", DEMO_INN, DEMO_KPP))
    code = parse_qs(urlsplit(final.headers["Location"]).query)["code"][0]
    tokens = tid.exchange_code(code, REDIRECT)
    return tid, tokens.access_token, tokens.refresh_token


def test_401_calls_token_with_force_refresh_and_retries_once(env: Env):
    tid, access, refresh = _oauth_tokens(env)
    current = {"access": access, "refresh": refresh}
    calls: list[bool] = []

    def token(force: bool) -> str:
        calls.append(force)
        if force:
            fresh = tid.refresh(current["refresh"])
            current.update(access=fresh.access_token, refresh=fresh.refresh_token)
        return current["access"]

    api = env.api(token=token)
    assert api.company()["name"] and calls == [False]
    env.control("/expire-tokens")
    assert api.company()["name"]
    assert calls == [False, False, True]

    stale: list[bool] = []
    with pytest.raises(Unauthorized) as info:
        env.api(token=lambda force: stale.append(force) or "t.dead").company()
    assert stale == [False, True] and info.value.error_code == "UNAUTHORIZED"


def test_typed_client_errors(env: Env):
    with pytest.raises(InvalidData) as info:
        list(env.api().statement("123", SINCE))
    assert info.value.status == 400 and info.value.error_code == "INVALID_DATA" and info.value.details
    narrow = env.control("/static-tokens", {"inn": DEMO_INN, "kpp": DEMO_KPP, "scopes": ["bank-accounts/get"]})
    with pytest.raises(Forbidden) as forbidden:
        list(env.api(token=lambda force: narrow["token"]).statement(env.account, SINCE))
    assert forbidden.value.message == "У вас неподходящие скопы для данной операции"
    assert env.sleeps == []


def test_timeout_and_connection_errors_become_bank_unavailable(env: Env):
    env.control("/config", {"fault_timeout": 3})
    env.control("/faults", {"kinds": {"timeout": 1}})
    quick = httpx.Client(timeout=0.3)
    try:
        api = BankAPI(f"{env.url}/openapi", lambda force: env.token, http=quick, sleep=env.sleeps.append,
                      max_retries=1)
        with pytest.raises(BankUnavailable):
            api.company()
        assert len(env.sleeps) == 1
        dead = BankAPI("http://127.0.0.1:9/openapi", lambda force: "t", http=quick, sleep=env.sleeps.append,
                       max_retries=2)
        with pytest.raises(BankUnavailable):
            dead.accounts()
        assert len(env.sleeps) == 3
    finally:
        quick.close()


def test_shuffled_overlapping_pages_still_yield_each_operation_once(env: Env):
    ids = _seven(env)
    env.control("/faults", {"kinds": {"shuffle_pages": 1}})
    got = [op.operation_id for op in env.api().statement(env.account, SINCE, limit=3)]
    assert sorted(got) == sorted(ids) and len(got) == 7
    assert env.state.faults_fired["shuffle_pages"] >= 1


def test_repeated_cursor_stops_paging():
    calls: list[str] = []
    app = Flask("looping_bank")

    @app.get("/openapi/api/v1/statement")
    def looping():
        calls.append("x")
        n = len(calls)
        op = {"operationId": f"op-{n}", "accountNumber": "4" * 20, "operationDate": "2025-06-01T09:00:00Z",
              "operationStatus": "Transaction", "typeOfOperation": "Credit", "accountAmount": 1,
              "payPurpose": "x"}
        return jsonify({"operations": [op], "nextCursor": "same" if n > 1 else "first"})

    server = serve_in_thread(app)
    try:
        with httpx.Client(timeout=5) as http:
            ops = list(BankAPI(f"{server.url}/openapi", lambda force: "t", http=http).statement("4" * 20, SINCE))
        assert [op.operation_id for op in ops] == ["op-1", "op-2", "op-3"] and len(calls) == 3
    finally:
        server.stop()


def test_webhook_subscribe_deliver_and_delete(env: Env):
    receiver = Receiver(fail_first=2).start()
    try:
        api = env.api()
        hook_id = api.subscribe_webhook(receiver.url + "/bank/webhook", "hook-secret", email="ops@example.com")
        assert [h["id"] for h in api.list_webhooks()] == [hook_id]
        op = env.control("/operations", {"amount": "99.90", "payPurpose": "Оплата по счету № 7"})
        deadline = time.monotonic() + 5
        while len(receiver.posts()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        posts = receiver.posts()
        assert len(posts) == 3 and posts[-1]["path"] == "/bank/webhook"
        assert posts[-1]["headers"]["Authorization"] == "Bearer hook-secret"
        assert posts[-1]["json"]["operationId"] == op["operationId"]
        # The sandbox notes an attempt once the receiver has answered it: the third may be a moment behind.
        attempts = []
        while len(attempts) < 3 and time.monotonic() < deadline + 5:
            attempts = [d["attempt"] for d in env.http.get(f"{env.url}/sandbox/state").json()["webhook_deliveries"]]
            time.sleep(0.02)
        assert attempts == [1, 2, 3]
        api.delete_webhook(hook_id)
        assert api.list_webhooks() == []
        with pytest.raises(Exception) as missing:
            api.delete_webhook(hook_id)
        assert getattr(missing.value, "status", None) == 404
    finally:
        receiver.stop()
