"""Tochka Bank Open API client: OAuth consent flow, customers, accounts, statements, webhooks, webhook JWTs.

What each call relies on, with sources, is in docs/banks/tochka.md. The base URLs are settings
(B24APP_TOCHKA_AUTH_URL = https://enter.tochka.com/connect, B24APP_TOCHKA_API_URL = https://enter.tochka.com/uapi);
the sandbox (b24app/sandbox/tochka/app.py) serves the same paths.
"""
from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlencode

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from b24app.backoff import Backoff
from .errors import BankAPIError, BankUnavailable, BankInvalidGrant, MalformedOperation, TIDError, api_error_class
from .operations import BankOperation, OPERATION_ID_MAX, currency_alpha, parse_amount, parse_bank_datetime

log = logging.getLogger(__name__)

# developers.tochka.com/docs/tochka-api/algoritm-raboty-po-oauth-2.0 (scope of the client_credentials token that
# creates consents; permissions of the consent the client signs). ManageWebhookData: «Вебхуки» page.
SCOPE = "accounts balances customers statements"
PERMISSIONS = ("ReadAccountsBasic", "ReadAccountsDetail", "ReadStatements", "ReadTransactionsBasic",
               "ReadTransactionsCredits", "ReadTransactionsDetail", "ReadCustomerData", "ManageWebhookData")
REQUIRED = ("ReadAccountsBasic", "ReadStatements")  # without them nothing can be read
WEBHOOK_EVENT = "incomingPayment"
_BACKOFF = Backoff(base=0.2, cap=2.0)  # seconds before a GET is retried, by attempt


@dataclass(frozen=True)
class TochkaTokens:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True)
class TochkaCustomer:
    customer_code: str
    inn: str
    kpp: str
    name: str
    customer_type: str


@dataclass(frozen=True)
class TochkaAccount:
    account_id: str          # "<20-digit number>/<BIC>", as the API names an account
    account_number: str
    currency: str
    customer_code: str
    name: str
    status: str


class TochkaOAuth:
    """The OAuth server (…/connect): client_credentials for consents, the authorize URL, code and refresh grants."""

    def __init__(self, base_url: str, client_id: str, client_secret: str, *, http: httpx.Client | None = None,
                 now: Callable[[], datetime] | None = None):
        self.base_url = base_url.rstrip("/")
        self.client_id, self.client_secret = client_id, client_secret
        self.http = http or httpx.Client(timeout=20)
        self.now = now or (lambda: datetime.now(timezone.utc))

    def _grant(self, form: dict[str, str]) -> TochkaTokens:
        try:
            r = self.http.post(f"{self.base_url}/token", data={"client_id": self.client_id,
                                                                "client_secret": self.client_secret, **form})
        except httpx.HTTPError as exc:
            raise BankUnavailable(f"Tochka token endpoint unreachable: {type(exc).__name__}") from exc
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            error = str(body.get("error") or f"http_{r.status_code}") if isinstance(body, dict) else "bad_json"
            cls = BankInvalidGrant if error == "invalid_grant" else TIDError
            raise cls(error, body.get("error_description") if isinstance(body, dict) else None, status=r.status_code)
        expires_in = body.get("expires_in")
        ttl = int(expires_in) if isinstance(expires_in, (int, str)) and str(expires_in).isdigit() else 3600
        refresh = body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None
        return TochkaTokens(body["access_token"], refresh, self.now() + timedelta(seconds=ttl))

    def app_token(self) -> str:
        return self._grant({"grant_type": "client_credentials", "scope": SCOPE}).access_token

    def authorization_url(self, redirect_uri: str, state: str, consent_id: str) -> str:
        return f"{self.base_url}/authorize?" + urlencode({
            "client_id": self.client_id, "response_type": "code", "state": state, "redirect_uri": redirect_uri,
            "scope": SCOPE, "consent_id": consent_id})

    def exchange_code(self, code: str, redirect_uri: str) -> TochkaTokens:
        return self._grant({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                            "scope": SCOPE})

    def refresh(self, refresh_token: str) -> TochkaTokens:
        return self._grant({"grant_type": "refresh_token", "refresh_token": refresh_token})


