"""Payment records on the deal (issue #15): the pure command builders and the re-check (table tests), and the
commands driven through BitrixClient against the portal sandbox (add, sum, pay, find again, unpay, delete;
a non-administrator and a portal without scope `sale` get the documented errors)."""
from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from b24app.pipeline import paymentrecords as pr
from b24app.adapters.bitrix.client import call_with_token
from b24app.adapters.bitrix.errors import BitrixError, InsufficientScope
from b24app.sandbox.stack import APP_CLIENT_ID, APP_CLIENT_SECRET
from conftest import start_seeded_stack
from test_rest_echo import token_of

MARK = pr.marker("op17:inv5")


# -- pure -------------------------------------------------------------------------------------------------
def test_commands_add_then_sum_and_marker_then_pay_in_one_batch():
    cmds = pr.commands_for("r1", 42, "1500", "rub", MARK)
    assert list(cmds) == ["r1_add", "r1_sum", "r1_pay"]
    assert cmds["r1_add"] == ("crm.item.payment.add", {"entityTypeId": 2, "entityId": 42})
    assert cmds["r1_sum"] == ("sale.payment.update", {"id": "$result[r1_add]",
                                                      "fields": {"sum": Decimal("1500.00"), "xmlId": MARK}})
    assert cmds["r1_pay"] == ("crm.item.payment.pay", {"id": "$result[r1_sum][payment][id]"})


@pytest.mark.parametrize("results, errors, expected", [
    ({"p_add": 7, "p_sum": {"payment": {"id": 7}}, "p_pay": True}, {}, (7, True, [])),
    ({}, {"p_add": "e", "p_sum": "e", "p_pay": "e"}, (None, False, [])),
    ({"p_add": 7}, {"p_sum": "e", "p_pay": "e"}, (7, False, ["p_cleanup_unpay", "p_cleanup_delete"])),
    ({"p_add": 7, "p_sum": {"payment": {"id": 7}}}, {"p_pay": "e"}, (7, False, ["p_cleanup_unpay", "p_cleanup_delete"])),
    ({"p_add": "x"}, {}, (None, False, [])),
])
def test_outcome_cleans_up_a_half_made_record(results, errors, expected):
    got = pr.outcome("p", results, errors)
    assert (got.payment_id, got.complete, list(got.cleanup)) == expected


@pytest.mark.parametrize("deal, amount, currency, mark, deal_currency", [
    (42, "0", "RUB", MARK, None),            # nothing to record
    (42, "-5", "RUB", MARK, None),
    (42, "abc", "RUB", MARK, None),
    (42, "NaN", "RUB", MARK, None),
    (42, "10", "руб", MARK, None),           # not a currency code
    (42, "10", "USD", MARK, "RUB"),          # the record would be in the deal's currency
    (42, "10", "RUB", "bx_6349845343355", None),  # Bitrix24's own xmlId is not our marker
    (42, "10", "RUB", MARK + " x", None),
    (0, "10", "RUB", MARK, None),
])
def test_bad_values_are_refused_with_a_clear_error(deal, amount, currency, mark, deal_currency):
    with pytest.raises(pr.PaymentRecordError):
        pr.commands_for("r", deal, amount, currency, mark, deal_currency=deal_currency)


def test_marker_is_the_outbox_tag_of_the_key():
    from b24app.pipeline.outbox import tag_for

    key = "op17:d5:inv9:record " + "x" * 200
    assert pr.marker(key) == tag_for(key) and len(pr.marker(key)) == 31
    assert pr.marker("a") != pr.marker("b")
    with pytest.raises(pr.PaymentRecordError):
        pr.marker("")


def test_undo_unpays_before_deleting():
    assert list(pr.undo_commands("u", 1036).items()) == [("u_unpay", ("crm.item.payment.unpay", {"id": 1036})),
                                                         ("u_delete", ("crm.item.payment.delete", {"id": 1036}))]
    assert list(pr.undo_commands("u", 1036, delete=False)) == ["u_unpay"]


DEAL_ROWS = [  # crm-item-payment-list.md's example, plus a record of ours and a duplicate
    {"id": 1036, "accountNumber": "3653/1", "paid": "Y", "datePaid": "2024-05-20T12:32:02+03:00", "empPaidId": 1,
     "paySystemId": 6, "sum": 0, "currency": "RUB", "paySystemName": "Наличные"},
    {"id": 1037, "accountNumber": "3653/2", "paid": "N", "datePaid": None, "empPaidId": None, "paySystemId": 6,
     "sum": 1500, "currency": "RUB", "paySystemName": "Наличные"},
    {"id": 1040, "accountNumber": "3653/3", "paid": "Y", "datePaid": None, "empPaidId": 1, "paySystemId": 6,
     "sum": 1500.5, "currency": "RUB", "paySystemName": "Наличные"},
]


