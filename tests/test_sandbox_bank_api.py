"""Business API, control API, webhooks and faults of the bank sandbox, over real HTTP."""
from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest

from b24app.sandbox.tbank.app import DEMO_INN, DEMO_KPP, create_bank_sandbox
from b24app.sandbox.tbank.state import BankSandboxState
from b24app.sandbox.tbank.testing import FakeClock, Receiver, slot_server

FROM = "2025-01-01T00:00:00Z"


@dataclass
class Env:
    url: str
    clock: FakeClock
    state: BankSandboxState
    http: httpx.Client
    token: str
    rub: str
    rub2: str
    usd: str

    def api(self, path: str, token: str | None = None, **params) -> httpx.Response:
        return self.http.get(f"{self.url}/openapi/api{path}", params=params,
                             headers={"Authorization": f"Bearer {token or self.token}"})

    def add(self, **spec) -> dict:
        r = self.http.post(f"{self.url}/sandbox/operations", json=spec)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def sandbox_state(self) -> dict:
        return self.http.get(f"{self.url}/sandbox/state").json()


@pytest.fixture(scope="module")
def server():
    with slot_server() as running:
        yield running


@pytest.fixture
def env(server):
    clock = FakeClock()
    app = server.app.app = create_bank_sandbox(clock=clock, webhook_retry_delays=(0.05, 0.05, 0.05, 0.05))
    http = httpx.Client(timeout=5)
    token = http.post(f"{server.url}/sandbox/static-tokens", json={"inn": DEMO_INN, "kpp": DEMO_KPP}).json()["token"]
    accounts = http.get(f"{server.url}/sandbox/state").json()["accounts"]
    rub, rub2 = [a["accountNumber"] for a in accounts if a["currency"] == "RUB"]
    usd = next(a["accountNumber"] for a in accounts if a["currency"] == "USD")
    state = app.extensions["bank_sandbox"]
    yield Env(server.url, clock, state, http, token, rub, rub2, usd)
    state.close()
    http.close()


def test_demo_company_and_accounts(env: Env):
    accounts = env.api("/v4/bank-accounts").json()
    numbers = [a["accountNumber"] for a in accounts]
    assert numbers == [env.rub, env.rub2, env.usd]
    assert all(len(n) == 20 and n.isdigit() for n in numbers)
    assert env.rub.startswith("40702810") and env.usd.startswith("40702840")
    assert {a["currency"] for a in accounts} == {"643", "840"} and accounts[0]["mainFlag"] == "Y"
    assert all(a["status"] == "NORM" and a["accountType"] == "Current" for a in accounts)
    company = env.api("/v1/company").json()
    assert company["name"] == "ООО «Ромашка»" and company["requisites"]["kpp"] == DEMO_KPP


def test_operation_shape_and_exact_amounts(env: Env):
    op = env.add(amount="1234.56", payPurpose="Оплата по счету № 123", payerInn="7705000001", documentNumber="77")
    body = env.api("/v1/statement", accountNumber=env.rub, **{"from": FROM})
    assert body.status_code == 200
    got = body.json(parse_float=Decimal)["operations"]
    assert [o["operationId"] for o in got] == [op["operationId"]]
    o = got[0]
    assert o["accountAmount"] == Decimal("1234.56") and o["typeOfOperation"] == "Credit"
    assert o["payer"]["inn"] == "7705000001" and o["receiver"]["inn"] == DEMO_INN
    assert o["counterParty"]["inn"] == "7705000001" and o["documentNumber"] == "77"
    assert o["operationDate"].endswith("Z") and o["docDate"].endswith("T21:00:00Z")
    for key in ("operationStatus", "bic", "category", "trxnPostDate", "chargeDate", "payVo", "vo", "priority",
                "operationCurrencyDigitalCode", "accountCurrencyDigitalCode", "rubleAmount", "description"):
        assert key in o
    for bad in ("0", "-5", "1.234", "abc"):
        r = env.http.post(f"{env.url}/sandbox/operations", json={"amount": bad, "payPurpose": "x"})
        assert r.status_code == 400
    r = env.http.post(f"{env.url}/sandbox/operations", json={"amount": 1, "payPurpose": "x", "currency": "USD"})
    assert r.status_code == 400


