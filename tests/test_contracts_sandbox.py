"""The sandboxes answer like the docs: each contract's documented example (tests/contracts/) against the
sandbox's answer to the same request — the same keys, the same JSON types (b24app.contracts.shape_differences).

A fixture may list `sandbox_expected_differences` (a point another helper is changing in the sandbox): those
paths are tolerated here until the lead merges that work and removes the mark.
"""
from __future__ import annotations

import json

import httpx
import pytest

from b24app.contracts import load_contracts
from conftest import start_seeded_stack

CONTRACTS = load_contracts()
BITRIX_METHODS = sorted(n for n, c in CONTRACTS.items() if c.system == "bitrix24" and c.kind == "method")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    st = start_seeded_stack(tmp_path_factory.mktemp("contracts"), link=True)
    yield st
    st.stop()


def placeholders(st) -> dict[str, object]:
    deal = st.deals[0]
    client = st.ctx.bitrix(st.member_id())
    item = client.call("crm.item.get", {"entityTypeId": 31, "id": deal["invoice_id"]})["item"]
    return {"deal_id": deal["deal_id"], "invoice_id": deal["invoice_id"], "company_id": item["companyId"],
            "invoice_category": item["categoryId"], "invoice_stage": item["stageId"], "app_url": st.app_url}


def fill(value, values: dict):
    """The fixture's sandbox_request with {deal_id}-style placeholders filled in (whole values keep their type)."""
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    if isinstance(value, str) and "{" in value:
        for key, real in values.items():
            if value == "{" + key + "}":
                return real
            value = value.replace("{" + key + "}", str(real))
    return value


def tolerated(contract, diffs):
    marks = [p for mark in contract.expected_differences for p in mark["paths"]]
    return [d for d in diffs if not any(d.path == p or d.path.startswith(p + ".") or d.path.startswith(p + "[")
                                        for p in marks)]


@pytest.mark.parametrize("name", BITRIX_METHODS)
def test_portal_sandbox_answers_like_the_docs(seeded, name):
    contract = CONTRACTS[name]
    params = fill(contract.sandbox_request if contract.sandbox_request is not None else contract.request,
                  placeholders(seeded))
    body = seeded.ctx.bitrix(seeded.member_id()).call_raw(name, params)
    diffs = tolerated(contract, contract.differences(body))
    assert not diffs, f"{name}: sandbox differs from {contract.source}:\n" + "\n".join(map(str, diffs)) + \
        "\nanswer: " + json.dumps(body, ensure_ascii=False, default=str)[:1500]
