"""The sandbox's central OAuth server: grants, rotation, expiry, app.info and portal isolation."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import uuid

import httpx
import pytest
from flask import Flask

from b24app.sandbox.portal.app import create_portal_sandbox
from b24app.sandbox.server import serve_in_thread

CLIENT_ID = "local.test.app"
SECRET = "s3cret"


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def installer_app() -> Flask:
    app = Flask("installer")

    @app.post("/install")
    def install() -> str:
        return "<script src='/api/v1/'></script><script>BX24.init(function(){BX24.installFinish();});</script>"

    @app.post("/app")
    def main() -> str:
        return "app"

    return app


@pytest.fixture(scope="module")
def world():
    clock = FakeClock()
    fake = serve_in_thread(installer_app())
    sandbox = create_portal_sandbox(portals=(), clock=clock, event_delivery="sync")
    server = serve_in_thread(sandbox)
    client = httpx.Client(base_url=server.url, timeout=10)
    for cid, secret in ((CLIENT_ID, SECRET), ("local.other.app", "other")):
        r = client.post("/sandbox/apps", json={"client_id": cid, "client_secret": secret,
                                               "install_url": f"{fake.url}/install", "handler_url": f"{fake.url}/app",
                                               "scope": "crm,placement,im,task,user_brief"})
        assert r.status_code == 200
    yield client, clock, server
    client.close()
    server.stop()
    fake.stop()


@pytest.fixture()
def env(world):
    """Two fresh portals per test (codes in `portals`) on the shared module server."""
    client, clock, server = world
    names = []
    for _ in range(2):
        code = f"p{uuid.uuid4().hex[:10]}"
        assert client.post("/sandbox/portals", json={"code": code}).status_code == 200
        names.append(code)
    assert client.post("/sandbox/config", json={"access_ttl": 3600}).status_code == 200
    return client, clock, server, names


def install(client: httpx.Client, portal: str, client_id: str = CLIENT_ID) -> dict:
    r = client.post(f"/p/{portal}/sandbox/install", json={"client_id": client_id, "user_id": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["install_status"] == 200 and body["install_finish"] is True and body["installed"] is True
    return body


def call(client: httpx.Client, portal: str, method: str, token: str, **params) -> httpx.Response:
    return client.post(f"/p/{portal}/rest/{method}.json", json={**params, "auth": token})


def refresh(client: httpx.Client, token: str, client_id: str = CLIENT_ID, secret: str = SECRET) -> httpx.Response:
    return client.post("/oauth/token/", data={"grant_type": "refresh_token", "client_id": client_id,
                                              "client_secret": secret, "refresh_token": token})


def test_refresh_rotates_and_old_refresh_token_is_rejected(env):
    client, _, server, (alpha, beta) = env
    tokens = install(client, alpha)
    r = refresh(client, tokens["refresh_token"])
    assert r.status_code == 200
    body = r.json()
    host = server.url.removeprefix("http://")
    assert body["access_token"] != tokens["access_token"] and body["refresh_token"] != tokens["refresh_token"]
    assert body["domain"] == host
    assert body["server_endpoint"] == f"{server.url}/rest/"
    assert body["client_endpoint"] == f"{server.url}/p/{alpha}/rest/"
    assert body["member_id"] == tokens["member_id"] and body["status"] == "L" and body["user_id"] == 1
    assert body["expires_in"] == 3600 and body["scope"] == "crm,placement,im,task,user_brief"
    assert call(client, alpha, "user.current", body["access_token"]).json()["result"]["ID"] == "1"

    reuse = refresh(client, tokens["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    # the rotated one works once, by GET as well
    again = client.get("/oauth/token/", params={"grant_type": "refresh_token", "client_id": CLIENT_ID,
                                                "client_secret": SECRET, "refresh_token": body["refresh_token"]})
    assert again.status_code == 200


def test_wrong_client_credentials(env):
    client, _, _, (alpha, beta) = env
    tokens = install(client, alpha)
    bad_secret = refresh(client, tokens["refresh_token"], secret="nope")
    assert bad_secret.status_code == 401 and bad_secret.json()["error"] == "invalid_client"
    other_app = refresh(client, tokens["refresh_token"], client_id="local.other.app", secret="other")
    assert other_app.status_code == 400 and other_app.json()["error"] == "invalid_grant"


def test_access_token_expires_with_the_clock_and_refresh_recovers(env):
    client, clock, _, (alpha, beta) = env
    tokens = install(client, alpha)
    assert call(client, alpha, "user.current", tokens["access_token"]).status_code == 200
    clock.advance(3601)
    expired = call(client, alpha, "user.current", tokens["access_token"])
    assert expired.status_code == 401
    assert expired.json() == {"error": "expired_token", "error_description": "The access token provided has expired."}
    fresh = refresh(client, tokens["refresh_token"]).json()
    assert call(client, alpha, "user.current", fresh["access_token"]).status_code == 200


def test_expire_tokens_and_live_ttl_config(env):
    client, _, _, (alpha, beta) = env
    tokens = install(client, alpha)
    assert client.post(f"/p/{alpha}/sandbox/expire-tokens").json()["expired"] >= 1
    assert call(client, alpha, "crm.deal.list", tokens["access_token"]).json()["error"] == "expired_token"
    assert client.post("/sandbox/config", json={"access_ttl": 10}).json()["access_ttl"] == 10
    fresh = refresh(client, tokens["refresh_token"]).json()
    assert fresh["expires_in"] == 10


def test_garbage_and_foreign_tokens_are_no_auth_found(env):
    client, _, _, (alpha, beta) = env
    on_alpha = install(client, alpha)
    install(client, beta)
    garbage = call(client, alpha, "user.current", "not-a-token")
    assert garbage.status_code == 401
    assert garbage.json() == {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
    foreign = call(client, beta, "user.current", on_alpha["access_token"])
    assert foreign.status_code == 401 and foreign.json()["error"] == "NO_AUTH_FOUND"
    missing = client.post(f"/p/{alpha}/rest/user.current.json", json={})
    assert missing.status_code == 401


def test_portals_have_own_member_ids_and_data(env):
    client, _, _, (alpha, beta) = env
    a, b = install(client, alpha), install(client, beta)
    assert a["member_id"] != b["member_id"] and len(a["member_id"]) == 32
    assert call(client, alpha, "crm.deal.add", a["access_token"], fields={"TITLE": "A"}).json()["result"] == 1
    assert call(client, beta, "crm.deal.list", b["access_token"]).json()["total"] == 0
    assert call(client, alpha, "crm.deal.list", a["access_token"]).json()["total"] == 1


def test_app_info_on_portal_and_oauth_server(env):
    client, _, server, (alpha, beta) = env
    tokens = install(client, alpha)
    domain = f"{server.url.removeprefix('http://')}/p/{alpha}"
    on_portal = call(client, alpha, "app.info", tokens["access_token"])
    on_oauth_server = client.get("/rest/app.info", params={"auth": tokens["access_token"]})
    for r in (on_portal, on_oauth_server):
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert result["INSTALLED"] is True and result["STATUS"] == "L" and result["PAYMENT_EXPIRED"] == "N"
        assert result["CODE"] == CLIENT_ID  # a local app's CODE is its client_id
        assert "time" in r.json()
    # the portal answers the documented fields only (api-reference/common/system/app-info.md) ...
    assert not {"client_id", "install", "user_id"} & set(on_portal.json()["result"])
    # ... the OAuth server also names the app and the installation
    result = on_oauth_server.json()["result"]
    assert result["client_id"] == CLIENT_ID
    assert result["install"]["member_id"] == tokens["member_id"]
    assert result["install"]["domain"] == domain
    assert result["install"]["client_endpoint"] == f"{server.url}/p/{alpha}/rest/"
    assert client.get("/rest/app.info", params={"auth": "bogus"}).status_code == 401


def test_app_info_reports_not_installed_before_install_finish(env):
    client, _, _, (alpha, beta) = env
    # a page open by an admin creates the installation record but installFinish was not called yet
    assert client.get(f"/p/{alpha}/marketplace/app/{CLIENT_ID}/").status_code == 200
    state = client.get(f"/p/{alpha}/sandbox/state").json()
    access = next(t["token"] for t in state["issued_tokens"] if t["kind"] == "access")
    assert call(client, alpha, "app.info", access).json()["result"]["INSTALLED"] is False


def test_authorization_code_flow(env):
    client, clock, _, (alpha, beta) = env
    install(client, alpha)
    r = client.get(f"/p/{alpha}/oauth/authorize/", params={"client_id": CLIENT_ID, "state": "xyz", "user": 2})
    assert r.status_code == 302
    query = parse_qs(urlsplit(r.headers["Location"]).query)
    assert query["state"] == ["xyz"] and query["member_id"][0]
    code = query["code"][0]
    grant = {"grant_type": "authorization_code", "client_id": CLIENT_ID, "client_secret": SECRET, "code": code}
    tokens = client.post("/oauth/token/", data=grant)
    assert tokens.status_code == 200 and tokens.json()["user_id"] == 2
    assert client.post("/oauth/token/", data=grant).json()["error"] == "invalid_grant"
    late = parse_qs(urlsplit(client.get(f"/p/{alpha}/oauth/authorize/", params={"client_id": CLIENT_ID})
                             .headers["Location"]).query)["code"][0]
    clock.advance(31)
    assert client.post("/oauth/token/", data={**grant, "code": late}).json()["error"] == "invalid_grant"


def test_uninstall_revokes_tokens(env):
    client, _, _, (alpha, beta) = env
    tokens = install(client, alpha)
    assert client.post(f"/p/{alpha}/sandbox/uninstall", json={"client_id": CLIENT_ID, "clean": True}).status_code == 200
    assert call(client, alpha, "user.current", tokens["access_token"]).json()["error"] == "NO_AUTH_FOUND"
    # "invalid_client: ... the application may not be installed in this Bitrix24" (settings/oauth/error-codes.md)
    assert refresh(client, tokens["refresh_token"]).json()["error"] == "invalid_client"
