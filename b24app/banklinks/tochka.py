"""Linking Tochka: the consent flow (the client signs in at Tochka and confirms by SMS), tokens refreshed under a
lock, the incomingPayment webhook (one URL for the application, JWT signed by Tochka), and the statement reader.

The OAuth `state` (single use, expiring, bound to the browser), the admin-only rule and the INN vetting are
T-Bank's (banklink.py), reused as they are. Facts about Tochka and their sources: docs/banks/tochka.md.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from datetime import timedelta

import httpx
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from b24app.adapters.banks.errors import BankError
from b24app.adapters.banks.tochka import (
    REQUIRED,
    TochkaAPI,
    TochkaOAuth,
    WebhookRejected,
    public_key_from_jwk,
    verify_webhook,
)
from .tbank import (
    INN_CONFIRMED,
    INN_OWN,
    LinkFailed,
    LinkResult,
    LinkTokens,
    consume_state,
    issue_state,
    store_accounts,
)
from b24app.storage.models import BankAccount, BankLink, TochkaWebhookReceipt

log = logging.getLogger("b24app.tochka")
PROVIDER = KIND = "tochka"
RECEIPT_TTL = timedelta(days=30)      # how long an accepted webhook token is remembered (replays refused)


def enabled(ctx) -> bool:
    return bool(ctx.settings.tochka_client_id)


def oauth(ctx) -> TochkaOAuth:
    s = ctx.settings
    return TochkaOAuth(s.tochka_auth_url, s.tochka_client_id, s.tochka_client_secret, http=ctx.http,
                       now=ctx.clock.now)


def redirect_uri(ctx) -> str:
    return ctx.public_url("/bank/tochka/callback")


def webhook_url(ctx) -> str:
    return ctx.public_url("/bank/tochka/webhook")


# -- the flow -----------------------------------------------------------------------------------------------
def start_link(ctx, portal_id: int, user_id: int, inn: str, kpp: str, browser_nonce: str, *, checked: str) -> str:
    """Create a consent with the application's token (client_credentials) and return Tochka's sign-in URL for it."""
    if not enabled(ctx):
        raise LinkFailed("bank_unavailable", "Tochka is not configured")
    try:
        auth = oauth(ctx)
        app_token = auth.app_token()
        consent_id = TochkaAPI(ctx.settings.tochka_api_url, lambda _f=False: app_token, http=ctx.http).create_consent()
    except (BankError, httpx.HTTPError) as exc:
        raise LinkFailed("bank_unavailable", str(exc)) from exc
    state = issue_state(ctx, portal_id, user_id, {"bank": PROVIDER, "inn": inn, "kpp": kpp or "0",
                                                  "nonce": browser_nonce, "admin": True, "inn_check": checked,
                                                  "consent_id": consent_id})
    return auth.authorization_url(redirect_uri(ctx), state, consent_id)


def complete_link(ctx, *, error: str | None, state: str | None, code: str | None,
                  browser_nonce: str | None) -> LinkResult:
    """The callback as named guards (T-Bank's), then: the code exchanged, the consent read back (authorised, with
    accounts and statements), the vetted company found among the consent's customers; only then stored."""
    if error:
        if state:
            consume_state(ctx, state)
        raise LinkFailed("provider_error", error)
    if not state:
        raise LinkFailed("state_missing")
    consumed = consume_state(ctx, state)
    if consumed is None:
        raise LinkFailed("state_invalid")
    portal_id, user_id, data = consumed
    if data.get("bank") != PROVIDER:
        raise LinkFailed("state_invalid")  # a T-Bank state presented at Tochka's callback
    if not browser_nonce or not hmac.compare_digest(str(data.get("nonce", "")), browser_nonce):
        raise LinkFailed("state_other_browser")
    if data.get("admin") is not True or data.get("inn_check") not in (INN_OWN, INN_CONFIRMED):
        raise LinkFailed("not_admin")
    if not code:
        raise LinkFailed("code_missing")
    try:
        tokens = oauth(ctx).exchange_code(code, redirect_uri(ctx))
    except BankError as exc:
        raise LinkFailed("exchange_failed", str(exc)) from exc
    api = TochkaAPI(ctx.settings.tochka_api_url, lambda _f=False: tokens.access_token, http=ctx.http)
    try:
        consent = api.consent(data["consent_id"])
        granted = [p for p in consent.get("permissions") or [] if isinstance(p, str)]
        if consent.get("status") != "Authorised" or not all(p in granted for p in REQUIRED):
            raise LinkFailed("scopes_not_granted", ",".join(p for p in REQUIRED if p not in granted))
        customer = next((c for c in api.customers() if c.inn == data["inn"]), None)
        if customer is None:
            raise LinkFailed("company_not_in_consent", data["inn"])
        accounts = [a for a in api.accounts() if a.customer_code == customer.customer_code]
    except BankError as exc:
        raise LinkFailed("exchange_failed", str(exc)) from exc
    link_id = _store(ctx, portal_id, user_id, data, tokens, granted, customer)
    count = store_accounts(ctx, link_id, accounts)
    subscribe_webhook(ctx, link_id)
    return LinkResult(link_id, portal_id, user_id, count)


