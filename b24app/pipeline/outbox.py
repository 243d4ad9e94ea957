"""Bitrix24 effects leave through here: written first, sent in batches, checked against Bitrix24 on retry.

An item is `pending` → `sending` (committed before the HTTP call) → `done` | `skipped` | `dead`.
An item found in `sending` with an expired lease was maybe sent by a worker that died: before sending it
again we look in Bitrix24 (the invoice stage, the deal stage, the timeline, the task list, the deal's payment
records by their marker) and only send if the effect is not there. Notifications carry a TAG derived from the
key, which Bitrix24 uses to replace, not duplicate, a notification with the same tag.
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, case, or_, select, update

from . import invoices
from b24app.storage import leases
from b24app.backoff import Backoff
from b24app.adapters.bitrix import crm
from b24app.adapters.bitrix.client import BATCH_LIMIT
from b24app.adapters.bitrix.errors import (AccessDenied, BitrixError, InsufficientScope, NotFound, OperationTimeLimit,
                                           PortalGone)
from . import paymentrecords as records
from .effects import (DealPaidSum, DealReopen, DealStage, Effect, EffectKind, InvoicePaid, InvoicePartial,
                      InvoiceReopen, Notify, PaymentRecord, PaymentRecordUndo, Task, Timeline, Trigger, UnknownEffect,
                      load)
from b24app.storage.models import Invoice, InvoiceRefresh, OutboxItem, Portal
from .paidfield import same_money

log = logging.getLogger("b24app.pipeline.outbox")
MAX_ATTEMPTS = 8
ITEM_BACKOFF = Backoff(base=5, cap=600)  # seconds before an item is tried again, by attempts so far
# Portal.settings key: set while the user whose tokens we hold (the installer) is not a Bitrix24 administrator,
# which crm.automation.trigger.* require (crm-automation-trigger-execute.md); the admin page shows it.
TRIGGER_ACCESS_KEY = "trigger_access"
NEEDS_ADMIN = "needs admin: the user who installed the app is not a Bitrix24 administrator any more"
# Payment records (#15): sale.payment.update needs scope `sale` and an administrator (sale-payment-update.md).
# Without them the record is skipped, saying why; the «Оплачено» field and the stages go on.
NEEDS_SALE = "needs scope sale: the portal did not grant the app access to online store payments"
NEEDS_ADMIN_RECORDS = "needs admin: payment records are written by an administrator, the installer is not one"
_SALE_DENIED = ("200040300010", "200040300020")  # sale.payment.* "Недостаточно прав" (sale-payment-update.md)
# What each kind reads and whether it goes first: EffectKind's properties (b24app/pipeline/effects.py).
_MONEY_FIRST = tuple(k.value for k in EffectKind if k.money_first)
_RECORDS = tuple(k.value for k in EffectKind if k.records_payment)


def _kind(item: OutboxItem) -> EffectKind | None:
    """The item's kind, None for one this app does not know (planned as skipped, see _plan)."""
    try:
        return EffectKind(item.kind)
    except ValueError:
        return None


def _is(item: OutboxItem, prop: str) -> bool:
    kind = _kind(item)
    return kind is not None and getattr(kind, prop)


def tag_for(key: str) -> str:
    return "b24app:" + hashlib.sha256(key.encode()).hexdigest()[:24]


def marker_for(key: str) -> str:
    """A short reference printed in task titles (and, before, in timeline comments), found again on retry."""
    return "ref " + hashlib.sha256(key.encode()).hexdigest()[:10]


_PAID_KEY = re.compile(r"op(\d+):d(\d+):inv(\d+):timeline")
_UNDO_KEY = re.compile(r"undo:d(\d+):inv(\d+):timeline")
_REFERENCES = {
    "ru": ("(платёж № {op} в приложении, запись {d}/{inv})", "(отмена в приложении, запись {d}/{inv})"),
    "en": ("(payment No. {op} in the app, record {d}/{inv})", "(undone in the app, record {d}/{inv})"),
}


def timeline_reference(key: str, lang: str = "ru") -> str:
    """What a timeline comment ends with: a reference a person reads («платёж № 123 в приложении»), unique per
    effect (payment, decision, invoice; the closing parenthesis keeps 45/7 from matching 45/70), so that a retry
    after a crash finds the comment it may already have written. Keys of another shape keep the old tag."""
    paid, undo = _REFERENCES.get(lang, _REFERENCES["ru"])
    if m := _PAID_KEY.fullmatch(key):
        return paid.format(op=m[1], d=m[2], inv=m[3])
    if m := _UNDO_KEY.fullmatch(key):
        return undo.format(d=m[1], inv=m[2])
    return f"[{marker_for(key)}]"


def timeline_references(key: str) -> tuple[str, ...]:
    """Every reference a comment for this key may carry: either language, and the old `[ref …]` tag."""
    return tuple(dict.fromkeys((timeline_reference(key, "ru"), timeline_reference(key, "en"), marker_for(key))))


def pending_count(ctx, portal_id: int) -> int:
    from sqlalchemy import func
    with ctx.db.session() as s:
        return s.scalar(select(func.count()).select_from(OutboxItem).where(
            OutboxItem.portal_id == portal_id, OutboxItem.status.in_(("pending", "sending")))) or 0


def _lease(ctx) -> timedelta:
    return timedelta(seconds=ctx.settings.lease_seconds)


def _claim(ctx, portal_id: int, owner: str, limit: int) -> list[tuple[OutboxItem, bool]]:
    now = ctx.clock.now()
    with ctx.db.session() as s:
        # Locked, then stamped here: the claim must know which items were `sending` (leases.claim returns ids).
        rows = list(s.scalars(leases.lock_due(
            select(OutboxItem).where(
                OutboxItem.portal_id == portal_id,
                # a pending item holds no lease; one left `sending` is taken again once its lease ran out
                or_(and_(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= now),
                    OutboxItem.status == "sending"))
            # Money state first: invoices and deals move, then payment records are written, before chat,
            # comments and triggers go out.
            .order_by(case((OutboxItem.kind.in_(_MONEY_FIRST), 0), (OutboxItem.kind.in_(_RECORDS), 1),
                           else_=2),
                      OutboxItem.id),
            OutboxItem.__table__, now=now, limit=limit)))
        out = []
        for item in rows:
            uncertain = item.status == "sending"  # a previous attempt may have reached Bitrix24
            item.status, item.lease_owner, item.lease_until = "sending", owner, now + _lease(ctx)
            item.attempts += 1
            out.append((item, uncertain))
    return out


