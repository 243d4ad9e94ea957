"""The one retry/back-off policy: a delay doubling from `base` up to `cap`, optionally jittered.

Pure: no clock, no sleeping; the random source is injectable so tests can pin it. Each caller keeps its own
numbers (a Bitrix24 call retries within seconds, a bank account backs off for minutes).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

__all__ = ["Backoff"]

_MAX_EXPONENT = 62  # 2**62 seconds is far past any cap; bounding it keeps a runaway counter cheap


@dataclass(frozen=True, slots=True)
class Backoff:
    """`delay(n)` = min(cap, base * 2**n), of which the last `jitter` fraction is random.

    jitter=0.5 gives a delay uniformly between half the ceiling and the ceiling ("equal jitter"), so clients
    that failed together do not retry together.
    """

    base: float
    cap: float
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or not 0 <= self.jitter <= 1:
            raise ValueError(f"impossible back-off: {self}")

    def ceiling(self, attempt: int) -> float:
        """The longest delay after `attempt` earlier tries (0: the first retry)."""
        return min(self.cap, self.base * 2 ** min(max(attempt, 0), _MAX_EXPONENT))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The delay before the next try: the ceiling, less up to `jitter` of it at random."""
        ceiling = self.ceiling(attempt)
        if not self.jitter:
            return ceiling
        return ceiling * (1 - self.jitter) + ceiling * self.jitter * rand()
