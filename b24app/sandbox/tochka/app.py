"""The Tochka sandbox: OAuth consent pages (phone, SMS, permissions), token endpoint, Open API, webhooks.

Paths and bodies follow developers.tochka.com as recorded in docs/banks/tochka.md; where Tochka's docs are
silent (page layout, error bodies, statement readiness timing) the behaviour here is ours and says so.
Control API for tests and the demo: /sandbox/state, /sandbox/operations, /sandbox/faults (counted),
/sandbox/fault-rates (random, per chance: the soak), /sandbox/customers, /sandbox/consents/<id>/revoke.
"""
from __future__ import annotations

import secrets
import uuid
from decimal import Decimal, InvalidOperation
from html import escape
from urllib.parse import urlencode

from flask import Flask, abort, jsonify, redirect, request

from .state import Config, Customer, TochkaState, jwk_of

DEMO_CLIENT_ID = "b24app-tochka-demo"
DEMO_CLIENT_SECRET = "tochka-demo-secret"
PERMISSION_NAMES = {
    "ReadAccountsBasic": "Список счетов", "ReadAccountsDetail": "Реквизиты счетов",
    "ReadStatements": "Выписки", "ReadTransactionsBasic": "Операции", "ReadTransactionsCredits": "Поступления",
    "ReadTransactionsDetail": "Детали операций", "ReadCustomerData": "Данные компании",
    "ManageWebhookData": "Вебхуки",
}

PAGE = """<!doctype html><html lang="ru"><head><meta charset="utf-8"><title>Точка — {title}</title></head>
<body><main><h1>{title}</h1>{body}</main></body></html>"""


def _page(title: str, body: str, status: int = 200):
    return PAGE.format(title=escape(title), body=body), status, {"Content-Type": "text/html; charset=utf-8"}


