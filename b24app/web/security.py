"""Who is calling: placement POSTs verified once, then a short-lived signed frame token; framing policy."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from functools import wraps
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import abort, current_app, g, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from b24app.adapters.bitrix.client import as_dict, call_with_token
from b24app.adapters.bitrix.errors import BitrixError
from b24app.adapters.bitrix.query import build_query
from .i18n import pick_lang

FRAME_TOKEN_TTL = 30 * 60
FRAME_MAX_AGE = 8 * 3600  # since Bitrix24 last vouched for the user: then the tab must be opened again
FRAME_SALT = "b24app.frame.v1"
FRAME_HEADER = "X-Frame-Token"
AUTH_COMMANDS = ("user", "admin", "app")


@dataclass(frozen=True)
class Frame:
    """The verified identity behind a widget request."""

    member_id: str
    user_id: int
    is_admin: bool
    placement: str
    entity_id: int | None
    lang: str
    owner_id: int | None = None  # the deal's responsible user, read with the verifying call
    tz: str | None = None
    verified_at: float | None = None  # when Bitrix24 vouched for user, admin flag and owner (unix seconds)

    def to_payload(self) -> dict:
        return {"m": self.member_id, "u": self.user_id, "a": self.is_admin, "p": self.placement,
                "e": self.entity_id, "l": self.lang, "o": self.owner_id, "z": self.tz, "v": self.verified_at}

    @classmethod
    def from_payload(cls, d: dict) -> "Frame":
        entity = d.get("e")
        owner = d.get("o")
        verified = d.get("v")
        return cls(str(d["m"]), int(d["u"]), bool(d["a"]), str(d["p"]),
                   int(entity) if entity is not None else None, pick_lang(d.get("l")),
                   int(owner) if owner is not None else None, d.get("z") or None,
                   float(verified) if verified is not None else None)


@dataclass
class VerifiedPlacement:
    """A placement POST that passed: the frame, the stored portal, and the extra batch results."""

    frame: Frame
    portal: Any
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)
    user: dict = field(default_factory=dict)


class PlacementRejected(Exception):
    """A placement POST or frame token that must not be served; `reason` names the failed guard."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=FRAME_SALT)


def issue_frame_token(frame: Frame) -> str:
    """Sign `frame`; a frame that does not say when it was verified is taken as verified now."""
    if frame.verified_at is None:
        frame = replace(frame, verified_at=time.time())
    return _serializer().dumps(frame.to_payload())


def read_frame_token(token: str, max_age: int = FRAME_TOKEN_TTL) -> Frame:
    """The frame a token names, for a request that carries it in a form field (the statement upload's plain form)."""
    return _read(token, max_age)[0]


