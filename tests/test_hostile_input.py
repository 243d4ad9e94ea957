"""Hostile HTTP input against every route: malformed, oversized and nested bodies, bad JSON, unknown events,
untrusted hosts, forged or expired tokens. Each attempt must be refused with a clear status and change nothing."""
from __future__ import annotations

import json
import re
import threading
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, select

from b24app.storage.models import (
    BankAccount,
    BankLink,
    Invoice,
    InvoiceRefresh,
    OAuthState,
    Operation,
    OutboxItem,
    Portal,
)
from b24app.pipeline.rules import load_rules
from b24app.sandbox.server import serve_in_thread
from b24app.sandbox.stack import APP_CLIENT_ID, link_ticket, submit_form
from conftest import start_seeded_stack

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
MIB = 1024 * 1024


# -- one linked portal for the whole module ------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    st = start_seeded_stack(tmp_path_factory.mktemp("hostile"), link=True)
    yield st
    st.stop()


def snapshot(st) -> dict:
    """Everything a refused request must leave as it was."""
    with st.ctx.db.session() as s:
        portals = [(p.member_id, p.status, p.access_token_enc, p.refresh_token_enc, p.application_token_hash,
                    p.client_endpoint, p.token_generation, load_rules(p.settings).to_dict(), p.bindings_version)
                   for p in s.scalars(select(Portal).order_by(Portal.id))]
        links = [(l.id, l.status, l.access_token_enc, l.webhook_secret_enc) for l in s.scalars(select(BankLink))]
        accounts = [(a.id, a.watched, a.synced_until) for a in s.scalars(select(BankAccount).order_by(BankAccount.id))]
        counts = {m.__name__: s.scalar(select(func.count()).select_from(m))
                  for m in (InvoiceRefresh, Operation, OutboxItem, OAuthState, Invoice)}
    return {"portals": portals, "links": links, "accounts": accounts, "counts": counts}


def frame_token(st, placement="DEFAULT", entity=None, user=1, admin=True, age: int = 0, salt=None) -> str:
    """A frame token as the app issues it (optionally `age` seconds old or signed for another purpose)."""
    from b24app.web.security import FRAME_SALT, Frame

    payload = Frame(st.member_id(), user, admin, placement, entity, "ru").to_payload()

    class Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age

    return URLSafeTimedSerializer(st.settings.secret_key, salt=salt or FRAME_SALT, signer=Signer).dumps(payload)


def app_token(st) -> str:
    return st.portal_state()["installed_apps"][0]["application_token"]


def webhook_secret(st) -> tuple[int, str]:
    with st.ctx.db.session() as s:
        link = s.scalar(select(BankLink))
    return link.id, st.ctx.cipher.decrypt(f"webhook:{link.id}", link.webhook_secret_enc)


def post(st, path, **kw):
    return httpx.post(st.app_url + path, timeout=30, **kw)


# -- event routes: malformed form data -------------------------------------------------------------------------
def _deep():
    return {"a[b][c][d][e][f][g]": ""}


def _many():
    return {f"k{i}": "v" for i in range(5000)}


def _wide_nested():
    return {f"auth[x{i}][y]": "1" for i in range(3000)}


@pytest.mark.parametrize("path", ["/events/app", "/events/crm", "/install?DOMAIN=x&PROTOCOL=1", "/placement/deal",
                                  "/placement/invoice", "/app"])
@pytest.mark.parametrize("body", [
    pytest.param(_deep, id="nested-7-levels"),
    pytest.param(_many, id="5000-keys"),
    pytest.param(_wide_nested, id="3000-nested-keys"),
    pytest.param(lambda: {"auth]": "1", "event": "ONAPPUNINSTALL"}, id="odd-key"),
    pytest.param(lambda: {"[]": "1"}, id="empty-name"),
    pytest.param(lambda: b"\xff\xfe\x00garbage=%%%&&==", id="binary"),
    pytest.param(lambda: b'{"event": "ONAPPUNINSTALL"}', id="json-instead-of-form"),
])
def test_form_routes_refuse_malformed_forms_without_side_effects(env, path, body):
    before = snapshot(env)
    data = body()
    started = time.monotonic()
    if isinstance(data, bytes):
        r = post(env, path, content=data, headers={"Content-Type": "application/x-www-form-urlencoded"})
    else:
        r = post(env, path, data=data)
    assert r.status_code in (400, 401, 403, 413), (r.status_code, r.text[:200])
    if path.startswith("/events/") and r.status_code == 400:
        assert r.json()["error"] in ("malformed", "unknown_event")
    elif not path.startswith("/events/") and r.status_code != 413:
        assert 'data-reason="' in r.text or "<code>" in r.text  # the page names the failed guard
        assert "b24app-config" not in r.text
    assert time.monotonic() - started < 10
    assert snapshot(env) == before


