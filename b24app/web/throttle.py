"""Unauthenticated requests that cost a Bitrix24 call (placement POSTs, the install page, install and update
events) are rationed before they reach Bitrix24: failed verifications per client address and per member_id,
and the same bad credential is refused from a short negative cache instead of being asked about again. A
rate limit answered by Bitrix24 while verifying is "try again", not a failed login.

Built on `limits` (the engine of Flask-Limiter): moving windows in this process's memory by default, or in a
store all processes share (B24APP_RATELIMIT_STORAGE_URI=redis://...). Only attempts that asked Bitrix24 and
failed are counted; well-formed requests of real users pass untouched."""
from __future__ import annotations

import hashlib
import logging
import math
import time
from contextlib import contextmanager
from typing import Iterator

from flask import current_app, request
from limits import parse_many
from limits.errors import ConfigurationError
from limits.storage import MovingWindowSupport, storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from werkzeug.middleware.proxy_fix import ProxyFix

from b24app.adapters.bitrix.errors import OperationTimeLimit, QueryLimitExceeded
from ..config import ConfigError

log = logging.getLogger("b24app.throttle")
BUSY_RETRY_AFTER = 5  # seconds: Bitrix24's bucket drains 2 requests/s, so a few seconds free a slot
# Refusals raised before any call to Bitrix24: cheap, so not counted.
FREE_REASONS = {"missing_fields", "unknown_portal", "malformed", "untrusted_server"}
BUSY_CAUSES = (QueryLimitExceeded, OperationTimeLimit)
# The negative cache keeps the refusal's reason as a number (stores count integers); others come back as the
# caller's default reason.
CACHED_REASONS = ("invalid_auth", "invalid_token", "member_mismatch", "domain_mismatch", "foreign_app", "not_admin",
                  "already_installed")


class TryLater(Exception):
    """Not now: this client or portal failed too often lately (429), or Bitrix24 asked us to slow down (503)."""

    def __init__(self, reason: str, status: int, retry_after: int):
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, max(1, retry_after)

    def headers(self) -> dict:
        return {"Retry-After": str(self.retry_after)}