def test_statement_cursor_paging_limit_2_over_7_operations(env: Env):
    base = datetime(2025, 6, 1, 9, 0, tzinfo=timezone.utc)
    ids = [env.add(amount=str(100 + i), payPurpose=f"Оплата по счету № {i}",
                   operationDate=(base + timedelta(minutes=i)).isoformat())["operationId"] for i in range(7)]
    env.add(amount="5", payPurpose="other account", accountNumber=env.rub2, operationDate=base.isoformat())
    seen, cursors, pages = [], [], 0
    params = {"accountNumber": env.rub, "from": FROM, "limit": 2, "withBalances": "true"}
    while True:
        page = env.api("/v1/statement", **params).json()
        pages += 1
        assert ("balances" in page) == (pages == 1)
        seen += [o["operationId"] for o in page["operations"]]
        if "nextCursor" not in page:
            break
        cursors.append(page["nextCursor"])
        params = {"cursor": page["nextCursor"]}
    assert pages == 4 and len(set(cursors)) == 3 and seen == ids
    # 'from' inclusive, 'to' exclusive
    window = env.api("/v1/statement", accountNumber=env.rub, **{"from": (base + timedelta(minutes=2)).isoformat(),
                                                                 "to": (base + timedelta(minutes=5)).isoformat()})
    assert [o["operationId"] for o in window.json()["operations"]] == ids[2:5]
    bad = env.api("/v1/statement", cursor="garbage!!")
    assert bad.status_code == 400 and bad.json()["errorCode"] == "INVALID_DATA"


def test_status_filter_and_settle(env: Env):
    tx = env.add(amount="10", payPurpose="a")
    auth = env.add(amount="20", payPurpose="b", operationStatus="Authorization")

    def ids(status: str) -> list[str]:
        return [o["operationId"] for o in env.api("/v1/statement", accountNumber=env.rub, operationStatus=status,
                                                  **{"from": FROM}).json()["operations"]]

    assert ids("Transaction") == [tx["operationId"]]
    assert ids("Authorization") == [auth["operationId"]]
    assert set(ids("All")) == {tx["operationId"], auth["operationId"]}
    env.clock.advance(60)
    settled = env.http.post(f"{env.url}/sandbox/operations/{auth['operationId']}/settle").json()
    assert settled["operationStatus"] == "Transaction" and settled["operationDate"] > auth["operationDate"]
    assert set(ids("Transaction")) == {tx["operationId"], auth["operationId"]} and ids("Authorization") == []


def test_validation_errors_are_invalid_data(env: Env):
    cases = [
        {"accountNumber": "123", "from": FROM},
        {"accountNumber": env.rub},
        {"accountNumber": env.rub, "from": "yesterday"},
        {"accountNumber": env.rub, "from": FROM, "limit": 0},
        {"accountNumber": env.rub, "from": FROM, "limit": 5001},
        {"accountNumber": env.rub, "from": FROM, "operationStatus": "Done"},
    ]
    for params in cases:
        r = env.api("/v1/statement", **params)
        assert r.status_code == 400, params
        body = r.json()
        assert body["errorCode"] == "INVALID_DATA" and body["errorId"] and "errorDetails" in body


