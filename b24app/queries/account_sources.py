"""Read-only: which sources feed each of a portal's accounts (T-Bank live, Tochka live, 1C files) and their health,
and which bank each payment came from (the deal tab's label)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from b24app.storage.models import BankAccount, BankLink, Operation

LIVE = ("tbank", "tochka")
CHUNK = 1000  # operation ids per query in payment_banks


@dataclass(frozen=True)
class SourceLine:
    kind: str                      # tbank | tochka | file
    health: str                    # live | not_watched | needs_consent | error | imported | never
    at: datetime | None            # last statement read (live) or last file imported (file)
    error: str | None = None


@dataclass(frozen=True)
class AccountSources:
    number: str
    currency: str
    sources: tuple[SourceLine, ...]


def _live_health(link: BankLink, acc: BankAccount) -> str:
    if link.status == "needs_consent":
        return "needs_consent"
    if not acc.watched:
        return "not_watched"
    return "error" if acc.last_error or link.last_error else "live"


def account_sources(s: Session, portal_id: int) -> list[AccountSources]:
    """Every account of the portal's links still in use, each with its sources: its live bank(s), and "file" when
    it came from, or has had, a 1C file."""
    rows = s.execute(select(BankAccount, BankLink).join(BankLink, BankLink.id == BankAccount.link_id)
                     .where(BankAccount.portal_id == portal_id, BankLink.status != "unlinked")
                     .order_by(BankAccount.account_number, BankAccount.id)).all()
    by_number: dict[str, dict] = {}
    for acc, link in rows:
        entry = by_number.setdefault(acc.account_number, {"currency": acc.currency, "live": [], "file": None})
        if link.provider in LIVE:
            entry["live"].append(SourceLine(link.provider, _live_health(link, acc), acc.last_synced_at,
                                            acc.last_error or link.last_error))
        if link.provider == "file" or acc.file_imported_at:
            last = entry["file"]
            when = acc.file_imported_at
            if last is None or (when and (last.at is None or when > last.at)):
                entry["file"] = SourceLine("file", "imported" if when else "never", when)
    return [AccountSources(number, e["currency"],
                           tuple(e["live"]) + ((e["file"],) if e["file"] else ()))
            for number, e in by_number.items()]


def payment_banks(s: Session, portal_id: int, operation_pks: list[int]) -> dict[int, tuple[str, str]]:
    """operation pk -> (bank, how): bank = tbank | tochka | file (the account's link: "file" = a bank with no live
    link), how = api | file (Operation.source: the first source that stored the payment)."""
    out: dict[int, tuple[str, str]] = {}
    for start in range(0, len(operation_pks), CHUNK):  # bounded IN lists, however many payments a deal has
        rows = s.execute(select(Operation.id, Operation.source, BankLink.provider)
                         .join(BankAccount, BankAccount.id == Operation.account_id)
                         .join(BankLink, BankLink.id == BankAccount.link_id)
                         .where(Operation.portal_id == portal_id,
                                Operation.id.in_(operation_pks[start:start + CHUNK]))).all()
        out.update((pk, bank_label(source, provider)) for pk, source, provider in rows)
    return out


def bank_label(source: str | None, provider: str | None) -> tuple[str, str]:
    """(bank, how) for a payment from its Operation.source and its account's link provider (see payment_banks)."""
    return provider or "tbank", "file" if source == "1c" else "api"
