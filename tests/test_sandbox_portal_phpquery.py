"""PHP-style nested query strings as Bitrix24 reads and writes them."""
from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qsl

from b24app.sandbox.portal import phpquery


def test_parse_builds_nested_dicts_and_operator_keys():
    parsed = phpquery.parse("filter[>ID]=5&filter%5B%3DSTAGE_ID%5D=NEW&order[ID]=DESC&start=50")
    assert parsed == {"filter": {">ID": "5", "=STAGE_ID": "NEW"}, "order": {"ID": "DESC"}, "start": "50"}


def test_parse_appends_and_turns_sequential_keys_into_lists():
    parsed = phpquery.parse("select[]=ID&select[]=TITLE&filter[@ID][0]=1&filter[@ID][1]=2")
    assert parsed == {"select": ["ID", "TITLE"], "filter": {"@ID": ["1", "2"]}}


def test_parse_keeps_non_sequential_int_keys_as_dict_and_url_decoding():
    parsed = phpquery.parse("cmd[2]=a&cmd[5]=b&q=%D0%A1%D1%87%D1%91%D1%82+1&x%5By%5D=z")
    assert parsed == {"cmd": {"2": "a", "5": "b"}, "q": "Счёт 1", "x": {"y": "z"}}


def test_parse_stray_bracket_is_a_plain_key():
    assert phpquery.parse("a[b=1") == {"a[b": "1"}
    assert phpquery.split_key("a[b][][c]") == ["a", "b", "", "c"]


def test_encode_round_trips_nested_data():
    data = {"event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": 5}},
            "auth": {"member_id": "abc", "expires_in": 3600}, "flags": [True, False], "skip": None,
            "amount": Decimal("10.50")}
    encoded = phpquery.encode(data)
    assert "data[FIELDS][ID]=5" in encoded
    assert "skip" not in encoded
    assert phpquery.parse(encoded) == {"event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": "5"}},
                                       "auth": {"member_id": "abc", "expires_in": "3600"},
                                       "flags": ["1", "0"], "amount": "10.50"}


def test_encode_escapes_values_and_operator_keys():
    encoded = phpquery.encode({"filter": {">=ID": "a&b=c"}})
    assert dict(parse_qsl(encoded)) == {"filter[>=ID]": "a&b=c"}


def test_php_array_shapes():
    assert phpquery.php_array({}) == []
    assert phpquery.php_array({"0": "a", "1": "b"}) == ["a", "b"]
    assert phpquery.php_array({"x": 1}) == {"x": 1}
