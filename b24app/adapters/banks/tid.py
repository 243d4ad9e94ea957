"""T-ID (T-Business ID) OAuth client: authorize URL with PKCE, code exchange, refresh, introspect, revoke."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import httpx
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from .errors import BankUnavailable, InvalidClient, BankInvalidGrant, TIDError

STATEMENT_SCOPE = "bank-statements/get"
ACCOUNTS_SCOPE = "bank-accounts/get"
COMPANY_SCOPE = "company-info/get"
# The access «Управление вебхуками» that add-webhook needs (developer.tbank.ru/docs/api/add-webhook). The docs
# name it only by that label; the machine string in the opensme/inn/[..]/kpp/[..]/ format is our assumption,
# shared with the sandbox. Not granted → no webhook; polling alone finds the payments.
WEBHOOKS_SCOPE = "webhooks/manage"


def company_scope(inn: str, kpp: str | None, suffix: str) -> str:
    """Scope string T-ID grants for one company, e.g. opensme/inn/[INN]/kpp/[KPP]/bank-statements/get."""
    return f"opensme/inn/[{inn}]/kpp/[{kpp or '0'}]/{suffix}"


def new_code_verifier() -> str:
    """A fresh PKCE code_verifier (48 random URL-safe characters)."""
    return generate_token(48)


@dataclass(frozen=True)
class TokenSet:
    """Tokens from /auth/token; repr never shows the secrets."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime
    scope: tuple[str, ...]

    def expires_within(self, seconds: float, now: datetime | None = None) -> bool:
        now = now or datetime.now(timezone.utc)
        return self.expires_at - now <= timedelta(seconds=seconds)

    def has_scope(self, inn: str, kpp: str | None, suffix: str) -> bool:
        return company_scope(inn, kpp, suffix) in self.scope


@dataclass(frozen=True)
class Introspection:
    """Answer of /auth/introspect: whether the token lives and which scopes it carries."""

    active: bool
    scopes: tuple[str, ...] = ()
    client_id: str | None = None
    sub: str | None = None
    token_type: str | None = None
    expires_at: datetime | None = None

    def has_scope(self, inn: str, kpp: str | None, suffix: str) -> bool:
        return self.active and company_scope(inn, kpp, suffix) in self.scopes

    def has_statement_scope(self, inn: str, kpp: str | None) -> bool:
        return self.has_scope(inn, kpp, STATEMENT_SCOPE)

    def has_accounts_scope(self, inn: str, kpp: str | None) -> bool:
        return self.has_scope(inn, kpp, ACCOUNTS_SCOPE)


class TIDClient:
    """Talks to id.tbank.ru (or the sandbox) with HTTP Basic client auth; never retries (refresh tokens rotate)."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        http: httpx.Client | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self._http = http or httpx.Client(timeout=httpx.Timeout(20.0, connect=10.0))
        self._now = now or (lambda: datetime.now(timezone.utc))

    def __repr__(self) -> str:
        return f"TIDClient({self.base_url!r}, client_id={self.client_id!r})"

    def authorization_url(
        self, redirect_uri: str, state: str, inn: str | None, kpp: str | None, code_verifier: str | None = None
    ) -> str:
        """URL of the T-ID sign-in page for this company (kpp "0" when none); PKCE S256 when a verifier is given."""
        params: list[tuple[str, str]] = [
            ("client_id", self.client_id),
            ("redirect_uri", redirect_uri),
            ("state", state),
            ("response_type", "code"),
        ]
        if inn:
            params.append(("scope_parameters", json.dumps({"inn": inn, "kpp": kpp or "0"}, separators=(",", ":"))))
        if code_verifier:
            params += [("code_challenge", create_s256_code_challenge(code_verifier)), ("code_challenge_method", "S256")]
        return add_params_to_uri(f"{self.base_url}/auth/authorize", params)

    def _post(self, path: str, data: dict[str, str]) -> httpx.Response:
        try:
            return self._http.post(
                f"{self.base_url}{path}", data=data, auth=httpx.BasicAuth(self.client_id, self._secret),
                headers={"Accept": "application/json"},
            )
        except httpx.TransportError as exc:
            raise BankUnavailable(f"T-ID unreachable: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _raise_for_error(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code < 400 and isinstance(body, dict):
            return body
        if not isinstance(body, dict) or "error" not in body:
            raise TIDError("server_error", f"HTTP {response.status_code} from T-ID", status=response.status_code)
        error, description = str(body["error"]), body.get("error_description")
        cls = {"invalid_grant": BankInvalidGrant, "invalid_client": InvalidClient}.get(error, TIDError)
        raise cls(error, description, status=response.status_code)

    def _token_set(self, body: dict[str, Any]) -> TokenSet:
        if not body.get("access_token"):
            raise TIDError("server_error", "token response without access_token")
        scope = body.get("scope") or ""
        scopes = tuple(scope.split()) if isinstance(scope, str) else tuple(scope)
        return TokenSet(
            access_token=body["access_token"],
            refresh_token=body.get("refresh_token"),
            expires_at=self._now() + timedelta(seconds=int(body.get("expires_in") or 0)),
            scope=scopes,
        )

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str | None = None) -> TokenSet:
        """Trade the authorization code from the callback for tokens (single use)."""
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            data["code_verifier"] = code_verifier
        return self._token_set(self._raise_for_error(self._post("/auth/token", data)))

    def refresh(self, refresh_token: str) -> TokenSet:
        """Rotate: returns a new access AND refresh token; the old refresh token is dead afterwards."""
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return self._token_set(self._raise_for_error(self._post("/auth/token", data)))

    def introspect(self, access_token: str) -> Introspection:
        """Which scopes a token really carries (check right after the exchange)."""
        body = self._raise_for_error(self._post("/auth/introspect", {"token": access_token}))
        if not body.get("active"):
            return Introspection(active=False)
        scope = body.get("scope") or []
        exp = body.get("exp")
        return Introspection(
            active=True,
            scopes=tuple(scope.split()) if isinstance(scope, str) else tuple(scope),
            client_id=body.get("client_id"),
            sub=body.get("sub"),
            token_type=body.get("token_type"),
            expires_at=datetime.fromtimestamp(int(exp), timezone.utc) if exp else None,
        )

    def revoke(self, token: str, hint: str = "refresh_token") -> None:
        """Revoke a token; revoking the refresh token also ends its access tokens."""
        self._raise_for_error(self._post("/auth/revoke", {"token": token, "token_type_hint": hint}))
