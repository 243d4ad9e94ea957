"""Workers: leases that expire, one worker on SQLite, several on PostgreSQL with nothing done twice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from b24app.storage.models import BankAccount, Decision, InvoiceRefresh, Operation, Portal
from b24app.sandbox.stack import link_bank, seed_crm, start_stack
from b24app.pipeline.worker import Worker, WorkerLockError, single_worker_lock
from conftest import PG_URL, wait_for


def test_second_worker_on_sqlite_is_refused(tmp_path):
    held = single_worker_lock(str(tmp_path))
    try:
        with pytest.raises(WorkerLockError, match="only one"):
            single_worker_lock(str(tmp_path))
        env = {**os.environ, "B24APP_MODE": "demo", "B24APP_DATA_DIR": str(tmp_path)}
        cli = subprocess.run([sys.executable, "-m", "b24app.cli", "worker", "--once"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode != 0 and "only one may run" in cli.stderr
    finally:
        held.close()
    single_worker_lock(str(tmp_path)).close()  # free again once the holder is gone


def test_a_lease_blocks_others_until_it_expires(linked):
    a, b = Worker(linked.ctx, owner="A"), Worker(linked.ctx, owner="B")
    claimed = a.claim_accounts(10)
    assert claimed
    assert b.claim_accounts(10) == []
    with linked.ctx.db.session() as s:   # A was killed: its lease runs out
        for acc in s.scalars(select(BankAccount).where(BankAccount.id.in_(claimed))):
            acc.lease_until = linked.ctx.clock.now() - timedelta(seconds=1)
    assert sorted(b.claim_accounts(10)) == sorted(claimed)


def test_release_only_touches_own_lease(linked):
    from b24app.pipeline import sync
    a = Worker(linked.ctx, owner="A")
    [first, *_] = a.claim_accounts(10)
    sync.record_failure(linked.ctx, first, RuntimeError("x"), lease_owner="B")   # B cannot release A's lease
    sync.sync_account(linked.ctx, first, lease_owner="B")
    with linked.ctx.db.session() as s:
        acc = s.get(BankAccount, first)
        assert acc.lease_owner == "A" and acc.failures == 0
    sync.sync_account(linked.ctx, first, lease_owner="A")
    with linked.ctx.db.session() as s:
        acc = s.get(BankAccount, first)
        assert acc.lease_owner is None and acc.next_sync_at > linked.ctx.clock.now()


def test_a_poll_hands_the_lease_back_and_is_due_again_one_interval_later(linked):
    from b24app.pipeline import sync
    from b24app.clock import FakeClock
    ctx = linked.ctx
    interval = sync.interval_for(ctx, {})
    a = Worker(ctx, owner="A")
    [(account_id, _due), *_] = a.claim_due_accounts(10)
    before = ctx.clock.now()
    assert sync.sync_account(ctx, account_id, lease_owner="A")["malformed"] == 0
    after = ctx.clock.now()
    with ctx.db.session() as s:
        acc = s.get(BankAccount, account_id)
        assert acc.lease_owner is None and acc.lease_until is None and acc.failures == 0
        assert before <= acc.last_synced_at <= after and acc.synced_until >= before
        due = acc.next_sync_at
    assert due.tzinfo is not None
    assert before + timedelta(seconds=0.9 * interval) <= due <= after + timedelta(seconds=1.1 * interval)
    # The database compares it like every other time: not due a second early, due at that very microsecond.
    real = ctx.clock
    try:
        ctx.clock = FakeClock(due - timedelta(seconds=1))
        assert account_id not in Worker(ctx, owner="B").claim_accounts(100)
        ctx.clock = FakeClock(due)
        assert account_id in Worker(ctx, owner="C").claim_accounts(100)
    finally:
        ctx.clock = real


def test_a_portal_backlog_does_not_starve_another(linked):
    w = Worker(linked.ctx, owner="A")
    with linked.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
        other = Portal(member_id="other", domain="x", client_endpoint="http://127.0.0.1:9/rest/",
                       server_endpoint="http://127.0.0.1:9/rest/", status="installed", settings={},
                       work_due_at=linked.ctx.clock.now())
        s.add(other)
        s.flush()
        portal.work_due_at = linked.ctx.clock.now() - timedelta(seconds=5)
        other_id = other.id
    first = w.claim_portals(1)
    assert first == [portal.id]
    w.release_portal(portal.id, 0.0)   # it still has a backlog: due again now
    assert w.claim_portals(1) == [other_id]  # but the other portal, due earlier, comes first


def test_slow_portal_work_holds_at_most_half_the_threads_and_polls_go_on(linked):
    """Ten portals with work that hangs (a portal at its rate limit, say) do not take every thread: the due
    accounts are still polled, and leased accounts are handed back when the worker stops."""
    import threading

    ctx = linked.ctx
    with ctx.db.session() as s:
        for n in range(10):
            s.add(Portal(member_id=f"slow{n}", domain="x", client_endpoint="http://127.0.0.1:9/rest/",
                         server_endpoint="http://127.0.0.1:9/rest/", status="installed", settings={},
                         work_due_at=ctx.clock.now()))
        due = list(s.scalars(select(BankAccount.id).where(BankAccount.watched.is_(True))))
    assert due
    release = threading.Event()
    running, most, polled = set(), [0], []
    lock = threading.Lock()

    class Probe(Worker):
        def portal_work(self, portal_id):
            with lock:
                running.add(portal_id)
                most[0] = max(most[0], len(running))
            release.wait(10)
            with lock:
                running.discard(portal_id)
            self.release_portal(portal_id, None)

        def sync_one(self, account_id):
            polled.append(account_id)
            super().sync_one(account_id)

    w = Probe(ctx, owner="probe", concurrency=4, idle_sleep=0.05)
    t = threading.Thread(target=w.run, kwargs={"max_seconds": 6})
    t.start()
    try:
        assert wait_for(lambda: set(due) <= set(polled), timeout=5)
        time.sleep(1.0)  # ten claim rounds: the hanging portal work takes all it may
        assert most[0] == 2  # half of 4 threads, while 10 portals were waiting
        polled.clear()
        with ctx.db.session() as s:  # due again while the portal work still hangs
            for acc in s.scalars(select(BankAccount).where(BankAccount.id.in_(due))):
                acc.next_sync_at = ctx.clock.now()
        assert wait_for(lambda: set(due) <= set(polled), timeout=3)
    finally:
        w.stopping.set()
        release.set()
        t.join(15)
    with ctx.db.session() as s:
        assert s.scalar(select(func.count()).select_from(BankAccount).where(BankAccount.lease_owner == "probe")) == 0


# -- several worker processes on PostgreSQL ---------------------------------------------------------------
N_INVOICES = 24


def spawn_worker(stack, idx: int) -> subprocess.Popen:
    env = {**os.environ, **stack.worker_env(), "B24APP_WORKER_CONCURRENCY": "4", "B24APP_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "b24app.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(not PG_URL, reason="several workers need PostgreSQL (make test runs this on a throwaway cluster)")
def test_four_worker_processes_never_process_anything_twice_and_survive_a_kill(tmp_path, database_url):
    stack = start_stack(data_dir=str(tmp_path / "data"), database_url=database_url, sync_interval=1,
                        rate=50.0, burst=200)
    procs: list[subprocess.Popen] = []
    try:
        assert stack.install()["install_finish"]
        deals = seed_crm(stack, [(f"Сделка {i}", 2 + i % 2, "ООО «Вектор»", "7712345678", f"77{i:03d}", f"{1000 + i}.00")
                                 for i in range(N_INVOICES)])
        assert 'id="link-ok"' in link_bank(stack).text
        stack.ctx.settings  # the workers run in other processes
        procs = [spawn_worker(stack, i) for i in range(4)]
        for i, d in enumerate(deals):
            stack.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn="7712345678")
            if i == N_INVOICES // 2:
                procs[0].send_signal(signal.SIGKILL)   # one dies mid-run; its leases expire (30 s in the stack)

        def all_paid():
            items = stack.rest("crm.item.list", {"entityTypeId": 31, "select": ["id", "stageId"]})["result"]["items"]
            return sum(1 for it in items if it["stageId"].endswith(":P")) == N_INVOICES

        wait_for(all_paid, timeout=120, interval=1.0)
        time.sleep(3)  # let any straggling duplicate show itself
        with stack.ctx.db.session() as s:
            assert s.scalar(select(func.count()).select_from(Operation)) == N_INVOICES
            per_op = Counter(s.scalars(select(Decision.operation_pk)))
            assert set(per_op.values()) == {1}
        state = stack.portal_state()
        visible = Counter(n["tag"] for n in state["notifications"] if not n.get("replaced_by"))
        assert len(visible) == N_INVOICES and set(visible.values()) == {1}
        comments = Counter(c["COMMENT"] for c in state["timeline_comments"])
        assert len(comments) == N_INVOICES and set(comments.values()) == {1}
        assert state["rate_limited"] == 0, "workers share the portal's pace through the database"
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        stack.stop()


def test_work_of_a_worker_killed_while_holding_a_portal_is_picked_up(linked):
    """The claim cleared the portal's due mark; the killed worker never put it back."""
    from b24app.pipeline import sync
    d = linked.deals[0]
    linked.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"])
    with linked.ctx.db.session() as s:
        portal_id = s.scalar(select(Portal.id))
    sync.request_sync(linked.ctx, portal_id)
    dead = Worker(linked.ctx, owner="dead")
    for acc in dead.claim_accounts(10):
        dead.sync_one(acc)
    assert dead.claim_portals(10) == [portal_id]     # ... and dies here
    with linked.ctx.db.session() as s:
        p = s.get(Portal, portal_id)
        assert p.work_due_at is None
        p.lease_until = linked.ctx.clock.now() - timedelta(seconds=1)   # its lease runs out
        p.invoices_refreshed_at = linked.ctx.clock.now()                 # no other reason to visit it
        s.query(InvoiceRefresh).delete()
    from b24app.pipeline import invoices
    invoices.refresh_all(linked.ctx, linked.ctx.portals.find(linked.member_id()))
    with linked.ctx.db.session() as s:
        s.query(InvoiceRefresh).delete()
        s.get(Portal, portal_id).work_due_at = None
    Worker(linked.ctx, owner="alive").run_once()
    with linked.ctx.db.session() as s:
        assert [o.state for o in s.scalars(select(Operation))] == ["matched"]
