"""Invoice-number comparison keys: look-alike letters, dashes, spaces and leading zeros."""
from __future__ import annotations

import pytest

from b24app.domain import normalize_invoice_number, number_tail_key


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("00064", "64"),
        ("СЧ-00412", "сч-412"),
        ("СЧ-00412", "CЧ-412"),  # Latin C typed for Cyrillic С
        ("1000001-В24", "1000001-B24"),
        ("АВСЕНКМОРТХУ-1", "abcehkmoptxy-1"),
        ("ёж-1", "еж-1"),
        ("19–685", "19-685"),
        ("19—685", "19‐685"),
        ("19−685", "19-685"),
        ("INV 2025 0042", "inv-2025-0042".replace("-", "")),
        ("inv-2025-0042", "INV-2025-42"),
        ("№ 12", "12"),
        ("0", "000"),
    ],
)
def test_same_key(a: str, b: str) -> None:
    assert normalize_invoice_number(a) == normalize_invoice_number(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("СЧ-412", "412"),  # prefix matters for the exact key
        ("СЧ-412", "CH-412"),  # Ч has no Latin look-alike
        ("100", "10"),  # only leading zeros go
        ("1-05", "1-5-0"),
        ("12/3", "12-3"),
        ("0", ""),
    ],
)
def test_different_key(a: str, b: str) -> None:
    assert normalize_invoice_number(a) != normalize_invoice_number(b)


def test_key_examples() -> None:
    assert normalize_invoice_number("СЧ-00412") == "cч-412"
    assert normalize_invoice_number(" 0070 / 0001 ") == "70/1"
    assert normalize_invoice_number("100") == "100"


@pytest.mark.parametrize(
    ("number", "tail"),
    [("СЧ-1207", "1207"), ("1207", "1207"), ("INV-2025-0042", "2025-42"), ("1000001-B24", "1000001-b24"),
     ("АБВ", ""), ("СЧ-007", "7")],
)
def test_tail_key(number: str, tail: str) -> None:
    assert number_tail_key(number) == tail
