"""State of the Tochka sandbox: clients, consents, tokens, customers, accounts, transactions, webhooks, faults.

Webhooks are delivered as Tochka documents them (developers.tochka.com/docs/tochka-api/opisanie-metodov/vebhuki):
the body is a JWT string signed RS256 with the bank's key, sent as text/plain; a reply other than HTTP 200 is
retried (30 times every 10 s at the bank; fewer and faster here, configurable); registering a webhook sends one
test webhook first and fails unless it gets 200. The public key is served as a JWK at
/doc/openapi/static/keys/public, as the bank serves its own.
"""
from __future__ import annotations

import base64
import json
import random
import secrets
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

DEMO_CUSTOMER_CODE = "300123123"
DEMO_BIC = "044525104"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(claims: dict, key: rsa.RSAPrivateKey, alg: str = "RS256") -> str:
    """A compact JWT as the bank sends it: {"typ": "JWT", "alg": "RS256"} header, claims, RS256 signature."""
    head = b64url(json.dumps({"typ": "JWT", "alg": alg}).encode())
    body = b64url(json.dumps(claims, ensure_ascii=False).encode())
    sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64url(sig)}"


def jwk_of(key: rsa.RSAPrivateKey) -> dict:
    nums = key.public_key().public_numbers()
    return {"kty": "RSA", "e": b64url(nums.e.to_bytes(3, "big").lstrip(b"\0")),
            "n": b64url(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big"))}


@dataclass
class Customer:
    code: str
    inn: str
    kpp: str
    name: str
    phone: str
    accounts: list[str] = field(default_factory=list)  # accountId "number/BIC"


@dataclass
class Config:
    access_ttl: int = 86400            # docs (old API v1 page): access token 24 h; not restated for the Open API
    webhook_attempts: int = 5          # the bank: 31 (1 + 30 retries)
    webhook_retry_delay: float = 0.5   # the bank: 10 s
    webhook_timeout: float = 5.0
    statement_polls_until_ready: int = 1


class TochkaState:
    def __init__(self, *, clients: dict[str, dict], config: Config | None = None, inn: str = "7701234567",
                 kpp: str = "770101001", phone: str = "+79990000001"):
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.config = config or Config()
        self.clients = clients                   # client_id -> {"secret", "redirect_uris"}
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.customers: dict[str, Customer] = {}
        self.consents: dict[str, dict] = {}      # consentId -> {client_id, permissions, status, customer_codes}
        self.codes: dict[str, dict] = {}         # authorization code -> grant
        self.tokens: dict[str, dict] = {}        # access token -> grant (kind: app | user)
        self.refresh_tokens: dict[str, dict] = {}
        self.sessions: dict[str, dict] = {}      # sign-in flow id -> {phone, sms, query}
        self.transactions: dict[str, list[dict]] = {}  # accountId -> transactions
        self.statements: dict[str, dict] = {}    # statementId -> {accountId, start, end, polls}
        self.webhooks: dict[str, dict] = {}      # client_id -> {"url", "webhooksList"}
        self.deliveries: list[dict] = []         # every delivery attempt (the token too: tests replay it)
        self.faults: dict[str, int] = {}         # name -> how many more times it happens
        self.fault_rates: dict[str, float] = {}  # name -> probability per chance (the soak's bad day)
        self.fault_rng = random.Random(0)
        self.fired: Counter = Counter()          # name -> how often it happened (counted and random alike)
        self.requests: list[dict] = []
        self.threads: list[threading.Thread] = []
        self._doc = 0
        self.add_customer(Customer(DEMO_CUSTOMER_CODE, inn, kpp, "ООО «Демо»", phone), ["40702810900000000001"])

    # -- data ---------------------------------------------------------------------------------------------
    def add_customer(self, customer: Customer, numbers: list[str]) -> Customer:
        with self.lock:
            customer.accounts = [f"{n}/{DEMO_BIC}" for n in numbers]
            self.customers[customer.code] = customer
            for acc in customer.accounts:
                self.transactions.setdefault(acc, [])
            return customer

    def customer_by_phone(self, phone: str) -> Customer | None:
        with self.lock:
            return next((c for c in self.customers.values() if c.phone == phone), None)

    def fault(self, name: str) -> bool:
        """Does fault `name` happen now: one of its counted times left, else with its rate's probability."""
        with self.lock:
            left = self.faults.get(name, 0)
            if left > 0:
                self.faults[name] = left - 1
            elif not (name in self.fault_rates and self.fault_rng.random() < self.fault_rates[name]):
                return False
            self.fired[name] += 1
            return True

    def pay(self, *, amount: Decimal, purpose: str, account_id: str | None = None, payer_inn: str = "7712345678",
            payer_name: str = "ООО «Вектор»", payer_account: str = "40702810500000000077",
            document_number: str | None = None, date: str | None = None, status: str = "Booked") -> dict:
        """An incoming payment lands on the account: it is in the statement and (when Booked) pushed."""
        with self.lock:
            if account_id is None:
                account_id = self.customers[DEMO_CUSTOMER_CODE].accounts[0]
            customer = next(c for c in self.customers.values() if account_id in c.accounts)
            self._doc += 1
            day = date or datetime.now(timezone(timedelta(hours=3))).date().isoformat()
            payment_id = uuid.uuid4().hex
            tx = {"transactionId": f"{payment_id}", "paymentId": payment_id, "creditDebitIndicator": "Credit",
                  "status": status, "documentNumber": document_number or str(self._doc),
                  "documentProcessDate": day, "description": purpose,
                  "Amount": {"amount": float(amount) if amount == amount.quantize(Decimal("0.01")) else str(amount),
                             "currency": "RUB"},
                  "DebtorParty": {"inn": payer_inn, "name": payer_name, "kpp": "0"},
                  "DebtorAccount": {"schemeName": "RU.CBR.PAN", "identification": payer_account},
                  "DebtorAgent": {"schemeName": "RU.CBR.BICFI", "identification": "044525225"}}
            self.transactions[account_id].append(tx)
        if status == "Booked":
            number, bic = account_id.split("/")
            self.push({"SidePayer": {"bankCode": "044525225", "account": payer_account, "name": payer_name,
                                     "amount": str(amount), "currency": "RUB", "inn": payer_inn, "kpp": "0"},
                       "SideRecipient": {"bankCode": bic, "account": number, "name": customer.name,
                                         "amount": str(amount), "currency": "RUB", "inn": customer.inn,
                                         "kpp": customer.kpp},
                       "purpose": purpose, "documentNumber": tx["documentNumber"], "paymentId": payment_id,
                       "date": day, "webhookType": "incomingPayment", "customerCode": customer.code})
        return tx

    # -- webhooks -------------------------------------------------------------------------------------------
    def push(self, claims: dict) -> int:
        """Deliver `claims` to every application whose consent covers the customer and that subscribed."""
        started = 0
        with self.lock:
            targets = []
            for client_id, hook in self.webhooks.items():
                covered = any(c["client_id"] == client_id and c["status"] == "Authorised"
                              and claims.get("customerCode") in c["customer_codes"] for c in self.consents.values())
                if covered and claims.get("webhookType") in hook["webhooksList"]:
                    targets.append((client_id, hook["url"]))
            if self.fault("webhook_drop"):
                return 0
            times = 2 if self.fault("webhook_duplicate") else 1
        for client_id, url in targets:
            token = sign_jwt(claims, self.key)
            for _ in range(times):
                t = threading.Thread(target=self._deliver, args=(client_id, url, token), daemon=True,
                                     name="tochka-webhook")
                t.start()
                started += 1
                with self.lock:
                    self.threads = [x for x in self.threads if x.is_alive()] + [t]
        return started

    def _deliver(self, client_id: str, url: str, token: str) -> None:
        cfg = self.config
        with httpx.Client(timeout=cfg.webhook_timeout, trust_env=False) as http:
            for attempt in range(1, cfg.webhook_attempts + 1):
                if self.stop_event.is_set():
                    return
                try:
                    status: int | str = http.post(url, content=token, headers={"Content-Type": "text/plain"}).status_code
                except httpx.HTTPError as exc:
                    status = f"error: {type(exc).__name__}"
                with self.lock:
                    self.deliveries.append({"client_id": client_id, "url": url, "attempt": attempt, "status": status,
                                            "token": token, "at": datetime.now(timezone.utc).isoformat()})
                if status == 200:  # the bank retries anything but 200
                    return
                if self.stop_event.wait(cfg.webhook_retry_delay):
                    return

    def test_webhook(self, url: str, customer_code: str) -> int | str:
        """The test webhook sent when a webhook is created or changed; anything but 200 refuses the change."""
        claims = {"webhookType": "incomingPayment", "customerCode": customer_code, "paymentId": "test",
                  "purpose": "test", "amount": "0", "SidePayer": {}, "SideRecipient": {}, "date": "1970-01-01"}
        try:
            with httpx.Client(timeout=self.config.webhook_timeout, trust_env=False) as http:
                return http.post(url, content=sign_jwt(claims, self.key),
                                 headers={"Content-Type": "text/plain"}).status_code
        except httpx.HTTPError as exc:
            return f"error: {type(exc).__name__}"

    def new_token(self, grant: dict, *, refresh: bool) -> dict:
        access = "tochka-at-" + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[access] = grant
            out = {"access_token": access, "token_type": "bearer", "expires_in": self.config.access_ttl}
            if refresh:
                rt = "tochka-rt-" + secrets.token_urlsafe(24)
                self.refresh_tokens[rt] = grant
                out["refresh_token"] = rt
        return out

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"consents": {k: dict(v) for k, v in self.consents.items()},
                    "webhooks": dict(self.webhooks), "deliveries": list(self.deliveries),
                    "tokens": len(self.tokens), "refresh_tokens": len(self.refresh_tokens),
                    "transactions": {k: list(v) for k, v in self.transactions.items()},
                    "requests": list(self.requests[-500:]), "faults": dict(self.faults),
                    "fault_rates": dict(self.fault_rates), "fired": dict(self.fired),
                    "customers": {c.code: {"inn": c.inn, "kpp": c.kpp, "accounts": c.accounts, "phone": c.phone}
                                  for c in self.customers.values()}}

    def stop(self) -> None:
        self.stop_event.set()

