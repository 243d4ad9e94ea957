"""Import a 1C statement file (any bank) into the same store the T-Bank sync writes, for the same reconciliation.

Two passes over the file, each streaming: `preview_statement` reads and checks all of it and stores nothing;
`import_statement` previews, refuses on any error, then stores the incoming payments through
`sync.store_operation` (operationId, fingerprint, cross-source content_key) and makes the portal due for work.
Used by `b24app import-statement` and the admin upload (web/upload.py). An account the portal does not know yet
(a bank with no live link) can be previewed as `adding` it; `fileaccounts.add_file_accounts` creates it.
"""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Iterator

from sqlalchemy import delete, or_, select, update

from b24app.storage import leases
from b24app.adapters.banks.onec import StatementDocument, StatementFile, StatementFileError, human_size, parse_moment
from b24app.adapters.banks.operations import BankOperation, normalize_purpose
from b24app.storage.models import BankAccount, BankLink, Operation, OperationAlias, Portal, StatementUpload
from .sync import stored_elsewhere, store_operation

SOURCE = "1c"
BATCH = 500
LEASE_WAIT = 30.0  # seconds an import waits for a running statement sync of the same account


class StatementImportError(Exception):
    """The file is refused as a whole; nothing was stored. The message is for the person who gave the file."""


@dataclass
class StatementPreview:
    """What importing the file would do (or, after `import_statement`, what it did)."""

    file_name: str
    version: str = ""
    encoding: str = ""
    date_from: date | None = None
    date_to: date | None = None
    accounts: list[str] = field(default_factory=list)   # the statement's own accounts (РасчСчет)
    documents: int = 0
    incoming: int = 0          # payments into one of the portal's accounts
    new: int = 0               # …of which not stored yet
    known: int = 0             # …already stored (from the API, an earlier file, or twice in this file)
    new_amount: Decimal = Decimal("0.00")
    outgoing: int = 0          # from one of the portal's accounts: not reconciled, not stored
    not_ours: int = 0          # neither side is one of the portal's accounts
    imported: bool = False
    # The statement's accounts that are not the portal's, with the INN(s) the documents give their owner.
    unknown: dict[str, list[str]] = field(default_factory=dict)


class NotOurAccounts(StatementImportError):
    """No account of the file is the portal's; `preview` says which accounts and whose (by INN) they are."""

    def __init__(self, message: str, preview: StatementPreview):
        super().__init__(message)
        self.preview = preview


def _our_accounts(s, portal_id: int) -> dict[str, BankAccount]:
    """The portal's bank accounts by number; with one number under two links, the active link's row wins."""
    rows = s.execute(select(BankAccount, BankLink.status).join(BankLink, BankLink.id == BankAccount.link_id)
                     .where(BankAccount.portal_id == portal_id).order_by(BankAccount.id)).all()
    ours: dict[str, BankAccount] = {}
    for acc, status in rows:
        if acc.account_number not in ours or status == "active":
            ours[acc.account_number] = acc
    for acc in ours.values():
        s.expunge(acc)
    return ours


def to_operation(doc: StatementDocument, account: BankAccount) -> BankOperation:
    """An incoming 1C document as a BankOperation of source "1c", with an operationId stable across exports."""
    op = BankOperation(
        operation_id="", account_number=account.account_number,
        operation_date=parse_moment(doc.credited or doc.doc_date), status="Transaction", is_credit=True,
        amount=doc.amount, currency=account.currency or "RUB", purpose=doc.purpose, document_number=doc.number,
        payer_name=doc.payer_name, payer_inn=doc.payer_inn, payer_kpp=doc.payer_kpp,
        payer_account=doc.payer_account, doc_date=parse_moment(doc.doc_date), source=SOURCE)
    # With a document number the content key is the identity (two exports of one statement wrap the purpose
    # differently); without one, the purpose must tell payments apart.
    key = op.content_key or hashlib.sha256("\x1f".join(
        [account.account_number, doc.number, doc.doc_date.isoformat(), f"{doc.amount:.2f}", doc.payer_inn,
         doc.payer_account, normalize_purpose(doc.purpose)]).encode()).hexdigest()
    return replace(op, operation_id=f"{SOURCE}:{key}")