def _renew(ctx, item_ids: list[int], owner: str) -> set[int]:
    """Extend our leases right before sending; returns the ids still ours (a slow read may have lost some)."""
    now = ctx.clock.now()
    with ctx.db.session() as s:
        s.execute(update(OutboxItem).where(OutboxItem.id.in_(item_ids), OutboxItem.lease_owner == owner,
                                           OutboxItem.lease_until >= now)
                  .values(lease_until=now + _lease(ctx)))
        return set(s.scalars(select(OutboxItem.id).where(OutboxItem.id.in_(item_ids),
                                                         OutboxItem.lease_owner == owner,
                                                         OutboxItem.lease_until > now)))


def _finish(ctx, item_id: int, owner: str, status: str, result: dict | None = None, error: str | None = None,
            retry_in: float | None = None) -> None:
    now = ctx.clock.now()
    values: dict = {"lease_owner": None, "lease_until": None}
    if retry_in is not None:
        values.update(status="pending", next_attempt_at=now + timedelta(seconds=retry_in), last_error=error)
    else:
        values.update(status=status, result=result, last_error=error, done_at=now)
    with ctx.db.session() as s:
        s.execute(update(OutboxItem).where(OutboxItem.id == item_id, OutboxItem.lease_owner == owner).values(**values))