def _read(token: str, max_age: int) -> tuple[Frame, float]:
    """The frame and when its token was signed. Refused: a bad signature, a token older than `max_age`,
    and a frame Bitrix24 vouched for longer than FRAME_MAX_AGE ago, however often its token was renewed."""
    try:
        payload, ts = _serializer().loads(token, max_age=max_age, return_timestamp=True)
        frame, issued = Frame.from_payload(payload), ts.timestamp()
    except SignatureExpired as exc:
        raise PlacementRejected("frame_token_expired") from exc
    except (BadSignature, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlacementRejected("frame_token_invalid") from exc
    verified = frame.verified_at if frame.verified_at is not None else issued
    if not time.time() - verified <= FRAME_MAX_AGE:  # also refuses NaN
        raise PlacementRejected("frame_reverify")
    return replace(frame, verified_at=verified), issued


def placement_entity(form) -> int | None:
    """The CRM item id from PLACEMENT_OPTIONS (a JSON string), or None."""
    try:
        options = json.loads(form.get("PLACEMENT_OPTIONS") or "{}")
    except (ValueError, RecursionError):
        return None
    entity = options.get("ID") if isinstance(options, dict) else None
    text = str(entity if entity is not None else "")
    return int(text) if text.isdigit() and len(text) < 19 else None


ExtraCommands = Callable[[Any, int | None], dict[str, tuple[str, dict]]]


def verify_placement(ctx, extra: ExtraCommands | None = None) -> VerifiedPlacement:
    """Check Bitrix24's placement POST with ONE batch call on the stored portal: the posted AUTH_ID must be
    our app's token for this member_id and name a real user. `extra(portal, entity_id)` adds read commands
    (their results come back in `.results`, their failures in `.errors`) so a render costs one REST call."""
    form = request.form
    member_id = form.get("member_id", "")
    auth_id = form.get("AUTH_ID", "")
    if not member_id or not auth_id or len(member_id) > 64 or len(auth_id) > 256:
        raise PlacementRejected("missing_fields")
    portal = ctx.portals.find(member_id)
    if portal is None or portal.status != "installed":
        raise PlacementRejected("unknown_portal")
    entity = placement_entity(form)
    cmd: dict[str, str] = {"user": "user.current", "admin": "user.admin", "app": "app.info"}
    for key, (method, params) in (extra(portal, entity) if extra else {}).items():
        cmd[key] = f"{method}?{build_query(params)}" if params else method
    moved: list[str] = []
    try:
        # Only ever the stored endpoint: DOMAIN in the request is not trusted. A renamed portal answers
        # there with a redirect to its new address, which is followed (as the worker's client does).
        result = call_with_token(ctx.http, portal.client_endpoint, auth_id, "batch", {"halt": 0, "cmd": cmd},
                                 on_moved=moved.append)
    except BitrixError as exc:
        raise PlacementRejected("invalid_auth") from exc
    result = result if isinstance(result, dict) else {}
    res = as_dict(result.get("result"))
    errors = as_dict(result.get("result_error"))
    if any(key in errors for key in AUTH_COMMANDS):
        raise PlacementRejected("invalid_auth")
    # A portal's app.info names the app by CODE only (api-reference/common/system/app-info.md; client_id and
    # the install block come from the OAuth server alone). The token is one the stored portal accepted, so the
    # member_id is the posted one; CODE must be ours, and a missing CODE is a refusal.
    app_info = res.get("app") if isinstance(res.get("app"), dict) else {}
    if not app_info.get("CODE") or app_info["CODE"] != (ctx.settings.bitrix_app_code or ctx.settings.bitrix_client_id):
        raise PlacementRejected("foreign_app")
    user = res.get("user") if isinstance(res.get("user"), dict) else {}
    if not str(user.get("ID") or "").isdigit():
        raise PlacementRejected("invalid_auth")
    if moved:  # verified at the new address: remember it, and frame for the portal's new origin
        ctx.portals.moved(member_id, moved[-1])
        portal = ctx.portals.find(member_id) or portal
    admin = res.get("admin")
    lang = pick_lang(request.args.get("LANG") or form.get("LANG"), portal.lang)
    frame = Frame(member_id=member_id, user_id=int(user["ID"]), is_admin=admin is True or admin in ("Y", 1, "1"),
                  placement=(form.get("PLACEMENT") or "DEFAULT")[:64], entity_id=entity, lang=lang,
                  tz=_tz(user.get("TIME_ZONE")), verified_at=time.time())
    extra_results = {k: v for k, v in res.items() if k not in AUTH_COMMANDS}
    extra_errors = {k: v for k, v in errors.items() if k not in AUTH_COMMANDS}
    return VerifiedPlacement(frame=frame, portal=portal, results=extra_results, errors=extra_errors, user=user)


def _tz(name) -> str | None:
    if not isinstance(name, str) or not name or len(name) > 64:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def frame_required(view):
    """For the widget's JSON API: the frame token comes in a header (no cookies in a cross-site iframe).
    A token past half its life is renewed in the response's `X-Frame-Token` header, but only within
    FRAME_MAX_AGE of Bitrix24's check: then 401 `frame_reverify`, and the tab asks to be opened again (a user
    demoted or removed meanwhile loses the rights the frame carried)."""

    @wraps(view)
    def wrapper(*a, **kw):
        token = request.headers.get(FRAME_HEADER) or ""
        if not token:
            abort(401, description="frame token missing")
        try:
            g.frame, issued = _read(token, FRAME_TOKEN_TTL)
        except PlacementRejected as exc:
            abort(401, description=exc.reason)
        if time.time() - issued > FRAME_TOKEN_TTL / 2:
            g.renewed_frame_token = issue_frame_token(g.frame)  # keeps verified_at: renewal never extends it
        return view(*a, **kw)

    return wrapper


def portal_origin(client_endpoint: str) -> str:
    parts = urlsplit(client_endpoint)
    return f"{parts.scheme}://{parts.netloc}"


def script_origin(url: str) -> str:
    """The CSP source for a script URL: `//api.bitrix24.com/api/v1/` -> `https://api.bitrix24.com`."""
    if not url:
        return ""
    parts = urlsplit(url if "://" in url else ("https:" + url if url.startswith("//") else url))
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""


def allow_framing(portal, bx24_js_url: str = "") -> None:
    """This response may be framed by `portal` only, and may load the BX24 script."""
    g.frame_origin = portal_origin(portal.client_endpoint)
    src = script_origin(bx24_js_url)
    if src:
        g.script_src = src


def csp_nonce() -> str:
    """Per-response nonce for the few inline scripts (e.g. BX24.installFinish on the install page)."""
    if "csp_nonce" not in g:
        import secrets
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


MAX_JSON_DEPTH = 64
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def json_depth(body: bytes | str) -> int | None:
    """Deepest nesting of a JSON text (`[]` is 1, a scalar 0), or None when it is not JSON. The C scanner reads
    it in one linear pass (strings and escapes included) and raises RecursionError when it nests past the
    interpreter's limit; the walk after it is iterative and stops one level past MAX_JSON_DEPTH."""
    return _inspect_json(body)[0]


def _inspect_json(body: bytes | str) -> tuple[int | None, bool]:
    """(depth as json_depth counts it, whether any key or string holds a NUL character)."""
    try:
        doc = json.loads(body)
    except RecursionError:
        return MAX_JSON_DEPTH + 1, False
    except ValueError:
        return None, False
    deepest, nul, stack = 0, False, [(doc, 0)]
    while stack and deepest <= MAX_JSON_DEPTH:
        node, depth = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, depth + 1)
            nul = nul or any("\x00" in k for k in node)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, str):
            nul = nul or "\x00" in node
    return deepest, nul


