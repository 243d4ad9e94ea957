"""TIDClient against the bank sandbox over real HTTP."""
from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from b24app.adapters.banks import BankUnavailable, InvalidClient, BankInvalidGrant, TIDClient, TIDError, new_code_verifier
from b24app.adapters.banks.tid import company_scope
from b24app.sandbox.tbank.app import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_INN, DEMO_KPP, create_bank_sandbox
from b24app.sandbox.tbank.testing import FakeClock, drive_tid_login, slot_server

REDIRECT = "http://127.0.0.1:9/bank/callback"  # never contacted: the final 302 is not followed
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def server():
    with slot_server() as running:
        yield running


@pytest.fixture
def sandbox(server):
    clock = FakeClock()
    app = server.app.app = create_bank_sandbox(clock=clock, redirect_uris=[REDIRECT])
    http = httpx.Client(timeout=5)
    tid = TIDClient(server.url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, http=http, now=lambda: NOW)
    yield server, tid, http, clock
    http.close()
    app.extensions["bank_sandbox"].close()


def _login(tid: TIDClient, http: httpx.Client, verifier: str | None = None, **kwargs) -> str:
    url = tid.authorization_url(REDIRECT, "state-1", DEMO_INN, DEMO_KPP, verifier)
    final = drive_tid_login(http, url, **kwargs)
    assert final.status_code == 302, final.text
    query = parse_qs(urlsplit(final.headers["Location"]).query)
    assert query["state"] == ["state-1"]
    return query["code"][0]


def test_authorization_url_carries_company_and_pkce():
    tid = TIDClient("https://id.tbank.ru/", "cid", "secret")
    verifier = new_code_verifier()
    url = tid.authorization_url("https://app.example/cb", "xyz", "7701234567", None, verifier)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://id.tbank.ru/auth/authorize"
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert q["client_id"] == "cid" and q["redirect_uri"] == "https://app.example/cb" and q["state"] == "xyz"
    assert q["response_type"] == "code" and q["code_challenge_method"] == "S256"
    assert json.loads(q["scope_parameters"]) == {"inn": "7701234567", "kpp": "0"}
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert q["code_challenge"] == expected
    plain = tid.authorization_url("https://app.example/cb", "xyz", "7701234567", "770101001", None)
    assert "code_challenge" not in plain and "secret" not in plain


def test_exchange_introspect_refresh_and_revoke(sandbox):
    server, tid, http, clock = sandbox
    verifier = new_code_verifier()
    code = _login(tid, http, verifier)
    tokens = tid.exchange_code(code, REDIRECT, verifier)
    assert tokens.expires_at == NOW + timedelta(seconds=1800) and tokens.expires_at.tzinfo is not None
    assert tokens.has_scope(DEMO_INN, DEMO_KPP, "bank-statements/get")
    assert tokens.access_token not in repr(tokens) and tokens.refresh_token not in repr(tokens)
    assert tokens.access_token not in str(tokens)

    info = tid.introspect(tokens.access_token)
    assert info.active and info.client_id == DEMO_CLIENT_ID
    assert info.has_statement_scope(DEMO_INN, DEMO_KPP) and info.has_accounts_scope(DEMO_INN, DEMO_KPP)
    assert not info.has_statement_scope("5001234567", DEMO_KPP)

    with pytest.raises(BankInvalidGrant):  # code is single-use
        tid.exchange_code(code, REDIRECT, verifier)

    rotated = tid.refresh(tokens.refresh_token)
    assert rotated.refresh_token != tokens.refresh_token and rotated.scope == tokens.scope
    with pytest.raises(BankInvalidGrant) as info_err:
        tid.refresh(tokens.refresh_token)
    assert info_err.value.error == "invalid_grant" and info_err.value.status == 400

    tid.revoke(rotated.refresh_token, "refresh_token")
    assert not tid.introspect(rotated.access_token).active
    with pytest.raises(BankInvalidGrant):
        tid.refresh(rotated.refresh_token)


def test_unticked_accounts_scope_is_visible_in_introspection(sandbox):
    server, tid, http, clock = sandbox
    tokens = tid.exchange_code(_login(tid, http, untick=["bank-accounts/get"]), REDIRECT)
    info = tid.introspect(tokens.access_token)
    assert info.has_statement_scope(DEMO_INN, DEMO_KPP) and not info.has_accounts_scope(DEMO_INN, DEMO_KPP)
    assert company_scope(DEMO_INN, DEMO_KPP, "bank-accounts/get") not in tokens.scope


def test_pkce_mismatch_and_expired_code(sandbox):
    server, tid, http, clock = sandbox
    code = _login(tid, http, new_code_verifier())
    with pytest.raises(BankInvalidGrant):
        tid.exchange_code(code, REDIRECT, new_code_verifier())
    code = _login(tid, http)
    clock.advance(120)
    with pytest.raises(BankInvalidGrant):
        tid.exchange_code(code, REDIRECT)


def test_bad_client_secret_and_unreachable(sandbox):
    server, tid, http, clock = sandbox
    bad = TIDClient(server.url, DEMO_CLIENT_ID, "wrong", http=http)
    with pytest.raises(InvalidClient) as info:
        bad.refresh("whatever")
    assert isinstance(info.value, TIDError) and info.value.status == 401
    dead = TIDClient("http://127.0.0.1:9", DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, http=http)
    with pytest.raises(BankUnavailable):
        dead.introspect("t.x")
    assert "wrong" not in repr(bad)
