"""The app's own page in Bitrix24 (placement DEFAULT): bank connection, rules, review queue, history, chart.
Everyone on the portal may look; only portal administrators may change anything (checked per request)."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, g, jsonify, render_template, request, url_for
from flask_babel import gettext as _

from b24app.portals import usernames
from b24app.adapters.bitrix.errors import BitrixError
from ..domain.formatting import visible_text
from b24app.pipeline.outbox import TRIGGER_ACCESS_KEY, records_access
from b24app.pipeline.paidfield import FIELD_NAME as PAID_FIELD
from b24app.portals.funnels import deal_pipelines, parse_dt
from ..queries import lookups
from ..queries.admin_page import (AssignTargets, assign_targets, daily_chart, find_open_invoices, first_run, history,
                                  payments_seen, review_queue)
from ..queries.bank import bank_panel
from ..queries.review import REVIEW_STATES, ReviewLine
from b24app.pipeline.reconcile import CLOSE_ACTIONS
from .charts import chart_geometry
from .common import app_page_portal, get_ctx, issue_link_ticket, js_texts, progress
from .i18n import current_tz, set_lang
from . import actions, people
from .actions import id_field, json_body
from .security import Frame, PlacementRejected, allow_framing, frame_required, issue_frame_token
from .throttle import TryLater, page as try_later_page, verify_placement

bp = Blueprint("admin", __name__)
CSRF_EXEMPT = True  # Bitrix24 POSTs /app cross-site (verified with AUTH_ID); the JSON API uses a header token.
log = logging.getLogger("b24app.admin")

HISTORY_PAGE = 30
OUTCOMES = ("paid", "underpaid", "overpaid", "review", "unmatched")


# -- the page ----------------------------------------------------------------------------------------------
@bp.route("/app", methods=["GET", "POST"])
def app_page():
    ctx = get_ctx()
    if request.method == "GET":
        return render_template("error.html", reason="open_from_bitrix24"), 400
    try:
        verified = verify_placement(ctx, _people_command(ctx))
    except TryLater as exc:
        return try_later_page(exc)
    except PlacementRejected as exc:
        log.warning("app page rejected", extra={"reason": exc.reason,
                                                 "member_id": request.form.get("member_id", "")[:64]})
        return render_template("error.html", reason=exc.reason), 403
    frame, portal = verified.frame, verified.portal
    people.use(portal, usernames.remember(ctx, portal, verified.results))
    set_lang(frame.lang)
    g.tz = frame.tz
    allow_framing(portal, ctx.settings.bx24_js_url)
    pipelines, fetched_at, stages_ok = deal_pipelines(ctx, portal)
    from b24app.pipeline.rules import load_rules, rules_saved
    rules = load_rules(portal.settings)
    with ctx.db.session() as s:
        bank = bank_panel(ctx, s, portal)
        checklist = first_run(s, portal.id, bank, rules_saved(portal.settings))
        queue = review_queue(s, portal.id)
        targets = _targets(s, portal.id, queue)
        hist = history(s, portal.id, limit=HISTORY_PAGE)
        chart = daily_chart(s, portal.id, ctx.clock.now().astimezone(current_tz()).date(), tz=str(current_tz()))
    token = issue_frame_token(frame)
    config = {"token": token, "lang": frame.lang, "texts": js_texts(), "urls": _urls(frame)}
    return render_template(
        "admin/page.html", frame=frame, page_config=config, bank=bank, checklist=checklist,
        payments_seen=checklist.payment, queue=queue, targets=targets, history=hist,
        history_more=len(hist) == HISTORY_PAGE, chart=chart_geometry(chart), chart_days=chart,
        rules=rules, rules_saved=rules_saved(portal.settings), pipelines=pipelines, stages_fetched_at=fetched_at,
        stages_ok=stages_ok,
        outcomes=OUTCOMES, bx24_js_url=ctx.settings.bx24_js_url, default_interval=ctx.settings.sync_interval,
        trigger_access=(portal.settings or {}).get(TRIGGER_ACCESS_KEY),
        records_access=records_access(portal, rules))


def _people_command(ctx):
    """Names of the people in the history's first page, read in the batch that verifies the page."""
    def build(portal, _entity):
        return usernames.recent_command(ctx, portal.id)
    return build


