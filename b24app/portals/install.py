"""Install, update and uninstall: verify what Bitrix24 posts, store the portal, bind what the manifest lists."""
from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, replace

from b24app.adapters.bitrix.client import BitrixClient, PortalCredentials, call_with_token
from b24app.adapters.bitrix.errors import (
    AccessDenied,
    BitrixError,
    ExpiredToken,
    InvalidGrant,
    InvalidToken,
    PortalGone,
)
from b24app.context import AppContext
from .store import InstallData, domain_of

log = logging.getLogger("b24app.install")


class InstallRejected(Exception):
    """An install or lifecycle request that must not change anything; `reason` names the failed guard."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class InstallRequest:
    """The fields Bitrix24 sends to the install page (form) or with ONAPPINSTALL (auth[...]).

    `domain` is only compared with what the OAuth server says; `PROTOCOL` is not kept at all: the portal's
    REST address comes from the OAuth server's `app.info`, never from the request."""

    member_id: str
    domain: str
    access_token: str
    refresh_token: str
    expires_in: int
    server_endpoint: str
    application_token: str | None
    lang: str = "ru"
    scope: str | None = None
    user_id: int | None = None


REQUIRED_INSTALL_FIELDS = ("AUTH_ID", "REFRESH_ID", "member_id", "SERVER_ENDPOINT")


def install_request_from_page(form, args) -> InstallRequest:
    """Parse the install page POST (body) and its query string (DOMAIN, LANG)."""
    missing = [f for f in REQUIRED_INSTALL_FIELDS if not form.get(f)]
    domain = args.get("DOMAIN") or form.get("DOMAIN")
    if not domain:
        missing.append("DOMAIN")
    if missing:
        raise InstallRejected("missing_fields", ", ".join(missing))
    return InstallRequest(
        member_id=form["member_id"], domain=domain, access_token=form["AUTH_ID"], refresh_token=form["REFRESH_ID"],
        expires_in=_int(form.get("AUTH_EXPIRES"), 3600), server_endpoint=form["SERVER_ENDPOINT"],
        application_token=form.get("APPLICATION_TOKEN") or None, lang=(args.get("LANG") or "ru")[:2],
        scope=form.get("APPLICATION_SCOPE") or None)


def install_request_from_event(auth: dict, data: dict) -> InstallRequest:
    """Parse ONAPPINSTALL / ONAPPUPDATE `auth[...]`, which carries tokens (both events also the refresh token)."""
    missing = [f for f in ("access_token", "member_id", "server_endpoint", "domain") if not auth.get(f)]
    if missing:
        raise InstallRejected("missing_fields", ", ".join("auth[%s]" % m for m in missing))
    odd = [k for k, v in auth.items() if not isinstance(v, str)] + [k for k, v in data.items() if not isinstance(v, str)]
    if odd:
        raise InstallRejected("malformed", "nested values in " + ", ".join(sorted(odd)[:5]))
    return InstallRequest(
        member_id=auth["member_id"], domain=auth["domain"], access_token=auth["access_token"],
        refresh_token=auth.get("refresh_token") or "", expires_in=_int(auth.get("expires_in"), 3600),
        server_endpoint=auth["server_endpoint"], application_token=auth.get("application_token") or None,
        lang=(data.get("LANGUAGE_ID") or "ru")[:2], scope=auth.get("scope"), user_id=_int(auth.get("user_id"), None))


@dataclass(frozen=True)
class Verified:
    """What the OAuth server and the portal said about a posted token."""

    client_endpoint: str  # the portal's REST address, from the OAuth server's app.info
    domain: str
    user_id: int | None