def _is_known(s, account_id: int, op: BankOperation) -> bool:
    """Would store_operation find this payment already stored? (The same lookups, read-only.)"""
    if s.scalar(select(Operation.id).where(Operation.account_id == account_id,
                                           Operation.operation_id == op.operation_id)) is not None:
        return True
    if s.get(OperationAlias, (account_id, op.operation_id)) is not None:
        return True
    if s.scalar(select(Operation.id).where(Operation.account_id == account_id,
                                           Operation.fingerprint == op.fingerprint)) is not None:
        return True
    return stored_elsewhere(s, account_id, op) is not None


def _check_size(path: Path, max_bytes: int) -> None:
    size = os.path.getsize(path)
    if size > max_bytes:
        raise StatementImportError(
            f"{path.name} is {human_size(size)}; statement files up to {human_size(max_bytes)} are "
            "accepted (B24APP_STATEMENT_MAX_BYTES): export a shorter period")


def _incoming(path: Path, ours: dict[str, BankAccount], preview: StatementPreview, max_bytes: int
              ) -> Iterator[tuple[BankAccount, BankOperation]]:
    """Read the whole file, count every document into `preview`, yield the incoming ones as operations."""
    try:
        with open(path, "rb") as fh:
            reader = StatementFile(fh, max_bytes=max_bytes)
            h = reader.header
            preview.version, preview.encoding = h.version, h.encoding
            preview.date_from, preview.date_to = h.date_from, h.date_to
            statement = list(dict.fromkeys(h.accounts))
            owners: dict[str, dict[str, None]] = {}
            for item in reader.items():
                if not isinstance(item, StatementDocument):
                    if item.account not in statement:
                        statement.append(item.account)
                    continue
                if not statement:
                    raise StatementFileError("a document before the file names its account (РасчСчет)", item.line)
                preview.documents += 1
                for number, inn in ((item.recipient_account, item.recipient_inn), (item.payer_account, item.payer_inn)):
                    if number in statement and number not in ours and inn:
                        owners.setdefault(number, {})[inn] = None
                if item.recipient_account in ours and item.recipient_account in statement:
                    preview.incoming += 1
                    yield ours[item.recipient_account], to_operation(item, ours[item.recipient_account])
                elif item.payer_account in ours and item.payer_account in statement:
                    preview.outgoing += 1
                else:
                    preview.not_ours += 1
    except StatementFileError as exc:
        raise StatementImportError(f"{path.name}, {exc}" if exc.line else f"{path.name}: {exc}") from None
    except OSError as exc:
        raise StatementImportError(f"{path.name}: cannot read the file ({exc.strerror or exc})") from None
    preview.accounts = statement
    preview.unknown = {n: list(owners.get(n, {})) for n in statement if n not in ours}
    if not statement:
        raise StatementImportError(f"{path.name}: the file names no account (РасчСчет)")
    if not set(statement) & set(ours):
        raise NotOurAccounts(
            f"{path.name} is a statement of account(s) {', '.join(statement)}, none of which is this portal's "
            "(its accounts come from a linked bank or an earlier confirmed file): nothing imported", preview)


def _batches(items: Iterator, size: int = BATCH) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def preview_statement(ctx, portal_id: int, path: str | os.PathLike, *, max_bytes: int | None = None,
                      adding: tuple[str, ...] = ()) -> StatementPreview:
    """Read and check the whole file; count what importing it would store. Stores nothing.

    `adding`: account numbers not (yet) the portal's, counted as if they were (new accounts know no payment)."""
    path = Path(path)
    max_bytes = max_bytes or ctx.settings.statement_max_bytes
    _check_size(path, max_bytes)
    preview = StatementPreview(file_name=path.name)
    with ctx.db.session() as s:
        ours = _our_accounts(s, portal_id)
    for number in adding:
        ours.setdefault(number, BankAccount(account_number=number, currency="RUB"))
    seen: set[tuple[int, str]] = set()
    for batch in _batches(_incoming(path, ours, preview, max_bytes)):
        with ctx.db.session() as s:
            for account, op in batch:
                key = (account.id, op.operation_id)
                if key in seen or _is_known(s, account.id, op):
                    preview.known += 1
                else:
                    preview.new += 1
                    preview.new_amount += op.amount
                seen.add(key)
    return preview