@pytest.mark.parametrize("marked, expected", [
    ({"payments": []}, []),                                                       # not there: send again
    ({"payments": [{"id": 1037, "xmlId": MARK}]}, [1037]),
    ({"payments": [{"id": 1040, "xmlId": MARK}, {"id": 1037, "xmlId": MARK}]}, [1037, 1040]),  # duplicate
    ({"payments": [{"id": 1037, "xmlId": "bx_634989d809dc8"}]}, []),              # a filter the portal ignored
    ({"payments": [{"id": 999, "xmlId": MARK}]}, []),                              # on another deal
    ({"payments": [{"id": 1037}]}, []),
    (None, []),
    ([{"id": 1037, "xmlId": MARK}], [1037]),                                       # a bare list
])
def test_find_ours_needs_the_deal_and_the_exact_marker(marked, expected):
    assert [r.id for r in pr.find_ours(DEAL_ROWS, marked, MARK)] == expected


def test_records_parse_the_documented_shape_and_repair_what_is_missing():
    rec = {r.id: r for r in pr.records(DEAL_ROWS + [{"id": "x"}, "junk"])}
    assert set(rec) == {1036, 1037, 1040}
    assert rec[1040] == pr.Record(1040, "3653/3", True, Decimal("1500.5"), "RUB")
    assert pr.repair_commands("r", rec[1037], "1500.00") == {"r_pay": ("crm.item.payment.pay", {"id": 1037})}
    assert pr.repair_commands("r", pr.Record(7, "1/1", True, Decimal("1500"), "RUB"), "1500") == {}
    assert pr.repair_commands("r", rec[1036], "10") == {
        "r_sum": ("sale.payment.update", {"id": 1036, "fields": {"sum": Decimal("10.00")}}),
    }


def test_recheck_asks_for_the_deal_and_the_marker():
    cmds = pr.recheck_commands("c", 42, MARK)
    assert cmds["c_deal"] == ("crm.item.payment.list", {"entityTypeId": 2, "entityId": 42})
    assert cmds["c_mark"][0] == "sale.payment.list" and cmds["c_mark"][1]["filter"] == {"=xmlId": MARK}


# -- end to end through BitrixClient and the portal sandbox ---------------------------------------------------
@pytest.fixture
def seeded(tmp_path):
    # One stack per test: on PostgreSQL every fresh stack empties the one test database, so a module-wide stack
    # would lose its portal to test_a_portal_without_scope_sale_refuses_the_sum's own.
    st = start_seeded_stack(tmp_path, link=False)
    yield st
    st.stop()


def _payments(st, deal_id):
    return [p for p in st.portal_state()["payments"] if p["entityTypeId"] == 2 and p["entityId"] == deal_id]


def test_full_cycle_through_the_client(seeded):
    st = seeded
    client = st.ctx.bitrix(st.member_id())
    deal_id = st.deals[0]["deal_id"]
    mark = pr.marker("e2e-full")
    calls = st.portal_state()["requests"]
    res = client.batch(pr.commands_for("p", deal_id, "1500.00", "RUB", mark))
    assert res.errors == {}, res.errors
    assert pr.outcome("p", res.results, res.errors) == pr.Outcome(int(res.results["p_add"]), True, {})
    assert st.portal_state()["requests"] == calls + 1  # one HTTP request for the three commands
    pid = int(res.results["p_add"])
    [shown] = [p for p in _payments(st, deal_id) if p["id"] == pid]
    assert shown["paid"] == "Y" and Decimal(shown["sum"]) == Decimal("1500") and shown["xmlId"] == mark
    assert shown["datePaid"] and shown["currency"] == "RUB"
    assert "/" in shown["accountNumber"]
    got = client.call("crm.item.payment.get", {"id": pid})
    assert got["paid"] == "Y" and Decimal(str(got["sum"])) == Decimal("1500")

    # the re-check after a crash finds it, and only it
    client.batch(pr.commands_for("q", deal_id, "200", "RUB", pr.marker("e2e-other")))
    found = client.batch(pr.recheck_commands("c", deal_id, mark))
    assert found.errors == {}
    [ours] = pr.find_ours(found.results["c_deal"], found.results["c_mark"], mark)
    assert ours.id == pid and ours.paid and ours.sum == Decimal("1500")
    assert pr.repair_commands("r", ours, "1500") == {}
    # index.md: crm.item.payment.list filters like sale.payment.list, xmlId included (the app does not rely on it)
    only = client.call("crm.item.payment.list", {"entityTypeId": 2, "entityId": deal_id, "filter": {"=xmlId": mark}})
    assert [r["id"] for r in only] == [pid]

    # undo: unpaid, then gone; the other record stays
    undo = client.batch(pr.undo_commands("u", pid))
    assert undo.errors == {} and undo.results == {"u_unpay": True, "u_delete": True}
    assert pid not in [p["id"] for p in _payments(st, deal_id)] and _payments(st, deal_id)
    again = client.batch(pr.recheck_commands("c", deal_id, mark))
    assert pr.find_ours(again.results["c_deal"], again.results["c_mark"], mark) == []
    with pytest.raises(BitrixError) as err:
        client.call("crm.item.payment.get", {"id": pid})
    assert str(err.value.code) == "0" and "не найдена" in err.value.description


