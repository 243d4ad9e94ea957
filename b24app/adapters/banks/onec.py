"""A strict, streaming reader of 1CClientBankExchange statement files (the text format every Russian bank exports).

Format: docs/banks/1c-files.md. One pass, one line in memory at a time; every error names its line number.
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import BinaryIO, Iterator

from b24app.domain.errors import MoneyError
from b24app.domain.money import parse_amount

MAGIC = "1CClientBankExchange"
VERSIONS = ("1.01", "1.02", "1.03")
ENCODINGS = {"windows": "cp1251", "dos": "cp866"}  # Кодировка=… → Python codec
MAX_LINE = 64 * 1024            # a longer line is not a statement line (and would defeat bounded memory)
MAX_HEADER_LINES = 200          # lines before the first section
MAX_FIELDS = 300                # fields of one section
_KEY = re.compile(r"[0-9A-Za-zА-Яа-яЁё_]+")
_DATE = re.compile(r"(\d{2})\.(\d{2})\.(\d{4})")
_AMOUNT = re.compile(r"\d{1,15}(?:[.,]\d{1,2})?")
_NAME_INN = re.compile(r"^ИНН\s*\d{10,12}\s+")
_BOM = codecs.BOM_UTF8
_LINES = "\x00lines"  # a key no field can have: where each field of a section was
_SECTION_MARKERS = ("СекцияРасчСчет", "СекцияДокумент", "КонецФайла")  # what ends the header
_READ_KEYS = ("Номер", "Дата", "Сумма", "ПлательщикСчет", "ПлательщикРасчСчет", "ПлательщикИНН",
              "ПолучательСчет", "ПолучательРасчСчет", "ПолучательИНН")


class StatementFileError(ValueError):
    """The file is not a readable 1C statement; `line` is 1-based (None: the file as a whole)."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(f"line {line}: {message}" if line else message)
        self.message, self.line = message, line


@dataclass(frozen=True)
class StatementHeader:
    version: str
    encoding: str             # the Python codec the file is read with
    declared_encoding: str    # what Кодировка= says
    sender: str
    accounts: tuple[str, ...]  # РасчСчет lines of the header
    date_from: date | None
    date_to: date | None


@dataclass(frozen=True)
class AccountSection:
    line: int
    account: str
    fields: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class StatementDocument:
    """One `СекцияДокумент`: what reconciliation needs, the rest of its fields in `fields`."""

    line: int
    kind: str
    number: str
    doc_date: date
    amount: Decimal
    payer_account: str
    payer_inn: str
    payer_kpp: str
    payer_name: str
    recipient_account: str
    recipient_inn: str
    recipient_name: str
    purpose: str
    credited: date | None     # ДатаПоступило (empty in many banks' files for outgoing payments, and in some for all)
    debited: date | None      # ДатаСписано
    fields: dict = field(default_factory=dict, compare=False, repr=False)


def human_size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:.1f} MB"
    return f"{n // 1024} KB" if n >= 1024 else f"{n} bytes"


def _digits(value: str) -> str:
    return re.sub(r"\s+", "", value)


def _parse_date(value: str, key: str, line: int, *, required: bool) -> date | None:
    value = value.strip()
    if not value:
        if required:
            raise StatementFileError(f"{key} is empty", line)
        return None
    m = _DATE.fullmatch(value)
    if not m:
        raise StatementFileError(f"{key}={value!r} is not a date in the form ДД.ММ.ГГГГ", line)
    try:
        return date(int(m[3]), int(m[2]), int(m[1]))
    except ValueError:
        raise StatementFileError(f"{key}={value!r} is not a calendar date", line) from None


def _parse_amount(value: str, line: int) -> Decimal:
    """The 1C format's amount ("1234.56", no group spaces): the domain parser, positive only."""
    value = value.strip()
    if not _AMOUNT.fullmatch(value):
        raise StatementFileError(f"Сумма={value!r} is not an amount like 1234.56", line)
    try:
        return parse_amount(value, zero=False)
    except MoneyError:
        raise StatementFileError(f"Сумма={value!r} is not a positive amount", line) from None


def _encoding_of_key(raw: bytes) -> str | None:
    """Which codec the bytes `Кодировка=` at the start of `raw` are written in (None: not that line)."""
    for codec in ("cp1251", "cp866", "utf-8"):
        if raw.lstrip().startswith("Кодировка".encode(codec)):
            return codec
    return None


def _is_section_start(raw: bytes) -> bool:
    return any(raw.lstrip().startswith(m.encode(c)) for m in _SECTION_MARKERS for c in ("cp1251", "cp866", "utf-8"))