@pytest.mark.parametrize("path, event, data", [
    ("/events/app", "ONAPPSOMETHING", {}),
    ("/events/app", "", {}),
    ("/events/crm", "ONCRMLEADADD", {"FIELDS][ID": "1"}),
    ("/events/crm", "ONCRMDEALUPDATE", {"FIELDS][ID": "1; DROP TABLE portals"}),
    ("/events/crm", "ONCRMDEALUPDATE", {"FIELDS][ID": "-5"}),
])
@pytest.mark.parametrize("token_kind", ["valid", "forged"])
def test_unknown_or_malformed_events_change_nothing(env, path, event, data, token_kind):
    before = snapshot(env)
    state = env.portal_state()
    body = {"event": event, "auth[member_id]": state["member_id"], "auth[domain]": state["domain"],
            "auth[application_token]": app_token(env) if token_kind == "valid" else "f" * 32}
    body.update({f"data[{k}]": v for k, v in data.items()})
    r = post(env, path, data=body)
    if token_kind == "forged" and path == "/events/crm":
        assert r.status_code == 401 and r.json() == {"error": "invalid_application_token"}
    else:
        assert r.status_code in (400, 401), r.text
        assert r.json()["error"] in ("unknown_event", "malformed", "invalid_application_token")
    assert snapshot(env) == before


@pytest.mark.parametrize("path", ["/events/app", "/events/crm"])
def test_application_token_as_a_nested_field_is_refused_not_a_crash(env, path):
    before = snapshot(env)
    r = post(env, path, data={"event": "ONAPPUNINSTALL", "auth[member_id]": env.member_id(),
                              "auth[application_token][x]": "1", "data[CLEAN]": "1"})
    assert r.status_code == 401
    assert snapshot(env) == before


def test_onappinstall_with_a_nested_server_endpoint_is_refused_not_a_crash(env):
    before = snapshot(env)
    r = post(env, "/events/app", data={"event": "ONAPPINSTALL", "auth[member_id]": "not-installed-portal",
                                       "auth[access_token]": "a", "auth[domain]": "evil.example",
                                       "auth[server_endpoint][x]": "1", "auth[refresh_token]": "r"})
    assert r.status_code in (400, 401)
    assert snapshot(env) == before


def test_crm_event_with_scalar_fields_is_refused_not_a_crash(env):
    before = snapshot(env)
    r = post(env, "/events/crm", data={"event": "ONCRMDEALUPDATE", "auth[member_id]": env.member_id(),
                                       "auth[application_token]": app_token(env), "data[FIELDS]": "7"})
    assert r.status_code == 400
    assert snapshot(env) == before


@pytest.mark.parametrize("entity_id", ["99999999999999999999999999", "\u00b2"])
def test_crm_event_with_an_id_that_is_not_a_database_integer_is_refused(env, entity_id):
    before = snapshot(env)
    r = post(env, "/events/crm", data={"event": "ONCRMDEALUPDATE", "auth[member_id]": env.member_id(),
                                       "auth[application_token]": app_token(env), "data[FIELDS][ID]": entity_id})
    assert r.status_code == 400 and r.json() == {"error": "malformed"}
    assert snapshot(env) == before


# -- oversized bodies --------------------------------------------------------------------------------------------
def _form_routes(st):
    ticket = link_ticket(st)
    d = st.deals[0]
    return [
        ("/events/app", {}), ("/events/crm", {}), ("/install?DOMAIN=x&PROTOCOL=1", {}),
        ("/placement/deal", {}), ("/placement/invoice", {}), ("/app", {}),
        (f"/bank/start?ticket={ticket}", {}), (f"/bank/token?ticket={ticket}", {}),
    ], d


def test_oversized_form_bodies_are_413_on_every_form_route(env):
    routes, _ = _form_routes(env)
    before = snapshot(env)
    big = {"member_id": env.member_id(), "AUTH_ID": "x", "pad": "a" * (MIB + 10)}
    for path, headers in routes:
        r = post(env, path, data=big, headers=headers)
        assert r.status_code == 413, (path, r.status_code, r.text[:200])
    assert snapshot(env) == before


def test_oversized_json_bodies_are_413_with_valid_credentials(env):
    before = snapshot(env)
    d = env.deals[0]
    admin = frame_token(env)
    tab = frame_token(env, "CRM_DEAL_DETAIL_TAB", d["deal_id"])
    link_id, secret = webhook_secret(env)
    body = json.dumps({"pad": "a" * (MIB + 10)})
    cases = [("/bank/accounts", {"X-Frame-Token": admin}), ("/bank/unlink", {"X-Frame-Token": admin}),
             ("/app/api/assign", {"X-Frame-Token": admin}), ("/app/api/rules", {"X-Frame-Token": admin}),
             ("/app/api/sync", {"X-Frame-Token": admin}),
             (f"/placement/api/deal/{d['deal_id']}/assign", {"X-Frame-Token": tab}),
             (f"/placement/api/deal/{d['deal_id']}/undo", {"X-Frame-Token": tab}),
             (f"/bank/webhook/{link_id}", {"Authorization": f"Bearer {secret}"})]
    for path, headers in cases:
        r = post(env, path, content=body, headers={"Content-Type": "application/json", **headers})
        assert r.status_code == 413, (path, r.status_code, r.text[:200])
    assert snapshot(env) == before


