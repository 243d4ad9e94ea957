"""T-ID part of the bank sandbox, driven over real HTTP the way a browser and a backend would."""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from b24app.sandbox.tbank.app import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_INN, DEMO_KPP, create_bank_sandbox
from b24app.sandbox.tbank.testing import (
    FakeClock,
    Receiver,
    drive_tid_login,
    hidden_flow,
    offered_scopes,
    slot_server,
    sms_code,
)

BASIC = (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
STATEMENT = f"opensme/inn/[{DEMO_INN}]/kpp/[{DEMO_KPP}]/bank-statements/get"
ACCOUNTS = f"opensme/inn/[{DEMO_INN}]/kpp/[{DEMO_KPP}]/bank-accounts/get"


@dataclass
class Env:
    url: str
    clock: FakeClock
    receiver: Receiver
    redirect_uri: str
    http: httpx.Client

    def authorize_url(self, **extra: str) -> str:
        params = {
            "client_id": DEMO_CLIENT_ID, "redirect_uri": self.redirect_uri, "state": "st-123",
            "response_type": "code", "scope_parameters": json.dumps({"inn": DEMO_INN, "kpp": DEMO_KPP}),
        } | extra
        return f"{self.url}/auth/authorize?{urlencode(params)}"

    def login(self, **kwargs) -> dict[str, str]:
        final = drive_tid_login(self.http, self.authorize_url(**kwargs.pop("params", {})), **kwargs)
        assert final.status_code == 302
        location = final.headers["Location"]
        assert location.startswith(self.redirect_uri + "?")
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

    def token(self, **form: str) -> httpx.Response:
        return self.http.post(f"{self.url}/auth/token", data=form, auth=BASIC)

    def exchange(self, code: str, **extra: str) -> httpx.Response:
        return self.token(grant_type="authorization_code", code=code, redirect_uri=self.redirect_uri, **extra)


@pytest.fixture(scope="module")
def servers():
    with slot_server() as server:
        receiver = Receiver().start()
        yield server.app, server, receiver
        receiver.stop()


@pytest.fixture
def env(servers):
    slot, server, receiver = servers
    clock = FakeClock()
    app = slot.app = create_bank_sandbox(clock=clock)
    receiver.requests.clear()
    redirect_uri = receiver.url + "/tbank/callback"
    http = httpx.Client(timeout=5)
    r = http.post(f"{server.url}/sandbox/clients", json={
        "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET, "redirect_uris": [redirect_uri],
    })
    assert r.status_code == 200
    yield Env(server.url, clock, receiver, redirect_uri, http)
    http.close()
    app.extensions["bank_sandbox"].close()


def test_full_flow_pages_redirect_and_token(env: Env):
    page = env.http.get(env.authorize_url())
    assert page.status_code == 200
    assert "#ffdd2d" in page.text and 'id="phone"' in page.text and 'name="phone"' in page.text
    flow = hidden_flow(page.text)

    sms = env.http.post(f"{env.url}/auth/signin", data={"flow": flow, "phone": "8 (999) 000-00-01"})
    assert sms.status_code == 200
    code = sms_code(sms.text)
    state = env.http.get(f"{env.url}/sandbox/state").json()
    assert state["sms_codes"][-1]["code"] == code and state["sms_codes"][-1]["phone"] == "+79990000001"

    consent = env.http.post(f"{env.url}/auth/confirm", data={"flow": flow, "code": code})
    assert consent.status_code == 200
    scopes = offered_scopes(consent.text)
    assert STATEMENT in scopes and ACCOUNTS in scopes and len(scopes) == 4  # + company info, webhook management
    assert consent.text.count("checked") == 4 and 'id="allow"' in consent.text and 'id="deny"' in consent.text

    final = env.http.post(f"{env.url}/auth/consent", data={"flow": flow, "scope": scopes, "allow": "1"})
    assert final.status_code == 302
    landed = env.http.get(final.headers["Location"])  # follow the redirect like a browser
    assert landed.status_code == 200
    got = env.receiver.requests[-1]
    assert got["path"] == "/tbank/callback" and got["args"]["state"] == "st-123"
    assert got["args"]["code"].startswith("c.") and got["args"]["session_state"]

    tokens = env.exchange(got["args"]["code"])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer" and body["access_token"].startswith("t.")
    assert body["expires_in"] == 1800 and body["refresh_token"] and body["id_token"].count(".") == 2
    assert set(body["scope"].split()) == set(scopes)
    consents = env.http.get(f"{env.url}/sandbox/state").json()["consents"]
    assert consents[-1]["phone"] == "+79990000001" and set(consents[-1]["scopes"]) == set(scopes)


def test_unticked_scope_is_not_granted(env: Env):
    args = env.login(untick=["bank-accounts/get"])
    body = env.exchange(args["code"]).json()
    assert ACCOUNTS not in body["scope"].split() and STATEMENT in body["scope"].split()
    intro = env.http.post(f"{env.url}/auth/introspect", data={"token": body["access_token"]}, auth=BASIC).json()
    assert intro["active"] is True and ACCOUNTS not in intro["scope"] and STATEMENT in intro["scope"]
    assert intro["client_id"] == DEMO_CLIENT_ID and intro["exp"] - intro["iat"] == 1800
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    denied = env.http.get(f"{env.url}/openapi/api/v4/bank-accounts", headers=bearer)
    assert denied.status_code == 403
    assert denied.json()["errorCode"] == "FORBIDDEN"
    assert denied.json()["errorMessage"] == "У вас неподходящие скопы для данной операции"


def test_refuse_redirects_with_access_denied(env: Env):
    args = env.login(deny=True)
    assert args == {"error": "access_denied", "state": "st-123"}


def test_redirect_uri_mismatch_shows_error_page_without_redirect(env: Env):
    for bad in (env.redirect_uri + "/x", "https://evil.example/cb", env.redirect_uri.replace("127.0.0.1", "localhost")):
        page = env.http.get(env.authorize_url(redirect_uri=bad))
        assert page.status_code == 400 and "Location" not in page.headers
        assert "redirect_uri" in page.text
    unknown = env.http.get(env.authorize_url(client_id="nope"))
    assert unknown.status_code == 400 and "Location" not in unknown.headers


def test_company_the_phone_cannot_act_for_is_not_found(env: Env):
    other = env.http.post(f"{env.url}/sandbox/companies", json={
        "inn": "5001234567", "kpp": "500101001", "name": "ООО «Другая»", "phones": ["+79990000002"],
    })
    assert other.status_code == 200
    for phone, params in (("+79990000001", {"inn": "5001234567", "kpp": "500101001"}),
                          ("+79990000009", {"inn": DEMO_INN, "kpp": DEMO_KPP}),
                          ("+79990000001", {"inn": "7700000000", "kpp": "0"})):
        page = env.http.get(env.authorize_url(scope_parameters=json.dumps(params)))
        flow = hidden_flow(page.text)
        sms = env.http.post(f"{env.url}/auth/signin", data={"flow": flow, "phone": phone})
        result = env.http.post(f"{env.url}/auth/confirm", data={"flow": flow, "code": sms_code(sms.text)})
        assert result.status_code == 403 and "Компания с такими данными не найдена" in result.text


def test_wrong_sms_code_three_tries(env: Env):
    page = env.http.get(env.authorize_url())
    flow = hidden_flow(page.text)
    right = sms_code(env.http.post(f"{env.url}/auth/signin", data={"flow": flow, "phone": "+79990000001"}).text)
    wrong = f"{(int(right) + 1) % 10000:04d}"
    first = env.http.post(f"{env.url}/auth/confirm", data={"flow": flow, "code": wrong})
    assert first.status_code == 400 and "Осталось попыток: 2" in first.text
    env.http.post(f"{env.url}/auth/confirm", data={"flow": flow, "code": wrong})
    third = env.http.post(f"{env.url}/auth/confirm", data={"flow": flow, "code": wrong})
    assert third.status_code == 403 and "попыток" in third.text
    late = env.http.post(f"{env.url}/auth/confirm", data={"flow": flow, "code": right})
    assert late.status_code == 400 and "истекла" in late.text


def test_code_is_single_use_and_expires(env: Env):
    code = env.login()["code"]
    assert env.exchange(code).status_code == 200
    again = env.exchange(code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

    late = env.login()["code"]
    env.clock.advance(61)
    expired = env.exchange(late)
    assert expired.status_code == 400 and expired.json()["error"] == "invalid_grant"

    other_uri = env.login()["code"]
    mismatch = env.token(grant_type="authorization_code", code=other_uri, redirect_uri=env.redirect_uri + "?x=1")
    assert mismatch.status_code == 400 and mismatch.json()["error"] == "invalid_grant"


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def test_pkce_is_checked(env: Env):
    verifier = "v" * 50
    pkce = {"code_challenge": _challenge(verifier), "code_challenge_method": "S256"}
    for bad in ({}, {"code_verifier": "w" * 50}):
        code = env.login(params=pkce)["code"]
        failed = env.exchange(code, **bad)
        assert failed.status_code == 400 and failed.json()["error"] == "invalid_grant"
    code = env.login(params=pkce)["code"]
    assert env.exchange(code, code_verifier=verifier).status_code == 200


def test_client_authentication_required(env: Env):
    code = env.login()["code"]
    no_auth = env.http.post(f"{env.url}/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": env.redirect_uri})
    assert no_auth.status_code == 401 and no_auth.json()["error"] == "invalid_client"
    wrong = env.http.post(f"{env.url}/auth/token", data={"grant_type": "refresh_token", "refresh_token": "x"},
                          auth=(DEMO_CLIENT_ID, "wrong"))
    assert wrong.status_code == 401
    unsupported = env.token(grant_type="password")
    assert unsupported.status_code == 400 and unsupported.json()["error"] == "unsupported_grant_type"
    missing = env.token(grant_type="refresh_token")
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


def test_refresh_rotates_and_reuse_is_invalid_grant(env: Env):
    first = env.exchange(env.login()["code"]).json()
    second = env.token(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert second.status_code == 200
    second = second.json()
    assert second["access_token"] != first["access_token"] and second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == first["scope"]
    reuse = env.token(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    third = env.token(grant_type="refresh_token", refresh_token=second["refresh_token"])
    assert third.status_code == 200
    statuses = {t["token"]: t["status"] for t in env.http.get(f"{env.url}/sandbox/state").json()["issued_tokens"]}
    assert statuses[first["refresh_token"]] == "rotated" and statuses[third.json()["refresh_token"]] == "active"


def test_access_token_expiry_and_refresh(env: Env):
    body = env.exchange(env.login()["code"]).json()
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert env.http.get(f"{env.url}/openapi/api/v1/company", headers=bearer).status_code == 200
    env.clock.advance(1801)
    expired = env.http.get(f"{env.url}/openapi/api/v1/company", headers=bearer)
    assert expired.status_code == 401 and expired.json()["errorCode"] == "UNAUTHORIZED"
    intro = env.http.post(f"{env.url}/auth/introspect", data={"token": body["access_token"]}, auth=BASIC).json()
    assert intro == {"active": False}
    fresh = env.token(grant_type="refresh_token", refresh_token=body["refresh_token"]).json()
    ok = env.http.get(f"{env.url}/openapi/api/v1/company", headers={"Authorization": f"Bearer {fresh['access_token']}"})
    assert ok.status_code == 200 and ok.json()["requisites"]["inn"] == DEMO_INN


def test_revoking_refresh_kills_its_access_tokens(env: Env):
    body = env.exchange(env.login()["code"]).json()
    other = env.exchange(env.login()["code"]).json()
    r = env.http.post(f"{env.url}/auth/revoke", data={"token": body["refresh_token"],
                                                     "token_type_hint": "refresh_token"}, auth=BASIC)
    assert r.status_code == 200

    def active(token: str) -> bool:
        return env.http.post(f"{env.url}/auth/introspect", data={"token": token}, auth=BASIC).json()["active"]

    assert not active(body["access_token"]) and not active(body["refresh_token"])
    assert active(other["access_token"])  # another grant is untouched
    refused = env.token(grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert refused.json()["error"] == "invalid_grant"
    env.http.post(f"{env.url}/auth/revoke", data={"token": other["access_token"]}, auth=BASIC)
    assert not active(other["access_token"]) and active(other["refresh_token"])
