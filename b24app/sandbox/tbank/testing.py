"""Test helpers for the bank sandbox: a fake clock, a recording HTTP receiver, and a T-ID login driver."""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import unescape
from typing import Any, Iterable, Iterator

import httpx
from flask import Flask, jsonify, request

from .app import DEMO_PHONE
from b24app.sandbox.server import RunningServer, serve_in_thread


class FakeClock:
    """Epoch seconds that only move when told to (thread-safe)."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclass
class Receiver:
    """A tiny HTTP endpoint that records every request; the first `fail_first` POSTs get HTTP 500."""

    fail_first: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: RunningServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "Receiver":
        app = Flask("bank_receiver")

        @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
        @app.route("/<path:path>", methods=["GET", "POST"])
        def catch(path: str):
            with self._lock:
                self.requests.append({
                    "method": request.method, "path": "/" + path, "args": request.args.to_dict(),
                    "headers": dict(request.headers), "json": request.get_json(silent=True),
                })
                posts = sum(1 for r in self.requests if r["method"] == "POST")
            if request.method == "POST" and posts <= self.fail_first:
                return jsonify({"error": "try later"}), 500
            return jsonify({"ok": True})

        self.server = serve_in_thread(app)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def posts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["method"] == "POST"]

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def hidden_flow(html: str) -> str:
    match = re.search(r'name="flow" value="([^"]+)"', html)
    if not match:
        raise AssertionError("no flow field on the T-ID page")
    return match.group(1)


def sms_code(html: str) -> str:
    match = re.search(r'id="sms-code">(\d{4})<', html)
    if not match:
        raise AssertionError("no SMS code on the T-ID page")
    return match.group(1)


def offered_scopes(html: str) -> list[str]:
    return [unescape(s) for s in re.findall(r'name="scope" id="scope-\d+" value="([^"]+)"', html)]


def drive_tid_login(
    http: httpx.Client,
    authorize_url: str,
    *,
    phone: str = DEMO_PHONE,
    untick: Iterable[str] = (),
    deny: bool = False,
) -> httpx.Response:
    """Go through the T-ID pages as a browser would; returns the final 302 (not followed)."""
    page = http.get(authorize_url)
    page.raise_for_status()
    base = str(page.url).split("/auth/")[0]
    flow = hidden_flow(page.text)
    sms_page = http.post(f"{base}/auth/signin", data={"flow": flow, "phone": phone})
    sms_page.raise_for_status()
    consent = http.post(f"{base}/auth/confirm", data={"flow": flow, "code": sms_code(sms_page.text)})
    consent.raise_for_status()
    skip = set(untick)
    form: dict[str, str | list[str]] = {
        "flow": flow, "scope": [s for s in offered_scopes(consent.text) if not any(u in s for u in skip)],
    }
    form["deny" if deny else "allow"] = "1"
    return http.post(f"{base}/auth/consent", data=form)


class AppSlot:
    """A WSGI app whose target can be swapped, so one server (slow to stop) can serve a fresh sandbox per test."""

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"no app in slot"]
        return self.app(environ, start_response)


@contextmanager
def slot_server() -> Iterator[RunningServer]:
    """One loopback server for a test module; each test puts its own sandbox in `.app.app`."""
    running = serve_in_thread(AppSlot())
    try:
        yield running
    finally:
        running.stop()
