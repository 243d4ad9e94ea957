"""The app's wiring: one object holding settings, database, cipher, HTTP client and per-portal clients."""
from __future__ import annotations

import hashlib
from functools import cached_property
from urllib.parse import urlsplit

import httpx

from b24app.adapters.bitrix.client import BitrixClient, OAuthApp
from b24app.adapters.bitrix.operating import OperatingLimits
from b24app.adapters.bitrix.pacing import Pacer
from .clock import Clock
from .config import Settings
from b24app.storage.crypto import TokenCipher
from b24app.storage.db import Database, pool_for_threads
from .manifest import Manifest
from b24app.portals.store import PortalStore

USER_AGENT = "b24app/0.1 (+T-Bank payments for Bitrix24)"


class AppContext:
    """Built once per process (web or worker); nothing here does I/O until used."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None, pacer: Pacer | None = None,
                 db: Database | None = None):
        self.settings = settings
        self.clock = clock or Clock()
        self.db = db or Database(settings.database_url)
        self.cipher = TokenCipher(settings.token_keys)
        self.portals = PortalStore(self.db, self.cipher, self.clock)
        self._pacer = pacer

    @classmethod
    def for_worker(cls, settings: Settings, **kw) -> "AppContext":
        """A worker process's context: its database pool is sized to its threads (`worker_concurrency`)."""
        db = Database(settings.database_url, **pool_for_threads(settings.database_url, settings.worker_concurrency))
        return cls(settings, db=db, **kw)

    @cached_property
    def manifest(self) -> Manifest:
        return Manifest.load()

    @cached_property
    def http(self) -> httpx.Client:
        return httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0), headers={"User-Agent": USER_AGENT},
                            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))

    @cached_property
    def pacer(self) -> Pacer:
        if self._pacer is not None:
            return self._pacer
        from b24app.portals.ratelimit import DbPacer
        return DbPacer(self.db, self.settings.bitrix_rate, self.settings.bitrix_burst)

    @cached_property
    def bindings_signature(self) -> str:
        """What a portal's bindings must match: the manifest's version and our public URL (a host move rebinds)."""
        url_hash = hashlib.sha256(self.settings.public_url.encode()).hexdigest()[:12]
        return f"{self.manifest.version}@{url_hash}"

    @property
    def bitrix_app(self) -> OAuthApp:
        return OAuthApp(self.settings.bitrix_client_id, self.settings.bitrix_client_secret)

    @cached_property
    def operating_limits(self) -> OperatingLimits:
        """What Bitrix24 said about each portal's per-method operating budget (shared by this process)."""
        return OperatingLimits()

    def bitrix(self, member_id: str) -> BitrixClient:
        return BitrixClient(member_id, self.portals, self.bitrix_app, self.http, self.pacer,
                            operating=self.operating_limits)

    def trusted_oauth_server(self, server_endpoint: str) -> str | None:
        """The configured OAuth server `server_endpoint` belongs to, or None: never call an untrusted host."""
        if not isinstance(server_endpoint, str):
            return None
        try:
            parts = urlsplit(server_endpoint)
        except ValueError:
            return None
        for trusted in self.settings.bitrix_oauth_servers:
            t = urlsplit(trusted)
            if (parts.scheme, parts.netloc) == (t.scheme, t.netloc):
                return f"{t.scheme}://{t.netloc}/rest/"
        return None

    def public_url(self, path: str) -> str:
        return self.settings.public_url.rstrip("/") + path

    def close(self) -> None:
        if "http" in self.__dict__:
            self.http.close()
        self.db.dispose()
