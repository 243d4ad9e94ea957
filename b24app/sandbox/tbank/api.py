"""Business API of the bank sandbox (/openapi/api/...): accounts, company, statement with cursors, webhooks."""
from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import time
from datetime import datetime, timedelta
from typing import Any, Callable

from flask import Blueprint, Response, current_app, jsonify, request

from .ops import parse_utc, statement_amounts
from .state import BankSandboxState, OpRecord, TokenRecord, Webhook, json_amount, scope_string

bp = Blueprint("bank_api", __name__, url_prefix="/openapi/api")

SCOPE_MESSAGE = "У вас неподходящие скопы для данной операции"
# /docs/intro/webhooks/webhook-methods: «выпустите токен с доступом „Управление вебхуками“» (see SCOPE_LABELS).
WEBHOOKS_SCOPE = "webhooks/manage"


def _state() -> BankSandboxState:
    return current_app.extensions["bank_sandbox"]


def api_error(status: int, code: str, message: str, details: Any = None) -> Response:
    """Error body in the bank's shape {errorId, errorCode, errorMessage[, errorDetails]}."""
    st = _state()
    with st.lock:
        error_id = st.new_hex(10)
    body: dict[str, Any] = {"errorId": error_id, "errorCode": code, "errorMessage": message}
    if details is not None:
        body["errorDetails"] = details
    response = jsonify(body)
    response.status_code = status
    return response


