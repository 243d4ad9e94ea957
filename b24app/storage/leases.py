"""Leases: a row (bank account, portal, outbox item) claimed by one worker until a time.

A leasable table has `lease_owner` and `lease_until`; a row whose `lease_until` is empty or past is free, so a
killed worker's rows come back by themselves. Claiming is one statement here for every table:

- PostgreSQL: the due rows are picked with `FOR UPDATE SKIP LOCKED`, so workers running side by side skip each
  other's rows instead of waiting for them or taking them twice;
- SQLite: there is no `FOR UPDATE` (SQLAlchemy leaves the clause out); every transaction takes the write lock
  up front instead (`db.make_engine`: BEGIN IMMEDIATE), and only one worker runs (`worker.single_worker_lock`).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, Table, Update, bindparam, or_, update

__all__ = ["claim", "expired", "lock_due"]


def expired(table: Table, now: Any = None) -> ColumnElement[bool]:
    """The row's lease is free: never taken, or run out before `now` (default: the bound parameter `now`)."""
    now = bindparam("now") if now is None else now
    return or_(table.c.lease_until.is_(None), table.c.lease_until < now)


def lock_due(query: Select, table: Table, *, now: Any = None, limit: Any = None) -> Select:
    """`query` (the due rows of `table`, in the order to take them) cut to at most `limit` rows whose lease is
    free, locked so that a concurrent worker skips them (defaults: bound parameters `now` and `limit`)."""
    limit = bindparam("limit") if limit is None else limit
    return query.where(expired(table, now)).limit(limit).with_for_update(skip_locked=True, of=table)


def claim(query: Select, table: Table, *, values: dict | None = None, returning: tuple = ()) -> Update:
    """One UPDATE leasing up to :limit due rows of `query` to :owner until :until (plus `values`), returning
    `returning` (default: the ids). Built once per table; run with `now`, `limit`, `owner` and `until`."""
    due = lock_due(query.with_only_columns(table.c.id), table)
    return (update(table).where(table.c.id.in_(due))
            .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"), **(values or {}))
            .returning(*(returning or (table.c.id,))))
