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
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, bindparam, or_, select, update

from b24app.portals import install as installation
from . import invoices, outbox, reconcile, sync
from b24app.storage import leases
from b24app.adapters.banks.errors import BankError, RateLimited
from b24app.adapters.bitrix.errors import BitrixError, PortalGone
from b24app.domain.states import OpState
from b24app.storage.models import BankAccount, BankLink, InvoiceRefresh, Operation, OutboxItem, Portal

log = logging.getLogger("b24app.pipeline.worker")


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


# Leases (b24app/storage/leases.py): one UPDATE each, built once: every worker runs them several times a second.
_A, _P = BankAccount.__table__, Portal.__table__
_CLAIM_ACCOUNTS = leases.claim(
    select(_A.c.id).join_from(_A, BankLink.__table__, BankLink.id == _A.c.link_id)
    .where(_A.c.watched.is_(True), BankLink.status == "active",  # accounts of an inactive link are never claimed
           _A.c.next_sync_at <= bindparam("now"))
    .order_by(_A.c.next_sync_at),
    _A, returning=(_A.c.id, _A.c.next_sync_at))
_CLAIM_PORTALS = leases.claim(
    select(_P.c.id).where(_P.c.status == "installed", _P.c.work_due_at.is_not(None),
                          _P.c.work_due_at <= bindparam("now"))
    .order_by(_P.c.work_due_at),
    _P, values={"work_due_at": None})


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
        self.claim_every = min(0.1, idle_sleep)  # seconds between claims while busy, unless there is a backlog
        self.stopping = threading.Event()
        self.new_payments = threading.Event()  # set by a poll that stored payments: claim portal work now
        self.stats = {"syncs": 0, "sync_errors": 0, "portal_runs": 0}

    # -- leasing ---------------------------------------------------------------------------------------
    def claim_due_accounts(self, limit: int) -> list[tuple[int, datetime]]:
        """Lease up to `limit` due accounts, earliest first; returns (account id, when it fell due)."""
        now = self.ctx.clock.now()
        with self.ctx.db.session() as s:
            rows = s.execute(_CLAIM_ACCOUNTS, {"now": now, "limit": limit, "owner": self.owner,
                                               "until": now + self.lease}).all()
        return sorted(((r.id, r.next_sync_at) for r in rows), key=lambda r: r[1])

    def claim_accounts(self, limit: int) -> list[int]:
        return [account_id for account_id, _due in self.claim_due_accounts(limit)]

    def claim_portals(self, limit: int) -> list[int]:
        """Lease up to `limit` portals with work, longest waiting first (work_due_at is cleared: new work
        arriving meanwhile sets it again)."""
        now = self.ctx.clock.now()
        with self.ctx.db.session() as s:
            return list(s.scalars(_CLAIM_PORTALS, {"now": now, "limit": limit, "owner": self.owner,
                                                   "until": now + self.lease}))

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
        """Portals whose invoice cache is stale, or with queued refreshes or pending effects, get work.

        One UPDATE: it runs every second in every worker.
        """
        now = self.ctx.clock.now()
        stale = now - timedelta(seconds=self.ctx.settings.invoice_refresh_interval)
        needs_work = or_(
            and_(or_(Portal.invoices_refreshed_at.is_(None), Portal.invoices_refreshed_at < stale),
                 Portal.id.in_(select(BankLink.portal_id).where(BankLink.status == "active"))),
            Portal.id.in_(select(InvoiceRefresh.portal_id)),
            # A worker killed while it held a portal took that portal's "due" mark with it: anything still
            # undecided or unsent makes the portal due again once the lease has run out.
            and_(leases.expired(_P, now),
                 or_(Portal.id.in_(select(Operation.portal_id).where(Operation.state == OpState.NEW)),
                     Portal.id.in_(select(OutboxItem.portal_id).where(or_(
                         and_(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= now),
                         and_(OutboxItem.status == "sending", OutboxItem.lease_until < now)))))),
            # A lost ONAPPUPDATE must not leave a portal with old placements/events.
            Portal.bindings_version.is_(None), Portal.bindings_version != self.ctx.bindings_signature)
        with self.ctx.db.session() as s:
            s.execute(update(Portal).where(Portal.status == "installed", Portal.work_due_at.is_(None), needs_work)
                      .values(work_due_at=now).execution_options(synchronize_session=False))

    # -- work ------------------------------------------------------------------------------------------
    def sync_one(self, account_id: int) -> None:
        """Poll one leased account; success and failure both hand the lease back with the next due time."""
        started = self.ctx.clock.now()
        try:
            counts = sync.sync_account(self.ctx, account_id, lease_owner=self.owner)
            self.stats["syncs"] += 1
            if counts.get("new") or counts.get("settled"):
                self.new_payments.set()  # the run loop claims the portal's work right away
        except (BankError, BitrixError, OSError) as exc:
            self.stats["sync_errors"] += 1
            log.warning("sync failed", extra={"account_id": account_id, "error": type(exc).__name__})
            sync.record_failure(self.ctx, account_id, exc, lease_owner=self.owner,
                                retry_after=5.0 if isinstance(exc, RateLimited) else None, started=started)
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
        """Keep the thread pool busy from a small local queue of leased accounts, no barrier between rounds.

        Accounts are claimed when the queue is shorter than the free threads, up to `batch` but never more
        than twice the free threads (a leased account must not wait long for a thread), at most every
        `claim_every` seconds unless the last claim came back full (a backlog). Portal work (matching and
        effects: payments already in) is claimed on a quarter of the free threads, right away when one of our
        polls stored a new payment and otherwise every `claim_every` seconds, so statement polls cannot delay
        it; it never holds more than half the threads, so it cannot starve the polls either. The upkeep query
        that finds portals needing work runs once a second.
        """
        started = time.monotonic()
        log.info("worker started", extra={"owner": self.owner, "concurrency": self.concurrency})
        upkeep_at = portals_at = accounts_at = 0.0
        backlog = False
        queue: deque[int] = deque()
        inflight: set = set()
        portal_runs: set = set()  # the part of `inflight` that is portal work
        portal_cap = max(1, self.concurrency // 2)
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="b24app-work") as pool:
            while not self.stopping.is_set():
                now = time.monotonic()
                if max_seconds is not None and now - started > max_seconds:
                    break
                try:
                    if now - upkeep_at >= 1.0:
                        self.schedule_portal_upkeep()
                        upkeep_at = now
                    free = self.concurrency - len(inflight)
                    room = min(max(1, free // 4), portal_cap - len(portal_runs))
                    if free > 0 and room > 0 and (self.new_payments.is_set() or now - portals_at >= self.claim_every):
                        self.new_payments.clear()
                        portals_at = now
                        for p in self.claim_portals(room):
                            portal_runs.add(pool.submit(self.portal_work, p))
                        inflight |= portal_runs
                    free = self.concurrency - len(inflight)
                    if len(queue) < free and (backlog or now - accounts_at >= self.claim_every):
                        accounts_at = now
                        want = min(self.batch, 2 * free)
                        claimed = self.claim_accounts(want)
                        backlog = len(claimed) == want
                        queue.extend(claimed)
                except Exception:
                    log.exception("worker scheduling failed")
                while queue and len(inflight) < self.concurrency:
                    inflight.add(pool.submit(self.sync_one, queue.popleft()))
                if inflight:
                    _done, pending = wait(inflight, timeout=min(self.idle_sleep, self.claim_every),
                                          return_when=FIRST_COMPLETED)
                    inflight = set(pending)
                    portal_runs &= inflight
                else:
                    self.stopping.wait(self.idle_sleep)
            self.release_accounts(list(queue))  # leased but never started: due again at once, not in 2 minutes
            wait(inflight)
        log.info("worker stopped", extra={"owner": self.owner})

    def release_accounts(self, account_ids: list[int]) -> None:
        """Give back leases of accounts this worker claimed but did not start (their due time is unchanged)."""
        if not account_ids:
            return
        with self.ctx.db.session() as s:
            s.execute(update(BankAccount).where(BankAccount.id.in_(account_ids), BankAccount.lease_owner == self.owner)
                      .values(lease_owner=None, lease_until=None).execution_options(synchronize_session=False))

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())


__all__ = ["Worker", "WorkerLockError", "single_worker_lock"]
