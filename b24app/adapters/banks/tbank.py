"""T-Bank Business API client (accounts, company, statement with cursors, webhooks) with retries and typed errors."""
from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping

import httpx

from b24app.backoff import Backoff
from .errors import BankAPIError, BankUnavailable, InvalidData, MalformedOperation, api_error_class
from .operations import BankOperation, currency_alpha, parse_amount, parse_operation

log = logging.getLogger(__name__)

STATUSES = ("All", "Authorization", "Transaction")


@dataclass(frozen=True)
class AccountInfo:
    """One account from GET /api/v4/bank-accounts."""

    account_number: str
    name: str
    currency: str
    status: str
    account_type: str
    main: bool
    bank_bik: str
    balance: Decimal | None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def parse_account(d: Mapping[str, Any]) -> AccountInfo:
    """Typed account from the bank's JSON; raises MalformedOperation-style BankError on garbage."""
    if not isinstance(d, Mapping) or not d.get("accountNumber"):
        raise MalformedOperation("bank account without accountNumber", field="accountNumber")
    balance_obj = d.get("balance") if isinstance(d.get("balance"), Mapping) else {}
    raw_balance = balance_obj.get("balance")
    balance = None
    if raw_balance is not None:
        balance = parse_amount(raw_balance, "balance.balance", negative=True)
    return AccountInfo(
        account_number=str(d["accountNumber"]),
        name=str(d.get("name") or ""),
        currency=currency_alpha(d.get("currency") or "643"),
        status=str(d.get("status") or ""),
        account_type=str(d.get("accountType") or ""),
        main=str(d.get("mainFlag") or "").upper() == "Y",
        bank_bik=str(d.get("bankBik") or ""),
        balance=balance,
        raw=dict(d),
    )


