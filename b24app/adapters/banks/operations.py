"""Parse T-Bank statement/webhook operation objects into one typed, comparable value."""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Mapping

from b24app.domain import money
from b24app.domain.errors import MoneyError
from b24app.domain.money import currency_alpha
from .errors import MalformedOperation

# Moscow has been UTC+3 without DST since 2014-10-26; statement data only exists from June 2023,
# so a fixed offset is exact here and needs no tzdata.
MSK = timezone(timedelta(hours=3), "MSK")

STATUSES = ("Transaction", "Authorization")
# What our tables hold (models.Operation): Numeric(18, 2) and String(128). A value beyond them would be refused
# by PostgreSQL on every poll (and silently turned into a float by SQLite), so it is malformed here
# (the amount bound is domain.money.AMOUNT_LIMIT).
OPERATION_ID_MAX = 128


def parse_bank_datetime(value: object, field_name: str = "date") -> datetime:
    """Parse an ISO-8601 bank timestamp into an aware UTC datetime (naive means UTC, date-only means MSK midnight)."""
    if not isinstance(value, str) or not value.strip():
        raise MalformedOperation(f"{field_name}: expected an ISO-8601 string, got {value!r}", field=field_name)
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), MSK).astimezone(timezone.utc)
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise MalformedOperation(f"{field_name}: not an ISO-8601 date-time: {value!r}", field=field_name) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def parse_amount(value: object, field_name: str = "accountAmount", *, negative: bool = False) -> Decimal:
    """Exact Decimal for a JSON amount (number, Decimal or numeric string): the domain parser, refusing thousands
    separators, negatives (unless `negative`, for a balance), amounts our tables cannot hold and more than 2
    decimals, as MalformedOperation naming the field."""
    if value is None:
        raise MalformedOperation(f"{field_name}: missing", field=field_name)
    try:
        return money.parse_amount(value, negative=negative, below=money.AMOUNT_LIMIT,  # type: ignore[arg-type]
                                  grouped=False)
    except MoneyError as exc:
        raise MalformedOperation(f"{field_name}: {exc}", field=field_name) from exc


def _is_credit(value: object) -> bool:
    """True for "Credit" (also the Cyrillic-С spelling from the docs), False for "Debit"."""
    if not isinstance(value, str):
        raise MalformedOperation(f"typeOfOperation: missing or not a string: {value!r}", field="typeOfOperation")
    norm = value.strip().replace("\u0421", "C").replace("\u0441", "c").casefold()
    if norm == "credit":
        return True
    if norm == "debit":
        return False
    raise MalformedOperation(f"typeOfOperation: expected Credit or Debit, got {value!r}", field="typeOfOperation")


