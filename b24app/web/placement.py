"""The deal and invoice tabs: verified once from Bitrix24's POST (one REST call), then a small JSON API
that carries the frame token in a header. Who may act: admins and the deal's (or invoice's) responsible."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from flask import Blueprint, Response, abort, g, jsonify, render_template, request, url_for
from flask_babel import gettext as _
from markupsafe import Markup

from b24app.portals import usernames
from b24app.pipeline.invoices import store_fetched, tab_commands
from ..queries import lookups
from ..queries.deal_tab import WidgetData, widget_data
from . import actions, people
from .actions import id_field, json_body
from .common import get_ctx, issue_link_ticket, js_texts, may_link, progress
from .i18n import set_lang
from .security import Frame, PlacementRejected, allow_framing, frame_required, issue_frame_token
from .throttle import TryLater, page as try_later_page, verify_placement

bp = Blueprint("placement", __name__)
CSRF_EXEMPT = True  # Bitrix24 POSTs the tabs cross-site (verified with the posted AUTH_ID); the API uses a header token.
log = logging.getLogger("b24app.placement")

POLL_MS = 2000  # the open tab asks "anything new?" (ETag, 304 when not) this often while it is visible
PLACEMENTS = {"deal": "CRM_DEAL_DETAIL_TAB", "invoice": "CRM_SMART_INVOICE_DETAIL_TAB"}


# -- the one Bitrix24 call per render ---------------------------------------------------------------
def readable(kind: str, entity_id: int, verified) -> bool:
    """Did Bitrix24 show this user the deal (or the invoice) in the verifying call? If not, neither do we,
    whatever the cache holds: the user's own token read it, so Bitrix24's CRM permissions decide."""
    if kind == "deal":
        return "deal" not in verified.errors and isinstance(verified.results.get("deal"), dict)
    listed = verified.results.get("invoices")
    items = listed.get("items") if isinstance(listed, dict) else None
    return "invoices" not in verified.errors and isinstance(items, list) and \
        any(isinstance(i, dict) and str(i.get("id")) == str(entity_id) for i in items)


# -- rendering --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Access:
    """What this user may do in this tab (computed on the server for every action)."""

    frame: Frame
    portal_id: int

    def may_act_on(self, invoice_owner: int | None) -> bool:
        f = self.frame
        return f.is_admin or (f.owner_id is not None and f.owner_id == f.user_id) or \
            (invoice_owner is not None and invoice_owner == f.user_id)


def may_act(frame: Frame, data: WidgetData) -> bool:
    """True when this user may act on at least one invoice of the tab."""
    access = Access(frame, 0)
    return access.may_act_on(None) or any(access.may_act_on(i.assigned_by_id) for i in data.invoices)


def _link_url(frame: Frame) -> str:
    return url_for("bank.start", ticket=issue_link_ticket(frame))


def render_body(frame: Frame, data: WidgetData) -> Markup:
    return Markup(render_template("widget/_body.html", data=data, frame=frame, can_act=may_act(frame, data),
                                  access=Access(frame, 0)))


def _data_json(frame: Frame, data: WidgetData) -> dict:
    return {
        "kind": data.kind, "entity_id": data.entity_id, "deal_id": data.deal_id, "can_act": may_act(frame, data),
        "bank": {"linked": data.bank.linked, "health": data.bank.health,
                 "last_synced_at": data.bank.last_synced_at.isoformat() if data.bank.last_synced_at else None},
        "invoices": [{"id": i.b24_id, "number": i.number, "amount": str(i.amount), "paid": str(i.paid),
                      "remaining": str(i.remaining), "currency": i.currency, "status": i.status,
                      "percent": i.percent, "payments": [p.operation_pk for p in i.payments]}
                     for i in data.invoices],
        "review": [{"operation": r.operation_pk, "amount": str(r.amount), "currency": r.currency,
                    "candidates": list(r.candidates)} for r in data.review],
    }


def _tab(kind: str):
    ctx = get_ctx()
    if request.method == "GET":
        return render_template("error.html", reason="open_from_bitrix24"), 400
    try:
        verified = verify_placement(ctx, tab_commands(ctx, kind))
    except TryLater as exc:
        return try_later_page(exc)
    except PlacementRejected as exc:
        log.warning("placement rejected", extra={"reason": exc.reason,
                                                  "member_id": request.form.get("member_id", "")[:64]})
        return render_template("error.html", reason=exc.reason), 403
    frame = verified.frame
    set_lang(frame.lang)
    if frame.placement != PLACEMENTS[kind] or frame.entity_id is None:
        return render_template("error.html", reason="wrong_placement"), 400
    if not readable(kind, frame.entity_id, verified):
        log.warning("placement refused: not readable for this user",
                    extra={"kind": kind, "member_id": frame.member_id, "user": frame.user_id})
        allow_framing(verified.portal)  # a verified user's portal: it shows the message in the tab
        return render_template("error.html", reason="not_readable"), 403
    people.use(verified.portal, usernames.remember(ctx, verified.portal, verified.results))
    owner, fetched = store_fetched(ctx, verified.portal.id, verified.results)
    frame = replace(frame, owner_id=owner)
    g.tz = frame.tz
    allow_framing(verified.portal, ctx.settings.bx24_js_url)
    with ctx.db.session() as s:
        data = _load(s, verified.portal.id, kind, frame.entity_id)
    token = issue_frame_token(frame)
    api = url_for("placement.api_data", kind=kind, entity_id=frame.entity_id)
    config = {"token": token, "kind": kind, "entity": frame.entity_id, "lang": frame.lang,
              "api": api, "sync": url_for("placement.api_sync", kind=kind, entity_id=frame.entity_id),
              "assign": url_for("placement.api_assign", kind=kind, entity_id=frame.entity_id),
              "undo": url_for("placement.api_undo", kind=kind, entity_id=frame.entity_id),
              "link": url_for("placement.api_link", kind=kind, entity_id=frame.entity_id),
              "accounts": url_for("bank.choose_accounts"),
              "version": _version(_data_json(frame, data), data), "texts": js_texts(), "poll": POLL_MS}
    return render_template("widget/page.html", data=data, frame=frame, page_config=config, fetched=fetched,
                           can_act=may_act(frame, data), body=render_body(frame, data),
                           bx24_js_url=ctx.settings.bx24_js_url)


@bp.route("/placement/deal", methods=["GET", "POST"])
def deal_tab():
    return _tab("deal")


@bp.route("/placement/invoice", methods=["GET", "POST"])
def invoice_tab():
    return _tab("invoice")


def sync_line(data: WidgetData) -> str:
    from .i18n import when
    if data.bank.linked and data.bank.health == "no_accounts":
        return _("No bank account is watched")
    if data.bank.last_synced_at:
        return _("Bank checked %(when)s", when=when(data.bank.last_synced_at))
    return _("The bank has not been checked yet") if data.bank.linked else _("The bank is not linked")


def _load(s, portal_id: int, kind: str, entity_id: int) -> WidgetData:
    if kind == "deal":
        return widget_data(s, portal_id, deal_id=entity_id)
    return widget_data(s, portal_id, invoice_id=entity_id)


def _version(payload: dict, data: WidgetData) -> str:
    """The ETag: what the tab shows. The bank's check time counts as the minute the tab prints, so that a
    statement read with nothing new (every sync) does not make each 2-second poll a full answer."""
    shown = {**payload, "bank": {**payload["bank"], "last_synced_at": sync_line(data)}}
    return hashlib.sha256(json.dumps(shown, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- JSON API ------------------------------------------------------------------------------------------
def _frame_for(kind: str, entity_id: int) -> tuple[Frame, Any]:
    """The frame token must be for this tab: same placement kind and same entity; portal still installed."""
    if kind not in PLACEMENTS:
        abort(404)
    frame: Frame = g.frame
    if frame.placement != PLACEMENTS[kind] or frame.entity_id != entity_id:
        abort(403, description="frame token is for another tab")
    portal = get_ctx().portals.find(frame.member_id)
    if portal is None or portal.status != "installed":
        abort(401, description="portal not installed")
    set_lang(frame.lang)
    g.tz = frame.tz
    return frame, portal


def _in_tab(inv, kind: str, entity_id: int) -> bool:
    if inv is None:
        return False
    return inv.deal_id == entity_id if kind == "deal" else inv.b24_id == entity_id


@bp.get("/placement/api/<kind>/<int:entity_id>")
@frame_required
def api_data(kind: str, entity_id: int):
    frame, portal = _frame_for(kind, entity_id)
    people.use(portal)
    with get_ctx().db.session() as s:
        data = _load(s, portal.id, kind, entity_id)
    payload = _data_json(frame, data)
    version = _version(payload, data)
    if request.headers.get("If-None-Match") == f'"{version}"':
        resp = Response(status=304)
    else:
        resp = jsonify({**payload, "version": version, "html": str(render_body(frame, data)),
                        "sync_line": sync_line(data)})
    resp.headers["ETag"] = f'"{version}"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/placement/api/<kind>/<int:entity_id>/sync", methods=["GET", "POST"])
@frame_required
def api_sync(kind: str, entity_id: int):
    """POST: make the portal's watched accounts due now; GET: their progress."""
    from b24app.pipeline import sync

    frame, portal = _frame_for(kind, entity_id)
    ctx = get_ctx()
    if request.method == "POST":
        _require_actor(frame, portal, kind, entity_id)
        ids = sync.request_sync(ctx, portal.id)
        return jsonify({"requested": ids, **progress(sync.sync_status(ctx, portal.id))}), 202
    return jsonify(progress(sync.sync_status(ctx, portal.id)))


