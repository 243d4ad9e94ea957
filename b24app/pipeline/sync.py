"""Where a payment enters: read a watched account's statement and store each operation exactly once."""
from __future__ import annotations

import hashlib
import json
import logging
import random
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, case, select, update
from sqlalchemy.exc import DataError, IntegrityError

from b24app.backoff import Backoff
from b24app.adapters.banks.errors import (
    BankError,
    BankUnavailable,
    Forbidden,
    BankInvalidGrant,
    MalformedOperation,
    RateLimited,
    SyncErrorCode,
    Unauthorized,
)
from b24app.adapters.banks.operations import BankOperation
from b24app.banklinks.tbank import LinkNeedsConsent
from b24app.banklinks.sources import source_for
from b24app.storage.db import UTCDateTime
from b24app.domain.states import OpState
from b24app.storage.models import BankAccount, BankLink, Operation, OperationAlias, Portal, QuarantinedOperation
from .rules import load_rules

log = logging.getLogger("b24app.pipeline.sync")
OVERLAP = timedelta(hours=3)         # late-posted and night-time operations are re-read
FIRST_SYNC = timedelta(days=3)       # how far back a newly watched account starts
ACCOUNT_BACKOFF = Backoff(base=15, cap=900)  # a failing account: 30 s after the first failure, doubling, 15 min cap


def store_operation(s, account: BankAccount, op: BankOperation) -> tuple[Operation, str]:
    """Insert or update one operation; returns (row, what happened). Runs inside the caller's transaction."""
    row = s.scalar(select(Operation).where(Operation.account_id == account.id,
                                           Operation.operation_id == op.operation_id))
    how = "same"
    if row is None:
        alias = s.get(OperationAlias, (account.id, op.operation_id))
        if alias is not None:
            row = s.get(Operation, alias.operation_pk)
    if row is None:
        row = s.scalar(select(Operation).where(Operation.account_id == account.id,
                                               Operation.fingerprint == op.fingerprint))
        if row is None:
            row = stored_elsewhere(s, account.id, op)
        if row is not None:
            # Same payment under a new operationId (night-time re-identification, a duplicate, or another source).
            s.add(OperationAlias(account_id=account.id, operation_id=op.operation_id, operation_pk=row.id))
            how = "reidentified"
    if row is None:
        row = Operation(portal_id=account.portal_id, account_id=account.id, operation_id=op.operation_id,
                        source=op.source, content_key=op.content_key,
                        fingerprint=op.fingerprint, bank_status=op.status, is_credit=op.is_credit,
                        amount=op.amount, currency=op.currency, operation_date=op.operation_date,
                        purpose=clean_text(op.purpose, 4000) or "", payer_name=clean_text(op.payer_name, 512),
                        payer_inn=clean_text(op.payer_inn, 12), document_number=clean_text(op.document_number, 64),
                        category=clean_text(op.category, 64), state=_initial_state(op))
        with s.begin_nested():
            s.add(row)
            s.flush()
        return row, "new"
    if row.bank_status != "Transaction" and op.is_transaction:
        # Authorization settled: now it is money received.
        row.bank_status, row.operation_date, row.amount = "Transaction", op.operation_date, op.amount
        if row.state == OpState.PENDING:
            row.state = OpState.NEW if op.is_credit else OpState.IGNORED
        how = "settled"
    return row, how


def stored_elsewhere(s, account_id: int, op: BankOperation) -> Operation | None:
    """The same payment already stored from another source (T-Bank's API vs a 1C file), by content_key.

    Within one source, operationId and fingerprint stay the only identities (the per-source dedup is unchanged).
    """
    if op.content_key is None:
        return None
    return s.scalar(select(Operation).where(Operation.account_id == account_id,
                                            Operation.content_key == op.content_key,
                                            Operation.source != op.source).order_by(Operation.id).limit(1))


def clean_text(value: str | None, limit: int) -> str | None:
    """Text from the bank as stored: NUL removed (PostgreSQL refuses it), length bounded; else untouched."""
    if not value:
        return None
    return value.replace("\x00", "")[:limit]


def _initial_state(op: BankOperation) -> OpState:
    if not op.is_credit:
        return OpState.IGNORED  # debits are not reconciled
    return OpState.NEW if op.is_transaction else OpState.PENDING


