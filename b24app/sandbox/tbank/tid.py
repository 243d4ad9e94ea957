"""T-ID endpoints of the bank sandbox: authorize pages, token, introspect, revoke (mirrors id.tbank.ru/auth)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request

from .state import SCOPE_LABELS, AuthCode, AuthFlow, BankSandboxState, PartnerClient, TokenRecord, scope_string

bp = Blueprint("bank_tid", __name__)


def _state() -> BankSandboxState:
    return current_app.extensions["bank_sandbox"]


def _error_page(message: str, status: int = 400, back_url: str | None = None) -> tuple[str, int]:
    return render_template("bank_error.html", message=message, back_url=back_url), status


def _back_to_app(flow: AuthFlow, description: str) -> str:
    """«Вернуться в приложение» on a dead end of the sign-in: back to the registered redirect_uri with an
    OAuth error (RFC 6749 §4.1.2.1: the redirect_uri is known good, so errors go back to the client). T-ID's
    documentation is silent on what its own page offers after too many SMS codes; this is the sandbox's choice,
    so that the app's "try again" can be tested."""
    query = urlencode({k: v for k, v in {"error": "access_denied", "error_description": description,
                                          "state": flow.state}.items() if v is not None})
    return flow.redirect_uri + ("&" if "?" in flow.redirect_uri else "?") + query


def _redirect_with(uri: str, params: dict[str, Any]) -> Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return redirect(uri + ("&" if "?" in uri else "?") + query, code=302)


def normalize_phone(raw: str) -> str | None:
    """+7XXXXXXXXXX from the usual ways of typing a Russian mobile number."""
    digits = re.sub(r"\D", "", raw or "")
    if len(digits) == 11 and digits[0] in "78":
        return "+7" + digits[1:]
    if len(digits) == 10 and digits[0] == "9":
        return "+7" + digits
    return None


def _live_flow(st: BankSandboxState, step: str) -> AuthFlow | None:
    flow = st.flows.get(request.form.get("flow", ""))
    if flow is None or flow.step != step or flow.created_at + st.config.flow_ttl < st.clock():
        return None
    return flow


def _offered_scopes(st: BankSandboxState, flow: AuthFlow) -> list[tuple[str, str]]:
    client = st.clients[flow.client_id]
    inn, kpp = flow.company or ("", "")
    return [(scope_string(inn, kpp, s), SCOPE_LABELS.get(s, s)) for s in client.scopes]


def _consent_page(st: BankSandboxState, flow: AuthFlow, error: str | None = None) -> str:
    company = st.companies[flow.company] if flow.company else None
    return render_template(
        "bank_consent.html", flow=flow, client=st.clients[flow.client_id], company=company,
        scopes=_offered_scopes(st, flow), error=error,
    )


@bp.get("/auth/authorize")
def authorize():
    st = _state()
    args = request.args
    with st.lock:
        client = st.clients.get(args.get("client_id", ""))
        if client is None:
            return _error_page("Неизвестное приложение: client_id не зарегистрирован.")
        redirect_uri = args.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            return _error_page("Адрес возврата (redirect_uri) не совпадает с зарегистрированным для приложения.")
        state = args.get("state")
        if args.get("response_type") != "code":
            return _redirect_with(redirect_uri, {"error": "unsupported_response_type", "state": state})
        inn = kpp = None
        if args.get("scope_parameters"):
            try:
                params = json.loads(args["scope_parameters"])
                inn, kpp = str(params["inn"]), str(params.get("kpp") or "0")
                if not re.fullmatch(r"\d{10}|\d{12}", inn) or not re.fullmatch(r"\d{9}|0", kpp):
                    raise ValueError(inn)
            except (ValueError, KeyError, TypeError):
                return _redirect_with(redirect_uri, {
                    "error": "invalid_request", "error_description": "scope_parameters", "state": state,
                })
        challenge = args.get("code_challenge")
        if challenge and args.get("code_challenge_method", "S256") != "S256":
            return _redirect_with(redirect_uri, {
                "error": "invalid_request", "error_description": "only S256 is supported", "state": state,
            })
        flow = AuthFlow(
            flow_id=st.random_token(32), client_id=client.client_id, redirect_uri=redirect_uri, state=state,
            inn=inn, kpp=kpp, code_challenge=challenge or None, created_at=st.clock(),
        )
        st.flows[flow.flow_id] = flow
        return render_template("bank_signin.html", flow=flow, client=client, error=None)


