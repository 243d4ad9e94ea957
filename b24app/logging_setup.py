"""Structured (JSON) logs with portal ids, never tokens; REST call log kept 3 days for the marketplace."""
from __future__ import annotations

import json
import logging
import logging.handlers
import re
from pathlib import Path

from .config import Settings

_SECRETISH = re.compile(r"(?i)(auth(?:_id)?|refresh(?:_id|_token)?|access_token|application_token|"
                        r"client_secret|token|secret|password|code)=([^&\s\"']+)")
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def redact(text: str) -> str:
    """Mask `name=value` pairs whose name says they are secret."""
    return _SECRETISH.sub(lambda m: f"{m.group(1)}=***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
               "logger": record.name, "msg": redact(record.getMessage())}
        for key, value in vars(record).items():
            if key not in _STD and not key.startswith("_"):
                out[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


class SafeWatchedFileHandler(logging.handlers.WatchedFileHandler):
    """A REST log that cannot break a REST call: a vanished or unwritable directory is reported, not raised."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)
        except OSError:
            self.handleError(record)


_configured: set[str] = set()


def configure_logging(settings: Settings) -> None:
    """Idempotent per process: JSON to stderr; every REST call also to `rest.log` (rotated by logrotate)."""
    root = logging.getLogger("b24app")
    root.setLevel(settings.log_level.upper())
    if "stderr" not in _configured and settings.mode != "test":
        handler = logging.StreamHandler()
        handler.setLevel(settings.log_level.upper())
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.propagate = False
        _configured.add("stderr")
    if settings.rest_log_dir and settings.rest_log_dir not in _configured:
        path = Path(settings.rest_log_dir)
        path.mkdir(parents=True, exist_ok=True)
        # Several processes append to one file; logrotate (install/logrotate/b24app) rotates it daily and
        # keeps 3 days. WatchedFileHandler reopens the file after rotation instead of rotating it itself.
        fh = SafeWatchedFileHandler(path / "rest.log", encoding="utf-8")
        fh.setFormatter(JsonFormatter())
        rest = logging.getLogger("b24app.rest")
        rest.setLevel(logging.DEBUG)  # every call goes to the file; stderr keeps its own level
        rest.addHandler(fh)
        _configured.add(settings.rest_log_dir)