def _urls(frame: Frame) -> dict:
    urls = {"review": url_for("admin.api_review"), "history": url_for("admin.api_history"),
            "bank": url_for("admin.api_bank"), "assign": url_for("admin.api_assign"),
            "undo": url_for("admin.api_undo"), "close": url_for("admin.api_close"), "rules": url_for("admin.api_rules"),
            "accept": url_for("admin.api_accept"), "partial": url_for("admin.api_partial_stages"),
            "partial_create": url_for("admin.api_partial_create"), "credits": url_for("admin.api_credits"),
            "credit_apply": url_for("admin.api_credit_apply"), "credit_undo": url_for("admin.api_credit_undo"),
            "paid_field": url_for("admin.api_paid_field"),
            "sync": url_for("admin.api_sync"), "stages": url_for("admin.api_stages"),
            "link": url_for("admin.api_link"), "accounts": url_for("bank.choose_accounts"),
            "invoices": url_for("admin.api_invoices"),
            "unlink": url_for("bank.unlink")}
    return urls


def _targets(s, portal_id: int, queue: list[ReviewLine]) -> dict[int, AssignTargets]:
    """What each assignable queued payment is offered: its candidates, their deals' and this payer's invoices
    (any other is one search away: /app/api/invoices); those paid already apart (only with "pay over");
    pre-selected only a candidate the payer relates to."""
    return {r.operation_pk: assign_targets(s, portal_id, r) for r in queue if r.state in REVIEW_STATES}


# -- JSON API (frame token in the X-Frame-Token header) ---------------------------------------------------
def _frame() -> tuple[Frame, Any]:
    frame: Frame = g.frame
    portal = app_page_portal(frame)
    g.tz = frame.tz
    people.use(portal)
    return frame, portal


def _admin() -> tuple[Frame, Any]:
    frame, portal = _frame()
    if not frame.is_admin:
        abort(403, description="only portal administrators may change this")
    return frame, portal


@bp.get("/app/api/review")
@frame_required
def api_review():
    frame, portal = _frame()
    search = request.args.get("q", "")[:200]
    closed = request.args.get("state", "open") == "closed"
    with get_ctx().db.session() as s:
        queue = review_queue(s, portal.id, search, closed=closed)
        targets = _targets(s, portal.id, queue)
        seen = bool(queue) or payments_seen(s, portal.id)
    html = render_template("admin/_review.html", queue=queue, targets=targets, frame=frame, search=search,
                           payments_seen=seen, closed=closed)
    return jsonify({"html": html, "count": len(queue), "operations": [r.operation_pk for r in queue]})


@bp.get("/app/api/history")
@frame_required
def api_history():
    frame, portal = _frame()
    args = request.args
    outcome = args.get("outcome", "")
    if outcome and outcome not in OUTCOMES:
        abort(400, description="unknown outcome")
    deal = args.get("deal", "").strip()
    before = args.get("before", "").strip()
    with get_ctx().db.session() as s:
        rows = history(s, portal.id, outcome=outcome, search=args.get("q", "")[:200],
                             deal_id=int(deal) if deal.isdigit() and len(deal) < 18 else None,
                             invoice=args.get("invoice", "").strip()[:64],
                             before_id=int(before) if before.isdigit() and len(before) < 18 else None,
                             limit=HISTORY_PAGE)
    html = render_template("admin/_history.html", history=rows, more=len(rows) == HISTORY_PAGE, frame=frame)
    return jsonify({"html": html, "decisions": [h.decision_id for h in rows]})


@bp.get("/app/api/bank")
@frame_required
def api_bank():
    from b24app.pipeline.rules import rules_saved

    frame, portal = _frame()
    ctx = get_ctx()
    with ctx.db.session() as s:
        bank = bank_panel(ctx, s, portal)
        checklist = first_run(s, portal.id, bank, rules_saved(portal.settings))
    return jsonify({"html": render_template("admin/_bank.html", bank=bank, frame=frame),
                    "checklist": render_template("admin/_checklist.html", checklist=checklist, frame=frame),
                    "linked": bank.linked, "health": bank.health})


@bp.get("/app/api/invoices")
@frame_required
def api_invoices():
    """Open invoices for the assign selector: by number, title, amount or deal id, in the payment's currency."""
    _frame_unused, portal = _admin()
    op_pk = request.args.get("operation", "")
    if not op_pk.isdigit() or len(op_pk) > 18:
        abort(400, description="operation must be an id")
    with get_ctx().db.session() as s:
        op = lookups.operation_of(s, portal.id, int(op_pk))
        if op is None:
            abort(404)
        rows = find_open_invoices(s, portal.id, op.currency, request.args.get("q", ""))
    return jsonify({"invoices": [{"id": i.b24_id, "label": _invoice_label(i)} for i in rows]})