class _Reject(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _invalid(message: str, value: str) -> _Reject:
    return _Reject(api_error(400, "INVALID_DATA", f"Ваш запрос невалиден: {message}", {"value": value}))


def endpoint(fn: Callable[[BankSandboxState, TokenRecord], Any]) -> Callable[..., Any]:
    """Common gate: injected faults, Bearer auth, per-token rate limit, typed rejections."""

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        st = _state()
        if st.config.latency_ms > 0:  # injected network/server latency, outside the lock
            time.sleep(st.config.latency_ms / 1000)
        with st.lock:
            st.requests[request.path] += 1
            timeout = st.roll("timeout")
            server_error = not timeout and st.roll("server_error")
            rate_fault = not timeout and not server_error and st.roll("rate_limit")
            texts = dict(st.fault_messages)
        if timeout:
            st.stop_event.wait(st.config.fault_timeout)
            return api_error(504, "GATEWAY_TIMEOUT", texts.get("timeout", "Превышено время ожидания ответа"))
        if server_error:
            return api_error(500, "INTERNAL_ERROR", texts.get("server_error", "Внутренняя ошибка сервера"))
        if rate_fault:
            return api_error(429, "TOO_MANY_REQUESTS", texts.get("rate_limit", "Слишком много запросов"))
        header = request.headers.get("Authorization", "")
        with st.lock:
            record = st.tokens.get(header[7:].strip()) if header[:7].lower() == "bearer " else None
            if record is None or record.kind != "access" or not st.token_is_live(record):
                return api_error(401, "UNAUTHORIZED", "Токен недействителен или истек")
            if st.over_rate((record.token, request.endpoint or request.path)):
                return api_error(429, "TOO_MANY_REQUESTS", "Слишком много запросов")
        try:
            return fn(st, record, **kwargs)
        except _Reject as reject:
            return reject.response

    return wrapper


def _require_scope(record: TokenRecord, company: tuple[str, str], suffix: str | None) -> None:
    if record.company != company:
        raise _Reject(api_error(403, "FORBIDDEN", SCOPE_MESSAGE))
    if suffix is not None and scope_string(company[0], company[1], suffix) not in record.scopes:
        raise _Reject(api_error(403, "FORBIDDEN", SCOPE_MESSAGE))


@bp.get("/v4/bank-accounts")
@endpoint
def bank_accounts(st: BankSandboxState, record: TokenRecord):
    _require_scope(record, record.company, "bank-accounts/get")
    with st.lock:
        company = st.companies[record.company]
        now = st.now() + timedelta(seconds=1)  # include operations stamped this second
        result = []
        for number in company.accounts:
            account = st.accounts[number]
            credit, debit, authorized = statement_amounts(st, number, now)
            balance = credit - debit
            result.append({
                "accountNumber": number, "name": account.name, "status": "NORM",
                "tariffName": "Продвинутый", "tariffCode": "PRO",
                "currency": {"RUB": "643", "USD": "840", "EUR": "978", "CNY": "156"}.get(account.currency, "643"),
                "createdOn": account.created_on.date().isoformat(), "mainFlag": "Y" if account.main else "N",
                "bankBik": "044525974", "accountType": "Current",
                "activationDate": account.created_on.date().isoformat(),
                "balance": {
                    "balance": json_amount(balance), "realOtb": json_amount(balance - authorized),
                    "otb": json_amount(balance - authorized), "authorized": json_amount(authorized),
                    "pendingPayments": 0, "pendingRequisitions": 0,
                },
            })
    return jsonify(result)


@bp.get("/v1/company")
@endpoint
def company_info(st: BankSandboxState, record: TokenRecord):
    _require_scope(record, record.company, "company-info/get")
    with st.lock:
        company = st.companies[record.company]
    return jsonify({
        "name": company.name, "fullName": company.name, "city": "Москва", "status": "active",
        "requisites": {
            "inn": company.inn, "kpp": company.kpp, "ogrn": "1" + company.inn + "00",
            "fullAddress": "г. Москва, ул. Примерная, д. 1", "registrationDate": "2015-03-02",
        },
        "bank": {"name": 'АО "ТБанк"', "bik": "044525974", "corrAccount": "30101810145250000974"},
        "taxSystem": "OSN", "opf": "ООО",
    })


def _parse_time(name: str, value: str | None, required: bool) -> datetime | None:
    if value is None or value == "":
        if required:
            raise _invalid(f"Missing required query parameter {name}", "")
        return None
    try:
        return parse_utc(value)
    except ValueError:
        raise _invalid(f"Invalid value for: query parameter {name}", f"expected ISO-8601 date-time, but was '{value}'")


def _encode_cursor(query: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(query, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        query = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        assert isinstance(query, dict) and {"a", "f", "t", "s", "l", "k"} <= query.keys()
        return query
    except (ValueError, binascii.Error, AssertionError, UnicodeDecodeError):
        raise _invalid("Invalid value for: query parameter cursor", f"unknown cursor '{cursor[:40]}'")


def _statement_query(st: BankSandboxState) -> dict[str, Any]:
    args = request.args
    if args.get("cursor"):
        return _decode_cursor(args["cursor"])
    account = args.get("accountNumber")
    if account is None:
        raise _invalid("Missing required query parameter accountNumber", "")
    if not re.fullmatch(r"\d{20}", account):
        raise _invalid("Invalid value for: query parameter accountNumber",
                       f"expected value to match '^(\\d{{20}})$', but was '{account}'")
    since = _parse_time("from", args.get("from"), True)
    # default "now", widened to the end of the current second: operations are stamped to the second
    until = _parse_time("to", args.get("to"), False) or st.now().replace(microsecond=0) + timedelta(seconds=1)
    status = args.get("operationStatus", "All")
    if status not in ("All", "Authorization", "Transaction"):
        raise _invalid("Invalid value for: query parameter operationStatus",
                       f"expected one of All, Authorization, Transaction, but was '{status}'")
    raw_limit = args.get("limit", "1000")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 5000:
        raise _invalid("Invalid value for: query parameter limit", f"expected 1..5000, but was '{raw_limit}'")
    with_balances = args.get("withBalances", "false").lower()
    if with_balances not in ("true", "false"):
        raise _invalid("Invalid value for: query parameter withBalances", f"expected boolean, but was '{with_balances}'")
    return {"a": account, "f": since.isoformat(), "t": until.isoformat(), "s": status, "l": int(raw_limit),
            "k": None, "b": with_balances == "true"}


@bp.get("/v1/statement")
@endpoint
def statement(st: BankSandboxState, record: TokenRecord):
    query = _statement_query(st)
    first_page = query["k"] is None
    with st.lock:
        account = st.accounts.get(query["a"])
        if account is None:
            raise _Reject(api_error(403, "FORBIDDEN", SCOPE_MESSAGE))
        _require_scope(record, account.company, "bank-statements/get")
        since, until = datetime.fromisoformat(query["f"]), datetime.fromisoformat(query["t"])
        for op in list(st.operations.values()):  # authorization_first: seen once as Authorization → now settled
            if op.settle_on_poll and op.seen_as_authorization:
                st.settle(op)
        if first_page:
            for op in list(st.operations.values()):
                if op.data["accountNumber"] == account.number and st.roll("reidentify"):
                    st.reidentify(op)
        selected: list[OpRecord] = sorted(
            (
                op for op in st.operations.values()
                if op.data["accountNumber"] == account.number
                and since <= op.op_date < until
                and query["s"] in ("All", op.data["operationStatus"])
            ),
            key=lambda op: (op.op_date, op.op_id),
        )
        start = 0
        if query["k"] is not None:
            after = (datetime.fromisoformat(query["k"][0]), query["k"][1])
            start = next((i for i, op in enumerate(selected) if (op.op_date, op.op_id) > after), len(selected))
        shuffled = not first_page and query["l"] > 1 and st.roll("shuffle_pages")
        if shuffled:
            start = max(0, start - 1)  # overlap with the previous page ...
        page = selected[start:start + query["l"]]
        body: dict[str, Any] = {"operations": [dict(op.data) for op in page]}
        if shuffled:
            body["operations"].reverse()  # ... and out of order
        for op in page:
            if op.settle_on_poll and op.data["operationStatus"] == "Authorization":
                op.seen_as_authorization = True
        if start + len(page) < len(selected) and page:
            last = page[-1]
            body["nextCursor"] = _encode_cursor(query | {"k": [last.op_date.isoformat(), last.op_id]})
        if first_page and query.get("b"):
            opening_credit, opening_debit, _ = statement_amounts(st, account.number, since)
            credit, debit, _ = statement_amounts(st, account.number, until)
            begin = opening_credit - opening_debit
            body["balances"] = {
                "balanceBegin": json_amount(begin), "balanceEnd": json_amount(credit - debit),
                "credit": json_amount(credit - opening_credit), "debit": json_amount(debit - opening_debit),
            }
    return jsonify(body)


def _webhook_json(hook: Webhook) -> dict[str, Any]:
    return {"id": hook.id, "eventType": hook.event_type, "url": hook.url, "email": hook.email,
            "authType": hook.auth_type, "hasSignature": hook.has_signature}


@bp.post("/v1/webhook")
@endpoint
def add_webhook(st: BankSandboxState, record: TokenRecord):
    _require_scope(record, record.company, WEBHOOKS_SCOPE)
    event_type = request.args.get("eventType")
    if event_type != "oper-feed-operation":
        raise _invalid("Invalid value for: query parameter eventType", f"unsupported eventType '{event_type}'")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise _invalid("Invalid JSON body", "expected a JSON object")
    url = body.get("url")
    if not isinstance(url, str) or not re.match(r"https?://[^\s/]+", url) or len(url) > 2048:
        raise _invalid("Invalid value for: body.url", f"expected an http(s) URL, but was '{url}'")
    auth_type = body.get("authType", "Bearer")
    if auth_type not in ("Bearer", "Basic"):
        raise _invalid("Invalid value for: body.authType", f"expected Bearer or Basic, but was '{auth_type}'")
    has_signature = body.get("hasSignature")
    if not isinstance(has_signature, bool):  # add-webhook: hasSignature Boolean, Required
        raise _invalid("Missing required field body.hasSignature", "expected a boolean")
    secret = body.get("authSecret")
    if secret is not None and (not isinstance(secret, str) or len(secret) > 256):
        raise _invalid("Invalid value for: body.authSecret", "expected a string of at most 256 characters")
    # add-webhook: `email` String<email> ≤256, Required («Электронная почта для уведомлений»).
    email = body.get("email")
    if email is None or email == "":
        raise _invalid("Missing required field body.email", "")
    if not isinstance(email, str) or len(email) > 256 or not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise _invalid("Invalid value for: body.email", f"expected an e-mail, but was '{email}'")
    with st.lock:
        hook = Webhook(
            id=st.new_uuid(), company=record.company, event_type=event_type, url=url, email=email,
            auth_type=auth_type, auth_secret=secret, has_signature=has_signature,
        )
        st.webhooks[hook.id] = hook
    return jsonify({"id": hook.id})


@bp.get("/v1/webhook")
@endpoint
def list_webhooks(st: BankSandboxState, record: TokenRecord):
    _require_scope(record, record.company, WEBHOOKS_SCOPE)
    with st.lock:
        return jsonify([_webhook_json(h) for h in st.webhooks.values() if h.company == record.company])


@bp.delete("/v1/webhook/<hook_id>")
@endpoint
def delete_webhook(st: BankSandboxState, record: TokenRecord, hook_id: str):
    _require_scope(record, record.company, WEBHOOKS_SCOPE)
    with st.lock:
        hook = st.webhooks.get(hook_id)
        if hook is None or hook.company != record.company:
            return api_error(404, "NOT_FOUND", "Вебхук не найден")
        del st.webhooks[hook_id]
    return jsonify({})