@bp.post("/auth/signin")
def signin():
    st = _state()
    with st.lock:
        flow = _live_flow(st, "phone")
        if flow is None:
            return _error_page("Сессия входа истекла. Начните вход заново на сайте приложения.")
        phone = normalize_phone(request.form.get("phone", ""))
        if phone is None:
            return render_template(
                "bank_signin.html", flow=flow, client=st.clients[flow.client_id],
                error="Введите номер мобильного телефона в формате +7 999 123-45-67",
            ), 400
        flow.phone = phone
        flow.sms_code = f"{st.rng.randrange(10000):04d}"
        flow.step = "sms"
        st.sms_codes.append({"phone": phone, "code": flow.sms_code, "flow": flow.flow_id, "at": st.clock()})
        return render_template("bank_sms.html", flow=flow, error=None)


@bp.post("/auth/confirm")
def confirm():
    st = _state()
    with st.lock:
        flow = _live_flow(st, "sms")
        if flow is None:
            return _error_page("Сессия входа истекла. Начните вход заново на сайте приложения.")
        if not hmac.compare_digest(request.form.get("code", "").strip(), flow.sms_code or ""):
            flow.tries_left -= 1
            if flow.tries_left <= 0:
                flow.step = "dead"
                return _error_page("Превышено количество попыток ввода кода. Начните вход заново.", 403,
                                   _back_to_app(flow, "sms_attempts_exceeded"))
            return render_template(
                "bank_sms.html", flow=flow, error=f"Неверный код. Осталось попыток: {flow.tries_left}",
            ), 400
        if flow.inn is not None:
            company = st.companies.get((flow.inn, flow.kpp or "0"))
        else:
            company = next((c for c in st.companies.values() if flow.phone in c.phones), None)
        if company is None or flow.phone not in company.phones:
            flow.step = "dead"
            return _error_page("Компания с такими данными не найдена", 403, _back_to_app(flow, "company_not_found"))
        flow.company = company.key
        flow.step = "consent"
        return _consent_page(st, flow)


@bp.post("/auth/consent")
def consent():
    st = _state()
    with st.lock:
        flow = _live_flow(st, "consent")
        if flow is None:
            return _error_page("Сессия входа истекла. Начните вход заново на сайте приложения.")
        if "allow" not in request.form:
            flow.step = "done"
            return _redirect_with(flow.redirect_uri, {"error": "access_denied", "state": flow.state})
        offered = {s for s, _ in _offered_scopes(st, flow)}
        granted = tuple(s for s in request.form.getlist("scope") if s in offered)
        if not granted:
            return _consent_page(st, flow, error="Выберите хотя бы один доступ или нажмите «Отказаться»."), 400
        sub = str(hashlib.sha256(f"{flow.phone}".encode()).hexdigest()[:32])
        code = AuthCode(
            code="c." + st.random_token(20), client_id=flow.client_id, redirect_uri=flow.redirect_uri,
            company=flow.company, scopes=granted, sub=sub, code_challenge=flow.code_challenge,
            expires_at=st.clock() + st.config.code_ttl,
        )
        st.codes[code.code] = code
        st.consents.append({
            "client_id": flow.client_id, "inn": flow.company[0], "kpp": flow.company[1], "scopes": list(granted),
            "phone": flow.phone, "at": st.clock(),
        })
        flow.step = "done"
        return _redirect_with(flow.redirect_uri, {
            "code": code.code, "state": flow.state, "session_state": st.random_token(24),
        })


# ---- back channel ----

def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="T-ID"'
    return response