def _invoice_label(inv) -> str:
    from .i18n import money
    text = _("No. %(number)s", number=visible_text(inv.number or str(inv.b24_id), 60)) + " · " + \
        money(inv.amount, inv.currency)
    return text + (" (" + _("deal %(id)s", id=inv.deal_id) + ")" if inv.deal_id else "")


@bp.post("/app/api/assign")
@frame_required
def api_assign():
    frame, portal = _admin()
    body = json_body()
    op_pk, inv_id = id_field(body, "operation"), id_field(body, "invoice", bitrix=True)
    ctx = get_ctx()
    with ctx.db.session() as s:
        if lookups.operation_of(s, portal.id, op_pk) is None or lookups.invoice_of(s, portal.id, inv_id) is None:
            abort(404)
    return actions.assign(frame, portal.id, op_pk, inv_id, pay_over=actions.pay_over_field(body))


@bp.post("/app/api/close")
@frame_required
def api_close():
    """Close a review item that pays no invoice: {operation, action: ignore|refund|credit, reason}."""
    frame, portal = _admin()
    body = json_body()
    op_pk = id_field(body, "operation")
    action, reason = body.get("action"), body.get("reason", "")
    if action not in CLOSE_ACTIONS or not isinstance(reason, str) or len(reason) > 2000:
        abort(400, description="action must be ignore, refund or credit; reason a short text")
    with get_ctx().db.session() as s:
        if lookups.operation_of(s, portal.id, op_pk) is None:
            abort(404)
    return actions.close(frame, portal.id, op_pk, action, reason)


@bp.post("/app/api/accept")
@frame_required
def api_accept():
    """Accept the app's proposal for a payment in review (INN and amount, #15): {operation}."""
    frame, portal = _admin()
    op_pk = id_field(json_body(), "operation")
    with get_ctx().db.session() as s:
        if lookups.operation_of(s, portal.id, op_pk) is None:
            abort(404)
    return actions.accept(frame, portal.id, op_pk)


@bp.post("/app/api/undo")
@frame_required
def api_undo():
    frame, portal = _admin()
    op_pk = id_field(json_body(), "operation")
    ctx = get_ctx()
    with ctx.db.session() as s:
        if lookups.operation_of(s, portal.id, op_pk) is None:
            abort(404)
    return actions.undo(frame, portal.id, op_pk)


@bp.post("/app/api/rules")
@frame_required
def api_rules():
    from b24app.pipeline.rules import save_rules

    frame, portal = _admin()
    body = json_body()
    allowed = {"paid_invoice_stage", "paid_deal_stage", "paid_timeline", "paid_notify", "underpaid_notify",
               "underpaid_task", "underpaid_timeline", "overpaid_notify", "review_notify", "fire_trigger",
               "sync_interval", "apply_medium", "ignore_categories", "partial_invoice_stage", "credit_auto_apply",
               "deal_paid_field", "payment_records"}
    data = {k: v for k, v in body.items() if k in allowed}
    stages = data.get("paid_deal_stage")
    if stages is not None:
        if not isinstance(stages, dict):
            abort(400, description="paid_deal_stage must map pipelines to stages")
        known = {str(p["id"]): {st["id"] for st in p["stages"]}
                 for p in deal_pipelines(get_ctx(), portal)[0]}
        for pipeline, stage in stages.items():
            if stage and (str(pipeline) not in known or stage not in known[str(pipeline)]):
                return jsonify({"error": "paid_deal_stage", "message": _("Choose a stage of that pipeline.")}), 400
    if data.get("deal_paid_field") not in (None, "", PAID_FIELD):  # only off, or the field the app created
        abort(400, description="deal_paid_field can only be turned off here")
    partial = data.get("partial_invoice_stage")
    if partial is not None:
        from b24app.pipeline.partial import invoice_funnels, valid_choice

        if not isinstance(partial, dict):
            abort(400, description="partial_invoice_stage must map invoice funnels to stages")
        if any(partial.values()):
            try:
                funnels = invoice_funnels(get_ctx(), portal.member_id)
            except BitrixError:
                return jsonify({"error": "bitrix_unavailable",
                                "message": _("Bitrix24 did not answer; try again later.")}), 502
            if not valid_choice(funnels, partial):
                return jsonify({"error": "partial_invoice_stage",
                                "message": _("Choose an in-progress stage of that invoice funnel.")}), 400
    try:
        rules = save_rules(get_ctx(), portal.id, data)
    except ValueError as exc:
        return jsonify({"error": str(exc), "message": _("Check the field: %(field)s", field=str(exc))}), 400
    log.info("rules saved", extra={"member_id": frame.member_id, "user_id": frame.user_id})
    return jsonify({"ok": True, "rules": rules.to_dict()})


