"""The bank sandbox behaves as T-Bank's developer pages say, and the app copes: add-webhook needs `email`
and the access «Управление вебхуками» (developer.tbank.ru/docs/api/add-webhook, /docs/intro/webhooks/
webhook-methods); each method has its own RPS limit (bank-accounts and company 6, add webhook 10)."""
from __future__ import annotations

import html
import re

import httpx
import pytest
from sqlalchemy import select

from b24app.adapters.banks import BankAPI
from b24app.storage.models import BankLink
from b24app.sandbox.tbank.app import DEMO_INN, DEMO_KPP, create_bank_sandbox
from b24app.sandbox.tbank.testing import FakeClock, slot_server
from b24app.sandbox.stack import APP_CLIENT_ID, link_bank, start_stack

HOOK = {"url": "https://app.example/bank/webhook/1", "email": "ops@example.com", "hasSignature": False,
        "authType": "Bearer", "authSecret": "s"}


@pytest.fixture(scope="module")
def server():
    with slot_server() as running:
        yield running


@pytest.fixture
def bank(server):
    clock = FakeClock()
    app = server.app.app = create_bank_sandbox(clock=clock)
    http = httpx.Client(base_url=server.url, timeout=10)

    def token(*scopes: str) -> str:
        body = {"inn": DEMO_INN, "kpp": DEMO_KPP, **({"scopes": list(scopes)} if scopes else {})}
        return http.post("/sandbox/static-tokens", json=body).json()["token"]
    yield http, clock, token
    app.extensions["bank_sandbox"].close()
    http.close()


def _add(http, token: str, body: dict) -> httpx.Response:
    return http.post("/openapi/api/v1/webhook", params={"eventType": "oper-feed-operation"}, json=body,
                     headers={"Authorization": f"Bearer {token}"})


def test_add_webhook_needs_email_has_signature_and_the_webhook_access(bank):
    http, _, token = bank
    full = token()
    for missing in ("email", "hasSignature"):
        r = _add(http, full, {k: v for k, v in HOOK.items() if k != missing})
        assert r.status_code == 400 and r.json()["errorCode"] == "INVALID_DATA", missing
    assert _add(http, full, {**HOOK, "email": "not-an-email"}).status_code == 400
    no_access = token("bank-accounts/get", "bank-statements/get")
    r = _add(http, no_access, HOOK)
    assert r.status_code == 403 and r.json()["errorCode"] == "FORBIDDEN"
    assert http.get("/openapi/api/v1/webhook", headers={"Authorization": f"Bearer {no_access}"}).status_code == 403
    created = _add(http, full, HOOK)
    assert created.status_code == 200 and created.json()["id"]


def test_per_method_rate_limits(bank):
    """bank-accounts 6/s, company 6/s, add webhook 10/s, statement 20/s — per token, on the sandbox clock."""
    http, clock, token = bank
    t = token()
    auth = {"Authorization": f"Bearer {t}"}
    assert [http.get("/openapi/api/v4/bank-accounts", headers=auth).status_code for _ in range(7)] == [200] * 6 + [429]
    assert [http.get("/openapi/api/v1/company", headers=auth).status_code for _ in range(7)] == [200] * 6 + [429]
    assert [_add(http, t, HOOK).status_code for _ in range(11)] == [200] * 10 + [429]
    account = http.get("/sandbox/state").json()["accounts"][0]["accountNumber"]
    codes = [http.get("/openapi/api/v1/statement", headers=auth,
                      params={"accountNumber": account, "from": "2025-01-01T00:00:00Z"}).status_code
             for _ in range(21)]
    assert codes == [200] * 20 + [429]
    clock.advance(1.01)
    assert http.get("/openapi/api/v4/bank-accounts", headers=auth).status_code == 200


def test_the_client_backs_off_on_429_and_gets_every_answer(bank):
    http, clock, token = bank
    t = token()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    api = BankAPI(f"{http.base_url}/openapi", lambda force: t, http=http, sleep=sleep)
    assert all(api.accounts() for _ in range(6)) and sleeps == []
    assert api.accounts()  # the 7th within a second: 429, back-off, then the answer
    assert sleeps and sum(sleeps) >= 0.25


# -- the app: webhook with the operator's e-mail, or plainly "polling" ---------------------------------------
def open_admin(st, lang: str) -> str:
    page = httpx.get(f"{st.portal_url}/marketplace/app/{APP_CLIENT_ID}/", params={"user": 1, "lang": lang},
                     timeout=30)
    m = re.search(r'<form id="app-form-0" method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    fields = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', m.group(2))}
    path = html.unescape(m.group(1)).split("://", 1)[1].split("/", 1)[1]
    resp = st.flask_app.test_client().post("/" + path, data=fields)
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def test_link_subscribes_the_webhook_with_the_operator_email(linked):
    [hook] = linked.bank_state()["webhooks"]
    assert hook["email"] == "operator@b24app.test" and hook["url"].startswith(linked.app_url + "/bank/webhook/")
    page = open_admin(linked, "en")
    assert 'id="bank-live-off"' not in page


@pytest.fixture
def stack_factory(tmp_path):
    made = []

    def make(**kw):
        st = start_stack(data_dir=str(tmp_path / f"d{len(made)}"), event_delivery="sync",
                         database_url=f"sqlite:///{tmp_path}/db{len(made)}.sqlite3", **kw)
        made.append(st)
        assert st.install()["install_finish"]
        return st
    yield make
    for st in made:
        st.stop()


def test_without_the_webhook_access_the_link_works_and_the_admin_page_says_polling(stack_factory):
    st = stack_factory()
    page = link_bank(st, untick=("webhooks/manage",))
    assert 'id="link-ok"' in page.text  # statement and accounts are enough to work
    assert st.bank_state()["webhooks"] == []
    with st.ctx.db.session() as s:
        link = s.scalar(select(BankLink))
        assert link.webhook_id is None and not any(x.endswith("webhooks/manage") for x in link.scopes)
    ru, en = open_admin(st, "ru"), open_admin(st, "en")
    assert 'data-reason="scope"' in en
    assert "Live notifications off, polling every 2 s." in en and "webhook management" in en
    assert "Мгновенные уведомления выключены, выписка проверяется каждые 2 с." in ru
    assert "Управление вебхуками" in ru


def test_without_an_operator_email_no_webhook_is_asked_for_and_the_page_says_why(stack_factory):
    st = stack_factory(operator_email="")
    assert 'id="link-ok"' in link_bank(st).text
    assert st.bank_state()["webhooks"] == []
    en = open_admin(st, "en")
    assert 'data-reason="email"' in en and "B24APP_OPERATOR_EMAIL" in en
