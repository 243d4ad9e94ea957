"""A Bitrix24 cloud sandbox: many portals plus the central OAuth server in one Flask app, over real HTTP.

Layout (S = `http://127.0.0.1:PORT`): `S/oauth/token/` and `S/rest/app.info` play oauth.bitrix.info;
portal `code` lives under `S/p/{code}` (REST at `S/p/{code}/rest/`, DOMAIN `127.0.0.1:PORT/p/{code}`);
`S/sandbox/...` and `S/p/{code}/sandbox/...` are the control API for tests and the demo.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from flask import Flask, Response, g, jsonify, request

from . import (
    phpquery,  # noqa: F401  (modules register REST methods)
    crm as portal_crm,
    methods as portal_methods,
    payments as portal_payments,
)
from .events import EventDeliverer, build_deliveries, emit_data_events
from .install import InstallError, delivery_summary, finish_install, run_install, submit_and_wait
from .pages import register_pages
from .rest import (
    CallContext,
    PortalSandboxError,
    RestError,
    envelope,
    invoke,
    normalize_method,
    operating_of,
    spend_operating,
)
from .state import (
    AUTH_CODE_TTL,
    DEFAULT_SCOPE,
    AuthCode,
    IssuedToken,
    Portal,
    RegisteredApp,
    SandboxState,
    User,
    new_hex32,
    new_token,
)

__all__ = ["create_portal_sandbox", "sandbox_state", "SandboxState", "PortalSandboxError"]

EXTENSION = "portal_sandbox"


def sandbox_state(app: Flask) -> SandboxState:
    """The SandboxState behind an app made by create_portal_sandbox."""
    return app.extensions[EXTENSION]


def create_portal_sandbox(*, access_ttl: int = 3600, rate: float = 2.0, burst: int = 50,
                          portals: tuple[str, ...] = ("demo",), clock: Callable[[], float] | None = None,
                          event_delivery: str = "async", apps: Iterable[dict[str, Any]] = (),
                          seed: int = 0) -> Flask:
    """Build the sandbox app; its state is `app.extensions["portal_sandbox"]` (a SandboxState)."""
    app = Flask(__name__, static_folder=None)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    state = SandboxState(access_ttl=access_ttl, rate=rate, burst=burst, clock=clock,
                         event_delivery=event_delivery, seed=seed)
    state.deliverer = EventDeliverer(state)
    app.extensions[EXTENSION] = state
    for code in portals:
        state.add_portal(code)
    for spec in apps:
        _register_app(state, spec)
    _register_central(app, state)
    _register_portal(app, state)
    register_pages(app, state)
    return app


# ---------------------------------------------------------------------------------------------
# helpers
def _error(code: str, description: str, status: int, **extra: Any) -> Response:
    response = jsonify({"error": code, "error_description": description, **extra})
    response.status_code = status
    return response


def _base() -> str:
    return f"http://{request.host}"


def _moved(old_code: str, new_code: str) -> Response:
    """The 302 of a renamed portal: the same path and query under the new `/p/{code}` prefix."""
    rest_of_path = request.path[len(f"/p/{old_code}"):]
    location = f"{_base()}/p/{new_code}{rest_of_path}"
    if request.query_string:
        location += "?" + request.query_string.decode()
    response = Response("", status=302)
    response.headers["Location"] = location
    return response


def _inject_latency(state: SandboxState) -> None:
    """Sleep `latency_ms` (set with POST /sandbox/config) before a REST/OAuth answer; control API is exempt."""
    if state.latency_ms > 0:
        time.sleep(state.latency_ms / 1000)


def _request_params() -> dict[str, Any]:
    """Merge query string, PHP-style form body and JSON body, the way a Bitrix24 portal reads params."""
    params: dict[str, Any] = phpquery.parse(request.query_string)
    if request.method == "POST":
        if request.is_json:
            body = request.get_json(silent=True)
            if isinstance(body, dict):
                params.update(body)
        else:
            ctype = request.mimetype or ""
            if ctype in ("application/x-www-form-urlencoded", ""):
                params.update(phpquery.parse(request.get_data(cache=True)))
            elif ctype == "multipart/form-data":
                params.update(phpquery.parse_pairs(request.form.items(multi=True)))
    return params


def _register_app(state: SandboxState, spec: dict[str, Any]) -> RegisteredApp:
    for key in ("client_id", "client_secret", "install_url", "handler_url"):
        if not spec.get(key):
            raise ValueError(f"app needs {key}")
    app = RegisteredApp(client_id=str(spec["client_id"]), client_secret=str(spec["client_secret"]),
                        install_url=str(spec["install_url"]), handler_url=str(spec["handler_url"]),
                        scope=str(spec.get("scope") or DEFAULT_SCOPE),
                        version=int(spec.get("version", 1)), app_code=str(spec.get("code") or ""))
    with state.lock:
        state.apps[app.client_id] = app
    return app


def _token_response(state: SandboxState, portal: Portal, access: IssuedToken, refresh: IssuedToken) -> dict[str, Any]:
    host = request.host
    return {"access_token": access.value, "expires": int(access.expires_at), "expires_in": state.access_ttl,
            "scope": state.apps[access.client_id].scope, "domain": host,
            "server_endpoint": f"http://{host}/rest/", "status": "L",
            "client_endpoint": portal.client_endpoint(host), "member_id": portal.member_id,
            "user_id": access.user_id, "refresh_token": refresh.value}


def _resolve_token(state: SandboxState, value: str, portal: Portal | None) -> IssuedToken:
    """An access token valid for `portal` (any portal when None), else the REST 401 Bitrix24 answers."""
    tok = state.tokens.get(value) if value else None
    if (tok is None or tok.kind != "access" or tok.revoked
            or (portal is not None and tok.member_id != portal.member_id)):
        raise RestError("NO_AUTH_FOUND", "Wrong authorization data", 401)
    owner = state.portal_by_member(tok.member_id)
    if owner is None or tok.client_id not in owner.installations:
        raise RestError("NO_AUTH_FOUND", "Wrong authorization data", 401)
    if state.clock() >= tok.expires_at:
        raise RestError("expired_token", "The access token provided has expired.", 401)
    return tok


def _state_of_portal(state: SandboxState, portal: Portal, host: str) -> dict[str, Any]:
    member = portal.member_id
    return {
        "code": portal.code, "member_id": member, "domain": portal.domain(host),
        "client_endpoint": portal.client_endpoint(host), "lang": portal.lang,
        "users": [{"id": u.id, "name": u.name, "last_name": u.last_name, "admin": u.admin}
                  for u in portal.users.values()],
        "installed_apps": [{"client_id": i.client_id, "member_id": member, "application_token": i.application_token,
                            "installed": i.installed, "version": i.version, "local_id": i.local_id,
                            "installed_by": i.installed_by} for i in portal.installations.values()],
        "uninstalled_apps": list(portal.uninstalled),
        "issued_tokens": [t.public() for t in state.tokens.values() if t.member_id == member],
        "placements": [{"id": p.id, "client_id": p.client_id, **p.rest()} for p in portal.placements],
        "events": [{"id": b.id, "client_id": b.client_id, **b.rest()} for b in portal.events],
        "event_deliveries": [d.public() for d in portal.deliveries],
        "notifications": list(portal.notifications),
        "tasks": list(portal.tasks),
        "timeline_comments": list(portal.timeline_comments),
        "automation_triggers": list(portal.automation_triggers.values()),
        "trigger_executions": list(portal.trigger_executions),
        "payments": [portal_payments.control_view(p) for p in portal.payments.values()],
        "counts": {"deals": len(portal.deals), "invoices": len(portal.invoices),
                   "companies": len(portal.companies), "requisites": len(portal.requisites)},
        "requests": portal.requests, "rate_limited": portal.rate_limited, "faults": dict(portal.faults),
        "bucket_level": portal.bucket_level,
        "method_calls": dict(portal.method_calls), "method_blocked": dict(portal.method_blocked),
    }


# ---------------------------------------------------------------------------------------------
# central OAuth server and sandbox-wide control
def _register_central(app: Flask, state: SandboxState) -> None:
    @app.route("/oauth/token/", methods=["GET", "POST"])
    @app.route("/oauth/token", methods=["GET", "POST"])
    def oauth_token() -> Response:
        _inject_latency(state)
        params = {**request.args.to_dict(), **request.form.to_dict()}
        grant = params.get("grant_type", "")
        client_id = params.get("client_id", "")
        with state.lock:
            registered = state.apps.get(client_id)
            if registered is None or params.get("client_secret") != registered.client_secret:
                return _error("invalid_client", "Invalid client credentials", 401)
            now = state.clock()
            if grant == "refresh_token":
                tok = state.tokens.get(params.get("refresh_token", ""))
                owner = state.portal_by_member(tok.member_id) if tok is not None else None
                if owner is not None and client_id == tok.client_id and client_id not in owner.installations:
                    # The app was uninstalled from that portal: "invalid_client ... the application may not be
                    # installed in this Bitrix24" (settings/oauth/error-codes.md).
                    return _error("invalid_client", "Application not installed on this portal", 401)
                if (tok is None or tok.kind != "refresh" or tok.client_id != client_id or tok.used
                        or tok.revoked or now >= tok.expires_at):
                    return _error("invalid_grant", "Invalid refresh token", 400)
                portal = state.portal_by_member(tok.member_id)
                if portal is None or client_id not in portal.installations:
                    return _error("invalid_grant", "Application not installed", 400)
                tok.used = True
                access, refresh = state.issue_pair(portal, client_id, tok.user_id)
            elif grant == "authorization_code":
                code = state.auth_codes.get(params.get("code", ""))
                if code is None or code.client_id != client_id or code.used or now >= code.expires_at:
                    return _error("invalid_grant", "Invalid authorization code", 400)
                portal = state.portal_by_member(code.member_id)
                if portal is None:
                    return _error("invalid_grant", "Portal not found", 400)
                code.used = True
                access, refresh = state.issue_pair(portal, client_id, code.user_id)
            else:
                return _error("invalid_request", "Unsupported grant_type", 400)
            return jsonify(_token_response(state, portal, access, refresh))

    @app.route("/rest/<path:method_name>", methods=["GET", "POST"])
    def central_rest(method_name: str) -> Response:
        _inject_latency(state)
        start = state.clock()
        name = method_name.removesuffix(".json").lower()
        with state.lock:
            state.central_requests += 1  # a test counter (not Bitrix24 behaviour): calls to the OAuth server's REST
        if name != "app.info":
            return _error("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)
        params = _request_params()
        try:
            with state.lock:
                tok = _resolve_token(state, str(params.get("auth") or params.get("access_token") or ""), None)
                portal = state.portal_by_member(tok.member_id)
                assert portal is not None
                result = portal_methods.app_info_result(state, portal, request.host, tok, oauth_server=True)
        except RestError as exc:
            return _error(exc.code, exc.description, exc.status)
        return jsonify(envelope(result, start, state.clock()))

    @app.route("/sandbox/apps", methods=["GET", "POST"])
    def sandbox_apps() -> Response:
        if request.method == "POST":
            try:
                registered = _register_app(state, request.get_json(force=True) or {})
            except (ValueError, TypeError) as exc:
                return _error("invalid_request", str(exc), 400)
            return jsonify(registered.public())
        with state.lock:
            return jsonify([a.public() for a in state.apps.values()])

    @app.route("/sandbox/portals", methods=["GET", "POST"])
    def sandbox_portals() -> Response:
        if request.method == "POST":
            body = request.get_json(force=True) or {}
            code = str(body.get("code") or "")
            if not code or not code.replace("-", "").replace("_", "").isalnum():
                return _error("invalid_request", "code must be alphanumeric", 400)
            try:
                portal = state.add_portal(code, str(body.get("lang") or "ru"))
            except ValueError as exc:
                return _error("invalid_request", str(exc), 409)
            return jsonify({"code": portal.code, "member_id": portal.member_id,
                            "url": f"{_base()}/p/{portal.code}", "domain": portal.domain(request.host)})
        with state.lock:
            return jsonify([{"code": p.code, "member_id": p.member_id, "url": f"{_base()}/p/{p.code}",
                             "domain": p.domain(request.host)} for p in state.portals.values()])

    @app.route("/sandbox/config", methods=["GET", "POST"])
    def sandbox_config() -> Response:
        if request.method == "POST":
            body = request.get_json(force=True) or {}
            with state.lock:
                if "access_ttl" in body:
                    state.access_ttl = int(body["access_ttl"])
                if "rate" in body:
                    state.rate = float(body["rate"])
                if "burst" in body:
                    state.burst = int(body["burst"])
                for key in ("slow_seconds", "timeout_seconds", "event_timeout"):
                    if key in body:
                        setattr(state, key, float(body[key]))
                if "latency_ms" in body:
                    latency = float(body["latency_ms"])
                    if not 0 <= latency <= 60_000:
                        return _error("invalid_request", "latency_ms must be within 0..60000", 400)
                    state.latency_ms = latency
                for key in ("operating_limit", "operating_window"):
                    if key in body:
                        if float(body[key]) <= 0:
                            return _error("invalid_request", f"{key} must be positive", 400)
                        setattr(state, key, float(body[key]))
                if "event_delivery" in body and body["event_delivery"] in ("sync", "async"):
                    state.event_delivery = body["event_delivery"]
                if "seed" in body:
                    state.seed = int(body["seed"])
                    state.rng.seed(state.seed)
        with state.lock:
            return jsonify({"access_ttl": state.access_ttl, "rate": state.rate, "burst": state.burst,
                            "slow_seconds": state.slow_seconds, "timeout_seconds": state.timeout_seconds,
                            "event_timeout": state.event_timeout, "event_delivery": state.event_delivery,
                            "seed": state.seed, "latency_ms": state.latency_ms,
                            "operating_limit": state.operating_limit, "operating_window": state.operating_window})

    @app.route("/sandbox/faults", methods=["GET", "POST", "DELETE"])
    def sandbox_faults() -> Response:
        with state.lock:
            if request.method == "POST":
                body = request.get_json(force=True) or {}
                kinds = body.get("kinds") or {}
                script = body.get("script") or []
                unknown = (set(kinds) | {k for k in script if k is not None}) - FAULT_KINDS
                if unknown:
                    return _error("invalid_request", f"unknown fault kinds: {sorted(unknown)}", 400)
                state.faults = {k: float(v) for k, v in kinds.items()}
                state.fault_script = list(script)  # the next REST requests get these, in order, before any draw
                if "seed" in body:
                    state.seed = int(body["seed"])
                state.rng.seed(state.seed)
            elif request.method == "DELETE":
                state.faults, state.fault_script = {}, []
            return jsonify({"kinds": state.faults, "script": state.fault_script, "seed": state.seed})

    @app.route("/sandbox/state")
    def sandbox_state() -> Response:
        with state.lock:
            return jsonify({
                "apps": [a.public() for a in state.apps.values()],
                "renamed": dict(state.renamed),
                "faults": dict(state.faults),
                "faults_fired": dict(state.faults_fired),
                "central_requests": state.central_requests,
                "portals": {p.code: {"member_id": p.member_id, "url": f"{_base()}/p/{p.code}",
                                     "installed_apps": [i.client_id for i in p.installations.values() if i.installed],
                                     "requests": p.requests, "rate_limited": p.rate_limited,
                                     "faults": dict(p.faults), "deliveries": len(p.deliveries),
                                     "deals": len(p.deals), "invoices": len(p.invoices)}
                            for p in state.portals.values()},
            })


# `rename` renames the portal to a fresh code and answers that request with a 302 to the new address
# (what a Bitrix24 portal does after its domain changed); the request itself is not executed.
# POST /sandbox/faults {"kinds": {kind: probability}, "script": [kind or null, ...]}: the script's entries
# are the faults of the next REST requests, in order (null: none), before any random draw (for tests).
FAULT_KINDS = {"query_limit", "operation_time_limit", "server_error", "expired_token", "slow", "timeout", "rename"}


# ---------------------------------------------------------------------------------------------
# portals
def _register_portal(app: Flask, state: SandboxState) -> None:
    @app.before_request
    def find_portal() -> Response | None:
        args = request.view_args or {}
        if "code" not in args:
            return None
        with state.lock:
            portal, moved_to = state.resolve_code(args["code"])
        if moved_to is not None:
            return _moved(args["code"], moved_to)
        if portal is None:
            return _error("PORTAL_NOT_FOUND", "Portal not found", 404)
        g.portal = portal
        return None

    @app.after_request
    def cors(response: Response) -> Response:
        if "/rest/" in request.path:
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        return response

    @app.route("/p/<code>/rest/<path:rest_path>", methods=["GET", "POST", "OPTIONS"])
    def portal_rest(code: str, rest_path: str) -> Response:
        if request.method == "OPTIONS":
            return Response("", status=204)
        _inject_latency(state)
        portal: Portal = g.portal
        start = state.clock()
        if not state.take_request(portal):
            return _error("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)
        fault = state.roll_fault()
        if fault is not None:
            with state.lock:
                portal.faults[fault] += 1
                state.faults_fired[fault] += 1
            if fault == "rename":  # renamed right now: this request is not executed, only redirected
                return _moved(code, state.rename_fresh(portal))
            early = _apply_fault(state, fault)
            if early is not None:
                return early
        params = _request_params()
        parts = rest_path.split("/")
        try:
            if len(parts) >= 3 and parts[0].isdigit():
                if parts[0] != "1" or parts[1] != "sandboxhook":
                    raise RestError("NO_AUTH_FOUND", "Wrong authorization data", 401)
                method_name = "/".join(parts[2:])
                ctx = CallContext(state, portal, request.host, 1, None, None)
            else:
                method_name = rest_path
                raw = params.pop("auth", None) or params.pop("access_token", None) or ""
                if fault == "expired_token":
                    raise RestError("expired_token", "The access token provided has expired.", 401)
                with state.lock:
                    tok = _resolve_token(state, str(raw), portal)
                    if tok.user_id not in portal.users:
                        raise RestError("NO_AUTH_FOUND", "Wrong authorization data", 401)
                ctx = CallContext(state, portal, request.host, tok.user_id, tok.client_id,
                                  state.apps[tok.client_id].scopes, tok)
            with state.lock:
                result = invoke(ctx, method_name, params)
        except RestError as exc:
            return _error(exc.code, exc.description, exc.status, **exc.extra)
        except Exception as exc:  # noqa: BLE001  (a sandbox bug still answers in Bitrix24's shape)
            app.logger.exception("portal sandbox method %s failed", rest_path)
            return _error("INTERNAL_SERVER_ERROR", f"Internal server error: {type(exc).__name__}", 500)
        if ctx.pending_events:
            emit_data_events(state, portal, request.host, ctx.user_id, ctx.pending_events)
        outer_batch = normalize_method(method_name) == "batch"  # limits.md: the outer batch is not counted
        return jsonify(envelope(result, start, state.clock(), None if outer_batch else ctx.operating))

    @app.route("/p/<code>/oauth/authorize/", methods=["GET"])
    def authorize(code: str) -> Response:
        portal: Portal = g.portal
        client_id = request.args.get("client_id", "")
        registered = state.apps.get(client_id)
        if registered is None or client_id not in portal.installations:
            return _error("invalid_client", "Application not installed on this portal", 400)
        user_id = int(request.args.get("user", 1))
        with state.lock:
            auth_code = AuthCode(new_token(), portal.member_id, client_id, user_id,
                                 state.clock() + AUTH_CODE_TTL)
            state.auth_codes[auth_code.code] = auth_code
        query = phpquery.encode({"code": auth_code.code, "state": request.args.get("state", ""),
                                 "domain": portal.domain(request.host), "member_id": portal.member_id,
                                 "scope": registered.scope, "server_domain": request.host})
        target = request.args.get("redirect_uri") or registered.handler_url
        response = Response("", status=302)
        response.headers["Location"] = target + ("&" if "?" in target else "?") + query
        return response

    @app.route("/p/<code>/sandbox/state")
    def portal_state(code: str) -> Response:
        with state.lock:
            return jsonify(_state_of_portal(state, g.portal, request.host))

    @app.route("/p/<code>/sandbox/users", methods=["POST"])
    def add_user(code: str) -> Response:
        portal: Portal = g.portal
        body = request.get_json(force=True) or {}
        with state.lock:
            uid = int(body.get("id") or portal.next_id("user"))
            if uid in portal.users:
                return _error("invalid_request", f"user {uid} exists", 409)
            portal.bump_id("user", uid)
            user = User(uid, str(body.get("name") or f"User{uid}"), str(body.get("last_name") or ""),
                        admin=bool(body.get("admin", False)), email=str(body.get("email") or ""),
                        deal_read="own" if body.get("deal_read") == "own" else "all")
            portal.users[uid] = user
        return jsonify({"id": user.id, "name": user.name, "last_name": user.last_name, "admin": user.admin,
                        "deal_read": user.deal_read})

    @app.route("/p/<code>/sandbox/operating", methods=["POST"])
    def spend_operating_time(code: str) -> Response:
        """Charge `seconds` of operating time to `method` for an app (`client_id`; none: the inbound webhook),
        into its oldest live bucket — as if earlier calls had been that heavy. Over the limit the method is
        blocked for that app until the bucket leaves the window (limits.md)."""
        body = request.get_json(force=True) or {}
        name = normalize_method(str(body.get("method") or ""))
        try:
            seconds = float(body.get("seconds"))
        except (TypeError, ValueError):
            return _error("invalid_request", "seconds must be a number", 400)
        if not name or seconds <= 0:
            return _error("invalid_request", "method and positive seconds are required", 400)
        with state.lock:
            ctx = CallContext(state, g.portal, request.host, 1, body.get("client_id") or None, None)
            spend_operating(ctx, name, seconds, oldest=True)
            used, reset_at = operating_of(ctx, name)
        return jsonify({"method": name, "operating": used, "operating_reset_at": reset_at,
                        "blocked": used > state.operating_limit})

    @app.route("/p/<code>/sandbox/users/<int:uid>", methods=["POST"])
    def change_user(code: str, uid: int) -> Response:
        """Change a user as the portal's administrator would, e.g. {"admin": false} to take admin rights away."""
        body = request.get_json(force=True) or {}
        with state.lock:
            user = g.portal.users.get(uid)
            if user is None:
                return _error("invalid_request", f"no user {uid}", 404)
            if "admin" in body:
                user.admin = bool(body["admin"])
            return jsonify({"id": user.id, "name": user.name, "last_name": user.last_name, "admin": user.admin})

    @app.route("/p/<code>/sandbox/expire-tokens", methods=["POST"])
    def expire_tokens(code: str) -> Response:
        portal: Portal = g.portal
        with state.lock:
            now = state.clock()
            expired = 0
            for tok in state.tokens.values():
                if tok.member_id == portal.member_id and tok.kind == "access" and tok.expires_at > now:
                    tok.expires_at = now
                    expired += 1
        return jsonify({"expired": expired})

    @app.route("/p/<code>/sandbox/rename", methods=["POST"])
    def rename(code: str) -> Response:
        portal: Portal = g.portal
        new_code = str((request.get_json(force=True) or {}).get("new_code") or "")
        if not new_code or not new_code.replace("-", "").replace("_", "").isalnum():
            return _error("invalid_request", "new_code must be alphanumeric", 400)
        try:
            state.rename(portal, new_code)
        except ValueError as exc:
            return _error("invalid_request", str(exc), 409)
        return jsonify({"code": new_code, "url": f"{_base()}/p/{new_code}",
                        "domain": portal.domain(request.host), "member_id": portal.member_id})

    @app.route("/p/<code>/sandbox/install", methods=["POST"])
    def install(code: str) -> Response:
        body = request.get_json(force=True) or {}
        try:
            return jsonify(run_install(state, g.portal, request.host, str(body.get("client_id") or ""),
                                       int(body.get("user_id") or 1), str(body.get("lang") or g.portal.lang)))
        except InstallError as exc:
            return _error(exc.code, exc.description, exc.status)

    @app.route("/p/<code>/sandbox/install-finish", methods=["POST"])
    def install_finish(code: str) -> Response:
        """What the portal page calls when the app frame runs `BX24.installFinish()`."""
        body = request.get_json(force=True) or {}
        client_id = str(body.get("client_id") or "")
        if client_id not in g.portal.installations:
            return _error("NOT_INSTALLED", "Application is not being installed", 404)
        delivery = finish_install(state, g.portal, request.host, client_id, int(body.get("user_id") or 1))
        return jsonify({"installed": True, "onappinstall": delivery})

    @app.route("/p/<code>/sandbox/uninstall", methods=["POST"])
    def uninstall(code: str) -> Response:
        portal: Portal = g.portal
        body = request.get_json(force=True) or {}
        client_id = str(body.get("client_id") or "")
        clean = bool(body.get("clean", False))
        with state.lock:
            inst = portal.installations.pop(client_id, None)
            if inst is None:
                return _error("NOT_INSTALLED", "Application is not installed", 404)
            bindings = [b for b in portal.events if b.client_id == client_id and b.event == "ONAPPUNINSTALL"]
            portal.events[:] = [b for b in portal.events if b.client_id != client_id]
            portal.placements[:] = [p for p in portal.placements if p.client_id != client_id]
            for trigger_code in [c for c, t in portal.automation_triggers.items() if t["client_id"] == client_id]:
                del portal.automation_triggers[trigger_code]
            state.revoke_app_tokens(portal.member_id, client_id)
            portal.uninstalled.append({"client_id": client_id, "application_token": inst.application_token,
                                       "clean": clean, "at": state.clock()})
        deliveries = build_deliveries(state, portal, request.host, bindings, "ONAPPUNINSTALL",
                                      {"LANGUAGE_ID": portal.lang, "CLEAN": 1 if clean else 0},
                                      acting_user=1, tokens="none", application_token=inst.application_token)
        submit_and_wait(state, deliveries)
        return jsonify({"uninstalled": True, "onappuninstall": delivery_summary(deliveries)})

    @app.route("/p/<code>/sandbox/update", methods=["POST"])
    def update(code: str) -> Response:
        portal: Portal = g.portal
        body = request.get_json(force=True) or {}
        client_id = str(body.get("client_id") or "")
        with state.lock:
            inst = portal.installations.get(client_id)
            if inst is None:
                return _error("NOT_INSTALLED", "Application is not installed", 404)
            previous = inst.version
            inst.version = int(body.get("version") or previous + 1)
            state.apps[client_id].version = max(state.apps[client_id].version, inst.version)
            inst.application_token = new_hex32()  # ONAPPUPDATE carries an updated application_token
            # The core deletes the app's ONAPPINSTALL handlers on every update (shared/reference/bitrix24.md
            # §1.3: bitrix-tools/b24-rest-docs#370); event-bind.md says all of them go ("set them from scratch
            # in the installer of each version"): the docs contradict each other, the core's behaviour is this.
            portal.events[:] = [b for b in portal.events
                                if not (b.client_id == client_id and b.event == "ONAPPINSTALL")]
            bindings = [b for b in portal.events if b.client_id == client_id and b.event == "ONAPPUPDATE"]
        deliveries = build_deliveries(state, portal, request.host, bindings, "ONAPPUPDATE",
                                      {"VERSION": str(inst.version), "PREVIOUS_VERSION": str(previous),
                                       "LANGUAGE_ID": portal.lang},
                                      acting_user=inst.installed_by, tokens="pair")
        submit_and_wait(state, deliveries)
        return jsonify({"version": inst.version, "previous_version": previous,
                        "application_token": inst.application_token,
                        "onappupdate": delivery_summary(deliveries)})


def _apply_fault(state: SandboxState, fault: str) -> Response | None:
    if fault == "query_limit":
        return _error("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)
    if fault == "operation_time_limit":
        return _error("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", 429)
    if fault == "server_error":
        return _error("INTERNAL_SERVER_ERROR", "Internal server error", 500)
    if fault == "slow":
        time.sleep(state.slow_seconds)
    if fault == "timeout":
        time.sleep(state.timeout_seconds)
        return Response("<html><body><h1>504 Gateway Time-out</h1></body></html>", status=504,
                        mimetype="text/html")
    return None  # "expired_token" is applied at auth time; "slow" continues normally; "rename" never gets here


