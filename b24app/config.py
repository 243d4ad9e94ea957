"""Settings read from `B24APP_*` environment variables; secrets are required in production."""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from cryptography.fernet import Fernet

PREFIX = "B24APP_"
MODES = ("production", "demo", "test")
DEFAULT_OAUTH_SERVERS = ("https://oauth.bitrix.info", "https://oauth.bitrix24.tech")


class ConfigError(RuntimeError):
    """The environment does not describe a runnable app."""


@dataclass(frozen=True)
class Settings:
    mode: str = "production"
    data_dir: str = "var"
    secret_key: str = ""
    token_keys: tuple[str, ...] = ()
    database_url: str = ""
    public_url: str = "http://127.0.0.1:5000"
    bitrix_client_id: str = ""
    bitrix_client_secret: str = ""
    bitrix_app_code: str = ""  # what a portal's app.info says in CODE: a Market app's code; empty = the client_id (a local app)
    bitrix_oauth_servers: tuple[str, ...] = DEFAULT_OAUTH_SERVERS
    bx24_js_url: str = "//api.bitrix24.com/api/v1/"
    tbank_client_id: str = ""
    tbank_client_secret: str = ""
    tbank_id_url: str = "https://id.tbank.ru"
    tbank_api_url: str = "https://business.tbank.ru/openapi"
    # The address T-Bank's add-webhook requires («Электронная почта для уведомлений»): the bank writes there
    # about the webhook itself, which only the people running this deployment can fix. Empty: no webhook,
    # the statement is polled (the admin page says so).
    operator_email: str = ""
    # Tochka Bank (second live bank, docs/banks/tochka.md): the application registered in Tochka's internet bank
    # («Интеграции и API»); empty client id = Tochka linking is off.
    tochka_client_id: str = ""
    tochka_client_secret: str = ""
    tochka_auth_url: str = "https://enter.tochka.com/connect"
    tochka_api_url: str = "https://enter.tochka.com/uapi"
    tochka_webhook_key_url: str = "https://enter.tochka.com/doc/openapi/static/keys/public"
    sync_interval: int = 60
    invoice_refresh_interval: int = 900
    worker_concurrency: int = 32  # threads per worker; they mostly wait on the bank and Bitrix24
    lease_seconds: int = 120
    bitrix_rate: float = 2.0
    bitrix_burst: int = 50
    log_level: str = "INFO"
    rest_log_dir: str = ""
    max_content_length: int = 1024 * 1024
    # Proxies in front of the app that set X-Forwarded-For (1 behind the shipped nginx); 0 = use the peer address.
    trusted_proxies: int = 0
    # Failed verifications (placement POSTs, install and lifecycle events) that each cost a Bitrix24 call:
    # how many a client address and a member_id may have, and how long the same bad credential is refused from
    # memory. `limits` notation; the store is per process ("memory://") or shared ("redis://host:6379").
    ratelimit_storage_uri: str = "memory://"
    ratelimit_failures_per_ip: str = "10/minute;60/hour"
    ratelimit_failures_per_member: str = "30/minute"
    ratelimit_negative_ttl: int = 60
    statement_max_bytes: int = 20 * 1024 * 1024  # largest 1C statement file accepted (b24app import-statement)
    extra: dict = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.mode == "production"

    def with_overrides(self, **kw) -> "Settings":
        return replace(self, **kw)


_TUPLES = {"token_keys", "bitrix_oauth_servers"}
_INTS = {"sync_interval", "invoice_refresh_interval", "worker_concurrency", "lease_seconds",
         "bitrix_burst", "max_content_length", "trusted_proxies", "ratelimit_negative_ttl",
         "statement_max_bytes"}
_FLOATS = {"bitrix_rate"}


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def from_env(environ: dict[str, str] | None = None, **overrides) -> Settings:
    """Build settings from the environment (no I/O except reading/creating demo secrets)."""
    env = os.environ if environ is None else environ
    values: dict = {}
    for f in fields(Settings):
        raw = env.get(PREFIX + f.name.upper())
        if raw is None or f.name == "extra":
            continue
        if f.name in _TUPLES:
            values[f.name] = _split(raw)
        elif f.name in _INTS:
            values[f.name] = int(raw)
        elif f.name in _FLOATS:
            values[f.name] = float(raw)
        else:
            values[f.name] = raw
    values.update(overrides)
    settings = Settings(**values)
    if settings.mode not in MODES:
        raise ConfigError(f"B24APP_MODE must be one of {', '.join(MODES)}, not {settings.mode!r}")
    return finalize(settings)


def finalize(settings: Settings) -> Settings:
    """Fill derived defaults; demand secrets in production, generate them per data dir otherwise."""
    data_dir = Path(settings.data_dir)
    s = settings
    if not s.database_url:
        s = replace(s, database_url=f"sqlite:///{(data_dir / 'b24app.sqlite3').resolve()}")
    if not s.rest_log_dir:
        s = replace(s, rest_log_dir=str(data_dir / "rest-log"))  # the marketplace asks for 3 days of REST logs
    if s.is_production:
        missing = [name for name, value in (
            ("B24APP_SECRET_KEY", s.secret_key), ("B24APP_TOKEN_KEYS", s.token_keys),
            ("B24APP_BITRIX_CLIENT_ID", s.bitrix_client_id),
            ("B24APP_BITRIX_CLIENT_SECRET", s.bitrix_client_secret),
            ("B24APP_TBANK_CLIENT_ID", s.tbank_client_id),
            ("B24APP_TBANK_CLIENT_SECRET", s.tbank_client_secret)) if not value]
        if missing:
            raise ConfigError("production mode needs " + ", ".join(missing)
                              + " (see install/README.md); use B24APP_MODE=demo to try the app")
        if len(s.secret_key) < 32:
            raise ConfigError("B24APP_SECRET_KEY must be at least 32 characters")
        if not s.public_url.startswith("https://"):
            raise ConfigError("B24APP_PUBLIC_URL must be the app's https:// address (Bitrix24 frames only https)")
    else:
        if not s.secret_key or not s.token_keys:
            secret_key, key = _demo_secrets(data_dir)
            s = replace(s, secret_key=s.secret_key or secret_key, token_keys=s.token_keys or (key,))
    for key in s.token_keys:
        try:
            Fernet(key.encode())
        except ValueError as exc:
            raise ConfigError("B24APP_TOKEN_KEYS holds a value that is not a Fernet key") from exc
    return s


def _demo_secrets(data_dir: Path) -> tuple[str, str]:
    """Secrets kept in the data dir, so a demo restart can still read its own tokens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secrets.env"
    if path.exists():
        pairs = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return pairs["SECRET_KEY"], pairs["TOKEN_KEY"]
    secret_key, token_key = secrets.token_urlsafe(48), Fernet.generate_key().decode()
    path.write_text(f"SECRET_KEY={secret_key}\nTOKEN_KEY={token_key}\n")
    path.chmod(0o600)
    return secret_key, token_key
