"""Comparison keys for invoice numbers, so `СЧ-00412`, `сч–412` and `CЧ-412` find the same invoice."""
from __future__ import annotations

import re
import unicodedata

__all__ = ["DASHES", "fold_lookalikes", "normalize_invoice_number", "number_tail_key", "tail_of_key"]

#: Characters treated as a plain hyphen-minus.
DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"

# Cyrillic letters that look like Latin ones are folded to the Latin letter (lower case).
_LOOKALIKES = {
    "а": "a", "в": "b", "с": "c", "е": "e", "ё": "e", "н": "h", "к": "k", "м": "m",
    "о": "o", "р": "p", "т": "t", "х": "x", "у": "y",
}
_TABLE = str.maketrans({**_LOOKALIKES, **{d: "-" for d in DASHES}, "№": None, "#": None})
_LEADING_ZEROS = re.compile(r"(?<![0-9])0+(?=[0-9])")


def fold_lookalikes(s: str) -> str:
    """Case-fold, map Cyrillic look-alikes to Latin, unify dashes; keeps zeros and spaces."""
    return unicodedata.normalize("NFC", s).casefold().translate(_TABLE)


def normalize_invoice_number(s: str) -> str:
    """The key two spellings of one invoice number share (`00064` == `64`, `В24` == `b24`)."""
    folded = fold_lookalikes(s)
    folded = "".join(
        ch for ch in folded if not ch.isspace() and unicodedata.category(ch) not in ("Cf", "Cc")
    )
    return _LEADING_ZEROS.sub("", folded)


def number_tail_key(s: str) -> str:
    """The key without its letter prefix (`СЧ-1207` -> `1207`), for weaker suffix matching; "" if no digit."""
    return tail_of_key(normalize_invoice_number(s))


def tail_of_key(key: str) -> str:
    """`number_tail_key` for a string that is already a normalized key."""
    for i, ch in enumerate(key):
        if "0" <= ch <= "9":
            return key[i:]
    return ""
