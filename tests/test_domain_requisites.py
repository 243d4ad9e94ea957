"""INN check digits and KPP format: the link form refuses a typo before the bank's phone and SMS steps."""
from __future__ import annotations

import pytest

from b24app.domain.requisites import inn_problem, kpp_problem


@pytest.mark.parametrize(("inn", "problem"), [
    ("7707083893", None),        # Sberbank
    ("7710140679", None),        # T-Bank
    ("7701234560", None),        # the sandbox's demo company
    ("500100732259", None),      # a sole trader (both check digits)
    ("7707083894", "checksum"),  # last digit typed wrong
    ("7707038893", "checksum"),  # two digits swapped
    ("500100732258", "checksum"),
    ("500100732269", "checksum"),
    ("0000000000", "checksum"),
    ("", "empty"),
    ("770708389", "format"),
    ("77070838931", "format"),
    ("7707 083893", "format"),
    ("77O7083893", "format"),    # a letter O for a zero
    ("７７０７０８３８９３", "format"),  # full-width digits
])
def test_inn(inn, problem):
    assert inn_problem(inn) == problem


@pytest.mark.parametrize(("kpp", "inn", "problem"), [
    ("773601001", "7707083893", None),
    ("7736AB001", "7707083893", None),   # letters in the reason code since 2019
    ("", "7707083893", "required"),
    ("0", "7707083893", "required"),
    ("77360100", "7707083893", "format"),
    ("7736ab001", "7707083893", "format"),
    ("77360100X", "7707083893", "format"),
    ("", "500100732259", None),
    ("0", "500100732259", None),
    ("773601001", "500100732259", "sole_trader"),
])
def test_kpp(kpp, inn, problem):
    assert kpp_problem(kpp, inn) == problem


@pytest.mark.parametrize("digits", ["770708389", "770123456", "5001007322", "000000001"])
def test_with_check_digits_makes_valid_inns(digits):
    from b24app.domain.requisites import with_check_digits
    inn = with_check_digits(digits)
    assert inn.startswith(digits) and len(inn) == len(digits) + (1 if len(digits) == 9 else 2)
    assert inn_problem(inn) is None
