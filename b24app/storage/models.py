"""Tables. Uniqueness here is what makes effects idempotent: read the constraints first."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (JSON, BigInteger, Boolean, ForeignKey, Index, Integer, LargeBinary, Numeric, String, Text,
                        UniqueConstraint, text)
from sqlalchemy.orm import Mapped, mapped_column

from .db import Base, UTCDateTime, now_utc
from b24app.domain.states import OpState

Money = Numeric(18, 2)


class Portal(Base):
    """One Bitrix24 portal that installed the app, keyed by its stable `member_id`."""

    __tablename__ = "portals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), unique=True)
    domain: Mapped[str] = mapped_column(String(255))
    client_endpoint: Mapped[str] = mapped_column(String(512))
    server_endpoint: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default="installed")  # installed | uninstalled
    lang: Mapped[str] = mapped_column(String(8), default="ru")
    app_version: Mapped[str | None] = mapped_column(String(32))
    scope: Mapped[str | None] = mapped_column(String(255))
    installed_by: Mapped[int | None] = mapped_column(Integer)
    # Only a SHA-256 of application_token is kept (we compare, never send it); it survives a plain
    # uninstall so a repeated ONAPPUNINSTALL is still recognised. Tokens: TokenCipher, owner = member_id.
    application_token_hash: Mapped[str | None] = mapped_column(String(64))
    access_token_enc: Mapped[str | None] = mapped_column(Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)
    access_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    token_generation: Mapped[int] = mapped_column(Integer, default=0)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    bindings_version: Mapped[str | None] = mapped_column(String(64))  # AppContext.bindings_signature
    installed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    uninstalled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, onupdate=now_utc)
    invoices_refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Portal-level work (invoice refresh, matching, outbox) is leased like accounts are.
    work_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RateBucket(Base):
    """Shared leaky bucket per portal, so N worker processes do not multiply the REST rate."""

    __tablename__ = "rate_buckets"
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"), primary_key=True)
    level: Mapped[float] = mapped_column(default=0.0)
    updated: Mapped[float] = mapped_column(default=0.0)  # unix time of the last drain


class OAuthState(Base):
    """Single-use, expiring OAuth `state` (bank link); consumed by one DELETE."""

    __tablename__ = "oauth_states"
    state: Mapped[str] = mapped_column(String(128), primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(Integer)
    data_enc: Mapped[str] = mapped_column(Text)  # code_verifier, inn/kpp, browser binding
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BankLink(Base):
    """A portal's consent to read one company's T-Bank statement (T-ID tokens or a pasted cabinet token)."""

    __tablename__ = "bank_links"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # tid | static (T-Bank) | tochka
    provider: Mapped[str] = mapped_column(String(16), default="tbank", server_default="tbank")  # tbank | tochka
    status: Mapped[str] = mapped_column(String(24), default="active")  # active | needs_consent | unlinked
    inn: Mapped[str] = mapped_column(String(12))
    kpp: Mapped[str] = mapped_column(String(9), default="0")
    company_name: Mapped[str | None] = mapped_column(String(512))
    scopes: Mapped[list] = mapped_column(JSON, default=list)
    access_token_enc: Mapped[str | None] = mapped_column(Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)
    access_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    token_generation: Mapped[int] = mapped_column(Integer, default=0)
    webhook_secret_enc: Mapped[str | None] = mapped_column(Text)
    webhook_id: Mapped[str | None] = mapped_column(String(128))
    # Tochka (kind "tochka"): the signed consent's id, encrypted like the tokens, and the company's customerCode
    # (Tochka's webhooks name the company by it).
    consent_id_enc: Mapped[str | None] = mapped_column(Text)
    customer_code: Mapped[str | None] = mapped_column(String(32), index=True)
    linked_by: Mapped[int | None] = mapped_column(Integer)
    # How the INN was vetted when an admin linked it: own_company (among the portal's "my company"
    # requisites) or confirmed (the admin ticked "not one of our companies, link anyway"; when: below).
    inn_check: Mapped[str | None] = mapped_column(String(16))
    inn_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, onupdate=now_utc)
    __table_args__ = (UniqueConstraint("portal_id", "provider", "inn", "kpp", name="uq_bank_link_company"),)


class BankAccount(Base):
    """A statement we may watch; the sync schedule and its lease live here (one row = one unit of work)."""

    __tablename__ = "bank_accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    link_id: Mapped[int] = mapped_column(ForeignKey("bank_links.id", ondelete="CASCADE"), index=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    account_number: Mapped[str] = mapped_column(String(22))
    external_id: Mapped[str | None] = mapped_column(String(64))  # the bank's own id (Tochka: "number/BIC")
    currency: Mapped[str] = mapped_column(String(3), default="RUB")
    name: Mapped[str | None] = mapped_column(String(255))
    account_type: Mapped[str | None] = mapped_column(String(32))
    watched: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set by unlink for accounts that were watched: re-linking the same company watches them again.
    watch_on_relink: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    mycompany_id: Mapped[int | None] = mapped_column(Integer)
    synced_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_sync_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sync_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_code: Mapped[str | None] = mapped_column(String(32))  # bank.errors.SyncErrorCode of last_error
    file_imported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the last 1C file imported for it
    __table_args__ = (
        UniqueConstraint("link_id", "account_number", name="uq_bank_account"),
        Index("ix_bank_accounts_due", "watched", "next_sync_at"),
    )


class Operation(Base):
    """A bank operation, stored once per account: by `operationId` and by content fingerprint."""

    __tablename__ = "operations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("bank_accounts.id", ondelete="CASCADE"))
    operation_id: Mapped[str] = mapped_column(String(128))  # unique per source: 1C file rows get "1c:…" ids
    fingerprint: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16), default="tbank", server_default="tbank")  # tbank | 1c | tochka
    # BankOperation.content_key: the same payment seen through another source (API and a 1C file) is this row.
    content_key: Mapped[str | None] = mapped_column(String(64))
    bank_status: Mapped[str] = mapped_column(String(16))  # Transaction | Authorization
    is_credit: Mapped[bool] = mapped_column(Boolean)
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    operation_date: Mapped[datetime] = mapped_column(UTCDateTime)
    purpose: Mapped[str] = mapped_column(Text, default="")
    payer_name: Mapped[str | None] = mapped_column(String(512))
    payer_inn: Mapped[str | None] = mapped_column(String(12))
    document_number: Mapped[str | None] = mapped_column(String(64))
    category: Mapped[str | None] = mapped_column(String(64))  # T-Bank's `category` (e.g. incomePeople), if given
    # b24app.domain.states.OpState (its docstring draws the transitions); the worker picks up `new` ones.
    state: Mapped[str] = mapped_column(String(16), default=OpState.NEW.value, index=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    __table_args__ = (
        UniqueConstraint("account_id", "operation_id", name="uq_operation_id"),
        UniqueConstraint("account_id", "fingerprint", name="uq_operation_fingerprint"),
        Index("ix_operations_content_key", "account_id", "content_key"),
    )


class StatementUpload(Base):
    """A 1C file an administrator uploaded and saw previewed: importing it names this row, never other bytes.

    Keyed by a random id, bound to the portal and the uploading user, gone after `expires_at` or the import."""

    __tablename__ = "statement_uploads"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class QuarantinedOperation(Base):
    """A statement item we could not store as an Operation (malformed or out of range): kept raw, never matched.

    One row per account and item identity (operationId, or the raw JSON's hash when the id is unusable), so a
    re-poll only bumps `seen_count`."""

    __tablename__ = "quarantined_operations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("bank_accounts.id", ondelete="CASCADE"))
    item_key: Mapped[str] = mapped_column(String(64))  # sha256 hex of the identity
    operation_id: Mapped[str | None] = mapped_column(String(128))  # shortened when the bank's is longer
    raw: Mapped[str] = mapped_column(Text)  # the item's JSON as the bank sent it (NULs escaped by json.dumps)
    reason: Mapped[str] = mapped_column(String(300))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    seen_count: Mapped[int] = mapped_column(Integer, default=1)
    __table_args__ = (UniqueConstraint("account_id", "item_key", name="uq_quarantined_item"),)


class TochkaWebhookReceipt(Base):
    """A Tochka webhook JWT we acted on (sha256 of the token): the same token again is a replay and is refused."""

    __tablename__ = "tochka_webhook_receipts"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class OperationAlias(Base):
    """Other operationIds the bank used for the same operation (night-time re-identification)."""

    __tablename__ = "operation_aliases"
    account_id: Mapped[int] = mapped_column(ForeignKey("bank_accounts.id", ondelete="CASCADE"), primary_key=True)
    operation_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    operation_pk: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"))


class Invoice(Base):
    """Our copy of a portal's smart invoice (crm.item, entityTypeId 31), refreshed by events and re-reads."""

    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"))
    b24_id: Mapped[int] = mapped_column(BigInteger)
    number: Mapped[str] = mapped_column(String(128), default="")
    number_key: Mapped[str] = mapped_column(String(128), default="", index=True)
    title: Mapped[str | None] = mapped_column(String(512))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    stage_id: Mapped[str] = mapped_column(String(64))
    stage_semantics: Mapped[str | None] = mapped_column(String(1))  # S | F | None (in progress)
    category_id: Mapped[int | None] = mapped_column(Integer)
    deal_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    assigned_by_id: Mapped[int | None] = mapped_column(Integer)
    company_id: Mapped[int | None] = mapped_column(Integer)
    mycompany_id: Mapped[int | None] = mapped_column(Integer)
    payer_inn: Mapped[str | None] = mapped_column(String(12))
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refreshed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    # Our last crm.item.update as Bitrix24 answered it (updatedTime, updatedBy): its echo event costs no re-read.
    own_update_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    own_update_by: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (UniqueConstraint("portal_id", "b24_id", name="uq_invoice"),)


class Decision(Base):
    """Why an operation went where it went. One current decision per operation; older ones are history."""

    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    operation_pk: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"))
    outcome: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[str] = mapped_column(String(8))
    numbers: Mapped[list] = mapped_column(JSON, default=list)
    candidates: Mapped[list] = mapped_column(JSON, default=list)
    reasons: Mapped[list] = mapped_column(JSON, default=list)
    actor_user_id: Mapped[int | None] = mapped_column(Integer)  # None = the app decided
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    __table_args__ = (
        Index("uq_decision_current", "operation_pk", unique=True,
              sqlite_where=text("superseded_at IS NULL"), postgresql_where=text("superseded_at IS NULL")),
    )


class Allocation(Base):
    """Money of one operation applied to one invoice; revoked (never deleted) on undo."""

    __tablename__ = "allocations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id", ondelete="CASCADE"))
    operation_pk: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"))
    invoice_b24_id: Mapped[int] = mapped_column(BigInteger, index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    outcome: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    __table_args__ = (
        Index("uq_allocation_current", "operation_pk", "invoice_b24_id", unique=True,
              sqlite_where=text("revoked_at IS NULL"), postgresql_where=text("revoked_at IS NULL")),
    )


class Credit(Base):
    """The client's credit by payer INN (#15), as a ledger: + the surplus of an overpayment (`surplus`) or a payment
    kept whole as credit (`kept`); − credit put on an invoice (`applied`, a decision of its own with `reasons`).
    Balance = the sum of rows not revoked. Undo revokes, never deletes."""

    __tablename__ = "credits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    inn: Mapped[str] = mapped_column(String(12))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Money)
    kind: Mapped[str] = mapped_column(String(16))  # surplus | kept | applied
    operation_pk: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"))
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id", ondelete="CASCADE"))
    invoice_b24_id: Mapped[int | None] = mapped_column(BigInteger)
    reasons: Mapped[list] = mapped_column(JSON, default=list)
    actor_user_id: Mapped[int | None] = mapped_column(Integer)  # None = the app
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    __table_args__ = (Index("ix_credits_inn", "portal_id", "inn", "currency"),)


class OutboxItem(Base):
    """A Bitrix24 effect, written before it is sent; the idempotency key makes a retry harmless."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sending | done | skipped | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    operation_pk: Mapped[int | None] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"))
    result: Mapped[dict | None] = mapped_column(JSON)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    __table_args__ = (
        UniqueConstraint("portal_id", "key", name="uq_outbox_key"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
    )


class InvoiceRefresh(Base):
    """A Bitrix24 event said this invoice or deal changed; the worker re-reads it (events are hints)."""

    __tablename__ = "invoice_refreshes"
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"), primary_key=True)
    entity: Mapped[str] = mapped_column(String(8), primary_key=True)  # invoice | deal
    entity_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    # The one event behind this row (its `ts` and acting user), to tell our own echo; NULL: read it anyway.
    event_ts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    event_user: Mapped[int | None] = mapped_column(Integer)


class OwnDealUpdate(Base):
    """Our last crm.deal.update of a deal's stage as Bitrix24 showed it right after (DATE_MODIFY, MODIFY_BY_ID,
    read in the same batch): the ONCRMDEALUPDATE echo of it costs no re-read of the deal's invoices."""

    __tablename__ = "own_deal_updates"
    portal_id: Mapped[int] = mapped_column(ForeignKey("portals.id", ondelete="CASCADE"), primary_key=True)
    deal_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime)
    update_by: Mapped[int] = mapped_column(Integer)
