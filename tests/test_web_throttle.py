"""Unauthenticated requests that cost a Bitrix24 call are rationed: forged placement POSTs and install events
per client address and per member_id, the same bad AUTH_ID answered from a short negative cache, and
Bitrix24's own QUERY_LIMIT_EXCEEDED while verifying is "try again" (503), not a failed login. REST calls are
counted in the portal sandbox (its `requests` counter and the OAuth server's `central_requests`)."""
from __future__ import annotations

import html
import re
import secrets
from urllib.parse import urlsplit

import httpx
import pytest

from b24app import create_app
from b24app.sandbox.stack import APP_CLIENT_ID
from conftest import start_seeded_stack, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ATTACKER, ADMIN = "203.0.113.66", "198.51.100.7"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    # A roomy bucket in the portal sandbox, so that what is counted here is the app's rationing, not Bitrix24's.
    st = start_seeded_stack(tmp_path_factory.mktemp("throttle"), link=False, burst=1000)
    # The same app as deployed behind the shipped nginx (which sets X-Forwarded-For to the peer it saw).
    st.proxied = create_app(st.settings.with_overrides(trusted_proxies=1), context=st.ctx)
    yield st
    st.stop()


@pytest.fixture(autouse=True)
def fresh_limits(env):
    """Each test starts with empty windows and an empty negative cache (both apps keep their own store)."""
    for app in (env.flask_app, env.proxied):
        app.extensions["b24app.throttle"].storage.reset()
    yield


def frame_form(st, url: str, user: int) -> tuple[str, dict]:
    page = httpx.get(url, params={"user": user, "tab": 0}, timeout=30)
    page.raise_for_status()
    m = re.search(r'<form id="app-form-0" method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    assert m, page.text[:300]
    fields = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', m.group(2))}
    action = urlsplit(html.unescape(m.group(1)))
    return f"{action.path}?{action.query}", fields


def deal_tab_form(st, user: int = 1) -> tuple[str, dict]:
    return frame_form(st, f"{st.portal_url}/crm/deal/details/{st.deals[0]['deal_id']}/", user)


def app_page_form(st, user: int = 1) -> tuple[str, dict]:
    return frame_form(st, f"{st.portal_url}/marketplace/app/{APP_CLIENT_ID}/", user)


def rest_calls(st) -> int:
    return st.portal_state()["requests"]


def forge(st, app, n: int, *, ip=lambda i: ATTACKER, auth=lambda i: secrets.token_hex(16), header=True):
    """`n` placement POSTs with the real member_id and a made-up AUTH_ID; returns their status codes."""
    path, fields = deal_tab_form(st)
    client = app.test_client()
    codes = []
    for i in range(n):
        kw = {"headers": {"X-Forwarded-For": ip(i)}} if header else {"environ_base": {"REMOTE_ADDR": ip(i)}}
        r = client.post(path, data={**fields, "AUTH_ID": auth(i)}, **kw)
        codes.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) > 0
            assert 'too_many_attempts' in r.get_data(as_text=True)
    return codes


def test_200_forged_placement_posts_cost_a_bounded_number_of_rest_calls_and_the_admin_still_gets_in(env):
    before = rest_calls(env)
    codes = forge(env, env.proxied, 200)
    spent = rest_calls(env) - before
    assert spent <= 10, spent  # B24APP_RATELIMIT_FAILURES_PER_IP: 10/minute
    assert codes.count(403) == spent and codes.count(429) == 200 - spent
    assert env.portal_state()["rate_limited"] == 0
    # The portal's real admin, from their own address, opens the deal tab and the app page as usual.
    for path, fields in (deal_tab_form(env, user=1), app_page_form(env, user=1)):
        r = env.proxied.test_client().post(path, data=fields, headers={"X-Forwarded-For": ADMIN})
        assert r.status_code == 200, r.get_data(as_text=True)[:300]


def test_without_a_proxy_x_forwarded_for_is_the_clients_own_claim_and_ignored(env):
    before = rest_calls(env)
    codes = forge(env, env.flask_app, 100, ip=lambda i: f"10.0.{i // 250}.{i % 250}")
    assert rest_calls(env) - before <= 10 and codes.count(429) >= 90


def test_forgeries_from_many_addresses_cost_at_most_the_portals_budget(env):
    before = rest_calls(env)
    codes = forge(env, env.proxied, 200, ip=lambda i: f"10.1.{i // 250}.{i % 250}")
    spent = rest_calls(env) - before
    assert spent <= 30, spent  # B24APP_RATELIMIT_FAILURES_PER_MEMBER: 30/minute
    assert codes.count(429) == 200 - spent
    assert env.portal_state()["rate_limited"] == 0


