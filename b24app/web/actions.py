"""What the tab and the admin page share: reading a JSON request, and assign/undo with their answers."""
from __future__ import annotations

import logging

from flask import abort, jsonify, request
from flask_babel import gettext as _

from b24app.pipeline import reconcile
from .common import get_ctx
from .security import Frame

log = logging.getLogger("b24app.actions")


def json_errors(bp, is_api) -> None:
    """On `bp`, HTTP errors of API requests (`is_api()` true) answer JSON `{error, message}`; pages keep HTML."""

    def handler(exc):
        if is_api():
            return jsonify({"error": exc.name.lower().replace(" ", "_"), "message": exc.description}), exc.code
        return exc

    for code in (400, 401, 403, 404, 405, 503):
        bp.register_error_handler(code, handler)


def json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="JSON object expected")
    return body


OUR_ID_MAX = 2 ** 31 - 1      # our primary keys are 32-bit integers
BITRIX_ID_MAX = 2 ** 62       # Bitrix24 ids are stored as 64-bit integers


def id_field(body: dict, name: str, *, bitrix: bool = False) -> int:
    """A positive id from a JSON body (int or ASCII-digit string) that fits its column, else 400."""
    value = body.get(name)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= (BITRIX_ID_MAX if bitrix else OUR_ID_MAX):
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
        "invoice_paid": _("This invoice is already paid. To put the payment on it anyway, confirm “pay over”."),
        "unknown_action": _("Unknown action."),
        "effects_in_flight": _("The app is updating this invoice in Bitrix24 right now. Try again in a minute."),
        "reason_required": _("Say why this is not an invoice payment."),
        "no_payer_inn": _("The payer's INN is unknown: the payment cannot be kept as the client's credit."),
        "no_proposal": _("The app has no proposal for this payment."),
        "credit_in_use": _("Part of this credit is already on an invoice: undo that application first."),
        "proposal_stale": _("The proposal no longer fits: the invoices changed since. Choose an invoice."),
    }
    return texts.get(reason, _("The action was refused: %(reason)s", reason=reason))


def pay_over_field(body: dict) -> bool:
    """The explicit "pay over" confirmation: only a JSON true counts."""
    value = body.get("pay_over", False)
    if not isinstance(value, bool):
        abort(400, description="pay_over must be true or false")
    return value


def assign(frame: Frame, portal_id: int, op_pk: int, inv_id: int, *, pay_over: bool = False):
    """Assign after the caller checked ownership and rights; the JSON answer either way."""
    try:
        decision = reconcile.assign_manually(get_ctx(), portal_id, op_pk, inv_id, frame.user_id, pay_over=pay_over)
    except reconcile.ReconcileError as exc:
        return jsonify({"error": exc.reason, "message": refusal(exc.reason)}), 409
    log.info("payment assigned", extra={"member_id": frame.member_id, "operation": op_pk, "invoice": inv_id,
                                        "user_id": frame.user_id})
    return jsonify({"ok": True, "outcome": decision.outcome, "message": _("The payment has been assigned.")})


def accept(frame: Frame, portal_id: int, op_pk: int):
    """Accept the app's proposal after the caller checked ownership and rights; the JSON answer either way."""
    try:
        decision = reconcile.accept_proposal(get_ctx(), portal_id, op_pk, frame.user_id)
    except reconcile.ReconcileError as exc:
        return jsonify({"error": exc.reason, "message": refusal(exc.reason)}), 409
    log.info("proposal accepted", extra={"member_id": frame.member_id, "operation": op_pk, "user_id": frame.user_id})
    return jsonify({"ok": True, "outcome": decision.outcome, "message": _("The proposal has been accepted.")})


def not_reverted_text(kinds) -> str:
    """What an undo could not take back, as one sentence (empty when it took back everything)."""
    names = {"notify": _("the chat message"), "timeline": _("the comment in the deal timeline"),
             "task": _("the task"), "trigger": _("the automation trigger")}
    kinds = [names.get(k, k) for k in kinds or []]
    if not kinds:
        return ""
    return _("Already sent and not taken back: %(what)s.", what=", ".join(kinds))


def undo(frame: Frame, portal_id: int, op_pk: int):
    """Undo after the caller checked ownership and rights; the JSON answer either way."""
    try:
        decision = reconcile.undo(get_ctx(), portal_id, op_pk, frame.user_id)
    except reconcile.ReconcileError as exc:
        return jsonify({"error": exc.reason, "message": refusal(exc.reason)}), 409
    log.info("match undone", extra={"member_id": frame.member_id, "operation": op_pk, "user_id": frame.user_id})
    kinds = (decision.reasons[0].get("params") or {}).get("not_reverted") or []
    reopened = decision.reasons[0].get("code") == "reopened"
    message = _("The payment waits for review again.") if reopened else _("The match has been undone.")
    extra = not_reverted_text(kinds)
    return jsonify({"ok": True, "message": f"{message} {extra}".strip(), "not_reverted": kinds})


def close(frame: Frame, portal_id: int, op_pk: int, action: str, reason: str):
    """Close a review item that pays no invoice, after the caller checked ownership and rights."""
    try:
        reconcile.close_review(get_ctx(), portal_id, op_pk, frame.user_id, action, reason)
    except reconcile.ReconcileError as exc:
        return jsonify({"error": exc.reason, "message": refusal(exc.reason)}), 409
    log.info("review item closed", extra={"member_id": frame.member_id, "operation": op_pk, "action": action,
                                          "user_id": frame.user_id})
    texts = {"ignore": _("Marked as not an invoice payment."),
             "refund": _("Marked for a refund to the payer; the manager is told in chat."),
             "credit": _("Kept as the client's credit.")}
    return jsonify({"ok": True, "message": texts[action]})