def test_oversized_chunked_body_without_length_is_refused(env):
    before = snapshot(env)

    def chunks():
        yield b"event=ONAPPUNINSTALL&auth[member_id]=" + env.member_id().encode() + b"&pad="
        for _ in range(160):
            yield b"a" * 8192

    r = post(env, "/events/app", content=chunks(),
             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code in (400, 401, 413), r.text[:200]
    assert snapshot(env) == before


# -- malformed JSON on every JSON route ------------------------------------------------------------------------------
MALFORMED = [b"{", b"", b"[]", b'"x"', b"null", b"1", b"[1]", b"\xff\xfe", b'{"operation": {"$gt": 0}}',
             b'{"operation": 1e999, "invoice": -1, "watched": "x", "link_id": "1; drop"}']


def _json_routes(st):
    d = st.deals[0]
    admin = frame_token(st)
    tab = frame_token(st, "CRM_DEAL_DETAIL_TAB", d["deal_id"])
    base = f"/placement/api/deal/{d['deal_id']}"
    return [("/bank/accounts", admin, True), ("/bank/unlink", admin, True), ("/app/api/assign", admin, True),
            ("/app/api/undo", admin, True), ("/app/api/rules", admin, False), ("/app/api/sync", admin, False),
            ("/app/api/stages", admin, False), ("/app/api/link", admin, False),
            (base + "/assign", tab, True), (base + "/undo", tab, True), (base + "/sync", tab, False),
            (base + "/link", tab, False)]


@pytest.mark.parametrize("route", range(12), ids=lambda i: ["bank-accounts", "bank-unlink", "admin-assign",
                                                            "admin-undo", "admin-rules", "admin-sync",
                                                            "admin-stages", "admin-link", "tab-assign", "tab-undo",
                                                            "tab-sync", "tab-link"][i])
def test_malformed_json_never_crashes_or_changes_data(env, route):
    path, token, needs_body = _json_routes(env)[route]
    failures = []
    for body in MALFORMED:
        before = snapshot(env)
        r = post(env, path, content=body, headers={"Content-Type": "application/json", "X-Frame-Token": token})
        if r.status_code >= 500:
            failures.append((body, r.status_code))
            continue
        if needs_body:
            assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text[:200])
            assert r.json().get("error"), r.text[:200]
        after = snapshot(env)
        # "Check the bank now" may make accounts due; nothing else may move.
        for key in ("portals", "links", "counts"):
            assert after[key] == before[key], (path, body, key)
        assert [a[:2] for a in after["accounts"]] == [a[:2] for a in before["accounts"]]
    assert failures == []


def test_deeply_nested_json_is_a_client_error_not_a_crash(env):
    body = b"[" * 200_000 + b"]" * 200_000
    link_id, secret = webhook_secret(env)
    routes = [(path, {"X-Frame-Token": token}) for path, token, _ in _json_routes(env)]
    routes.append((f"/bank/webhook/{link_id}", {"Authorization": f"Bearer {secret}"}))
    crashed = []
    for path, headers in routes:
        r = post(env, path, content=body, headers={"Content-Type": "application/json", **headers})
        if r.status_code >= 500:
            crashed.append(path)
    assert crashed == []


def _post_timed(st, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, float]:
    """The fastest of three posts of `body`: (status, seconds)."""
    best, status = float("inf"), 0
    for _ in range(3):
        t = time.perf_counter()
        r = post(st, path, content=body, headers={"Content-Type": content_type})
        best, status = min(best, time.perf_counter() - t), r.status_code
    return status, best


