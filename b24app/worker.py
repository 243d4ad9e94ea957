"""The background worker: lease due accounts and portals, sync, match, send; many may run on PostgreSQL.

Leases are rows claimed with one `SELECT ... FOR UPDATE SKIP LOCKED` (PostgreSQL) or under SQLite's write
lock (`BEGIN IMMEDIATE`), stamped with an owner and an expiry; a killed worker's leases simply expire.
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import timedelta
from pathlib import Path

from sqlalchemy import and_, or_, select, update

from . import installation, invoices, outbox, reconcile, sync
from .bank.errors import BankError, RateLimited
from .bitrix.errors import BitrixError, PortalGone
from .models import BankAccount, BankLink, InvoiceRefresh, Operation, OutboxItem, Portal

log = logging.getLogger("b24app.worker")


class WorkerLockError(RuntimeError):
    """Another worker already runs on this SQLite database."""


def single_worker_lock(data_dir: str):
    """On SQLite exactly one worker may run: hold an exclusive lock on a file next to the database."""
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    fh = open(path / "worker.lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise WorkerLockError(f"another b24app worker is running on {path}; on SQLite only one may run "
                              "(use PostgreSQL to run several)") from None
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


class Worker:
    def __init__(self, ctx, *, owner: str | None = None, concurrency: int | None = None, batch: int = 50,
                 idle_sleep: float = 0.5):
        self.ctx = ctx
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency or ctx.settings.worker_concurrency
        self.batch = batch
        self.portal_batch = 200  # operations decided per portal per turn, so one backlog cannot starve others
        self.idle_sleep = idle_sleep
        self.lease = timedelta(seconds=ctx.settings.lease_seconds)
        self.stopping = threading.Event()
        self.stats = {"syncs": 0, "sync_errors": 0, "portal_runs": 0}

    # -- leasing ---------------------------------------------------------------------------------------
    def claim_accounts(self, limit: int) -> list[int]:
        now = self.ctx.clock.now()
        with self.ctx.db.session() as s:
            rows = list(s.scalars(
                select(BankAccount).join(BankLink, BankLink.id == BankAccount.link_id)
                .where(BankAccount.watched.is_(True), BankLink.status == "active", BankAccount.next_sync_at <= now,
                       or_(BankAccount.lease_until.is_(None), BankAccount.lease_until < now))
                .order_by(BankAccount.next_sync_at).limit(limit)
                .with_for_update(skip_locked=True, of=BankAccount)))
            for acc in rows:
                acc.lease_owner, acc.lease_until = self.owner, now + self.lease
            return [a.id for a in rows]

    def claim_portals(self, limit: int) -> list[int]:
        now = self.ctx.clock.now()
        with self.ctx.db.session() as s:
            rows = list(s.scalars(
                select(Portal).where(Portal.status == "installed", Portal.work_due_at.is_not(None),
                                     Portal.work_due_at <= now,
                                     or_(Portal.lease_until.is_(None), Portal.lease_until < now))
                .order_by(Portal.work_due_at).limit(limit).with_for_update(skip_locked=True)))
            for p in rows:
                p.lease_owner, p.lease_until = self.owner, now + self.lease
                p.work_due_at = None  # new work arriving meanwhile sets it again
            return [p.id for p in rows]

    def release_portal(self, portal_id: int, again_in: float | None) -> None:
        now = self.ctx.clock.now()
        values: dict = {"lease_owner": None, "lease_until": None}
        with self.ctx.db.session() as s:
            if again_in is not None:
                current = s.scalar(select(Portal.work_due_at).where(Portal.id == portal_id))
                due = now + timedelta(seconds=again_in)
                values["work_due_at"] = min(current, due) if current else due
            s.execute(update(Portal).where(Portal.id == portal_id, Portal.lease_owner == self.owner).values(**values))

    def schedule_portal_upkeep(self) -> None:
        """Portals whose invoice cache is stale, or with queued refreshes or pending effects, get work."""
        now = self.ctx.clock.now()
        stale = now - timedelta(seconds=self.ctx.settings.invoice_refresh_interval)
        with self.ctx.db.session() as s:
            s.execute(update(Portal).where(
                Portal.status == "installed", Portal.work_due_at.is_(None),
                or_(Portal.invoices_refreshed_at.is_(None), Portal.invoices_refreshed_at < stale),
                Portal.id.in_(select(BankLink.portal_id).where(BankLink.status == "active")))
                .values(work_due_at=now))
            s.execute(update(Portal).where(
                Portal.status == "installed", Portal.work_due_at.is_(None),
                Portal.id.in_(select(InvoiceRefresh.portal_id))).values(work_due_at=now))
            # A worker killed while it held a portal took that portal's "due" mark with it: anything still
            # undecided or unsent makes the portal due again once the lease has run out.
            s.execute(update(Portal).where(
                Portal.status == "installed", Portal.work_due_at.is_(None),
                or_(Portal.lease_until.is_(None), Portal.lease_until < now),
                or_(Portal.id.in_(select(Operation.portal_id).where(Operation.state == "new")),
                    Portal.id.in_(select(OutboxItem.portal_id).where(or_(
                        and_(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= now),
                        and_(OutboxItem.status == "sending", OutboxItem.lease_until < now))))))
                .values(work_due_at=now))
            # A lost ONAPPUPDATE must not leave a portal with old placements/events.
            s.execute(update(Portal).where(
                Portal.status == "installed", Portal.work_due_at.is_(None),
                or_(Portal.bindings_version.is_(None), Portal.bindings_version != self.ctx.bindings_signature))
                .values(work_due_at=now))

    # -- work ------------------------------------------------------------------------------------------
    def sync_one(self, account_id: int) -> None:
        """Poll one leased account; success and failure both hand the lease back with the next due time."""
        try:
            sync.sync_account(self.ctx, account_id, lease_owner=self.owner)
            self.stats["syncs"] += 1
        except (BankError, BitrixError, OSError) as exc:
            self.stats["sync_errors"] += 1
            log.warning("sync failed", extra={"account_id": account_id, "error": type(exc).__name__})
            sync.record_failure(self.ctx, account_id, exc, lease_owner=self.owner,
                                retry_after=5.0 if isinstance(exc, RateLimited) else None)
        except Exception:
            log.exception("sync crashed", extra={"account_id": account_id})
            sync.record_failure(self.ctx, account_id, RuntimeError("internal error"), lease_owner=self.owner)

    def portal_work(self, portal_id: int) -> None:
        """Refresh invoices as needed, decide new payments, send effects. Re-queues itself if work remains."""
        with self.ctx.db.session() as s:
            portal = s.get(Portal, portal_id)
        again: float | None = None
        try:
            if portal.bindings_version != self.ctx.bindings_signature:
                installation.bind(self.ctx, portal.member_id)
            stale = self.ctx.clock.now() - timedelta(seconds=self.ctx.settings.invoice_refresh_interval)
            if portal.invoices_refreshed_at is None or portal.invoices_refreshed_at < stale:
                invoices.refresh_all(self.ctx, portal)
            else:
                invoices.refresh_requested(self.ctx, portal)
            result = reconcile.reconcile_portal(self.ctx, portal, limit=self.portal_batch)
            sent = outbox.deliver(self.ctx, portal)
            self.stats["portal_runs"] += 1
            if result or sent.get("sent") or sent.get("skipped"):
                log.info("portal work", extra={"portal_id": portal_id, "decided": result, "outbox": sent})
            if sum(result.values()) >= self.portal_batch:
                again = 0.0  # a backlog: come back, but after the other due portals (fairness)
            elif outbox.pending_count(self.ctx, portal_id):
                again = 2.0
        except PortalGone:
            log.warning("portal gone", extra={"portal_id": portal_id})
        except (BitrixError, BankError, OSError) as exc:
            log.warning("portal work failed", extra={"portal_id": portal_id, "error": type(exc).__name__})
            again = 10.0
        except Exception:
            log.exception("portal work crashed", extra={"portal_id": portal_id})
            again = 30.0
        self.release_portal(portal_id, again)

    def run_once(self, pool: ThreadPoolExecutor | None = None) -> int:
        """One scheduling round: returns how many units of work were done."""
        self.schedule_portal_upkeep()
        accounts = self.claim_accounts(self.batch)
        portals = self.claim_portals(self.batch)
        if pool is None:
            for a in accounts:
                self.sync_one(a)
            for p in portals:
                self.portal_work(p)
        else:
            list(pool.map(self.sync_one, accounts))
            list(pool.map(self.portal_work, portals))
        return len(accounts) + len(portals)

    def run(self, *, max_seconds: float | None = None) -> None:
        """Keep the thread pool busy: refill it as soon as a quarter is free, no barrier between rounds.

        Portal work (matching and effects: payments already in) is claimed first, on at most a quarter of
        the free threads, so a backlog of statement polls cannot delay it; accounts take the rest. The
        cheap upkeep query that finds portals needing work runs at most once a second.
        """
        started = time.monotonic()
        log.info("worker started", extra={"owner": self.owner, "concurrency": self.concurrency})
        upkeep_at = 0.0
        refill = max(1, self.concurrency // 4)
        inflight: set = set()
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="b24app-work") as pool:
            while not self.stopping.is_set():
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
                try:
                    if time.monotonic() - upkeep_at >= 1.0:
                        self.schedule_portal_upkeep()
                        upkeep_at = time.monotonic()
                    free = self.concurrency - len(inflight)
                    if free >= refill:
                        for p in self.claim_portals(max(1, free // 4)):
                            inflight.add(pool.submit(self.portal_work, p))
                        room = self.concurrency - len(inflight)
                        for a in self.claim_accounts(min(room, self.batch)) if room > 0 else ():
                            inflight.add(pool.submit(self.sync_one, a))
                except Exception:
                    log.exception("worker scheduling failed")
                if inflight:
                    _done, pending = wait(inflight, timeout=self.idle_sleep, return_when=FIRST_COMPLETED)
                    inflight = set(pending)
                else:
                    self.stopping.wait(self.idle_sleep)
            wait(inflight)
        log.info("worker stopped", extra={"owner": self.owner})

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())


__all__ = ["Worker", "WorkerLockError", "single_worker_lock"]
