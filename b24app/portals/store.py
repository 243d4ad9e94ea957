"""Portal store: installations keyed by member_id, tokens encrypted, refresh serialised across processes."""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from sqlalchemy import delete, select

from b24app.adapters.bitrix.client import PortalCredentials, TokenGrant
from b24app.adapters.bitrix.errors import PortalGone
from b24app.clock import Clock
from b24app.storage.crypto import TokenCipher
from b24app.storage.db import Database
from b24app.storage.models import (
    Allocation,
    BankAccount,
    BankLink,
    Credit,
    Decision,
    Invoice,
    InvoiceRefresh,
    OAuthState,
    Operation,
    OperationAlias,
    OutboxItem,
    Portal,
    QuarantinedOperation,
    RateBucket,
    StatementUpload,
)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def domain_of(client_endpoint: str) -> str:
    """`https://portal.bitrix24.ru/rest/` -> `portal.bitrix24.ru` (what Bitrix24 calls the portal's DOMAIN)."""
    host = client_endpoint.split("://", 1)[-1].rstrip("/")
    return host[:-len("/rest")] if host.endswith("/rest") else host


class PortalNotFound(PortalGone):
    def __init__(self, member_id: str):
        super().__init__("NOT_INSTALLED", f"portal {member_id} is not installed")


@dataclass(frozen=True)
class InstallData:
    member_id: str
    domain: str
    client_endpoint: str
    server_endpoint: str
    access_token: str
    refresh_token: str
    expires_in: int
    application_token: str | None
    scope: str | None = None
    lang: str = "ru"
    user_id: int | None = None
    version: str | None = None
    bindings_version: str | None = None  # the install bound before storing: record it in the same write


