"""The portal sandbox behaves as Bitrix24's REST docs say (bitrix-tools/b24-rest-docs), where the app
once relied on looser behaviour: batch commands only as strings, `fields` only lowercase in
crm.timeline.comment.add, tasks.task.list only with documented filter keys."""
from __future__ import annotations

import uuid

import httpx
import pytest

from b24app.sandbox.portal.app import create_portal_sandbox
from b24app.sandbox.server import serve_in_thread


@pytest.fixture(scope="module")
def world():
    server = serve_in_thread(create_portal_sandbox(portals=(), event_delivery="sync"))
    client = httpx.Client(base_url=server.url, timeout=10)
    yield client
    client.close()
    server.stop()


@pytest.fixture()
def call(world):
    code = f"p{uuid.uuid4().hex[:10]}"
    assert world.post("/sandbox/portals", json={"code": code}).status_code == 200

    def _call(method: str, **params) -> httpx.Response:
        return world.post(f"/p/{code}/rest/1/sandboxhook/{method}.json", json=params)
    return _call


def test_batch_commands_must_be_strings(call):
    """settings/how-to-call-rest-api/batch.md: cmd values are strings `method?param=value`."""
    body = call("batch", halt=0, cmd={"s": "user.current",
                                       "o": {"method": "user.current", "params": {}},
                                       "l": ["user.current", {}]}).json()["result"]
    assert body["result"]["s"]["ID"] == "1"
    assert body["result_error"]["o"]["error"] == "ERROR_ARGUMENT"
    assert body["result_error"]["l"]["error"] == "ERROR_ARGUMENT"


def test_timeline_comment_add_takes_only_lowercase_fields(call):
    """crm-timeline-comment-add.md: since crm 23.100.0 only `fields` in lower case; FIELDS is refused (`100`)."""
    deal = call("crm.deal.add", fields={"TITLE": "T"}).json()["result"]
    comment = {"ENTITY_ID": deal, "ENTITY_TYPE": "deal", "COMMENT": "Оплачено"}
    for key in ("FIELDS", "Fields", "arFields"):
        r = call("crm.timeline.comment.add", **{key: comment})
        assert r.status_code == 400 and r.json()["error"] == "100", key
    assert isinstance(call("crm.timeline.comment.add", fields=comment).json()["result"], int)


def test_task_list_filters_title_by_like_pattern_and_refuses_undocumented_prefixes(call):
    """tasks-task-list.md: TITLE takes a pattern with % and _; prefixes are only ! < <= > >=."""
    for title in ("Проверить оплату (ref 0123456789)", "Другая задача"):
        assert call("tasks.task.add", fields={"TITLE": title, "RESPONSIBLE_ID": 2}).status_code == 200
    found = call("tasks.task.list", filter={"RESPONSIBLE_ID": 2, "TITLE": "%ref 0123456789%"}).json()["result"]
    assert [t["title"] for t in found["tasks"]] == ["Проверить оплату (ref 0123456789)"]
    exact = call("tasks.task.list", filter={"TITLE": "другая задача"}).json()["result"]["tasks"]
    assert [t["title"] for t in exact] == ["Другая задача"]
    assert call("tasks.task.list", filter={"TITLE": "Другая"}).json()["result"]["tasks"] == []
    assert call("tasks.task.list", filter={"!RESPONSIBLE_ID": 3}).status_code == 200
    for key in ("%TITLE", "=TITLE", "NO_SUCH_FIELD"):
        r = call("tasks.task.list", filter={key: "ref"})
        assert r.status_code == 400 and r.json()["error"] == "0", key