def _normal_json(size: int) -> bytes:
    """A realistic JSON body (rows of payments) of exactly `size` bytes."""
    row = json.dumps({"id": 0, "purpose": "Оплата по счету № 1207 от 14.01.2026, в т.ч. НДС", "amount": "12000.00",
                      "tags": ["a", "b"]}, ensure_ascii=False).encode()
    rows = b",".join([row] * ((size - 64) // (len(row) + 1)))
    head = b'{"rows": [' + rows + b'], "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


@pytest.mark.parametrize("size", [64 * 1024, MIB - 1024], ids=["64KiB", "1MiB"])
def test_escaped_quotes_cost_no_more_than_a_normal_body_of_the_same_size(env, size):
    """The nesting guard runs before authentication on every JSON POST: a body of one quote and then `\\"` pairs
    (quadratic for a backtracking string regex: 48 KB took 4.8 s) must cost about what a normal body costs."""
    normal = _normal_json(size)
    hostile = b'"' + b'\\"' * ((size - 1) // 2)
    valid_hostile = b'["' + b'\\"' * ((size - 4) // 2) + b'"]'
    assert abs(len(normal) - len(hostile)) <= 2 and len(normal) == size
    status, normal_time = _post_timed(env, "/app/api/rules", normal)
    assert status == 401  # through the guard to the view, which wants a frame token
    for body in (hostile, valid_hostile):
        status, hostile_time = _post_timed(env, "/app/api/rules", body)
        assert status == 401
        assert hostile_time < 10 * normal_time, (size, hostile_time, normal_time)
    assert httpx.get(env.app_url + "/healthz", timeout=5).status_code == 200


_CLOSERS = json.dumps({"x": ']]]]"]]\\', "y": '"}}}\\"]'}).encode()  # depth 1


@pytest.mark.parametrize("body,refused", [
    pytest.param(b"[" * 64 + b"]" * 64, False, id="64-deep"),
    pytest.param(b"[" * 65 + b"]" * 65, True, id="65-deep"),
    pytest.param(json.dumps({"a": "[" * 500 + '{"[[[\\', "b": [[1]]}).encode(), False, id="brackets-in-a-string"),
    pytest.param(b"[" * 63 + _CLOSERS + b"]" * 63, False, id="64-deep-with-closers-in-strings"),
    pytest.param(b"[" * 64 + _CLOSERS + b"]" * 64, True, id="65-deep-with-closers-in-strings"),
    pytest.param(json.dumps(['"' + "[" * 100, "{" * 100]).encode(), False, id="escaped-quote-then-openers"),
    pytest.param(b"[" * 200_000, True, id="200k-unclosed"),
])
def test_nesting_is_measured_outside_strings(env, body, refused):
    r = post(env, "/app/api/rules", content=body, headers={"Content-Type": "application/json"})
    if refused:
        assert r.status_code == 400 and r.json()["message"] == "JSON nested too deeply", r.text[:200]
    else:
        assert r.status_code == 401, r.text[:200]  # passed the guard; the view wants a frame token


def test_deep_bodies_under_other_content_types_are_a_client_error(env):
    """Deep JSON sent as text/plain to the bank webhook (which parses any body as JSON), PHP-style form keys
    thousands deep, and a deep PLACEMENT_OPTIONS field: refused with a 4xx, never a 500."""
    link_id, secret = webhook_secret(env)
    deep = b"[" * 100_000 + b"]" * 100_000
    for content_type in ("text/plain", "application/octet-stream", ""):
        r = post(env, f"/bank/webhook/{link_id}", content=deep,
                 headers={"Authorization": f"Bearer {secret}", "Content-Type": content_type})
        assert r.status_code == 400, (content_type, r.status_code, r.text[:200])
    deep_key = "auth" + "[x]" * 5000
    for path in ("/events/app", "/events/crm", f"/bank/webhook/{link_id}", "/placement/deal", "/app"):
        r = post(env, path, data={deep_key: "1", "event": "ONAPPUPDATE"}, headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code < 500, (path, r.status_code)
    before = snapshot(env)
    r = post(env, "/placement/deal", data={"member_id": env.member_id(), "AUTH_ID": "x" * 32,
                                           "PLACEMENT": "CRM_DEAL_DETAIL_TAB", "PLACEMENT_OPTIONS": "[" * 100_000})
    assert r.status_code == 403, r.status_code
    assert snapshot(env) == before


# -- NUL characters: PostgreSQL refuses them in text ----------------------------------------------------------------
def test_a_nul_character_anywhere_in_the_input_is_400_before_the_database(env):
    before = snapshot(env)
    member = env.member_id()
    token = app_token(env)
    d = env.deals[0]
    forms = [("/placement/deal", {"member_id": member + "\x00", "AUTH_ID": "x" * 32}),
             ("/placement/invoice", {"member_id": "\x00", "AUTH_ID": "x" * 32}),
             ("/app", {"member_id": member[:5] + "\x00" + member[5:], "AUTH_ID": "x" * 32}),
             ("/install?DOMAIN=x&PROTOCOL=1", {"member_id": "\x00", "AUTH_ID": "x", "REFRESH_ID": "y"}),
             ("/events/app", {"event": "ONAPPINSTALL", "auth[member_id]": "m\x00", "auth[application_token]": "t"}),
             ("/events/app", {"event": "ONAPPUNINSTALL", "auth[member_id]": member + "\x00",
                              "auth[application_token]": token}),
             ("/events/crm", {"event": "ONCRMDEALUPDATE", "auth[member_id]": "\x00" + member,
                              "auth[application_token]": token, "data[FIELDS][ID]": "1"}),
             ("/events/crm", {"event": "ONCRMDEALUPDATE", "auth[member_id]": member,
                              "auth[application_token]": token, "data[FIELDS][ID]": "1", "x\x00": "1"})]
    for path, form in forms:
        r = post(env, path, data=form)
        assert r.status_code == 400 and "NUL" in r.text, (path, r.status_code, r.text[:200])
    admin = {"X-Frame-Token": frame_token(env)}
    for query in ({"q": "1207\x00"}, {"q": "x", "outcome": "paid\x00"}):
        r = httpx.get(env.app_url + "/app/api/history", params=query, headers=admin, timeout=30)
        assert r.status_code == 400 and "NUL" in r.text, (query, r.status_code)
    assert httpx.get(env.app_url + "/app/api/history", params={"q": "1207"}, headers=admin,
                     timeout=30).status_code == 200
    link_id, secret = webhook_secret(env)
    for path, body, headers in (
            ("/app/api/rules", {"stage_map": {"0": "WON\x00"}}, admin),
            ("/app/api/rules", {"x\x00": 1}, admin),
            (f"/placement/api/deal/{d['deal_id']}/assign", {"operation": "1\x00", "invoice": 1},
             {"X-Frame-Token": frame_token(env, "CRM_DEAL_DETAIL_TAB", d["deal_id"])}),
            (f"/bank/webhook/{link_id}", {"accountNumber": "4070\x00"}, {"Authorization": f"Bearer {secret}"})):
        r = post(env, path, json=body, headers=headers)
        assert r.status_code == 400 and "NUL" in r.text, (path, r.status_code, r.text[:200])
    assert snapshot(env) == before


# -- the bank webhook ------------------------------------------------------------------------------------------------
def test_webhook_refuses_wrong_secrets_and_survives_malformed_bodies(env):
    link_id, secret = webhook_secret(env)
    url = f"/bank/webhook/{link_id}"
    with env.ctx.db.session() as s:
        for acc in s.scalars(select(BankAccount)):
            acc.sync_requested_at = None
    for headers in ({}, {"Authorization": secret}, {"Authorization": f"Basic {secret}"},
                    {"Authorization": f"Bearer {secret[:-1]}"}, {"Authorization": f"Bearer {secret}x"},
                    {"Authorization": ("Bearer " + "é" * 43).encode()}, {"Authorization": "Bearer"}):
        r = post(env, url, json={"accountNumber": "x"}, headers=headers)
        assert r.status_code == 401 and r.json() == {"error": "unauthorized"}, headers
        assert secret not in r.text
    for bad_id in (link_id + 1000, 0):
        r = post(env, f"/bank/webhook/{bad_id}", json={}, headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 401
    assert post(env, "/bank/webhook/-1", json={}).status_code == 404
    with env.ctx.db.session() as s:
        assert all(a.sync_requested_at is None for a in s.scalars(select(BankAccount)))
    # With the right secret, garbage bodies are acknowledged without acting on other accounts.
    for body in (b"not json", b"[1,2]", b'{"accountNumber": {"x": 1}}', b'{"accountNumber": "00000000000000000000"}'):
        r = post(env, url, content=body, headers={"Authorization": f"Bearer {secret}",
                                                   "Content-Type": "application/json"})
        assert r.status_code in (200, 400), r.text
        if r.status_code == 200 and body.startswith(b'{"accountNumber"'):
            assert r.json()["accounts"] == 0


def test_webhook_with_an_id_beyond_the_integer_range_is_refused(env):
    _, secret = webhook_secret(env)
    for link_id in (2 ** 63, 2 ** 70):
        r = post(env, f"/bank/webhook/{link_id}", json={}, headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code in (401, 404), r.status_code


def test_unlink_with_an_id_beyond_the_integer_range_is_refused(env):
    before = snapshot(env)
    for link_id in (2 ** 63, 2 ** 70):
        r = post(env, "/bank/unlink", json={"link_id": link_id}, headers={"X-Frame-Token": frame_token(env)})
        assert r.status_code in (400, 404), r.status_code
    assert snapshot(env) == before


# -- install page: untrusted hosts are never contacted ---------------------------------------------------------
class Receiver:
    """A tiny HTTP server that records every request made to it (an attacker's host)."""

    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
        body = json.dumps({"result": {"install": {"member_id": "x"}, "client_id": APP_CLIENT_ID}}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


@pytest.fixture
def receiver():
    rec = Receiver()
    server = serve_in_thread(rec)
    rec.url = server.url
    rec.host = urlsplit(server.url).netloc
    yield rec
    server.stop()


def test_install_and_lifecycle_events_never_call_a_host_taken_from_the_request(env, receiver):
    assert httpx.get(receiver.url + "/probe", timeout=10).status_code == 200  # the receiver does record
    assert receiver.requests == [("GET", "/probe")]
    receiver.requests.clear()
    state = env.portal_state()
    real = httpx.post(f"{env.portal_url}/sandbox/install", json={"client_id": APP_CLIENT_ID}, timeout=30).json()
    before = snapshot(env)  # the real re-install above may rotate tokens; what follows must not
    trusted = env.sandbox_url
    endpoints = [f"{receiver.url}/rest/", f"http://{urlsplit(trusted).netloc}@{receiver.host}/rest/",
                 f"{receiver.url}/rest/?x={trusted}", f"{receiver.url}/{trusted}/rest/", "//" + receiver.host + "/rest/"]
    for endpoint in endpoints:
        for token in ("forged-token", real["access_token"]):
            form = {"AUTH_ID": token, "AUTH_EXPIRES": "3600", "REFRESH_ID": "r", "SERVER_ENDPOINT": endpoint,
                    "member_id": state["member_id"], "APPLICATION_TOKEN": "t"}
            r = post(env, "/install", params={"DOMAIN": receiver.host, "PROTOCOL": "0"}, data=form)
            assert r.status_code in (403, 502), (endpoint, r.status_code)
            for event, member in (("ONAPPINSTALL", state["member_id"]), ("ONAPPINSTALL", "brand-new-member"),
                                  ("ONAPPUPDATE", state["member_id"])):
                body = {"event": event, "auth[member_id]": member, "auth[access_token]": token,
                        "auth[refresh_token]": "r", "auth[domain]": receiver.host,
                        "auth[server_endpoint]": endpoint, "auth[client_endpoint]": f"{receiver.url}/rest/",
                        "auth[application_token]": "forged-app-token"}
                r = post(env, "/events/app", data=body)
                assert r.status_code == 401, (event, endpoint, r.status_code, r.text)
    # A real token with a trusted OAuth server still cannot point the portal at another host.
    for event in ("ONAPPINSTALL", "ONAPPUPDATE"):
        r = post(env, "/events/app", data={
            "event": event, "auth[member_id]": state["member_id"], "auth[access_token]": real["access_token"],
            "auth[refresh_token]": real["refresh_token"], "auth[domain]": receiver.host,
            "auth[server_endpoint]": f"{trusted}/rest/", "auth[client_endpoint]": f"{receiver.url}/rest/",
            "auth[application_token]": "forged-app-token"})
        assert r.status_code == 401 and r.json()["error"] == "domain_mismatch", r.text
    r = post(env, "/install", params={"DOMAIN": receiver.host, "PROTOCOL": "0"},
             data={"AUTH_ID": real["access_token"], "REFRESH_ID": real["refresh_token"], "AUTH_EXPIRES": "3600",
                   "SERVER_ENDPOINT": f"{trusted}/rest/", "member_id": state["member_id"]})
    assert r.status_code == 403 and 'data-reason="domain_mismatch"' in r.text
    # Placement POSTs carry DOMAIN too; only the stored endpoint is ever called.
    d = env.deals[0]
    r = env.flask_app.test_client().post(
        f"/placement/deal?DOMAIN={receiver.host}&PROTOCOL=0",
        data={"member_id": state["member_id"], "AUTH_ID": "forged", "PLACEMENT": "CRM_DEAL_DETAIL_TAB",
              "PLACEMENT_OPTIONS": json.dumps({"ID": d["deal_id"]})})
    assert r.status_code == 403
    assert receiver.requests == []
    after = snapshot(env)
    assert after["portals"] == before["portals"] and after["counts"] == before["counts"]


# -- the bank link popup: CSRF, open redirects, tickets -----------------------------------------------------------
def csrf_of(page: httpx.Response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def links(st) -> list[BankLink]:
    with st.ctx.db.session() as s:
        return list(s.scalars(select(BankLink).order_by(BankLink.id)))


def test_token_form_needs_this_sessions_csrf_token(env):
    before = snapshot(env)
    company_calls = env.bank_state()["requests"].get("/openapi/api/v1/company", 0)
    ticket = link_ticket(env, is_admin=True)
    url = f"{env.app_url}/bank/token"
    with httpx.Client(timeout=30) as alice, httpx.Client(timeout=30) as mallory:
        alice_page = alice.get(url, params={"ticket": ticket})
        mallory_page = mallory.get(url, params={"ticket": ticket})
        assert alice_page.status_code == mallory_page.status_code == 200
        token = "t.static-anything"
        no_csrf = alice.post(url, data={"ticket": ticket, "token": token})
        foreign = alice.post(url, data={"ticket": ticket, "token": token, "csrf_token": csrf_of(mallory_page)})
        forged = alice.post(url, data={"ticket": ticket, "token": token, "csrf_token": "x" * 40})
    for r in (no_csrf, foreign, forged):
        assert r.status_code == 400, r.text[:200]
        assert token not in r.text
    assert env.bank_state()["requests"].get("/openapi/api/v1/company", 0) == company_calls
    assert snapshot(env) == before


def test_start_form_needs_this_sessions_csrf_token(env):
    before = snapshot(env)
    ticket = link_ticket(env)
    url = f"{env.app_url}/bank/start"
    with httpx.Client(timeout=30) as alice, httpx.Client(timeout=30) as mallory:
        alice.get(url, params={"ticket": ticket})
        mallory_page = mallory.get(url, params={"ticket": ticket})
        r = alice.post(url, data={"ticket": ticket, "inn": "7701234560", "kpp": "770101001",
                                  "csrf_token": csrf_of(mallory_page)})
    assert r.status_code == 400 and "location" not in r.headers
    assert snapshot(env) == before


def test_no_open_redirect_through_redirect_uri_host_or_return_url(env):
    ticket = link_ticket(env)
    tid = urlsplit(env.settings.tbank_id_url)
    with httpx.Client(timeout=30) as browser:
        page = browser.get(f"{env.app_url}/bank/start", params={"ticket": ticket, "redirect_uri": "https://evil.example/",
                                                                "next": "https://evil.example/"})
        r = browser.post(f"{env.app_url}/bank/start",
                         params={"redirect_uri": "https://evil.example/cb", "next": "//evil.example"},
                         data={"ticket": ticket, "inn": "7701234560", "kpp": "770101001", "csrf_token": csrf_of(page),
                               "redirect_uri": "https://evil.example/cb", "return_url": "https://evil.example/",
                               "next": "https://evil.example/"},
                         headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example",
                                  "X-Forwarded-Proto": "https"})
    assert r.status_code in (303, 400), r.text[:300]
    if r.status_code == 303:
        location = urlsplit(r.headers["location"])
        assert (location.scheme, location.netloc) == (tid.scheme, tid.netloc)
        query = parse_qs(location.query)
        assert query["redirect_uri"] == [f"{env.app_url}/bank/callback"]
        assert "evil" not in r.headers["location"]
    # The callback never redirects anywhere, whatever it is given.
    for params in ({"next": "https://evil.example/", "state": "x", "code": "y"},
                   {"redirect_uri": "https://evil.example/", "error": "access_denied"},
                   {"return_url": "//evil.example"}):
        cb = httpx.get(f"{env.app_url}/bank/callback", params=params, timeout=30)
        assert cb.status_code == 400 and "location" not in cb.headers
        assert "evil.example" not in cb.text


def test_expired_or_cross_purpose_tickets_and_frame_tokens_are_refused(env):
    from b24app.web.tbank import TICKET_TTL
    from b24app.web.common import TICKET_SALT
    from b24app.web.security import FRAME_TOKEN_TTL

    before = snapshot(env)
    old_ticket = frame_token(env, age=TICKET_TTL + 5, salt=TICKET_SALT)
    fresh_ticket = frame_token(env, salt=TICKET_SALT)
    assert httpx.get(f"{env.app_url}/bank/start", params={"ticket": fresh_ticket}, timeout=30).status_code == 200
    for path in ("/bank/start", "/bank/token"):
        assert httpx.get(f"{env.app_url}{path}", params={"ticket": old_ticket}, timeout=30).status_code == 403
        # a frame token is no link ticket
        assert httpx.get(f"{env.app_url}{path}", params={"ticket": frame_token(env)}, timeout=30).status_code == 403
    d = env.deals[0]
    tab = f"/placement/api/deal/{d['deal_id']}"
    expired_tab = frame_token(env, "CRM_DEAL_DETAIL_TAB", d["deal_id"], age=FRAME_TOKEN_TTL + 5)
    expired_admin = frame_token(env, age=FRAME_TOKEN_TTL + 5)
    as_ticket = frame_token(env, salt=TICKET_SALT)  # a link ticket is no frame token
    client = env.flask_app.test_client()
    for token in (expired_tab, as_ticket):
        assert client.get(tab, headers={"X-Frame-Token": token}).status_code == 401
        assert client.post(tab + "/assign", json={"operation": 1, "invoice": 1},
                           headers={"X-Frame-Token": token}).status_code == 401
    for token in (expired_admin, as_ticket):
        for method, path in (("get", "/app/api/review"), ("post", "/app/api/rules"), ("get", "/bank/accounts"),
                             ("post", "/bank/unlink")):
            r = getattr(client, method)(path, json={"paid_notify": False, "link_id": 1},
                                        headers={"X-Frame-Token": token})
            assert r.status_code == 401, (path, r.status_code)
    # A renewed token comes back when one is past half its life, and only then.
    half = frame_token(env, "CRM_DEAL_DETAIL_TAB", d["deal_id"], age=FRAME_TOKEN_TTL // 2 + 5)
    r = client.get(tab, headers={"X-Frame-Token": half})
    assert r.status_code == 200 and r.headers.get("X-Frame-Token") not in (None, half)
    r = client.get(tab, headers={"X-Frame-Token": frame_token(env, "CRM_DEAL_DETAIL_TAB", d["deal_id"])})
    assert "X-Frame-Token" not in r.headers
    assert snapshot(env) == before


def test_tampered_frame_token_cannot_raise_privileges(env):
    from b24app.web.security import FRAME_SALT

    reader = frame_token(env, user=3, admin=False)
    ser = URLSafeTimedSerializer(env.settings.secret_key, salt=FRAME_SALT)
    _, raw = ser.loads_unsafe(reader)
    raw.update({"a": True, "u": 1})
    # the same timestamp and signature under an edited payload
    forged = ser.dump_payload(raw).decode() + "." + ".".join(reader.rsplit(".", 2)[-2:])
    wrong_key = URLSafeTimedSerializer("not-the-secret-key-0123456789abcdef", salt=FRAME_SALT).dumps(raw)
    client = env.flask_app.test_client()
    before = snapshot(env)
    for token in (forged, wrong_key):
        r = client.post("/app/api/rules", json={"paid_notify": False}, headers={"X-Frame-Token": token})
        assert r.status_code == 401
    assert client.post("/app/api/rules", json={"paid_notify": False},
                       headers={"X-Frame-Token": reader}).status_code == 403
    assert snapshot(env) == before


def test_read_only_user_gets_no_bank_link_ticket(env):
    d = env.deals[0]  # responsible: user 2; user 3 is neither responsible nor admin
    tab = frame_token(env, "CRM_DEAL_DETAIL_TAB", d["deal_id"], user=3, admin=False)
    client = env.flask_app.test_client()
    r = client.post(f"/placement/api/deal/{d['deal_id']}/link", headers={"X-Frame-Token": tab})
    assert r.status_code == 403  # the tab's own "link" action refuses a read-only user ...
    listing = client.get("/bank/accounts", headers={"X-Frame-Token": tab})
    assert listing.status_code in (200, 403)
    if listing.status_code == 200:  # ... so the account list must not hand out the same ability
        assert listing.get_json()["link_url"] is None


def _until_callback(st, user: int, admin: bool) -> tuple[httpx.Client, str]:
    """One user's popup, driven up to T-Bank's redirect back to the app (not followed)."""
    browser = httpx.Client(follow_redirects=True, timeout=30)
    page = browser.get(f"{st.app_url}/bank/start", params={"ticket": link_ticket(st, user_id=user, is_admin=admin)})
    page = submit_form(browser, page, {"inn": "7701234560", "kpp": "770101001"})
    page = submit_form(browser, page, {"phone": "+79990000001"})
    code = re.search(r'id="sms-code">(\d{4})<', page.text).group(1)
    page = submit_form(browser, page, {"code": code})
    browser.follow_redirects = False
    redirect = submit_form(browser, page, {}, button="allow")
    assert redirect.status_code in (302, 303), redirect.text[:300]
    return browser, redirect.headers["location"]


def test_oauth_state_cannot_be_swapped_between_users(env):
    """Two users link at once; one user's browser opening the other's callback links nothing for anyone."""
    alice, alice_cb = _until_callback(env, user=1, admin=True)
    bob, bob_cb = _until_callback(env, user=2, admin=True)  # two administrators
    before = snapshot(env)
    try:
        swapped = bob.get(alice_cb)
        assert swapped.status_code == 400 and 'data-reason="state_other_browser"' in swapped.text
        assert snapshot(env)["links"] == before["links"]
        # Alice's state is burnt by the attempt: her own callback now fails too, and still links nothing
        late = alice.get(alice_cb)
        assert late.status_code == 400 and 'data-reason="state_invalid"' in late.text
        assert snapshot(env)["links"] == before["links"]
        # Bob starts again in his own popup and completes as himself
        bob.close()
        bob, bob_cb = _until_callback(env, user=2, admin=True)
        ok = bob.get(bob_cb)
        assert ok.status_code == 200 and 'id="link-ok"' in ok.text
        [link] = links(env)
        assert link.linked_by == 2
    finally:
        alice.close()
        bob.close()


def test_no_server_banner(env):
    """The demo and test servers do not announce `Server: Werkzeug/x Python/y` (nor any version)."""
    for url in (env.app_url + "/healthz", env.app_url + "/no-such-page", env.portal_url + "/"):
        r = httpx.get(url, timeout=10)
        assert "server" not in r.headers, (url, r.headers.get("server"))
        assert r.headers.get("date")
