"""Our copy of each portal's smart invoices (entityTypeId 31): stage semantics, payer INN, open or not."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from b24app.portals import usernames
from b24app.adapters.bitrix import crm
from b24app.adapters.bitrix.client import BitrixClient
from b24app.adapters.bitrix.crm import INVOICE_TYPE
from b24app.domain import normalize_invoice_number
from b24app.domain.errors import MoneyError
from b24app.domain.money import ZERO, cents
from b24app.storage.models import Invoice, InvoiceRefresh, OwnDealUpdate, Portal

log = logging.getLogger("b24app.pipeline.invoices")
ITEM_SELECT = ["id", "title", "accountNumber", "opportunity", "currencyId", "stageId", "categoryId",
               "parentId2", "assignedById", "companyId", "mycompanyId", "createdTime"]


ECHO_WINDOW = timedelta(seconds=2)  # an event's `ts` vs the updatedTime our own update was answered with


def queue_refresh(ctx, member_id: str, entity: str, entity_id: int, *, event_ts: datetime | None = None,
                    event_user: int | None = None) -> None:
    """Remember that Bitrix24 said this invoice/deal changed (deduplicated by primary key).

    `event_ts`/`event_user` (an ONCRMDYNAMICITEMUPDATE's `ts` and `auth[user_id]`) let the worker tell the echo
    of our own crm.item.update from anybody else's change; a second event for a queued row makes it a plain
    re-read, so two changes are never taken for one echo."""
    portal = ctx.portals.find(member_id)
    if portal is None:
        return
    now = ctx.clock.now()
    single = event_ts is not None and event_user is not None
    try:
        with ctx.db.session() as s:
            if s.get(InvoiceRefresh, (portal.id, entity, entity_id)) is None:
                s.add(InvoiceRefresh(portal_id=portal.id, entity=entity, entity_id=entity_id, requested_at=now,
                                     event_ts=event_ts if single else None, event_user=event_user if single else None))
                return
    except IntegrityError:
        pass  # queued by a concurrent event: that makes two
    with ctx.db.session() as s:  # a newer requested_at also keeps a read already under way from deleting it
        s.execute(update(InvoiceRefresh).where(
            InvoiceRefresh.portal_id == portal.id, InvoiceRefresh.entity == entity,
            InvoiceRefresh.entity_id == entity_id).values(requested_at=now, event_ts=None, event_user=None))


def record_own_updates(ctx, portal_id: int, answers: list[tuple[dict, str]], semantics: dict[str, str | None]) -> int:
    """Put what Bitrix24 answered to our crm.item.update (the whole item) into the cache, and remember its
    updatedTime/updatedBy so that its echo event costs no re-read. `answers`: (answer, stage we wrote).
    An answer that does not show our stage, or a changed client company (its INN is not in the answer),
    leaves the echo to be read like any other event."""
    items = {}
    for answer, wrote in answers:
        item = answer.get("item") if isinstance(answer, dict) else None
        if isinstance(item, dict) and item.get("id") and str(item.get("stageId")) == wrote:
            items[int(item["id"])] = item
    if not items:
        return 0
    now = ctx.clock.now()
    with ctx.db.session() as s:
        rows = list(s.scalars(select(Invoice).where(Invoice.portal_id == portal_id, Invoice.b24_id.in_(sorted(items)))))
        for inv in rows:
            item = items[inv.b24_id]
            same_company = _int(item.get("companyId")) == inv.company_id
            apply_item(inv, item, semantics, {})
            inv.refreshed_at = now
            when, by = _dt(item.get("updatedTime")), _int(item.get("updatedBy"))
            inv.own_update_time, inv.own_update_by = (when, by) if same_company and when and by else (None, None)
    return len(rows)


def _own_echoes(ctx, portal_id: int, rows: list[InvoiceRefresh]) -> set[int]:
    """The invoice refreshes that are exactly the echo of our own last update: one event, by the user our
    update was answered with, stamped within ECHO_WINDOW after its updatedTime. Each own update excuses one."""
    single = {r.entity_id: r for r in rows if r.entity == "invoice" and r.event_ts and r.event_user is not None}
    if not single:
        return set()
    echoes = set()
    with ctx.db.session() as s:
        for inv in s.scalars(select(Invoice).where(Invoice.portal_id == portal_id, Invoice.b24_id.in_(sorted(single)),
                                                   Invoice.own_update_time.is_not(None))):
            r = single[inv.b24_id]
            if r.event_user == inv.own_update_by and inv.own_update_time <= r.event_ts <= inv.own_update_time + ECHO_WINDOW:
                inv.own_update_time = inv.own_update_by = None  # consumed: a second such event is read
                echoes.add(inv.b24_id)
    return echoes


# The echo of our own deal move. crm.deal.update answers only `true` (crm/deals/crm-deal-update.md) and
# ONCRMDEALUPDATE carries only FIELDS[ID] (crm/deals/events/on-crm-deal-update.md): neither says what changed.
# What a deal event costs us is a re-read of the deal's invoices (refresh_requested: crm.item.list by
# parentId2), for a change made through the deal that reached its invoices without an invoice event. A stage
# move alone changes nothing our invoice copy holds: no invoice field follows its deal's stage, and whatever
# an automation rule on the new stage does to an invoice comes as that invoice's own event (and a robot's
# event has no auth[user_id], so it is always read). So the echo of exactly our move needs no read; the care
# is in knowing that the event is exactly that. We only ever send STAGE_ID, and the write batch reads the
# deals right after the moves (crm.deal.list: STAGE_ID, DATE_MODIFY, MODIFY_BY_ID). A move is remembered only
# when that read shows our stage, changed by the very user our token acts as (the installer); its echo is one
# event by that user, stamped 0–ECHO_WINDOW after that DATE_MODIFY, and excuses one event. Anybody else's
# change (another user, a robot without auth[user_id], an event without ts), a second event before the worker
# looked (a company or contact changed by the installer too), or a change between our move and the read
# (then DATE_MODIFY/MODIFY_BY_ID or the stage are not ours, or two events come) is read as before.
DEAL_STAMP_SELECT = ["ID", "STAGE_ID", "DATE_MODIFY", "MODIFY_BY_ID"]


def record_own_deal_updates(ctx, portal_id: int, acting_user: int | None, wrote: dict[int, str],
                            seen: list[dict]) -> int:
    """Remember our deal moves (`wrote`: deal id -> stage we sent) as the read after them (`seen`) shows them;
    a move the read does not show as exactly ours forgets any older stamp of that deal."""
    if not wrote:
        return 0
    rows = {_int(r.get("ID")): r for r in seen if isinstance(r, dict)}
    stamps: dict[int, tuple[datetime, int]] = {}
    for deal_id, stage in wrote.items():
        row = rows.get(deal_id) or {}
        when, by = _dt(row.get("DATE_MODIFY")), _int(row.get("MODIFY_BY_ID"))
        if str(row.get("STAGE_ID")) == stage and when and by and acting_user and by == acting_user:
            stamps[deal_id] = (when, by)
    with ctx.db.session() as s:
        s.execute(delete(OwnDealUpdate).where(OwnDealUpdate.portal_id == portal_id,
                                              OwnDealUpdate.deal_id.in_(sorted(wrote))))
        for deal_id, (when, by) in stamps.items():
            s.add(OwnDealUpdate(portal_id=portal_id, deal_id=deal_id, update_time=when, update_by=by))
    return len(stamps)


def _own_deal_echoes(ctx, portal_id: int, rows: list[InvoiceRefresh]) -> set[int]:
    """The deal refreshes that are exactly the echo of our own last move (see above); each move excuses one."""
    single = {r.entity_id: r for r in rows if r.entity == "deal" and r.event_ts and r.event_user is not None}
    if not single:
        return set()
    echoes = set()
    with ctx.db.session() as s:
        for own in s.scalars(select(OwnDealUpdate).where(OwnDealUpdate.portal_id == portal_id,
                                                         OwnDealUpdate.deal_id.in_(sorted(single)))):
            r = single[own.deal_id]
            if r.event_user == own.update_by and own.update_time <= r.event_ts <= own.update_time + ECHO_WINDOW:
                s.delete(own)  # consumed: a second such event is read
                echoes.add(own.deal_id)
    return echoes


def stage_semantics(client: BitrixClient, category_ids: set[int]) -> dict[str, str | None]:
    """stageId -> 'S' | 'F' | None for the invoice categories seen (one batch)."""
    if not category_ids:
        return {}
    res = client.batch({f"c{c}": ("crm.status.list", {"filter": {"ENTITY_ID": f"SMART_INVOICE_STAGE_{c}"}})
                        for c in sorted(category_ids)})
    out: dict[str, str | None] = {}
    for rows in res.results.values():
        for row in rows or []:
            out[row["STATUS_ID"]] = row.get("SEMANTICS") or None
    return out


def payer_inns(client: BitrixClient, company_ids: set[int]) -> dict[int, str]:
    """Client company id -> INN from its requisites (batched, 50 companies per command).

    A company may hold several requisites, so one command can match more than a page of 50: every command
    is followed through `result_next` (`start`), as list methods page (settings/how-to-call-rest-api/
    list-methods-pecularities.md), until no command has a next page."""
    ids = sorted(i for i in company_ids if i)
    if not ids:
        return {}
    pending = {f"r{n}": {"filter": {"ENTITY_TYPE_ID": 4, "@ENTITY_ID": ids[n:n + 50]},
                         "select": ["ENTITY_ID", "RQ_INN"], "order": {"ID": "ASC"}, "start": 0}
               for n in range(0, len(ids), 50)}
    out: dict[int, str] = {}
    while pending:
        res = client.batch({key: ("crm.requisite.list", params) for key, params in pending.items()})
        res.raise_first()
        for rows in res.results.values():
            for row in rows or []:
                if row.get("RQ_INN"):
                    out.setdefault(int(row["ENTITY_ID"]), str(row["RQ_INN"]))
        pending = {key: {**params, "start": res.nexts[key]} for key, params in pending.items()
                   if res.nexts.get(key) and int(res.nexts[key]) > int(params["start"])}
    return out


def fetch_items(client: BitrixClient, filter_: dict) -> list[dict]:
    """All matching items: the first page tells the total, the rest come 50 pages per batch request."""
    params = {"entityTypeId": INVOICE_TYPE, "filter": filter_, "select": ITEM_SELECT, "order": {"id": "ASC"}}
    first = client.call_raw("crm.item.list", {**params, "start": 0})
    items = list((first.get("result") or {}).get("items") or [])
    total = int(first.get("total") or len(items))
    starts = list(range(50, total, 50))
    for n in range(0, len(starts), 50):
        res = client.batch({f"p{s}": ("crm.item.list", {**params, "start": s}) for s in starts[n:n + 50]})
        res.raise_first()
        for key in sorted(res.results, key=lambda k: int(k[1:])):
            items.extend((res.results[key] or {}).get("items") or [])
    return items


def upsert_items(ctx, portal_id: int, items: list[dict], semantics: dict[str, str | None],
                 inns: dict[int, str]) -> int:
    now = ctx.clock.now()
    with ctx.db.session() as s:
        existing = {inv.b24_id: inv for inv in s.scalars(
            select(Invoice).where(Invoice.portal_id == portal_id, Invoice.b24_id.in_([int(i["id"]) for i in items])))}
        for item in items:
            inv = existing.get(int(item["id"])) or Invoice(portal_id=portal_id, b24_id=int(item["id"]))
            if inv.id is None:
                s.add(inv)
            apply_item(inv, item, semantics, inns)
            inv.refreshed_at = now
    return len(items)


def apply_item(inv: Invoice, item: dict, semantics: dict[str, str | None], inns: dict[int, str]) -> None:
    number = str(item.get("accountNumber") or "")
    inv.number = number
    inv.number_key = normalize_invoice_number(number) if number else ""
    inv.title = (item.get("title") or "")[:512]
    inv.amount = _decimal(item.get("opportunity"))
    inv.currency = str(item.get("currencyId") or "RUB")[:3]
    inv.stage_id = str(item.get("stageId") or "")
    if inv.stage_id in semantics:
        inv.stage_semantics = semantics[inv.stage_id]
    inv.category_id = _int(item.get("categoryId"))
    inv.deal_id = _int(item.get("parentId2"))
    inv.assigned_by_id = _int(item.get("assignedById"))
    inv.company_id = _int(item.get("companyId"))
    inv.mycompany_id = _int(item.get("mycompanyId"))
    if inv.company_id and inv.company_id in inns:
        inv.payer_inn = inns[inv.company_id]
    inv.created = _dt(item.get("createdTime"))


def refresh_all(ctx, portal: Portal) -> int:
    """Re-read every invoice of the portal (periodic safety net for events Bitrix24 never delivered)."""
    client = ctx.bitrix(portal.member_id)
    items = fetch_items(client, {})
    semantics = stage_semantics(client, {int(i["categoryId"]) for i in items if i.get("categoryId") is not None})
    inns = payer_inns(client, {int(i["companyId"]) for i in items if i.get("companyId")})
    upsert_items(ctx, portal.id, items, semantics, inns)
    seen = {int(i["id"]) for i in items}
    assign_own_companies(ctx, portal)
    with ctx.db.session() as s:
        stale = [b for b in s.scalars(select(Invoice.b24_id).where(Invoice.portal_id == portal.id)) if b not in seen]
        if stale:
            s.execute(delete(Invoice).where(Invoice.portal_id == portal.id, Invoice.b24_id.in_(stale)))
        p = s.get(Portal, portal.id)
        p.invoices_refreshed_at = ctx.clock.now()
    return len(items)


def refresh_requested(ctx, portal: Portal, limit: int = 200) -> int:
    """Re-read the invoices and deals that events named; one batch for up to 50 ids."""
    with ctx.db.session() as s:
        rows = list(s.scalars(select(InvoiceRefresh).where(InvoiceRefresh.portal_id == portal.id).limit(limit)))
    if not rows:
        return 0
    echoes = {("invoice", i) for i in _own_echoes(ctx, portal.id, rows)}
    echoes |= {("deal", i) for i in _own_deal_echoes(ctx, portal.id, rows)}
    _forget(ctx, [r for r in rows if (r.entity, r.entity_id) in echoes])
    rows = [r for r in rows if (r.entity, r.entity_id) not in echoes]
    if not rows:
        return len(echoes)
    inv_ids = sorted({r.entity_id for r in rows if r.entity == "invoice"})
    deal_ids = sorted({r.entity_id for r in rows if r.entity == "deal"})
    client = ctx.bitrix(portal.member_id)
    items: list[dict] = []
    if inv_ids:
        items += fetch_items(client, {"@id": inv_ids})
    if deal_ids:
        items += fetch_items(client, {"@parentId2": deal_ids})
    semantics = stage_semantics(client, {int(i["categoryId"]) for i in items if i.get("categoryId") is not None})
    inns = payer_inns(client, {int(i["companyId"]) for i in items if i.get("companyId")})
    upsert_items(ctx, portal.id, items, semantics, inns)
    gone = set(inv_ids) - {int(i["id"]) for i in items}
    with ctx.db.session() as s:
        if gone:
            s.execute(delete(Invoice).where(Invoice.portal_id == portal.id, Invoice.b24_id.in_(sorted(gone))))
    _forget(ctx, rows)
    return len(rows) + len(echoes)


def _forget(ctx, rows: list[InvoiceRefresh]) -> None:
    """Drop handled refresh rows, unless an event came again meanwhile (it moved requested_at)."""
    if not rows:
        return
    with ctx.db.session() as s:
        for r in rows:
            s.execute(delete(InvoiceRefresh).where(
                InvoiceRefresh.portal_id == r.portal_id, InvoiceRefresh.entity == r.entity,
                InvoiceRefresh.entity_id == r.entity_id, InvoiceRefresh.requested_at == r.requested_at))


def _decimal(value) -> Decimal:
    """Bitrix24's `opportunity` rounded to kopecks; 0.00 when it is not an amount."""
    try:
        return cents(value)
    except MoneyError:
        return ZERO


def _int(value) -> int | None:
    try:
        return int(value) if value not in (None, "", 0, "0") else None
    except (TypeError, ValueError):
        return None


def _dt(value) -> datetime | None:
    if not value:
        return None
    try:
        d = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return d.astimezone(timezone.utc) if d.tzinfo else d.replace(tzinfo=timezone.utc)


def assign_own_companies(ctx, portal: Portal) -> int:
    """Tie each watched account to the portal's own company (mycompanyId) whose requisites carry the linked INN.

    Only matters when the portal has several own companies: then a payment to one company's account is
    matched only against that company's invoices. Returns how many accounts were assigned.
    """
    from b24app.storage.models import BankAccount, BankLink

    with ctx.db.session() as s:
        rows = s.execute(select(BankAccount.id, BankLink.inn).join(BankLink, BankLink.id == BankAccount.link_id)
                         .where(BankAccount.portal_id == portal.id, BankAccount.mycompany_id.is_(None),
                                BankLink.status == "active")).all()
    if not rows:
        return 0
    client = ctx.bitrix(portal.member_id)
    mine = [int(c["ID"]) for c in client.list_all("crm.company.list", {"filter": {"IS_MY_COMPANY": "Y"},
                                                                        "select": ["ID"]})]
    if len(mine) < 2:
        return 0  # one own company (or none recorded): every open invoice is a candidate
    by_inn = {inn: cid for cid, inn in payer_inns(client, set(mine)).items()}
    assigned = 0
    with ctx.db.session() as s:
        for account_id, inn in rows:
            if inn in by_inn:
                s.get(BankAccount, account_id).mycompany_id = by_inn[inn]
                assigned += 1
    return assigned


# -- the deal tab's render: its one verifying call reads the invoices, and the cache takes what changed ------
def tab_commands(ctx, kind: str):
    """Extra read commands for the verifying batch: the deal (its responsible), its invoices, stage semantics."""
    def build(portal, entity_id):
        if entity_id is None:
            return {}
        if kind == "deal":
            cmds = {"deal": ("crm.deal.get", {"id": entity_id}),
                    "invoices": crm.invoice_list({"parentId2": entity_id}, ITEM_SELECT, {"id": "ASC"})}
        else:
            cmds = {"invoices": crm.invoice_list({"id": entity_id}, ITEM_SELECT),
                    "deal": ("crm.deal.get", {"id": "$result[invoices][items][0][parentId2]"})}
        with ctx.db.session() as s:
            categories = sorted({c for c in s.scalars(select(Invoice.category_id).where(
                Invoice.portal_id == portal.id, Invoice.category_id.is_not(None)).distinct()) if c is not None})
            actors = usernames.tab_actors(s, portal.id, kind, entity_id)
        cmds.update(usernames.command(actors))  # names of who assigned payments by hand, in the same call
        for c in categories[:10]:
            cmds[f"stages{c}"] = crm.invoice_stages(c)
        # A portal we have never seen an invoice of: ask for the first item's category.
        cmds["stages_first"] = crm.invoice_stages("$result[invoices][items][0][categoryId]")
        return cmds

    return build


def store_fetched(ctx, portal_id: int, results: dict) -> tuple[int | None, bool]:
    """Upsert the invoices the verifying call returned; returns (deal responsible, invoices read ok)."""
    semantics: dict[str, str | None] = {}
    for key, rows in results.items():
        if key.startswith("stages") and isinstance(rows, list):
            for row in rows:
                if isinstance(row, dict) and row.get("STATUS_ID"):
                    semantics[str(row["STATUS_ID"])] = row.get("SEMANTICS") or None
    listed = results.get("invoices")
    items = listed.get("items") if isinstance(listed, dict) else None
    ok = isinstance(items, list)
    items = [i for i in items or [] if isinstance(i, dict) and str(i.get("id", "")).isdigit()]
    changed = _changed(ctx, portal_id, items, semantics)
    if changed:  # no write transaction when Bitrix24 says what the cache already knows
        upsert_items(ctx, portal_id, changed, semantics, {})
    deal = results.get("deal")
    owner = deal.get("ASSIGNED_BY_ID") if isinstance(deal, dict) else None
    return (int(owner) if str(owner or "").isdigit() else None), ok


_COMPARED = ("number", "title", "amount", "currency", "stage_id", "stage_semantics", "category_id", "deal_id",
             "assigned_by_id", "company_id", "mycompany_id", "created")


def _changed(ctx, portal_id: int, items: list[dict], semantics: dict) -> list[dict]:
    """The items whose cached copy is missing or differs (compared after the same mapping the upsert uses)."""
    if not items:
        return []
    with ctx.db.session() as s:
        rows = {inv.b24_id: inv for inv in s.scalars(select(Invoice).where(
            Invoice.portal_id == portal_id, Invoice.b24_id.in_([int(i["id"]) for i in items])))}
        s.expunge_all()
    out = []
    for item in items:
        row = rows.get(int(item["id"]))
        if row is None:
            out.append(item)
            continue
        probe = Invoice(stage_semantics=row.stage_semantics, payer_inn=row.payer_inn)
        apply_item(probe, item, semantics, {})
        if any(getattr(probe, f) != getattr(row, f) for f in _COMPARED):
            out.append(item)
    return out
