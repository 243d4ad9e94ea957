"""Bank link pages (top-level popup: cookies and CSRF work there), webhook receiver, frame-token API."""
from __future__ import annotations

import json
import logging
import secrets
from datetime import datetime, timezone

from flask import Blueprint, abort, g, jsonify, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from itsdangerous import BadSignature, SignatureExpired

from b24app.banklinks import tbank as banklink, tochka as tochkalink
from b24app.adapters.banks.errors import BankError
from b24app.banklinks.tbank import LinkFailed
from ..domain.formatting import visible_text
from ..domain.requisites import inn_problem, kpp_problem
from b24app.pipeline.sync import request_sync
from ..queries.bank import bank_state, links_of_accounts, portal_links, watched_count, webhook_accounts
from .actions import OUR_ID_MAX, id_field, json_body, json_errors
from .common import csrf, get_ctx, issue_link_ticket, link_tickets, may_link
from .display import mask_account
from .i18n import current_lang, set_lang
from .security import frame_required, script_origin

bp = Blueprint("bank", __name__, url_prefix="/bank")
log = logging.getLogger("b24app.adapters.banks")
TICKET_TTL = 10 * 60
NONCE_KEY = "bank_link_nonce"
LANG_KEY = "bank_link_lang"
CONFIRM_FIELD = "confirm_foreign"  # the admin's "this company is not one of ours, link it anyway": its INN
CONFIRM_REASONS = ("inn_not_own_company", "own_companies_unknown")
RETRY_KEY = "bank_link_retry"  # the ticket's data, so that a failed link can be tried again from its page
RETRY_TTL = 60 * 60


ADMINS_ONLY = "only portal administrators may link, change or remove a bank account"


def _admin_ticket(token: str) -> dict:
    """The ticket, read and required to be an administrator's (tickets issued before this rule included)."""
    data = _read_ticket(token)
    set_lang(data.get("l", "ru"))
    if data.get("a") is not True:
        abort(403, description=ADMINS_ONLY)
    return data


def _read_ticket(token: str) -> dict:
    try:
        return link_tickets().loads(token, max_age=TICKET_TTL)
    except SignatureExpired:
        abort(403, description="link ticket expired: start again from Bitrix24")
    except BadSignature:
        abort(403, description="link ticket invalid")


def _page(template: str, status: int = 200, **kw):
    return render_template(template, **kw), status


@bp.route("/start", methods=["GET", "POST"])
def start():
    """Ask for the company's INN/KPP, then send the user to T-Bank's own sign-in page."""
    ticket = request.values.get("ticket", "")
    data = _admin_ticket(ticket)
    ctx = get_ctx()
    # The INN form's POST is answered with a redirect to T-Bank's sign-in page, and browsers check
    # form-action on every hop: the page holding the form must already allow the T-ID origin.
    g.form_action = script_origin(ctx.settings.tbank_id_url)
    portal = ctx.portals.find(data["m"])
    if portal is None or portal.status != "installed":
        abort(403, description="portal not installed")
    session[RETRY_KEY] = {**{k: data.get(k) for k in ("m", "u", "a", "l")}, "t": int(ctx.clock.now().timestamp())}
    errors: dict[str, str] = {}
    inn, kpp = posted_requisites()
    if request.method == "POST":
        errors = requisite_errors(inn, kpp)
        if not errors:
            # A company that is not one of the portal's own needs a second, explicit step (recorded on the link).
            try:
                checked = banklink.inn_check(banklink.own_company_inns(ctx, portal.member_id), inn,
                                             request.form.get(CONFIRM_FIELD) == inn)
            except LinkFailed as exc:
                log.info("bank link needs confirmation", extra={"reason": exc.reason, "user_id": data["u"]})
                return _page("bank/start.html", 409, ticket=ticket, errors={}, inn=inn, kpp=kpp, is_admin=True,
                             confirm=True, confirm_reason=exc.reason, tochka=tochkalink.enabled(ctx))
            nonce = secrets.token_urlsafe(24)
            session[NONCE_KEY] = nonce
            session[LANG_KEY] = current_lang()
            url = banklink.start_link(ctx, portal.id, int(data["u"]), inn, kpp, nonce, is_admin=True,
                                      checked=checked)
            return redirect(url, code=303)
    return _page("bank/start.html", 400 if errors else 200, ticket=ticket, errors=errors, inn=inn, kpp=kpp,
                 is_admin=True, confirm=False, tochka=tochkalink.enabled(ctx))


def _requisite(value: str) -> str:
    """What a person typed or pasted, without the spaces and dashes that come with a copy from a document."""
    return "".join(ch for ch in value[:64] if ch not in " \t-\u00a0")


def posted_requisites() -> tuple[str, str]:
    """The INN and KPP of a link form as typed or pasted (KPP "0" when empty: a sole trader has none)."""
    return _requisite(request.form.get("inn", "")), _requisite(request.form.get("kpp", "")).upper() or "0"