class PortalStore:
    """The app's `CredentialStore` for Bitrix24 plus install bookkeeping."""

    def __init__(self, db: Database, cipher: TokenCipher, clock: Clock | None = None):
        self.db, self.cipher, self.clock = db, cipher, clock or Clock()

    # -- lookups ----------------------------------------------------------------------------------
    def find(self, member_id: str) -> Portal | None:
        with self.db.session() as s:
            return s.scalar(select(Portal).where(Portal.member_id == member_id))

    def installed(self, member_id: str) -> Portal:
        portal = self.find(member_id)
        if portal is None or portal.status != "installed":
            raise PortalNotFound(member_id)
        return portal

    def application_token_matches(self, member_id: str, candidate: str | None, *,
                                  uninstalled_ok: bool = False) -> bool:
        """Constant-time comparison of an event's application_token with the stored one."""
        if not isinstance(candidate, str):  # e.g. auth[application_token][x]=1 parses to a dict
            candidate = None
        portal = self.find(member_id) if isinstance(member_id, str) and member_id else None
        presented = token_hash(candidate or "")
        if (portal is None or portal.application_token_hash is None or not candidate
                or (portal.status != "installed" and not uninstalled_ok)):
            hmac.compare_digest(presented, "0" * 64)  # same work whether or not the portal exists
            return False
        return hmac.compare_digest(portal.application_token_hash, presented)

    # -- CredentialStore ----------------------------------------------------------------------------
    def load(self, member_id: str) -> PortalCredentials:
        portal = self.installed(member_id)
        if not portal.access_token_enc or not portal.refresh_token_enc:
            raise PortalNotFound(member_id)
        return PortalCredentials(
            member_id=member_id, client_endpoint=portal.client_endpoint, server_endpoint=portal.server_endpoint,
            access_token=self.cipher.decrypt(member_id, portal.access_token_enc),
            refresh_token=self.cipher.decrypt(member_id, portal.refresh_token_enc),
            generation=portal.token_generation)

    def refresh(self, member_id: str, stale: PortalCredentials,
                grant: Callable[[PortalCredentials], TokenGrant]) -> PortalCredentials:
        with self.db.session() as s:
            portal = s.scalar(select(Portal).where(Portal.member_id == member_id).with_for_update())
            if portal is None or portal.status != "installed" or not portal.refresh_token_enc:
                raise PortalNotFound(member_id)
            if portal.token_generation != stale.generation:
                current = self._creds(portal)
                return current  # another process refreshed while we waited for the lock
            new = grant(self._creds(portal))
            portal.access_token_enc = self.cipher.encrypt(member_id, new.access_token)
            portal.refresh_token_enc = self.cipher.encrypt(member_id, new.refresh_token)
            portal.access_expires_at = self.clock.now() + timedelta(seconds=new.expires_in)
            portal.token_generation += 1
            if new.client_endpoint and new.client_endpoint != portal.client_endpoint:
                portal.client_endpoint = new.client_endpoint  # e.g. the portal was renamed meanwhile
                portal.domain = domain_of(new.client_endpoint)
            creds = self._creds(portal)
        return creds  # committed before anyone uses it

    def moved(self, member_id: str, client_endpoint: str) -> None:
        with self.db.session() as s:
            portal = s.scalar(select(Portal).where(Portal.member_id == member_id))
            if portal is not None:
                portal.client_endpoint = client_endpoint
                portal.domain = domain_of(client_endpoint)

    def _creds(self, portal: Portal) -> PortalCredentials:
        return PortalCredentials(
            member_id=portal.member_id, client_endpoint=portal.client_endpoint,
            server_endpoint=portal.server_endpoint,
            access_token=self.cipher.decrypt(portal.member_id, portal.access_token_enc),
            refresh_token=self.cipher.decrypt(portal.member_id, portal.refresh_token_enc),
            generation=portal.token_generation)

    # -- install / uninstall -------------------------------------------------------------------------
    def save_install(self, data: InstallData) -> tuple[Portal, bool]:
        """Store a verified installation; returns (portal, created). Caller has verified the tokens."""
        enc = self.cipher.encrypt
        with self.db.session() as s:
            portal = s.scalar(select(Portal).where(Portal.member_id == data.member_id).with_for_update())
            created = portal is None
            if portal is None:
                portal = Portal(member_id=data.member_id, settings={})
                s.add(portal)
            portal.domain = data.domain
            portal.client_endpoint = data.client_endpoint
            portal.server_endpoint = data.server_endpoint
            portal.access_token_enc = enc(data.member_id, data.access_token)
            portal.refresh_token_enc = enc(data.member_id, data.refresh_token)
            portal.access_expires_at = self.clock.now() + timedelta(seconds=data.expires_in)
            portal.token_generation = (portal.token_generation or 0) + 1
            if data.application_token:
                portal.application_token_hash = token_hash(data.application_token)
            portal.scope = data.scope or portal.scope
            portal.lang = data.lang or portal.lang or "ru"
            portal.installed_by = data.user_id or portal.installed_by
            portal.app_version = data.version or portal.app_version
            portal.bindings_version = data.bindings_version or portal.bindings_version
            if portal.status != "installed":
                portal.status = "installed"
                portal.installed_at = self.clock.now()
                portal.uninstalled_at = None
            s.flush()
            return portal, created

    def set_application_token(self, member_id: str, token: str) -> None:
        with self.db.session() as s:
            portal = s.scalar(select(Portal).where(Portal.member_id == member_id))
            if portal is not None:
                portal.application_token_hash = token_hash(token)

    def mark_bound(self, member_id: str, signature: str) -> None:
        with self.db.session() as s:
            portal = s.scalar(select(Portal).where(Portal.member_id == member_id))
            if portal is not None:
                portal.bindings_version = signature

    def uninstall(self, member_id: str, clean: bool) -> bool:
        """Idempotent: mark uninstalled, drop tokens; with `clean` delete every row of the portal."""
        with self.db.session() as s:
            portal = s.scalar(select(Portal).where(Portal.member_id == member_id).with_for_update())
            if portal is None:
                return False
            if clean:
                pid = portal.id
                for model in (OutboxItem, Credit, Allocation, Decision, OperationAlias, Operation, QuarantinedOperation,
                              Invoice, InvoiceRefresh, StatementUpload, BankAccount, BankLink, OAuthState,
                              RateBucket):
                    if model is OperationAlias:
                        s.execute(delete(OperationAlias).where(OperationAlias.account_id.in_(
                            select(BankAccount.id).where(BankAccount.portal_id == pid))))
                    else:
                        s.execute(delete(model).where(model.portal_id == pid))
                s.delete(portal)
                return True
            s.execute(delete(StatementUpload).where(StatementUpload.portal_id == portal.id))  # bank data, unneeded
            portal.status = "uninstalled"
            portal.uninstalled_at = portal.uninstalled_at or self.clock.now()
            portal.access_token_enc = portal.refresh_token_enc = None
            portal.access_expires_at = None
            for link in s.scalars(select(BankLink).where(BankLink.portal_id == portal.id)):
                link.access_token_enc = link.refresh_token_enc = link.webhook_secret_enc = None
                link.status = "unlinked"
            s.execute(BankAccount.__table__.update().where(BankAccount.portal_id == portal.id).values(watched=False))
            return True


def update_setting(ctx, portal_id: int, key: str, change: Callable[[Any], Any]) -> Any:
    """Write one key of the portal's settings under a row lock: `change(the stored value) -> the new value`."""
    with ctx.db.session() as s:
        portal = s.scalar(select(Portal).where(Portal.id == portal_id).with_for_update())
        value = change((portal.settings or {}).get(key))
        portal.settings = {**(portal.settings or {}), key: value}
    return value