def deliver(ctx, portal: Portal, *, limit: int = 250, after_send: Callable[[list[OutboxItem]], None] | None = None
            ) -> dict:
    """Send due effects of one portal: one batch of reads, one batch of writes (50 commands per request).

    `after_send` (None in production) is the crash point: called with a chunk's items right after Bitrix24
    answered their write batch and before anything of it is recorded. A test makes it raise to play a worker
    that dies there; the items stay `sending` under their lease, as after a real crash."""
    owner = f"outbox-{uuid.uuid4().hex[:12]}"
    claimed = _claim(ctx, portal.id, owner, limit)
    if not claimed:
        return {"sent": 0}
    client = ctx.bitrix(portal.member_id)
    try:
        categories, known, lists = _from_cache(ctx, portal, claimed)
        reads = _read_state(client, claimed, categories, known, lists)
        _keep_stage_lists(portal.member_id, {k: v for k, v in reads.items()
                                             if k.startswith("st") and v is not lists.get(int(k[2:]))})
        _remember_deal_success_stages(ctx, portal.id, reads)
    except PortalGone as exc:
        for item, _ in claimed:
            _finish(ctx, item.id, owner, "dead", error=f"portal gone: {exc.code}")
        return {"sent": 0, "dead": len(claimed)}
    except BitrixError as exc:
        for item, uncertain in claimed:  # an interrupted attempt stays one until Bitrix24 has been checked
            _retry_or_die(ctx, item, owner, f"read failed: {exc.code}", unsure=uncertain)
        return {"sent": 0, "retry": len(claimed)}
    commands: dict[str, dict[str, tuple[str, dict]]] = {}  # item key -> its commands (one; a record has 2-3)
    plan: dict[str, tuple[OutboxItem, dict]] = {}
    skipped = deferred = 0
    is_admin = reads.get("admin")  # user.admin of the installer, read when triggers are due (None: unknown)
    if isinstance(is_admin, bool):
        note_trigger_access(ctx, portal.id, is_admin, None if is_admin else "user.admin: false")
    _fill_paid_sums(ctx, portal.id, claimed)
    for item, uncertain in claimed:
        if item.kind == EffectKind.TRIGGER and is_admin is False:
            _finish(ctx, item.id, owner, "skipped", result={"why": NEEDS_ADMIN, "needs_admin": True})
            skipped += 1
            continue
        if _is(item, "records_payment") and (blocked := records_blocked(portal, is_admin)):
            _finish(ctx, item.id, owner, "skipped", result=blocked)
            skipped += 1
            continue
        failed_check = _recheck_failed(item, uncertain, reads)
        if failed_check is not None:  # not known whether the record is there: asked again after the back-off
            _retry_or_die(ctx, item, owner, f"re-check failed: {failed_check.code}", unsure=True)
            continue
        blocked_read = reads.get(_read_key(item, uncertain))
        if isinstance(blocked_read, OperationTimeLimit):
            _defer(ctx, item, owner, blocked_read.reset_at, f"read {blocked_read.method}: {blocked_read.code}")
            deferred += 1
            continue
        decision = _plan(item, uncertain, reads)
        if decision is None or decision[0] is None:
            _finish(ctx, item.id, owner, "skipped", result=(decision[1] if decision else {"why": "nothing to do"}))
            if decision:
                _cache_stage(ctx, portal.id, item, decision[1])
            skipped += 1
            continue
        key = f"i{item.id}"
        mine = decision[0] if isinstance(decision[0], dict) else {key: decision[0]}  # a record: named commands
        info = decision[1]
        until = max((u for m, _ in mine.values() if (u := _blocked_until(ctx, portal, m)) is not None), default=None)
        if until is not None:  # known blocked: other items' methods go out, this one waits for the reset
            method = next(m for m, _ in mine.values() if _blocked_until(ctx, portal, m) is not None)
            _defer(ctx, item, owner, until, f"{method}: OPERATION_TIME_LIMIT (until the bucket resets)")
            deferred += 1
            continue
        commands[key] = mine
        plan[key] = (item, info)
    sent = failed = 0
    if commands:
        still_ours = _renew(ctx, [item.id for item, _ in plan.values()], owner)
        for key in [k for k, (item, _) in plan.items() if item.id not in still_ours]:
            del commands[key], plan[key]  # another worker took it over: it re-checks Bitrix24 itself
        _note_planned(ctx, owner, [(item, info) for item, info in plan.values() if _is(item, "moves_money_state")])
    # Chunk by chunk (50 commands per request), so that a failure knows what already went out: the chunks
    # before it are done, the chunk itself may or may not have reached Bitrix24, the rest never left.
    interrupted = {item.id for item, uncertain in claimed if uncertain}
    chunks = _chunks(commands, plan)
    retry = 0
    own: list[tuple[dict, str]] = []
    own_deals: dict[int, str] = {}   # deal id -> the stage we moved it to
    cleanup: dict[str, tuple[str, dict]] = {}  # half-made payment records to remove (no marker finds them later)
    deals_seen: list[dict] = []      # the same deals as read right after the moves, in the same batch
    for n, chunk in enumerate(chunks):
        cmds = {name: cmd for k in chunk for name, cmd in commands[k].items()}
        moved = sorted({int(plan[k][0].payload["deal_id"]) for k in chunk if _is(plan[k][0], "moves_deal")})
        if moved:  # batch commands run in order (how-to-call-rest-api/batch.md): this reads after the moves
            cmds[DEAL_STAMPS] = crm.deal_list(moved, invoices.DEAL_STAMP_SELECT)
        try:
            res = client.batch(cmds)
        except BitrixError as exc:
            for k in chunk:
                item = plan[k][0]
                _retry_or_die(ctx, item, owner, f"batch failed: {exc.code}",
                              unsure=exc.may_have_run or item.id in interrupted)
            for k in [k for later in chunks[n + 1:] for k in later]:
                item = plan[k][0]
                _retry_or_die(ctx, item, owner, "not sent: an earlier batch failed", unsure=item.id in interrupted)
            retry = sum(len(c) for c in chunks[n:])
            break
        if after_send is not None:
            after_send([plan[k][0] for k in chunk])
        if isinstance(res.results.get(DEAL_STAMPS), list):
            deals_seen.extend(res.results[DEAL_STAMPS])
        for key in chunk:
            item, info = plan[key]
            if _is(item, "records_payment"):
                why = _record_answer(ctx, item, owner, key, info, commands[key], res, cleanup,
                                     unsure=item.id in interrupted)
                sent, skipped = sent + (why == "done"), skipped + (why == "skipped")
                failed, deferred = failed + (why == "failed"), deferred + (why == "deferred")
                continue
            if isinstance(res.errors.get(key), OperationTimeLimit):
                deferred += 1
                _defer(ctx, item, owner, res.errors[key].reset_at, f"{res.errors[key].code}: {commands[key][key][0]}")
            elif item.kind == EffectKind.TRIGGER and isinstance(res.errors.get(key), AccessDenied):
                # demoted between the read and the send: the same as a read saying so
                skipped += 1
                note_trigger_access(ctx, portal.id, False, f"{res.errors[key].code}: {res.errors[key].description}")
                _finish(ctx, item.id, owner, "skipped", result={"why": NEEDS_ADMIN, "needs_admin": True})
            elif key in res.errors:
                if _is(item, "reads_invoice"):
                    _forget_stage_lists(portal.member_id)  # a stage gone since: read the lists again
                failed += 1
                _retry_or_die(ctx, item, owner, f"{res.errors[key].code}: {res.errors[key].description}"[:500],
                              unsure=item.id in interrupted)
            else:
                sent += 1
                _finish(ctx, item.id, owner, "done", result={**info, "result": _small(res.results.get(key))})
                _cache_stage(ctx, portal.id, item, info)  # our copy follows the stage even without an item answer
                if _is(item, "reads_invoice"):
                    own.append((res.results.get(key), info["to_stage"]))
                elif _is(item, "moves_deal"):
                    own_deals[int(item.payload["deal_id"])] = info["to_stage"]
    if cleanup:  # records added whose sum or pay failed: unpaid and removed now, while their ids are known
        try:
            gone = client.batch(cleanup)
            if gone.errors:
                log.warning("half-made payment records not removed", extra={
                    "portal_id": portal.id, "errors": {k: e.code for k, e in gone.errors.items()}})
        except BitrixError as exc:
            log.warning("half-made payment records not removed", extra={"portal_id": portal.id, "error": exc.code})
    if own:  # the answers carry the whole item: the cache follows, and their echo events cost no re-read
        invoices.record_own_updates(ctx, portal.id, own, _semantics(reads))
    if own_deals:  # neither do the echoes of our deal moves, when the read after them shows exactly ours
        invoices.record_own_deal_updates(ctx, portal.id, portal.installed_by, own_deals, deals_seen)
    out = {"sent": sent, "skipped": skipped, "failed": failed}
    if deferred:
        out["deferred"] = deferred
    if retry:
        out["retry"] = retry
    return out


DEAL_STAMPS = "deals"  # the write batch's own read of the deals it moved (not an outbox item's key: those are i<id>)


def _chunks(commands: dict, plan: dict) -> list[list[str]]:
    """The write batches of item keys: 50 commands each, one of them kept for the read after the deal moves
    when a batch holds any (the claim puts stage moves first, so these are the first batches). An item's
    commands stay in one batch: a payment record's refer to each other with `$result[...]`, which does not
    reach into another batch (settings/how-to-call-rest-api/batch.md)."""
    out: list[list[str]] = []
    chunk: list[str] = []
    used = 0
    for key in commands:
        size = len(commands[key])
        deal = _is(plan[key][0], "moves_deal")
        has_deal = any(_is(plan[k][0], "moves_deal") for k in chunk)
        if chunk and used + size + (1 if (deal or has_deal) else 0) > BATCH_LIMIT:
            out.append(chunk)
            chunk, used = [], 0
        chunk.append(key)
        used += size
    if chunk:
        out.append(chunk)
    return out


def portal_scopes(portal: Portal) -> set[str] | None:
    """The scopes the portal granted the app, as the install (or the last token) said; None: not known."""
    got = {x.strip() for x in str(portal.scope or "").replace(" ", ",").split(",")} - {""}
    return got or None