class TochkaAPI:
    """The Open API (…/uapi) with a bearer token; `token(force_refresh)` as for T-Bank's BankAPI.

    A 401 refreshes once; 429, 5xx and connection errors are retried (GETs, and POSTs on 429 only)."""

    def __init__(self, base_url: str, token: Callable[[bool], str], *, http: httpx.Client | None = None,
                 max_retries: int = 3, poll_interval: float = 0.3, poll_attempts: int = 40,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.http = http or httpx.Client(timeout=30)
        self.max_retries, self.poll_interval, self.poll_attempts = max_retries, poll_interval, poll_attempts
        self.sleep = sleep

    def _request(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None) -> Any:
        refreshed = False
        attempt = 0
        while True:
            headers = {"Authorization": f"Bearer {self.token(refreshed)}", "Accept": "application/json"}
            try:
                r = self.http.request(method, f"{self.base_url}{path}", json=json_body, params=params,
                                      headers=headers)
            except httpx.HTTPError as exc:
                if method == "GET" and attempt < self.max_retries:
                    attempt += 1
                    self.sleep(_BACKOFF.delay(attempt))
                    continue
                raise BankUnavailable(f"Tochka unreachable: {type(exc).__name__}") from exc
            if r.status_code == 401 and not refreshed:
                refreshed = True
                continue
            if (r.status_code == 429 or (r.status_code >= 500 and method == "GET")) and attempt < self.max_retries:
                attempt += 1
                self.sleep(_BACKOFF.delay(attempt))
                continue
            if r.status_code >= 400:
                try:
                    body = r.json()
                except ValueError:
                    body = {}
                message = str(body.get("message") or body.get("Message") or r.reason_phrase) if isinstance(
                    body, dict) else r.reason_phrase
                code = str(body.get("code") or body.get("Code") or "") if isinstance(body, dict) else ""
                raise api_error_class(r.status_code)(message, status=r.status_code, error_code=code or None)
            if not r.content:
                return {}
            try:
                return r.json()
            except ValueError as exc:
                raise BankAPIError(f"{path}: not JSON") from exc

    @staticmethod
    def _data(body: Any, key: str) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("Data"), dict):
            raise BankAPIError(f"expected {{Data: {{{key}: ...}}}}")
        return body["Data"].get(key)

    def create_consent(self, permissions: tuple[str, ...] = PERMISSIONS) -> str:
        """POST /v1.0/consents with the app's client_credentials token; returns the consentId to sign."""
        body = self._request("POST", "/v1.0/consents", json_body={"Data": {"permissions": list(permissions)}})
        consent_id = self._data(body, "consentId")
        if not isinstance(consent_id, str) or not consent_id:
            raise BankAPIError("consents: no consentId")
        return consent_id

    def consent(self, consent_id: str) -> dict:
        body = self._request("GET", f"/v1.0/consents/{consent_id}")
        data = body.get("Data") if isinstance(body, dict) else None
        return data if isinstance(data, dict) else {}

    def customers(self) -> list[TochkaCustomer]:
        items = self._data(self._request("GET", "/open-banking/v1.0/customers"), "Customer") or []
        out = []
        for c in items if isinstance(items, list) else []:
            if isinstance(c, dict) and c.get("customerCode"):
                out.append(TochkaCustomer(str(c["customerCode"]), str(c.get("taxCode") or ""),
                                          str(c.get("kpp") or "0") or "0",
                                          str(c.get("shortName") or c.get("fullName") or ""),
                                          str(c.get("customerType") or "")))
        return out

    def accounts(self) -> list[TochkaAccount]:
        items = self._data(self._request("GET", "/open-banking/v1.0/accounts"), "Account") or []
        out = []
        for a in items if isinstance(items, list) else []:
            if not isinstance(a, dict) or not isinstance(a.get("accountId"), str):
                continue
            number = a["accountId"].split("/", 1)[0]
            if not number.isdigit() or len(number) > 22:
                continue
            details = a.get("accountDetails") if isinstance(a.get("accountDetails"), dict) else {}
            name = details.get("name") or a.get("name") or ""
            out.append(TochkaAccount(a["accountId"], number, currency_alpha(a.get("currency") or "RUB"),
                                     str(a.get("customerCode") or ""), str(name)[:255], str(a.get("status") or "")))
        return out

    def statement(self, account_id: str, since: datetime, until: datetime, *,
                  on_malformed: Callable[[MalformedOperation, Any], None] | None = None, **_ignored
                  ) -> Iterator[BankOperation]:
        """Init Statement for [since, until] (Tochka takes dates, so whole Moscow days), wait until Ready, and
        yield its transactions as BankOperations (source "tochka")."""
        number = account_id.split("/", 1)[0]
        start, end = (m.astimezone(MSK_TZ).date().isoformat() for m in (since, until))
        body = self._request("POST", "/open-banking/v1.0/statements", json_body={
            "Data": {"Statement": {"accountId": account_id, "startDateTime": start, "endDateTime": end}}})
        st = self._data(body, "Statement")
        statement_id = st.get("statementId") if isinstance(st, dict) else None
        if not isinstance(statement_id, str) or not statement_id:
            raise BankAPIError("Init Statement: no statementId")
        for n in range(self.poll_attempts):
            got = self._data(self._request("GET", f"/open-banking/v1.0/accounts/{account_id}/statements/"
                                                  f"{statement_id}"), "Statement")
            item = got[0] if isinstance(got, list) and got and isinstance(got[0], dict) else {}
            if item.get("status") == "Ready":
                for tx in item.get("Transaction") or []:
                    try:
                        yield parse_transaction(tx, number)
                    except MalformedOperation as exc:
                        if on_malformed is None:
                            raise
                        on_malformed(exc, tx)
                return
            if item.get("status") == "Error":
                raise BankAPIError(f"statement {statement_id} failed at the bank")
            self.sleep(self.poll_interval)
        raise BankUnavailable(f"statement {statement_id} not ready after {self.poll_attempts} polls")

    def register_webhook(self, client_id: str, url: str) -> None:
        """PUT /webhook/v1.0/{client_id}: one URL per application for the listed events (Create Webhook)."""
        self._request("PUT", f"/webhook/v1.0/{client_id}", json_body={"webhooksList": [WEBHOOK_EVENT], "url": url})

    def webhooks(self, client_id: str) -> dict:
        body = self._request("GET", f"/webhook/v1.0/{client_id}")
        data = body.get("Data") if isinstance(body, dict) else None
        return data if isinstance(data, dict) else {}


