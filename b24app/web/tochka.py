"""Tochka link pages (the same popup, ticket and INN vetting as T-Bank's) and the incomingPayment webhook."""
from __future__ import annotations

import logging
import secrets

from flask import Blueprint, abort, g, jsonify, redirect, request, session

from b24app.banklinks import tbank as banklink, tochka as tochkalink
from b24app.adapters.banks.tochka import WebhookRejected
from b24app.banklinks.tbank import LinkFailed
from b24app.pipeline.sync import request_sync
from .tbank import CONFIRM_FIELD, LANG_KEY, _admin_ticket, _page, _watched, posted_requisites, requisite_errors
from .common import csrf, get_ctx
from .i18n import current_lang, set_lang
from .security import script_origin

bp = Blueprint("tochka", __name__, url_prefix="/bank/tochka")
log = logging.getLogger("b24app.tochka")
NONCE_KEY = "tochka_link_nonce"
WEBHOOK_MAX = 64 * 1024  # a webhook JWT is a few kilobytes


@bp.route("/start", methods=["GET", "POST"])
def start():
    """Ask for the company's INN/KPP (vetted as for T-Bank), then send the admin to Tochka's sign-in page."""
    ticket = request.values.get("ticket", "")
    data = _admin_ticket(ticket)
    ctx = get_ctx()
    if not tochkalink.enabled(ctx):
        abort(404, description="Tochka is not configured")
    g.form_action = script_origin(ctx.settings.tochka_auth_url)
    portal = ctx.portals.find(data["m"])
    if portal is None or portal.status != "installed":
        abort(403, description="portal not installed")
    errors: dict[str, str] = {}
    inn, kpp = posted_requisites()
    if request.method == "POST":
        errors = requisite_errors(inn, kpp)  # the same checks as T-Bank's form, shown the same way
        if not errors:
            try:
                checked = banklink.inn_check(banklink.own_company_inns(ctx, portal.member_id), inn,
                                             request.form.get(CONFIRM_FIELD) == inn)
            except LinkFailed as exc:
                return _page("bank/tochka_start.html", 409, ticket=ticket, errors={}, inn=inn, kpp=kpp,
                             confirm=True, confirm_reason=exc.reason)
            nonce = secrets.token_urlsafe(24)
            session[NONCE_KEY] = nonce
            session[LANG_KEY] = current_lang()
            try:
                url = tochkalink.start_link(ctx, portal.id, int(data["u"]), inn, kpp, nonce, checked=checked)
            except LinkFailed as exc:
                log.warning("tochka link not started", extra={"reason": exc.reason})
                return _page("bank/tochka_result.html", 502, ok=False, reason=exc.reason)
            return redirect(url, code=303)
    return _page("bank/tochka_start.html", 400 if errors else 200, ticket=ticket, errors=errors, inn=inn, kpp=kpp,
                 confirm=False)


@bp.get("/callback")
def callback():
    ctx = get_ctx()
    set_lang(session.get(LANG_KEY, "ru"))
    try:
        result = tochkalink.complete_link(ctx, error=request.args.get("error"), state=request.args.get("state"),
                                          code=request.args.get("code"), browser_nonce=session.pop(NONCE_KEY, None))
    except LinkFailed as exc:
        log.warning("tochka link failed", extra={"reason": exc.reason})
        return _page("bank/tochka_result.html", 400, ok=False, reason=exc.reason)
    request_sync(ctx, result.portal_id)
    return _page("bank/tochka_result.html", ok=True, accounts=result.accounts,
                 watched=_watched(ctx, result.portal_id))


@bp.post("/webhook")
@csrf.exempt
def webhook():
    """Tochka's webhook: the body is a JWT (text/plain) signed RS256 by Tochka. Unsigned or wrongly signed bodies
    are refused (401) and change nothing; a good one only makes the accounts due now (the statement is what gets
    stored). Tochka retries anything but 200 (30 times, every 10 s), so a good one we cannot route still gets 200,
    and so does a token we already acted on: it is Tochka's retry after our 200 was lost, or a replay — either
    way it is acknowledged and changes nothing."""
    ctx = get_ctx()
    if (request.content_length or 0) > WEBHOOK_MAX:
        return jsonify({"error": "too_large"}), 413
    body = request.get_data(cache=False, as_text=True)[:WEBHOOK_MAX]
    try:
        due = tochkalink.accept_webhook(ctx, body)
    except WebhookRejected as exc:
        if exc.reason == "replayed":
            log.info("tochka webhook seen before: acknowledged, nothing done")
            return jsonify({"ok": True, "replayed": True, "accounts": 0})
        log.warning("tochka webhook refused", extra={"reason": exc.reason})
        return jsonify({"error": exc.reason}), 401
    for portal_id, account_ids in due.items():
        request_sync(ctx, portal_id, account_ids)
    return jsonify({"ok": True, "accounts": sum(len(v) for v in due.values())})