def interval_for(ctx, portal_settings: dict | None) -> int:
    """Seconds between polls: the portal admin's choice, else the deployment's B24APP_SYNC_INTERVAL."""
    return load_rules(portal_settings).sync_interval or ctx.settings.sync_interval


def _release(acc: BankAccount, lease_owner: str | None, delay: float, now) -> None:
    """Hand the lease back (when it is still ours) and say when the account is due again."""
    if lease_owner is not None and acc.lease_owner == lease_owner:
        acc.lease_owner, acc.lease_until = None, None
        acc.next_sync_at = now + timedelta(seconds=delay)


# A routine poll runs for every watched account every interval: its read and its final write are built once,
# with bound parameters, so SQLAlchemy reuses the compiled statements (a third of the ORM equivalent's CPU).
_A, _L, _P = BankAccount.__table__, BankLink.__table__, Portal.__table__
_POLL_READ = (
    select(_A.c.account_number.label("account_number"), _A.c.synced_until.label("account_synced_until"),
           _A.c.external_id.label("account_external_id"), _L.c.provider,
           _A.c.watched.label("account_watched"), _P.c.settings.label("portal_settings"),
           # the link's columns under their own names: LinkTokens reads this row like a BankLink
           _L.c.id, _L.c.portal_id, _L.c.kind, _L.c.status, _L.c.inn, _L.c.kpp, _L.c.access_token_enc,
           _L.c.access_expires_at, _L.c.token_generation)
    .join_from(_A, _L, _L.c.id == _A.c.link_id).join(_P, _P.c.id == _A.c.portal_id)
    .where(_A.c.id == bindparam("account_id")))
_MINE = _A.c.lease_owner == bindparam("owner")  # NULL (no owner given) matches nothing
# A sync request (a webhook, "check the bank now") made after this read began may be for money the read did not
# see: the account stays due at once instead of waiting for the next interval.
_ASKED_SINCE = _A.c.sync_requested_at >= bindparam("until", type_=UTCDateTime())
_POLL_DONE = (
    update(_A).where(_A.c.id == bindparam("account_id")).values(
        synced_until=bindparam("until"), last_synced_at=bindparam("done"), last_error=bindparam("error"),
        last_error_code=bindparam("code"), failures=0,
        # hand the lease back, and say when the account is due again, only where the lease is still ours
        next_sync_at=case((and_(_MINE, _ASKED_SINCE), bindparam("done", type_=UTCDateTime())),
                          (_MINE, bindparam("next_due", type_=UTCDateTime())), else_=_A.c.next_sync_at),
        lease_until=case((_MINE, None), else_=_A.c.lease_until),
        lease_owner=case((_MINE, None), else_=_A.c.lease_owner)))


