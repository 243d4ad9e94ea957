"""In-memory state of the Bitrix24 sandbox: registered apps, portals, tokens, CRM data, recorded effects."""
from __future__ import annotations

import random
import re
import secrets
import string
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable

REFRESH_TTL = 180 * 24 * 3600  # Bitrix24 refresh tokens live 180 days
AUTH_CODE_TTL = 30  # authorization codes live 30 seconds
DEFAULT_SCOPE = "crm,placement,im,task,user_brief"
INVOICE_CATEGORY_ID = 2
SECOND_DEAL_CATEGORY_ID = 1

_TOKEN_ALPHABET = string.ascii_lowercase + string.digits
_RENAME_SUFFIX = re.compile(r"(?:-r[0-9]+)+$")  # what `rename_fresh` appends


def new_token() -> str:
    """A 32-character opaque token shaped like Bitrix24's."""
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(32))


def new_hex32() -> str:
    return secrets.token_hex(16)


def iso(ts: float) -> str:
    """Bitrix24-style ISO 8601 timestamp (seconds precision, explicit offset), in UTC."""
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).isoformat()


@dataclass
class RegisteredApp:
    """A marketplace app as registered with the central OAuth server."""

    client_id: str
    client_secret: str
    install_url: str
    handler_url: str
    scope: str = DEFAULT_SCOPE
    version: int = 1
    app_code: str = ""  # a Market app's code ("vendor.name"); a local app's CODE is its client_id

    @property
    def code(self) -> str:
        return self.app_code or self.client_id

    @property
    def scopes(self) -> set[str]:
        return {s.strip() for s in self.scope.split(",") if s.strip()}

    def public(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "install_url": self.install_url,
                "handler_url": self.handler_url, "scope": self.scope, "version": self.version, "code": self.code}


@dataclass
class Installation:
    """One app on one portal (Bitrix24's b_rest_app row)."""

    client_id: str
    local_id: int
    application_token: str
    installed: bool = False
    version: int = 1
    installed_by: int = 1


@dataclass
class IssuedToken:
    """An access or refresh token issued by the OAuth server."""

    value: str
    kind: str  # "access" | "refresh"
    member_id: str
    client_id: str
    user_id: int
    expires_at: float
    issued_at: float
    pair: str
    used: bool = False
    revoked: bool = False

    def public(self) -> dict[str, Any]:
        return {"token": self.value, "kind": self.kind, "member_id": self.member_id,
                "client_id": self.client_id, "user_id": self.user_id,
                "expires_at": self.expires_at, "issued_at": self.issued_at,
                "used": self.used, "revoked": self.revoked}


@dataclass
class AuthCode:
    code: str
    member_id: str
    client_id: str
    user_id: int
    expires_at: float
    used: bool = False


@dataclass
class User:
    id: int
    name: str
    last_name: str
    admin: bool = False
    email: str = ""
    # CRM read right on deals: "all", or "own" (only deals the user is responsible for). Bitrix24's role
    # permissions have more levels (department, open deals); the sandbox needs only "may this user read it".
    deal_read: str = "all"

    def may_read_deal(self, deal: dict[str, Any]) -> bool:
        return self.admin or self.deal_read == "all" or str(deal.get("ASSIGNED_BY_ID")) == str(self.id)

    def rest(self) -> dict[str, Any]:
        # LAST_LOGIN ... UF_EMPLOYMENT_DATE as in the example of api-reference/user/user-current.md
        # (fixed dates: the sandbox's users are seeded, not registered)
        return {"ID": str(self.id), "XML_ID": "", "ACTIVE": True, "NAME": self.name,
                "LAST_NAME": self.last_name, "SECOND_NAME": "", "EMAIL": self.email,
                "LAST_LOGIN": "2026-01-12T09:00:00+03:00", "DATE_REGISTER": "2025-09-01T00:00:00+03:00",
                "LAST_ACTIVITY_DATE": "2026-01-12 09:05:00", "PERSONAL_GENDER": "", "PERSONAL_BIRTHDAY": "",
                "PERSONAL_PHOTO": "", "TIME_ZONE": "",
                "TIME_ZONE_OFFSET": "0", "WORK_POSITION": "Администратор" if self.admin else "Менеджер",
                "UF_EMPLOYMENT_DATE": "", "UF_DEPARTMENT": [1], "USER_TYPE": "employee", "IS_ONLINE": "N"}

    @property
    def full_name(self) -> str:
        return f"{self.name} {self.last_name}".strip()


