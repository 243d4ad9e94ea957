"""Bitrix24 REST client over httpx: call, batch, paging, typed errors, pacing, refresh-once, rename."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from b24app.backoff import Backoff
from .errors import (AppNotInstalled, BitrixError, BitrixServerError, BitrixUnavailable, ExpiredToken, InvalidGrant,
                     OAuthError, PortalMovedTooOften, QueryLimitExceeded, OperationTimeLimit, error_from)
from .operating import OperatingLimits
from .pacing import Pacer
from .query import build_query

log = logging.getLogger("b24app.rest")
BATCH_LIMIT = 50
MAX_REDIRECTS = 3  # portal-rename hops followed for free within one call
REDIRECT_STATUSES = (301, 302, 307, 308)
_BACKOFF = Backoff(base=0.5, cap=30.0, jitter=0.5)              # seconds, by attempt - 1
_QUERY_LIMIT_BACKOFF = Backoff(base=1.0, cap=30.0, jitter=0.5)  # QUERY_LIMIT_EXCEEDED waits longer


@dataclass(frozen=True)
class PortalCredentials:
    member_id: str
    client_endpoint: str  # https://portal.bitrix24.ru/rest/
    server_endpoint: str  # https://oauth.bitrix.info/rest/
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    generation: int = 0


@dataclass(frozen=True)
class OAuthApp:
    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class TokenGrant:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int
    client_endpoint: str | None = None
    server_endpoint: str | None = None
    member_id: str | None = None


class CredentialStore(Protocol):
    """Where a portal's tokens live (the DB in the app, a dict in tests)."""

    def load(self, member_id: str) -> PortalCredentials: ...

    def refresh(self, member_id: str, stale: PortalCredentials,
                grant: Callable[[PortalCredentials], TokenGrant]) -> PortalCredentials:
        """Under a lock that holds across processes: if the stored pair is still `stale`, call `grant` and
        persist its pair before returning it; if another process already refreshed, return the stored pair."""
        ...

    def moved(self, member_id: str, client_endpoint: str) -> None: ...


def oauth_token_url(server_endpoint: str) -> str:
    """`https://oauth.bitrix.info/rest/` -> `https://oauth.bitrix.info/oauth/token/`."""
    parts = urlsplit(server_endpoint)
    return f"{parts.scheme}://{parts.netloc}/oauth/token/"


def request_refresh(http: httpx.Client, app: OAuthApp, creds: PortalCredentials) -> TokenGrant:
    """Exchange the refresh token at the portal's OAuth server (POST keeps the secret out of access logs)."""
    try:
        resp = http.post(oauth_token_url(creds.server_endpoint), data={
            "grant_type": "refresh_token", "client_id": app.client_id,
            "client_secret": app.client_secret, "refresh_token": creds.refresh_token})
    except httpx.HTTPError as exc:
        raise BitrixUnavailable("network_error", type(exc).__name__, method="oauth/token") from exc
    try:
        body = resp.json()
    except ValueError:
        raise BitrixServerError("bad_response", f"HTTP {resp.status_code}", resp.status_code, "oauth/token")
    if "error" in body:
        if body["error"] == "invalid_client":  # at a refresh: the app is gone from that portal
            raise AppNotInstalled("invalid_client", body.get("error_description", ""), resp.status_code, "oauth/token")
        raise error_from(body["error"], body.get("error_description", ""), resp.status_code, "oauth/token")
    if not body.get("access_token") or not body.get("refresh_token"):
        raise OAuthError("invalid_response", "token response without tokens", resp.status_code, "oauth/token")
    return TokenGrant(body["access_token"], body["refresh_token"], int(body.get("expires_in") or 3600),
                      body.get("client_endpoint"), body.get("server_endpoint"), body.get("member_id"))


@dataclass
class BatchResult:
    results: dict[str, Any]
    errors: dict[str, BitrixError]
    totals: dict[str, int]
    nexts: dict[str, int]

    def raise_first(self) -> None:
        if self.errors:
            raise next(iter(self.errors.values()))