def iso_utc(moment: datetime) -> str:
    """UTC ISO-8601 with a Z, as the statement method expects; naive datetimes are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timezone-aware datetime required")
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class BankAPI:
    """Client of business.tbank.ru/openapi (base_url ends with /openapi; the sandbox serves the same paths).

    `token(force_refresh)` supplies the Bearer token; after a 401 it is called once with True and the
    request is retried once. 429, 5xx and connection errors are retried with jittered exponential back-off
    (at most `max_retries` times; POSTs are retried only on 429, which the bank rejects before acting).
    """

    def __init__(
        self,
        base_url: str,
        token: Callable[[bool], str],
        *,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._http = http or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0))
        self._sleep = sleep
        self.max_retries = max_retries
        self._backoff = Backoff(backoff_base, backoff_cap, jitter=0.5)
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"BankAPI({self.base_url!r})"

    # ---- transport ----
    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self._backoff.cap * 4)
        return self._backoff.delay(attempt, self._rng.random)

    @staticmethod
    def _error(response: httpx.Response, request_id: str) -> BankAPIError:
        try:
            body = response.json()
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        cls = api_error_class(response.status_code)
        return cls(
            str(body.get("errorMessage") or response.reason_phrase or f"HTTP {response.status_code}"),
            status=response.status_code,
            error_id=body.get("errorId"),
            error_code=body.get("errorCode"),
            request_id=response.headers.get("X-Request-Id") or request_id,
            details=body.get("errorDetails"),
        )

    def _request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
    ) -> Any:
        idempotent = method in ("GET", "DELETE", "HEAD")
        attempt = 0
        refreshed = False
        force = False
        while True:
            request_id = str(uuid.uuid4())
            headers = {
                "Authorization": f"Bearer {self._token(force)}",
                "X-Request-Id": request_id,
                "Accept": "application/json",
            }
            force = False
            try:
                response = self._http.request(method, self.base_url + path, params=params, json=json, headers=headers)
            except httpx.TransportError as exc:
                if idempotent and attempt < self.max_retries:
                    delay = self._delay(attempt, None)
                    log.info("bank %s %s: %s, retry in %.2fs", method, path, type(exc).__name__, delay)
                    self._sleep(delay)
                    attempt += 1
                    continue
                raise BankUnavailable(
                    f"bank unreachable: {type(exc).__name__}: {exc}", request_id=request_id,
                ) from exc
            status = response.status_code
            if status == 401 and not refreshed:
                refreshed = force = True
                continue
            retryable = status == 429 or (status >= 500 and idempotent)
            if retryable and attempt < self.max_retries:
                delay = self._delay(attempt, response.headers.get("Retry-After"))
                log.info("bank %s %s: HTTP %s, retry in %.2fs", method, path, status, delay)
                self._sleep(delay)
                attempt += 1
                continue
            if status >= 400:
                raise self._error(response, request_id)
            if not response.content:
                return None
            try:
                return response.json(parse_float=Decimal)
            except ValueError as exc:
                raise BankAPIError(
                    "bank answered with something that is not JSON", status=status, request_id=request_id,
                ) from exc

    # ---- methods ----
    def accounts(self) -> list[AccountInfo]:
        """All accounts of the company the token belongs to."""
        body = self._request("GET", "/api/v4/bank-accounts")
        if not isinstance(body, list):
            raise BankAPIError("bank-accounts: expected a JSON array")
        return [parse_account(item) for item in body]

    def company(self) -> dict[str, Any]:
        """Company card (name, requisites.inn/kpp, ...)."""
        body = self._request("GET", "/api/v1/company")
        if not isinstance(body, dict):
            raise BankAPIError("company: expected a JSON object")
        return body

    def statement(
        self,
        account_number: str,
        since: datetime,
        until: datetime | None = None,
        status: str = "Transaction",
        limit: int = 1000,
        on_malformed: Callable[[MalformedOperation, Any], None] | None = None,
    ) -> Iterator[BankOperation]:
        """Operations with since <= operationDate < until, following nextCursor; each operationId yielded once.

        Stops on an empty nextCursor or on a cursor already seen (a bank loop would otherwise never end).
        A malformed operation raises MalformedOperation, unless `on_malformed(error, item)` is given: then
        it is reported there and the rest of the statement still comes through.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        if not 1 <= limit <= 5000:
            raise ValueError("limit must be within 1..5000")
        params: dict[str, Any] = {
            "accountNumber": account_number, "from": iso_utc(since), "operationStatus": status, "limit": limit,
        }
        if until is not None:
            params["to"] = iso_utc(until)
        seen_cursors: set[str] = set()
        seen_ids: set[str] = set()
        while True:
            page = self._request("GET", "/api/v1/statement", params=params)
            if not isinstance(page, dict) or not isinstance(page.get("operations", []), list):
                raise BankAPIError("statement: expected {operations: [...]}")
            for item in page.get("operations", []):
                try:
                    operation = parse_operation(item)
                except MalformedOperation as exc:
                    if on_malformed is None:
                        raise
                    on_malformed(exc, item)
                    continue
                if operation.operation_id in seen_ids:
                    continue
                seen_ids.add(operation.operation_id)
                yield operation
            cursor = page.get("nextCursor")
            if not cursor:
                return
            if cursor in seen_cursors:
                log.warning("statement %s: bank repeated cursor, stopping", account_number)
                return
            seen_cursors.add(cursor)
            params = {**params, "cursor": cursor}

    def subscribe_webhook(
        self, url: str, secret: str, *, email: str | None = None, auth_type: str = "Bearer",
        has_signature: bool = False,
    ) -> str:
        """Subscribe `url` to oper-feed-operation; the bank will send `Authorization: <auth_type> <secret>`."""
        body: dict[str, Any] = {"url": url, "authType": auth_type, "authSecret": secret, "hasSignature": has_signature}
        if email:
            body["email"] = email
        answer = self._request("POST", "/api/v1/webhook", params={"eventType": "oper-feed-operation"}, json=body)
        if not isinstance(answer, dict) or not answer.get("id"):
            raise InvalidData("webhook: the bank did not return an id")
        return str(answer["id"])

    def list_webhooks(self) -> list[dict[str, Any]]:
        """Webhooks of the company (without their secrets)."""
        body = self._request("GET", "/api/v1/webhook")
        return list(body or [])

    def delete_webhook(self, webhook_id: str) -> None:
        """Remove a webhook subscription."""
        self._request("DELETE", f"/api/v1/webhook/{webhook_id}")