def records_blocked(portal: Portal, is_admin: bool | None) -> dict | None:
    """Why payment records cannot be written on this portal now (the skipped item's result), or None."""
    scopes = portal_scopes(portal)
    if scopes is not None and "sale" not in scopes:
        return {"why": NEEDS_SALE, "needs_scope": "sale"}
    if is_admin is False:
        return {"why": NEEDS_ADMIN_RECORDS, "needs_admin": True}
    return None


def records_access(portal: Portal, rules) -> str | None:
    """For the admin page: why payment records are not written on this portal ("sale" | "admin"), or None."""
    if not getattr(rules, "payment_records", False):
        return None
    blocked = records_blocked(portal, False if (portal.settings or {}).get(TRIGGER_ACCESS_KEY) else None)
    return None if blocked is None else ("sale" if blocked.get("needs_scope") else "admin")


def _recheck_failed(item: OutboxItem, uncertain: bool, reads: dict) -> BitrixError | None:
    """The re-check of an interrupted payment record that Bitrix24 did not answer (then nothing is sent)."""
    if not (uncertain and _is(item, "records_payment")):
        return None
    for part in ("deal", "mark"):
        if isinstance(err := reads.get(f"rec{item.id}_{part}"), BitrixError):
            return err
    return None


def _record_answer(ctx, item: OutboxItem, owner: str, key: str, info: dict, sent: dict, res, cleanup: dict, *,
                   unsure: bool) -> str:
    """Record what a payment record's (or its undo's) commands left: done | skipped | failed | deferred. A
    record added whose sum or pay failed goes into `cleanup` (unpaid and deleted after the chunk)."""
    errors = {n: res.errors[n] for n in sent if n in res.errors}
    if item.kind == EffectKind.PAYMENT_RECORD and f"{key}_add" in sent:
        got = records.outcome(key, res.results, res.errors)
        if got.complete:
            _finish(ctx, item.id, owner, "done", result={**info, "payment_id": got.payment_id})
            return "done"
        cleanup.update(got.cleanup)
    elif not errors:
        _finish(ctx, item.id, owner, "done", result={**info, "done": sorted(sent)})
        return "done"
    err = next(iter(errors.values()), None)
    if err is None:  # no error, yet not paid: an answer we cannot read
        _retry_or_die(ctx, item, owner, "payment record: pay did not answer true", unsure=unsure)
        return "failed"
    if isinstance(err, OperationTimeLimit):
        _defer(ctx, item, owner, err.reset_at, f"{err.code}: {err.method or ''}")
        return "deferred"
    if isinstance(err, InsufficientScope) or isinstance(err, AccessDenied) or str(err.code) in _SALE_DENIED:
        blocked = {"why": NEEDS_SALE, "needs_scope": "sale"} if isinstance(err, InsufficientScope) else \
            {"why": NEEDS_ADMIN_RECORDS, "needs_admin": True}
        _finish(ctx, item.id, owner, "skipped", result={**blocked, "error": f"{err.code}: {err.description}"[:300]})
        return "skipped"
    _retry_or_die(ctx, item, owner, f"{err.code}: {err.description}"[:500], unsure=unsure)
    return "failed"


def _fill_paid_sums(ctx, portal_id: int, claimed: list[tuple[OutboxItem, bool]]) -> None:
    """The «Оплачено» value is computed when it is sent, from our records as they are now (never an older total)."""
    items = [item for item, _ in claimed if item.kind == EffectKind.DEAL_PAID_SUM]
    if not items:
        return
    from .paidfield import deal_paid_value  # noqa: PLC0415  (paidfield's enqueue_sum imports this module)

    with ctx.db.session() as s:
        for item in items:
            item.payload = {**item.payload, "value": deal_paid_value(s, portal_id, int(item.payload["deal_id"]))}


def _note_planned(ctx, owner: str, items: list[tuple[OutboxItem, dict]]) -> None:
    """Before a stage change leaves, remember the stage it moves from: if the worker dies after sending, the
    retry finds the stage already set and still knows where it came from (undo moves it back there)."""
    if not items:
        return
    with ctx.db.session() as s:
        for item, info in items:
            s.execute(update(OutboxItem).where(OutboxItem.id == item.id, OutboxItem.lease_owner == owner)
                      .values(result={"planned": info}))


def _sent_before(item: OutboxItem, uncertain: bool, stage) -> dict | None:
    """The stage move an interrupted attempt planned, when Bitrix24 now shows exactly its target."""
    planned = (item.result or {}).get("planned") or {}
    if uncertain and planned.get("from_stage") and planned.get("to_stage") == stage:
        return planned
    return None


def _cache_stage(ctx, portal_id: int, item: OutboxItem, info: dict) -> None:
    """Our invoice copy follows a stage we just set, so the tab does not wait for Bitrix24's event."""
    if item.kind == EffectKind.INVOICE_PAID and info.get("to_stage"):
        stage, semantics = info["to_stage"], "S"
    elif item.kind == EffectKind.INVOICE_REOPEN and info.get("to_stage"):
        stage, semantics = info["to_stage"], info.get("to_semantics") or None
    elif item.kind == EffectKind.INVOICE_PARTIAL and info.get("to_stage"):
        stage, semantics = info["to_stage"], None
    else:
        return
    with ctx.db.session() as s:
        s.execute(update(Invoice).where(Invoice.portal_id == portal_id,
                                        Invoice.b24_id == int(item.payload["invoice_id"]))
                  .values(stage_id=stage, stage_semantics=semantics))
def _defer(ctx, item: OutboxItem, owner: str, until: float | None, error: str) -> None:
    """The method this item needs is blocked by Bitrix24's operating-time limit (limits.md): try again at
    `until` (epoch seconds, from the last answer's operating_reset_at), not before, and without spending one of
    its attempts — nothing was done, and a block of ten minutes is no reason to give up on an effect."""
    now = ctx.clock.now()
    when = datetime.fromtimestamp(until, timezone.utc) if until else now + timedelta(seconds=60)
    with ctx.db.session() as s:
        s.execute(update(OutboxItem).where(OutboxItem.id == item.id, OutboxItem.lease_owner == owner).values(
            status="pending", lease_owner=None, lease_until=None, next_attempt_at=max(when, now),
            attempts=OutboxItem.attempts - 1, last_error=error[:500]))


