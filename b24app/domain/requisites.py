"""Russian company requisites typed by a person: INN (10 digits for a company, 12 for a sole trader or a
person, with check digits) and KPP (9 characters, no check digit). Pure: the link form and its script use it
to catch a typo before the user goes through the phone and SMS steps at the bank."""
from __future__ import annotations

import re

_W10 = (2, 4, 10, 3, 5, 9, 4, 6, 8)
_W12_1 = (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
_W12_2 = (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
# KPP: tax office code (4 digits), reason code (2 digits or capital Latin letters since 2019), number (3 digits).
_KPP = re.compile(r"\d{4}[\dA-Z]{2}\d{3}")


def _check(digits: str, weights: tuple[int, ...]) -> int:
    return sum(int(d) * w for d, w in zip(digits, weights)) % 11 % 10


def inn_problem(inn: str) -> str | None:
    """None for a valid INN, else why not: "empty", "format" (not 10 or 12 digits) or "checksum"."""
    if not inn:
        return "empty"
    if not inn.isascii() or not inn.isdigit() or len(inn) not in (10, 12):
        return "format"
    if inn == "0" * len(inn):
        return "checksum"
    if len(inn) == 10:
        ok = _check(inn[:9], _W10) == int(inn[9])
    else:
        ok = _check(inn[:10], _W12_1) == int(inn[10]) and _check(inn[:11], _W12_2) == int(inn[11])
    return None if ok else "checksum"


def kpp_problem(kpp: str, inn: str = "") -> str | None:
    """None for a valid KPP for this INN, else "required" (a company's 10-digit INN needs one), "format" or
    "sole_trader" (a 12-digit INN has no KPP). An empty KPP (or "0", the bank's "none") is fine for 12 digits."""
    none = kpp in ("", "0")
    if len(inn) == 12:
        return None if none else "sole_trader"
    if none:
        return "required" if len(inn) == 10 else None
    return None if _KPP.fullmatch(kpp) else "format"


def with_check_digits(digits: str) -> str:
    """A valid INN from its first 9 (company) or 10 (sole trader) digits: the sandbox's made-up companies."""
    if len(digits) == 9 and digits.isdigit():
        return digits + str(_check(digits, _W10))
    if len(digits) == 10 and digits.isdigit():
        eleven = digits + str(_check(digits, _W12_1))
        return eleven + str(_check(eleven, _W12_2))
    raise ValueError("9 or 10 digits expected")