def _require_actor(frame: Frame, portal, kind: str, entity_id: int, invoice=None) -> None:
    """Admins, the deal's responsible, or the responsible of the invoice (any of this tab's, if none named)."""
    access = Access(frame, portal.id)
    if access.may_act_on(None):
        return
    if invoice is not None:
        if access.may_act_on(invoice.assigned_by_id):
            return
        abort(403, description="read only")
    with get_ctx().db.session() as s:
        owners = lookups.tab_owners(s, portal.id, kind, entity_id)
    if frame.user_id not in owners:
        abort(403, description="read only")


@bp.post("/placement/api/<kind>/<int:entity_id>/assign")
@frame_required
def api_assign(kind: str, entity_id: int):
    frame, portal = _frame_for(kind, entity_id)
    body = json_body()
    op_pk, inv_id = id_field(body, "operation"), id_field(body, "invoice", bitrix=True)
    ctx = get_ctx()
    with ctx.db.session() as s:
        op = lookups.operation_of(s, portal.id, op_pk)
        inv = lookups.invoice_of(s, portal.id, inv_id)
        if op is None or not _in_tab(inv, kind, entity_id):
            abort(404)
    _require_actor(frame, portal, kind, entity_id, inv)
    if not frame.is_admin and not _offered_here(portal.id, op_pk, kind, entity_id):
        abort(403, description=_("Only an administrator can assign this payment: it was not matched to this "
                                 "deal's invoices. Ask your administrator or use the app's review queue."))
    return actions.assign(frame, portal.id, op_pk, inv_id, pay_over=actions.pay_over_field(body))