def test_partial_and_top_up_leave_two_records_summing_to_the_total(seeded):
    st = seeded
    client = st.ctx.bitrix(st.member_id())
    deal_id = st.deals[1]["deal_id"]
    before = {p["id"] for p in _payments(st, deal_id)}
    cmds = {**pr.commands_for("a", deal_id, "700", "RUB", pr.marker("part-1")),
            **pr.commands_for("b", deal_id, "300.50", "RUB", pr.marker("part-2"))}
    assert client.batch(cmds).errors == {}
    new = [p for p in _payments(st, deal_id) if p["id"] not in before]
    assert sorted(Decimal(p["sum"]) for p in new) == [Decimal("300.50"), Decimal("700")]
    assert all(p["paid"] == "Y" for p in new)
    rows = client.call("crm.item.payment.list", {"entityTypeId": 2, "entityId": deal_id})
    numbers = [r["accountNumber"] for r in rows]
    assert len(set(numbers)) == len(numbers) and len({n.split("/")[0] for n in numbers}) == 1  # one order


def test_a_non_administrator_cannot_set_the_sum(seeded):
    st = seeded
    deal_id = st.deals[0]["deal_id"]
    token = token_of(st, 2)  # Борис, not an administrator
    rest = f"{st.portal_url}/rest/"
    with httpx.Client(timeout=30) as http:
        pid = call_with_token(http, rest, token, "crm.item.payment.add", {"entityTypeId": 2, "entityId": deal_id})
        with pytest.raises(BitrixError) as err:
            call_with_token(http, rest, token, "sale.payment.update", {"id": pid, "fields": {"sum": 5}})
        assert str(err.value.code) == "200040300020" and err.value.status == 400
        with pytest.raises(BitrixError) as err:
            call_with_token(http, rest, token, "sale.payment.get", {"id": pid})
        assert str(err.value.code) == "200040300010"
    [p] = [p for p in _payments(st, deal_id) if p["id"] == pid]
    assert Decimal(p["sum"]) == 0 and p["xmlId"].startswith("bx_")  # nothing changed


def test_documented_errors_for_unknown_ids_and_entities(seeded):
    st = seeded
    client = st.ctx.bitrix(st.member_id())
    res = client.batch({
        "lead": ("crm.item.payment.add", {"entityTypeId": 1, "entityId": 1}),
        "nodeal": ("crm.item.payment.add", {"entityTypeId": 2, "entityId": 999999}),
        "noid": ("crm.item.payment.pay", {}),
        "unknown": ("crm.item.payment.unpay", {"id": 987654}),
        "sale": ("sale.payment.update", {"id": 987654, "fields": {"sum": 1}}),
        "leads": ("crm.item.payment.list", {"entityTypeId": 1, "entityId": 1}),
    })
    errs = {k: (str(e.code), e.description) for k, e in res.errors.items()}
    assert errs["lead"] == ("0", "Для данной сущности функционал создания оплат недоступен")
    assert errs["nodeal"] == ("0", "Сущность с идентификатором №999999 не существует")
    assert errs["noid"][0] == "100"
    assert errs["unknown"] == ("0", "Оплата не найдена или доступ запрещен")
    assert errs["sale"] == ("200640400001", "payment is not exists")
    assert res.results["leads"] == []  # index.md: other types list nothing