def test_auth_scope_and_request_id(env: Env):
    r = env.http.get(f"{env.url}/openapi/api/v4/bank-accounts", headers={"X-Request-Id": "my-trace-1"})
    assert r.status_code == 401 and r.json()["errorCode"] == "UNAUTHORIZED"
    assert r.headers["X-Request-Id"] == "my-trace-1"
    assert env.api("/v1/company").headers["X-Request-Id"]
    only_accounts = env.http.post(f"{env.url}/sandbox/static-tokens", json={
        "inn": DEMO_INN, "kpp": DEMO_KPP, "scopes": ["bank-accounts/get"]}).json()["token"]
    assert env.api("/v4/bank-accounts", token=only_accounts).status_code == 200
    r = env.api("/v1/statement", token=only_accounts, accountNumber=env.rub, **{"from": FROM})
    assert r.status_code == 403 and r.json()["errorMessage"] == "У вас неподходящие скопы для данной операции"
    env.http.post(f"{env.url}/sandbox/companies", json={"inn": "5001234567", "kpp": "500101001", "name": "Другая"})
    other = env.http.post(f"{env.url}/sandbox/static-tokens",
                          json={"inn": "5001234567", "kpp": "500101001"}).json()["token"]
    assert env.api("/v1/statement", token=other, accountNumber=env.rub, **{"from": FROM}).status_code == 403
    # static cabinet tokens survive /sandbox/expire-tokens
    env.http.post(f"{env.url}/sandbox/expire-tokens")
    assert env.api("/v1/company").status_code == 200