def sync_account(ctx, account_id: int, *, lease_owner: str | None = None) -> dict:
    """Read [synced_until - overlap, now) and store it; the cursor moves only after everything is stored.

    A routine poll is one read (account, link and the portal's settings together), the bank call, and one
    UPDATE; with `lease_owner` that UPDATE also releases the lease and schedules the next poll.
    """
    now = ctx.clock.now()
    with ctx.db.session() as s:
        link = s.execute(_POLL_READ, {"account_id": account_id}).first()
    if link is None or link.status != "active" or not link.account_watched:
        return {"skipped": True}
    since = (link.account_synced_until or now - FIRST_SYNC) - OVERLAP
    interval = interval_for(ctx, link.portal_settings)
    account_number, portal_id = link.account_number, link.portal_id
    bank = source_for(link)  # T-Bank or Tochka: both yield BankOperations, stored the same way below
    counts = {"new": 0, "same": 0, "reidentified": 0, "settled": 0}
    malformed: list[str] = []
    refused: list[tuple[object, str]] = []

    def refuse(exc: MalformedOperation, item) -> None:
        # Never applied, never silently dropped: quarantined raw, logged, and shown on the account until a clean sync.
        op_id = item.get("operationId") if isinstance(item, dict) else None
        malformed.append(f"MalformedOperation: {exc} (operationId {str(op_id)[:64]})"[:300])
        refused.append((item, f"MalformedOperation: {exc}"))
        log.warning("malformed operation refused", extra={"account_id": account_id, "operation_id": str(op_id)[:64],
                                                          "error": f"MalformedOperation: {exc}"[:300]})

    batch: list[BankOperation] = []
    for op in bank.read_operations(ctx, link, account_number, link.account_external_id, since, now, refuse):
        if op.account_number != account_number:
            continue
        batch.append(op)
        if len(batch) >= 200:
            _store_batch(ctx, account_id, batch, counts)
            batch = []
    _store_batch(ctx, account_id, batch, counts)
    for item, reason in counts.pop("_unstorable", []):
        malformed.append(f"{reason} (operationId {str(item.get('operationId'))[:64]})")
        refused.append((item, reason))
    if refused:
        quarantine(ctx, account_id, portal_id, refused)
    done = ctx.clock.now()
    with ctx.db.session() as s:
        s.execute(_POLL_DONE, {
            "account_id": account_id, "until": now,  # everything before `now` is stored
            "done": done, "error": "; ".join(malformed)[:500] or None, "owner": lease_owner,
            "code": SyncErrorCode.MALFORMED.value if malformed else None,
            # jitter spreads accounts that became due together over the interval
            "next_due": done + timedelta(seconds=interval * (0.9 + 0.2 * random.random()))})
        if counts["new"] or counts["settled"]:
            s.execute(update(Portal).where(Portal.id == portal_id).values(work_due_at=done)
                      .execution_options(synchronize_session=False))
    counts["malformed"] = len(malformed)
    return counts


def _store_batch(ctx, account_id: int, ops: list[BankOperation], counts: dict) -> None:
    if not ops:
        return
    try:
        _store_batch_once(ctx, account_id, ops, counts)
    except DataError:
        # A value the database refuses that the parser let through: store the rest one by one, keep the
        # refused ones raw (counts["_unstorable"]), so one operation never holds back the statement.
        if len(ops) == 1:
            counts.setdefault("_unstorable", []).append((dict(ops[0].raw), "refused by the database"))
            log.warning("operation refused by the database", extra={"account_id": account_id,
                                                                     "operation_id": ops[0].operation_id[:64]})
            return
        for op in ops:
            _store_batch(ctx, account_id, [op], counts)


def _store_batch_once(ctx, account_id: int, ops: list[BankOperation], counts: dict) -> None:
    for attempt in range(3):
        try:
            with ctx.db.session() as s:
                # The overlap re-reads hours of operations every poll: those already stored as they are now
                # are counted with one query instead of one lookup each.
                known = dict(s.execute(select(Operation.operation_id, Operation.bank_status).where(
                    Operation.account_id == account_id,
                    Operation.operation_id.in_({op.operation_id for op in ops}))).all())
                fresh = [op for op in ops if op.operation_id not in known
                         or (op.is_transaction and known[op.operation_id] != "Transaction")]
                local = dict.fromkeys(("new", "same", "reidentified", "settled"), 0)
                local["same"] = len(ops) - len(fresh)
                account = s.get(BankAccount, account_id) if fresh else None
                for op in fresh:
                    _, how = store_operation(s, account, op)
                    local[how] += 1
            for k, v in local.items():
                counts[k] = counts.get(k, 0) + v
            return
        except IntegrityError:
            if attempt == 2:
                raise  # a concurrent writer stored the same rows; next attempt sees them


RAW_LIMIT = 100_000  # characters of an item's JSON kept (a statement item is a few hundred)


