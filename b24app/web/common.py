"""What every page of the web layer shares: the app context, CSRF, the bank-link ticket, the texts the page
scripts show and the sync progress bar. Imports no blueprint, so the blueprints need not import each other
(only `tochka` reuses the link pages of `bank`)."""
from __future__ import annotations

from flask import abort, current_app
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFProtect
from itsdangerous import URLSafeTimedSerializer

from ..context import AppContext
from .i18n import set_lang
from .security import Frame

csrf = CSRFProtect()
TICKET_SALT = "b24app.adapters.banks-link.v1"


def get_ctx() -> AppContext:
    return current_app.extensions["b24app"]


def link_tickets() -> URLSafeTimedSerializer:
    """Signs and reads the bank-link tickets (their own salt: a ticket is no frame token)."""
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=TICKET_SALT)


def issue_link_ticket(frame: Frame) -> str:
    """A short-lived signed ticket for the popup: which portal and user started the link (callers issue
    it to administrators only; /bank/start and /bank/token refuse any other)."""
    return link_tickets().dumps({"m": frame.member_id, "u": frame.user_id, "a": frame.is_admin, "l": frame.lang})


def may_link(frame: Frame) -> bool:
    """Payments into a linked account mark the portal's invoices paid: linking is for administrators only
    (a deal's responsible could otherwise watch an account of their own)."""
    return frame.is_admin


def js_texts() -> dict:
    """Strings the page script shows, in the user's language."""
    return {
        "checking": _("Checking the bank…"), "checked": _("The bank has been checked."),
        "check_failed": _("The bank could not be checked: %(error)s", error="{error}"),
        "check_timeout": _("The bank is taking longer than usual; the tab will update when it answers."),
        "expired": _("This tab has been open too long. Reopen it to continue."), "reload": _("Reload the tab"),
        "forbidden": _("You can only view this deal: ask its responsible person or an administrator."),
        "failed": _("Something went wrong. Please try again."),
        "assigned": _("The payment has been assigned."), "undone": _("The match has been undone."),
        "confirm_undo": _("Undo this match? The invoice will go back to awaiting payment."),
        "popup_blocked": _("Allow pop-up windows for this page to link the bank."),
        "linking": _("Finish linking the bank in the window that has opened."),
        "saved": _("Saved."), "choose_invoice": _("Choose an invoice"),
        "confirm_pay_over": _("This invoice is paid already: tick “pay over” to put the payment on it anyway."),
        "updated": _("Updated"), "nothing_found": _("Nothing found."),
        "unlinked": _("T-Bank is unlinked: the app no longer reads the statement."),
        "loaded": _("The statement is loaded: %(n)s new operations.", n="{n}"),
    }


def progress(status: dict) -> dict:
    """Sync status reduced to what a progress bar needs."""
    accounts = [a for a in (status or {}).get("accounts", []) if a.get("watched", True)]
    pending = [a for a in accounts if a.get("pending") or a.get("running")]
    errors = [a["last_error"] for a in accounts if a.get("last_error")]
    total = len(accounts)
    return {"accounts": total, "pending": len(pending), "done": total - len(pending),
            "percent": 100 if not total else round(100 * (total - len(pending)) / total),
            "errors": errors[:3], "finished": not pending}


def app_page_portal(frame: Frame):
    """The installed portal of a frame opened on the app page (not a tab), with the request in the frame's
    language; 403/401 otherwise."""
    if frame.placement != "DEFAULT":
        abort(403, description="open the app page to use this")
    portal = get_ctx().portals.find(frame.member_id)
    if portal is None or portal.status != "installed":
        abort(401, description="portal not installed")
    set_lang(frame.lang)
    return portal
