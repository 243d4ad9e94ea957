"""What the tab and the admin page share: reading a JSON request, and assign/undo with their answers."""
from __future__ import annotations

import logging

from flask import abort, jsonify, request
from flask_babel import gettext as _

from .. import reconcile
from .factory import get_ctx
from .security import Frame

log = logging.getLogger("b24app.actions")


def json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="JSON object expected")
    return body


def id_field(body: dict, name: str) -> int:
    """A positive database/Bitrix24 id from a JSON body (int or digit string), else 400."""
    value = body.get(name)
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        abort(400, description=f"{name} must be an id")
    value = int(value)
    if not 0 < value < 2 ** 62:
        abort(400, description=f"{name} must be an id")
    return value


def refusal(reason: str) -> str:
    texts = {
        "not_found": _("This payment was not found."),
        "not_in_review": _("This payment has already been matched. Refresh the tab."),
        "not_a_settled_credit": _("Only settled incoming payments can be assigned."),
        "invoice_not_found": _("This invoice was not found."),
        "currency_mismatch": _("The payment and the invoice are in different currencies."),
        "invoice_closed": _("This invoice is closed."),
        "nothing_to_undo": _("There is nothing to undo: the payment is not matched."),
    }
    return texts.get(reason, _("The action was refused: %(reason)s", reason=reason))


def assign(frame: Frame, portal_id: int, op_pk: int, inv_id: int):
    """Assign after the caller checked ownership and rights; the JSON answer either way."""
    try:
        decision = reconcile.assign_manually(get_ctx(), portal_id, op_pk, inv_id, frame.user_id)
    except reconcile.ReconcileError as exc:
        return jsonify({"error": exc.reason, "message": refusal(exc.reason)}), 409
    log.info("payment assigned", extra={"member_id": frame.member_id, "operation": op_pk, "invoice": inv_id,
                                        "user_id": frame.user_id})
    return jsonify({"ok": True, "outcome": decision.outcome, "message": _("The payment has been assigned.")})


def undo(frame: Frame, portal_id: int, op_pk: int):
    """Undo after the caller checked ownership and rights; the JSON answer either way."""
    try:
        reconcile.undo(get_ctx(), portal_id, op_pk, frame.user_id)
    except reconcile.ReconcileError as exc:
        return jsonify({"error": exc.reason, "message": refusal(exc.reason)}), 409
    log.info("match undone", extra={"member_id": frame.member_id, "operation": op_pk, "user_id": frame.user_id})
    return jsonify({"ok": True, "message": _("The match has been undone.")})
