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


def placeholders(st, name: str = "") -> dict[str, object]:
    deal = st.deals[0]
    client = st.ctx.bitrix(st.member_id())
    item = client.call("crm.item.get", {"entityTypeId": 31, "id": deal["invoice_id"]})["item"]
    values = {"deal_id": deal["deal_id"], "invoice_id": deal["invoice_id"], "company_id": item["companyId"],
              "invoice_category": item["categoryId"], "invoice_stage": item["stageId"], "app_url": st.app_url}
    if ".payment." in name:  # a fresh record on the deal for each payment method (pay, delete... change it)
        payment_id = client.call("crm.item.payment.add", {"entityTypeId": 2, "entityId": deal["deal_id"]})
        xml_id = client.call("sale.payment.get", {"id": payment_id})["payment"]["xmlId"]
        values.update(payment_id=payment_id, payment_xml_id=xml_id)
    return values


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
                  placeholders(seeded, name))
    body = seeded.ctx.bitrix(seeded.member_id()).call_raw(name, params)
    diffs = tolerated(contract, contract.differences(body))
    assert not diffs, f"{name}: sandbox differs from {contract.source}:\n" + "\n".join(map(str, diffs)) + \
        "\nanswer: " + json.dumps(body, ensure_ascii=False, default=str)[:1500]


def test_portal_sandbox_time_block_is_the_documented_one(seeded):
    contract = CONTRACTS["time"]
    body = seeded.ctx.bitrix(seeded.member_id()).call_raw("user.current", {})
    diffs = tolerated(contract, contract.differences(body["time"], ignore=()))
    assert not diffs, "\n".join(map(str, diffs))


# -- T-Bank ------------------------------------------------------------------------------------------------
BANK_CALLS = {  # contract -> (HTTP method, path) the sandbox is asked with the linked company's token
    "tbank GET /api/v4/bank-accounts": ("GET", "/api/v4/bank-accounts"),
    "tbank GET /api/v1/company": ("GET", "/api/v1/company"),
    "tbank GET /api/v1/statement": ("GET", "/api/v1/statement"),
    "tbank POST /api/v1/webhook": ("POST", "/api/v1/webhook"),
    "tbank GET /api/v1/webhook": ("GET", "/api/v1/webhook"),
    "tbank DELETE /api/v1/webhook/{id}": ("DELETE", "/api/v1/webhook/{id}"),
}


def _link(st):
    from sqlalchemy import select

    from b24app.banklinks.tbank import LinkTokens
    from b24app.storage.models import BankAccount, BankLink

    with st.ctx.db.session() as s:
        link = s.scalars(select(BankLink)).first()
        account = s.scalars(select(BankAccount).where(BankAccount.link_id == link.id)).first()
        return link.id, account.account_number, LinkTokens(st.ctx, link.id)


@pytest.mark.parametrize("name", list(BANK_CALLS))
def test_bank_sandbox_answers_like_the_contract(seeded, name):
    contract = CONTRACTS[name]
    method, path = BANK_CALLS[name]
    link_id, account, tokens = _link(seeded)
    seeded.pay("1500.00", "Оплата по счету № 1207")  # at least one operation in the statement
    headers = {"Authorization": f"Bearer {tokens()}"}
    base = seeded.settings.tbank_api_url
    if name.endswith("/statement"):
        r = httpx.get(base + path, headers=headers, params={**contract.request, "accountNumber": account,
                                                            "from": "2020-01-01T00:00:00Z", "to": "2099-01-01T00:00:00Z",
                                                            "limit": 1})
    elif method == "POST":
        r = httpx.post(base + path, headers=headers, params=contract.request["query"],
                       json={**contract.request["body"], "url": f"{seeded.app_url}/bank/webhook/{link_id}"})
    elif method == "DELETE":
        hook = httpx.post(base + "/api/v1/webhook", headers=headers, params={"eventType": "oper-feed-operation"},
                          json={"url": "https://example.com/h", "email": "ops@example.com",
                                "hasSignature": False}).json()["id"]
        r = httpx.delete(base + path.replace("{id}", hook), headers=headers)
    else:
        r = httpx.get(base + path, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    diffs = tolerated(contract, contract.differences(body))
    assert not diffs, f"{name}: sandbox differs from {contract.source}:\n" + "\n".join(map(str, diffs)) + \
        "\nanswer: " + json.dumps(body, ensure_ascii=False)[:1500]


def test_tid_sandbox_answers_like_the_contract(seeded):
    """introspect, then refresh (rotates the link's pair, so it runs last), then revoke the new pair."""
    from b24app.banklinks.tbank import _owner
    from b24app.storage.models import BankLink

    link_id, _, tokens = _link(seeded)
    tid = seeded.settings.tbank_id_url
    auth = (seeded.settings.tbank_client_id, seeded.settings.tbank_client_secret)
    with seeded.ctx.db.session() as s:
        link = s.get(BankLink, link_id)
        refresh = seeded.ctx.cipher.decrypt(_owner(link), link.refresh_token_enc)
    answers = {"tid POST /auth/introspect": httpx.post(f"{tid}/auth/introspect", auth=auth,
                                                       data={"token": tokens()})}
    answers["tid POST /auth/token (refresh)"] = httpx.post(
            f"{tid}/auth/token", auth=auth, data={"grant_type": "refresh_token", "refresh_token": refresh})
    for name, r in answers.items():
        assert r.status_code == 200, r.text
        diffs = tolerated(CONTRACTS[name], CONTRACTS[name].differences(r.json()))
        assert not diffs, f"{name}: " + "\n".join(map(str, diffs))
