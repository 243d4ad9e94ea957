"""People by name, linked to their Bitrix24 profile: names read with user.get inside the batch that verifies a
render (no extra REST call), remembered on the portal row for the JSON API's later renders."""
from __future__ import annotations

from flask import g
from markupsafe import Markup, escape
from sqlalchemy import select

from ..models import Allocation, Decision, Invoice, Portal

NAMES_KEY = "user_names"  # on Portal.settings: {"id": "Name Last"}
MAX_IDS = 50              # user.get answers one page of 50 (api-reference/user/user-get.md)


def command(ids) -> dict[str, tuple[str, dict]]:
    """The batch command that reads these users' names (filter @ID = IN, api-reference/user/user-get.md)."""
    wanted = sorted({int(i) for i in ids if i})[:MAX_IDS]
    if not wanted:
        return {}
    return {"people": ("user.get", {"filter": {"@ID": wanted}})}


def tab_actors(s, portal_id: int, kind: str, entity_id: int) -> set[int]:
    """Who decided (by hand) the payments shown in a deal or invoice tab, from what the app already stores."""
    inv = select(Invoice.b24_id).where(Invoice.portal_id == portal_id)
    inv = inv.where(Invoice.deal_id == entity_id) if kind == "deal" else inv.where(Invoice.b24_id == entity_id)
    return set(s.scalars(select(Decision.actor_user_id).distinct().join(
        Allocation, Allocation.decision_id == Decision.id).where(
        Allocation.portal_id == portal_id, Allocation.invoice_b24_id.in_(inv),
        Decision.actor_user_id.is_not(None)).limit(MAX_IDS)))


def recent_actors(s, portal_id: int) -> set[int]:
    """People who decided payments by hand lately (the admin page's history)."""
    return set(s.scalars(select(Decision.actor_user_id).where(
        Decision.portal_id == portal_id, Decision.actor_user_id.is_not(None))
        .order_by(Decision.id.desc()).limit(200)))


def remember(ctx, portal: Portal, results: dict) -> dict[str, str]:
    """Names from the batch's `people` result merged into the portal's cache (written only when changed)."""
    known = dict((portal.settings or {}).get(NAMES_KEY) or {})
    rows = results.pop("people", None)
    fresh = {}
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and str(row.get("ID", "")).isdigit():
            name = " ".join(str(row.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
            fresh[str(row["ID"])] = name[:120] or str(row.get("EMAIL") or "")[:120]
    fresh = {k: v for k, v in fresh.items() if v and known.get(k) != v}
    if fresh:
        with ctx.db.session() as s:
            row = s.scalar(select(Portal).where(Portal.id == portal.id).with_for_update())
            names = {**((row.settings or {}).get(NAMES_KEY) or {}), **fresh}
            row.settings = {**(row.settings or {}), NAMES_KEY: names}
        known.update(fresh)
    return known


def use(portal: Portal, names: dict[str, str] | None = None) -> None:
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
