"""Bitrix24 event handlers: verify `application_token` in constant time, record, answer at once."""
from __future__ import annotations

import logging
import re
from datetime import datetime, timezone

from flask import Blueprint, jsonify, request

from .eventdata import parse_nested_form
from b24app.portals.install import InstallRejected, lifecycle_event
from b24app.pipeline.invoices import queue_refresh
from .common import get_ctx
from .throttle import TryLater, install_attempt

bp = Blueprint("events", __name__, url_prefix="/events")
CSRF_EXEMPT = True  # server-to-server; application_token is the credential
log = logging.getLogger("b24app.events")
ENTITY_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only, and within a database integer
UNIX_TS = re.compile(r"[0-9]{9,10}")
USER_ID = re.compile(r"[1-9][0-9]{0,8}")


def _payload() -> dict:
    try:
        return parse_nested_form(request.form.items(multi=True))
    except ValueError as exc:
        raise InstallRejected("malformed", str(exc)) from exc


def _refuse(status: int, reason: str):
    return jsonify({"error": reason}), status


@bp.post("/app")
def app_lifecycle():
    ctx = get_ctx()
    try:
        body = _payload()
    except InstallRejected as exc:
        return _refuse(400, exc.reason)
    try:
        status, answer = lifecycle_event(ctx, body, attempt=install_attempt)
    except TryLater as exc:
        log.warning("lifecycle event deferred", extra={"event": str(body.get("event", "")).upper(),
                                                       "reason": exc.reason, "member_id": _member_id(body)})
        return jsonify({"error": exc.reason}), exc.status, exc.headers()
    return jsonify(answer), status


def _member_id(body: dict) -> str:
    auth = body.get("auth") if isinstance(body.get("auth"), dict) else {}
    return auth.get("member_id") if isinstance(auth.get("member_id"), str) else ""


def _event_stamp(body: dict, auth: dict) -> tuple[datetime | None, int | None]:
    """When and by whom: the event's `ts` (unix seconds, api-reference/events/index.md) and `auth[user_id]`
    (the acting user; absent when a robot or workflow made the change, _includes/auth-params-in-events.md).
    Anything odd gives (None, None): the change is re-read."""
    ts, user = body.get("ts"), auth.get("user_id")
    if not (isinstance(ts, str) and UNIX_TS.fullmatch(ts) and isinstance(user, str) and USER_ID.fullmatch(user)):
        return None, None
    return datetime.fromtimestamp(int(ts), tz=timezone.utc), int(user)


@bp.post("/crm")
def crm_changed():
    """Invoice or deal changed in Bitrix24: queue a re-read (the event is a hint, REST is the truth)."""
    ctx = get_ctx()
    try:
        body = _payload()
    except InstallRejected as exc:
        return _refuse(400, exc.reason)
    auth = body.get("auth") if isinstance(body.get("auth"), dict) else {}
    member_id = auth.get("member_id") if isinstance(auth.get("member_id"), str) else ""
    if not ctx.portals.application_token_matches(member_id, auth.get("application_token")):
        return _refuse(401, "invalid_application_token")
    event = str(body.get("event", "")).upper()
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    fields = data.get("FIELDS") if isinstance(data.get("FIELDS"), dict) else {}
    entity_id = fields.get("ID")
    if not isinstance(entity_id, str) or not ENTITY_ID.fullmatch(entity_id):
        return _refuse(400, "malformed")
    if event.startswith("ONCRMDYNAMICITEM"):
        if str(fields.get("ENTITY_TYPE_ID", "")) != "31":
            return jsonify({"ok": True, "ignored": "not a smart invoice"})
        echo = _event_stamp(body, auth) if event.startswith("ONCRMDYNAMICITEMUPDATE") else (None, None)
        queue_refresh(ctx, member_id, "invoice", int(entity_id), event_ts=echo[0], event_user=echo[1])
    elif event.startswith("ONCRMDEAL"):
        # ONCRMDEALUPDATE carries only FIELDS[ID] (crm/deals/events/on-crm-deal-update.md): what changed is not
        # said; the stamp lets the worker tell the echo of our own stage move (invoices._own_deal_echoes).
        echo = _event_stamp(body, auth) if event == "ONCRMDEALUPDATE" else (None, None)
        queue_refresh(ctx, member_id, "deal", int(entity_id), event_ts=echo[0], event_user=echo[1])
    else:
        return _refuse(400, "unknown_event")
    return jsonify({"ok": True})
