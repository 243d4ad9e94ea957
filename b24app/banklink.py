"""Linking a T-Bank account: OAuth state, the guarded callback, tokens refreshed under a lock, unlink."""
from __future__ import annotations

import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import delete, select

from .bank.api import BankAPI
from .bank.errors import BankAPIError, BankError, InvalidGrant
from .bank.tid import ACCOUNTS_SCOPE, STATEMENT_SCOPE, TIDClient, TokenSet, new_code_verifier
from .models import BankAccount, BankLink, OAuthState, Portal

log = logging.getLogger("b24app.bank")
STATE_TTL = timedelta(minutes=10)
REFRESH_MARGIN = timedelta(seconds=60)


FAILURE_KEY = "bank_link_failure"  # on Portal.settings: the last attempt that did not complete, and why


class LinkFailed(Exception):
    """A named guard of the link callback failed; the page tells the user what to do next.
    `portal_id`/`user_id` are set once the state said who asked (the admin page shows the failure)."""

    def __init__(self, reason: str, detail: str = "", portal_id: int | None = None, user_id: int | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail, self.portal_id, self.user_id = reason, detail, portal_id, user_id


class LinkNeedsConsent(BankError):
    """The bank refused our refresh token: a person must link again."""


def tid_client(ctx) -> TIDClient:
    return TIDClient(ctx.settings.tbank_id_url, ctx.settings.tbank_client_id, ctx.settings.tbank_client_secret,
                     http=ctx.http)


def redirect_uri(ctx) -> str:
    return ctx.public_url("/bank/callback")


# -- OAuth state: issue / consume (single use, expiring) ---------------------------------------------
def issue_state(ctx, portal_id: int, user_id: int, data: dict) -> str:
    state = secrets.token_urlsafe(32)
    with ctx.db.session() as s:
        s.execute(delete(OAuthState).where(OAuthState.expires_at < ctx.clock.now()))
        s.add(OAuthState(state=state, portal_id=portal_id, user_id=user_id,
                         data_enc=ctx.cipher.encrypt(f"state:{state}", json.dumps(data)),
                         expires_at=ctx.clock.now() + STATE_TTL))
    return state


def consume_state(ctx, state: str) -> tuple[int, int, dict] | None:
    """Delete the state and return (portal_id, user_id, data) if it existed and had not expired."""
    with ctx.db.session() as s:
        row = s.execute(delete(OAuthState).where(OAuthState.state == state).returning(
            OAuthState.portal_id, OAuthState.user_id, OAuthState.data_enc, OAuthState.expires_at)).first()
    if row is None or row.expires_at <= ctx.clock.now():
        return None
    return row.portal_id, row.user_id, json.loads(ctx.cipher.decrypt(f"state:{state}", row.data_enc))


# -- the flow -----------------------------------------------------------------------------------------
def start_link(ctx, portal_id: int, user_id: int, inn: str, kpp: str, browser_nonce: str) -> str:
    """Return the T-ID authorize URL; the state remembers who asked, for which company, and the browser."""
    verifier = new_code_verifier()
    state = issue_state(ctx, portal_id, user_id, {"inn": inn, "kpp": kpp or "0", "verifier": verifier,
                                                  "nonce": browser_nonce})
    return tid_client(ctx).authorization_url(redirect_uri(ctx), state, inn, kpp or "0", verifier)


@dataclass(frozen=True)
class LinkResult:
    link_id: int
    portal_id: int
    user_id: int
    accounts: int
    company_name: str | None = None


def complete_link(ctx, *, error: str | None, state: str | None, code: str | None, browser_nonce: str | None,
                  error_description: str | None = None) -> LinkResult:
    """The callback as a flat list of named guards; nothing is stored unless every guard passes."""
    if error:
        consumed = consume_state(ctx, state) if state else None  # a refused consent still burns the state
        who = consumed[:2] if consumed else (None, None)
        raise LinkFailed("provider_error", (error + ": " + (error_description or ""))[:200].rstrip(": "), *who)
    if not state:
        raise LinkFailed("state_missing")
    consumed = consume_state(ctx, state)
    if consumed is None:
        raise LinkFailed("state_invalid")  # unknown, expired or already used
    portal_id, user_id, data = consumed
    try:
        return _complete(ctx, portal_id, user_id, data, code, browser_nonce)
    except LinkFailed as exc:
        exc.portal_id, exc.user_id = portal_id, user_id
        raise


def _complete(ctx, portal_id: int, user_id: int, data: dict, code: str | None, browser_nonce: str | None) -> LinkResult:
    if not browser_nonce or not hmac.compare_digest(str(data.get("nonce", "")), browser_nonce):
        raise LinkFailed("state_other_browser")
    if not code:
        raise LinkFailed("code_missing")
    tid = tid_client(ctx)
    try:
        tokens = tid.exchange_code(code, redirect_uri(ctx), data["verifier"])
    except BankError as exc:
        raise LinkFailed("exchange_failed", str(exc)) from exc
    inn, kpp = data["inn"], data["kpp"]
    try:
        info = tid.introspect(tokens.access_token)
    except BankError as exc:
        raise LinkFailed("exchange_failed", str(exc)) from exc
    missing = [name for name, suffix in (("statement", STATEMENT_SCOPE), ("accounts", ACCOUNTS_SCOPE))
               if not info.has_scope(inn, kpp, suffix)]
    if missing:
        _revoke_quietly(tid, tokens.refresh_token or tokens.access_token)
        raise LinkFailed("scopes_not_granted", ",".join(missing))
    try:
        link_id = store_link(ctx, portal_id, user_id, "tid", inn, kpp, tokens, list(info.scopes))
        count = load_accounts(ctx, link_id)
    except (BankError, ValueError) as exc:
        raise LinkFailed("storage_failed", str(exc)) from exc
    name = load_company_name(ctx, link_id)
    subscribe_webhook(ctx, link_id)
    return LinkResult(link_id, portal_id, user_id, count, name)


def load_company_name(ctx, link_id: int) -> str | None:
    """The company's name as T-Bank has it (GET /api/v1/company, scope company-info/get), so people see whose
    account is linked rather than only an INN. Best effort: without that scope the link works and shows the INN."""
    try:
        company = bank_api(ctx, link_id).company()
    except BankError as exc:
        log.info("company name not available", extra={"link_id": link_id, "error": type(exc).__name__})
        return None
    name = company.get("name") or company.get("fullName")
    name = str(name).strip()[:255] if isinstance(name, str) and name.strip() else None
    if name:
        with ctx.db.session() as s:
            s.get(BankLink, link_id).company_name = name
    return name


def record_failure(ctx, portal_id: int, user_id: int | None, reason: str, detail: str = "") -> None:
    """Remember the last attempt that did not complete (one per portal), for the admin page."""
    with ctx.db.session() as s:
        row = s.scalar(select(Portal).where(Portal.id == portal_id).with_for_update())
        if row is None:
            return
        row.settings = {**(row.settings or {}), FAILURE_KEY: {
            "at": ctx.clock.now().isoformat(), "reason": reason, "detail": detail[:200], "user_id": user_id}}


def _forget_failure(s, portal_id: int) -> None:
    row = s.scalar(select(Portal).where(Portal.id == portal_id).with_for_update())
    if row is not None and FAILURE_KEY in (row.settings or {}):
        row.settings = {k: v for k, v in row.settings.items() if k != FAILURE_KEY}


def store_link(ctx, portal_id: int, user_id: int, kind: str, inn: str, kpp: str, tokens: TokenSet,
               scopes: list[str]) -> int:
    owner_tmp = f"bank:{portal_id}:{inn}:{kpp}"
    with ctx.db.session() as s:
        link = s.scalar(select(BankLink).where(BankLink.portal_id == portal_id, BankLink.inn == inn,
                                               BankLink.kpp == kpp).with_for_update())
        if link is None:
            link = BankLink(portal_id=portal_id, inn=inn, kpp=kpp, kind=kind)
            s.add(link)
        link.kind, link.status, link.scopes, link.linked_by, link.last_error = kind, "active", scopes, user_id, None
        link.access_token_enc = ctx.cipher.encrypt(owner_tmp, tokens.access_token)
        link.refresh_token_enc = (ctx.cipher.encrypt(owner_tmp, tokens.refresh_token)
                                  if tokens.refresh_token else None)
        link.access_expires_at = tokens.expires_at
        link.token_generation = (link.token_generation or 0) + 1
        _forget_failure(s, portal_id)
        s.flush()
        return link.id


def _owner(link: BankLink) -> str:
    return f"bank:{link.portal_id}:{link.inn}:{link.kpp}"


class LinkTokens:
    """`token(force_refresh)` for BankAPI: refresh under a per-link lock, persist the rotated pair first."""

    def __init__(self, ctx, link_id: int, link: BankLink | None = None):
        self.ctx, self.link_id = ctx, link_id
        self._seen_generation: int | None = None
        self._preloaded = link  # a row the caller just read: saves one query on the first call

    def __call__(self, force_refresh: bool = False) -> str:
        ctx = self.ctx
        link, self._preloaded = self._preloaded, None
        if link is None or force_refresh:
            with ctx.db.session() as s:
                link = s.get(BankLink, self.link_id)
        if link is None or link.status != "active" or not link.access_token_enc:
            raise LinkNeedsConsent("the bank link is not active")
        fresh = link.access_expires_at is None or link.access_expires_at - ctx.clock.now() > REFRESH_MARGIN
        if link.kind == "static" or (fresh and not force_refresh):
            self._seen_generation = link.token_generation
            return ctx.cipher.decrypt(_owner(link), link.access_token_enc)
        seen = link.token_generation if self._seen_generation is None else self._seen_generation
        return self._refresh(seen)

    def _refresh(self, seen_generation: int) -> str:
        ctx = self.ctx
        with ctx.db.session() as s:
            link = s.scalar(select(BankLink).where(BankLink.id == self.link_id).with_for_update())
            if link is None or link.status != "active" or not link.refresh_token_enc:
                raise LinkNeedsConsent("the bank link is not active")
            if link.token_generation != seen_generation:
                # Someone refreshed while we waited for the lock: use theirs.
                self._seen_generation = link.token_generation
                return ctx.cipher.decrypt(_owner(link), link.access_token_enc)
            try:
                tokens = tid_client(ctx).refresh(ctx.cipher.decrypt(_owner(link), link.refresh_token_enc))
            except InvalidGrant:
                link.status, link.last_error = "needs_consent", "invalid_grant"
                link.access_token_enc = link.refresh_token_enc = None
                portal_id, link_id = link.portal_id, link.id
                needs_consent = True
            else:
                needs_consent = False
                link.access_token_enc = ctx.cipher.encrypt(_owner(link), tokens.access_token)
                if tokens.refresh_token:
                    link.refresh_token_enc = ctx.cipher.encrypt(_owner(link), tokens.refresh_token)
                link.access_expires_at = tokens.expires_at
                link.token_generation += 1
                self._seen_generation = link.token_generation
                access = tokens.access_token
        if needs_consent:
            from .notices import notify_needs_consent
            notify_needs_consent(ctx, portal_id, link_id)
            raise LinkNeedsConsent("T-Bank refused the refresh token; link the account again")
        return access


def bank_api(ctx, link_id: int, link: BankLink | None = None) -> BankAPI:
    return BankAPI(ctx.settings.tbank_api_url, LinkTokens(ctx, link_id, link), http=ctx.http)


def load_accounts(ctx, link_id: int) -> int:
    """Read the company's accounts; watch every RUB current account by default (new accounts only)."""
    accounts = bank_api(ctx, link_id).accounts()
    with ctx.db.session() as s:
        link = s.get(BankLink, link_id)
        existing = {a.account_number: a for a in s.scalars(select(BankAccount).where(BankAccount.link_id == link_id))}
        for acc in accounts:
            row = existing.get(acc.account_number)
            if row is None:
                row = BankAccount(link_id=link_id, portal_id=link.portal_id, account_number=acc.account_number,
                                  watched=acc.currency == "RUB" and (acc.account_type or "Current") == "Current",
                                  next_sync_at=ctx.clock.now())
                s.add(row)
            row.currency, row.name, row.account_type = acc.currency, acc.name, acc.account_type
    return len(accounts)


def set_watched(ctx, portal_id: int, watched_ids: set[int]) -> None:
    with ctx.db.session() as s:
        for acc in s.scalars(select(BankAccount).where(BankAccount.portal_id == portal_id)):
            was = acc.watched
            acc.watched = acc.id in watched_ids
            if acc.watched and not was:
                acc.next_sync_at = ctx.clock.now()


def paste_token(ctx, portal_id: int, user_id: int, token: str) -> int:
    """Admin fallback: a T-Business cabinet token. Checked against the API before anything is stored."""
    token = token.strip()
    if not token or len(token) > 4096 or any(c.isspace() for c in token):
        raise LinkFailed("token_malformed")
    api = BankAPI(ctx.settings.tbank_api_url, lambda _force=False: token, http=ctx.http, max_retries=1)
    try:
        company = api.company()
    except BankAPIError as exc:
        raise LinkFailed("token_rejected", exc.error_code or str(exc.status)) from exc
    req = company.get("requisites") if isinstance(company.get("requisites"), dict) else company
    inn, kpp = str(req.get("inn") or ""), str(req.get("kpp") or "0")
    if not inn:
        raise LinkFailed("token_rejected", "company without INN")
    far = ctx.clock.now() + timedelta(days=3650)
    link_id = store_link(ctx, portal_id, user_id, "static", inn, kpp,
                         TokenSet(access_token=token, refresh_token=None, expires_at=far, scope=()), [])
    with ctx.db.session() as s:
        s.get(BankLink, link_id).company_name = company.get("name")
    load_accounts(ctx, link_id)
    return link_id


def unlink(ctx, portal_id: int, link_id: int) -> bool:
    """Revoke at the bank (best effort), forget the tokens, stop watching."""
    with ctx.db.session() as s:
        link = s.scalar(select(BankLink).where(BankLink.id == link_id, BankLink.portal_id == portal_id).with_for_update())
        if link is None:
            return False
        refresh = (ctx.cipher.decrypt(_owner(link), link.refresh_token_enc)
                   if link.kind == "tid" and link.refresh_token_enc else None)
        link.access_token_enc = link.refresh_token_enc = link.webhook_secret_enc = None
        link.status = "unlinked"
        for acc in s.scalars(select(BankAccount).where(BankAccount.link_id == link_id)):
            acc.watched = False
    if refresh:
        _revoke_quietly(tid_client(ctx), refresh)
    return True


def _revoke_quietly(tid: TIDClient, token: str | None) -> None:
    if not token:
        return
    try:
        tid.revoke(token, "refresh_token")
    except (BankError, httpx.HTTPError) as exc:
        log.warning("revoke failed", extra={"error": type(exc).__name__})


def subscribe_webhook(ctx, link_id: int) -> bool:
    """Ask T-Bank to push oper-feed-operation to us (a trigger only; polling stays the safety net)."""
    secret = secrets.token_urlsafe(32)
    try:
        webhook_id = bank_api(ctx, link_id).subscribe_webhook(ctx.public_url(f"/bank/webhook/{link_id}"), secret)
    except BankError as exc:
        log.info("webhook subscription not available", extra={"link_id": link_id, "error": type(exc).__name__})
        return False
    with ctx.db.session() as s:
        link = s.get(BankLink, link_id)
        link.webhook_secret_enc = ctx.cipher.encrypt(f"webhook:{link_id}", secret)
        link.webhook_id = webhook_id
    return True


def webhook_secret_matches(ctx, link_id: int, presented: str) -> bool:
    with ctx.db.session() as s:
        link = s.get(BankLink, link_id)
    if link is None or link.status != "active" or not link.webhook_secret_enc or not presented:
        hmac.compare_digest(b"0" * 43, presented.encode()[:43].ljust(43, b"\0"))
        return False
    return hmac.compare_digest(ctx.cipher.decrypt(f"webhook:{link_id}", link.webhook_secret_enc).encode(),
                               presented.encode())