def note_trigger_access(ctx, portal_id: int, is_admin: bool, error: str | None = None) -> None:
    """Keep the portal's flag in step with what Bitrix24 says about the installer's admin rights."""
    now = ctx.clock.now()
    with ctx.db.session() as s:
        if is_admin and not (s.scalar(select(Portal.settings).where(Portal.id == portal_id)) or {}).get(
                TRIGGER_ACCESS_KEY):
            return  # the usual case: nothing to change, no lock taken
        row = s.scalar(select(Portal).where(Portal.id == portal_id).with_for_update())
        current = (row.settings or {}).get(TRIGGER_ACCESS_KEY)
        if is_admin:
            if current:
                row.settings = {k: v for k, v in row.settings.items() if k != TRIGGER_ACCESS_KEY}
                log.info("trigger access back", extra={"portal_id": portal_id})
            return
        if not current:
            log.warning("automation triggers need an administrator",
                        extra={"portal_id": portal_id, "user_id": row.installed_by, "error": error})
        row.settings = {**(row.settings or {}), TRIGGER_ACCESS_KEY: {
            "user_id": row.installed_by, "since": (current or {}).get("since") or now.isoformat(),
            "checked_at": now.isoformat(), "error": error}}


def _blocked_until(ctx, portal: Portal, method: str) -> float | None:
    return ctx.operating_limits.blocked_until(portal.member_id, method)


def _retry_or_die(ctx, item: OutboxItem, owner: str, error: str, *, unsure: bool = False) -> None:
    """Try again after a back-off, or give up after MAX_ATTEMPTS. `unsure`: the effect may have reached
    Bitrix24, so the item stays `sending` without an owner; claimed again after the back-off it counts as an
    interrupted attempt, and Bitrix24 is checked before anything is sent again (a trigger is not re-fired)."""
    if item.attempts >= MAX_ATTEMPTS:
        log.error("outbox item dead", extra={"portal_id": item.portal_id, "key": item.key, "error": error})
        _finish(ctx, item.id, owner, "dead", error=error)
        return
    delay = ITEM_BACKOFF.delay(item.attempts)
    if not unsure:
        _finish(ctx, item.id, owner, "pending", error=error, retry_in=delay)
        return
    with ctx.db.session() as s:
        s.execute(update(OutboxItem).where(OutboxItem.id == item.id, OutboxItem.lease_owner == owner).values(
            lease_owner=None, lease_until=ctx.clock.now() + timedelta(seconds=delay), last_error=error))


def _small(value):
    if isinstance(value, (dict, list)):
        return {"type": type(value).__name__}
    return value


# -- reading Bitrix24's current state --------------------------------------------------------------------
STAGE_LIST_TTL = 300.0  # seconds a funnel's stage list is trusted without reading it again
_stage_lists: dict[tuple[str, int], tuple[float, list]] = {}  # (member_id, category) -> (monotonic, rows)
_stage_lock = threading.Lock()


def _keep_stage_lists(member_id: str, read: dict) -> None:
    """Remember the stage lists just read from Bitrix24 (`st<category>` keys)."""
    now = time.monotonic()
    with _stage_lock:
        for key, rows in read.items():
            if isinstance(rows, list):
                _stage_lists[(member_id, int(key[2:]))] = (now, rows)


def _forget_stage_lists(member_id: str) -> None:
    with _stage_lock:
        for key in [k for k in _stage_lists if k[0] == member_id]:
            del _stage_lists[key]


def _fresh_stage_list(member_id: str, category: int) -> list | None:
    with _stage_lock:
        got = _stage_lists.get((member_id, category))
    return got[1] if got and time.monotonic() - got[0] < STAGE_LIST_TTL else None


def _from_cache(ctx, portal: Portal, claimed: list[tuple[OutboxItem, bool]]
                ) -> tuple[set[int], dict[int, dict], dict[int, list]]:
    """The categories (funnels) our invoice cache puts the claimed invoices in (their stage lists are read in
    the same batch as the invoices), and the invoices whose move to paid needs no read at all: a first
    attempt, the invoice open in our cache, no event about it (or its deal) waiting to be read, and its
    funnel's stage list read less than STAGE_LIST_TTL ago. Those are decided from the cache, which every
    event of a change keeps as fresh as a read (the decision to pay them came from the same cache); an
    interrupted attempt is always checked in Bitrix24. Third: the stage lists read lately, by category."""
    ids = {int(item.payload["invoice_id"]) for item, _ in claimed if _is(item, "reads_invoice")}
    first = {int(item.payload["invoice_id"]) for item, uncertain in claimed
             if item.kind == EffectKind.INVOICE_PAID and not uncertain}
    if not ids:
        return set(), {}, {}
    with ctx.db.session() as s:
        rows = list(s.execute(select(Invoice.b24_id, Invoice.category_id, Invoice.stage_id, Invoice.stage_semantics,
                                     Invoice.deal_id).where(Invoice.portal_id == portal.id, Invoice.b24_id.in_(ids))))
        waiting = {(e, int(i)) for e, i in s.execute(select(InvoiceRefresh.entity, InvoiceRefresh.entity_id).where(
            InvoiceRefresh.portal_id == portal.id))}
    categories = {int(r.category_id) for r in rows if r.category_id is not None}
    lists = {c: rows_ for c in categories if (rows_ := _fresh_stage_list(portal.member_id, c)) is not None}
    known = {}
    for r in rows:
        if (r.b24_id in first and r.category_id in lists and r.stage_semantics is None and r.stage_id
                and ("invoice", r.b24_id) not in waiting and ("deal", r.deal_id or 0) not in waiting):
            known[r.b24_id] = {"id": r.b24_id, "stageId": r.stage_id, "categoryId": int(r.category_id)}
    return categories, known, lists


def _semantics(reads: dict) -> dict[str, str | None]:
    """stageId -> 'S' | 'F' | None from the stage lists read with the invoices."""
    return {row["STATUS_ID"]: row.get("SEMANTICS") or None
            for key, rows in reads.items() if key.startswith("st") for row in rows or []}


