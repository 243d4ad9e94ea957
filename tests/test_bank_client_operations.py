"""Parsing of T-Bank operation objects and the fingerprint used to merge duplicates."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from decimal import Decimal

import httpx
import pytest

from b24app.adapters.banks import BankError, MalformedOperation, parse_operation
from b24app.sandbox.tbank.app import DEMO_INN, DEMO_KPP, create_bank_sandbox
from b24app.sandbox.tbank.testing import FakeClock
from b24app.sandbox.server import serve_in_thread

SAMPLE = {
    "operationDate": "2025-04-01T05:16:52Z", "operationId": "32005e8d-5b2c-00f5-ab39-7ab40b53d7a8",
    "operationStatus": "Transaction", "accountNumber": "40802810800000977213", "bic": "044525974",
    "typeOfOperation": "Credit", "category": "incomePeople", "trxnPostDate": "2025-04-01T05:16:56Z",
    "authorizationDate": "2025-04-01T05:16:36Z", "drawDate": "2025-04-01T05:16:52Z",
    "chargeDate": "2025-04-01T05:16:52Z", "docDate": "2025-03-31T21:00:00Z", "documentNumber": "151819",
    "payVo": "bank-order", "vo": "17", "priority": 5, "operationAmount": 3916.1,
    "operationCurrencyDigitalCode": "643", "accountAmount": 3916.1, "accountCurrencyDigitalCode": "643",
    "rubleAmount": 3916.1, "description": "Оплата по счету № 123", "payPurpose": "Оплата  по счету № 123 ",
    "payer": {"acct": "40702810900000001234", "inn": "7710140679", "kpp": "771301001", "name": "ООО \"Плательщик\""},
    "receiver": {"acct": "40802810800000977213", "inn": "598103304535", "kpp": "0", "name": "ИП"},
}


def test_parse_sample_operation():
    op = parse_operation(SAMPLE)
    assert op.operation_id == SAMPLE["operationId"] and op.account_number == "40802810800000977213"
    assert op.operation_date == datetime(2025, 4, 1, 5, 16, 52, tzinfo=timezone.utc)
    assert op.operation_date.tzinfo is not None
    assert op.amount == Decimal("3916.10") and isinstance(op.amount, Decimal)
    assert op.currency == "RUB" and op.is_credit and op.is_transaction
    assert op.payer_inn == "7710140679" and op.payer_account == "40702810900000001234"
    assert op.payer_kpp == "771301001" and op.document_number == "151819"
    assert op.payment_day.isoformat() == "2025-04-01"  # docDate is MSK midnight, the previous UTC day
    assert op.raw["payVo"] == "bank-order"


def test_exact_decimal_from_json_text():
    d = json.loads(json.dumps(SAMPLE | {"accountAmount": 18026.52}), parse_float=Decimal)
    assert parse_operation(d).amount == Decimal("18026.52")
    assert parse_operation(SAMPLE | {"accountAmount": 0.1}).amount == Decimal("0.10")
    assert parse_operation(SAMPLE | {"accountAmount": "1 000.5".replace(" ", "")}).amount == Decimal("1000.50")


def test_cyrillic_credit_debit_and_authorization():
    assert parse_operation(SAMPLE | {"typeOfOperation": "\u0421redit"}).is_credit  # Cyrillic С
    debit = parse_operation(SAMPLE | {"typeOfOperation": "Debit"})
    assert not debit.is_credit
    pending = parse_operation(SAMPLE | {"operationStatus": "Authorization"})
    assert pending.status == "Authorization" and not pending.is_transaction
    usd = parse_operation(SAMPLE | {"accountCurrencyDigitalCode": "840"})
    assert usd.currency == "USD"


def test_counterparty_used_when_payer_missing():
    d = {k: v for k, v in SAMPLE.items() if k != "payer"}
    d["counterParty"] = {"account": "40702810000000000001", "inn": "7700000001", "kpp": "770001001", "name": "X"}
    op = parse_operation(d)
    assert op.payer_inn == "7700000001" and op.payer_account == "40702810000000000001"


@pytest.mark.parametrize("change, field", [
    ({"operationId": None}, "operationId"),
    ({"operationId": ""}, "operationId"),
    ({"accountAmount": "12,3a"}, "accountAmount"),
    ({"accountAmount": -5}, "accountAmount"),
    ({"accountAmount": "1.234"}, "accountAmount"),
    ({"accountAmount": True}, "accountAmount"),
    ({"accountAmount": "NaN"}, "accountAmount"),
    ({"operationDate": "yesterday"}, "operationDate"),
    ({"operationDate": None}, "operationDate"),
    ({"typeOfOperation": "Refund"}, "typeOfOperation"),
    ({"operationStatus": "Done"}, "operationStatus"),
    ({"accountNumber": None}, "accountNumber"),
])
def test_malformed_operations_raise_clear_errors(change, field):
    d = copy.deepcopy(SAMPLE) | change
    with pytest.raises(MalformedOperation) as info:
        parse_operation(d)
    assert info.value.field == field and field in str(info.value)
    assert isinstance(info.value, BankError)


def test_missing_amounts_and_non_object():
    d = {k: v for k, v in SAMPLE.items() if k not in ("accountAmount", "operationAmount")}
    with pytest.raises(MalformedOperation):
        parse_operation(d)
    with pytest.raises(MalformedOperation):
        parse_operation(["not", "a", "dict"])  # type: ignore[arg-type]


def test_fingerprint_ignores_id_and_status_but_not_document_number():
    base = parse_operation(SAMPLE)
    renamed = parse_operation(SAMPLE | {"operationId": "another-id"})
    settled_later = parse_operation(SAMPLE | {"operationDate": "2025-04-01T09:00:00Z", "operationStatus": "Authorization"})
    retyped = parse_operation(SAMPLE | {"payPurpose": "ОПЛАТА по  счету № 123"})
    assert base.fingerprint == renamed.fingerprint == settled_later.fingerprint == retyped.fingerprint
    other_doc = parse_operation(SAMPLE | {"operationId": "x2", "documentNumber": "151820"})
    assert other_doc.fingerprint != base.fingerprint
    other_amount = parse_operation(SAMPLE | {"accountAmount": 3916.2})
    assert other_amount.fingerprint != base.fingerprint
    other_day = parse_operation(SAMPLE | {"docDate": "2025-04-01T21:00:00Z"})
    assert other_day.fingerprint != base.fingerprint
    assert len(base.fingerprint) == 64


def test_fingerprint_stable_when_sandbox_reidentifies():
    clock = FakeClock()
    app = create_bank_sandbox(clock=clock)
    server = serve_in_thread(app)
    try:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            token = http.post("/sandbox/static-tokens", json={"inn": DEMO_INN, "kpp": DEMO_KPP}).json()["token"]
            first = http.post("/sandbox/operations", json={"amount": "500", "payPurpose": "Оплата по счету № 5",
                                                           "documentNumber": "11"}).json()
            second = http.post("/sandbox/operations", json={"amount": "500", "payPurpose": "Оплата по счету № 5",
                                                            "documentNumber": "12"}).json()

            def statement() -> list:
                r = http.get("/openapi/api/v1/statement", headers={"Authorization": f"Bearer {token}"},
                             params={"accountNumber": first["accountNumber"], "from": "2025-01-01T00:00:00Z"})
                return [parse_operation(o) for o in r.json(parse_float=Decimal)["operations"]]

            before = {op.operation_id: op.fingerprint for op in statement()}
            assert len(set(before.values())) == 2  # same payer, day and amount, different document numbers
            clock.advance(3600)
            http.post(f"/sandbox/operations/{first['operationId']}/reidentify")
            after = {op.operation_id: op.fingerprint for op in statement()}
            assert first["operationId"] not in after and set(after.values()) == set(before.values())
            assert after[second["operationId"]] == before[second["operationId"]]
    finally:
        app.extensions["bank_sandbox"].close()
        server.stop()
