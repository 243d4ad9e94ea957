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

from b24app.adapters.banks.tbank import BankAPI
from b24app.adapters.banks.errors import BankAPIError, BankError, BankInvalidGrant
from b24app.adapters.banks.tid import (
    ACCOUNTS_SCOPE,
    STATEMENT_SCOPE,
    WEBHOOKS_SCOPE,
    TIDClient,
    TokenSet,
    company_scope,
    new_code_verifier,
)
from b24app.storage.models import BankAccount, BankLink, OAuthState, Portal

log = logging.getLogger("b24app.adapters.banks")
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


# -- who may link which company ------------------------------------------------------------------------
INN_OWN, INN_CONFIRMED = "own_company", "confirmed"


def own_company_inns(ctx, member_id: str) -> set[str] | None:
    """INNs in the requisites of the portal's own companies ("my company", IS_MY_COMPANY=Y), read with the
    app's token; None when Bitrix24 did not answer (then an admin must confirm, as for a foreign INN).
    Docs: api-reference/crm/companies/crm-company-list.md (IS_MY_COMPANY),
    api-reference/crm/requisites/universal/crm-requisite-list.md (ENTITY_TYPE_ID 4 = company, RQ_INN)."""
    from b24app.adapters.bitrix.errors import BitrixError

    try:
        client = ctx.bitrix(member_id)
        mine = {int(c["ID"]) for c in client.list_all("crm.company.list", {
            "filter": {"IS_MY_COMPANY": "Y"}, "select": ["ID"]}) if str(c.get("ID", "")).isdigit()}
        if not mine:
            return set()
        return _requisite_inns(client, mine)
    except (BitrixError, httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        log.warning("own companies unavailable", extra={"member_id": member_id, "error": type(exc).__name__})
        return None


def _requisite_inns(client, company_ids: set[int]) -> set[str]:
    """Every INN in these companies' requisites (a company may hold several), 50 companies per command."""
    ids = sorted(company_ids)
    res = client.batch({f"r{n}": ("crm.requisite.list", {"filter": {"ENTITY_TYPE_ID": 4, "@ENTITY_ID": ids[n:n + 50]},
                                                        "select": ["ENTITY_ID", "RQ_INN"]})
                        for n in range(0, len(ids), 50)})
    res.raise_first()
    return {str(r["RQ_INN"]) for rows in res.results.values() for r in rows or []
            if isinstance(r, dict) and r.get("RQ_INN")}


def inn_check(own_inns: set[str] | None, inn: str, confirmed: bool) -> str:
    """How this INN may be linked: own company, or confirmed by the admin; raises when confirmation is due."""
    if own_inns is not None and inn in own_inns:
        return INN_OWN
    if confirmed:
        return INN_CONFIRMED
    raise LinkFailed("inn_not_own_company" if own_inns is not None else "own_companies_unknown", inn)


# -- the flow -----------------------------------------------------------------------------------------
def start_link(ctx, portal_id: int, user_id: int, inn: str, kpp: str, browser_nonce: str, *,
               is_admin: bool, checked: str) -> str:
    """Return the T-ID authorize URL; the state remembers who asked (an admin), for which company and how
    its INN was vetted, and the browser."""
    if not is_admin:
        raise LinkFailed("not_admin")
    verifier = new_code_verifier()
    state = issue_state(ctx, portal_id, user_id, {"inn": inn, "kpp": kpp or "0", "verifier": verifier,
                                                  "nonce": browser_nonce, "admin": True, "inn_check": checked})
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
    if data.get("admin") is not True or data.get("inn_check") not in (INN_OWN, INN_CONFIRMED):
        raise LinkFailed("not_admin")  # a state from before admins-only linking, or not vetted
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
        link_id = store_link(ctx, portal_id, user_id, "tid", inn, kpp, tokens, list(info.scopes),
                             checked=data["inn_check"])
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
               scopes: list[str], *, checked: str) -> int:
    owner_tmp = f"bank:{portal_id}:{inn}:{kpp}"
    with ctx.db.session() as s:
        link = s.scalar(select(BankLink).where(BankLink.portal_id == portal_id, BankLink.provider == "tbank",
                                               BankLink.inn == inn, BankLink.kpp == kpp).with_for_update())
        if link is None:
            link = BankLink(portal_id=portal_id, provider="tbank", inn=inn, kpp=kpp, kind=kind)
            s.add(link)
        link.kind, link.status, link.scopes, link.linked_by, link.last_error = kind, "active", scopes, user_id, None
        link.inn_check = checked
        link.inn_confirmed_at = ctx.clock.now() if checked == INN_CONFIRMED else None
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
    """`token(force_refresh)` for a bank client: refresh under a per-link lock, persist the rotated pair first.
    T-Bank's T-ID by default; a subclass names another bank and its refresh grant (`tochkalink.TochkaTokens`)."""

    bank = "T-Bank"

    def __init__(self, ctx, link_id: int, link: BankLink | None = None):
        self.ctx, self.link_id = ctx, link_id
        self._seen_generation: int | None = None
        self._preloaded = link  # a row the caller just read: saves one query on the first call

    def grant(self, refresh_token: str) -> TokenSet:
        """A new pair for this refresh token (raises BankInvalidGrant when the bank refuses it)."""
        return tid_client(self.ctx).refresh(refresh_token)

    def __call__(self, force_refresh: bool = False) -> str:
        ctx = self.ctx
        link, self._preloaded = self._preloaded, None
        if link is None or force_refresh:
            with ctx.db.session() as s:
                link = s.get(BankLink, self.link_id)
        if link is None or link.status != "active" or not link.access_token_enc:
            raise LinkNeedsConsent(f"the {self.bank} link is not active")
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
                raise LinkNeedsConsent(f"the {self.bank} link is not active")
            if link.token_generation != seen_generation:
                # Someone refreshed while we waited for the lock: use theirs.
                self._seen_generation = link.token_generation
                return ctx.cipher.decrypt(_owner(link), link.access_token_enc)
            try:
                tokens = self.grant(ctx.cipher.decrypt(_owner(link), link.refresh_token_enc))
            except BankInvalidGrant:
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
            from b24app.pipeline.notices import notify_needs_consent
            notify_needs_consent(ctx, portal_id, link_id)
            raise LinkNeedsConsent(f"{self.bank} refused the refresh token; link the account again")
        return access


