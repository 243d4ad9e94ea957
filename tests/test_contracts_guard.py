"""No Bitrix24 method, bank path or event is used by the app without its documented contract in tests/contracts/."""
from __future__ import annotations

import json
import re
from pathlib import Path

from b24app.contracts import load_contracts, shape_differences

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "b24app"
CONTRACTS = load_contracts()
PREFIXES = ("app", "batch", "bizproc", "catalog", "crm", "department", "disk", "entity", "event", "im", "imbot",
            "lists", "placement", "profile", "sale", "scope", "task", "tasks", "user", "userfieldconfig")
METHOD = re.compile(r"(?<!url_for\()[\"']((?:%s)\.[a-z][a-z0-9_.]*[a-z0-9])[\"']" % "|".join(PREFIXES))
BANK_PATH = re.compile(r"[\"'](/(?:api/v\d+|auth)/[a-z\-/]+)")


def app_sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "sandbox" in path.parts or "migrations" in path.parts:
            continue
        yield path, path.read_text(encoding="utf-8")


def methods_used() -> dict[str, str]:
    found = {}
    for path, text in app_sources():
        for m in METHOD.finditer(text):
            if not m.group(1).startswith("placement.api_"):  # Flask endpoint names, not REST methods
                found.setdefault(m.group(1), path.name)
        if '"batch"' in text:
            found.setdefault("batch", path.name)
    return found


def test_every_bitrix_method_the_app_calls_has_a_contract():
    used = methods_used()
    assert "crm.item.list" in used and "batch" in used  # the scan sees the app's calls
    missing = {m: f for m, f in used.items() if m not in CONTRACTS}
    assert not missing, f"Bitrix24 methods without a fixture in tests/contracts/: {missing}"


def test_every_bank_path_the_app_calls_has_a_contract():
    names = " ".join(CONTRACTS)
    used = set()
    for module in ("adapters/banks/tbank.py", "adapters/banks/tid.py"):
        used |= set(BANK_PATH.findall((PACKAGE / module).read_text(encoding="utf-8")))
    assert {"/api/v1/statement", "/auth/token"} <= used
    missing = sorted(p for p in used if p.rstrip("/") not in names)
    assert not missing, f"bank paths without a fixture in tests/contracts/: {missing}"


def test_every_manifest_event_has_a_contract():
    manifest = json.loads((ROOT / "manifest.json").read_text(encoding="utf-8"))
    missing = [e["event"] for e in manifest["events"] if f"event {e['event']}" not in CONTRACTS]
    assert not missing, f"events without a fixture in tests/contracts/: {missing}"


def test_the_guard_sees_a_new_method(tmp_path):
    """The scan would catch a call the app starts making (a method name in a command tuple)."""
    sample = 'cmds["x"] = ("crm.contact.list", {"filter": {}})\nurl_for("placement.api_data")'
    assert [m.group(1) for m in METHOD.finditer(sample)] == ["crm.contact.list"]


def test_every_fixture_names_its_source_and_is_well_formed():
    for name, c in CONTRACTS.items():
        assert c.source.strip(), name
        assert c.shape is not None, name
        assert shape_differences(c.shape, c.shape, open_paths=c.open_paths) == [], name
        for mark in c.expected_differences:
            assert mark.get("helper") and mark.get("paths"), name


def test_the_comparison_names_what_differs():
    doc = {"result": {"items": [{"id": 1, "title": "x", "opportunity": 1.5}]}, "total": 1}
    got = {"result": {"items": [{"id": "1", "opportunity": 2, "extra": True}]}, "total": 1}
    assert [str(d) for d in shape_differences(doc, got)] == [
        "result.items[].id: type (documented number, got string)", "result.items[].title: missing",
        "result.items[].extra: extra"]
    assert shape_differences(doc, got, open_paths=["result.items[]"])[1].kind == "missing"
    assert shape_differences({"a": None}, {"a": {"b": 1}}) == []  # documented null matches any type
    assert shape_differences({"e": {"k": 1}}, {"e": []}) == []     # PHP's empty array


def test_relied_paths_are_checked_in_every_element():
    from b24app.contracts import Contract, missing_relied

    c = Contract("x", "bitrix24", "method", "s", None, None, None, ("result.items[].id", "total?", "next"))
    assert missing_relied(c, {"result": {"items": [{"id": 1}, {"id": 2}]}, "next": 50}) == []
    assert missing_relied(c, {"result": {"items": [{"id": 1}, {"title": "no id"}]}}) == ["result.items[].id", "next"]
    assert missing_relied(c, {"result": {"items": []}, "next": 50}) == []