def _store(ctx, portal_id: int, user_id: int, data: dict, tokens, granted: list[str], customer) -> int:
    inn, kpp = data["inn"], data["kpp"]
    with ctx.db.session() as s:
        link = s.scalar(select(BankLink).where(BankLink.portal_id == portal_id, BankLink.provider == PROVIDER,
                                               BankLink.inn == inn, BankLink.kpp == kpp).with_for_update())
        if link is None:
            link = BankLink(portal_id=portal_id, provider=PROVIDER, inn=inn, kpp=kpp, kind=KIND)
            s.add(link)
        owner = f"bank:{portal_id}:{inn}:{kpp}"
        link.kind, link.status, link.scopes, link.linked_by, link.last_error = KIND, "active", granted, user_id, None
        link.inn_check = data["inn_check"]
        link.inn_confirmed_at = ctx.clock.now() if data["inn_check"] == INN_CONFIRMED else None
        link.access_token_enc = ctx.cipher.encrypt(owner, tokens.access_token)
        link.refresh_token_enc = ctx.cipher.encrypt(owner, tokens.refresh_token) if tokens.refresh_token else None
        link.consent_id_enc = ctx.cipher.encrypt(owner, data["consent_id"])
        link.customer_code, link.company_name = customer.customer_code, customer.name or None
        link.access_expires_at = tokens.expires_at
        link.token_generation = (link.token_generation or 0) + 1
        link.webhook_id = None
        s.flush()
        return link.id


# -- tokens -----------------------------------------------------------------------------------------------
class TochkaTokens(LinkTokens):
    """`token(force_refresh)` for TochkaAPI: the same refresh under the link's row lock as T-Bank's, with
    Tochka's OAuth grant (Tochka links are never static cabinet tokens)."""

    bank = "Tochka"

    def grant(self, refresh_token: str):
        return oauth(self.ctx).refresh(refresh_token)


def api(ctx, link_id: int, link=None) -> TochkaAPI:
    return TochkaAPI(ctx.settings.tochka_api_url, TochkaTokens(ctx, link_id, link), http=ctx.http)


# -- webhook ---------------------------------------------------------------------------------------------
def subscribe_webhook(ctx, link_id: int) -> bool:
    """Create Webhook (PUT /webhook/v1.0/{client_id}) for incomingPayment at our one URL. Tochka sends a test
    webhook first and refuses unless it gets 200; it only accepts HTTPS on port 443. Polling stays the net."""
    with ctx.db.session() as s:
        link = s.get(BankLink, link_id)
        if "ManageWebhookData" not in (link.scopes or []):
            log.warning("tochka webhook not subscribed", extra={"link_id": link_id, "reason": "scope"})
            return False
    try:
        api(ctx, link_id).register_webhook(ctx.settings.tochka_client_id, webhook_url(ctx))
    except (BankError, httpx.HTTPError) as exc:
        log.warning("tochka webhook refused", extra={"link_id": link_id, "error": type(exc).__name__})
        return False
    with ctx.db.session() as s:
        s.get(BankLink, link_id).webhook_id = "incomingPayment"  # per application; the admin page says "live"
    return True


