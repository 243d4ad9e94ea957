"""In-memory, lock-protected state of the T-Bank sandbox (companies, tokens, operations, webhooks, faults)."""
from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

TBANK_BIC = "044525974"
TBANK_CORR = "30101810145250000974"
TBANK_NAME = 'АО "ТБанк"'
CURRENCY_NUMERIC = {"RUB": "643", "USD": "840", "EUR": "978", "CNY": "156"}
CURRENCY_IN_ACCOUNT = {"RUB": "810", "USD": "840", "EUR": "978", "CNY": "156"}

# Scope suffixes a partner may ask for, with the text of the consent screen.
SCOPE_LABELS = {
    "bank-accounts/get": "Счета — список счетов компании и остатки",
    "bank-statements/get": "Счета и выписки — информация об операциях компании",
    "company-info/get": "T-Business ID — информация о компании",
    # developer.tbank.ru/docs/api/add-webhook and /docs/intro/webhooks/webhook-methods: adding, listing and
    # deleting webhooks needs a token with the access «Управление вебхуками». The pages give only that label,
    # not the machine scope string; `webhooks/manage` in the company-scope format is the sandbox's guess.
    "webhooks/manage": "Управление вебхуками",
}
# Per-method RPS limits of the Business API as the method pages state them (tbank.md, "Rate limits
# collected"): statement 20, bank-accounts v4 6, company 6, add webhook 10 («Ограничение — 10 запросов в
# секунду», /docs/api/add-webhook). Listing/deleting webhooks: not captured, so only the sandbox-wide cap.
ENDPOINT_RPS = {
    "bank_api.statement": 20.0,
    "bank_api.bank_accounts": 6.0,
    "bank_api.company_info": 6.0,
    "bank_api.add_webhook": 10.0,
}
DEFAULT_SCOPES = tuple(SCOPE_LABELS)
FAULT_KINDS = (
    "rate_limit", "server_error", "timeout", "duplicate_webhook", "reidentify", "authorization_first", "shuffle_pages",
)
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def scope_string(inn: str, kpp: str, suffix: str) -> str:
    """Concrete T-Business ID scope for a company, e.g. opensme/inn/[7701234560]/kpp/[770101001]/bank-statements/get."""
    return f"opensme/inn/[{inn}]/kpp/[{kpp}]/{suffix}"


def iso_z(moment: datetime) -> str:
    """UTC ISO-8601 with a Z, to the second, as the bank writes it."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_amount(amount: Decimal) -> int | float:
    """A JSON number whose text is exactly the amount (float repr is shortest round-trip for ≤15 digits)."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def account_check_digit(bic: str, account: str) -> str:
    """Control key (9th digit) of a Russian account number for a bank BIC (Bank of Russia 1997 rule)."""
    digits = bic[-3:] + account[:8] + "0" + account[9:]
    weights = (7, 1, 3) * 8
    total = sum((int(d) * w) % 10 for d, w in zip(digits, weights))
    return str((total * 3) % 10)


@dataclass
class SandboxConfig:
    access_ttl: int = 1800
    rate_limit_rps: float = 20.0
    code_ttl: int = 60
    webhook_retry_delays: tuple[float, ...] = (0.2, 0.5, 1, 2)
    refresh_ttl: int = 365 * 24 * 3600
    static_ttl: int = 90 * 24 * 3600
    flow_ttl: int = 900
    fault_timeout: float = 30.0
    webhook_attempts: int = 5
    webhook_timeout: float = 5.0
    latency_ms: float = 0.0  # injected before every Business API answer (scale benchmarks)


@dataclass
class Account:
    number: str
    currency: str
    company: tuple[str, str]
    name: str
    created_on: datetime
    main: bool = False


@dataclass
class Company:
    inn: str
    kpp: str
    name: str
    phones: set[str] = field(default_factory=set)
    accounts: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.inn, self.kpp)


@dataclass
class PartnerClient:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    scopes: list[str]
    name: str


@dataclass
class AuthFlow:
    flow_id: str
    client_id: str
    redirect_uri: str
    state: str | None
    inn: str | None
    kpp: str | None
    code_challenge: str | None
    created_at: float
    step: str = "phone"
    phone: str | None = None
    sms_code: str | None = None
    tries_left: int = 3
    company: tuple[str, str] | None = None


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    company: tuple[str, str]
    scopes: tuple[str, ...]
    sub: str
    code_challenge: str | None
    expires_at: float
    used: bool = False


