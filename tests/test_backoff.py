"""The one back-off policy (b24app/backoff.py) with each caller's numbers, pure."""
from __future__ import annotations

import pytest

from b24app.backoff import Backoff
from b24app.adapters.banks.tochka import _BACKOFF as TOCHKA
from b24app.adapters.bitrix.client import _BACKOFF as BITRIX, _QUERY_LIMIT_BACKOFF as BITRIX_QUERY_LIMIT
from b24app.pipeline.outbox import ITEM_BACKOFF
from b24app.pipeline.sync import ACCOUNT_BACKOFF


@pytest.mark.parametrize(
    ("policy", "attempt", "expected"),
    [
        # a failing bank account: 15 s doubling, 15 min cap (failures counted from 1)
        (ACCOUNT_BACKOFF, 1, 30), (ACCOUNT_BACKOFF, 5, 480), (ACCOUNT_BACKOFF, 6, 900), (ACCOUNT_BACKOFF, 10_000, 900),
        # an outbox item: 5 s doubling, 10 min cap
        (ITEM_BACKOFF, 0, 5), (ITEM_BACKOFF, 1, 10), (ITEM_BACKOFF, 6, 320), (ITEM_BACKOFF, 7, 600),
        # Tochka GET retries: 0.2 s doubling, 2 s cap
        (TOCHKA, 1, 0.4), (TOCHKA, 3, 1.6), (TOCHKA, 4, 2.0),
        # Bitrix24 ceilings (before jitter)
        (BITRIX, 0, 0.5), (BITRIX, 6, 30.0), (BITRIX_QUERY_LIMIT, 0, 1.0), (BITRIX_QUERY_LIMIT, 2, 4.0),
    ],
)
def test_callers_keep_their_numbers(policy: Backoff, attempt: int, expected: float) -> None:
    assert policy.ceiling(attempt) == pytest.approx(expected)
    if not policy.jitter:
        assert policy.delay(attempt, rand=lambda: pytest.fail("no jitter, no random")) == pytest.approx(expected)


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 2.0), (0.5, 3.0), (0.999999, 3.999998)])
def test_equal_jitter_lies_between_half_the_ceiling_and_the_ceiling(rand: float, expected: float) -> None:
    policy = Backoff(base=0.5, cap=8.0, jitter=0.5)  # BankAPI's defaults
    assert policy.delay(3, rand=lambda: rand) == pytest.approx(expected)


def test_jitter_uses_the_injected_random_only() -> None:
    calls = []
    Backoff(1, 30, jitter=0.5).delay(2, rand=lambda: calls.append(1) or 0.25)
    assert calls == [1]


def test_negative_attempts_count_as_the_first_and_huge_ones_stay_cheap() -> None:
    assert Backoff(1, 10).ceiling(-3) == 1 and Backoff(1, 10).ceiling(10**12) == 10


@pytest.mark.parametrize("args", [(0, 1), (-1, 1), (2, 1), (1, 2, 1.5), (1, 2, -0.1)])
def test_impossible_policies_are_refused(args: tuple) -> None:
    with pytest.raises(ValueError):
        Backoff(*args)
