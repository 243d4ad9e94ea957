"""Partly paid invoices (issue #15): per invoice funnel, the stage an underpaid invoice moves to.

The admin picks a stage of each smart-invoice funnel, or asks the app to create one named «Частично оплачен» /
"Partly paid" (`crm.status.add`, api-reference/crm/status/crm-status-add.md: CRM administrator rights; the
funnel's prefix `DT31_<category>:` is added by Bitrix24). An underpaid invoice moves there (outbox kind
`invoice_partial`) and on to its success stage when a later payment tops it up (`invoice_paid`, as before).
"""
from __future__ import annotations

from b24app.adapters.bitrix.errors import BitrixError
from b24app.adapters.bitrix.crm import INVOICE_TYPE

PARTIAL_NAMES = {"ru": "Частично оплачен", "en": "Partly paid"}
PARTIAL_STATUS = "PARTLY_PAID"   # Bitrix24 prefixes it with the funnel: DT31_<category>:PARTLY_PAID
PARTIAL_COLOR = "#FFA900"


class PartialStageError(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def invoice_funnels(ctx, member_id: str) -> list[dict]:
    """Smart-invoice funnels with their stages (by SORT), read with the app's token: two batch calls."""
    client = ctx.bitrix(member_id)
    cats = client.call("crm.category.list", {"entityTypeId": INVOICE_TYPE})
    cats = cats.get("categories") if isinstance(cats, dict) else cats
    funnels = [{"id": int(c["id"]), "name": str(c.get("name") or c["id"])} for c in cats or []
               if isinstance(c, dict) and str(c.get("id", "")).isdigit()]
    if not funnels:
        return []
    res = client.batch({f"s{f['id']}": ("crm.status.list", {"filter": {"ENTITY_ID": f"SMART_INVOICE_STAGE_{f['id']}"},
                                                            "order": {"SORT": "ASC"}}) for f in funnels})
    res.raise_first()
    for f in funnels:
        rows = [r for r in res.results.get(f"s{f['id']}") or [] if isinstance(r, dict) and r.get("STATUS_ID")]
        f["stages"] = [{"id": str(r["STATUS_ID"]), "name": str(r.get("NAME") or r["STATUS_ID"]),
                        "semantics": r.get("SEMANTICS") or None, "sort": int(r.get("SORT") or 0)}
                       for r in sorted(rows, key=lambda r: int(r.get("SORT") or 0))]
    return funnels


def valid_choice(funnels: list[dict], choice: dict) -> bool:
    """Every chosen stage is an in-progress stage of the funnel it is chosen for."""
    known = {str(f["id"]): {s["id"] for s in f["stages"] if not s["semantics"]} for f in funnels}
    return all(not stage or (str(cat) in known and stage in known[str(cat)]) for cat, stage in choice.items())


def create_partial_stage(ctx, member_id: str, category_id: int, lang: str) -> str:
    """Create the «Частично оплачен» stage in one invoice funnel, just before its success stage; returns its id.
    Found already (a repeated click, or created before): that stage is returned, nothing is added."""
    funnels = invoice_funnels(ctx, member_id)
    funnel = next((f for f in funnels if f["id"] == category_id), None)
    if funnel is None:
        raise PartialStageError("unknown_funnel")
    names = set(PARTIAL_NAMES.values())
    found = next((s for s in funnel["stages"] if not s["semantics"] and (
        s["name"] in names or s["id"].endswith(":" + PARTIAL_STATUS))), None)
    if found:
        return found["id"]
    success = min((s["sort"] for s in funnel["stages"] if s["semantics"] == "S"), default=None)
    before = max((s["sort"] for s in funnel["stages"]
                  if not s["semantics"] and (success is None or s["sort"] < success)), default=0)
    if success is not None and success - before < 2:
        raise PartialStageError("no_room")  # "Cannot create an intermediate stage after success"
    sort = (before + success) // 2 if success is not None else before + 10
    try:
        ctx.bitrix(member_id).call("crm.status.add", {"fields": {
            "ENTITY_ID": f"SMART_INVOICE_STAGE_{category_id}", "STATUS_ID": PARTIAL_STATUS,
            "NAME": PARTIAL_NAMES.get(lang, PARTIAL_NAMES["en"]), "SORT": sort, "COLOR": PARTIAL_COLOR}})
    except BitrixError as exc:
        raise PartialStageError("access_denied" if exc.code in ("ACCESS_DENIED", "insufficient_scope")
                                else "bitrix_error") from exc
    again = next(f for f in invoice_funnels(ctx, member_id) if f["id"] == category_id)
    made = next((s for s in again["stages"] if s["id"].endswith(":" + PARTIAL_STATUS) or s["id"] == PARTIAL_STATUS),
                None)
    if made is None:
        raise PartialStageError("bitrix_error")
    return made["id"]