MSK_TZ = timezone(timedelta(hours=3), "MSK")


def _side(tx: Mapping, *names: str) -> Mapping:
    for name in names:
        if isinstance(tx.get(name), Mapping):
            return tx[name]
    return {}


def parse_transaction(tx: Any, account_number: str) -> BankOperation:
    """One Transaction of a Ready statement as a BankOperation (field names: docs/banks/tochka.md, "Statement")."""
    if not isinstance(tx, Mapping):
        raise MalformedOperation(f"transaction: expected a JSON object, got {type(tx).__name__}")
    op_id = str(tx.get("transactionId") or tx.get("paymentId") or "").strip()
    if not op_id:
        raise MalformedOperation("transactionId: missing", field="transactionId")
    if len(op_id) > OPERATION_ID_MAX - 7 or "\x00" in op_id:
        raise MalformedOperation("transactionId: too long or with NUL", field="transactionId")
    direction = tx.get("creditDebitIndicator")
    if direction not in ("Credit", "Debit"):
        raise MalformedOperation(f"creditDebitIndicator: expected Credit or Debit, got {direction!r}",
                                 field="creditDebitIndicator")
    amount_obj = _side(tx, "Amount")
    amount = parse_amount(amount_obj.get("amount"), "Amount.amount")
    currency = currency_alpha(amount_obj.get("currency") or "RUB")
    if len(currency) != 3:
        raise MalformedOperation("Amount.currency: not a currency code", field="Amount.currency")
    status = str(tx.get("status") or "Booked")
    if status not in ("Booked", "Pending"):
        raise MalformedOperation(f"status: expected Booked or Pending, got {status!r}", field="status")
    is_credit = direction == "Credit"
    party = _side(tx, "DebtorParty") if is_credit else _side(tx, "CreditorParty")
    acct = _side(tx, "DebtorAccount") if is_credit else _side(tx, "CreditorAccount")
    when = parse_bank_datetime(tx.get("documentProcessDate"), "documentProcessDate")
    return BankOperation(
        operation_id=f"tochka:{op_id}", account_number=account_number, operation_date=when,
        status="Transaction" if status == "Booked" else "Authorization", is_credit=is_credit, amount=amount,
        currency=currency, purpose=str(tx.get("description") or "").strip(),
        document_number=str(tx.get("documentNumber") or "").strip(),
        payer_name=str(party.get("name") or "").strip(), payer_inn=str(party.get("inn") or "").strip(),
        payer_kpp=str(party.get("kpp") or "").strip(), payer_account=str(acct.get("identification") or "").strip(),
        doc_date=when, raw=dict(tx), source="tochka")


# -- webhook JWTs -----------------------------------------------------------------------------------------
class WebhookRejected(Exception):
    """A webhook body that is not a JWT signed by Tochka's key (reason: malformed | alg | signature)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def public_key_from_jwk(jwk: Mapping) -> rsa.RSAPublicKey:
    """An RSA public key from a JWK ({"kty": "RSA", "n", "e"}) or the first RSA key of a JWKS."""
    if isinstance(jwk.get("keys"), list):
        jwk = next((k for k in jwk["keys"] if isinstance(k, Mapping) and k.get("kty") == "RSA"), {})
    if jwk.get("kty") != "RSA" or not jwk.get("n") or not jwk.get("e"):
        raise ValueError("not an RSA JWK")
    n = int.from_bytes(_b64url(str(jwk["n"])), "big")
    e = int.from_bytes(_b64url(str(jwk["e"])), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def verify_webhook(token: str, keys: list[rsa.RSAPublicKey]) -> dict:
    """Claims of a webhook JWT if its RS256 signature verifies with one of `keys`; else WebhookRejected.

    Only RS256 is accepted (the «Вебхуки» page), so "none"/HS256 tokens and key confusion are refused."""
    parts = token.strip().split(".")
    if len(parts) != 3 or not all(parts[:2]) or len(token) > 64_000:
        raise WebhookRejected("malformed")
    try:
        header = json.loads(_b64url(parts[0]))
        signature = _b64url(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("malformed") from None
    if not isinstance(header, dict) or header.get("alg") != "RS256":
        raise WebhookRejected("alg")
    signed = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
    for key in keys:
        try:
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            break
        except InvalidSignature:
            continue
    else:
        raise WebhookRejected("signature")
    try:
        claims = json.loads(_b64url(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("malformed") from None
    if not isinstance(claims, dict):
        raise WebhookRejected("malformed")
    return claims