def create_tochka_sandbox(*, redirect_uris=(), config: Config | None = None, demo_company: dict | None = None
                          ) -> Flask:
    """A fresh sandbox with the demo application and the demo customer (`demo_company`: inn, kpp, phone)."""
    app = Flask(__name__)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    state = TochkaState(clients={DEMO_CLIENT_ID: {"secret": DEMO_CLIENT_SECRET, "redirect_uris": list(redirect_uris)}},
                        config=config, **(demo_company or {}))
    app.extensions["tochka_sandbox"] = state

    @app.before_request
    def _record():
        with state.lock:
            state.requests.append({"method": request.method, "path": request.path})

    # -- the bank's public key for webhook JWTs ------------------------------------------------------------
    @app.get("/doc/openapi/static/keys/public")
    def public_key():
        return jsonify(jwk_of(state.key))

    # -- OAuth: token endpoint ---------------------------------------------------------------------------
    def oauth_error(error: str, status: int = 400):
        return jsonify({"error": error}), status

    @app.post("/connect/token")
    def token():
        f = request.form
        client = state.clients.get(f.get("client_id", ""))
        if client is None or not secrets.compare_digest(client["secret"], f.get("client_secret", "")):
            return oauth_error("invalid_client", 401)
        if state.fault("token_500"):
            return oauth_error("server_error", 500)
        grant_type = f.get("grant_type")
        if grant_type == "client_credentials":
            return jsonify(state.new_token({"kind": "app", "client_id": f["client_id"]}, refresh=False))
        if grant_type == "authorization_code":
            with state.lock:
                grant = state.codes.pop(f.get("code", ""), None)
            if grant is None or grant["client_id"] != f["client_id"] or grant["redirect_uri"] != f.get("redirect_uri"):
                return oauth_error("invalid_grant")
            return jsonify(state.new_token(grant, refresh=True))
        if grant_type == "refresh_token":
            with state.lock:
                grant = state.refresh_tokens.pop(f.get("refresh_token", ""), None)  # rotated: single use
            if state.fault("refresh_invalid_grant") or grant is None or grant["client_id"] != f["client_id"]:
                return oauth_error("invalid_grant")
            if state.consents.get(grant["consent_id"], {}).get("status") != "Authorised":
                return oauth_error("invalid_grant")
            return jsonify(state.new_token(grant, refresh=True))
        return oauth_error("unsupported_grant_type")

    # -- OAuth: the pages the client sees (sign in, SMS, consent) -----------------------------------------
    @app.get("/connect/authorize")
    def authorize():
        q = request.args
        client = state.clients.get(q.get("client_id", ""))
        if client is None or q.get("redirect_uri") not in client["redirect_uris"]:
            return _page("Ошибка", "<p id='error'>Неизвестное приложение или адрес возврата</p>", 400)
        consent = state.consents.get(q.get("consent_id", ""))
        if q.get("response_type") != "code" or consent is None or consent["client_id"] != q["client_id"] \
                or consent["status"] != "AwaitingAuthorisation":
            return _page("Ошибка", "<p id='error'>Разрешение не найдено или уже подписано</p>", 400)
        flow = uuid.uuid4().hex
        with state.lock:
            state.sessions[flow] = {"query": dict(q), "phone": None, "sms": None, "customer": None}
        return _page("Вход в интернет-банк", f"""
<form method="post" action="/connect/signin"><input type="hidden" name="flow" value="{flow}">
<label for="phone">Телефон</label><input id="phone" name="phone" required>
<button type="submit" id="submit">Получить код</button></form>""")

    def _flow():
        flow = state.sessions.get(request.form.get("flow", ""))
        if flow is None:
            abort(400)
        return request.form["flow"], flow

    @app.post("/connect/signin")
    def signin():
        flow_id, flow = _flow()
        customer = state.customer_by_phone(request.form.get("phone", "").strip())
        if customer is None:
            return _page("Вход в интернет-банк", "<p id='error'>Номер не найден</p>", 400)
        flow.update(phone=customer.phone, sms=f"{secrets.randbelow(9000) + 1000}", customer=customer.code,
                    tries=0)
        return _page("Код из СМС", f"""
<p>Код отправлен на {escape(customer.phone)}</p><p>Песочница: код <span id="sms-code">{flow['sms']}</span></p>
<form method="post" action="/connect/sms"><input type="hidden" name="flow" value="{flow_id}">
<label for="code">Код</label><input id="code" name="code" required>
<button type="submit" id="submit">Подтвердить</button></form>""")

    @app.post("/connect/sms")
    def sms():
        flow_id, flow = _flow()
        if not flow.get("sms") or not secrets.compare_digest(flow["sms"], request.form.get("code", "")):
            flow["tries"] = flow.get("tries", 0) + 1
            if flow["tries"] >= 3:
                state.sessions.pop(flow_id, None)
            return _page("Код из СМС", "<p id='error'>Неверный код</p>", 400)
        flow["confirmed"] = True
        consent = state.consents[flow["query"]["consent_id"]]
        boxes = "".join(
            f'<label><input type="checkbox" name="permission" value="{p}" checked> {escape(PERMISSION_NAMES.get(p, p))}'
            f"</label><br>" for p in consent["permissions"])
        customer = state.customers[flow["customer"]]
        return _page("Подтвердите доступ", f"""
<p>Приложение запрашивает доступ к данным компании {escape(customer.name)} (ИНН {customer.inn})</p>
<form method="post" action="/connect/consent"><input type="hidden" name="flow" value="{flow_id}">{boxes}
<button type="submit" name="allow" value="1" id="allow">Разрешить</button>
<button type="submit" name="deny" value="1" id="deny">Отказать</button></form>""")

    @app.post("/connect/consent")
    def consent_decision():
        flow_id, flow = _flow()
        if not flow.get("confirmed"):
            abort(400)
        state.sessions.pop(flow_id, None)
        q = flow["query"]
        back = q["redirect_uri"] + ("&" if "?" in q["redirect_uri"] else "?")
        if request.form.get("deny"):
            with state.lock:
                state.consents[q["consent_id"]]["status"] = "Rejected"
            return redirect(back + urlencode({"error": "access_denied", "state": q.get("state", "")}))
        with state.lock:
            consent = state.consents[q["consent_id"]]
            granted = [p for p in request.form.getlist("permission") if p in consent["permissions"]]
            consent.update(status="Authorised", permissions=granted, customer_codes=[flow["customer"]])
            code = secrets.token_urlsafe(16)
            state.codes[code] = {"kind": "user", "client_id": q["client_id"], "consent_id": q["consent_id"],
                                 "redirect_uri": q["redirect_uri"]}
        return redirect(back + urlencode({"code": code, "state": q.get("state", "")}))

    # -- Open API -------------------------------------------------------------------------------------------
    def api_error(status: int, message: str):
        response = jsonify({"code": str(status), "message": message})
        response.status_code = status
        return response

    def bearer(kind: str | None = None):
        auth = request.headers.get("Authorization", "")
        grant = state.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if grant is None or (kind and grant["kind"] != kind):
            abort(api_error(401, "Unauthorized"))
        if state.fault("api_429"):  # Tochka's limits and their answer are not documented in what we read
            abort(api_error(429, "Too Many Requests"))
        if state.fault("api_500"):  # an outage: what a 5xx body looks like is not documented either (ours)
            abort(api_error(500, "internal error"))
        return grant

    def consent_of(grant, permission: str):
        consent = state.consents.get(grant.get("consent_id", ""))
        if consent is None or consent["status"] != "Authorised":
            abort(api_error(403, "consent is not authorised"))
        if permission not in consent["permissions"]:
            abort(api_error(403, f"permission {permission} not granted"))
        return consent

    def accounts_of(consent) -> list[tuple[Customer, str]]:
        return [(state.customers[c], a) for c in consent["customer_codes"] for a in state.customers[c].accounts]

    @app.post("/uapi/v1.0/consents")
    def create_consent():
        grant = bearer("app")
        perms = (request.get_json(silent=True) or {}).get("Data", {}).get("permissions")
        if not isinstance(perms, list) or not perms or not all(p in PERMISSION_NAMES for p in perms):
            return api_error(400, "Data.permissions: unknown or empty")
        cid = str(uuid.uuid4())
        with state.lock:
            state.consents[cid] = {"client_id": grant["client_id"], "permissions": list(perms),
                                   "status": "AwaitingAuthorisation", "customer_codes": []}
        return jsonify({"Data": {"consentId": cid, "status": "AwaitingAuthorisation", "permissions": perms}})

    @app.get("/uapi/v1.0/consents/<consent_id>")
    def get_consent(consent_id):
        bearer()
        c = state.consents.get(consent_id)
        if c is None:
            return api_error(404, "consent not found")
        return jsonify({"Data": {"consentId": consent_id, "status": c["status"], "permissions": c["permissions"]}})

    @app.get("/uapi/open-banking/v1.0/customers")
    def customers():
        consent = consent_of(bearer("user"), "ReadAccountsBasic")
        return jsonify({"Data": {"Customer": [
            {"customerCode": c.code, "customerType": "Business", "taxCode": c.inn, "kpp": c.kpp,
             "shortName": c.name, "fullName": c.name} for c in (state.customers[x] for x in consent["customer_codes"])]}})

    @app.get("/uapi/open-banking/v1.0/accounts")
    def accounts():
        consent = consent_of(bearer("user"), "ReadAccountsBasic")
        return jsonify({"Data": {"Account": [
            {"customerCode": c.code, "accountId": a, "status": "Enabled", "currency": "RUB",
             "accountType": "Business", "accountSubType": "CurrentAccount",
             "accountDetails": {"name": "Расчётный счёт"}} for c, a in accounts_of(consent)]}})

    @app.post("/uapi/open-banking/v1.0/statements")
    def init_statement():
        consent = consent_of(bearer("user"), "ReadStatements")
        if state.fault("statement_500"):
            return api_error(500, "internal error")
        st = ((request.get_json(silent=True) or {}).get("Data") or {}).get("Statement") or {}
        if st.get("accountId") not in {a for _c, a in accounts_of(consent)}:
            return api_error(403, "account not in consent")
        if not isinstance(st.get("startDateTime"), str) or not isinstance(st.get("endDateTime"), str):
            return api_error(400, "startDateTime and endDateTime are required")
        sid = str(uuid.uuid4())
        with state.lock:
            state.statements[sid] = {"accountId": st["accountId"], "start": st["startDateTime"][:10],
                                     "end": st["endDateTime"][:10], "polls": 0}
        return jsonify({"Data": {"Statement": {"statementId": sid, "status": "Created", **st}}})

    @app.get("/uapi/open-banking/v1.0/accounts/<path:account_id>/statements/<statement_id>")
    def get_statement(account_id, statement_id):
        consent_of(bearer("user"), "ReadStatements")
        with state.lock:
            st = state.statements.get(statement_id)
            if st is None or st["accountId"] != account_id:
                return api_error(404, "statement not found")
            st["polls"] += 1
            if st["polls"] <= state.config.statement_polls_until_ready:
                return jsonify({"Data": {"Statement": [{"statementId": statement_id, "status": "Processing"}]}})
            txs = [t for t in state.transactions.get(account_id, [])
                   if st["start"] <= t["documentProcessDate"][:10] <= st["end"]]
        return jsonify({"Data": {"Statement": [{"statementId": statement_id, "accountId": account_id,
                                                "status": "Ready", "Transaction": txs}]}})

    @app.route("/uapi/webhook/v1.0/<client_id>", methods=["GET", "PUT", "DELETE"])
    def webhook(client_id):
        grant = bearer()
        if grant["client_id"] != client_id:
            return api_error(403, "another application")
        if request.method == "GET":
            hook = state.webhooks.get(client_id)
            return jsonify({"Data": hook or {}})
        if request.method == "DELETE":
            with state.lock:
                state.webhooks.pop(client_id, None)
            return jsonify({"Data": {"result": True}})
        consent = consent_of(grant, "ManageWebhookData")
        body = request.get_json(silent=True) or {}
        url, events = body.get("url"), body.get("webhooksList")
        if not isinstance(url, str) or not url.startswith(("https://", "http://127.0.0.1")) or not isinstance(events, list):
            return api_error(400, "url (https, port 443) and webhooksList are required")
        status = state.test_webhook(url, consent["customer_codes"][0] if consent["customer_codes"] else "")
        if status != 200:
            return api_error(400, f"test webhook answered {status}")
        with state.lock:
            state.webhooks[client_id] = {"url": url, "webhooksList": list(events)}
        return jsonify({"Data": {"url": url, "webhooksList": events}})

    # -- control API (not Tochka's) ---------------------------------------------------------------------------
    @app.get("/sandbox/state")
    def sandbox_state():
        return jsonify(state.snapshot())

    @app.post("/sandbox/operations")
    def sandbox_pay():
        body = request.get_json(silent=True) or {}
        try:
            amount = Decimal(str(body.get("amount")))
        except InvalidOperation:
            return jsonify({"error": "amount"}), 400
        tx = state.pay(amount=amount, purpose=str(body.get("purpose", "")),
                       **{k: body[k] for k in ("account_id", "payer_inn", "payer_name", "payer_account",
                                               "document_number", "date", "status") if k in body})
        return jsonify(tx)

    @app.post("/sandbox/faults")
    def sandbox_faults():
        with state.lock:
            for name, count in (request.get_json(silent=True) or {}).items():
                state.faults[str(name)] = int(count)
        return jsonify(state.faults)

    @app.route("/sandbox/fault-rates", methods=["POST", "DELETE"])
    def sandbox_fault_rates():
        """{"kinds": {name: probability}, "seed": n} sets the rates (DELETE clears them); `fired` in the state
        counts what happened. The names are those of /sandbox/faults."""
        body = (request.get_json(silent=True) or {}) if request.method == "POST" else {}
        with state.lock:
            state.fault_rates = {str(k): float(v) for k, v in (body.get("kinds") or {}).items()}
            if "seed" in body:
                state.fault_rng.seed(int(body["seed"]))
        return jsonify(state.fault_rates)

    @app.post("/sandbox/customers")
    def sandbox_customer():
        b = request.get_json(silent=True) or {}
        c = state.add_customer(Customer(str(b["code"]), str(b["inn"]), str(b.get("kpp", "0")), str(b["name"]),
                                        str(b["phone"])), list(b["accounts"]))
        return jsonify({"code": c.code, "accounts": c.accounts})

    @app.post("/sandbox/consents/<consent_id>/revoke")
    def sandbox_revoke(consent_id):
        with state.lock:
            if consent_id not in state.consents:
                return jsonify({"error": "unknown"}), 404
            state.consents[consent_id]["status"] = "Revoked"
            for token, grant in list(state.tokens.items()):
                if grant.get("consent_id") == consent_id:
                    state.tokens.pop(token)
        return jsonify({"ok": True})

    return app


def tochka_state(app: Flask) -> TochkaState:
    return app.extensions["tochka_sandbox"]