class WebhookKeys:
    """Tochka's public key (a JWK at B24APP_TOCHKA_WEBHOOK_KEY_URL), cached; fetched again at most once a minute
    when a signature does not verify (a rotated key), so forged webhooks cannot make us hammer the URL."""

    REFETCH_EVERY = 60.0

    def __init__(self):
        self._lock = threading.Lock()
        self._keys: list = []
        self._fetched_at = 0.0

    def get(self, ctx, *, again: bool = False) -> list:
        with self._lock:
            if self._keys and not (again and time.monotonic() - self._fetched_at > self.REFETCH_EVERY):
                return list(self._keys)
            try:
                r = ctx.http.get(ctx.settings.tochka_webhook_key_url, timeout=10)
                r.raise_for_status()
                self._keys = [public_key_from_jwk(r.json())]
                self._fetched_at = time.monotonic()
            except (httpx.HTTPError, ValueError, TypeError) as exc:
                log.warning("tochka webhook key unavailable", extra={"error": type(exc).__name__})
            return list(self._keys)


_KEYS_LOCK = threading.Lock()


def keys_for(ctx) -> WebhookKeys:
    """The key cache of this app instance (not of the process: two apps in one process, as in the tests, may
    name the same URL for different banks)."""
    with _KEYS_LOCK:
        keys = getattr(ctx, "_tochka_webhook_keys", None)
        if keys is None:
            keys = ctx._tochka_webhook_keys = WebhookKeys()
        return keys


def accept_webhook(ctx, body: str) -> dict[int, list[int]]:
    """Verify a webhook body (a JWT) and remember it; returns the watched accounts it concerns, per portal
    (none for another event, or a company no portal watches). Raises WebhookRejected: malformed | alg |
    signature | replayed."""
    keys = keys_for(ctx)
    try:
        claims = verify_webhook(body, keys.get(ctx))
    except WebhookRejected as exc:
        if exc.reason != "signature":
            raise
        claims = verify_webhook(body, keys.get(ctx, again=True))  # the key may have been rotated
    # The bank's claims carry no exp/iat/jti (docs/banks/tochka.md): a token we acted on is remembered, and the
    # same token again is refused. A genuine retry only follows a non-200 answer, which we never remembered.
    digest = hashlib.sha256(body.strip().encode()).hexdigest()
    now = ctx.clock.now()
    try:
        with ctx.db.session() as s:
            s.execute(delete(TochkaWebhookReceipt).where(TochkaWebhookReceipt.received_at < now - RECEIPT_TTL))
            s.add(TochkaWebhookReceipt(digest=digest, received_at=now))
    except IntegrityError:
        raise WebhookRejected("replayed") from None
    if claims.get("webhookType") != "incomingPayment":
        return {}
    code = str(claims.get("customerCode") or "")
    recipient = claims.get("SideRecipient") if isinstance(claims.get("SideRecipient"), dict) else {}
    number = str(recipient.get("account") or "")
    out: dict[int, list[int]] = {}
    with ctx.db.session() as s:
        rows = s.execute(select(BankAccount.id, BankAccount.portal_id, BankAccount.account_number)
                         .join(BankLink, BankLink.id == BankAccount.link_id)
                         .where(BankLink.provider == PROVIDER, BankLink.status == "active",
                                BankLink.customer_code == code, BankAccount.watched.is_(True))).all()
    for acc_id, portal_id, acc_number in rows:
        if not number or acc_number == number:
            out.setdefault(portal_id, []).append(acc_id)
    return out
