"""The Bitrix24 install sequence and app-frame launch data, shared by the control API and the pages."""
from __future__ import annotations

import json
from typing import Any

import httpx

from .events import build_deliveries, wait_all
from .rest import PortalSandboxError
from .state import Installation, Portal, SandboxState, new_hex32


def delivery_summary(deliveries: list[Any]) -> list[dict[str, Any]]:
    return [{"id": d.id, "handler": d.handler, "status": d.status, "error": d.error} for d in deliveries]


def submit_and_wait(state: SandboxState, deliveries: list[Any]) -> None:
    if deliveries and state.deliverer is not None:
        state.deliverer.submit(deliveries)
        wait_all(deliveries)


def ensure_installation(state: SandboxState, portal: Portal, client_id: str, user_id: int) -> Installation:
    """The (portal, app) record with its stable application_token, created on first install."""
    with state.lock:
        inst = portal.installations.get(client_id)
        if inst is None:
            inst = Installation(client_id=client_id, local_id=state.new_app_local_id(),
                                application_token=new_hex32(), version=state.apps[client_id].version,
                                installed_by=user_id)
            portal.installations[client_id] = inst
        return inst


def frame_fields(state: SandboxState, portal: Portal, host: str, client_id: str, user_id: int,
                 placement: str, options: dict[str, Any], lang: str) -> tuple[dict[str, str], dict[str, str]]:
    """(query, form) Bitrix24 sends when it opens an app page or placement: a fresh token pair for the user."""
    inst = ensure_installation(state, portal, client_id, user_id)
    access, refresh = state.issue_pair(portal, client_id, user_id)
    query = {"DOMAIN": portal.domain(host), "PROTOCOL": "0", "LANG": lang, "APP_SID": new_hex32()}
    form = {"AUTH_ID": access.value, "AUTH_EXPIRES": str(state.access_ttl), "REFRESH_ID": refresh.value,
            "SERVER_ENDPOINT": f"http://{host}/rest/", "APPLICATION_TOKEN": inst.application_token,
            "APPLICATION_SCOPE": state.apps[client_id].scope, "member_id": portal.member_id, "status": "L",
            "PLACEMENT": placement, "PLACEMENT_OPTIONS": json.dumps(options, ensure_ascii=False)}
    return query, form


def finish_install(state: SandboxState, portal: Portal, host: str, client_id: str,
                   user_id: int) -> list[dict[str, Any]]:
    """Mark the app installed (as `BX24.installFinish()` does) and deliver ONAPPINSTALL to its handlers."""
    with state.lock:
        inst = portal.installations[client_id]
        inst.installed = True
        bindings = [b for b in portal.events if b.client_id == client_id and b.event == "ONAPPINSTALL"]
    deliveries = build_deliveries(state, portal, host, bindings, "ONAPPINSTALL",
                                  {"VERSION": str(inst.version), "ACTIVE": "Y", "INSTALLED": "Y",
                                   "LANGUAGE_ID": portal.lang},
                                  acting_user=user_id, tokens="pair")
    submit_and_wait(state, deliveries)
    return delivery_summary(deliveries)


class InstallError(PortalSandboxError):
    """The control API refused an install (unknown app, not an admin)."""

    def __init__(self, code: str, description: str, status: int) -> None:
        super().__init__(description)
        self.code, self.description, self.status = code, description, status


def run_install(state: SandboxState, portal: Portal, host: str, client_id: str, user_id: int,
                lang: str) -> dict[str, Any]:
    """The real install sequence: POST tokens to the install URL, look for installFinish, then ONAPPINSTALL."""
    registered = state.apps.get(client_id)
    if registered is None:
        raise InstallError("invalid_client", "Application is not registered", 404)
    if user_id not in portal.users or not portal.users[user_id].admin:
        raise InstallError("ACCESS_DENIED", "Only an administrator can install applications", 403)
    query, form = frame_fields(state, portal, host, client_id, user_id, "DEFAULT", {}, lang)
    inst = portal.installations[client_id]
    result: dict[str, Any] = {"client_id": client_id, "member_id": portal.member_id,
                              "application_token": inst.application_token, "access_token": form["AUTH_ID"],
                              "refresh_token": form["REFRESH_ID"], "install_status": None,
                              "install_error": None, "install_finish": False, "installed": inst.installed,
                              "onappinstall": []}
    try:
        with httpx.Client(timeout=30.0, follow_redirects=True) as client:
            response = client.post(registered.install_url, params=query, data=form)
        result["install_status"] = response.status_code
        result["install_finish"] = "BX24.installFinish" in response.text
    except httpx.HTTPError as exc:
        result["install_error"] = f"{type(exc).__name__}: {exc}"
    if result["install_finish"]:
        result["onappinstall"] = finish_install(state, portal, host, client_id, user_id)
        result["installed"] = True
    return result
