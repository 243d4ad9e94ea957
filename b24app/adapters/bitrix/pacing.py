"""Client-side leaky bucket per portal (Bitrix24: drains 2 req/s, bursts to 50) so we get paced, not refused."""
from __future__ import annotations

import threading
import time
from typing import Callable, Protocol


class Pacer(Protocol):
    def acquire(self, key: str) -> None:
        """Block until one request for `key` may be sent."""


SAFETY = 0.9  # pace a little under the portal's limit: network jitter bunches requests on arrival


def leaky_bucket_wait(level: float, updated: float, now: float, rate: float, burst: int) -> tuple[float, float]:
    """Drain the bucket to `now`; return (new level after taking one slot or unchanged, seconds to wait).

    Runs with SAFETY applied to both rate and burst, so arrivals stay inside Bitrix24's own bucket."""
    rate, burst = rate * SAFETY, max(1, int(burst * SAFETY))
    level = max(0.0, level - (now - updated) * rate)
    if level + 1 <= burst:
        return level + 1, 0.0
    return level, (level + 1 - burst) / rate


class LocalPacer:
    """Leaky bucket in this process (tests, single worker); `DbPacer` shares it across processes."""

    def __init__(self, rate: float = 2.0, burst: int = 50, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> None:
        while True:
            with self._lock:
                now = self._clock()
                level, updated = self._buckets.get(key, (0.0, now))
                new_level, wait = leaky_bucket_wait(level, updated, now, self.rate, self.burst)
                self._buckets[key] = (new_level, now)
                if wait == 0:
                    return
            self._sleep(wait)