_stage_list = crm.invoice_stages


def _read_state(client, claimed: list[tuple[OutboxItem, bool]], categories: set[int] = frozenset(),
                known: dict[int, dict] | None = None, lists: dict[int, list] | None = None) -> dict:
    """What Bitrix24 shows now for the claimed items: one batch with the invoices, deals, timelines and tasks
    to check and the stage lists of the invoices' categories as cached; a second batch only for a category
    the cache did not know (an invoice moved to another funnel since). `known` invoices and the stage `lists`
    read lately (see _from_cache) come from the cache: with nothing else to check there is no request."""
    cmds: dict[str, tuple[str, dict]] = {}
    reads: dict = {}
    deals: set[int] = set()
    effects = [(item, uncertain, _effect(item)) for item, uncertain in claimed]
    for item, uncertain, e in effects:
        if isinstance(e, InvoicePaid) and not uncertain and int(e.invoice_id) in (known or {}):
            reads[f"inv{e.invoice_id}"] = {"item": known[int(e.invoice_id)]}
        elif e is not None and e.kind.reads_invoice:
            cmds[f"inv{e.invoice_id}"] = crm.invoice_get(e.invoice_id)
        elif e is not None and e.kind.reads_deal:
            deals.add(int(e.deal_id))
        elif isinstance(e, Timeline) and uncertain:
            cmds[f"tl{e.deal_id}"] = ("crm.timeline.comment.list", {
                "filter": {"ENTITY_ID": e.deal_id, "ENTITY_TYPE": "deal"}, "order": {"ID": "DESC"}})
        elif isinstance(e, Task) and uncertain:
            # tasks-task-list.md: TITLE takes a LIKE pattern ("по шаблону [%_]"); `%TITLE` is not documented.
            cmds[f"task{item.id}"] = ("tasks.task.list", {"filter": {"RESPONSIBLE_ID": e.responsible_id,
                                                                      "TITLE": f"%{marker_for(item.key)}%"},
                                                           "select": ["ID", "TITLE"]})
    for item, uncertain, e in effects:
        if uncertain and isinstance(e, (PaymentRecord, PaymentRecordUndo)):
            # did the interrupted attempt leave the record? The deal's records and ours by marker (#15)
            cmds.update(records.recheck_commands(f"rec{item.id}", e.deal_id, e.marker))
    # 50 deals per command, as crm.deal.list pages (crm/deals/crm-deal-list.md: `@ID` takes an array), not one
    # crm.deal.get each: a statement's deals are a few commands of one request instead of a request per 50.
    ids = sorted(deals)
    # the «Оплачено» fields a deal_paid_sum item compares with what it would set (#15)
    select = DEAL_READ_SELECT + sorted({str(e.field) for _, _, e in effects if isinstance(e, DealPaidSum) and e.field})
    if any(isinstance(e, PaymentRecord) for _, _, e in effects):
        select = select + ["CURRENCY_ID"]  # a record takes the deal's currency (paymentrecords.commands_for)
    for n in range(0, len(ids), 50):
        cmds[f"deals{n}"] = crm.deal_list(ids[n:n + 50], select)
    if any((isinstance(e, Trigger) and not uncertain) or isinstance(e, (PaymentRecord, PaymentRecordUndo))
           for _, uncertain, e in effects):
        # crm.automation.trigger.execute needs an administrator (crm-automation-trigger-execute.md); the
        # token is the installer's, whose rights can be taken away: ask first (api-reference/common/users/
        # user-admin.md) instead of failing every trigger.
        cmds["admin"] = ("user.admin", {})
    if any(isinstance(e, DealStage) and e.default == "success" and (e.stages or {}).get("0") is None
           for _, _, e in effects):
        # The pipeline whose success stage the move needs is known only once the deal is read. Most deals are
        # in the general one: its stage list comes along now, not in a second request after the deal (the
        # first payment would cost 3). A batch reference cannot pick it: `$result[deal][CATEGORY_ID]` fills a
        # value in, but the list's ENTITY_ID is DEAL_STAGE for pipeline 0 and DEAL_STAGE_<id> for the others
        # (crm/status/crm-status-list.md); crm.dealcategory.stage.list takes the id, but it is deprecated
        # (crm/outdated/category-old/crm-deal-category-stage-list.md) and documents no fields, SEMANTICS
        # among them. Another pipeline is read after the deal, once, and remembered like this one.
        cmds["dst0"] = _deal_stage_list("0")
    reading = any(k.startswith("inv") for k in cmds)  # then the lists come along in the same request
    for c in sorted(categories):
        if c in (lists or {}) and not reading:
            reads[f"st{c}"] = lists[c]
        else:
            cmds[f"st{c}"] = _stage_list(c)
    if not cmds:
        return reads
    first = client.batch(cmds)
    reads.update(first.results)
    for key, err in first.errors.items():
        if key.startswith("st"):
            raise err  # a stage list that cannot be read: nothing about invoices can be decided
        if key.startswith("dst"):
            continue  # asked for again after the deals are read, where a failure stops the round
        if key.startswith("rec"):
            reads[key] = err  # that record's item waits (outbox._recheck_failed); the others go on
            continue
        if key.startswith("deals"):
            if not isinstance(err, OperationTimeLimit):
                raise err  # a list answers no NotFound: anything else is not an answer about the deals
            n = int(key[5:])
            reads.update({f"deal{i}": err for i in ids[n:n + 50]})
            continue
        if isinstance(err, OperationTimeLimit):
            reads[key] = err  # only the items that needed this read wait for the method's reset
            continue
        if key == "admin":
            continue  # unknown: the triggers are sent, and an ACCESS_DENIED answer says the same
        if not isinstance(err, NotFound):
            raise err
        reads[key] = None
    for n in range(0, len(ids), 50):
        if f"deals{n}" in first.results:
            rows = {str(r.get("ID")): r for r in first.results[f"deals{n}"] or [] if isinstance(r, dict)}
            reads.update({f"deal{i}": rows.get(str(i)) for i in ids[n:n + 50]})   # not listed: deleted
    wanted = {int(reads[k].get("item", {}).get("categoryId") or 0)
              for k in reads if k.startswith("inv") and isinstance(reads[k], dict)}
    missing = wanted - {int(k[2:]) for k in reads if k.startswith("st")}
    more = {f"st{c}": _stage_list(c) for c in sorted(missing)}
    more.update(_deal_stage_lists(claimed, reads))
    if more:
        stages = client.batch(more)
        stages.raise_first()
        reads.update(stages.results)
    return reads