def requisite_errors(inn: str, kpp: str) -> dict[str, str]:
    """Field -> problem code for a link form (bank/_requisites.html shows each at its field); KPP only once the
    INN is right, since whether a KPP is needed depends on the INN."""
    problems = {"inn": inn_problem(inn)}
    if not problems["inn"]:
        problems["kpp"] = kpp_problem(kpp, inn)
    return {k: v for k, v in problems.items() if v}


@bp.get("/callback")
def callback():
    ctx = get_ctx()
    set_lang(session.get(LANG_KEY, "ru"))
    try:
        result = banklink.complete_link(ctx, error=request.args.get("error"), state=request.args.get("state"),
                                        code=request.args.get("code"), browser_nonce=session.pop(NONCE_KEY, None),
                                        error_description=request.args.get("error_description"))
    except LinkFailed as exc:
        log.warning("bank link failed", extra={"reason": exc.reason})
        retry = _retry_data(ctx)
        portal_id = exc.portal_id
        if portal_id is None and retry:
            portal = ctx.portals.find(retry["m"])
            portal_id = portal.id if portal else None
        if portal_id is not None:
            banklink.record_failure(ctx, portal_id, exc.user_id or (retry or {}).get("u"), exc.reason, exc.detail)
        retry_url = url_for("bank.start", ticket=link_tickets().dumps(
            {k: retry[k] for k in ("m", "u", "a", "l")})) if retry else None
        return _page("bank/result.html", 400, ok=False, reason=exc.reason,
                     message=failure_message(exc.reason, exc.detail), retry_url=retry_url)
    session.pop(RETRY_KEY, None)
    request_sync(ctx, result.portal_id)
    return _page("bank/result.html", ok=True, accounts=result.accounts, company=result.company_name,
                 watched=_watched(ctx, result.portal_id))


def _watched(ctx, portal_id: int) -> int:
    """How many accounts of the portal's active links are watched (0: nothing will arrive until one is)."""
    with ctx.db.session() as s:
        return watched_count(s, portal_id)


def failure_message(reason: str, detail: str = "") -> str:
    """Why a link attempt did not complete, in the user's words (the popup's last page, the admin page)."""
    said = {  # error_description values the T-ID sandbox sends; anything else is shown as T-Bank said it
        "sms_attempts_exceeded": _("The SMS code was entered wrong too many times."),
        "company_not_found": _("T-Bank found no company with this INN and KPP for this phone number."),
    }
    code, _sep, description = (detail or "").partition(": ")
    if reason == "provider_error" and description in said:
        return said[description]
    if reason == "provider_error" and code == "access_denied" and not description:
        return _("Access was refused on T-Bank’s consent page.")
    messages = {
        "provider_error": _("Access was refused or T-Bank returned an error. Start linking again."),
        "state_missing": _("The link is incomplete. Start again from Bitrix24."),
        "state_invalid": _("This link has expired or was already used. Start again from Bitrix24."),
        "state_other_browser": _("Linking was started in another window or browser. Start again here."),
        "code_missing": _("T-Bank did not send a confirmation code. Start again."),
        "exchange_failed": _("T-Bank did not confirm the sign-in. Try again in a minute."),
        "scopes_not_granted": _("Access to “Accounts” and “Statement” is required. Start again and keep both "
                                "boxes ticked on the consent page."),
        "storage_failed": _("The link could not be saved. Try again; if it repeats, contact support."),
        "bank_unavailable": _("T-Bank is unavailable right now. Try again later."),
        "not_admin": _("Only a Bitrix24 administrator can link a bank account. Ask your administrator."),
    }
    text = messages.get(reason) or _("Something went wrong.")
    if reason == "provider_error" and detail:
        text += " " + _("T-Bank said: %(detail)s", detail=visible_text(detail, 200))
    return text


@bp.app_template_global()
def link_failure(failure: dict | None) -> dict | None:
    """The stored last failed attempt as the admin page shows it: when (aware datetime) and why."""
    if not failure:
        return None
    try:
        at = datetime.fromisoformat(str(failure.get("at")))
    except ValueError:
        at = None
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return {"at": at, "text": failure_message(str(failure.get("reason")), str(failure.get("detail") or "")),
            "reason": str(failure.get("reason")), "user_id": failure.get("user_id")}


def _retry_data(ctx) -> dict | None:
    """Who started the link in this browser, if within the hour: a failed attempt may be tried again."""
    data = session.get(RETRY_KEY)
    if not isinstance(data, dict) or not isinstance(data.get("t"), int):
        return None
    if ctx.clock.now().timestamp() - data["t"] > RETRY_TTL:
        return None
    return data


