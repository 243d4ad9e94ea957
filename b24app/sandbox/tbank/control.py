"""Control API of the bank sandbox (/sandbox/...): seed data, add payments, tune config, inject faults, inspect."""
from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .ops import OperationSpecError, build_operation
from .state import DEFAULT_SCOPES, FAULT_KINDS, SCOPE_LABELS, BankSandboxState, scope_string
from .tid import normalize_phone
from .webhooks import fire_webhooks

bp = Blueprint("bank_control", __name__, url_prefix="/sandbox")


def _state() -> BankSandboxState:
    return current_app.extensions["bank_sandbox"]


def _bad(message: str, status: int = 400) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


def _body() -> dict[str, Any]:
    """JSON body with exact decimals (floats would lose kopecks)."""
    raw = request.get_data(as_text=True) or "{}"
    try:
        body = json.loads(raw, parse_float=Decimal)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise OperationSpecError("expected a JSON object")
    return body


@bp.errorhandler(OperationSpecError)
def _spec_error(exc: OperationSpecError):
    return _bad(str(exc))


@bp.post("/operations")
def add_operation():
    st = _state()
    spec = _body()
    with st.lock:
        st.requests[request.path] += 1
        existing = st.find_operation(str(spec["operationId"])) if spec.get("operationId") else None
        if existing is not None:  # the bank re-delivers duplicates; the statement stays as it was
            data, company = dict(existing.data), existing.company
        else:
            record = build_operation(st, spec)
            if "operationStatus" not in spec and st.roll("authorization_first"):
                record.data["operationStatus"] = "Authorization"
                for key in ("trxnPostDate", "drawDate", "chargeDate"):
                    record.data.pop(key, None)
                record.settle_on_poll = True
            st.operations[record.op_id] = record
            data, company = dict(record.data), record.company
    fire_webhooks(st, data, company)
    return jsonify(data), (200 if existing is not None else 201)


@bp.post("/operations/<op_id>/settle")
def settle_operation(op_id: str):
    st = _state()
    with st.lock:
        record = st.find_operation(op_id)
        if record is None:
            return _bad(f"unknown operation {op_id}", 404)
        if record.data["operationStatus"] != "Authorization":
            return _bad("operation is not an Authorization", 409)
        st.settle(record)
        data, company = dict(record.data), record.company
    fire_webhooks(st, data, company)
    return jsonify(data)


@bp.post("/operations/<op_id>/reidentify")
def reidentify_operation(op_id: str):
    st = _state()
    with st.lock:
        record = st.operations.get(op_id)
        if record is None:
            return _bad(f"unknown operation {op_id}", 404)
        st.reidentify(record)
        return jsonify(dict(record.data) | {"previousOperationId": op_id})


@bp.post("/clients")
def register_client():
    st = _state()
    body = _body()
    client_id, secret, uris = body.get("client_id"), body.get("client_secret"), body.get("redirect_uris")
    if not isinstance(client_id, str) or not client_id or not isinstance(secret, str) or not secret:
        return _bad("client_id and client_secret are required")
    if not isinstance(uris, list) or not all(isinstance(u, str) and re.match(r"https?://", u) for u in uris):
        return _bad("redirect_uris must be a list of http(s) URLs")
    scopes = body.get("scopes")
    if scopes is not None and (not isinstance(scopes, list) or not set(scopes) <= set(SCOPE_LABELS)):
        return _bad(f"scopes must be a subset of {list(SCOPE_LABELS)}")
    with st.lock:
        client = st.add_client(client_id, secret, uris, scopes, body.get("name"))
        return jsonify({"client_id": client.client_id, "redirect_uris": client.redirect_uris, "scopes": client.scopes})


@bp.post("/companies")
def add_company():
    st = _state()
    body = _body()
    inn, kpp, name = str(body.get("inn", "")), str(body.get("kpp") or "0"), body.get("name")
    if not re.fullmatch(r"\d{10}|\d{12}", inn) or not re.fullmatch(r"\d{9}|0", kpp) or not name:
        return _bad("inn (10/12 digits), kpp (9 digits or 0) and name are required")
    phones = []
    for raw in body.get("phones") or []:
        phone = normalize_phone(str(raw))
        if phone is None:
            return _bad(f"bad phone {raw!r}")
        phones.append(phone)
    accounts = body.get("accounts")
    specs = None
    if accounts is not None:
        specs = []
        for item in accounts:
            spec = {"accountNumber": item} if isinstance(item, str) else dict(item)
            number = spec.get("accountNumber")
            if number is not None and not re.fullmatch(r"\d{20}", str(number)):
                return _bad(f"accountNumber must be 20 digits: {number!r}")
            if str(spec.get("currency", "RUB")) not in ("RUB", "USD", "EUR", "CNY"):
                return _bad("currency must be RUB, USD, EUR or CNY")
            specs.append(spec)
    with st.lock:
        company = st.add_company(inn, kpp, name, phones, specs)
        return jsonify({
            "inn": company.inn, "kpp": company.kpp, "name": company.name, "phones": sorted(company.phones),
            "accounts": [{"accountNumber": n, "currency": st.accounts[n].currency} for n in company.accounts],
        })