def test_rate_limit_on_the_injected_clock(env: Env):
    env.http.post(f"{env.url}/sandbox/config", json={"rate_limit_rps": 3})
    codes = [env.api("/v1/company").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = env.api("/v1/company").json()
    assert limited["errorCode"] == "TOO_MANY_REQUESTS" and limited["errorMessage"] == "Слишком много запросов"
    assert env.api("/v4/bank-accounts").status_code == 200  # the limit is per method
    env.clock.advance(1.01)
    assert env.api("/v1/company").status_code == 200


def test_reidentify_and_duplicate(env: Env):
    op = env.add(amount="300", payPurpose="Оплата по счету № 9")
    dup = env.add(amount="300", payPurpose="Оплата по счету № 9", operationId=op["operationId"])
    assert dup["operationId"] == op["operationId"]
    r = env.http.post(f"{env.url}/sandbox/operations/{op['operationId']}/reidentify").json()
    new_id = r["operationId"]
    assert new_id != op["operationId"] and r["previousOperationId"] == op["operationId"]
    ops = env.api("/v1/statement", accountNumber=env.rub, **{"from": FROM}).json()["operations"]
    assert [o["operationId"] for o in ops] == [new_id]
    assert ops[0]["documentNumber"] == op["documentNumber"] and ops[0]["docDate"] == op["docDate"]


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_webhook_subscription_and_delivery_with_retries(env: Env):
    receiver = Receiver(fail_first=2).start()
    try:
        created = env.http.post(f"{env.url}/openapi/api/v1/webhook", params={"eventType": "oper-feed-operation"},
                                headers={"Authorization": f"Bearer {env.token}"},
                                json={"url": receiver.url + "/hook", "email": "ops@example.com", "authType": "Bearer",
                                      "authSecret": "s3cret", "hasSignature": False})
        assert created.status_code == 200
        hook_id = created.json()["id"]
        listed = env.api("/v1/webhook").json()
        assert [h["id"] for h in listed] == [hook_id] and "authSecret" not in listed[0]
        op = env.add(amount="450.10", payPurpose="Оплата по счету № 45")
        _wait(lambda: len(receiver.posts()) == 3)
        assert env.state.join_deliveries(5)
        posts = receiver.posts()
        assert all(p["headers"]["Authorization"] == "Bearer s3cret" for p in posts)
        assert all(p["json"]["operationId"] == op["operationId"] for p in posts)
        assert str(posts[-1]["json"]["accountAmount"]) == "450.1"
        deliveries = env.sandbox_state()["webhook_deliveries"]
        assert [(d["attempt"], d["status"]) for d in deliveries] == [(1, 500), (2, 500), (3, 200)]

        env.add(amount="450.10", payPurpose="Оплата по счету № 45", operationId=op["operationId"])  # duplicate
        _wait(lambda: len(receiver.posts()) == 4)
        assert len(env.api("/v1/statement", accountNumber=env.rub, **{"from": FROM}).json()["operations"]) == 1

        bad = env.http.post(f"{env.url}/openapi/api/v1/webhook", params={"eventType": "oper-feed-operation"},
                            headers={"Authorization": f"Bearer {env.token}"}, json={"url": "ftp://x"})
        assert bad.status_code == 400
        deleted = env.http.delete(f"{env.url}/openapi/api/v1/webhook/{hook_id}",
                                  headers={"Authorization": f"Bearer {env.token}"})
        assert deleted.status_code == 200 and env.api("/v1/webhook").json() == []
    finally:
        receiver.stop()


def test_webhook_gives_up_after_five_attempts_and_basic_auth(env: Env):
    receiver = Receiver(fail_first=100).start()
    try:
        env.http.post(f"{env.url}/openapi/api/v1/webhook", params={"eventType": "oper-feed-operation"},
                      headers={"Authorization": f"Bearer {env.token}"},
                      json={"url": receiver.url, "email": "ops@example.com", "hasSignature": False,
                            "authType": "Basic", "authSecret": "bank:pw"})
        env.add(amount="1", payPurpose="x")
        _wait(lambda: len(env.sandbox_state()["webhook_deliveries"]) == 5)
        assert env.state.join_deliveries(5)
        assert len(receiver.posts()) == 5
        expected = "Basic " + base64.b64encode(b"bank:pw").decode()
        assert all(p["headers"]["Authorization"] == expected for p in receiver.posts())
    finally:
        receiver.stop()


def test_faults(env: Env):
    r = env.http.post(f"{env.url}/sandbox/faults", json={"kinds": {"server_error": 1}})
    assert r.status_code == 200
    assert env.api("/v1/company").status_code == 500
    env.http.delete(f"{env.url}/sandbox/faults")
    assert env.api("/v1/company").status_code == 200
    env.http.post(f"{env.url}/sandbox/faults", json={"kinds": {"rate_limit": 1}})
    assert env.api("/v1/company").status_code == 429
    env.http.delete(f"{env.url}/sandbox/faults")
    assert env.http.post(f"{env.url}/sandbox/faults", json={"kinds": {"nope": 1}}).status_code == 400

    env.http.post(f"{env.url}/sandbox/faults", json={"kinds": {"authorization_first": 1}})
    op = env.add(amount="70", payPurpose="y")
    assert op["operationStatus"] == "Authorization"

    def statuses() -> list[str]:
        return [o["operationStatus"] for o in env.api("/v1/statement", accountNumber=env.rub,
                                                      **{"from": FROM}).json()["operations"]]

    assert statuses() == ["Authorization"]
    assert statuses() == ["Transaction"]
    env.http.delete(f"{env.url}/sandbox/faults")

    env.http.post(f"{env.url}/sandbox/faults", json={"kinds": {"reidentify": 1}})
    first = env.api("/v1/statement", accountNumber=env.rub, **{"from": FROM}).json()["operations"][0]["operationId"]
    second = env.api("/v1/statement", accountNumber=env.rub, **{"from": FROM}).json()["operations"][0]["operationId"]
    assert first != second != op["operationId"]
    fired = env.sandbox_state()["faults"]["fired"]
    assert fired["server_error"] == 1 and fired["rate_limit"] == 1 and fired["reidentify"] >= 2


def test_duplicate_webhook_fault_delivers_twice(env: Env):
    receiver = Receiver().start()
    try:
        env.http.post(f"{env.url}/openapi/api/v1/webhook", params={"eventType": "oper-feed-operation"},
                      headers={"Authorization": f"Bearer {env.token}"},
                      json={"url": receiver.url, "email": "ops@example.com", "hasSignature": False, "authSecret": "s"})
        env.http.post(f"{env.url}/sandbox/faults", json={"kinds": {"duplicate_webhook": 1}})
        op = env.add(amount="5", payPurpose="z")
        _wait(lambda: len(receiver.posts()) == 2)
        assert env.state.join_deliveries(5)
        assert [p["json"]["operationId"] for p in receiver.posts()] == [op["operationId"]] * 2
        assert env.sandbox_state()["faults"]["fired"]["duplicate_webhook"] == 1
    finally:
        receiver.stop()