def _has_nul(multidict) -> bool:
    return any("\x00" in k or "\x00" in v for k, v in multidict.items(multi=True) if isinstance(v, str))


def hostile_input() -> str | None:
    """Why this request must be refused before any view reads it, or None.
    - A NUL character in a query or form value, or a JSON string: PostgreSQL refuses it in text (a 500), and no
      Bitrix24, T-Bank or browser field carries one.
    - A non-form body nested deeper than MAX_JSON_DEPTH: json.loads recurses (a RecursionError is a 500), whatever
      the Content-Type says (the bank webhook parses its body as JSON regardless)."""
    if _has_nul(request.args):
        return "NUL character in the query string"
    if request.method not in ("POST", "PUT", "PATCH"):
        return None
    if request.mimetype in FORM_TYPES:
        return "NUL character in a form field" if _has_nul(request.form) else None
    depth, nul = _inspect_json(request.get_data(cache=True))
    if depth is not None and depth > MAX_JSON_DEPTH:
        return "JSON nested too deeply"
    return "NUL character in a JSON string" if nul else None


def init_app(app) -> None:
    app.jinja_env.globals["csp_nonce"] = csp_nonce

    @app.before_request
    def _refuse_hostile_input():
        reason = hostile_input()
        if reason:
            return {"error": "bad_request", "message": reason}, 400

    @app.after_request
    def _headers(resp):
        # Frameable only by the portal that opened the widget (set per view via g.frame_origin).
        origin = g.get("frame_origin")
        ancestors = origin if origin else "'none'"
        script_src = f"'self' {g.get('script_src', '')}".strip()
        if "csp_nonce" in g:  # the page rendered an inline script with this nonce
            script_src += f" 'nonce-{g.csp_nonce}'"
        form_action = f"'self' {g.get('form_action', '')}".strip()
        resp.headers.setdefault(
            "Content-Security-Policy",
            f"default-src 'self'; script-src {script_src}; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data:; connect-src 'self'; frame-ancestors {ancestors}; base-uri 'none'; "
            f"object-src 'none'; form-action {form_action}")
        if not origin:
            resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if request.endpoint != "static":
            # Every answer but a static file carries one portal's data (or a token): no cache, shared or
            # private, may keep it, and whatever varies by frame token must never be served across tokens.
            resp.headers.setdefault("Cache-Control", "no-store")
            resp.vary.add(FRAME_HEADER)
        renewed = g.get("renewed_frame_token")
        if renewed:
            resp.headers[FRAME_HEADER] = renewed
        return resp