class Throttle:
    def __init__(self, settings):
        try:
            self.per_ip = parse_many(settings.ratelimit_failures_per_ip)
            self.per_member = parse_many(settings.ratelimit_failures_per_member)
        except ValueError as exc:
            raise ConfigError(f"B24APP_RATELIMIT_FAILURES_PER_IP/_PER_MEMBER: {exc}") from exc
        try:
            self.storage = storage_from_string(settings.ratelimit_storage_uri)
        except ConfigurationError as exc:  # unknown scheme, or its driver (redis, pymemcache) not installed
            raise ConfigError(f"B24APP_RATELIMIT_STORAGE_URI: {exc}") from exc
        moving = isinstance(self.storage, MovingWindowSupport)
        self.window = (MovingWindowRateLimiter if moving else FixedWindowRateLimiter)(self.storage)
        self.negative_ttl = settings.ratelimit_negative_ttl

    def _limits(self, member_id: str):
        for item in self.per_ip:
            yield item, ("verify-ip", request.remote_addr or "-")
        for item in self.per_member:
            yield item, ("verify-member", member_id)

    @staticmethod
    def _negative_key(member_id: str, credential: str) -> str:
        # Tokens never reach the store (it may be shared): only a hash of the pair.
        return "b24app/bad-credential/" + hashlib.sha256(f"{member_id}\0{credential}".encode()).hexdigest()[:40]

    def _retry_after(self, member_id: str) -> int | None:
        """Seconds until this client and this member_id may try again, or None when they may now."""
        waits = []
        for item, ids in self._limits(member_id):
            if not self.window.test(item, *ids):
                reset = self.window.get_window_stats(item, *ids).reset_time
                waits.append(math.ceil(reset - time.time()))
        return max(waits) if waits else None

    @contextmanager
    def attempt(self, member_id: str, credential: str, rejected: type[Exception], cached_reason: str) -> Iterator[None]:
        """Around one verification that may ask Bitrix24 about `credential` for `member_id` (`credential`: all
        that the answer depends on besides member_id, e.g. the token, the claimed domain and OAuth server):
        - the same pair failed within negative_ttl: raise `rejected(reason)` again without asking;
        - this client or member_id failed too often: TryLater 429;
        - Bitrix24 answered with its rate limit: TryLater 503 (not counted, not cached), and so does every
          attempt for this member_id in the next BUSY_RETRY_AFTER seconds, without asking;
        - a `rejected` that cost a call: counted against both, and the pair remembered."""
        neg = self._negative_key(member_id, credential) if credential else ""
        known = self.storage.get(neg) if neg else 0
        if known:
            raise rejected(CACHED_REASONS[known - 1] if known <= len(CACHED_REASONS) else cached_reason)
        busy = "b24app/busy/" + hashlib.sha256(member_id.encode()).hexdigest()[:40]
        if member_id and self.storage.get(busy):  # Bitrix24 said "too many requests" a moment ago
            raise TryLater("try_again", 503, math.ceil(self.storage.get_expiry(busy) - time.time()))
        wait = self._retry_after(member_id)
        if wait is not None:
            log.warning("verification throttled", extra={"member_id": member_id[:64], "ip": request.remote_addr})
            raise TryLater("too_many_attempts", 429, wait)
        try:
            yield
        except rejected as exc:
            if isinstance(exc.__cause__, BUSY_CAUSES):
                # Not the caller's fault, so not counted; but nobody asks this portal again for a few seconds,
                # or forged requests would keep its bucket full for everyone.
                if member_id:
                    self.storage.incr(busy, BUSY_RETRY_AFTER)
                raise TryLater("try_again", 503, BUSY_RETRY_AFTER) from exc
            reason = getattr(exc, "reason", None)
            if reason not in FREE_REASONS:
                # A verdict about the credential is remembered; a server error or timeout is not a verdict.
                if neg and not getattr(exc.__cause__, "retryable", False):
                    code = CACHED_REASONS.index(reason) + 1 if reason in CACHED_REASONS else len(CACHED_REASONS) + 1
                    self.storage.incr(neg, self.negative_ttl, amount=code)
                for item, ids in self._limits(member_id):
                    self.window.hit(item, *ids)
            raise


def throttle() -> Throttle:
    return current_app.extensions["b24app.throttle"]


def verify_placement(ctx, extra=None):
    """`security.verify_placement`, rationed: a failed AUTH_ID counts against the client and the member_id."""
    from . import security

    form = request.form
    with throttle().attempt(form.get("member_id", "")[:64], form.get("AUTH_ID", "")[:256],
                            security.PlacementRejected, "invalid_auth"):
        return security.verify_placement(ctx, extra)


def install_attempt(req):
    """`attempt` for an install request: app.info's verdict depends on the token, the claimed domain and server
    (the portal's address is taken from the OAuth server's answer, not from the request)."""
    from b24app.portals.install import InstallRejected

    credential = "\0".join((req.access_token, req.domain, req.server_endpoint))
    return throttle().attempt(req.member_id, credential, InstallRejected, "invalid_token")


def page(exc: TryLater):
    """The answer for a page (the tab, the app page): a clear error page with Retry-After, which the portal
    named by member_id may frame (it holds no data), so the user sees it inside Bitrix24."""
    from flask import render_template

    from .common import get_ctx
    from .security import allow_framing

    portal = get_ctx().portals.find(request.form.get("member_id", "")[:64])
    if portal is not None and portal.status == "installed":
        allow_framing(portal)
    return render_template("error.html", reason=exc.reason), exc.status, exc.headers()


def init_app(app, settings) -> None:
    app.extensions["b24app.throttle"] = Throttle(settings)
    if settings.trusted_proxies > 0:
        # Behind nginx (which overwrites X-Forwarded-For with the peer it saw) the client is the last entry;
        # without a proxy the header is the client's own claim and is ignored.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)