def _read_key(item: OutboxItem, uncertain: bool) -> str | None:
    """Which read of `_read_state` this item's plan depends on (None: it needs none)."""
    p, kind = item.payload, _kind(item)
    if kind is None:
        return None
    if kind.reads_invoice:
        return f"inv{p['invoice_id']}"
    if kind in (EffectKind.DEAL_STAGE, EffectKind.DEAL_PAID_SUM, EffectKind.PAYMENT_RECORD):
        return f"deal{p['deal_id']}"
    if kind is EffectKind.TIMELINE and uncertain:
        return f"tl{p['deal_id']}"
    if kind is EffectKind.TASK and uncertain:
        return f"task{item.id}"
    return None


def _deal_stage_lists(claimed: list[tuple[OutboxItem, bool]], reads: dict) -> dict[str, tuple[str, dict]]:
    """Stage lists of the deals' pipelines whose success stage the payload left to be found here (the portal's
    pipeline cache did not know them when the payment was reconciled). crm.status.list: ENTITY_ID DEAL_STAGE
    for the general pipeline, DEAL_STAGE_<id> for the others (crm/status/crm-status-list.md)."""
    out = {}
    for item, _ in claimed:
        e = _effect(item)
        if not isinstance(e, DealStage) or e.default != "success":
            continue
        deal = reads.get(f"deal{e.deal_id}")
        if not isinstance(deal, dict):
            continue  # deleted, or its read is blocked (OperationTimeLimit): the item waits for the reset
        cat = str(deal.get("CATEGORY_ID") or 0)
        if (e.stages or {}).get(cat) is None and f"dst{cat}" not in reads:
            out[f"dst{cat}"] = _deal_stage_list(cat)
    return out


_deal_stage_list = crm.deal_stages


DEAL_READ_SELECT = ["ID", "CATEGORY_ID", "STAGE_ID", "CLOSED"]  # what _plan decides a deal move on
DEAL_SUCCESS_KEY = "deal_success_stages"  # on Portal.settings: pipeline id -> its S stage, as the outbox read it


def _remember_deal_success_stages(ctx, portal_id: int, reads: dict) -> None:
    """Keep the success stages just read, so the next payment's payload names them (no extra read)."""
    found = {key[3:]: success_stage(rows) for key, rows in reads.items() if key.startswith("dst")}
    found = {k: v for k, v in found.items() if v}
    if not found:
        return
    with ctx.db.session() as s:
        row = s.scalar(select(Portal).where(Portal.id == portal_id).with_for_update())
        row.settings = {**(row.settings or {}), DEAL_SUCCESS_KEY: {**((row.settings or {}).get(DEAL_SUCCESS_KEY) or {}),
                                                                   **found}}


def success_stage(stages) -> str | None:
    """The first stage with semantics S (success) of a crm.status.list answer."""
    for row in sorted((r for r in stages or [] if isinstance(r, dict)), key=lambda r: int(r.get("SORT") or 0)):
        semantics = row.get("SEMANTICS") or (row.get("EXTRA") or {}).get("SEMANTICS")
        if semantics == "S":
            return str(row["STATUS_ID"])
    return None


def _effect(item: OutboxItem) -> Effect | None:
    """The item's effect as stored (None: a kind this app does not know)."""
    try:
        return load(item.kind, item.payload)
    except UnknownEffect:
        return None


