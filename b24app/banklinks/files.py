"""Accounts of a bank with no live link: known to the portal only through the 1C files an administrator imports.

Such an account hangs off a BankLink of provider "file" (one per company INN): no tokens, never polled (not
watched), but "active", so the worker keeps the portal's invoices fresh and the company's INN counts as our own.
An account is added only when the file's documents name its owner's INN and that INN is one of the portal's own
companies (IS_MY_COMPANY requisites, as the bank link checks it) or an administrator confirmed it in the preview.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select

from .tbank import INN_CONFIRMED, INN_OWN
from b24app.storage.models import BankAccount, BankLink

PROVIDER = KIND = "file"
_ACCOUNT = re.compile(r"\d{20}")     # a Russian settlement account number
_INN = re.compile(r"\d{10}|\d{12}")


@dataclass(frozen=True)
class Candidate:
    """A statement account not the portal's: whose it is by the documents, and whether it may be added."""

    number: str
    inns: tuple[str, ...]    # the owner INN(s) the file's documents give (one, in a sane file)
    own_company: bool        # that INN is one of the portal's own companies

    @property
    def inn(self) -> str | None:
        return self.inns[0] if len(self.inns) == 1 and _INN.fullmatch(self.inns[0]) else None

    @property
    def addable(self) -> bool:
        """Only a well-formed account whose owner the file names unambiguously can be added (automatically or
        confirmed)."""
        return self.inn is not None and _ACCOUNT.fullmatch(self.number) is not None


def candidates(unknown: dict[str, list[str]], own_inns: set[str] | None) -> list[Candidate]:
    """`StatementPreview.unknown` judged against the portal's own companies (None: Bitrix24 did not answer)."""
    return [Candidate(number, tuple(inns), own_inns is not None and len(inns) == 1 and inns[0] in own_inns)
            for number, inns in unknown.items()]


def to_add(found: list[Candidate], confirmed: set[str]) -> list[Candidate]:
    """What importing adds: every own company's account, and the others the administrator ticked."""
    return [c for c in found if c.addable and (c.own_company or c.number in confirmed)]


def add_file_accounts(ctx, portal_id: int, user_id: int, accounts: list[Candidate]) -> list[int]:
    """Create (or revive) the file link of each account's company and the account under it; returns account ids."""
    now = ctx.clock.now()
    ids: list[int] = []
    with ctx.db.session() as s:
        for cand in accounts:
            link = s.scalar(select(BankLink).where(BankLink.portal_id == portal_id, BankLink.provider == PROVIDER,
                                                   BankLink.inn == cand.inn, BankLink.kpp == "0").with_for_update())
            if link is None:
                link = BankLink(portal_id=portal_id, provider=PROVIDER, kind=KIND, inn=cand.inn, kpp="0", scopes=[])
                s.add(link)
            link.status, link.linked_by = "active", user_id
            if link.inn_check != INN_OWN:
                link.inn_check = INN_OWN if cand.own_company else INN_CONFIRMED
                link.inn_confirmed_at = None if cand.own_company else now
            s.flush()
            acc = s.scalar(select(BankAccount).where(BankAccount.link_id == link.id,
                                                     BankAccount.account_number == cand.number))
            if acc is None:
                acc = BankAccount(link_id=link.id, portal_id=portal_id, account_number=cand.number, currency="RUB",
                                  watched=False, next_sync_at=now)
                s.add(acc)
                s.flush()
            ids.append(acc.id)
    return ids