@dataclass
class TokenRecord:
    token: str
    kind: str  # "access" | "refresh"
    client_id: str | None
    company: tuple[str, str]
    scopes: tuple[str, ...]
    sub: str
    issued_at: float
    expires_at: float
    grant_id: str
    status: str = "active"  # active | rotated | revoked
    static: bool = False


@dataclass
class Webhook:
    id: str
    company: tuple[str, str]
    event_type: str
    url: str
    email: str | None
    auth_type: str
    auth_secret: str | None
    has_signature: bool


@dataclass
class OpRecord:
    """An operation: `data` is the JSON object the bank returns; the rest is sandbox bookkeeping."""

    data: dict[str, Any]
    company: tuple[str, str]
    settle_on_poll: bool = False
    seen_as_authorization: bool = False

    @property
    def op_id(self) -> str:
        return self.data["operationId"]

    @property
    def op_date(self) -> datetime:
        return datetime.fromisoformat(self.data["operationDate"])


class BankSandboxState:
    """All sandbox data; every access holds `lock`. Created per app, never global."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float] | None, seed: int) -> None:
        self.config = config
        self.clock: Callable[[], float] = clock or time.time
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.companies: dict[tuple[str, str], Company] = {}
        self.accounts: dict[str, Account] = {}
        self.clients: dict[str, PartnerClient] = {}
        self.flows: dict[str, AuthFlow] = {}
        self.codes: dict[str, AuthCode] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.operations: dict[str, OpRecord] = {}
        self.webhooks: dict[str, Webhook] = {}
        self.consents: list[dict[str, Any]] = []
        self.sms_codes: list[dict[str, Any]] = []
        self.webhook_deliveries: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        self.fault_probabilities: dict[str, float] = {}
        # errorMessage of an injected error fault, by kind (the control API's "messages"); absent: the default text
        self.fault_messages: dict[str, str] = {}
        self.faults_fired: Counter[str] = Counter()
        self.rate_windows: dict[tuple[str, str], deque[float]] = {}
        self.reidentified: dict[str, str] = {}
        self.delivery_threads: list[threading.Thread] = []
        self._doc_counter = 1000

    # ---- small helpers (call with the lock held) ----
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    def random_token(self, length: int) -> str:
        return "".join(self.rng.choice(ALNUM) for _ in range(length))

    def new_uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def new_hex(self, length: int = 10) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(length))

    def next_document_number(self) -> str:
        self._doc_counter += 1
        return str(self._doc_counter)

    def new_account_number(self, currency: str = "RUB", prefix: str = "40702") -> str:
        while True:
            body = prefix + CURRENCY_IN_ACCOUNT.get(currency, "810") + "0" + "".join(
                self.rng.choice("0123456789") for _ in range(11)
            )
            number = body[:8] + account_check_digit(TBANK_BIC, body) + body[9:]
            if number not in self.accounts:
                return number

    # ---- companies and clients ----
    def add_company(self, inn: str, kpp: str, name: str, phones: list[str] | None = None,
                    accounts: list[dict[str, Any]] | None = None) -> Company:
        company = self.companies.get((inn, kpp)) or Company(inn=inn, kpp=kpp, name=name)
        company.name = name
        company.phones.update(phones or [])
        self.companies[company.key] = company
        for spec in accounts if accounts is not None else ([{"currency": "RUB"}] if not company.accounts else []):
            currency = spec.get("currency", "RUB")
            number = spec.get("accountNumber") or self.new_account_number(currency)
            if number in self.accounts:
                continue
            self.accounts[number] = Account(
                number=number, currency=currency, company=company.key,
                name=spec.get("name") or f"Расчетный счет {currency}", created_on=self.now() - timedelta(days=400),
                main=not company.accounts,
            )
            company.accounts.append(number)
        return company

    def add_client(self, client_id: str, client_secret: str, redirect_uris: list[str],
                   scopes: list[str] | None = None, name: str | None = None) -> PartnerClient:
        client = PartnerClient(
            client_id=client_id, client_secret=client_secret, redirect_uris=list(redirect_uris),
            scopes=list(scopes) if scopes else list(DEFAULT_SCOPES), name=name or client_id,
        )
        self.clients[client_id] = client
        return client

    # ---- tokens ----
    def issue_tokens(self, client_id: str | None, company: tuple[str, str], scopes: tuple[str, ...], sub: str,
                     grant_id: str | None = None, with_refresh: bool = True,
                     access_prefix: str = "t.") -> tuple[TokenRecord, TokenRecord | None]:
        now = self.clock()
        grant_id = grant_id or self.new_hex(16)
        access = TokenRecord(
            token=access_prefix + self.random_token(86), kind="access", client_id=client_id, company=company, scopes=scopes,
            sub=sub, issued_at=now, expires_at=now + self.config.access_ttl, grant_id=grant_id,
        )
        self.tokens[access.token] = access
        refresh = None
        if with_refresh:
            refresh = TokenRecord(
                token=self.random_token(64), kind="refresh", client_id=client_id, company=company, scopes=scopes,
                sub=sub, issued_at=now, expires_at=now + self.config.refresh_ttl, grant_id=grant_id,
            )
            self.tokens[refresh.token] = refresh
        return access, refresh

    def token_is_live(self, record: TokenRecord | None) -> bool:
        return record is not None and record.status == "active" and record.expires_at > self.clock()

    # ---- rate limiting and faults ----
    def over_rate(self, key: tuple[str, str]) -> bool:
        """Sliding one-second window per (token, endpoint) on the injected clock: the method's documented
        limit (ENDPOINT_RPS), or the sandbox-wide `rate_limit_rps` when that is lower."""
        now = self.clock()
        window = self.rate_windows.setdefault(key, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= min(self.config.rate_limit_rps, ENDPOINT_RPS.get(key[1], self.config.rate_limit_rps)):
            return True
        window.append(now)
        return False

    def roll(self, kind: str) -> bool:
        probability = self.fault_probabilities.get(kind, 0.0)
        if probability <= 0:
            return False
        if self.rng.random() < probability:
            self.faults_fired[kind] += 1
            return True
        return False

    # ---- operations ----
    def find_operation(self, op_id: str) -> OpRecord | None:
        return self.operations.get(op_id) or self.operations.get(self.reidentified.get(op_id, ""))

    def reidentify(self, record: OpRecord) -> str:
        old = record.op_id
        new = self.new_uuid()
        del self.operations[old]
        record.data["operationId"] = new
        self.operations[new] = record
        self.reidentified[old] = new
        return new

    def settle(self, record: OpRecord) -> None:
        now = iso_z(self.now())
        record.data.update(
            operationStatus="Transaction", operationDate=now, trxnPostDate=now, chargeDate=now, drawDate=now,
        )
        record.settle_on_poll = False

    # ---- snapshot for GET /sandbox/state ----
    def snapshot(self) -> dict[str, Any]:
        def ts(value: float) -> str:
            return iso_z(datetime.fromtimestamp(value, timezone.utc))

        return {
            "clients": [
                {"client_id": c.client_id, "redirect_uris": c.redirect_uris, "scopes": c.scopes, "name": c.name}
                for c in self.clients.values()
            ],
            "companies": [
                {"inn": c.inn, "kpp": c.kpp, "name": c.name, "phones": sorted(c.phones), "accounts": c.accounts}
                for c in self.companies.values()
            ],
            "accounts": [
                {"accountNumber": a.number, "currency": a.currency, "inn": a.company[0], "kpp": a.company[1]}
                for a in self.accounts.values()
            ],
            "operations": [dict(r.data) for r in sorted(self.operations.values(), key=lambda r: (r.op_date, r.op_id))],
            "issued_tokens": [
                {
                    "token": t.token, "kind": t.kind, "client_id": t.client_id, "inn": t.company[0],
                    "kpp": t.company[1], "scopes": list(t.scopes), "status": t.status, "static": t.static,
                    "issued_at": ts(t.issued_at), "expires_at": ts(t.expires_at),
                    "expired": t.expires_at <= self.clock(),
                }
                for t in self.tokens.values()
            ],
            "consents": list(self.consents),
            "sms_codes": list(self.sms_codes),
            "webhooks": [
                {k: v for k, v in asdict(w).items() if k != "auth_secret"} | {"company": list(w.company)}
                for w in self.webhooks.values()
            ],
            "webhook_deliveries": list(self.webhook_deliveries),
            "requests": dict(self.requests),
            "faults": {"kinds": dict(self.fault_probabilities), "fired": dict(self.faults_fired)},
            "config": {
                "access_ttl": self.config.access_ttl, "rate_limit_rps": self.config.rate_limit_rps,
                "code_ttl": self.config.code_ttl, "webhook_retry_delays": list(self.config.webhook_retry_delays),
                "latency_ms": self.config.latency_ms,
            },
        }

    def close(self) -> None:
        """Stop background deliveries and wake any request held by the timeout fault."""
        self.stop_event.set()

    def join_deliveries(self, timeout: float = 10.0) -> bool:
        """Wait for webhook delivery threads started so far; True when all finished."""
        deadline = time.monotonic() + timeout
        with self.lock:
            threads = list(self.delivery_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)
