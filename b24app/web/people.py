"""People by name, linked to their Bitrix24 profile (the names come from `b24app.portals.usernames`)."""
from __future__ import annotations

from flask import g
from markupsafe import Markup, escape

from b24app.portals.usernames import NAMES_KEY


def use(portal, names: dict[str, str] | None = None) -> None:
    """Make names and the portal's address available to the templates of this request."""
    g.people = names if names is not None else dict((portal.settings or {}).get(NAMES_KEY) or {})
    endpoint = portal.client_endpoint or ""
    g.portal_base = endpoint[:-len("/rest/")] if endpoint.endswith("/rest/") else endpoint.rstrip("/")


def name_of(user_id) -> str | None:
    return (g.get("people") or {}).get(str(user_id))


def person(user_id, fallback: str) -> Markup:
    """A link to the user's Bitrix24 profile (/company/personal/user/ID/), opened in the portal's window."""
    if not user_id:
        return Markup("")
    label = name_of(user_id) or fallback
    base = g.get("portal_base")
    if not base:
        return escape(label)
    return Markup('<a class="b24-person" href="{}/company/personal/user/{}/" target="_top">{}</a>').format(
        base, int(user_id), label)