def quarantine(ctx, account_id: int, portal_id: int, items: list[tuple[object, str]]) -> int:
    """Keep statement items we could not store as operations, raw and with the reason; never matched.
    One row per account and item (by operationId when it is a string, else by the JSON): a re-poll only
    counts it again. Returns how many rows are new."""
    now = ctx.clock.now()
    new = 0
    for item, reason in items:
        raw = json.dumps(item, ensure_ascii=False, sort_keys=True, default=str)  # NUL and controls escaped
        op_id = item.get("operationId") if isinstance(item, dict) else None
        identity = f"id:{op_id}" if isinstance(op_id, str) and op_id.strip() else f"raw:{raw}"
        key = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()
        try:
            with ctx.db.session() as s:
                row = s.scalar(select(QuarantinedOperation).where(QuarantinedOperation.account_id == account_id,
                                                                   QuarantinedOperation.item_key == key))
                if row is None:
                    s.add(QuarantinedOperation(
                        portal_id=portal_id, account_id=account_id, item_key=key, raw=raw[:RAW_LIMIT],
                        operation_id=str(op_id).replace("\x00", "")[:128] if op_id is not None else None,
                        reason=reason.replace("\x00", "")[:300], first_seen_at=now, last_seen_at=now, seen_count=1))
                    new += 1
                else:
                    row.last_seen_at, row.seen_count = now, row.seen_count + 1
        except IntegrityError:
            pass  # stored by a concurrent sync of the same statement
    return new


def request_sync(ctx, portal_id: int, account_ids: list[int] | None = None, backfill_days: int | None = None) -> list[int]:
    """Make accounts due now (a webhook, "check the bank now", or a backfill); the worker does the rest."""
    now = ctx.clock.now()
    with ctx.db.session() as s:
        q = select(BankAccount).where(BankAccount.portal_id == portal_id, BankAccount.watched.is_(True))
        if account_ids is not None:
            q = q.where(BankAccount.id.in_(account_ids))
        ids = []
        for acc in s.scalars(q):
            acc.next_sync_at = now
            acc.sync_requested_at = now
            if backfill_days:
                acc.synced_until = now - timedelta(days=min(int(backfill_days), 365))
            ids.append(acc.id)
    return ids


def sync_status(ctx, portal_id: int) -> dict:
    now = ctx.clock.now()
    with ctx.db.session() as s:
        rows = list(s.scalars(select(BankAccount).where(BankAccount.portal_id == portal_id)))
        return {"accounts": [{
            "id": a.id, "account_number": a.account_number, "watched": a.watched,
            "last_synced_at": a.last_synced_at.isoformat() if a.last_synced_at else None,
            "next_sync_at": a.next_sync_at.isoformat() if a.next_sync_at else None,
            "sync_requested_at": a.sync_requested_at.isoformat() if a.sync_requested_at else None,
            "running": bool(a.lease_until and a.lease_until > now),
            "pending": bool(a.sync_requested_at and (a.last_synced_at is None or a.last_synced_at < a.sync_requested_at)),
            "last_error": a.last_error} for a in rows]}


def record_failure(ctx, account_id: int, exc: Exception, *, lease_owner: str | None = None,
                   retry_after: float | None = None, started: datetime | None = None) -> None:
    """Note the failure on the account; with `lease_owner`, release that lease and back off (15 s doubling, 15 min cap).

    A sync request made after the failed attempt `started` is not answered by it: the account is due again at once
    (or after the bank's `retry_after`), as a request made after the failure would make it."""
    with ctx.db.session() as s:
        acc = s.get(BankAccount, account_id)
        if acc is None or (lease_owner is not None and acc.lease_owner != lease_owner):
            return
        acc.failures += 1
        delay = retry_after or ACCOUNT_BACKOFF.delay(acc.failures)
        if started is not None and acc.sync_requested_at is not None and acc.sync_requested_at >= started:
            delay = retry_after or 0  # a webhook arrived during this read: answer it now, not after the back-off
        _release(acc, lease_owner, delay, ctx.clock.now())
        acc.last_error = f"{type(exc).__name__}: {exc}"[:500]
        acc.last_error_code = error_code(exc).value
        if isinstance(exc, LinkNeedsConsent):
            acc.last_error = "needs_consent"


def error_code(exc: Exception) -> SyncErrorCode:
    """The code stored beside a failed read's text: by the error's type, never by its words."""
    if isinstance(exc, RateLimited):
        return SyncErrorCode.RATE_LIMITED
    if isinstance(exc, (LinkNeedsConsent, BankInvalidGrant, Unauthorized, Forbidden)):
        return SyncErrorCode.NEEDS_CONSENT
    if isinstance(exc, (BankUnavailable, OSError)):
        return SyncErrorCode.UNAVAILABLE
    if isinstance(exc, BankError):
        return SyncErrorCode.BANK_ERROR
    return SyncErrorCode.INTERNAL

