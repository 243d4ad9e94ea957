"""Admin upload of a 1C statement file (any bank): preview, then import, on the app page's Bank tab.

Two POSTs, each an administrator's, authenticated like the page's API by the frame token (the `X-Frame-Token`
header from the script, or a `frame_token` form field from the plain form: no cookies in Bitrix24's iframe).

1. `/app/upload`: the file (multipart). Its size is refused from Content-Length before the body is read, and
   again while reading; it is checked and counted whole (`preview_statement`), nothing stored but the file
   itself, in `statement_uploads` under a random id bound to the portal and the user, for UPLOAD_TTL.
2. `/app/upload/import`: that id (and the accounts the admin confirmed as ours). The import reads the stored
   bytes again, previews them again, then stores. The browser never sends the file or the counts back, so a
   preview cannot be turned into the import of something else; only accounts the file itself names can be
   confirmed.
A script-free browser gets whole pages (upload/page.html); the script gets JSON with the same fragment.
"""
from __future__ import annotations

import logging
import re
import secrets
import tempfile
from pathlib import Path

from flask import Blueprint, abort, jsonify, render_template, request
from flask_babel import gettext as _
from markupsafe import Markup
from werkzeug.exceptions import RequestEntityTooLarge

from b24app.banklinks import tbank as banklink, files as fileaccounts
from b24app.adapters.banks.onec import human_size
from b24app.pipeline.statement_import import (
    NotOurAccounts,
    StatementImportError,
    forget_upload,
    import_statement,
    keep_upload,
    kept_upload,
    preview_statement,
)
from .actions import json_errors
from .common import app_page_portal, get_ctx
from .i18n import set_lang
from .security import FRAME_HEADER, Frame, PlacementRejected, allow_framing, read_frame_token

bp = Blueprint("upload", __name__)
CSRF_EXEMPT = True  # no cookies: the frame token (header or form field) is what a forged request cannot have
log = logging.getLogger("b24app.upload")

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields around the file
_UNSAFE = re.compile(r"[^0-9A-Za-zА-Яа-яЁё._ -]+")


class UploadRefused(Exception):
    """The request is refused with `message` for the admin (`status`); nothing was stored."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def _wants_json() -> bool:
    return bool(request.headers.get(FRAME_HEADER))


def _admin() -> tuple[Frame, object]:
    """The frame (header, else form field) of an administrator on the app page of an installed portal."""
    token = request.headers.get(FRAME_HEADER) or request.form.get("frame_token", "")
    if not token:
        abort(401, description="frame token missing")
    try:
        frame = read_frame_token(token)
    except PlacementRejected as exc:
        abort(401, description=exc.reason)
    portal = app_page_portal(frame)
    if not frame.is_admin:
        abort(403, description="only portal administrators may import statements")
    allow_framing(portal, get_ctx().settings.bx24_js_url)
    return frame, portal


def _limit() -> int:
    return get_ctx().settings.statement_max_bytes


def _too_large(size: int | None = None) -> UploadRefused:
    token = request.headers.get(FRAME_HEADER)
    if token:  # refused before _admin() ran: answer in the frame's language all the same
        try:
            set_lang(read_frame_token(token).lang)
        except PlacementRejected:
            pass
    what = human_size(size) if size else _("larger than allowed")
    return UploadRefused(_("The file is %(size)s; statement files up to %(limit)s are accepted. Export a shorter "
                           "period. Nothing was imported.", size=what, limit=human_size(_limit())), 413)


def _safe_name(name: str) -> str:
    base = _UNSAFE.sub("_", Path(name or "").name).strip(" .")[:120]
    return base or "statement.txt"


def _previewed(ctx, portal_id: int, path: Path, member_id: str, confirmed: set[str] | None):
    """(preview, candidates, to_add): the file counted with the accounts it would add. `confirmed` None = preview
    (count every addable account, the admin decides), else only the own companies' and the confirmed ones."""
    try:
        preview = preview_statement(ctx, portal_id, path)
        unknown = preview.unknown
    except NotOurAccounts as exc:
        unknown = exc.preview.unknown
    except StatementImportError as exc:
        raise UploadRefused(str(exc)) from None
    if not unknown:
        return preview, [], []
    return _with_candidates(ctx, portal_id, path, member_id, unknown, confirmed)


def _with_candidates(ctx, portal_id, path, member_id, unknown, confirmed):
    found = fileaccounts.candidates(unknown, banklink.own_company_inns(ctx, member_id))
    adding = [c for c in found if c.addable] if confirmed is None else fileaccounts.to_add(found, confirmed)
    try:
        preview = preview_statement(ctx, portal_id, path, adding=tuple(c.number for c in adding))
    except NotOurAccounts as exc:  # nothing ours, nothing that could be added (preview) or was confirmed (import)
        if confirmed is None:
            raise UploadRefused(str(exc)) from None
        raise UploadRefused(_("%(file)s is a statement of account(s) %(accounts)s, none of which is this "
                              "portal's, and none was confirmed as ours: nothing imported.",
                              file=path.name, accounts=", ".join(exc.preview.accounts))) from None
    except StatementImportError as exc:
        raise UploadRefused(str(exc)) from None
    return preview, found, adding


