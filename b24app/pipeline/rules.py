"""What the portal admin chose to happen per outcome (stored as JSON on the portal row)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from sqlalchemy import select

from b24app.storage.models import Portal


@dataclass(frozen=True)
class Rules:
    # paid in full
    paid_invoice_stage: bool = True          # move the invoice to its stage with semantics S
    # deal category id (str) -> stage id, or "" = do not move; a pipeline not listed moves to its success stage (S)
    paid_deal_stage: dict = field(default_factory=dict)
    paid_timeline: bool = True
    paid_notify: bool = True
    # underpaid
    underpaid_notify: bool = True
    underpaid_task: bool = False
    underpaid_timeline: bool = True
    # invoice funnel id (str) -> the stage an underpaid invoice moves to ("partly paid"); empty = stays where it is
    partial_invoice_stage: dict = field(default_factory=dict)
    # overpaid and review
    overpaid_notify: bool = True
    review_notify: bool = True
    # no number in the purpose (#15): a MEDIUM match by the payer's INN and the amount (one invoice, or the one
    # set of 2-5) is applied only when this is on; else it waits in review with the proposal pre-filled
    apply_medium: bool = False
    # T-Bank statement categories that are never a client's payment (the operation's `category`). T-Bank's docs
    # name `incomePeople` and `fee` only; no list of values is published, so the default is empty.
    ignore_categories: list = field(default_factory=list)
    # the surplus of an overpayment is the payer's credit (by INN): False = it waits for a person (default),
    # True = it is put on the same payer's next open invoice, oldest first
    credit_auto_apply: bool = False
    # the deal's money userfield kept equal to what was applied («Оплачено», created when the admin asks); "" = off
    deal_paid_field: str = ""
    # a paid payment record on the deal for every amount applied (#15); needs scope `sale` and an administrator
    payment_records: bool = True
    # any outcome
    fire_trigger: bool = True
    sync_interval: int = 0                   # seconds; 0 = the deployment's B24APP_SYNC_INTERVAL

    def to_dict(self) -> dict:
        return asdict(self)


_BOOLS = {f.name for f in fields(Rules) if f.type in ("bool", bool)}


def load_rules(portal_settings: dict | None) -> Rules:
    """Rules from stored JSON; unknown keys ignored, bad values fall back to defaults."""
    raw = (portal_settings or {}).get("rules") or {}
    kw: dict = {}
    for name in _BOOLS:
        if isinstance(raw.get(name), bool):
            kw[name] = raw[name]
    stages = raw.get("paid_deal_stage")
    if isinstance(stages, dict):
        kw["paid_deal_stage"] = {str(k): str(v or "") for k, v in stages.items()}
    partial = raw.get("partial_invoice_stage")
    if isinstance(partial, dict):
        kw["partial_invoice_stage"] = {str(k): str(v) for k, v in partial.items() if v}
    cats = raw.get("ignore_categories")
    if isinstance(cats, list):
        try:
            kw["ignore_categories"] = _categories(cats)
        except ValueError:
            pass
    if isinstance(raw.get("deal_paid_field"), str) and raw["deal_paid_field"].startswith("UF_CRM_"):
        kw["deal_paid_field"] = raw["deal_paid_field"][:64]
    interval = raw.get("sync_interval")
    if isinstance(interval, int) and (interval == 0 or 10 <= interval <= 86400):
        kw["sync_interval"] = interval
    return Rules(**kw)


def deal_stage_targets(rules: Rules, portal_settings: dict | None) -> dict[str, str]:
    """Pipeline id -> the stage a deal moves to when its invoice is paid: the admin's choice ("" = do not move),
    else the pipeline's success stage (semantics S) as far as the portal's caches know it (the admin page's
    pipelines, the success stages the outbox read)."""
    settings = portal_settings or {}
    pipelines = (settings.get("deal_pipelines") or {}).get("pipelines") or []
    out: dict[str, str] = {str(k): str(v) for k, v in (settings.get("deal_success_stages") or {}).items() if v}
    for p in pipelines:
        won = next((st["id"] for st in p.get("stages") or [] if st.get("semantics") == "S"), None)
        if won:
            out[str(p["id"])] = won
    out.update(rules.paid_deal_stage)
    return out


def rules_saved(portal_settings: dict | None) -> bool:
    """Whether an administrator has saved the rules at least once (the first run shows the defaults to check)."""
    return isinstance((portal_settings or {}).get("rules"), dict)


def _categories(value) -> list:
    """Bank category codes: a list or a comma-separated string of up to 50 Latin words; else ValueError."""
    if isinstance(value, str):
        value = [v for v in (x.strip() for x in value.split(",")) if v]
    if not isinstance(value, list) or len(value) > 50 or not all(
            isinstance(v, str) and 0 < len(v) <= 64 and v.isascii() and v.isalnum() for v in value):
        raise ValueError("ignore_categories")
    return sorted(set(value))


def parse_rules(data: dict) -> Rules:
    """Validate a submitted rules form/JSON; raises ValueError with a field name on bad input."""
    kw: dict = {}
    for name in _BOOLS:
        if name in data:
            value = data[name]
            if isinstance(value, str):
                value = value.lower() in ("1", "true", "on", "y", "yes")
            if not isinstance(value, bool):
                raise ValueError(name)
            kw[name] = value
    if "paid_deal_stage" in data:
        stages = data["paid_deal_stage"]
        if not isinstance(stages, dict) or not all(
                str(k).isdigit() and isinstance(v, str) and len(v) <= 64 for k, v in stages.items()):
            raise ValueError("paid_deal_stage")
        kw["paid_deal_stage"] = {str(k): v for k, v in stages.items()}
    if "partial_invoice_stage" in data:
        stages = data["partial_invoice_stage"]
        if not isinstance(stages, dict) or not all(
                str(k).isdigit() and isinstance(v, str) and len(v) <= 64 for k, v in stages.items()):
            raise ValueError("partial_invoice_stage")
        kw["partial_invoice_stage"] = {str(k): v for k, v in stages.items() if v}
    if "ignore_categories" in data:
        kw["ignore_categories"] = _categories(data["ignore_categories"])
    if "deal_paid_field" in data:
        value = data["deal_paid_field"]
        if not (value == "" or (isinstance(value, str) and value.startswith("UF_CRM_") and len(value) <= 64
                                and value.replace("_", "").isalnum() and value.isascii())):
            raise ValueError("deal_paid_field")
        kw["deal_paid_field"] = value
    if "sync_interval" in data:
        try:
            interval = int(data["sync_interval"])
        except (TypeError, ValueError):
            raise ValueError("sync_interval") from None
        if interval != 0 and not 10 <= interval <= 86400:
            raise ValueError("sync_interval")
        kw["sync_interval"] = interval
    return Rules(**kw)


def save_rules(ctx, portal_id: int, data: dict) -> Rules:
    """Merge submitted values over the stored rules and persist them."""
    with ctx.db.session() as s:
        portal = s.scalar(select(Portal).where(Portal.id == portal_id).with_for_update())
        current = load_rules(portal.settings).to_dict()
        submitted = parse_rules(data).to_dict()
        merged = {**current, **{k: submitted[k] for k in data if k in submitted}}
        rules = Rules(**merged)
        portal.settings = {**(portal.settings or {}), "rules": rules.to_dict()}
    return rules