@contextmanager
def _holding(ctx, accounts: list[BankAccount], wait: float):
    """Hold the accounts' sync lease (the one the worker takes to read a statement) while importing.

    The cross-source lookup is read-then-write: with the lease, the worker cannot store the same payment from the
    API in between. A sync in progress is waited for, up to `wait` seconds.
    """
    owner, ids = f"import:{uuid.uuid4().hex[:12]}", [a.id for a in accounts]
    lease = timedelta(seconds=ctx.settings.lease_seconds)

    def take() -> bool:
        now = ctx.clock.now()
        with ctx.db.session() as s:
            got = s.execute(update(BankAccount).where(
                BankAccount.id.in_(ids), or_(BankAccount.lease_owner == owner,
                                             leases.expired(BankAccount.__table__, now)))
                .values(lease_owner=owner, lease_until=now + lease)
                .execution_options(synchronize_session=False)).rowcount
            if got != len(ids):
                s.rollback()  # all or none
            return got == len(ids)

    deadline = time.monotonic() + wait
    while not take():
        if time.monotonic() >= deadline:
            raise StatementImportError(
                f"account(s) {', '.join(a.account_number for a in accounts)} are being read from the bank right "
                "now; nothing imported, try again in a minute")
        time.sleep(0.5)
    try:
        yield take  # call it again to renew the lease
    finally:
        with ctx.db.session() as s:
            s.execute(update(BankAccount).where(BankAccount.id.in_(ids), BankAccount.lease_owner == owner)
                      .values(lease_owner=None, lease_until=None).execution_options(synchronize_session=False))


def import_statement(ctx, portal_id: int, path: str | os.PathLike, *, max_bytes: int | None = None,
                     lease_wait: float = LEASE_WAIT) -> StatementPreview:
    """Preview (refusing a bad file before anything is stored), then store the new incoming payments.

    Stored in batches, each its own transaction: an interrupted import is finished by importing the file again.
    """
    path = Path(path)
    max_bytes = max_bytes or ctx.settings.statement_max_bytes
    preview = preview_statement(ctx, portal_id, path, max_bytes=max_bytes)
    with ctx.db.session() as s:
        ours = _our_accounts(s, portal_id)
    result = StatementPreview(file_name=path.name, imported=True)
    with _holding(ctx, [ours[n] for n in preview.accounts if n in ours], lease_wait) as renew:
        for batch in _batches(_incoming(path, ours, result, max_bytes)):
            if not renew():  # only if a batch took longer than the lease (B24APP_LEASE_SECONDS)
                raise StatementImportError(f"{path.name}: the import took too long and was stopped after "
                                           f"{result.new} new payments; import the file again to finish")
            with ctx.db.session() as s:
                for account, op in batch:
                    row = s.get(BankAccount, account.id)
                    _, how = store_operation(s, row, op)
                    if how == "new":
                        result.new += 1
                        result.new_amount += op.amount
                    else:
                        result.known += 1
    with ctx.db.session() as s:
        s.execute(update(BankAccount).where(BankAccount.id.in_([ours[n].id for n in preview.accounts if n in ours]))
                  .values(file_imported_at=ctx.clock.now()).execution_options(synchronize_session=False))
    if result.new:
        with ctx.db.session() as s:
            s.execute(update(Portal).where(Portal.id == portal_id).values(work_due_at=ctx.clock.now())
                      .execution_options(synchronize_session=False))
    return result


# -- uploads kept between the preview and the import (the admin page) ---------------------------------------------
UPLOAD_TTL = timedelta(minutes=30)


def keep_upload(ctx, portal_id: int, user_id: int, name: str, data: bytes, upload_id: str) -> None:
    """Keep an uploaded file server-side under `upload_id`, bound to the portal and the user, for UPLOAD_TTL
    (expired uploads are dropped on the way)."""
    now = ctx.clock.now()
    with ctx.db.session() as s:
        s.execute(delete(StatementUpload).where(StatementUpload.expires_at < now))
        s.add(StatementUpload(id=upload_id, portal_id=portal_id, user_id=user_id, file_name=name,
                              sha256=hashlib.sha256(data).hexdigest(), data=data, created_at=now,
                              expires_at=now + UPLOAD_TTL))


def kept_upload(ctx, portal_id: int, user_id: int, upload_id: str) -> tuple[str, bytes] | None:
    """(file name, bytes) of this user's unexpired upload on this portal, or None."""
    if not upload_id:
        return None
    with ctx.db.session() as s:
        row = s.get(StatementUpload, upload_id)
        if row is None or row.portal_id != portal_id or row.user_id != user_id or row.expires_at < ctx.clock.now():
            return None
        return row.file_name, bytes(row.data)


def forget_upload(ctx, upload_id: str) -> None:
    """Drop an imported upload (and any expired ones)."""
    with ctx.db.session() as s:
        s.execute(delete(StatementUpload).where(or_(StatementUpload.id == upload_id,
                                                    StatementUpload.expires_at < ctx.clock.now())))