def _plan(item: OutboxItem, uncertain: bool, reads: dict):
    """(method, params), info — or (None, why) when Bitrix24 already shows the effect or it no longer applies."""
    e = _effect(item)
    if isinstance(e, InvoicePaid):
        current = (reads.get(f"inv{e.invoice_id}") or {}).get("item")
        if not current:
            return None, {"why": "invoice deleted"}
        stages = reads.get(f"st{current.get('categoryId')}") or []
        semantics = {s["STATUS_ID"]: s.get("SEMANTICS") for s in stages}
        if semantics.get(current["stageId"]) in ("S", "F"):
            before = _sent_before(item, uncertain, current["stageId"])
            if before:
                return None, {"why": "moved by an interrupted attempt", **before}
            return None, {"why": f"invoice already in final stage {current['stageId']}", "from_stage": None}
        target = next((s["STATUS_ID"] for s in sorted(stages, key=lambda s: int(s.get("SORT") or 0))
                       if s.get("SEMANTICS") == "S"), None)
        if target is None:
            return None, {"why": "no success stage in the invoice's category"}
        return crm.invoice_move(e.invoice_id, target), {"from_stage": current["stageId"], "to_stage": target}
    if isinstance(e, InvoicePartial):
        current = (reads.get(f"inv{e.invoice_id}") or {}).get("item")
        if not current:
            return None, {"why": "invoice deleted"}
        target = (e.stages or {}).get(str(current.get("categoryId")))
        if not target:
            return None, {"why": "no partly-paid stage chosen for this funnel"}
        stages = reads.get(f"st{current.get('categoryId')}") or []
        semantics = {s["STATUS_ID"]: s.get("SEMANTICS") for s in stages}
        if target not in semantics or semantics[target] in ("S", "F"):
            return None, {"why": f"stage {target} is not an in-progress stage of the funnel"}
        if semantics.get(current["stageId"]) in ("S", "F"):
            return None, {"why": f"invoice already in final stage {current['stageId']}"}
        if current["stageId"] == target:
            before = _sent_before(item, uncertain, target)
            if before:
                return None, {"why": "moved by an interrupted attempt", **before}
            return None, {"why": "invoice already there"}
        return crm.invoice_move(e.invoice_id, target), {"from_stage": current["stageId"], "to_stage": target}
    if isinstance(e, InvoiceReopen):
        current = (reads.get(f"inv{e.invoice_id}") or {}).get("item")
        if not current or current.get("stageId") != e.paid_stage:
            return None, {"why": "invoice was changed by a person since; left as it is"}
        stages = reads.get(f"st{current.get('categoryId')}") or []
        semantics = {s["STATUS_ID"]: s.get("SEMANTICS") for s in stages}
        return crm.invoice_move(e.invoice_id, e.to_stage), {"to_stage": e.to_stage,
                                                            "to_semantics": semantics.get(e.to_stage)}
    if isinstance(e, DealStage):
        deal = reads.get(f"deal{e.deal_id}")
        if not deal:
            return None, {"why": "deal not found (deleted, or not readable by the app's user)"}
        cat = str(deal.get("CATEGORY_ID") or 0)
        target = (e.stages or {}).get(cat)
        if target is None and e.default == "success":
            target = success_stage(reads.get(f"dst{cat}"))
        if not target:
            return None, {"why": "no stage chosen for this pipeline"}
        if deal.get("STAGE_ID") == target or deal.get("CLOSED") == "Y":
            before = _sent_before(item, uncertain, deal.get("STAGE_ID"))
            if before:
                return None, {"why": "moved by an interrupted attempt", **before}
            return None, {"why": "deal already there or closed"}
        return crm.deal_move(e.deal_id, target), {"from_stage": deal.get("STAGE_ID"), "to_stage": target}
    if isinstance(e, DealPaidSum):
        deal = reads.get(f"deal{e.deal_id}")
        if not deal:
            return None, {"why": "deal deleted"}
        if e.value is None:
            return None, {"why": "nothing to set"}
        if same_money(deal.get(e.field), e.value):
            return None, {"why": f"the field already shows {e.value}", "value": e.value}
        return crm.deal_update(e.deal_id, {e.field: e.value}), {"value": e.value}
    if isinstance(e, PaymentRecord):
        return _plan_record(item, e, uncertain, reads)
    if isinstance(e, PaymentRecordUndo):
        name = f"i{item.id}"
        if uncertain:
            mine = next((r for r in records.records(reads.get(f"rec{item.id}_deal")) if r.id == e.payment_id), None)
            if mine is None:
                return None, {"why": "payment record already removed", "payment_id": e.payment_id}
            return records.undo_commands(name, e.payment_id) if mine.paid else \
                {f"{name}_delete": ("crm.item.payment.delete", {"id": e.payment_id})}, {"payment_id": e.payment_id}
        return records.undo_commands(name, e.payment_id), {"payment_id": e.payment_id}
    if isinstance(e, DealReopen):
        deal = reads.get(f"deal{e.deal_id}")
        if not deal:
            return None, {"why": "deal not found (deleted, or not readable by the app's user)"}
        if deal.get("STAGE_ID") != e.moved_stage:
            return None, {"why": "deal was moved by a person since; left as it is"}
        return crm.deal_move(e.deal_id, e.to_stage), {"from_stage": e.moved_stage, "to_stage": e.to_stage}
    if isinstance(e, Timeline):
        if uncertain:
            comments = reads.get(f"tl{e.deal_id}") or []
            refs = timeline_references(item.key)
            if any(ref in str(c.get("COMMENT", "")) for c in comments for ref in refs):
                return None, {"why": "already on the timeline"}
        comment = f"{e.comment}\n{timeline_reference(item.key, e.lang or 'ru')}"
        return ("crm.timeline.comment.add", {"fields": {"ENTITY_ID": e.deal_id, "ENTITY_TYPE": "deal",
                                                        "COMMENT": comment}}), {}
    if isinstance(e, Notify):
        return ("im.notify.system.add", {"USER_ID": e.user_id, "MESSAGE": e.message, "TAG": tag_for(item.key)}), {}
    if isinstance(e, Task):
        if uncertain:
            found = reads.get(f"task{item.id}") or {}
            tasks = found.get("tasks") if isinstance(found, dict) else found
            if tasks:
                return None, {"why": "task already exists"}
        fields = {"TITLE": f"{e.title} ({marker_for(item.key)})", "RESPONSIBLE_ID": e.responsible_id,
                  "DESCRIPTION": e.description}
        if e.deal_id:
            fields["UF_CRM_TASK"] = [f"D_{e.deal_id}"]
        return ("tasks.task.add", {"fields": fields}), {}
    if isinstance(e, Trigger):
        if uncertain:
            # Bitrix24 cannot tell us whether a trigger fired; firing robots twice is worse than once late.
            return None, {"why": "not re-fired after an interrupted attempt"}
        return crm.trigger(e.code, e.owner_id, e.owner_type_id), {}
    return None, {"why": f"unknown kind {item.kind}"}


def _plan_record(item: OutboxItem, e: PaymentRecord, uncertain: bool, reads: dict):
    """add + sum and marker + pay in one batch (paymentrecords.commands_for); after an interrupted attempt, the
    record found by its marker is completed (a second one, if any, removed) instead of made again."""
    deal = reads.get(f"deal{e.deal_id}")
    if not deal:
        return None, {"why": "deal deleted"}
    name = f"i{item.id}"
    if uncertain:
        ours = records.find_ours(reads.get(f"rec{item.id}_deal"), reads.get(f"rec{item.id}_mark"), e.marker)
        if ours:
            keep, info = ours[0], {"payment_id": ours[0].id, "found": True}
            cmds = records.repair_commands(name, keep, e.amount)
            for extra in ours[1:]:
                cmds.update(records.undo_commands(f"{name}_dup{extra.id}", extra.id))
            if not cmds:
                return None, {"why": "payment record made by an interrupted attempt", **info}
            return cmds, info
    try:
        return records.commands_for(name, e.deal_id, e.amount, e.currency, e.marker,
                                    deal_currency=deal.get("CURRENCY_ID") or None, comment=e.comment), {}
    except records.PaymentRecordError as exc:
        return None, {"why": f"no payment record: {exc}"}
