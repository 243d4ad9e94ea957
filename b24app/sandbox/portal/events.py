"""Event delivery of the Bitrix24 sandbox: form-encoded POSTs with PHP-nested `data[...]`/`auth[...]`,
sent inline or from one background thread, never retried, each recorded with its HTTP status."""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterable

import httpx

from . import phpquery
from .state import Delivery, EventBinding, Portal, SandboxState

WAIT_SECONDS = 10.0


class EventDeliverer:
    """Posts deliveries to app handlers; `mode` "sync" posts in the caller's thread, "async" in a worker."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self._start_lock = threading.Lock()

    def submit(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            if self.state.event_delivery == "sync":
                self._deliver(delivery)
            else:
                self._ensure_worker()
                self._queue.put(delivery)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="b24-sandbox-events", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            self._deliver(delivery)

    def _http(self) -> httpx.Client:
        with self._start_lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.state.event_timeout, follow_redirects=False)
            return self._client

    def _deliver(self, delivery: Delivery) -> None:
        try:
            response = self._http().post(
                delivery.handler, content=phpquery.encode(delivery.payload).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded",
                         "User-Agent": "Bitrix24 Webhook Engine"})
            delivery.status = response.status_code
        except Exception as exc:  # noqa: BLE001  (a bad handler URL must not stop the delivery thread)
            delivery.error = f"{type(exc).__name__}: {exc}"
        finally:
            delivery.delivered_at = self.state.clock()
            delivery.done.set()


def wait_all(deliveries: Iterable[Delivery], timeout: float = WAIT_SECONDS) -> None:
    for delivery in deliveries:
        delivery.done.wait(timeout)


def base_auth(state: SandboxState, portal: Portal, host: str, application_token: str) -> dict[str, Any]:
    return {"domain": portal.domain(host), "server_endpoint": f"http://{host}/rest/", "status": "L",
            "client_endpoint": portal.client_endpoint(host), "member_id": portal.member_id,
            "application_token": application_token}


def build_deliveries(state: SandboxState, portal: Portal, host: str, bindings: Iterable[EventBinding],
                     event: str, data: dict[str, Any], *, acting_user: int, tokens: str = "access",
                     application_token: str | None = None) -> list[Delivery]:
    """Make (and record) one Delivery per binding; `tokens` is "none", "access" or "pair" (with refresh)."""
    made: list[Delivery] = []
    with state.lock:
        for binding in bindings:
            inst = portal.installations.get(binding.client_id)
            app_token = application_token or (inst.application_token if inst else "")
            auth: dict[str, Any] = {}
            if tokens != "none":
                user_id = binding.auth_type or acting_user
                access, refresh = state.issue_pair(portal, binding.client_id, user_id)
                auth.update({"access_token": access.value, "expires": str(int(access.expires_at)),
                             "expires_in": str(state.access_ttl), "scope": state.apps[binding.client_id].scope})
                auth.update({k: v for k, v in base_auth(state, portal, host, app_token).items()
                             if k != "application_token"})
                auth["user_id"] = str(user_id)
                if tokens == "pair":
                    auth["refresh_token"] = refresh.value
                auth["application_token"] = app_token
            else:
                auth = base_auth(state, portal, host, app_token)
            payload = {"event": binding.event, "event_handler_id": str(binding.id), "data": data,
                       "ts": str(int(state.clock())), "auth": auth}
            delivery = Delivery(id=portal.next_id("delivery"), event=binding.event, handler=binding.handler,
                                event_handler_id=binding.id, client_id=binding.client_id, payload=payload)
            portal.deliveries.append(delivery)
            made.append(delivery)
    return made


def bindings_for(portal: Portal, event: str, data: dict[str, Any]) -> list[EventBinding]:
    """Bindings that receive `event`: only online ones of apps whose installation has finished."""
    names = {event}
    fields = data.get("FIELDS") if isinstance(data, dict) else None
    if event.startswith("ONCRMDYNAMICITEM") and isinstance(fields, dict) and fields.get("ENTITY_TYPE_ID"):
        names.add(f"{event}_{fields['ENTITY_TYPE_ID']}")
    result = []
    for binding in portal.events:
        inst = portal.installations.get(binding.client_id)
        if binding.event in names and binding.event_type == "online" and inst is not None and inst.installed:
            result.append(binding)
    return result


def emit_data_events(state: SandboxState, portal: Portal, host: str, acting_user: int,
                     pending: list[tuple[str, dict[str, Any]]]) -> list[Delivery]:
    """Deliver the events a REST call produced (CRM changes) to every bound, installed app."""
    made: list[Delivery] = []
    for event, data in pending:
        with state.lock:
            bindings = bindings_for(portal, event, data)
        made.extend(build_deliveries(state, portal, host, bindings, event, data, acting_user=acting_user))
    if made and state.deliverer is not None:
        state.deliverer.submit(made)
    return made