class BitrixClient:
    """One portal's REST API. Thread-safe as long as `http` is (httpx.Client is)."""

    def __init__(self, member_id: str, store: CredentialStore, app: OAuthApp, http: httpx.Client,
                 pacer: Pacer, *, sleep: Callable[[float], None] = time.sleep, max_retries: int = 5,
                 retry_budget: float = 45.0, on_call: Callable[[str, int], None] | None = None,
                 operating: OperatingLimits | None = None):
        self.member_id = member_id
        self.operating = operating or OperatingLimits()
        self.store, self.app, self.http, self.pacer = store, app, http, pacer
        self._sleep, self.max_retries = sleep, max_retries
        self.retry_budget = retry_budget  # seconds of waiting between retries of one call, at most
        self.on_call = on_call
        self.calls = 0

    # -- public API -------------------------------------------------------------------------------
    def call(self, method: str, params: dict | None = None) -> Any:
        return self.call_raw(method, params)["result"]

    def call_raw(self, method: str, params: dict | None = None) -> dict:
        """Call `method`; on expired_token refresh once (persisted by the store) and retry once."""
        creds = self.store.load(self.member_id)
        try:
            return self._send(creds, method, params or {})
        except ExpiredToken:
            fresh = self.store.refresh(self.member_id, creds, lambda c: request_refresh(self.http, self.app, c))
            return self._send(fresh, method, params or {})

    def batch(self, commands: dict[str, tuple[str, dict]], *, halt: bool = False) -> BatchResult:
        """Run up to any number of commands, 50 per HTTP request; per-command errors come back typed."""
        out = BatchResult({}, {}, {}, {})
        items = list(commands.items())
        for start in range(0, len(items), BATCH_LIMIT):
            chunk = items[start:start + BATCH_LIMIT]
            cmd = {key: f"{method}?{build_query(params)}" if params else method for key, (method, params) in chunk}
            res = self.call("batch", {"halt": 1 if halt else 0, "cmd": cmd})
            methods = {key: method for key, (method, _) in chunk}
            out.results.update(as_dict(res.get("result")))
            for key, spent in as_dict(res.get("result_time")).items():
                if key in methods:  # limits.md: each sub-call is counted against its own method
                    self.operating.seen(self.member_id, methods[key], spent)
            for key, err in as_dict(res.get("result_error")).items():
                if isinstance(err, dict):
                    error = error_from(err.get("error", "ERROR"), err.get("error_description", ""),
                                       None, methods.get(key))
                    if isinstance(error, OperationTimeLimit) and key in methods:
                        error.reset_at = self.operating.block(self.member_id, methods[key])
                    out.errors[key] = error
            out.totals.update({k: int(v) for k, v in as_dict(res.get("result_total")).items()})
            out.nexts.update({k: int(v) for k, v in as_dict(res.get("result_next")).items()})
        return out

    def list_all(self, method: str, params: dict | None = None, *, items_key: str | None = None) -> Iterator[dict]:
        """Follow `next` through every page of a list method (pages of 50)."""
        params = dict(params or {})
        start = 0
        while True:
            body = self.call_raw(method, {**params, "start": start})
            result = body.get("result")
            rows = result.get(items_key) if items_key and isinstance(result, dict) else result
            yield from rows or []
            if body.get("next") is None:
                return
            start = int(body["next"])

    # -- transport --------------------------------------------------------------------------------
    def _send(self, creds: PortalCredentials, method: str, params: dict) -> dict:
        url = urljoin(creds.client_endpoint, f"{method}.json")
        payload = {**params, "auth": creds.access_token}
        attempt = 0
        redirects = 0
        waited = 0.0
        while True:
            attempt += 1
            self.pacer.acquire(self.member_id)
            started = time.monotonic()
            try:
                resp = self.http.post(url, json=payload, follow_redirects=False)
            except httpx.TimeoutException as exc:
                err: BitrixError = BitrixUnavailable("timeout", type(exc).__name__, None, method)
                resp = None
            except httpx.HTTPError as exc:
                err = BitrixUnavailable("network_error", type(exc).__name__, None, method)
                resp = None
            self.calls += 1
            if self.on_call:
                self.on_call(method, resp.status_code if resp is not None else 0)
            if resp is not None:
                log.debug("rest call", extra={"member_id": self.member_id, "method": method,
                                             "status": resp.status_code,
                                             "ms": round((time.monotonic() - started) * 1000)})
                moved_to = _moved_to(url, resp)
                if moved_to is not None:
                    # Portal renamed: re-POST the same body to the new address and remember it. Past
                    # MAX_REDIRECTS in one call a hop costs an attempt (with backoff) but still moves on: a
                    # portal renamed again and again is no reason to keep knocking at an address known gone.
                    url = moved_to
                    self.store.moved(self.member_id, url.rsplit("/", 1)[0] + "/")
                    redirects += 1
                    if redirects <= MAX_REDIRECTS:
                        attempt -= 1
                        continue
                    err = PortalMovedTooOften("too_many_redirects", f"HTTP {resp.status_code}", resp.status_code,
                                              method)
                else:
                    try:
                        body = resp.json()
                    except ValueError:
                        body = None
                    if resp.status_code < 300 and isinstance(body, dict) and "error" not in body:
                        if method != "batch":  # the outer batch is not counted (limits.md)
                            self.operating.seen(self.member_id, method, body.get("time"))
                        return body
                    if isinstance(body, dict) and "error" in body:
                        err = error_from(str(body["error"]), str(body.get("error_description", "")),
                                         resp.status_code, method)
                    else:
                        err = BitrixServerError("bad_response", f"HTTP {resp.status_code}", resp.status_code,
                                                method)
            if isinstance(err, OperationTimeLimit):
                # Blocked for minutes, not seconds: waiting here would hold a worker thread for nothing.
                err.reset_at = self.operating.block(self.member_id, method)
                raise err
            delay = self._backoff(attempt, err)
            if not err.retryable or attempt > self.max_retries or waited + delay > self.retry_budget:
                raise err
            waited += delay
            self._sleep(delay)

    @staticmethod
    def _backoff(attempt: int, err: BitrixError) -> float:
        policy = _QUERY_LIMIT_BACKOFF if isinstance(err, QueryLimitExceeded) else _BACKOFF
        return policy.delay(attempt - 1)


