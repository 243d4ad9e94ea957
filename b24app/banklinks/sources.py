"""One bank adapter: what a bank source must provide, and the two live banks behind it.

A source links and unlinks a company, lists its accounts, reads operations of an account since a cursor, may
push a trigger (a webhook that only makes the account due: the statement stays the truth), and says whether
the link is healthy. Every source yields `BankOperation`s with its own `source` and per-source operationIds, and
sync.store_operation stores them all the same way (operationId, fingerprint, cross-source content_key), so
matching, the outbox and the UI do not know which bank a payment came from.

T-Bank's code stays where it is (banklink.py, bank/api.py); `TBankSource` only delegates to it. A later
restructure may move each bank behind this protocol completely.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

from b24app.adapters.banks.errors import MalformedOperation
from b24app.adapters.banks.operations import BankOperation

OnMalformed = Callable[[MalformedOperation, Any], None]


@runtime_checkable
class BankSource(Protocol):
    provider: str   # BankLink.provider
    source: str     # Operation.source of what it reads

    def start_link(self, ctx, portal_id: int, user_id: int, inn: str, kpp: str, browser_nonce: str, *,
                   checked: str) -> str:
        """The bank's sign-in URL for a vetted company (admins only; the state is single-use and bound)."""

    def complete_link(self, ctx, *, error: str | None, state: str | None, code: str | None,
                      browser_nonce: str | None):
        """The callback: named guards, then tokens, accounts and the push trigger stored (banklink.LinkResult)."""

    def unlink(self, ctx, portal_id: int, link_id: int) -> bool:
        """Forget the tokens first, then release what can be released at the bank, best effort."""

    def load_accounts(self, ctx, link_id: int) -> int:
        """Read the company's accounts again (new ones watched by the usual default)."""

    def read_operations(self, ctx, link, account_number: str, external_id: str | None, since: datetime,
                        until: datetime, on_malformed: OnMalformed) -> Iterator[BankOperation]:
        """Operations of one account in [since, until] (the cursor is the caller's: BankAccount.synced_until)."""

    def subscribe_push(self, ctx, link_id: int) -> bool:
        """Ask the bank to push a trigger for new operations; False when it cannot (polling still runs)."""

    def health(self, ctx, link) -> str | None:
        """Why the bank does not push for this link (None when it does); the link status says the rest."""


class TBankSource:
    """T-Bank (T-ID links and pasted cabinet tokens): delegates to banklink.py and bank/api.py unchanged."""

    provider, source = "tbank", "tbank"

    def start_link(self, ctx, portal_id, user_id, inn, kpp, browser_nonce, *, checked):
        from . import tbank as banklink
        return banklink.start_link(ctx, portal_id, user_id, inn, kpp, browser_nonce, is_admin=True, checked=checked)

    def complete_link(self, ctx, **kw):
        from . import tbank as banklink
        return banklink.complete_link(ctx, **kw)

    def unlink(self, ctx, portal_id, link_id):
        from . import tbank as banklink
        return banklink.unlink(ctx, portal_id, link_id)

    def load_accounts(self, ctx, link_id):
        from . import tbank as banklink
        return banklink.load_accounts(ctx, link_id)

    def read_operations(self, ctx, link, account_number, external_id, since, until, on_malformed):
        from .tbank import bank_api
        return bank_api(ctx, link.id, link).statement(account_number, since, until, status="All",
                                                      on_malformed=on_malformed)

    def subscribe_push(self, ctx, link_id):
        from . import tbank as banklink
        return banklink.subscribe_webhook(ctx, link_id)

    def health(self, ctx, link):
        from . import tbank as banklink
        return banklink.webhook_off_reason(ctx, link)


class TochkaSource:
    """Tochka (consent flow, Open Banking statements, incomingPayment JWT webhooks): tochkalink.py."""

    provider, source = "tochka", "tochka"

    def start_link(self, ctx, portal_id, user_id, inn, kpp, browser_nonce, *, checked):
        from . import tochka as tochkalink
        return tochkalink.start_link(ctx, portal_id, user_id, inn, kpp, browser_nonce, checked=checked)

    def complete_link(self, ctx, **kw):
        from . import tochka as tochkalink
        return tochkalink.complete_link(ctx, **kw)

    def unlink(self, ctx, portal_id, link_id):
        # Tokens, consent id and webhook mark are forgotten exactly as for T-Bank (banklink.unlink reads the
        # same columns); the webhook is the application's, shared by every link, so it is not deleted here.
        from . import tbank as banklink
        return banklink.unlink(ctx, portal_id, link_id)

    def load_accounts(self, ctx, link_id):
        from . import tochka as tochkalink
        from b24app.storage.models import BankLink
        with ctx.db.session() as s:
            code = s.get(BankLink, link_id).customer_code
        accounts = [a for a in tochkalink.api(ctx, link_id).accounts() if a.customer_code == code]
        return tochkalink._store_accounts(ctx, link_id, accounts)

    def read_operations(self, ctx, link, account_number, external_id, since, until, on_malformed):
        from . import tochka as tochkalink
        if not external_id:
            raise MalformedOperation(f"account {account_number} has no Tochka accountId; link again")
        return tochkalink.api(ctx, link.id, link).statement(external_id, since, until, on_malformed=on_malformed)

    def subscribe_push(self, ctx, link_id):
        from . import tochka as tochkalink
        return tochkalink.subscribe_webhook(ctx, link_id)

    def health(self, ctx, link):
        if link.webhook_id:
            return None
        return "scope" if "ManageWebhookData" not in (link.scopes or []) else "refused"


SOURCES: dict[str, BankSource] = {"tbank": TBankSource(), "tochka": TochkaSource()}


def source_for(link) -> BankSource:
    """The source of a BankLink (or a row read like one): by provider, else by kind."""
    provider = getattr(link, "provider", None) or ("tochka" if getattr(link, "kind", "") == "tochka" else "tbank")
    return SOURCES[provider]
