"""Gunicorn settings for the b24app web process, kept here so production never logs query strings.

`b24app serve` runs gunicorn with this file (from the source tree); equivalent by hand:
    gunicorn -c install/gunicorn.conf.py              # serves b24app.wsgi:app
Tunables come from the same environment file as the app (/etc/b24app/b24app.env):
    B24APP_WEB_CONCURRENCY  number of worker processes (default: 2 x CPU cores + 1, at most 16)
    B24APP_LOG_LEVEL        DEBUG | INFO | WARNING | ERROR | CRITICAL (default INFO)
"""
from __future__ import annotations

import logging
import os
import re

from gunicorn.glogging import Logger


def _web_concurrency() -> int:
    raw = os.environ.get("B24APP_WEB_CONCURRENCY", "").strip()
    if not raw:
        return min(2 * (os.cpu_count() or 1) + 1, 16)
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"B24APP_WEB_CONCURRENCY must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise SystemExit(f"B24APP_WEB_CONCURRENCY must be a positive integer, got {raw!r}")
    return value


def _log_level() -> str:
    level = os.environ.get("B24APP_LOG_LEVEL", "INFO").strip().lower() or "info"
    if level not in {"debug", "info", "warning", "error", "critical"}:
        raise SystemExit(f"B24APP_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
    return level


_QUERY = re.compile(r"\?[^\s\"']+")


def _redact(value: object) -> object:
    return _QUERY.sub("?[redacted]", value) if isinstance(value, str) else value


class RedactingLogger(Logger):
    """Gunicorn logger whose error log never shows a query string (gunicorn logs req.uri on errors)."""

    def log(self, lvl, msg, *args, **kwargs):  # noqa: D102 - same contract as gunicorn's Logger
        super().log(lvl, _redact(msg), *(_redact(a) for a in args), **kwargs)

    def critical(self, msg, *args, **kwargs):  # noqa: D102
        super().critical(_redact(msg), *(_redact(a) for a in args), **kwargs)

    def error(self, msg, *args, **kwargs):  # noqa: D102
        super().error(_redact(msg), *(_redact(a) for a in args), **kwargs)

    def warning(self, msg, *args, **kwargs):  # noqa: D102
        super().warning(_redact(msg), *(_redact(a) for a in args), **kwargs)

    def info(self, msg, *args, **kwargs):  # noqa: D102
        super().info(_redact(msg), *(_redact(a) for a in args), **kwargs)

    def debug(self, msg, *args, **kwargs):  # noqa: D102
        super().debug(_redact(msg), *(_redact(a) for a in args), **kwargs)

    def exception(self, msg, *args, **kwargs):  # noqa: D102
        super().exception(_redact(msg), *(_redact(a) for a in args), **kwargs)


# --- what to serve -------------------------------------------------------------------------------
wsgi_app = "b24app.wsgi:app"
bind = ["127.0.0.1:8000"]  # nginx in front terminates TLS; never expose gunicorn directly
proc_name = "b24app-web"
# gunicorn >= 27 opens a control socket under $HOME by default; the service has no writable home and
# needs no runtime control beyond signals (older gunicorn ignores this unknown setting).
control_socket_disable = True

# --- processes -----------------------------------------------------------------------------------
# The web tier is stateless (state lives in the database), so any number of processes, on any number
# of hosts, can run side by side. Threads let a worker keep serving while one request waits on
# Bitrix24's OAuth server (app.info) or the bank.
workers = _web_concurrency()
worker_class = "gthread"
threads = 4
preload_app = False  # each worker builds its own app and DB engine after fork
max_requests = 2000  # recycle workers now and then to bound memory growth
max_requests_jitter = 200

# --- timeouts ------------------------------------------------------------------------------------
timeout = 60  # a worker silent this long is killed (Bitrix24 cloud REST calls time out at 60 s)
graceful_timeout = 30  # on SIGTERM/SIGHUP, finish in-flight requests for up to 30 s
keepalive = 5

# --- behind nginx --------------------------------------------------------------------------------
forwarded_allow_ips = "127.0.0.1,::1"  # trust X-Forwarded-Proto only from the local nginx
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
limit_request_line = 8190
limit_request_field_size = 8190

# --- logging (stdout/stderr -> journald) ---------------------------------------------------------
# Bitrix24 puts DOMAIN/APP_SID (and may put auth) in query strings: log the path only (%(U)s, never
# %(r)s or %(q)s), no Referer (it can carry the portal's query string), and the request id nginx sets.
accesslog = "-"
errorlog = "-"
loglevel = _log_level()
logger_class = RedactingLogger
access_log_format = (
    '%({x-real-ip}i)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s" rid=%({x-request-id}i)s'
)
capture_output = False