@bp.post("/static-tokens")
def static_token():
    st = _state()
    body = _body()
    inn, kpp = str(body.get("inn", "")), str(body.get("kpp") or "0")
    suffixes = body.get("scopes") or list(DEFAULT_SCOPES)
    if not isinstance(suffixes, list) or not set(suffixes) <= set(SCOPE_LABELS):
        return _bad(f"scopes must be a subset of {list(SCOPE_LABELS)}")
    with st.lock:
        if (inn, kpp) not in st.companies:
            return _bad("Компания с такими данными не найдена", 404)
        scopes = tuple(scope_string(inn, kpp, s) for s in suffixes)
        access, _ = st.issue_tokens(None, (inn, kpp), scopes, sub="cabinet", with_refresh=False,
                                    access_prefix="t.static-")
        access.static = True
        access.expires_at = access.issued_at + st.config.static_ttl
        return jsonify({"token": access.token, "scopes": list(scopes)})


@bp.post("/config")
def configure():
    st = _state()
    body = _body()
    with st.lock:
        try:
            if "access_ttl" in body:
                st.config.access_ttl = int(body["access_ttl"])
            if "code_ttl" in body:
                st.config.code_ttl = int(body["code_ttl"])
            if "rate_limit_rps" in body:
                st.config.rate_limit_rps = float(body["rate_limit_rps"])
            if "webhook_retry_delays" in body:
                st.config.webhook_retry_delays = tuple(float(d) for d in body["webhook_retry_delays"])
            if "fault_timeout" in body:
                st.config.fault_timeout = float(body["fault_timeout"])
            if "latency_ms" in body:
                latency = float(body["latency_ms"])
                if not 0 <= latency <= 60_000:
                    raise ValueError("latency_ms must be within 0..60000")
                st.config.latency_ms = latency
        except (TypeError, ValueError):
            return _bad("bad config value")
        return jsonify(st.snapshot()["config"])


@bp.post("/expire-tokens")
def expire_tokens():
    """Expire every OAuth access token now (static cabinet tokens live on, as in the bank)."""
    st = _state()
    with st.lock:
        now = st.clock()
        expired = 0
        for record in st.tokens.values():
            if record.kind == "access" and not record.static and record.expires_at > now:
                record.expires_at = now
                expired += 1
        return jsonify({"expired": expired})


@bp.route("/faults", methods=["POST", "DELETE"])
def faults():
    st = _state()
    if request.method == "DELETE":
        with st.lock:
            st.fault_probabilities.clear()
            st.fault_messages.clear()
            return jsonify({"kinds": {}})
    body = _body()
    kinds = body.get("kinds")
    # The bank's error body is {errorId, errorCode, errorMessage[, errorDetails]}; its message is free text in
    # Russian and the docs list no fixed set (reference/tbank.md, "Common"): a test may choose the text an
    # injected error fault carries, e.g. one that mentions a corporate card, to check the app reads codes.
    messages = body.get("messages") or {}
    if not isinstance(messages, dict) or not set(messages) <= {"timeout", "server_error", "rate_limit"} \
            or not all(isinstance(v, str) for v in messages.values()):
        return _bad("messages must map timeout, server_error or rate_limit to an errorMessage text")
    if not isinstance(kinds, dict) or not set(kinds) <= set(FAULT_KINDS):
        return _bad(f"kinds must map some of {list(FAULT_KINDS)} to a probability")
    try:
        parsed = {k: float(v) for k, v in kinds.items()}
    except (TypeError, ValueError):
        return _bad("probabilities must be numbers")
    if not all(0.0 <= p <= 1.0 for p in parsed.values()):
        return _bad("probabilities must be within 0..1")
    with st.lock:
        st.fault_probabilities.update(parsed)
        st.fault_messages.update(messages)
        return jsonify({"kinds": dict(st.fault_probabilities), "messages": dict(st.fault_messages)})


@bp.get("/state")
def state():
    st = _state()
    with st.lock:
        return jsonify(st.snapshot())
