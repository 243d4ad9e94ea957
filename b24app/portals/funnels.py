"""Deal pipelines (funnels) and their stages, read over REST with the app's token and cached on the portal row
for an hour: what the admin page offers as "move the paid deal to" and what the rules are checked against."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from b24app.adapters.bitrix.crm import EntityType
from b24app.adapters.bitrix.errors import BitrixError
from .store import update_setting

log = logging.getLogger("b24app.portals.funnels")

PIPELINES_KEY = "deal_pipelines"
PIPELINES_TTL = timedelta(hours=1)


def fetch_pipelines(ctx, member_id: str) -> list[dict]:
    """Deal pipelines with their stages, read with the app's token: two batch calls."""
    client = ctx.bitrix(member_id)
    first = client.batch({"cats": ("crm.category.list", {"entityTypeId": EntityType.DEAL}),
                          "s0": ("crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE"},
                                                     "order": {"SORT": "ASC"}})})
    first.raise_first()
    cats = first.results.get("cats") or {}
    cats = cats.get("categories") if isinstance(cats, dict) else cats
    pipelines = [{"id": int(c["id"]), "name": str(c.get("name") or c["id"])} for c in cats or []
                 if isinstance(c, dict) and str(c.get("id", "")).isdigit()]
    if not any(p["id"] == 0 for p in pipelines):
        pipelines.insert(0, {"id": 0, "name": ""})
    others = [p["id"] for p in pipelines if p["id"] != 0]
    stages = {0: first.results.get("s0") or []}
    if others:
        more = client.batch({f"s{i}": ("crm.status.list", {"filter": {"ENTITY_ID": f"DEAL_STAGE_{i}"},
                                                           "order": {"SORT": "ASC"}}) for i in others})
        more.raise_first()
        for i in others:
            stages[i] = more.results.get(f"s{i}") or []
    for p in pipelines:
        p["stages"] = [{"id": str(r["STATUS_ID"]), "name": str(r.get("NAME") or r["STATUS_ID"]),
                        "semantics": r.get("SEMANTICS") or (r.get("EXTRA") or {}).get("SEMANTICS") or None}
                       for r in stages.get(p["id"], []) if isinstance(r, dict) and r.get("STATUS_ID")]
    return pipelines


def deal_pipelines(ctx, portal, *, refresh: bool = False) -> tuple[list[dict], datetime | None, bool]:
    """(pipelines, fetched_at, fresh_ok): from the portal's cache unless stale or `refresh`."""
    cached = (portal.settings or {}).get(PIPELINES_KEY) or {}
    fetched_at = parse_dt(cached.get("fetched_at"))
    now = ctx.clock.now()
    if not refresh and fetched_at and now - fetched_at < PIPELINES_TTL and cached.get("pipelines") is not None:
        return cached["pipelines"], fetched_at, True
    try:
        pipelines = fetch_pipelines(ctx, portal.member_id)
    except BitrixError as exc:
        log.warning("deal stages unavailable", extra={"member_id": portal.member_id, "code": exc.code})
        return cached.get("pipelines") or [], fetched_at, False
    update_setting(ctx, portal.id, PIPELINES_KEY, lambda _old: {"fetched_at": now.isoformat(), "pipelines": pipelines})
    return pipelines, now, True


def parse_dt(value) -> datetime | None:
    """An ISO time as stored or sent (naive means UTC); None when absent or malformed."""
    try:
        d = datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None
    return d if d is None or d.tzinfo else d.replace(tzinfo=timezone.utc)