def bank_api(ctx, link_id: int, link: BankLink | None = None) -> BankAPI:
    return BankAPI(ctx.settings.tbank_api_url, LinkTokens(ctx, link_id, link), http=ctx.http)


def load_accounts(ctx, link_id: int) -> int:
    """Read the company's accounts at T-Bank and keep them (`store_accounts`)."""
    return store_accounts(ctx, link_id, bank_api(ctx, link_id).accounts())


def store_accounts(ctx, link_id: int, accounts) -> int:
    """Keep a link's accounts, whichever bank read them. An account watched before an unlink is watched again
    (by account number, whichever link row it had); an account never seen is watched by default if it is a
    RUB current account."""
    now = ctx.clock.now()
    with ctx.db.session() as s:
        link = s.get(BankLink, link_id)
        existing = {a.account_number: a for a in s.scalars(select(BankAccount).where(BankAccount.link_id == link_id))}
        earlier = list(s.scalars(select(BankAccount).where(BankAccount.portal_id == link.portal_id,
                                                           BankAccount.link_id != link_id)))
        remembered = {a.account_number for a in earlier if a.watch_on_relink}
        known = {a.account_number for a in earlier}
        for acc in accounts:
            row = existing.get(acc.account_number)
            if row is None:
                default = acc.currency == "RUB" and (getattr(acc, "account_type", None) or "Current") == "Current"
                row = BankAccount(link_id=link_id, portal_id=link.portal_id, account_number=acc.account_number,
                                  watched=acc.account_number in remembered or (
                                      default and acc.account_number not in known), next_sync_at=now)
                s.add(row)
            elif row.watch_on_relink and not row.watched:
                row.watched, row.next_sync_at = True, now
            row.watch_on_relink = False
            row.currency, row.name = acc.currency, acc.name or None
            row.account_type = getattr(acc, "account_type", None)  # T-Bank's Current, Overdraft…; Tochka names none
            row.external_id = getattr(acc, "account_id", None)     # Tochka's "<number>/<BIC>"; T-Bank needs none
        numbers = {acc.account_number for acc in accounts}
        for a in earlier:
            if a.account_number in numbers:
                a.watch_on_relink = False  # remembered once: this link has the account now
    return len(accounts)