def _fragment(status: int = 200, **kw):
    html = render_template("upload/_result.html", **kw)
    if _wants_json():
        error = kw.get("error")
        return jsonify({"html": html, "error": error, "upload": kw.get("upload_id"),
                        "new": kw["preview"].new if kw.get("preview") else None}), status
    return render_template("upload/page.html", body=Markup(html)), status


def _refused(exc: UploadRefused):
    return _fragment(exc.status, error=exc.message)


def init_app(app) -> None:
    """Before any other hook reads the body (security.hostile_input parses forms): the upload's own size limit."""

    @app.before_request
    def _upload_limit():
        if request.endpoint != "upload.upload":
            return None
        ceiling = _limit() + FORM_OVERHEAD
        if request.content_length is not None and request.content_length > ceiling:
            _admin_from_header_only()
            return _refused(_too_large(request.content_length))  # refused before one byte of the body is read
        request.max_content_length = ceiling  # a body without Content-Length is cut off while streaming
        return None


@bp.post("/app/upload")
def upload():
    ctx = get_ctx()
    frame, portal = _admin()
    file = request.files.get("file")
    if file is None or not file.filename:
        return _refused(UploadRefused(_("Choose a 1C statement file (kl_to_1c.txt) to upload.")))
    data = file.stream.read(_limit() + 1)
    if len(data) > _limit():
        return _refused(_too_large(len(data)))
    name = _safe_name(file.filename)
    try:
        with tempfile.TemporaryDirectory(prefix="b24app-upload-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            preview, found, adding = _previewed(ctx, portal.id, path, portal.member_id, None)
    except UploadRefused as exc:
        log.info("statement upload refused", extra={"member_id": portal.member_id, "user_id": frame.user_id})
        return _refused(exc)
    upload_id = secrets.token_urlsafe(24)
    keep_upload(ctx, portal.id, frame.user_id, name, data, upload_id)
    log.info("statement previewed", extra={"member_id": portal.member_id, "user_id": frame.user_id,
                                           "incoming": preview.incoming, "new": preview.new})
    return _fragment(preview=preview, candidates=found, adding={c.number for c in adding}, upload_id=upload_id,
                     frame_token=request.headers.get(FRAME_HEADER) or request.form.get("frame_token", ""))


def _admin_from_header_only() -> None:
    """A body too large to read: the caller must at least carry an admin's frame token in the header, or the
    refusal says nothing beyond the limit (the plain form's token is in the body we do not read)."""
    if request.headers.get(FRAME_HEADER):
        _admin()


@bp.post("/app/upload/import")
def import_upload():
    ctx = get_ctx()
    frame, portal = _admin()
    upload_id = request.form.get("upload", "")[:64]
    confirmed = set(request.form.getlist("confirm")[:50])
    kept = kept_upload(ctx, portal.id, frame.user_id, upload_id)
    if kept is None:
        return _refused(UploadRefused(_("This preview has expired or is not yours: upload the file again. "
                                        "Nothing was imported."), 404))
    name, data = kept
    try:
        with tempfile.TemporaryDirectory(prefix="b24app-upload-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            _preview, found, adding = _previewed(ctx, portal.id, path, portal.member_id, confirmed)
            added = fileaccounts.add_file_accounts(ctx, portal.id, frame.user_id, adding) if adding else []
            result = import_statement(ctx, portal.id, path)
    except UploadRefused as exc:
        return _refused(exc)
    except StatementImportError as exc:
        return _refused(UploadRefused(str(exc), 409))
    forget_upload(ctx, upload_id)
    log.info("statement imported", extra={"member_id": portal.member_id, "user_id": frame.user_id,
                                          "new": result.new, "known": result.known, "accounts_added": len(added)})
    return _fragment(preview=result, added=[c.number for c in adding], imported=True)


json_errors(bp, _wants_json)  # the script's 401/403 answer JSON {error, message}; the plain form keeps pages


@bp.errorhandler(RequestEntityTooLarge)
def _body_too_large(_exc):
    return _refused(_too_large())


def sources_for_template():
    """Jinja helpers for the admin page's source list (the deal tab's bank labels come with its read model)."""
    from b24app.queries.account_sources import account_sources

    def sources(member_id: str):
        portal = get_ctx().portals.find(member_id)
        if portal is None:
            return []
        with get_ctx().db.session() as s:
            return account_sources(s, portal.id)

    return {"account_sources": sources, "upload_limit": lambda: human_size(_limit())}


@bp.record_once
def _globals(state):
    state.app.jinja_env.globals.update(sources_for_template())