def _client_from_basic(st: BankSandboxState) -> PartnerClient | None:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return None
    client = st.clients.get(auth.username or "")
    if client is None or not hmac.compare_digest(client.client_secret, auth.password or ""):
        return None
    return client


def _id_token(st: BankSandboxState, client_id: str, sub: str, now: float) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    payload = {"iss": request.host_url, "aud": client_id, "sub": sub, "iat": int(now),
               "exp": int(now + st.config.access_ttl)}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."


def _token_response(st: BankSandboxState, access: TokenRecord, refresh: TokenRecord | None) -> Response:
    body = {
        "access_token": access.token, "token_type": "Bearer",
        "expires_in": int(access.expires_at - access.issued_at),
        "refresh_token": refresh.token if refresh else None,
        "id_token": _id_token(st, access.client_id or "", access.sub, access.issued_at),
        "scope": " ".join(access.scopes),
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/auth/token")
def token():
    st = _state()
    with st.lock:
        client = _client_from_basic(st)
        if client is None:
            return _oauth_error("invalid_client", "Client authentication failed", 401)
        grant_type = request.form.get("grant_type")
        if grant_type == "authorization_code":
            code_value, redirect_uri = request.form.get("code"), request.form.get("redirect_uri")
            if not code_value or not redirect_uri:
                return _oauth_error("invalid_request", "code and redirect_uri are required")
            code = st.codes.get(code_value)
            if code is None or code.client_id != client.client_id:
                return _oauth_error("invalid_grant", "Unknown authorization code")
            if code.used:
                return _oauth_error("invalid_grant", "Authorization code was already used")
            code.used = True
            if code.expires_at <= st.clock():
                return _oauth_error("invalid_grant", "Authorization code expired")
            if redirect_uri != code.redirect_uri:
                return _oauth_error("invalid_grant", "redirect_uri does not match the authorization request")
            if code.code_challenge:
                verifier = request.form.get("code_verifier", "")
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if not verifier or not hmac.compare_digest(digest, code.code_challenge):
                    return _oauth_error("invalid_grant", "PKCE verification failed")
            access, refresh = st.issue_tokens(client.client_id, code.company, code.scopes, code.sub)
            return _token_response(st, access, refresh)
        if grant_type == "refresh_token":
            value = request.form.get("refresh_token")
            if not value:
                return _oauth_error("invalid_request", "refresh_token is required")
            old = st.tokens.get(value)
            if old is None or old.kind != "refresh" or old.client_id != client.client_id or not st.token_is_live(old):
                return _oauth_error("invalid_grant", "Refresh token is invalid, rotated, revoked or expired")
            old.status = "rotated"
            access, refresh = st.issue_tokens(client.client_id, old.company, old.scopes, old.sub, old.grant_id)
            return _token_response(st, access, refresh)
        return _oauth_error("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")


@bp.post("/auth/introspect")
def introspect():
    st = _state()
    with st.lock:
        client = _client_from_basic(st)
        if client is None:
            return _oauth_error("invalid_client", "Client authentication failed", 401)
        record = st.tokens.get(request.form.get("token", ""))
        if record is None or record.client_id != client.client_id or not st.token_is_live(record):
            return jsonify({"active": False})
        return jsonify({
            "active": True, "scope": list(record.scopes), "client_id": record.client_id,
            "token_type": "access_token" if record.kind == "access" else "refresh_token",
            "exp": int(record.expires_at), "iat": int(record.issued_at), "sub": record.sub,
            "aud": ["ibsme", "companyInfo"], "iss": request.host_url,
        })


@bp.post("/auth/revoke")
def revoke():
    st = _state()
    with st.lock:
        client = _client_from_basic(st)
        if client is None:
            return _oauth_error("invalid_client", "Client authentication failed", 401)
        record = st.tokens.get(request.form.get("token", ""))
        if record is not None and record.client_id == client.client_id:
            if record.kind == "refresh":
                for other in st.tokens.values():
                    if other.grant_id == record.grant_id and other.status == "active":
                        other.status = "revoked"
            record.status = "revoked"
        return jsonify({})