def set_watched(ctx, portal_id: int, watched_ids: set[int], *, link_ids: set[int] | None = None) -> None:
    """Watch exactly `watched_ids` among the accounts of `link_ids` (all the portal's links when None): a page
    that shows one bank's accounts must not unwatch another bank's."""
    with ctx.db.session() as s:
        q = select(BankAccount).where(BankAccount.portal_id == portal_id, BankAccount.link_id.not_in(
            select(BankLink.id).where(BankLink.provider == "file")))  # 1C-file accounts: nothing to poll
        if link_ids is not None:
            q = q.where(BankAccount.link_id.in_(link_ids))
        for acc in s.scalars(q):
            was = acc.watched
            acc.watched = acc.id in watched_ids
            if acc.watched and not was:
                acc.next_sync_at = ctx.clock.now()


def paste_token(ctx, portal_id: int, user_id: int, token: str, *, own_inns: set[str] | None,
                confirmed_inn: str = "") -> int:
    """Admin fallback: a T-Business cabinet token. Checked against the API before anything is stored; a
    company that is not one of the portal's own needs its INN confirmed (else LinkFailed naming the INN)."""
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
    checked = inn_check(own_inns, inn, confirmed_inn == inn)
    far = ctx.clock.now() + timedelta(days=3650)
    link_id = store_link(ctx, portal_id, user_id, "static", inn, kpp,
                         TokenSet(access_token=token, refresh_token=None, expires_at=far, scope=()), [],
                         checked=checked)
    with ctx.db.session() as s:
        s.get(BankLink, link_id).company_name = company.get("name")
    load_accounts(ctx, link_id)
    return link_id


def unlink(ctx, portal_id: int, link_id: int) -> bool:
    """Forget the tokens and stop watching (recorded first), then, best effort and bounded in time, delete
    the webhook subscription at the bank and revoke our T-ID tokens."""
    with ctx.db.session() as s:
        link = s.scalar(select(BankLink).where(BankLink.id == link_id, BankLink.portal_id == portal_id).with_for_update())
        if link is None:
            return False
        release = _release_of(ctx, link)
        _forget(link)
        for acc in s.scalars(select(BankAccount).where(BankAccount.link_id == link_id)):
            acc.watch_on_relink = bool(acc.watched or acc.watch_on_relink)  # linking again watches it again
            acc.watched = False
    release_at_bank(ctx, [release] if release else [], budget=UNLINK_BUDGET)
    return True


def uninstall_portal(ctx, member_id: str, *, clean: bool) -> bool:
    """ONAPPUNINSTALL: record the uninstall (nothing at the bank can stop or undo it), then release every bank
    link of the portal at the bank, best effort within UNINSTALL_BUDGET seconds in all."""
    releases: list[Release] = []
    try:
        portal = ctx.portals.find(member_id)
        if portal is not None:
            with ctx.db.session() as s:
                for link in s.scalars(select(BankLink).where(BankLink.portal_id == portal.id,
                                                             BankLink.access_token_enc.is_not(None))):
                    release = _release_of(ctx, link)
                    if release:
                        releases.append(release)
    except Exception as exc:  # noqa: BLE001 - whatever fails here, the uninstall below must still happen
        log.warning("bank links not read before uninstall", extra={"member_id": member_id,
                                                                   "error": type(exc).__name__})
    done = ctx.portals.uninstall(member_id, clean=clean)
    release_at_bank(ctx, releases, budget=UNINSTALL_BUDGET)
    return done


# The bank is called after the local change is recorded, with its own short timeouts: a slow or absent bank
# delays an unlink or an uninstall by at most these many seconds, and never fails it.
UNLINK_BUDGET = 10.0
UNINSTALL_BUDGET = 8.0
BANK_CALL_TIMEOUT = 3.0


@dataclass
class Release:
    """What is needed to undo a link at the bank, read (decrypted) before the tokens are forgotten."""

    link_id: int
    kind: str
    access: str | None
    refresh: str | None
    webhook_id: str | None


def _release_of(ctx, link: BankLink) -> Release | None:
    access = ctx.cipher.decrypt(_owner(link), link.access_token_enc) if link.access_token_enc else None
    refresh = ctx.cipher.decrypt(_owner(link), link.refresh_token_enc) if link.refresh_token_enc else None
    if not access and not refresh:
        return None
    return Release(link.id, link.kind, access, refresh, link.webhook_id)


def _forget(link: BankLink) -> None:
    link.access_token_enc = link.refresh_token_enc = link.webhook_secret_enc = None
    link.webhook_id = link.consent_id_enc = None  # consent_id_enc: a Tochka link's consent
    link.status = "unlinked"