class StatementFile:
    """Iterate a 1C statement: `StatementFile(stream).header`, then `.items()` yields sections in file order.

    `max_bytes` bounds what is read; the stream is read line by line and never held whole.
    """

    def __init__(self, stream: BinaryIO, *, max_bytes: int | None = None):
        self._stream, self._max = stream, max_bytes
        self._read, self._line = 0, 0
        self._pending: list[tuple[int, bytes]] = []
        self.header = self._read_header()
        self.finished = False

    # -- raw lines --------------------------------------------------------------------------------
    def _raw(self) -> bytes | None:
        if self._pending:
            self._line, raw = self._pending.pop(0)
            return raw
        raw = self._stream.readline(MAX_LINE + 1)
        if not raw:
            return None
        self._line += 1
        self._read += len(raw)
        if self._max is not None and self._read > self._max:
            raise StatementFileError(f"the file is larger than the allowed {human_size(self._max)} "
                                     f"(stopped reading at line {self._line}); split the statement by period")
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            raise StatementFileError(f"a line longer than {MAX_LINE // 1024} KB: not a statement line", self._line)
        return raw

    def _decode(self, raw: bytes) -> str:
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError:
            raise StatementFileError(f"not valid {self.declared} ({self.encoding}) text: the file's encoding is not "
                                     "what its Кодировка line says", self._line) from None
        return text.rstrip("\r\n").strip()

    def _lines(self) -> Iterator[tuple[int, str]]:
        while (raw := self._raw()) is not None:
            text = self._decode(raw)
            if text:
                yield self._line, text

    # -- header -----------------------------------------------------------------------------------
    def _read_header(self) -> StatementHeader:
        first = self._raw()
        if first is None:
            raise StatementFileError("the file is empty")
        bom = first.startswith(_BOM)
        if bom:
            first = first[len(_BOM):]
        if first.strip() != MAGIC.encode():
            raise StatementFileError(f"not a 1C statement file: the first line must be {MAGIC}", 1)
        buffered: list[tuple[int, bytes]] = []
        actual = declared = None
        while True:
            raw = self._raw()
            if raw is None:
                raise StatementFileError("the file ends inside its header (truncated?)", self._line)
            if len(buffered) >= MAX_HEADER_LINES:
                raise StatementFileError(f"no section within the first {MAX_HEADER_LINES} lines", self._line)
            buffered.append((self._line, raw))
            if actual is None and (actual := _encoding_of_key(raw)) is not None:
                value = raw.split(b"=", 1)[1].decode("ascii", "replace").strip() if b"=" in raw else ""
                declared = value
                if value.casefold() not in ENCODINGS:
                    raise StatementFileError(f"Кодировка={value!r} is not supported (Windows or DOS)", self._line)
                wanted = ENCODINGS[value.casefold()]
                if bom:
                    actual = "utf-8"  # a UTF-8 byte order mark says what the bytes are, whatever the line says
                elif actual != wanted:
                    raise StatementFileError(
                        f"the file says Кодировка={value} ({wanted}) but is written in {actual}: "
                        f"export it again in {value}'s encoding, or convert it", self._line)
                continue
            if _is_section_start(raw):
                break
        if actual is None:
            raise StatementFileError("the header has no Кодировка line (Windows or DOS)", buffered[0][0])
        self.encoding, self.declared = actual, declared
        # the section line that ended the header is read again by items()
        self._pending = [buffered.pop()]
        values: dict[str, tuple[int, str]] = {}
        accounts: list[str] = []
        for number, raw in buffered:
            self._line = number
            text = self._decode(raw)
            if not text:
                continue
            key, value = self._split(text, number)
            if key == "РасчСчет":
                accounts.append(_digits(value))
            else:
                values.setdefault(key, (number, value))
        at, version = values.get("ВерсияФормата", (buffered[0][0], ""))
        if version not in VERSIONS:
            raise StatementFileError(f"ВерсияФормата={version!r} is not supported ({', '.join(VERSIONS)})", at)

        def day(key: str) -> date | None:
            line, value = values.get(key, (0, ""))
            return _parse_date(value, key, line, required=False)

        return StatementHeader(
            version=version, encoding=actual, declared_encoding=declared or "",
            sender=values.get("Отправитель", (0, ""))[1], accounts=tuple(a for a in accounts if a),
            date_from=day("ДатаНачала"), date_to=day("ДатаКонца"))

    @staticmethod
    def _split(text: str, line: int) -> tuple[str, str]:
        if "=" not in text:
            raise StatementFileError(f"{text[:60]!r} is not a Key=Value line", line)
        key, value = text.split("=", 1)
        key = key.strip()
        if not _KEY.fullmatch(key):
            raise StatementFileError(f"{key[:60]!r} is not a field name: is the file's encoding what its "
                                     "Кодировка line says?", line)
        return key, value.strip()

    # -- sections ---------------------------------------------------------------------------------
    def items(self) -> Iterator[AccountSection | StatementDocument]:
        """Sections in file order; raises StatementFileError at the first bad line, or if КонецФайла is missing."""
        lines = self._lines()
        for number, text in lines:
            if text == "КонецФайла":
                self.finished = True
                for extra_number, _ in lines:
                    raise StatementFileError("text after КонецФайла", extra_number)
                return
            if text == "СекцияРасчСчет":
                fields = self._section(lines, number, "КонецРасчСчет")
                fields.pop(_LINES)
                account = _digits(fields.get("РасчСчет", ""))
                if not account:
                    raise StatementFileError("СекцияРасчСчет without РасчСчет", number)
                yield AccountSection(line=number, account=account, fields=fields)
            elif text.startswith("СекцияДокумент"):
                kind = text.split("=", 1)[1].strip() if "=" in text else ""
                yield self._document(number, kind, self._section(lines, number, "КонецДокумента"))
            else:
                key = text.split("=", 1)[0].strip()
                if key in ("КонецДокумента", "КонецРасчСчет"):
                    raise StatementFileError(f"{key} without a section it ends", number)
                raise StatementFileError(f"{text[:60]!r} outside any section (expected СекцияДокумент, "
                                         "СекцияРасчСчет or КонецФайла)", number)
        raise StatementFileError("the file ends without КонецФайла (truncated?)", self._line)

    def _section(self, lines: Iterator[tuple[int, str]], start: int, end: str) -> dict[str, str]:
        """Fields of one section; `fields[_LINES]` maps each key to its line (for errors)."""
        fields: dict = {_LINES: {}}
        last_key = None
        for number, text in lines:
            if text == end:
                return fields
            if text in ("КонецФайла", "СекцияРасчСчет") or text.startswith("СекцияДокумент"):
                raise StatementFileError(f"the section opened at line {start} has no {end}", number)
            if "=" not in text and last_key is not None and last_key.startswith("НазначениеПлатежа"):
                # Some banks break a long purpose over several lines: the continuation belongs to it.
                fields[last_key] = f"{fields[last_key]} {text}".strip()
                continue
            key, value = self._split(text, number)
            if key in fields and key in _READ_KEYS and fields[key] != value:
                raise StatementFileError(f"{key} appears twice with different values in the section opened at "
                                         f"line {start}", number)
            if len(fields) >= MAX_FIELDS:
                raise StatementFileError(f"more than {MAX_FIELDS} fields in the section opened at line {start}",
                                         number)
            if key not in fields:
                fields[key], fields[_LINES][key] = value, number
            last_key = key
        raise StatementFileError(f"the file ends inside the section opened at line {start}: no {end} (truncated?)",
                                 self._line)

    @staticmethod
    def _document(line: int, kind: str, f: dict) -> StatementDocument:
        at = f.pop(_LINES).get
        if "Сумма" not in f:
            raise StatementFileError("the document has no Сумма", line)
        payer_account = _digits(f.get("ПлательщикСчет") or f.get("ПлательщикРасчСчет") or "")
        recipient_account = _digits(f.get("ПолучательСчет") or f.get("ПолучательРасчСчет") or "")
        if not payer_account and not recipient_account:
            raise StatementFileError("the document has neither ПлательщикСчет nor ПолучательСчет", line)
        purpose = f.get("НазначениеПлатежа", "")
        if not purpose:
            purpose = " ".join(f[k] for k in (f"НазначениеПлатежа{i}" for i in range(1, 7)) if f.get(k))
        return StatementDocument(
            line=line, kind=kind, number=f.get("Номер", "").strip(),
            doc_date=_parse_date(f.get("Дата", ""), "Дата", at("Дата", line), required=True),
            amount=_parse_amount(f["Сумма"], at("Сумма", line)),
            payer_account=payer_account, payer_inn=_inn(f.get("ПлательщикИНН", "")),
            payer_kpp=f.get("ПлательщикКПП", "").strip(),
            payer_name=_name(f, "Плательщик"),
            recipient_account=recipient_account, recipient_inn=_inn(f.get("ПолучательИНН", "")),
            recipient_name=_name(f, "Получатель"),
            purpose=purpose,
            credited=_parse_date(f.get("ДатаПоступило", ""), "ДатаПоступило", at("ДатаПоступило", line),
                                 required=False),
            debited=_parse_date(f.get("ДатаСписано", ""), "ДатаСписано", at("ДатаСписано", line), required=False),
            fields=f)


def _inn(value: str) -> str:
    value = _digits(value)
    return "" if set(value) <= {"0"} else value  # "0" is how some banks write "no INN"


def _name(f: dict[str, str], prefix: str) -> str:
    """`Плательщик1` is the name alone; `Плательщик` is often «ИНН 7705… ООО Ромашка»."""
    if f.get(prefix + "1"):
        return f[prefix + "1"]
    return _NAME_INN.sub("", f.get(prefix, "")).strip()


def parse_moment(day: date) -> datetime:
    """A statement day as the aware UTC instant of Moscow midnight (how T-Bank dates date-only values)."""
    from .operations import MSK

    return datetime(day.year, day.month, day.day, tzinfo=MSK).astimezone(timezone.utc)
