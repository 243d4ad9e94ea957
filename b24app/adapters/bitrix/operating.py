"""Per-method operating-time blocks of Bitrix24 (limits.md, "Ограничения на ресурсоемкость"), per portal.

Every successful answer carries `time.operating` and `time.operating_reset_at` for the method called (in a
batch: per sub-call in `result_time`). When a method's operating time is over the limit (480 s per 10
minutes in the docs' example), Bitrix24 answers 429 OPERATION_TIME_LIMIT for that method only, and keeps
doing so until its oldest one-minute bucket leaves the window. The docs: "Для первой повторной попытки
ориентироваться на `operating_reset_at` из последнего успешного ответа. Если ошибка повторяется, дождаться
следующего сброса корзины." The error itself carries no time block (the docs show none), so this remembers
the last reset time per (portal, method) and says until when a blocked method should be left alone.
Kept in memory per process: a new process learns from its first answer or its first 429.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

FALLBACK_WAIT = 30.0  # no usable reset time known: the first wait, doubled while the block goes on
MAX_WAIT = 600.0  # a bucket is at most ten minutes old, so no block outlives this wait


class OperatingLimits:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._reset_at: dict[tuple[str, str], float] = {}
        self._blocked: dict[tuple[str, str], tuple[float, int]] = {}  # until, consecutive blocks

    def seen(self, member_id: str, method: str, time_block: Any) -> None:
        """Remember `operating_reset_at` from a successful answer; the method is evidently not blocked."""
        if not isinstance(time_block, dict):
            return
        try:
            reset_at = float(time_block.get("operating_reset_at"))
        except (TypeError, ValueError):
            return
        key = (member_id, method.lower())
        with self._lock:
            self._reset_at[key] = reset_at
            self._blocked.pop(key, None)

    def block(self, member_id: str, method: str) -> float:
        """Bitrix24 refused `method` with OPERATION_TIME_LIMIT: until when (epoch seconds) to leave it alone."""
        key = (member_id, method.lower())
        now = self._clock()
        with self._lock:
            _, streak = self._blocked.get(key, (0.0, 0))
            reset_at = self._reset_at.pop(key, None)  # good for the first retry only
            if reset_at is not None and now < reset_at <= now + MAX_WAIT:
                until = reset_at
            else:
                until = now + min(MAX_WAIT, FALLBACK_WAIT * 2 ** streak)
            self._blocked[key] = (until, streak + 1)
            return until

    def blocked_until(self, member_id: str, method: str) -> float | None:
        """When a blocked method may be tried again, or None when it is not known to be blocked."""
        with self._lock:
            until, _ = self._blocked.get((member_id, method.lower()), (0.0, 0))
        return until if until > self._clock() else None
