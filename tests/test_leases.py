"""The one lease helper (b24app/storage/leases.py) as each dialect sees it; the workers' tests drive it for real."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import bindparam, create_engine, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from b24app.storage import leases
from b24app.storage.models import Base, OutboxItem, Portal
from b24app.pipeline.worker import _CLAIM_ACCOUNTS, _CLAIM_PORTALS


def test_postgresql_skips_rows_other_workers_hold_and_sqlite_relies_on_its_write_lock() -> None:
    for stmt, table in ((_CLAIM_ACCOUNTS, "bank_accounts"), (_CLAIM_PORTALS, "portals")):
        pg = str(stmt.compile(dialect=postgresql.dialect()))
        lite = str(stmt.compile(dialect=sqlite.dialect()))
        assert f"FOR UPDATE OF {table} SKIP LOCKED" in pg and "FOR UPDATE" not in lite
        for sql in (pg, lite):
            assert f"{table}.lease_until IS NULL OR {table}.lease_until <" in sql
            assert "SET" in sql and "lease_owner=" in sql and "RETURNING" in sql


def test_claim_takes_only_free_due_rows_up_to_the_limit_and_stamps_them() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine, tables=[Portal.__table__])
    t = Portal.__table__
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = {"free": None, "expired": now - timedelta(seconds=1), "held": now + timedelta(seconds=60),
            "free2": None}
    with engine.begin() as c:
        for i, (name, until) in enumerate(rows.items(), start=1):
            c.execute(insert(t).values(id=i, member_id=name, domain=f"{name}.example", client_endpoint="",
                                       server_endpoint="", status="installed",
                                       work_due_at=now - timedelta(minutes=10 - i), lease_until=until,
                                       lease_owner=None if until is None else "other"))
        claim = leases.claim(select(t.c.id).where(t.c.work_due_at <= bindparam("now"))
                             .order_by(t.c.work_due_at), t, returning=(t.c.id, t.c.member_id))
        got = c.execute(claim, {"now": now, "limit": 2, "owner": "me", "until": now + timedelta(seconds=30)}).all()
        assert sorted(r.member_id for r in got) == ["expired", "free"]  # oldest due first; "held" is skipped
        again = c.execute(claim, {"now": now, "limit": 5, "owner": "me2", "until": now}).all()
        assert [r.member_id for r in again] == ["free2"]
        owners = dict(c.execute(select(t.c.member_id, t.c.lease_owner)).all())
    assert owners == {"free": "me", "expired": "me", "held": "other", "free2": "me2"}


def test_outbox_items_are_locked_through_the_same_helper() -> None:
    q = leases.lock_due(select(OutboxItem), OutboxItem.__table__, now=datetime.now(timezone.utc), limit=3)
    sql = str(q.compile(dialect=postgresql.dialect()))
    assert f"FOR UPDATE OF {OutboxItem.__tablename__} SKIP LOCKED" in sql and "lease_until IS NULL" in sql
