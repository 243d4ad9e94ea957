"""The portal's bank link and accounts as a person needs to see them (the admin page's bank card, the tab's
sync line, the accounts API)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from b24app.banklinks.tbank import webhook_off_reason
from b24app.storage.models import BankAccount, BankLink, Portal, QuarantinedOperation
from b24app.pipeline.sync import interval_for


@dataclass(frozen=True)
class AccountLine:
    id: int
    number: str
    name: str
    currency: str
    watched: bool
    last_synced_at: datetime | None
    next_sync_at: datetime | None
    sync_requested_at: datetime | None
    last_error: str | None
    failures: int
    error_code: str | None = None  # bank.errors.SyncErrorCode of last_error


@dataclass(frozen=True)
class BankState:
    """The portal's bank link as a person needs to see it."""

    linked: bool
    link_id: int | None = None
    kind: str | None = None
    health: str = "not_linked"  # not_linked | ok | needs_consent | rate_limited | error | syncing | no_accounts
    company: str | None = None
    inn: str | None = None
    last_error: str | None = None
    accounts: tuple[AccountLine, ...] = ()
    quarantined: int = 0  # statement items kept raw because they were malformed; never matched
    live_off: str | None = None  # why the bank does not push operations (scope | email | refused); None: it does
    poll_every: int | None = None  # seconds between statement polls
    last_failure: dict | None = None  # the last link attempt that did not complete: at, reason, detail, user_id

    @property
    def last_synced_at(self) -> datetime | None:
        times = [a.last_synced_at for a in self.accounts if a.watched and a.last_synced_at]
        return max(times) if times else None

    @property
    def watched_count(self) -> int:
        return sum(1 for a in self.accounts if a.watched)


def bank_state(s: Session, portal_id: int) -> BankState:
    link = s.scalar(select(BankLink).where(BankLink.portal_id == portal_id, BankLink.status != "unlinked",
                                           BankLink.provider != "file")  # 1C-file accounts: fileaccounts.py
                    .order_by(BankLink.updated_at.desc(), BankLink.id.desc()).limit(1))
    portal = s.get(Portal, portal_id)
    failure = (portal.settings or {}).get("bank_link_failure") if portal is not None else None
    failure = failure if isinstance(failure, dict) and failure.get("reason") else None
    if link is None:
        return BankState(linked=False, last_failure=failure)
    accounts = tuple(AccountLine(
        id=a.id, number=a.account_number, name=a.name or "", currency=a.currency, watched=bool(a.watched),
        last_synced_at=a.last_synced_at, next_sync_at=a.next_sync_at, sync_requested_at=a.sync_requested_at,
        last_error=a.last_error, failures=a.failures or 0, error_code=a.last_error_code)
        for a in s.scalars(select(BankAccount).where(BankAccount.link_id == link.id).order_by(BankAccount.id)))
    quarantined = s.scalar(select(func.count()).select_from(QuarantinedOperation).where(
        QuarantinedOperation.portal_id == portal_id)) or 0
    return BankState(linked=True, link_id=link.id, kind=link.kind, health=link_health(link, accounts),
                     company=link.company_name, inn=link.inn, last_error=link.last_error, accounts=accounts,
                     quarantined=quarantined, last_failure=failure)


def link_health(link: BankLink, accounts: Iterable[AccountLine]) -> str:
    accounts = list(accounts)
    if link.status == "needs_consent":
        return "needs_consent"
    health = health_of_errors([a.error_code or ("bank_error" if a.last_error else None)
                               for a in accounts if a.watched] + ["bank_error" if link.last_error else None])
    if health is not None:
        return health
    if not any(a.watched for a in accounts):
        return "no_accounts"
    return "ok"


def health_of_errors(codes: Iterable[str | None]) -> str | None:
    """The link's health from its accounts' stored error codes (bank.errors.SyncErrorCode), never from the
    words of a message (a "corporate" card's error is not a rate limit): rate_limited before needs_consent
    before error; None when there is no error."""
    codes = {c for c in codes if c}
    if "rate_limited" in codes:
        return "rate_limited"
    if "needs_consent" in codes:
        return "needs_consent"
    return "error" if codes else None


def bank_panel(ctx, s, portal) -> BankState:
    """The bank card's state, with whether T-Bank pushes operations to us or we only poll (and how often)."""
    bank = bank_state(s, portal.id)
    if not bank.linked:
        return bank
    return replace(bank, live_off=webhook_off_reason(ctx, s.get(BankLink, bank.link_id)),
                   poll_every=interval_for(ctx, portal.settings))


def watched_count(s: Session, portal_id: int) -> int:
    """How many accounts of the portal's active links are watched (0: nothing will arrive until one is)."""
    return s.scalar(select(func.count()).select_from(BankAccount).join(BankLink, BankLink.id == BankAccount.link_id)
                    .where(BankAccount.portal_id == portal_id, BankAccount.watched.is_(True),
                           BankLink.status == "active")) or 0


def webhook_accounts(s: Session, link_id: int, account_number: str) -> tuple[int, list[int]]:
    """(the link's portal, its watched accounts) a bank webhook names: one account, or all when none is named."""
    link = s.get(BankLink, link_id)
    q = select(BankAccount.id).where(BankAccount.link_id == link_id, BankAccount.watched.is_(True))
    if account_number:
        q = q.where(BankAccount.account_number == account_number)
    ids = list(s.scalars(q))
    return link.portal_id, ids


def portal_links(s: Session, portal_id: int) -> tuple[list[BankLink], list[BankAccount]]:
    """The portal's links that are not unlinked, and all of its accounts."""
    links = list(s.scalars(select(BankLink).where(BankLink.portal_id == portal_id, BankLink.status != "unlinked")))
    accs = list(s.scalars(select(BankAccount).where(BankAccount.portal_id == portal_id)))
    return links, accs


def links_of_accounts(s: Session, portal_id: int, ids: list[int]) -> set[int]:
    """The links the portal's accounts `ids` belong to."""
    return set(s.scalars(select(BankAccount.link_id).where(BankAccount.portal_id == portal_id,
                                                          BankAccount.id.in_(ids)))) if ids else set()