def test_the_same_bad_auth_id_costs_one_call_per_negative_ttl(env):
    before = rest_calls(env)
    codes = forge(env, env.proxied, 20, ip=lambda i: f"10.2.0.{i}", auth=lambda i: "f" * 32)
    assert rest_calls(env) - before == 1
    assert codes == [403] * 20  # answered as before, just without asking Bitrix24 again


def test_query_limit_exceeded_while_verifying_is_503_try_again_not_403(env):
    path, fields = deal_tab_form(env, user=1)
    client = env.proxied.test_client()
    r = httpx.post(f"{env.sandbox_url}/sandbox/faults", json={"script": ["query_limit"]}, timeout=10)
    assert r.status_code == 200
    busy = client.post(path, data=fields, headers={"X-Forwarded-For": ADMIN})
    text = busy.get_data(as_text=True)
    assert busy.status_code == 503, (busy.status_code, text[:300])
    assert int(busy.headers["Retry-After"]) > 0
    assert 'try_again' in text and "b24app-config" not in text
    assert "Битрикс24 сейчас перегружен" in text or "Bitrix24 is busy right now" in text
    assert f"frame-ancestors {env.sandbox_url}" in busy.headers["Content-Security-Policy"]  # shown in the tab
    # Not a failed login: the same AUTH_ID works on the retry (not negatively cached, not counted).
    # For a few seconds nobody asks that portal again (forgeries would keep its bucket full otherwise)...
    before = rest_calls(env)
    assert forge(env, env.proxied, 20) == [503] * 20
    assert rest_calls(env) == before
    # ...and it is not a failed login: the same AUTH_ID works on the retry (not cached as bad, not counted).
    wait_for(lambda: client.post(path, data=fields, headers={"X-Forwarded-For": ADMIN}).status_code == 200,
             timeout=15, interval=1)
    # The app page says the same.
    app_path, app_fields = app_page_form(env, user=1)
    httpx.post(f"{env.sandbox_url}/sandbox/faults", json={"script": ["query_limit"]}, timeout=10)
    busy = client.post(app_path, data=app_fields, headers={"X-Forwarded-For": ADMIN})
    assert busy.status_code == 503 and busy.headers["Retry-After"]
    wait_for(lambda: client.post(app_path, data=app_fields, headers={"X-Forwarded-For": ADMIN}).status_code == 200,
             timeout=15, interval=1)


def install_event(st, member_id: str, access_token: str) -> dict:
    return {"event": "ONAPPINSTALL", "auth[member_id]": member_id, "auth[access_token]": access_token,
            "auth[refresh_token]": secrets.token_hex(16), "auth[domain]": "victim.example",
            "auth[server_endpoint]": f"{st.sandbox_url}/rest/", "auth[application_token]": secrets.token_hex(16)}


def test_onappinstall_for_unknown_portals_is_rationed(env):
    client = env.proxied.test_client()

    def central() -> int:
        return httpx.get(f"{env.sandbox_url}/sandbox/state", timeout=10).json()["central_requests"]

    before = central()
    codes = []
    for i in range(200):
        r = client.post("/events/app", data=install_event(env, secrets.token_hex(16), secrets.token_hex(16)),
                        headers={"X-Forwarded-For": ATTACKER})
        codes.append(r.status_code)
        if r.status_code == 429:
            assert r.get_json() == {"error": "too_many_attempts"} and int(r.headers["Retry-After"]) > 0
    spent = central() - before
    assert spent <= 10 and codes.count(401) == spent and codes.count(429) == 200 - spent
    # One unknown member_id, many addresses: the per-member budget; the same token again: cached.
    before = central()
    victim = secrets.token_hex(16)
    for i in range(60):
        client.post("/events/app", data=install_event(env, victim, secrets.token_hex(16)),
                    headers={"X-Forwarded-For": f"10.3.0.{i}"})
    token = secrets.token_hex(16)
    for i in range(5):
        client.post("/events/app", data=install_event(env, "other" + victim[5:], token),
                    headers={"X-Forwarded-For": f"10.4.0.{i}"})
    assert central() - before <= 30 + 1


def test_rate_limit_settings_are_checked_at_start(env):
    from b24app.config import ConfigError

    for bad in ({"ratelimit_failures_per_ip": "lots"}, {"ratelimit_storage_uri": "nosuch://x"}):
        with pytest.raises(ConfigError):
            create_app(env.settings.with_overrides(**bad), context=env.ctx)


def test_a_server_error_while_verifying_is_not_remembered_as_a_bad_auth_id(env):
    path, fields = deal_tab_form(env, user=1)
    client = env.proxied.test_client()
    httpx.post(f"{env.sandbox_url}/sandbox/faults", json={"script": ["server_error"]}, timeout=10)
    first = client.post(path, data=fields, headers={"X-Forwarded-For": ADMIN})
    assert first.status_code == 403, first.status_code  # Bitrix24 failed to answer: not confirmed
    again = client.post(path, data=fields, headers={"X-Forwarded-For": ADMIN})
    assert again.status_code == 200