def verify(ctx: AppContext, req: InstallRequest) -> Verified:
    """Prove the posted token is ours, belongs to the posted portal and to one of its administrators.

    The OAuth server's `app.info` (only a configured server, never a host from the request) names the app
    (`client_id`) and the installation (`install.member_id`, `install.domain`, `install.client_endpoint`);
    every field must be there. Then `user.admin` with the same token on that portal: every user who opens the
    app gets a valid token of ours (settings/oauth/simple-way.md), only an administrator may install."""
    oauth_rest = ctx.trusted_oauth_server(req.server_endpoint)
    if oauth_rest is None:
        raise InstallRejected("untrusted_server", req.server_endpoint)
    try:
        info = call_with_token(ctx.http, oauth_rest, req.access_token, "app.info")
    except BitrixError as exc:
        raise InstallRejected("invalid_token", exc.code) from exc
    if not isinstance(info, dict):
        raise InstallRejected("invalid_token", "app.info answered without a result")
    install = info.get("install") if isinstance(info.get("install"), dict) else {}
    if not install.get("member_id") or install["member_id"] != req.member_id:
        raise InstallRejected("member_mismatch", "the token belongs to another portal")
    if info.get("client_id") != ctx.settings.bitrix_client_id:
        raise InstallRejected("foreign_app", "the token was issued to another application")
    domain = install.get("domain")
    if not isinstance(domain, str) or not domain or domain != req.domain:
        raise InstallRejected("domain_mismatch", "the token belongs to another domain")
    endpoint = install.get("client_endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        # Docs are silent on whether the OAuth server's app.info carries client_endpoint; Bitrix24 cloud
        # portals answer on HTTPS only.
        endpoint = f"https://{domain}/rest/"
    if domain_of(endpoint) != domain:
        raise InstallRejected("domain_mismatch", "app.info names another address")
    try:
        admin = call_with_token(ctx.http, endpoint, req.access_token, "user.admin")
    except (InvalidToken, AccessDenied, ExpiredToken) as exc:
        raise InstallRejected("invalid_token", exc.code) from exc
    if admin is not True:
        raise InstallRejected("not_admin", "only a portal administrator may install or update the app")
    return Verified(client_endpoint=endpoint, domain=domain, user_id=_int(info.get("user_id"), req.user_id))


def installation_alive(ctx: AppContext, member_id: str) -> bool:
    """Whether the installation we store still works: its own tokens still reach the portal.

    Bitrix24 revokes an app's tokens when it is uninstalled (api-reference/common/events/on-app-uninstall.md)
    and its OAuth server then refuses their refresh with `invalid_client` (settings/oauth/error-codes.md).
    Anything else (a network failure, a 5xx) is no answer: the BitrixError propagates."""
    try:
        ctx.bitrix(member_id).call("app.info")
    except (InvalidToken, PortalGone, InvalidGrant):
        return False
    return True


def _check_takeover(ctx: AppContext, req: InstallRequest) -> None:
    """An installed portal's tokens and application token are replaced only by the same installation (its
    application_token) or after the installation we know has verifiably gone (uninstalled, ONAPPUNINSTALL lost)."""
    portal = ctx.portals.find(req.member_id)
    if portal is None or portal.status != "installed":
        return
    if portal.application_token_hash is None or ctx.portals.application_token_matches(req.member_id,
                                                                                      req.application_token):
        return  # the same installation (or one whose install page carried no application_token yet)
    if installation_alive(ctx, req.member_id):
        raise InstallRejected("already_installed", "the portal's installation is still in use")


def install(ctx: AppContext, req: InstallRequest) -> bool:
    """Verify, bind, then store. Returns True when the portal is new. Raises before any write."""
    if not req.refresh_token:
        raise InstallRejected("missing_fields", "refresh token")
    verified = verify(ctx, req)
    _check_takeover(ctx, req)
    pending = PendingCredentials(PortalCredentials(
        member_id=req.member_id, client_endpoint=verified.client_endpoint, server_endpoint=req.server_endpoint,
        access_token=req.access_token, refresh_token=req.refresh_token), req.expires_in)
    bind(ctx, req.member_id, BitrixClient(req.member_id, pending, ctx.bitrix_app, ctx.http, ctx.pacer))
    creds = pending.current
    _, created = ctx.portals.save_install(InstallData(
        member_id=req.member_id, domain=domain_of(creds.client_endpoint), client_endpoint=creds.client_endpoint,
        server_endpoint=creds.server_endpoint, access_token=creds.access_token, refresh_token=creds.refresh_token,
        expires_in=pending.expires_in, application_token=req.application_token, scope=req.scope, lang=req.lang,
        user_id=verified.user_id, version=ctx.manifest.version, bindings_version=ctx.bindings_signature))
    log.info("portal installed", extra={"member_id": req.member_id, "new_portal": created})
    return created


def update(ctx: AppContext, req: InstallRequest) -> None:
    """ONAPPUPDATE with an application_token we do not know (the update issues a new one,
    api-reference/common/events/on-app-update.md): accepted from an administrator's verified token only,
    and stored once the bindings are right."""
    portal = ctx.portals.find(req.member_id)
    if portal is None or portal.status != "installed":
        raise InstallRejected("unknown_portal", "the portal is not installed")
    if not req.application_token:
        raise InstallRejected("missing_fields", "auth[application_token]")
    verify(ctx, req)
    bind(ctx, req.member_id)
    ctx.portals.set_application_token(req.member_id, req.application_token)


class PendingCredentials:
    """A CredentialStore that keeps a not-yet-stored installation's tokens in memory (install binds first)."""

    def __init__(self, creds: PortalCredentials, expires_in: int):
        self.current, self.expires_in = creds, expires_in

    def load(self, member_id: str) -> PortalCredentials:
        return self.current

    def refresh(self, member_id: str, stale: PortalCredentials, grant) -> PortalCredentials:
        if stale.generation == self.current.generation:
            new = grant(self.current)
            self.current = replace(self.current, access_token=new.access_token, refresh_token=new.refresh_token,
                                   client_endpoint=new.client_endpoint or self.current.client_endpoint,
                                   generation=self.current.generation + 1)
            self.expires_in = new.expires_in
        return self.current

    def moved(self, member_id: str, client_endpoint: str) -> None:
        self.current = replace(self.current, client_endpoint=client_endpoint)


def bind(ctx: AppContext, member_id: str, client: BitrixClient | None = None) -> dict:
    """Make the portal's placements, events and triggers exactly what the manifest lists (idempotent).
    With `client` (an installation not stored yet) the caller records the bindings when it stores it."""
    stored = client is None
    client = client or ctx.bitrix(member_id)
    m = ctx.manifest
    current = client.batch({"placements": ("placement.get", {}), "events": ("event.get", {}),
                            "triggers": ("crm.automation.trigger.list", {})})
    placements = current.results.get("placements") or []
    events = current.results.get("events") or []
    triggers = current.results.get("triggers") or []
    wanted_p = {(p.placement, ctx.public_url(p.path)): p for p in m.placements}
    wanted_e = {(e.event.upper(), ctx.public_url(e.path)) for e in m.events}
    have_p = {(p.get("placement"), p.get("handler")) for p in placements if isinstance(p, dict)}
    have_e = {(str(e.get("event", "")).upper(), e.get("handler")) for e in events if isinstance(e, dict)}
    # placement.get / event.get list only this application's handlers, so anything not wanted is ours and
    # stale (an older path, or an older B24APP_PUBLIC_URL host).
    cmds: dict[str, tuple[str, dict]] = {}
    for placement, handler in sorted(have_p - set(wanted_p)):
        if handler:
            cmds[f"unbind_p_{len(cmds)}"] = ("placement.unbind", {"PLACEMENT": placement, "HANDLER": handler})
    for event, handler in sorted(have_e - wanted_e):
        if handler:
            cmds[f"unbind_e_{len(cmds)}"] = ("event.unbind", {"event": event, "handler": handler})
    for key in sorted(set(wanted_p) - have_p):
        spec = wanted_p[key]
        cmds[f"bind_p_{len(cmds)}"] = ("placement.bind", {
            "PLACEMENT": spec.placement, "HANDLER": key[1], "TITLE": spec.title.get("ru", ""),
            "LANG_ALL": {lang: {"TITLE": title} for lang, title in spec.title.items()}})
    for event, handler in sorted(wanted_e - have_e):
        cmds[f"bind_e_{len(cmds)}"] = ("event.bind", {"event": event, "handler": handler})
    have_t = {t.get("CODE") for t in triggers if isinstance(t, dict)}
    for trig in m.automation_triggers:
        if trig["code"] not in have_t:
            cmds[f"trigger_{len(cmds)}"] = ("crm.automation.trigger.add",
                                            {"CODE": trig["code"], "NAME": trig["name"].get("ru", trig["code"])})
    result = client.batch(cmds) if cmds else None
    if result is not None:
        for key, err in result.errors.items():
            if not already_bound(err):
                raise err
    if stored:
        ctx.portals.mark_bound(member_id, ctx.bindings_signature)
    return {"changed": sorted(cmds)}


def already_bound(err: BitrixError) -> bool:
    """A bind that failed only because the same handler is bound already, or being bound right now (a race
    with another install/update). Bitrix24 answers ERROR_CORE "Unable to set ... handler: Handler already
    binded" (api-reference/widgets/user-field/userfieldtype-add.md) or "Process of binding the handler has
    already started" (the rest module's core; the event.bind page is silent): the code says nothing, the
    description does."""
    if "ALREADY" in err.code.upper():
        return True
    text = err.description.lower()
    return err.code == "ERROR_CORE" and ("already binded" in text or "already started" in text)


def _int(value, default):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def lifecycle_event(ctx: AppContext, body: dict, *, attempt=lambda req: nullcontext()) -> tuple[int, dict]:
    """ONAPPINSTALL / ONAPPUPDATE / ONAPPUNINSTALL (the parsed event `body`): what the app does, and the answer
    for Bitrix24 (status, body). `attempt(req)` wraps each verification that asks Bitrix24 (the web layer's
    throttle; whatever it raises, e.g. "try later", goes to the caller)."""
    from b24app.banklinks.tbank import uninstall_portal

    event = str(body.get("event", "")).upper()
    auth = body.get("auth") if isinstance(body.get("auth"), dict) else {}
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    member_id = auth.get("member_id") if isinstance(auth.get("member_id"), str) else ""
    token_ok = ctx.portals.application_token_matches(member_id, auth.get("application_token"))
    # Every user who opens the app is handed APPLICATION_TOKEN (settings/oauth/simple-way.md,
    # api-reference/widgets/_includes/widget_data.md): it tells Bitrix24's calls from strangers', not from the
    # portal's own users. So it never unlocks more than a hint: an uninstall must be confirmed by Bitrix24
    # itself, and new tokens come only with an administrator's token verified by the OAuth server.
    try:
        if event == "ONAPPUNINSTALL":
            # Bitrix24 may deliver it again after we uninstalled: still authenticated, still harmless.
            if not ctx.portals.application_token_matches(member_id, auth.get("application_token"),
                                                         uninstalled_ok=True):
                return 401, {"error": "invalid_application_token"}
            if token_ok and installation_alive(ctx, member_id):
                log.warning("uninstall refused: the installation still works", extra={"member_id": member_id})
                return 401, {"error": "still_installed"}
            # recorded first; then the bank links are released at the bank (webhook, tokens), bounded in time
            uninstall_portal(ctx, member_id, clean=str(data.get("CLEAN", "0")) == "1")
            return 200, {"ok": True}
        if event == "ONAPPINSTALL":
            if not token_ok:  # the event came first (callback apps), or a reinstall: verify and store
                req = install_request_from_event(auth, data)
                with attempt(req):
                    install(ctx, req)
            return 200, {"ok": True}
        if event == "ONAPPUPDATE":
            if token_ok:
                bind(ctx, member_id)
            else:  # the update issued a new application_token
                req = install_request_from_event(auth, data)
                with attempt(req):
                    update(ctx, req)
            return 200, {"ok": True}
    except InstallRejected as exc:
        log.warning("lifecycle event rejected", extra={"event": event, "reason": exc.reason, "member_id": member_id})
        # Without a matching application_token every refusal is an authentication failure.
        return (400 if exc.reason == "missing_fields" and token_ok else 401), {"error": exc.reason}
    except BitrixError as exc:
        log.error("lifecycle event failed", extra={"event": event, "code": exc.code, "member_id": member_id})
        return 502, {"error": "bitrix_error"}
    return 400, {"error": "unknown_event"}