"""The install page Bitrix24 opens once: verify, store, bind, then let the page call BX24.installFinish()."""
from __future__ import annotations

import logging

from flask import Blueprint, render_template, request

from b24app.adapters.bitrix.errors import BitrixError
from b24app.portals.install import InstallRejected, install, install_request_from_page
from .common import get_ctx
from .i18n import set_lang
from .security import allow_framing
from .throttle import TryLater, install_attempt

bp = Blueprint("install", __name__)
CSRF_EXEMPT = True  # Bitrix24 POSTs here cross-site; the posted token is verified with app.info instead.
log = logging.getLogger("b24app.install")


@bp.route("/install", methods=["GET", "POST"])
def install_page():
    ctx = get_ctx()
    set_lang(request.args.get("LANG"))
    if request.method == "GET":
        return render_template("install.html", ok=False, reason="open_from_bitrix24"), 400
    try:
        req = install_request_from_page(request.form, request.args)
        with install_attempt(req):
            created = install(ctx, req)
    except TryLater as exc:
        return render_template("install.html", ok=False, reason=exc.reason), exc.status, exc.headers()
    except InstallRejected as exc:
        log.warning("install rejected", extra={"reason": exc.reason,
                                                "member_id": request.form.get("member_id", "")[:64]})
        return render_template("install.html", ok=False, reason=exc.reason), 403
    except BitrixError as exc:
        log.error("install failed", extra={"code": exc.code, "member_id": request.form.get("member_id", "")[:64]})
        return render_template("install.html", ok=False, reason="bitrix_error"), 502
    allow_framing(ctx.portals.find(req.member_id), ctx.settings.bx24_js_url)  # Bitrix24 shows it in its iframe
    return render_template("install.html", ok=True, created=created,
                           bx24_js_url=ctx.settings.bx24_js_url)