def release_at_bank(ctx, releases: list[Release], *, budget: float) -> dict[int, list[str]]:
    """Delete each link's webhook subscription (DELETE /api/v1/webhook/{id}, with the link's token) and
    revoke our T-ID tokens (POST /auth/revoke, shared/reference/tbank.md; revoking the refresh token ends its
    access tokens too). A pasted cabinet token is the customer's own: it is forgotten, not revoked. Each
    call has a short timeout and no retries; what did not happen is logged. Returns what was done per link."""
    import time

    deadline = time.monotonic() + budget
    done: dict[int, list[str]] = {}
    if not releases:
        return done

    def left() -> float:
        return deadline - time.monotonic()

    with httpx.Client(timeout=httpx.Timeout(BANK_CALL_TIMEOUT)) as http:
        tid = TIDClient(ctx.settings.tbank_id_url, ctx.settings.tbank_client_id, ctx.settings.tbank_client_secret,
                        http=http)
        for rel in releases:
            steps = done.setdefault(rel.link_id, [])

            def token(force: bool = False, rel=rel) -> str:
                if force and rel.kind == "tid" and rel.refresh and left() > 0:
                    fresh = tid.refresh(rel.refresh)  # the access token had expired: one rotation
                    rel.access, rel.refresh = fresh.access_token, fresh.refresh_token or rel.refresh
                return rel.access or ""

            calls = []
            if rel.webhook_id and (rel.access or rel.refresh):
                calls.append(("webhook_deleted", lambda rel=rel: BankAPI(
                    ctx.settings.tbank_api_url, token, http=http, max_retries=0).delete_webhook(rel.webhook_id)))
            if rel.kind == "tid" and rel.refresh:
                calls.append(("refresh_revoked", lambda rel=rel: tid.revoke(rel.refresh, "refresh_token")))
            if rel.kind == "tid" and rel.access:
                calls.append(("access_revoked", lambda rel=rel: tid.revoke(rel.access, "access_token")))
            for name, call in calls:
                if left() <= 0:
                    log.warning("bank release out of time", extra={"link_id": rel.link_id, "step": name})
                    break
                try:
                    call()
                    steps.append(name)
                except (BankError, httpx.HTTPError) as exc:
                    log.warning("bank release step failed", extra={"link_id": rel.link_id, "step": name,
                                                                   "error": type(exc).__name__})
    return done


def _revoke_quietly(tid: TIDClient, token: str | None) -> None:
    if not token:
        return
    try:
        tid.revoke(token, "refresh_token")
    except (BankError, httpx.HTTPError) as exc:
        log.warning("revoke failed", extra={"error": type(exc).__name__})


def _webhook_blocker(ctx, link: BankLink) -> str | None:
    """What keeps us from asking for a webhook at all: the access was not granted, or no e-mail to give."""
    if link.kind != "tid":
        return "cabinet_token"  # its accesses are not known to us (no introspection for cabinet tokens)
    if company_scope(link.inn, link.kpp, WEBHOOKS_SCOPE) not in (link.scopes or []):
        return "scope"  # the consent (as introspected at link time) did not include «Управление вебхуками»
    if not ctx.settings.operator_email:
        return "email"
    return None


def webhook_off_reason(ctx, link: BankLink) -> str | None:
    """Why the bank does not push operations to us for this link: cabinet_token | scope | email | refused; None
    when it does."""
    if link.webhook_id:
        return None
    return _webhook_blocker(ctx, link) or "refused"


def subscribe_webhook(ctx, link_id: int) -> bool:
    """Ask T-Bank to push oper-feed-operation to us (a trigger only; polling stays the safety net).

    developer.tbank.ru/docs/api/add-webhook: POST /api/v1/webhook?eventType=oper-feed-operation with `url`,
    `email` (required) and `hasSignature` (required), by a token with «Управление вебхуками». Whatever stops
    it is logged and shown on the admin page as "live notifications off, polling every N s"."""
    with ctx.db.session() as s:
        link = s.get(BankLink, link_id)
        reason = _webhook_blocker(ctx, link)
    if reason is not None:
        log.warning("webhook not subscribed", extra={"link_id": link_id, "reason": reason})
        return False
    secret = secrets.token_urlsafe(32)
    try:
        webhook_id = bank_api(ctx, link_id).subscribe_webhook(ctx.public_url(f"/bank/webhook/{link_id}"), secret,
                                                              email=ctx.settings.operator_email)
    except BankError as exc:
        log.warning("webhook subscription refused", extra={"link_id": link_id, "error": type(exc).__name__,
                                                           "code": getattr(exc, "error_code", None)})
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