def as_dict(value) -> dict:
    """A batch's per-command map: PHP serialises an empty or list-shaped one as [] / a list."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


def _moved_to(url: str, resp: httpx.Response) -> str | None:
    """The absolute new address when `resp` says the portal moved (renamed), else None."""
    if resp.status_code in REDIRECT_STATUSES and resp.headers.get("location"):
        return urljoin(url, resp.headers["location"])
    return None


def call_with_token(http: httpx.Client, rest_base: str, access_token: str, method: str,
                    params: dict | None = None, *, on_moved: Callable[[str], None] | None = None) -> Any:
    """One call with a token that is not (yet) stored, e.g. the installer's AUTH_ID or a placement's.

    With `on_moved`, a portal-rename redirect is followed the way BitrixClient does (the same body re-POSTed,
    at most MAX_REDIRECTS hops) and `on_moved(new_rest_base)` is told the portal's new REST address for each
    hop; without it a redirect is an error."""
    url = urljoin(rest_base, f"{method}.json")
    payload = {**(params or {}), "auth": access_token}
    for hop in range(MAX_REDIRECTS + 1):
        try:
            resp = http.post(url, json=payload, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise BitrixUnavailable("network_error", type(exc).__name__, None, method) from exc
        moved_to = _moved_to(url, resp) if on_moved is not None and hop < MAX_REDIRECTS else None
        if moved_to is None:
            break
        url = moved_to
        on_moved(url.rsplit("/", 1)[0] + "/")
    try:
        body = resp.json()
    except ValueError:
        raise BitrixServerError("bad_response", f"HTTP {resp.status_code}", resp.status_code, method)
    if not isinstance(body, dict) or "error" in body or resp.status_code >= 300:
        body = body if isinstance(body, dict) else {}
        raise error_from(str(body.get("error", "bad_response")), str(body.get("error_description", "")),
                         resp.status_code, method)
    return body.get("result")


__all__ = ["BitrixClient", "BatchResult", "CredentialStore", "InvalidGrant", "OAuthApp", "PortalCredentials",
           "TokenGrant", "call_with_token", "oauth_token_url", "request_refresh"]
