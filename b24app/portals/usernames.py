"""People's names for the pages: read with user.get inside the batch that verifies a render (no extra REST
call), remembered on the portal row for the JSON API's later renders. `web/people.py` shows them."""
from __future__ import annotations

from sqlalchemy import select

from b24app.storage.models import Allocation, Decision, Invoice, Portal
from .store import update_setting

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


def recent_command(ctx, portal_id: int) -> dict[str, tuple[str, dict]]:
    """The batch command for the names of the people in the admin history's first page."""
    with ctx.db.session() as s:
        return command(recent_actors(s, portal_id))


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
        update_setting(ctx, portal.id, NAMES_KEY, lambda names: {**(names or {}), **fresh})
        known.update(fresh)
    return known
