"""Deliver `oper-feed-operation` webhooks from background threads, with retries, as the bank does."""
from __future__ import annotations

import base64
import threading
from datetime import datetime, timezone
from typing import Any

import httpx

from .state import BankSandboxState, Webhook, iso_z


def _auth_header(hook: Webhook) -> dict[str, str]:
    if not hook.auth_secret:
        return {}
    if hook.auth_type == "Basic":
        # authSecret holds "login:password" for Basic.
        return {"Authorization": "Basic " + base64.b64encode(hook.auth_secret.encode()).decode()}
    return {"Authorization": f"Bearer {hook.auth_secret}"}


def _deliver(state: BankSandboxState, hook: Webhook, payload: dict[str, Any]) -> None:
    config = state.config
    delays = tuple(config.webhook_retry_delays) or (0.0,)
    with httpx.Client(timeout=config.webhook_timeout, trust_env=False) as client:
        for attempt in range(1, config.webhook_attempts + 1):
            if state.stop_event.is_set():
                return
            try:
                response = client.post(hook.url, json=payload, headers=_auth_header(hook))
                status: int | str = response.status_code
                ok = 200 <= response.status_code < 300
            except httpx.HTTPError as exc:
                status, ok = f"error: {type(exc).__name__}", False
            with state.lock:
                state.webhook_deliveries.append({
                    "webhook_id": hook.id, "url": hook.url, "operationId": payload.get("operationId"),
                    "attempt": attempt, "status": status, "ok": ok,
                    "at": iso_z(datetime.now(timezone.utc)),
                })
            if ok:
                return
            if attempt < config.webhook_attempts:
                delay = delays[min(attempt - 1, len(delays) - 1)]
                if state.stop_event.wait(delay):
                    return


def fire_webhooks(state: BankSandboxState, record_data: dict[str, Any], company: tuple[str, str]) -> int:
    """Queue a delivery of the operation to every webhook of the company; returns the number of deliveries started."""
    with state.lock:
        hooks = [h for h in state.webhooks.values() if h.company == company and h.event_type == "oper-feed-operation"]
        times = 2 if hooks and state.roll("duplicate_webhook") else 1
        payload = dict(record_data)
        started = 0
        for hook in hooks:
            for _ in range(times):
                thread = threading.Thread(
                    target=_deliver, args=(state, hook, payload), name=f"bank-webhook-{hook.id}", daemon=True,
                )
                state.delivery_threads.append(thread)
                thread.start()
                started += 1
        state.delivery_threads = [t for t in state.delivery_threads if t.is_alive()]
        return started
