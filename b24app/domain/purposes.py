"""Invoice numbers referred to in a payment purpose («назначение платежа»), found by a small scanner.

The text is split into atoms (letter runs, ASCII digit runs, single other characters, each knowing
whether whitespace precedes it). An invoice keyword («счёт» and its forms, «сч», «инвойс», «invoice»,
«inv») anchors a reference; after optional filler («на оплату», «№», «N», «No.») comes a number, then an
optional list («, », «и», «;», a date between items). Everything that is not anchored on an invoice
keyword is ignored, which is what keeps contract, specification, act, INN, card and amount digits out.
Every step looks at a bounded number of atoms and compound spans are precomputed, so the whole scan is
linear in the length of the purpose.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .numbers import DASHES, normalize_invoice_number

__all__ = ["extract_invoice_numbers", "MAX_NUMBER_LENGTH"]

#: Longer "numbers" are not invoice numbers (and keep the scan cheap).
MAX_NUMBER_LENGTH = 40

# --- vocabulary (all words are case-folded, ё -> е, Latin look-alikes -> Cyrillic in Cyrillic words) ---

_RU_KEYWORDS = frozenset(
    {"счет", "счета", "счету", "счете", "счетом", "счетам", "счетами", "счетах", "счетов", "сч"}
)
_EN_KEYWORDS = frozenset(
    {"invoice", "invoices", "inv", "инвойс", "инвойса", "инвойсу", "инвойсе", "инвойсы", "инвойсам", "инвойсов"}
)
_KEYWORDS = _RU_KEYWORDS | _EN_KEYWORDS
# Forms a typo is compared against (one edit away, same first two letters, 5-6 letters: «счеиу»).
_FUZZY_TARGETS = ("счету", "счета", "счете", "счетам", "счетом")
# Keywords that also serve as a number prefix when glued with a dash: «СЧ-00412», «INV-2025-0042».
_PREFIX_KEYWORDS = frozenset({"сч", "inv"})
_NON_PREFIX_KEYWORDS = _KEYWORDS - _PREFIX_KEYWORDS
# «счёт-договор», «счёт-оферта», «счёт-заказ», «счёт-спецификация» are still invoices.
_COMPOUND_INVOICE_PREFIXES = ("договор", "оферт", "заказ", "спецификац")
# Words before «счёт» that make it a bank account, not an invoice («лицевой счёт», «р/сч»).
_ACCOUNT_ADJECTIVES = frozenset(
    {
        "р", "рс", "расч", "расчетный", "расчетного", "расчетному", "расчетном",
        "лицевой", "лицевого", "лицевому", "лицевом", "лиц", "л",
        "корр", "кор", "корреспондентский", "корреспондентского", "корреспондентскому",
        "банковский", "банковского", "банковскому", "текущий", "текущего", "текущему",
        "ссудный", "ссудного", "ссудному", "депозитный", "депозитного", "депозитному",
        "карточный", "карточного", "карточному", "транзитный", "транзитного", "транзитному",
        "валютный", "валютного", "валютному", "tax",
    }
)
_FILLER_WORDS = frozenset(
    {"на", "оплату", "оплате", "к", "номер", "номеру", "номером", "no", "nr", "n", "num", "number", "nº"}
)
_SIGN_WORDS = frozenset({"no", "nr", "n", "num", "number", "nº", "номер", "номеру", "номером"})
_FILLER_PUNCT = frozenset({".", ":", "-", "№", "#", "'", '"', "«", "(", "°"})
_SIGN_PUNCT = frozenset({"№", "#"})
_LIST_SIGN_PUNCT = frozenset({"№", "#", ".", "'", '"', "«"})
_CLOSERS = frozenset({"'", '"', "»", ")"})
_DATE_WORDS = frozenset({"от", "ot", "from", "dated", "of"})
_YEAR_WORDS = frozenset({"г", "гг", "год", "года", "y", "yr"})
_MONTH_STEMS = (
    "янв", "фев", "мар", "апр", "мая", "май", "июн", "июл", "авг", "сен", "окт", "ноя", "дек",
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
)
_LIST_WORDS = frozenset({"и", "and", "&"})
# Words after a number that make it a quantity, an amount or a duration.
_UNIT_WORDS = frozenset(
    {
        "р", "м", "м2", "м3", "т", "л", "тыс", "млн", "млрд", "кв", "ед", "шт", "руб", "коп",
        "мес", "дн", "дня", "дней", "день", "лет", "час", "часа", "часов", "кг", "экз", "чел",
        "rub", "usd", "eur", "pcs", "pc", "qty",
    }
)
_UNIT_PREFIXES = (
    "штук", "рубл", "копе", "месяц", "суток", "сутки", "тонн", "литр", "позици", "единиц",
    "упак", "комплект", "month", "day", "year", "hour", "piece",
)
_CURRENCY_SIGNS = frozenset({"%", "₽", "$", "€", "¥", "£", "₸", "₴"})
# Letters glued right after digits that end a number («771от31.10», «12шт», «2026Г»).
_GLUED_STOP_WORDS = frozenset({"от", "ot", "и", "по", "за", "на", "в", "с"}) | _YEAR_WORDS
# First letters of a compound that name another document or a requisite («НДС20», «ТОРГ-12»).
_TRAP_PREFIXES = frozenset(
    {
        "ндс", "инн", "кпп", "бик", "огрн", "огрнип", "окпо", "октмо", "окато", "кбк", "торг", "тн",
        "ттн", "упд", "сф", "акт", "дог", "спец", "сп", "зак", "тел", "р", "рс", "кс", "лс", "уин",
        "уип", "vat", "tel",
    }
)
# Words that may follow a list item after «,»/«и» (anything else makes it a quantity or a stray number).
_LIST_FOLLOWERS = frozenset(
    {
        "от", "ot", "и", "and", "за", "по", "в", "во", "без", "с", "со", "на", "к", "ндс", "from",
        "dated", "for", "of", "согласно", "включая", "вкл", "т", "том", "сумма", "сумму", "оплата",
        "оплачено", "аванс", "предоплата", "доплата", "vat", "incl", "including",
    }
)
_LIST_FOLLOWER_PREFIXES = (
    "договор", "дог", "контракт", "спец", "акт", "упд", "накладн", "тн", "торг", "заказ", "счет", "сч",
)

# Latin letters that look like Cyrillic ones, for keyword recognition in mixed-layout words («cчет»).
_TO_CYRILLIC = str.maketrans(
    {"a": "а", "b": "в", "c": "с", "e": "е", "h": "н", "k": "к", "m": "м", "o": "о",
     "p": "р", "t": "т", "x": "х", "y": "у"}
)
_SLASH_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_PHONE = re.compile(r"[78]-\d{3}-\d{3}-\d{2}-\d{2}")
_KOPECKS = re.compile(r"\d{3,}-\d{2}")


@dataclass(frozen=True, slots=True)
class _Atom:
    kind: str  # "L" letter run, "D" ASCII digit run, "P" one other character
    start: int
    end: int
    spaced: bool  # whitespace or the start of the text precedes it
    word: str  # folded text for letters, the text itself otherwise


def extract_invoice_numbers(purpose: str) -> list[str]:
    """Invoice numbers in a payment purpose, as written, in order of appearance, without duplicates."""
    if not purpose:
        return []
    scanner = _Scanner(_clean(purpose))
    seen: set[str] = set()
    result: list[str] = []
    for number in scanner.scan():
        key = normalize_invoice_number(number)
        if key not in seen:
            seen.add(key)
            result.append(number)
    return result


def _clean(purpose: str) -> str:
    """NFC text with invisible format characters dropped, controls and odd spaces made spaces, dashes unified."""
    text = unicodedata.normalize("NFC", purpose)
    out: list[str] = []
    for ch in text:
        if ch in DASHES:
            out.append("-")
        elif ch.isascii():
            out.append(ch if ch >= " " and ch != "\x7f" else " ")
        else:
            category = unicodedata.category(ch)
            if category == "Cf":
                continue
            out.append(" " if category[0] in "CZ" else ch)
    return "".join(out)


def _fold_word(text: str) -> str:
    word = text.casefold().replace("ё", "е")
    if any("\u0400" <= ch <= "\u04ff" for ch in word):
        word = word.translate(_TO_CYRILLIC)
    return word


def _tokenize(text: str) -> list[_Atom]:
    atoms: list[_Atom] = []
    n = len(text)
    i = 0
    spaced = True
    while i < n:
        ch = text[i]
        if ch.isspace():
            spaced = True
            i += 1
            continue
        j = i + 1
        if "0" <= ch <= "9":
            while j < n and "0" <= text[j] <= "9":
                j += 1
            atoms.append(_Atom("D", i, j, spaced, text[i:j]))
        elif ch.isalpha():
            while j < n and text[j].isalpha():
                j += 1
            atoms.append(_Atom("L", i, j, spaced, _fold_word(text[i:j])))
        else:
            atoms.append(_Atom("P", i, j, spaced, ch))
        spaced = False
        i = j
    return atoms


def _within_one_edit(a: str, b: str) -> bool:
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    for k in range(len(long_)):
        if long_[:k] + long_[k + 1:] == short:
            return True
    return False


def _is_keyword(word: str) -> bool:
    if word in _KEYWORDS:
        return True
    return (
        5 <= len(word) <= 6
        and word.startswith("сч")
        and any(_within_one_edit(word, target) for target in _FUZZY_TARGETS)
    )


def _is_month(word: str) -> bool:
    return len(word) >= 3 and word.startswith(_MONTH_STEMS)


def _is_unit(word: str) -> bool:
    return word in _UNIT_WORDS or word.startswith(_UNIT_PREFIXES)


class _Scanner:
    """One pass over the atoms of a cleaned purpose."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.atoms = _tokenize(text)
        self.n = len(self.atoms)
        self._link_compounds()

    # --- compounds: alphanumeric atoms glued directly or through a glued "-" or "/" ---

    def _glued(self, i: int) -> bool:
        return i < self.n and not self.atoms[i].spaced

    def _direct_link(self, i: int) -> bool:
        """Atom i+1 continues the compound of atom i with nothing in between."""
        if i + 1 >= self.n:
            return False
        a, b = self.atoms[i], self.atoms[i + 1]
        if b.spaced or a.kind == "P" or b.kind == "P":
            return False
        if a.kind == "D" and b.kind == "L":
            return len(b.word) <= 4 and b.word not in _GLUED_STOP_WORDS and not _is_month(b.word) \
                and not _is_unit(b.word)
        return True

    def _joiner_link(self, i: int) -> bool:
        """Atom i+2 continues the compound of atom i through a glued "-" or "/"."""
        if i + 2 >= self.n:
            return False
        a, j, b = self.atoms[i], self.atoms[i + 1], self.atoms[i + 2]
        return (
            a.kind != "P" and j.kind == "P" and j.word in "-/" and not j.spaced
            and b.kind != "P" and not b.spaced
            and not (b.kind == "L" and b.word in _DATE_WORDS)
        )

    def _link_compounds(self) -> None:
        n = self.n
        self.end_from = [i + 1 for i in range(n)]
        for i in range(n - 1, -1, -1):
            if self.atoms[i].kind == "P":
                continue
            if self._direct_link(i):
                self.end_from[i] = self.end_from[i + 1]
            elif self._joiner_link(i):
                self.end_from[i] = self.end_from[i + 2]
        self.start_of = list(range(n))
        for i in range(n):
            if self.atoms[i].kind == "P":
                continue
            if i >= 1 and self._direct_link(i - 1):
                self.start_of[i] = self.start_of[i - 1]
            elif i >= 2 and self._joiner_link(i - 2):
                self.start_of[i] = self.start_of[i - 2]

    # --- the scan ---

    def scan(self) -> list[str]:
        found: list[str] = []
        i = 0
        while i < self.n:
            atom = self.atoms[i]
            if atom.kind == "L" and _is_keyword(atom.word):
                parsed = self._anchor(i)
                if parsed is not None:
                    numbers, i = parsed
                    found.extend(numbers)
                    continue
            i += 1
        return found

    def _is(self, i: int, kind: str, words: frozenset[str] | str | None = None) -> bool:
        if i >= self.n or self.atoms[i].kind != kind:
            return False
        return words is None or self.atoms[i].word in words

    def _account_context(self, k: int) -> bool:
        """«р/сч», «к/сч», «лицевой счёт», «расч. счёт», «tax invoice»: not a CRM invoice."""
        p = k - 1
        if p >= 0 and self.atoms[k].spaced is False and self._is(p, "P", "/") \
                and p >= 1 and self._is(p - 1, "L") and not self.atoms[p].spaced:
            return True
        if p >= 0 and self._is(p, "P", ".") and not self.atoms[p].spaced:
            p -= 1
        return p >= 0 and self._is(p, "L") and self.atoms[p].word in _ACCOUNT_ADJECTIVES

    def _modifier(self, k: int) -> tuple[str, int]:
        """("tax", _) for «сч-ф», «сч/ф», «счёт-фактура»; ("compound", next) for «счёт-договор»; else ("", k+1)."""
        p = k + 1
        if self._is(p, "P", ".") and self._glued(p):
            p += 1
        joined = self._is(p, "P", "-/") and self._glued(p)
        if joined:
            p += 1
        if self._is(p, "L"):
            word = self.atoms[p].word
            if word == "ф" or word.startswith("фак"):
                return "tax", p + 1
            if joined and self._glued(p) and word.startswith(_COMPOUND_INVOICE_PREFIXES):
                return "compound", p + 1
        return "", k + 1

    def _skip(self, p: int, words: frozenset[str], punct: frozenset[str], limit: int = 6) -> tuple[int, bool]:
        """Skip up to `limit` filler atoms; also tell whether a number sign was among them."""
        saw_sign = False
        for _ in range(limit):
            if p >= self.n:
                break
            atom = self.atoms[p]
            if atom.kind == "P" and atom.word in punct:
                saw_sign = saw_sign or atom.word in _SIGN_PUNCT
            elif atom.kind == "L" and atom.word in words:
                saw_sign = saw_sign or atom.word in _SIGN_WORDS
            else:
                break
            p += 1
        return p, saw_sign

    def _anchor(self, k: int) -> tuple[list[str], int] | None:
        """Numbers referenced by the keyword at atom k and the atom after them, or None."""
        if self._account_context(k):
            return None
        modifier, p = self._modifier(k)
        if modifier == "tax":
            return None
        keyword = self.atoms[k].word
        if (
            keyword in _PREFIX_KEYWORDS and modifier == ""
            and self._is(k + 1, "P", "-") and self._glued(k + 1) and self._is(k + 2, "D") and self._glued(k + 2)
        ):
            start, end = self.start_of[k], self.end_from[k]
        else:
            p, _ = self._skip(p, _FILLER_WORDS, _FILLER_PUNCT)
            if self._is(p, "L", _DATE_WORDS):  # «по счёту от 12.03.2024 № 45»
                after_date = self._date(p)
                if after_date is None:
                    return None
                p, saw_sign = self._skip(after_date, _FILLER_WORDS, _FILLER_PUNCT)
                if not saw_sign:
                    return None
            if p >= self.n or self.atoms[p].kind == "P":
                return None
            start, end = p, self.end_from[p]
        first = self._number(start, end, in_list=False)
        if first is None:
            return None
        numbers = [first]
        while True:
            q, _ = self._skip(end, frozenset(), _CLOSERS, limit=2)
            after_date = self._date(q)
            if after_date is not None:
                q = after_date
            q = self._separator(q)
            if q is None:
                break
            q, _ = self._skip(q, _SIGN_WORDS, _LIST_SIGN_PUNCT, limit=4)
            if q >= self.n or self.atoms[q].kind == "P":
                break
            item = self._number(q, self.end_from[q], in_list=True)
            if item is None:
                break
            numbers.append(item)
            end = self.end_from[q]
        return numbers, end

    def _separator(self, p: int) -> int | None:
        if self._is(p, "P", ",;"):
            p += 1
            if self._is(p, "L", _LIST_WORDS):
                p += 1
            return p
        if (self._is(p, "L", _LIST_WORDS) or self._is(p, "P", "&")) and p < self.n:
            return p + 1
        return None

    def _date(self, p: int) -> int | None:
        """End of a date clause at p («от 31.10.2021 г.», «от 11января 2021г», «ОТ 2024 Г.»), or None."""
        had_word = self._is(p, "L", _DATE_WORDS)
        if had_word:
            p += 1
        if not self._is(p, "D"):
            return None
        day = self.atoms[p].word
        q = None
        if len(day) <= 2:
            sep = self.atoms[p + 1].word if self._is(p + 1, "P", "./-") and self._glued(p + 1) else None
            if (
                sep is not None and self._is(p + 2, "D") and self._glued(p + 2) and len(self.atoms[p + 2].word) <= 2
                and self._is(p + 3, "P", sep) and self._glued(p + 3)
                and self._is(p + 4, "D") and self._glued(p + 4) and len(self.atoms[p + 4].word) in (2, 4)
            ):
                q = p + 5
            elif self._is(p + 1, "L") and _is_month(self.atoms[p + 1].word):
                q = p + 2
                if self._is(q, "D") and len(self.atoms[q].word) in (2, 4):
                    q += 1
        elif had_word and len(day) == 4 and day[:2] in ("19", "20"):
            q = p + 1
        if q is None:
            return None
        if self._is(q, "L", _YEAR_WORDS):
            q += 1
            if self._is(q, "P", ".") and self._glued(q):
                q += 1
        return q

    def _number(self, start: int, end: int, in_list: bool) -> str | None:
        """The text of the compound atoms[start:end] if it can be an invoice number here, else None."""
        atoms = self.atoms
        first, last = atoms[start], atoms[end - 1]
        if last.end - first.start > MAX_NUMBER_LENGTH:
            return None
        if first.kind == "L":
            if first.word in _TRAP_PREFIXES or first.word in _NON_PREFIX_KEYWORDS:
                return None
            joined = start + 1 < end and atoms[start + 1].kind == "P"
            if not joined and (in_list or len(first.word) > 3):
                return None
        text = self.text[first.start:last.end]
        if not any("0" <= ch <= "9" for ch in text):
            return None
        if first.kind == "D" and end == start + 1 and len(first.word) >= 16:
            return None  # card, settlement (20) or other account (22) number
        if _SLASH_DATE.fullmatch(text):
            day, month, _ = (int(x) for x in _SLASH_DATE.fullmatch(text).groups())  # type: ignore[union-attr]
            if 1 <= day <= 31 and 1 <= month <= 12:
                return None
        if _PHONE.fullmatch(text) or (in_list and _KOPECKS.fullmatch(text)):
            return None
        if not self._plausible_follower(end, last, in_list):
            return None
        return text

    def _digit_groups_continue(self, e: int, last: _Atom) -> bool:
        """The number is the head of a spaced card number («4276 1234 5678 9012») or amount («1 500,00 руб»)."""
        if last.kind != "D" or self.atoms[e].kind != "D":
            return False
        if len(last.word) == 4 and all(self._is(e + k, "D") and len(self.atoms[e + k].word) == 4 for k in range(3)):
            return True
        if len(last.word) > 3:
            return False
        p = e
        for _ in range(5):  # thousands groups
            if not (self._is(p, "D") and len(self.atoms[p].word) == 3 and self.atoms[p].spaced):
                break
            p += 1
        if p == e or p >= self.n:
            return False
        nxt = self.atoms[p]
        if nxt.kind == "P":
            return nxt.word in _CURRENCY_SIGNS or (
                nxt.word in ".," and not nxt.spaced and self._is(p + 1, "D") and len(self.atoms[p + 1].word) == 2
            )
        return nxt.kind == "L" and _is_unit(nxt.word)

    def _plausible_follower(self, e: int, last: _Atom, in_list: bool) -> bool:
        """What follows the number does not make it an amount, a date, a quantity or a year."""
        if e >= self.n:
            return True
        nxt = self.atoms[e]
        if nxt.kind == "P":
            if nxt.word in _CURRENCY_SIGNS:
                return False
            if nxt.word in ".," and not nxt.spaced and self._is(e + 1, "D") and self._glued(e + 1):
                if nxt.word == "." or last.kind != "D":
                    return False  # 01.02.2026, 5.616.666,67, 2020.0110
                return len(self.atoms[e + 1].word) != 2  # 18026,52 is an amount; 1395,1401 a list
            return True
        if nxt.kind == "D":
            return not in_list and not self._digit_groups_continue(e, last)
        word = nxt.word
        if word == "р" and self._is(e + 1, "P", "/"):  # «р/с»
            return True
        if _is_unit(word) or (last.kind == "D" and _is_month(word)):
            return False
        if word in _YEAR_WORDS:
            return not (last.kind == "D" and len(last.word) == 4)
        if not in_list:
            return True
        return word in _LIST_FOLLOWERS or word.startswith(_LIST_FOLLOWER_PREFIXES) or _is_keyword(word)