def _offered_here(portal_id: int, op_pk: int, kind: str, entity_id: int) -> bool:
    """Whether the reconciliation named one of this tab's invoices as a candidate for the payment (its current
    decision). Candidates are fixed when the payment is decided; a payer INN or invoice number edited in the
    CRM afterwards does not make a payment someone else's to take."""
    with get_ctx().db.session() as s:
        return lookups.offered_here(s, portal_id, op_pk, kind, entity_id)


@bp.post("/placement/api/<kind>/<int:entity_id>/undo")
@frame_required
def api_undo(kind: str, entity_id: int):
    frame, portal = _frame_for(kind, entity_id)
    op_pk = id_field(json_body(), "operation")
    ctx = get_ctx()
    with ctx.db.session() as s:
        if lookups.operation_of(s, portal.id, op_pk) is None:
            abort(404)
        invoices = lookups.allocated_invoices(s, portal.id, op_pk)
    mine = [i for i in invoices if _in_tab(i, kind, entity_id)]
    if not mine:
        abort(404)
    for inv in invoices:  # every invoice the payment touches, also those outside this tab
        if not _in_tab(inv, kind, entity_id) and not frame.is_admin:
            abort(403, description="the payment also pays another deal")
        _require_actor(frame, portal, kind, entity_id, inv)
    return actions.undo(frame, portal.id, op_pk)


@bp.post("/placement/api/<kind>/<int:entity_id>/link")
@frame_required
def api_link(kind: str, entity_id: int):
    """A fresh URL for the bank-link popup (the ticket in it is short-lived): administrators only."""
    frame, _portal = _frame_for(kind, entity_id)
    if not may_link(frame):
        return jsonify({"error": "forbidden", "message": _(
            "Only a Bitrix24 administrator can link a bank account. Ask your administrator.")}), 403
    return jsonify({"url": _link_url(frame)})



actions.json_errors(bp, lambda: request.path.startswith("/placement/api/"))
