"""Both sandboxes can answer API calls late (POST /sandbox/config {"latency_ms": N}) for scale benchmarks.

The delay applies to the REST / Business API only, never to the control API, so a benchmark can still
seed and inspect quickly. Checked without measuring durations: with a long latency an API call runs
into a short client timeout while control calls still answer.
"""
from __future__ import annotations

import httpx
import pytest

from b24app.sandbox.tbank.app import DEMO_INN, DEMO_KPP, create_bank_sandbox
from b24app.sandbox.portal.app import create_portal_sandbox
from b24app.sandbox.server import serve_in_thread

LONG_MS = 5000          # far longer than the client timeout below
SHORT = httpx.Timeout(0.3)
CONTROL = httpx.Timeout(10.0)


@pytest.fixture
def portal():
    server = serve_in_thread(create_portal_sandbox())
    yield server.url
    server.stop()


@pytest.fixture
def bank():
    server = serve_in_thread(create_bank_sandbox())
    yield server.url
    server.stop()


def test_portal_rest_is_delayed_and_control_api_is_not(portal):
    rest = f"{portal}/p/demo/rest/1/sandboxhook/crm.deal.list.json"
    assert httpx.post(rest, json={}, timeout=CONTROL).status_code == 200

    r = httpx.post(f"{portal}/sandbox/config", json={"latency_ms": LONG_MS}, timeout=CONTROL)
    assert r.status_code == 200 and r.json()["latency_ms"] == LONG_MS
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(rest, json={}, timeout=SHORT)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{portal}/oauth/token/", data={"grant_type": "refresh_token"}, timeout=SHORT)
    # control endpoints answer at once
    assert httpx.get(f"{portal}/p/demo/sandbox/state", timeout=SHORT).status_code == 200
    assert httpx.get(f"{portal}/sandbox/state", timeout=SHORT).status_code == 200

    r = httpx.post(f"{portal}/sandbox/config", json={"latency_ms": 0}, timeout=SHORT)
    assert r.json()["latency_ms"] == 0
    assert httpx.post(rest, json={}, timeout=CONTROL).status_code == 200


def test_portal_rejects_a_bad_latency(portal):
    r = httpx.post(f"{portal}/sandbox/config", json={"latency_ms": -5}, timeout=CONTROL)
    assert r.status_code == 400
    assert httpx.get(f"{portal}/sandbox/config", timeout=CONTROL).json()["latency_ms"] == 0


def test_bank_api_is_delayed_and_control_api_is_not(bank):
    token = httpx.post(f"{bank}/sandbox/static-tokens", json={"inn": DEMO_INN, "kpp": DEMO_KPP},
                       timeout=CONTROL).json()["token"]
    api = f"{bank}/openapi/api/v4/bank-accounts"
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(api, headers=headers, timeout=CONTROL).status_code == 200

    r = httpx.post(f"{bank}/sandbox/config", json={"latency_ms": LONG_MS}, timeout=CONTROL)
    assert r.status_code == 200 and r.json()["latency_ms"] == LONG_MS
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(api, headers=headers, timeout=SHORT)
    state = httpx.get(f"{bank}/sandbox/state", timeout=SHORT)
    assert state.status_code == 200 and state.json()["config"]["latency_ms"] == LONG_MS

    assert httpx.post(f"{bank}/sandbox/config", json={"latency_ms": 0}, timeout=SHORT).json()["latency_ms"] == 0
    assert httpx.get(api, headers=headers, timeout=CONTROL).status_code == 200


def test_bank_rejects_a_bad_latency(bank):
    assert httpx.post(f"{bank}/sandbox/config", json={"latency_ms": "slow"}, timeout=CONTROL).status_code == 400
    assert httpx.post(f"{bank}/sandbox/config", json={"latency_ms": 10**9}, timeout=CONTROL).status_code == 400