@dataclass
class Placement:
    id: int
    client_id: str
    placement: str
    handler: str
    title: str = ""
    description: str = ""
    group_name: str = ""
    options: Any = field(default_factory=list)
    lang_all: dict[str, Any] = field(default_factory=dict)
    user_id: int = 0

    def rest(self) -> dict[str, Any]:
        # placement.get answers each language with TITLE, DESCRIPTION and GROUP_NAME
        # (api-reference/widgets/placement-get.md), whatever subset LANG_ALL bound.
        lang_all = {lang: {"TITLE": str(v.get("TITLE") or ""), "DESCRIPTION": str(v.get("DESCRIPTION") or ""),
                           "GROUP_NAME": str(v.get("GROUP_NAME") or "")}
                    for lang, v in self.lang_all.items() if isinstance(v, dict)}
        return {"placement": self.placement, "userId": self.user_id, "handler": self.handler,
                "options": self.options, "title": self.title, "description": self.description,
                "langAll": lang_all}


@dataclass
class EventBinding:
    id: int
    client_id: str
    event: str
    handler: str
    auth_type: int = 0
    event_type: str = "online"

    def rest(self) -> dict[str, Any]:
        return {"event": self.event, "handler": self.handler, "auth_type": str(self.auth_type),
                "offline": 1 if self.event_type == "offline" else 0}


@dataclass
class Delivery:
    """One event POST to an app handler (Bitrix24 never retries it)."""

    id: int
    event: str
    handler: str
    event_handler_id: int
    client_id: str
    payload: dict[str, Any]
    status: int | None = None
    error: str | None = None
    delivered_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "event": self.event, "handler": self.handler,
                "event_handler_id": self.event_handler_id, "client_id": self.client_id,
                "status": self.status, "error": self.error, "delivered_at": self.delivered_at,
                "done": self.done.is_set(), "payload": self.payload}


