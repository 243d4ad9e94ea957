"""The T-Bank sandbox: T-ID (OAuth pages and back channel) plus the Business API, as one Flask app.

State lives in `app.extensions["bank_sandbox"]` (a `BankSandboxState`); see `bank_control` for the
/sandbox/... control API that tests and the demo use to add payments and inject faults.
"""
from __future__ import annotations

import uuid
from typing import Callable, Sequence

from flask import Flask, request

from . import api as bank_api, control as bank_control, tid as bank_tid
from .state import BankSandboxState, SandboxConfig

DEMO_INN = "7701234560"
DEMO_KPP = "770101001"
DEMO_NAME = "ООО «Ромашка»"
DEMO_PHONE = "+79990000001"
DEMO_CLIENT_ID = "b24app-demo"
DEMO_CLIENT_SECRET = "demo-secret"


def create_bank_sandbox(
    *,
    access_ttl: int = 1800,
    rate_limit_rps: float = 20.0,
    code_ttl: int = 60,
    webhook_retry_delays: tuple[float, ...] = (0.2, 0.5, 1, 2),
    clock: Callable[[], float] | None = None,
    seed: int = 0,
    redirect_uris: Sequence[str] = (),
) -> Flask:
    """Build a fresh sandbox app with the demo company, its accounts and the demo partner client."""
    app = Flask(__name__)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    config = SandboxConfig(
        access_ttl=access_ttl, rate_limit_rps=rate_limit_rps, code_ttl=code_ttl,
        webhook_retry_delays=tuple(webhook_retry_delays),
    )
    state = BankSandboxState(config, clock, seed)
    with state.lock:
        state.add_company(
            DEMO_INN, DEMO_KPP, DEMO_NAME, phones=[DEMO_PHONE],
            accounts=[
                {"currency": "RUB", "name": "Основной расчетный счет"},
                {"currency": "RUB", "name": "Расчетный счет для маркетплейсов"},
                {"currency": "USD", "name": "Валютный счет USD"},
            ],
        )
        state.add_client(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, list(redirect_uris), name="Сверка платежей для Битрикс24")
    app.extensions["bank_sandbox"] = state
    app.register_blueprint(bank_tid.bp)
    app.register_blueprint(bank_api.bp)
    app.register_blueprint(bank_control.bp)

    @app.after_request
    def _request_id(response):
        response.headers["X-Request-Id"] = request.headers.get("X-Request-Id") or str(uuid.uuid4())
        return response

    return app


def bank_state(app: Flask) -> BankSandboxState:
    """The sandbox state of an app made by `create_bank_sandbox`."""
    return app.extensions["bank_sandbox"]
