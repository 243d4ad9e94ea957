"""Per-portal Bitrix24 pacing shared by every process through the database (one bucket row per portal)."""
from __future__ import annotations

import time
from typing import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from b24app.adapters.bitrix.pacing import leaky_bucket_wait
from b24app.storage.db import Database
from b24app.storage.models import Portal, RateBucket


class DbPacer:
    """Leaky bucket kept in `rate_buckets`; a row lock (or SQLite's write lock) makes it exact across workers."""

    def __init__(self, db: Database, rate: float = 2.0, burst: int = 50, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.db, self.rate, self.burst = db, rate, burst
        self._clock, self._sleep = clock, sleep
        self._portal_ids: dict[str, int] = {}

    def _portal_id(self, member_id: str) -> int | None:
        if member_id not in self._portal_ids:
            with self.db.session() as s:
                pid = s.scalar(select(Portal.id).where(Portal.member_id == member_id))
            if pid is None:
                return None
            self._portal_ids[member_id] = pid
        return self._portal_ids[member_id]

    def acquire(self, key: str) -> None:
        pid = self._portal_id(key)
        if pid is None:
            return  # not installed yet (install-time calls): nothing shared to pace against
        while True:
            try:
                wait = self._take(pid)
            except IntegrityError:
                # Another process created the bucket row first; or the portal row we remembered is gone (an
                # uninstall with CLEAN, then a reinstall under a new id): look the portal up again.
                self._portal_ids.pop(key, None)
                pid = self._portal_id(key)
                if pid is None:
                    return
                continue
            if wait == 0:
                return
            self._sleep(wait)

    def _take(self, pid: int) -> float:
        """Take one slot if the bucket has room; return how long to wait otherwise."""
        with self.db.session() as s:
            bucket = s.scalar(select(RateBucket).where(RateBucket.portal_id == pid).with_for_update())
            now = self._clock()
            if bucket is None:
                bucket = RateBucket(portal_id=pid, level=0.0, updated=now)
                s.add(bucket)
            level, wait = leaky_bucket_wait(bucket.level, bucket.updated, now, self.rate, self.burst)
            bucket.level, bucket.updated = level, now
        return wait