def test_a_portal_without_scope_sale_refuses_the_sum(tmp_path):
    st = start_seeded_stack(tmp_path, link=False)
    try:
        # the app's registration without `sale` (an older version of the app, as the portal granted it)
        httpx.post(f"{st.sandbox_url}/sandbox/apps", timeout=30, json={
            "client_id": APP_CLIENT_ID, "client_secret": APP_CLIENT_SECRET, "install_url": f"{st.app_url}/install",
            "handler_url": f"{st.app_url}/app", "scope": "crm,placement,im,task,user_brief"}).raise_for_status()
        client = st.ctx.bitrix(st.member_id())
        assert "sale" not in client.call("scope")
        deal_id = st.deals[0]["deal_id"]
        res = client.batch(pr.commands_for("p", deal_id, "10", "RUB", pr.marker("noscope")))
        assert isinstance(res.errors["p_sum"], InsufficientScope)
        assert res.errors["p_sum"].code == "insufficient_scope"
        # add is crm: the record is there, unmarked, of sum 0 and, since pay refers to the sum's answer, unpaid;
        # the outcome removes it (the outbox must not send these commands to a portal without `sale`)
        assert "p_pay" in res.errors
        [left] = [p for p in _payments(st, deal_id) if p["id"] == int(res.results["p_add"])]
        assert left["paid"] == "N" and Decimal(left["sum"]) == 0
        out = pr.outcome("p", res.results, res.errors)
        assert not out.complete and client.batch(out.cleanup).errors == {}
        assert _payments(st, deal_id) == []
    finally:
        st.stop()


def test_the_deal_card_shows_the_records_next_to_the_money_field(seeded):
    st = seeded
    client = st.ctx.bitrix(st.member_id())
    deal_id = st.deals[2]["deal_id"]
    client.call("crm.deal.userfield.add", {"fields": {"FIELD_NAME": "PAYREC_PAID", "USER_TYPE_ID": "money"}})
    client.call("crm.deal.update", {"id": deal_id, "fields": {"UF_CRM_PAYREC_PAID": "1250.50|RUB"}})
    res = client.batch({**pr.commands_for("a", deal_id, "1000", "RUB", pr.marker("card-1")),
                        "b_add": ("crm.item.payment.add", {"entityTypeId": 2, "entityId": deal_id})})
    page = httpx.get(f"{st.portal_url}/crm/deal/details/{deal_id}/", params={"user": 1}, timeout=30)
    assert page.status_code == 200
    assert 'data-money-field="UF_CRM_PAYREC_PAID">1250.5|RUB<' in page.text
    paid, unpaid = res.results["a_add"], res.results["b_add"]
    assert f'data-payment-id="{paid}" data-paid="Y"' in page.text and "1\u00a0000,00 RUB" in page.text
    assert f'data-payment-id="{unpaid}" data-paid="N"' in page.text and "Не оплачено" in page.text


def test_a_user_without_the_right_on_the_deal_gets_the_documented_error(seeded):
    """crm-item-payment-add.md: "требуется право на изменение объекта CRM"; -get.md: "Оплата не найдена или
    доступ запрещен" (one answer for both)."""
    st = seeded
    deal_id = st.deals[0]["deal_id"]  # assigned to someone else than the new user
    st.portal_http("POST", "/sandbox/users", json={"id": 77, "name": "Гость", "deal_read": "own"}).raise_for_status()
    pid = st.ctx.bitrix(st.member_id()).call("crm.item.payment.add", {"entityTypeId": 2, "entityId": deal_id})
    token = token_of(st, 77)
    rest = f"{st.portal_url}/rest/"
    with httpx.Client(timeout=30) as http:
        with pytest.raises(BitrixError) as err:
            call_with_token(http, rest, token, "crm.item.payment.add", {"entityTypeId": 2, "entityId": deal_id})
        assert (str(err.value.code), err.value.description, err.value.status) == ("0", "Недостаточно прав", 400)
        for method in ("crm.item.payment.get", "crm.item.payment.pay", "crm.item.payment.delete"):
            with pytest.raises(BitrixError) as err:
                call_with_token(http, rest, token, method, {"id": pid})
            assert err.value.description == "Оплата не найдена или доступ запрещен", method
    assert [p["paid"] for p in _payments(st, deal_id) if p["id"] == pid] == ["N"]