@bp.route("/token", methods=["GET", "POST"])
def paste_token():
    """Admin-only fallback: paste a T-Business cabinet token instead of linking by SMS."""
    ticket = request.values.get("ticket", "")
    data = _admin_ticket(ticket)
    ctx = get_ctx()
    portal = ctx.portals.find(data["m"])
    if portal is None or portal.status != "installed":
        abort(403)
    if request.method == "POST":
        try:
            banklink.paste_token(ctx, portal.id, int(data["u"]), request.form.get("token", ""),
                                 own_inns=banklink.own_company_inns(ctx, portal.member_id),
                                 confirmed_inn=request.form.get(CONFIRM_FIELD, ""))
        except LinkFailed as exc:
            confirm = exc.reason in CONFIRM_REASONS
            return _page("bank/token.html", 409 if confirm else 400, ticket=ticket, reason=exc.reason,
                         inn=exc.detail if confirm else "", confirm=confirm)
        request_sync(ctx, portal.id)
        return _page("bank/result.html", ok=True, accounts=None, watched=_watched(ctx, portal.id))
    return _page("bank/token.html", ticket=ticket, reason=None, inn="", confirm=False)


@bp.post("/webhook/<int:link_id>")
@csrf.exempt
def webhook(link_id: int):
    """T-Bank's oper-feed-operation: authenticate, acknowledge, and make the account due now."""
    ctx = get_ctx()
    if link_id > OUR_ID_MAX:
        return jsonify({"error": "unauthorized"}), 401
    auth = request.headers.get("Authorization", "")
    presented = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else ""
    if not banklink.webhook_secret_matches(ctx, link_id, presented):
        return jsonify({"error": "unauthorized"}), 401
    try:
        body = json.loads(request.get_data(cache=False, as_text=True) or "{}")
    except ValueError:
        body = {}
    account_number = str(body.get("accountNumber", "")) if isinstance(body, dict) else ""
    with ctx.db.session() as s:
        portal_id, ids = webhook_accounts(s, link_id, account_number)
    if ids:
        request_sync(ctx, portal_id, ids)
    return jsonify({"ok": True, "accounts": len(ids)})


# -- JSON API for the widget/admin page (frame token) -------------------------------------------------------
def _portal_for_frame():
    ctx = get_ctx()
    portal = ctx.portals.find(g.frame.member_id)
    if portal is None or portal.status != "installed":
        abort(401)
    return ctx, portal


@bp.get("/accounts")
@csrf.exempt
@frame_required
def accounts():
    ctx, portal = _portal_for_frame()
    with ctx.db.session() as s:
        links, accs = portal_links(s, portal.id)
    return jsonify({
        "links": [{"id": l.id, "kind": l.kind, "status": l.status, "inn": l.inn, "kpp": l.kpp,
                   "company_name": l.company_name} for l in links],
        # masked as on the admin page: anyone with a frame token may list accounts
        "accounts": [{"id": a.id, "link_id": a.link_id, "account_number": mask_account(a.account_number),
                      "currency": a.currency,
                      "name": a.name, "watched": a.watched,
                      "last_synced_at": a.last_synced_at.isoformat() if a.last_synced_at else None,
                      "last_error": a.last_error} for a in accs if any(l.id == a.link_id for l in links)],
        # Linking is for portal administrators only (see may_link).
        "link_url": f"/bank/start?ticket={issue_link_ticket(g.frame)}" if may_link(g.frame) else None,
        "token_url": f"/bank/token?ticket={issue_link_ticket(g.frame)}" if g.frame.is_admin else None,
    })


@bp.post("/accounts")
@csrf.exempt
@frame_required
def choose_accounts():
    ctx, portal = _portal_for_frame()
    if not g.frame.is_admin:
        abort(403)
    body = request.get_json(silent=True)
    ids = body.get("watched") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids) or len(ids) > 1000:
        return jsonify({"error": "watched must be a list of account ids"}), 400
    with ctx.db.session() as s:
        # The admin page shows one link's accounts (queries.bank.bank_state): only that link, and the links of
        # the accounts ticked, are changed, so saving one bank's list leaves another bank's accounts watched.
        shown = bank_state(s, portal.id).link_id
        scope = links_of_accounts(s, portal.id, ids)
    banklink.set_watched(ctx, portal.id, set(ids), link_ids=scope | ({shown} if shown else set()))
    return jsonify({"ok": True})


@bp.post("/unlink")
@csrf.exempt
@frame_required
def unlink():
    ctx, portal = _portal_for_frame()
    if not g.frame.is_admin:
        abort(403)
    link_id = id_field(json_body(), "link_id")
    if not banklink.unlink(ctx, portal.id, link_id):
        abort(404)
    return jsonify({"ok": True})


JSON_ENDPOINTS = {"bank.webhook", "bank.accounts", "bank.choose_accounts", "bank.unlink"}
json_errors(bp, lambda: request.endpoint in JSON_ENDPOINTS)


@bp.errorhandler(BankError)
def _bank_error(exc):
    log.warning("bank error", extra={"error": type(exc).__name__})
    return _page("bank/result.html", 502, ok=False, reason="bank_unavailable",
                 message=failure_message("bank_unavailable"))