def _status(value: object) -> str:
    for status in STATUSES:
        if isinstance(value, str) and value.strip().casefold() == status.casefold():
            return status
    raise MalformedOperation(
        f"operationStatus: expected Transaction or Authorization, got {value!r}", field="operationStatus"
    )


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def normalize_purpose(purpose: str) -> str:
    """Purpose text reduced to what survives re-typing: NFKC, casefold, ё→е, single spaces."""
    text = unicodedata.normalize("NFKC", purpose).casefold().replace("ё", "е")
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class BankOperation:
    """One bank operation as the reconciler needs it; `raw` keeps the bank's object untouched."""

    operation_id: str
    account_number: str
    operation_date: datetime
    status: str
    is_credit: bool
    amount: Decimal
    currency: str
    purpose: str
    document_number: str
    payer_name: str
    payer_inn: str
    payer_kpp: str
    payer_account: str
    doc_date: datetime | None = None
    charge_date: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    source: str = "tbank"  # where it was read: tbank (the API) | 1c (a statement file); operation_id is per source

    @property
    def category(self) -> str | None:
        """T-Bank's `category` of the operation (e.g. incomePeople, fee), when it is a short word."""
        value = self.raw.get("category") if isinstance(self.raw, Mapping) else None
        if not isinstance(value, str):
            return None
        return value.strip()[:64] or None

    @property
    def is_transaction(self) -> bool:
        return self.status == "Transaction"

    @property
    def payment_day(self) -> date:
        """Moscow calendar day of the payment: docDate (fixed by the payer's order), else chargeDate, else operationDate.

        docDate is preferred because it does not move when an Authorization becomes a Transaction
        or when the bank re-identifies a night-time operation.
        """
        moment = self.doc_date or self.charge_date or self.operation_date
        return moment.astimezone(MSK).date()

    @property
    def fingerprint(self) -> str:
        """sha256 of the payment's identity without operationId, to merge webhook/statement duplicates and id changes.

        Fields: account, document number, amount, Moscow payment day, payer INN, payer account, normalized purpose.
        """
        parts = [
            self.account_number,
            self.document_number,
            f"{self.amount:.2f}",
            self.payment_day.isoformat(),
            self.payer_inn,
            self.payer_account,
            normalize_purpose(self.purpose),
        ]
        return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()

    @property
    def content_key(self) -> str | None:
        """sha256 of what every source states the same way, to find one payment seen through two sources.

        Fields: account, direction, document number (leading zeros dropped), amount, Moscow payment day, payer INN,
        payer account; the purpose is left out (banks' 1C exports re-wrap and trim it). None without a document
        number or without any payer identity: then nothing proves two records are one payment.
        """
        number = re.sub(r"\s+", "", self.document_number).lstrip("0")
        inn, acct = re.sub(r"\D", "", self.payer_inn), re.sub(r"\D", "", self.payer_account)
        if not number or not (inn.strip("0") or acct.strip("0")):
            return None
        parts = ["v1", self.account_number, "C" if self.is_credit else "D", number, f"{self.amount:.2f}",
                 self.payment_day.isoformat(), inn, acct]
        return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _optional_date(d: Mapping[str, Any], key: str) -> datetime | None:
    value = d.get(key)
    if value in (None, ""):
        return None
    return parse_bank_datetime(value, key)


def parse_operation(d: Mapping[str, Any]) -> BankOperation:
    """Build a BankOperation from the statement/webhook JSON; raises MalformedOperation naming the bad field."""
    if not isinstance(d, Mapping):
        raise MalformedOperation(f"operation: expected a JSON object, got {type(d).__name__}")
    op_id = _text(d.get("operationId"))
    if not op_id:
        raise MalformedOperation("operationId: missing", field="operationId")
    if len(op_id) > OPERATION_ID_MAX or "\x00" in op_id:
        raise MalformedOperation(f"operationId: longer than {OPERATION_ID_MAX} characters or with NUL "
                                 f"({len(op_id)} characters)", field="operationId")
    account = _text(d.get("accountNumber"))
    if not account:
        raise MalformedOperation(f"accountNumber: missing in operation {op_id}", field="accountNumber")
    amount_field = "accountAmount" if d.get("accountAmount") is not None else "operationAmount"
    amount = parse_amount(d.get(amount_field), amount_field)
    currency_field = "accountCurrencyDigitalCode" if amount_field == "accountAmount" else "operationCurrencyDigitalCode"
    currency = currency_alpha(d.get(currency_field) or d.get("operationCurrencyDigitalCode") or "643")
    if len(currency) != 3:
        raise MalformedOperation(f"{currency_field}: not a currency code: {currency[:20]!r}", field=currency_field)
    is_credit = _is_credit(d.get("typeOfOperation"))
    payer = d.get("payer") if isinstance(d.get("payer"), Mapping) else {}
    if not payer and is_credit and isinstance(d.get("counterParty"), Mapping):
        cp = d["counterParty"]
        payer = {"name": cp.get("name"), "inn": cp.get("inn"), "kpp": cp.get("kpp"), "acct": cp.get("account")}
    return BankOperation(
        operation_id=op_id,
        account_number=account,
        operation_date=parse_bank_datetime(d.get("operationDate"), "operationDate"),
        status=_status(d.get("operationStatus", "Transaction")),
        is_credit=is_credit,
        amount=amount,
        currency=currency,
        purpose=_text(d.get("payPurpose") or d.get("description")),
        document_number=_text(d.get("documentNumber")),
        payer_name=_text(payer.get("name")),
        payer_inn=_text(payer.get("inn")),
        payer_kpp=_text(payer.get("kpp")),
        payer_account=_text(payer.get("acct")),
        doc_date=_optional_date(d, "docDate"),
        charge_date=_optional_date(d, "chargeDate"),
        raw=dict(d),
    )