@bp.route("/app/api/sync", methods=["GET", "POST"])
@frame_required
def api_sync():
    """POST {days}: backfill the last N days (admins); GET: progress for the bar."""
    from b24app.pipeline import sync

    ctx = get_ctx()
    if request.method == "POST":
        _frame_unused, portal = _admin()
        body = request.get_json(silent=True)
        if body is not None and not isinstance(body, dict):
            abort(400, description="JSON object expected")
        days = (body or {}).get("days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365):
            return jsonify({"error": "days", "message": _("Choose from 1 to 365 days.")}), 400
        since = ctx.clock.now()
        ids = sync.request_sync(ctx, portal.id, backfill_days=days)
        return jsonify({"requested": ids, "since": since.isoformat(), **progress(sync.sync_status(ctx, portal.id))}), 202
    _frame_unused, portal = _frame()
    out = progress(sync.sync_status(ctx, portal.id))
    since = parse_dt(request.args.get("since", "")[:40])
    if since is not None:  # how many operations this load stored that the app had not seen before
        with ctx.db.session() as s:
            out["loaded"] = lookups.loaded_since(s, portal.id, since)
    return jsonify(out)


@bp.post("/app/api/stages")
@frame_required
def api_stages():
    from b24app.pipeline.rules import load_rules, rules_saved

    _frame_unused, portal = _admin()
    ctx = get_ctx()
    pipelines, fetched_at, ok = deal_pipelines(ctx, portal, refresh=True)
    if not ok:
        return jsonify({"error": "bitrix_unavailable", "message": _("Bitrix24 did not answer; try again later.")}), 502
    portal = ctx.portals.find(portal.member_id)
    html = render_template("admin/_stages.html", pipelines=pipelines, rules=load_rules(portal.settings),
                           rules_saved=rules_saved(portal.settings),
                           stages_fetched_at=fetched_at, stages_ok=ok, frame=g.frame)
    return jsonify({"html": html, "pipelines": pipelines})


def _partial_html(ctx, portal, note: str = ""):
    from b24app.pipeline.partial import invoice_funnels
    from b24app.pipeline.rules import load_rules

    try:
        funnels = invoice_funnels(ctx, portal.member_id)
    except BitrixError:
        return jsonify({"error": "bitrix_unavailable", "message": _("Bitrix24 did not answer; try again later.")}), 502
    portal = ctx.portals.find(portal.member_id)
    html = render_template("admin/_partial.html", funnels=funnels, rules=load_rules(portal.settings), frame=g.frame,
                           note=note)
    return jsonify({"html": html, "funnels": funnels})


@bp.get("/app/api/partial_stages")
@frame_required
def api_partial_stages():
    """The invoice funnels and their stages, to choose the "partly paid" stage of each (#15)."""
    _frame_unused, portal = _admin()
    return _partial_html(get_ctx(), portal)


@bp.post("/app/api/partial_stages/create")
@frame_required
def api_partial_create():
    """Create «Частично оплачен» / "Partly paid" in one invoice funnel (crm.status.add) and choose it: {category_id}."""
    from b24app.pipeline.partial import PartialStageError, create_partial_stage
    from b24app.pipeline.rules import load_rules, save_rules

    frame, portal = _admin()
    category = id_field(json_body(), "category_id")
    ctx = get_ctx()
    try:
        stage = create_partial_stage(ctx, portal.member_id, category, frame.lang or portal.lang or "ru")
    except PartialStageError as exc:
        texts = {"unknown_funnel": _("This invoice funnel was not found."),
                 "no_room": _("There is no room for a stage before the paid stage: change the stage order in Bitrix24."),
                 "access_denied": _("Bitrix24 allows this to CRM administrators only: ask one to create the stage."),
                 "bitrix_error": _("Bitrix24 did not create the stage; try again later.")}
        return jsonify({"error": exc.reason, "message": texts[exc.reason]}), 409
    current = load_rules(ctx.portals.find(portal.member_id).settings).partial_invoice_stage
    save_rules(ctx, portal.id, {"partial_invoice_stage": {**current, str(category): stage}})
    log.info("partly-paid stage created", extra={"member_id": frame.member_id, "user_id": frame.user_id,
                                                 "stage": stage})
    return _partial_html(ctx, portal, note=_("The stage has been created and chosen."))


@bp.post("/app/api/paid_field")
@frame_required
def api_paid_field():
    """Create the deal's «Оплачено» money field (crm.deal.userfield.add) and keep it up to date from now on (#15)."""
    from b24app.pipeline.paidfield import create_field
    from b24app.pipeline.rules import save_rules

    frame, portal = _admin()
    ctx = get_ctx()
    try:
        name = create_field(ctx, portal.member_id)
    except BitrixError as exc:
        log.warning("paid field not created", extra={"member_id": frame.member_id, "code": exc.code})
        return jsonify({"error": "bitrix_error", "message": _(
            "Bitrix24 did not create the field (only CRM administrators may): %(error)s", error=exc.code)}), 409
    rules = save_rules(ctx, portal.id, {"deal_paid_field": name})
    log.info("paid field created", extra={"member_id": frame.member_id, "user_id": frame.user_id})
    return jsonify({"ok": True, "field": name, "rules": rules.to_dict(),
                    "message": _("The field “Paid” has been added to deals.")})


def _credits_html(portal_id: int, note: str = "", **extra):
    from b24app.pipeline.credit import credit_lines

    with get_ctx().db.session() as s:
        lines = credit_lines(s, portal_id)
        html = render_template("admin/_credits.html", credits=lines, frame=g.frame)
    return jsonify({"html": html, "message": note, "credits": [
        {"inn": c["inn"], "currency": c["currency"], "balance": str(c["balance"])} for c in lines], **extra})


@bp.get("/app/api/credits")
@frame_required
def api_credits():
    """The clients' credit by INN (#15)."""
    _frame_unused, portal = _frame()
    return _credits_html(portal.id)


def _credit_refusal(reason: str):
    texts = {"not_found": _("This credit was not found."), "nothing_to_undo": _("This has been undone already."),
             "effects_in_flight": actions.refusal("effects_in_flight")}
    return jsonify({"error": reason, "message": texts.get(reason, actions.refusal(reason))}), 409


@bp.post("/app/api/credits/apply")
@frame_required
def api_credit_apply():
    """Put a client's credit on its oldest open invoices: {inn, currency}."""
    from b24app.pipeline.credit import CreditError, apply_credit

    frame, portal = _admin()
    body = json_body()
    inn, currency = body.get("inn"), body.get("currency", "RUB")
    if not (isinstance(inn, str) and inn.isdigit() and len(inn) in (10, 12)) or not (
            isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
        abort(400, description="inn must be 10 or 12 digits, currency a 3-letter code")
    try:
        made = apply_credit(get_ctx(), portal.id, inn, currency.upper(), user_id=frame.user_id)
    except CreditError as exc:
        return _credit_refusal(exc.reason)
    log.info("credit applied", extra={"member_id": frame.member_id, "user_id": frame.user_id, "rows": len(made)})
    if not made:
        return jsonify({"error": "nothing_applied", "message": _("No credit or no open invoice of this client.")}), 409
    return _credits_html(portal.id, _("The credit has been applied."))


@bp.post("/app/api/credits/undo")
@frame_required
def api_credit_undo():
    """Take one application of credit back: {credit}."""
    from b24app.pipeline.credit import CreditError, undo_credit

    frame, portal = _admin()
    credit_id = id_field(json_body(), "credit")
    try:
        kinds = undo_credit(get_ctx(), portal.id, credit_id, frame.user_id)
    except CreditError as exc:
        return _credit_refusal(exc.reason)
    log.info("credit application undone", extra={"member_id": frame.member_id, "user_id": frame.user_id,
                                                 "credit": credit_id})
    done = _("The application of the credit has been undone.")
    message = f"{done} {actions.not_reverted_text(kinds)}".strip()
    return _credits_html(portal.id, message, not_reverted=kinds)


@bp.post("/app/api/link")
@frame_required
def api_link():
    frame, _portal = _admin()
    return jsonify({"url": url_for("bank.start", ticket=issue_link_ticket(frame))})


actions.json_errors(bp, lambda: request.path.startswith("/app/api/"))
