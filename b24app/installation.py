"""Install, update and uninstall: verify what Bitrix24 posts, store the portal, bind what the manifest lists."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .bitrix.client import call_with_token
from .bitrix.errors import BitrixError
from .context import AppContext
from .portals import InstallData

log = logging.getLogger("b24app.install")


class InstallRejected(Exception):
    """An install or lifecycle request that must not change anything; `reason` names the failed guard."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class InstallRequest:
    """The fields Bitrix24 sends to the install page (form) or with ONAPPINSTALL (auth[...])."""

    member_id: str
    domain: str
    protocol: str
    access_token: str
    refresh_token: str
    expires_in: int
    server_endpoint: str
    application_token: str | None
    lang: str = "ru"
    client_endpoint: str | None = None
    scope: str | None = None
    user_id: int | None = None

    @property
    def rest_base(self) -> str:
        if self.client_endpoint:
            return self.client_endpoint
        scheme = "http" if self.protocol == "0" else "https"
        return f"{scheme}://{self.domain}/rest/"


REQUIRED_INSTALL_FIELDS = ("AUTH_ID", "REFRESH_ID", "member_id", "SERVER_ENDPOINT")


def install_request_from_page(form, args) -> InstallRequest:
    """Parse the install page POST (body) and its query string (DOMAIN, PROTOCOL, LANG)."""
    missing = [f for f in REQUIRED_INSTALL_FIELDS if not form.get(f)]
    domain = args.get("DOMAIN") or form.get("DOMAIN")
    if not domain:
        missing.append("DOMAIN")
    if missing:
        raise InstallRejected("missing_fields", ", ".join(missing))
    return InstallRequest(
        member_id=form["member_id"], domain=domain, protocol=args.get("PROTOCOL", form.get("PROTOCOL", "1")),
        access_token=form["AUTH_ID"], refresh_token=form["REFRESH_ID"],
        expires_in=_int(form.get("AUTH_EXPIRES"), 3600), server_endpoint=form["SERVER_ENDPOINT"],
        application_token=form.get("APPLICATION_TOKEN") or None, lang=(args.get("LANG") or "ru")[:2],
        scope=form.get("APPLICATION_SCOPE") or None)


def install_request_from_event(auth: dict, data: dict) -> InstallRequest:
    """Parse ONAPPINSTALL / ONAPPUPDATE `auth[...]`, which carries tokens (ONAPPINSTALL also the refresh token)."""
    missing = [f for f in ("access_token", "member_id", "server_endpoint", "domain") if not auth.get(f)]
    if missing:
        raise InstallRejected("missing_fields", ", ".join("auth[%s]" % m for m in missing))
    odd = [k for k, v in auth.items() if not isinstance(v, str)] + [k for k, v in data.items() if not isinstance(v, str)]
    if odd:
        raise InstallRejected("malformed", "nested values in " + ", ".join(sorted(odd)[:5]))
    return InstallRequest(
        member_id=auth["member_id"], domain=auth["domain"], protocol="1",
        access_token=auth["access_token"], refresh_token=auth.get("refresh_token") or "",
        expires_in=_int(auth.get("expires_in"), 3600), server_endpoint=auth["server_endpoint"],
        application_token=auth.get("application_token") or None,
        lang=(data.get("LANGUAGE_ID") or "ru")[:2], client_endpoint=auth.get("client_endpoint") or None,
        scope=auth.get("scope"), user_id=_int(auth.get("user_id"), None))


def verify(ctx: AppContext, req: InstallRequest) -> dict:
    """Prove the posted token is ours and belongs to the posted portal, by asking the trusted OAuth server."""
    oauth_rest = ctx.trusted_oauth_server(req.server_endpoint)
    if oauth_rest is None:
        raise InstallRejected("untrusted_server", req.server_endpoint)
    try:
        info = call_with_token(ctx.http, oauth_rest, req.access_token, "app.info")
    except BitrixError as exc:
        raise InstallRejected("invalid_token", exc.code) from exc
    if not isinstance(info, dict):
        raise InstallRejected("invalid_token", "app.info answered without a result")
    install = info.get("install") or {}
    if install.get("member_id") != req.member_id:
        raise InstallRejected("member_mismatch", "the token belongs to another portal")
    expected_domain = req.rest_base.split("://", 1)[-1].rstrip("/")
    expected_domain = expected_domain[:-len("/rest")] if expected_domain.endswith("/rest") else expected_domain
    if install.get("domain") and install["domain"] != expected_domain:
        raise InstallRejected("domain_mismatch", "the token belongs to another domain")
    client_id = info.get("client_id")
    if client_id and client_id != ctx.settings.bitrix_client_id:
        raise InstallRejected("foreign_app", "the token was issued to another application")
    return info


def install(ctx: AppContext, req: InstallRequest) -> bool:
    """Verify, store and bind. Returns True when the portal is new. Raises InstallRejected before any write."""
    info = verify(ctx, req)
    if not req.refresh_token:
        raise InstallRejected("missing_fields", "refresh token")
    user = _int((info or {}).get("user_id"), req.user_id)
    _, created = ctx.portals.save_install(InstallData(
        member_id=req.member_id, domain=req.rest_base.split("://", 1)[-1].rsplit("/rest/", 1)[0],
        client_endpoint=req.rest_base, server_endpoint=req.server_endpoint, access_token=req.access_token,
        refresh_token=req.refresh_token, expires_in=req.expires_in, application_token=req.application_token,
        scope=req.scope, lang=req.lang, user_id=user, version=ctx.manifest.version))
    bind(ctx, req.member_id)
    log.info("portal installed", extra={"member_id": req.member_id, "new_portal": created})
    return created


def bind(ctx: AppContext, member_id: str) -> dict:
    """Make the portal's placements, events and triggers exactly what the manifest lists (idempotent)."""
    client = ctx.bitrix(member_id)
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
            if "ALREADY" not in err.code.upper():
                raise err
    ctx.portals.mark_bound(member_id, ctx.bindings_signature)
    return {"changed": sorted(cmds)}


def _int(value, default):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