@dataclass
class Portal:
    """One Bitrix24 account: its own member_id, users, CRM data, bucket, apps and recorded effects."""

    code: str
    member_id: str
    lang: str = "ru"
    users: dict[int, User] = field(default_factory=dict)
    installations: dict[str, Installation] = field(default_factory=dict)
    uninstalled: list[dict[str, Any]] = field(default_factory=list)
    placements: list[Placement] = field(default_factory=list)
    events: list[EventBinding] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    deals: dict[int, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[int, dict[str, Any]] = field(default_factory=dict)
    # invoice stages added with crm.status.add: (STATUS_ID, NAME, SORT, SEMANTICS, COLOR), beside the built-in ones
    extra_invoice_stages: list[tuple[str, str, int, str | None, str]] = field(default_factory=list)
    # deal userfields added with crm.deal.userfield.add: FIELD_NAME -> {"ID", "USER_TYPE_ID", "MULTIPLE"}
    deal_userfields: dict[str, dict[str, Any]] = field(default_factory=dict)
    # payment records (crm.item.payment.* / sale.payment.*): id -> the sale_order_payment fields; deal -> its order
    payments: dict[int, dict[str, Any]] = field(default_factory=dict)
    deal_orders: dict[int, int] = field(default_factory=dict)
    companies: dict[int, dict[str, Any]] = field(default_factory=dict)
    requisites: dict[int, dict[str, Any]] = field(default_factory=dict)
    timeline_comments: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    automation_triggers: dict[str, dict[str, Any]] = field(default_factory=dict)
    trigger_executions: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    rate_limited: int = 0
    # limits.md, "Ограничения на ресурсоемкость": operating time per (app or webhook, method) in 10 buckets
    # of a tenth of the window each: {key: {bucket index: [first call's time, seconds]}}
    operating: dict[tuple[str, str], dict[int, list[float]]] = field(default_factory=dict)
    method_calls: Counter = field(default_factory=Counter)  # every sub-call tried, blocked ones included
    method_blocked: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    bucket_level: float = 0.0
    bucket_at: float | None = None
    _ids: Counter = field(default_factory=Counter)

    def next_id(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def bump_id(self, kind: str, at_least: int) -> None:
        """Make the next `kind` id larger than an id chosen by the caller."""
        self._ids[kind] = max(self._ids[kind], at_least)

    def domain(self, host: str) -> str:
        return f"{host}/p/{self.code}"

    def client_endpoint(self, host: str) -> str:
        return f"http://{host}/p/{self.code}/rest/"


def default_users() -> dict[int, User]:
    return {
        1: User(1, "Анна", "Админова", admin=True, email="anna@example.test"),
        2: User(2, "Борис", "Менеджеров", email="boris@example.test"),
        3: User(3, "Вера", "Продажина", email="vera@example.test"),
    }


class SandboxState:
    """Everything the sandbox knows, behind one lock; `clock` is injectable for expiry tests."""

    def __init__(self, *, access_ttl: int, rate: float, burst: int,
                 clock: Callable[[], float] | None, event_delivery: str, seed: int = 0) -> None:
        if event_delivery not in ("async", "sync"):
            raise ValueError("event_delivery must be 'async' or 'sync'")
        self.lock = threading.RLock()
        self.clock: Callable[[], float] = clock or time.time
        self.access_ttl = access_ttl
        self.rate = rate
        self.burst = burst
        self.event_delivery = event_delivery
        self.event_timeout = 10.0
        self.slow_seconds = 1.0
        self.timeout_seconds = 30.0
        self.latency_ms = 0.0  # injected before every REST/OAuth answer (scale benchmarks)
        # limits.md: "предположим, что установленный лимит равен 480 секундам", over 10 one-minute buckets.
        self.operating_limit = 480.0
        self.operating_window = 600.0  # tests shorten it; the buckets stay a tenth of it
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults: dict[str, float] = {}
        self.faults_fired: Counter = Counter()  # injected faults by kind, all portals together
        self.fault_script: list[str | None] = []  # faults for the next REST requests, in order (None: none)
        self.apps: dict[str, RegisteredApp] = {}
        self.portals: dict[str, Portal] = {}
        self.renamed: dict[str, str] = {}
        self.tokens: dict[str, IssuedToken] = {}
        self.auth_codes: dict[str, AuthCode] = {}
        self.app_ids = 0
        self.central_requests = 0  # REST calls to the central OAuth server (app.info), for tests
        self.deliverer: Any = None  # set by the app factory

    # -- portals -------------------------------------------------------------------------------
    def add_portal(self, code: str, lang: str = "ru") -> Portal:
        with self.lock:
            if code in self.portals or code in self.renamed:
                raise ValueError(f"portal {code!r} exists")
            portal = Portal(code=code, member_id=new_hex32(), lang=lang, users=default_users())
            for uid in portal.users:
                portal.bump_id("user", uid)
            self.portals[code] = portal
            return portal

    def resolve_code(self, code: str) -> tuple[Portal | None, str | None]:
        """(portal, None) for a live code, (None, new_code) for a renamed one, (None, None) if unknown."""
        seen = set()
        target = code
        while target in self.renamed and target not in seen:
            seen.add(target)
            target = self.renamed[target]
        if target != code:
            return None, target
        return self.portals.get(code), None

    def portal_by_member(self, member_id: str) -> Portal | None:
        for portal in self.portals.values():
            if portal.member_id == member_id:
                return portal
        return None

    def rename(self, portal: Portal, new_code: str) -> None:
        with self.lock:
            if new_code in self.portals or new_code in self.renamed:
                raise ValueError(f"portal {new_code!r} exists")
            old = portal.code
            del self.portals[old]
            portal.code = new_code
            self.portals[new_code] = portal
            self.renamed[old] = new_code

    def rename_fresh(self, portal: Portal) -> str:
        """Rename `portal` to `<base>-r<N>` (base: its code without earlier `-r<N>` suffixes), the smallest N
        not used by a live or a former code; the old code keeps redirecting. Returns the new code."""
        with self.lock:
            base = _RENAME_SUFFIX.sub("", portal.code) or portal.code
            n = 1
            while f"{base}-r{n}" in self.portals or f"{base}-r{n}" in self.renamed:
                n += 1
            self.rename(portal, f"{base}-r{n}")
            return portal.code

    # -- tokens --------------------------------------------------------------------------------
    def issue_pair(self, portal: Portal, client_id: str, user_id: int) -> tuple[IssuedToken, IssuedToken]:
        with self.lock:
            now = self.clock()
            access, refresh = new_token(), new_token()
            a = IssuedToken(access, "access", portal.member_id, client_id, user_id,
                            now + self.access_ttl, now, refresh)
            r = IssuedToken(refresh, "refresh", portal.member_id, client_id, user_id,
                            now + REFRESH_TTL, now, access)
            self.tokens[access] = a
            self.tokens[refresh] = r
            return a, r

    def revoke_app_tokens(self, member_id: str, client_id: str) -> None:
        with self.lock:
            for tok in self.tokens.values():
                if tok.member_id == member_id and tok.client_id == client_id:
                    tok.revoked = True

    # -- rate limit ----------------------------------------------------------------------------
    def take_request(self, portal: Portal) -> bool:
        """Count one HTTP request in the portal's leaky bucket; False when over the burst."""
        with self.lock:
            now = self.clock()
            portal.requests += 1
            if portal.bucket_at is not None:
                portal.bucket_level = max(0.0, portal.bucket_level - (now - portal.bucket_at) * self.rate)
            portal.bucket_at = now
            if portal.bucket_level + 1 > self.burst:
                portal.rate_limited += 1
                return False
            portal.bucket_level += 1
            return True

    def roll_fault(self) -> str | None:
        """The fault for this REST request: the next entry of the script if one is set, else a random draw."""
        with self.lock:
            if self.fault_script:
                return self.fault_script.pop(0)
            for kind, probability in self.faults.items():
                if probability > 0 and self.rng.random() < probability:
                    return kind
            return None

    def new_app_local_id(self) -> int:
        with self.lock:
            self.app_ids += 1
            return self.app_ids


def money(value: Any) -> Decimal:
    """Parse an amount from REST input (string or number) without passing through float."""
    if isinstance(value, Decimal):
        return value
    if value is None or value == "":
        return Decimal("0")
    return Decimal(str(value).replace(",", ".").strip())
