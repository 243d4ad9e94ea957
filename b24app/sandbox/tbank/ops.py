"""Build sandbox operations in the exact JSON shape of GET /api/v1/statement."""
from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from .state import CURRENCY_NUMERIC, TBANK_BIC, TBANK_CORR, TBANK_NAME, BankSandboxState, OpRecord, iso_z, json_amount

MSK = timezone(timedelta(hours=3), "MSK")
DEFAULT_PAYER = {
    "name": "ООО «Лютик»", "inn": "7705123456", "kpp": "770501001", "acct": "40702810938000012345",
    "bicRu": "044525225", "corAcct": "30101810400000000225", "bankName": 'ПАО "Сбербанк"',
}


class OperationSpecError(ValueError):
    """The control request for a new operation is invalid."""


def parse_spec_amount(value: object) -> Decimal:
    """Positive amount with at most two decimals, from a JSON number or string."""
    if isinstance(value, bool) or value is None:
        raise OperationSpecError("amount is required")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise OperationSpecError(f"amount is not a number: {value!r}") from exc
    if not amount.is_finite() or amount <= 0:
        raise OperationSpecError("amount must be positive")
    if amount != amount.quantize(Decimal("0.01")):
        raise OperationSpecError("amount must have at most 2 decimals")
    return amount.quantize(Decimal("0.01"))


def parse_utc(value: str) -> datetime:
    """ISO-8601 with an offset or Z into aware UTC (naive is read as UTC)."""
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def build_operation(state: BankSandboxState, spec: dict[str, Any]) -> OpRecord:
    """Create (not store) an operation from a control-API spec; call with the state lock held."""
    account_number = spec.get("accountNumber")
    if account_number is None:
        demo = next(iter(state.companies.values()), None)
        account_number = next(
            (n for n in (demo.accounts if demo else []) if state.accounts[n].currency == "RUB"), None
        )
    account = state.accounts.get(str(account_number or ""))
    if account is None:
        raise OperationSpecError(f"unknown accountNumber {account_number!r}")
    company = state.companies[account.company]
    amount = parse_spec_amount(spec.get("amount"))
    currency = str(spec.get("currency") or account.currency).upper()
    if currency.isdigit():
        currency = {v: k for k, v in CURRENCY_NUMERIC.items()}.get(currency.zfill(3), currency)
    if currency != account.currency:
        raise OperationSpecError(f"currency {currency} differs from the account currency {account.currency}")
    status = spec.get("operationStatus") or "Transaction"
    if status not in ("Transaction", "Authorization"):
        raise OperationSpecError("operationStatus must be Transaction or Authorization")
    kind = spec.get("typeOfOperation") or "Credit"
    if kind not in ("Credit", "Debit", "Сredit"):
        raise OperationSpecError("typeOfOperation must be Credit or Debit")
    purpose = spec.get("payPurpose")
    if not isinstance(purpose, str) or not purpose.strip():
        raise OperationSpecError("payPurpose is required")
    try:
        moment = parse_utc(spec["operationDate"]) if spec.get("operationDate") else state.now()
    except ValueError as exc:
        raise OperationSpecError(f"operationDate is not ISO-8601: {spec.get('operationDate')!r}") from exc
    moment = moment.replace(microsecond=0)
    op_id = str(spec.get("operationId") or state.new_uuid())
    document_number = str(spec.get("documentNumber") or state.next_document_number())
    if not re.fullmatch(r"[\w\-/]{1,32}", document_number):
        raise OperationSpecError("documentNumber must be 1-32 word characters")

    other = dict(DEFAULT_PAYER)
    for key, field in (("payerName", "name"), ("payerInn", "inn"), ("payerKpp", "kpp"), ("payerAccount", "acct")):
        if spec.get(key) is not None:
            other[field] = str(spec[key])
    own = {
        "name": company.name, "inn": company.inn, "kpp": company.kpp, "acct": account.number,
        "bicRu": TBANK_BIC, "corAcct": TBANK_CORR, "bankName": TBANK_NAME,
    }
    is_credit = kind != "Debit"
    payer, receiver = (other, own) if is_credit else (own, other)
    doc_day = moment.astimezone(MSK).date()
    doc_date = datetime.combine(doc_day, time(0), MSK)
    when = iso_z(moment)
    numeric = CURRENCY_NUMERIC.get(currency, "643")
    data: dict[str, Any] = {
        "operationId": op_id,
        "operationDate": when,
        "operationStatus": status,
        "accountNumber": account.number,
        "bic": TBANK_BIC,
        "typeOfOperation": kind,
        # `category`: T-Bank documents incomePeople and fee only (shared/reference/tbank.md); a test may set any.
        "category": str(spec.get("category") or ("incomeLegal" if is_credit else "paymentLegal"))[:64],
        "authorizationDate": when,
        "docDate": iso_z(doc_date),
        "documentNumber": document_number,
        "payVo": "payment-order",
        "vo": "01",
        "priority": 5,
        "operationAmount": json_amount(amount),
        "operationCurrencyDigitalCode": numeric,
        "accountAmount": json_amount(amount),
        "accountCurrencyDigitalCode": numeric,
        "rubleAmount": json_amount(amount) if currency == "RUB" else json_amount((amount * 90).quantize(Decimal("0.01"))),
        "description": purpose.strip(),
        "payPurpose": purpose.strip(),
        "payer": payer,
        "receiver": receiver,
        "counterParty": {
            "account": other["acct"], "inn": other["inn"], "kpp": other["kpp"], "name": other["name"],
            "bankName": other.get("bankName", ""), "bankBic": other.get("bicRu", ""),
            "corrAccount": other.get("corAcct", ""),
        },
    }
    if status == "Transaction":
        data.update(trxnPostDate=when, drawDate=when, chargeDate=when)
    return OpRecord(data=data, company=company.key)


def statement_amounts(state: BankSandboxState, account_number: str, until: datetime) -> tuple[Decimal, Decimal, Decimal]:
    """(credit, debit, authorized) of the account's operations before `until`; call with the lock held."""
    credit = debit = authorized = Decimal("0")
    for record in state.operations.values():
        if record.data["accountNumber"] != account_number or record.op_date >= until:
            continue
        amount = Decimal(str(record.data["accountAmount"]))
        if record.data["operationStatus"] != "Transaction":
            authorized += amount
        elif record.data["typeOfOperation"] == "Debit":
            debit += amount
        else:
            credit += amount
    return credit, debit, authorized
