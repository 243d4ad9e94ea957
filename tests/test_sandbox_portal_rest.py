"""The sandbox portal's REST surface over real HTTP: webhook, shapes, lists, filters, batch, limits, faults."""
from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest

from b24app.sandbox.portal.app import create_portal_sandbox
from b24app.sandbox.server import serve_in_thread

TIME_KEYS = {"start", "finish", "duration", "processing", "date_start", "date_finish", "operating_reset_at",
             "operating"}


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def world():
    clock = FakeClock()
    server = serve_in_thread(create_portal_sandbox(portals=(), clock=clock, event_delivery="sync"))
    client = httpx.Client(base_url=server.url, timeout=10)
    yield client, clock, server
    client.close()
    server.stop()


@pytest.fixture()
def portal(world):
    """A fresh portal code; the sandbox-wide config and faults are reset for each test."""
    client, _, _ = world
    client.post("/sandbox/config", json={"rate": 2.0, "burst": 50, "access_ttl": 3600})
    client.delete("/sandbox/faults")
    code = f"p{uuid.uuid4().hex[:10]}"
    assert client.post("/sandbox/portals", json={"code": code}).status_code == 200
    return code


def hook(portal: str, method: str) -> str:
    return f"/p/{portal}/rest/1/sandboxhook/{method}"


def call(client: httpx.Client, portal: str, method: str, **params) -> httpx.Response:
    return client.post(hook(portal, method + ".json"), json=params)


def ok(response: httpx.Response):
    assert response.status_code == 200, response.text
    return response.json()["result"]


def test_webhook_with_and_without_json_suffix_and_time_block(world, portal):
    client, _, _ = world
    with_json = client.get(hook(portal, "user.current.json"))
    without = client.get(hook(portal, "user.current"))
    assert with_json.json()["result"]["ID"] == without.json()["result"]["ID"] == "1"
    assert with_json.json()["result"]["NAME"] == "Анна"
    assert set(with_json.json()["time"]) == TIME_KEYS
    assert ok(call(client, portal, "user.admin")) is True
    wrong_code = client.get(f"/p/{portal}/rest/1/otherhook/user.current")
    assert wrong_code.status_code == 401 and wrong_code.json()["error"] == "NO_AUTH_FOUND"


def test_unknown_method_and_unknown_portal(world, portal):
    client, _, _ = world
    r = call(client, portal, "crm.nothing.here")
    assert r.status_code == 404
    assert r.json() == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
    assert client.get("/p/nosuchportal/rest/1/sandboxhook/user.current").status_code == 404


def test_deal_crud_shapes_and_errors(world, portal):
    client, _, _ = world
    deal_id = ok(call(client, portal, "crm.deal.add", fields={"TITLE": "Поставка", "OPPORTUNITY": "1500.5",
                                                               "ASSIGNED_BY_ID": 2}))
    assert isinstance(deal_id, int)
    deal = ok(call(client, portal, "crm.deal.get", id=deal_id))
    assert deal["ID"] == str(deal_id) and deal["OPPORTUNITY"] == "1500.50" and deal["STAGE_ID"] == "NEW"
    assert deal["CATEGORY_ID"] == "0" and deal["ASSIGNED_BY_ID"] == "2" and deal["CURRENCY_ID"] == "RUB"
    assert deal["DATE_CREATE"].endswith("+00:00")
    assert ok(call(client, portal, "crm.deal.update", id=deal_id, fields={"STAGE_ID": "WON"})) is True
    assert ok(call(client, portal, "crm.deal.get", id=deal_id))["STAGE_SEMANTIC_ID"] == "S"
    other = ok(call(client, portal, "crm.deal.add", fields={"TITLE": "Второй", "CATEGORY_ID": 1}))
    assert ok(call(client, portal, "crm.deal.get", id=other))["STAGE_ID"] == "C1:NEW"
    missing = call(client, portal, "crm.deal.get", id=999)
    assert missing.status_code == 400 and missing.json() == {"error": "", "error_description": "Not found"}
    assert call(client, portal, "crm.deal.update", id=999, fields={"TITLE": "x"}).status_code == 400
    assert call(client, portal, "crm.deal.add").json()["error_description"] == "Parameter 'fields' must be array."
    bad_stage = call(client, portal, "crm.deal.update", id=deal_id, fields={"STAGE_ID": "DT31_2:P"})
    assert bad_stage.status_code == 400


def test_deal_list_filters_order_select_form_encoded(world, portal):
    client, _, _ = world
    for i in range(6):
        call(client, portal, "crm.deal.add", fields={"TITLE": f"D{i}", "STAGE_ID": "WON" if i % 2 else "NEW",
                                                     "OPPORTUNITY": 100 * i})
    body = client.post(hook(portal, "crm.deal.list"),
                       content="filter%5B%3DSTAGE_ID%5D=WON&filter%5B%3EID%5D=1"
                               "&order%5BID%5D=DESC&select%5B%5D=ID&select%5B%5D=TITLE",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}).json()
    assert [d["ID"] for d in body["result"]] == ["6", "4", "2"]
    assert set(body["result"][0]) == {"ID", "TITLE"} and body["total"] == 3 and "next" not in body
    in_list = ok(client.get(hook(portal, "crm.deal.list"), params={"filter[@ID][]": ["2", "5"]}))
    assert [d["ID"] for d in in_list] == ["2", "5"]
    rich = ok(call(client, portal, "crm.deal.list", filter={">=OPPORTUNITY": 300}, order={"OPPORTUNITY": "ASC"}))
    assert [d["TITLE"] for d in rich] == ["D3", "D4", "D5"]


def test_paging_120_invoices_in_pages_of_50(world, portal):
    client, _, _ = world
    commands = {f"a{i}": f"crm.item.add?entityTypeId=31&fields[title]=I{i}&fields[opportunity]={i}" for i in range(50)}
    for start in (0, 50, 70):
        batch = {k: v for k, v in list(commands.items())} if start < 70 else dict(list(commands.items())[:20])
        assert not ok(call(client, portal, "batch", halt=1, cmd=batch))["result_error"]
    seen, start, pages = [], 0, []
    while True:
        body = call(client, portal, "crm.item.list", entityTypeId=31, start=start, select=["id"]).json()
        assert body["total"] == 120
        pages.append(len(body["result"]["items"]))
        seen.extend(item["id"] for item in body["result"]["items"])
        if "next" not in body:
            break
        start = body["next"]
    assert pages == [50, 50, 20]
    assert seen == list(range(1, 121))
    fast = call(client, portal, "crm.item.list", entityTypeId=31, start=-1, filter={">id": 100}).json()
    assert len(fast["result"]["items"]) == 20 and "total" not in fast and "next" not in fast


def test_invoice_item_filters(world, portal):
    client, _, _ = world
    deal = ok(call(client, portal, "crm.deal.add", fields={"TITLE": "Сделка"}))
    for number, amount, stage in (("A-1", "100.00", "DT31_2:N"), ("A-2", "250.50", "DT31_2:P"),
                                  ("A-3", "999.99", "DT31_2:D"), ("A-4", "250.50", "DT31_2:S")):
        item = ok(call(client, portal, "crm.item.add", entityTypeId=31,
                       fields={"title": number, "accountNumber": number, "opportunity": amount, "stageId": stage,
                               "parentId2": deal if number != "A-4" else None}))["item"]
        assert item["accountNumber"] == number and item["opportunity"] == float(Decimal(amount))
        assert item["categoryId"] == 2 and item["entityTypeId"] == 31

    def ids(**flt):
        body = call(client, portal, "crm.item.list", entityTypeId=31, filter=flt, order={"id": "ASC"}).json()
        return [i["id"] for i in body["result"]["items"]]

    assert ids(**{"@id": [1, 3, 4]}) == [1, 3, 4]
    assert ids(**{"!@id": [1, 3]}) == [2, 4]
    assert ids(**{">opportunity": 250}) == [2, 3, 4]
    assert ids(**{"=opportunity": "250.5"}) == [2, 4]
    assert ids(**{"=stageId": "DT31_2:P"}) == [2]
    assert ids(**{"!stageId": "DT31_2:N"}) == [2, 3, 4]
    assert ids(**{"<id": 3, "parentId2": deal}) == [1, 2]
    assert ids(accountNumber="a-3") == [3]
    assert ids(**{"%title": "A-"}) == [1, 2, 3, 4]
    desc = call(client, portal, "crm.item.list", entityTypeId=31, order={"opportunity": "DESC", "id": "ASC"},
                select=["id", "opportunity"]).json()["result"]["items"]
    assert [i["id"] for i in desc] == [3, 2, 4, 1] and set(desc[0]) == {"id", "opportunity"}
    upper = ok(call(client, portal, "crm.item.add", entityTypeId=31, fields={"TITLE": "Up", "PARENT_ID_2": deal}))
    assert upper["item"]["title"] == "Up" and upper["item"]["parentId2"] == deal


def test_invoice_update_delete_and_not_found_shapes(world, portal):
    client, _, _ = world
    item = ok(call(client, portal, "crm.item.add", entityTypeId=31, fields={"title": "X"}))["item"]
    moved = ok(call(client, portal, "crm.item.update", entityTypeId=31, id=item["id"],
                    fields={"stageId": "DT31_2:P"}))["item"]
    assert moved["stageId"] == "DT31_2:P" and moved["previousStageId"] == "DT31_2:N"
    assert ok(call(client, portal, "crm.item.get", entityTypeId=31, id=item["id"]))["item"]["stageId"] == "DT31_2:P"
    assert ok(call(client, portal, "crm.item.delete", entityTypeId=31, id=item["id"])) == []
    for method in ("crm.item.get", "crm.item.delete"):
        r = call(client, portal, method, entityTypeId=31, id=item["id"])
        assert r.status_code == 400 and r.json()["error"] == "NOT_FOUND"
    r = call(client, portal, "crm.item.update", entityTypeId=31, id=item["id"], fields={"title": "y"})
    assert r.json()["error"] == "NOT_FOUND"
    assert call(client, portal, "crm.item.list", entityTypeId=5).json()["error"] == "NOT_FOUND"
    bad = call(client, portal, "crm.item.add", entityTypeId=31, fields={"stageId": "DT31_9:X"})
    assert bad.status_code == 400


def test_stage_semantics_and_categories(world, portal):
    client, _, _ = world
    invoice_stages = ok(call(client, portal, "crm.status.list", filter={"ENTITY_ID": "SMART_INVOICE_STAGE_2"}))
    semantics = {s["STATUS_ID"]: s["SEMANTICS"] for s in invoice_stages}
    assert semantics == {"DT31_2:N": None, "DT31_2:S": None, "DT31_2:P": "S", "DT31_2:D": "F"}
    assert all("EXTRA" not in s for s in invoice_stages)
    deal_stages = ok(call(client, portal, "crm.status.list", filter={"ENTITY_ID": "DEAL_STAGE"}))
    assert [s["STATUS_ID"] for s in deal_stages][0] == "NEW"
    won = next(s for s in deal_stages if s["STATUS_ID"] == "WON")
    assert won["SEMANTICS"] == "S" and won["EXTRA"]["SEMANTICS"] == "success"
    assert {s["STATUS_ID"] for s in ok(call(client, portal, "crm.status.list",
                                             filter={"ENTITY_ID": "DEAL_STAGE_1"}))} >= {"C1:NEW", "C1:WON"}
    deal_cats = ok(call(client, portal, "crm.category.list", entityTypeId=2))["categories"]
    assert {(c["id"], c["name"], c["isDefault"]) for c in deal_cats} == {(0, "Общая", "Y"), (1, "Повторные продажи", "N")}
    invoice_cats = ok(call(client, portal, "crm.category.list", entityTypeId=31))["categories"]
    assert [c["id"] for c in invoice_cats] == [2]


def test_batch_references_errors_and_limits(world, portal):
    client, _, _ = world
    body = ok(call(client, portal, "batch", halt=0, cmd={
        "deal": "crm.deal.add?fields[TITLE]=Batch%20deal&fields[OPPORTUNITY]=10",
        "get": "crm.deal.get?id=$result[deal]",
        "list": "crm.deal.list?filter[>ID]=0&select[]=ID",
        "first": "crm.deal.get?id=$result[list][0][ID]",
        "inv": "crm.item.add?entityTypeId=31&fields[parentId2]=$result[deal]&fields[title]=$result[get][TITLE] inv",
        "broken": "crm.deal.get?id=777",
        "nested": "batch?cmd[x]=user.current",
        "unknown": "no.such.method",
    }))
    assert body["result"]["get"]["TITLE"] == "Batch deal"
    assert body["result"]["first"]["ID"] == str(body["result"]["deal"])
    assert body["result"]["inv"]["item"]["parentId2"] == body["result"]["deal"]
    assert body["result"]["inv"]["item"]["title"] == "Batch deal inv"
    assert body["result_error"]["broken"]["error_description"] == "Not found"
    assert body["result_error"]["nested"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    assert body["result_error"]["unknown"]["error"] == "ERROR_METHOD_NOT_FOUND"
    assert body["result_total"] == {"list": 1} and set(body["result_time"]["get"]) == TIME_KEYS

    halted = ok(call(client, portal, "batch", halt=1, cmd=["crm.deal.get?id=777", "user.current"]))
    assert halted["result"] == []  # PHP arrays keyed 0..n-1 become JSON lists
    assert halted["result_error"] == [{"error": "", "error_description": "Not found"}]

    many = ok(call(client, portal, "batch", cmd={f"c{i}": "user.current" for i in range(52)}))
    assert len(many["result"]) == 50
    assert {k: v["error"] for k, v in many["result_error"].items()} == {"c50": "ERROR_BATCH_LENGTH_EXCEEDED",
                                                                        "c51": "ERROR_BATCH_LENGTH_EXCEEDED"}


def test_batch_as_form_body_with_encoded_commands(world, portal):
    client, _, _ = world
    r = client.post(hook(portal, "batch"), data={"halt": "0", "cmd[me]": "user.current",
                                                 "cmd[users]": "user.get?FILTER[ID]=$result[me][ID]"})
    body = ok(r)
    assert body["result"]["users"][0]["LAST_NAME"] == "Админова"
    assert body["result_error"] == []


def test_rate_limit_503_then_recovery_and_batch_counts_once(world, portal):
    client, clock, _ = world
    client.post("/sandbox/config", json={"rate": 1.0, "burst": 5})
    assert call(client, portal, "batch", cmd={f"c{i}": "user.current" for i in range(10)}).status_code == 200
    for _ in range(4):
        assert call(client, portal, "user.current").status_code == 200
    limited = call(client, portal, "user.current")
    assert limited.status_code == 503
    assert limited.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    clock.advance(2.0)
    assert call(client, portal, "user.current").status_code == 200
    assert call(client, portal, "user.current").status_code == 200
    assert call(client, portal, "user.current").status_code == 503
    state = client.get(f"/p/{portal}/sandbox/state").json()
    assert state["rate_limited"] == 2 and state["requests"] == 9


def test_portal_rename_redirects_with_same_path_and_query(world, portal):
    client, _, server = world
    deal = ok(call(client, portal, "crm.deal.add", fields={"TITLE": "Before rename"}))
    new_code = f"n{uuid.uuid4().hex[:10]}"
    renamed = client.post(f"/p/{portal}/sandbox/rename", json={"new_code": new_code}).json()
    assert renamed["domain"].endswith(f"/p/{new_code}")
    old = client.post(hook(portal, "crm.deal.get.json") + f"?id={deal}", json={"x": 1})
    assert old.status_code == 302
    assert old.headers["Location"] == f"{server.url}/p/{new_code}/rest/1/sandboxhook/crm.deal.get.json?id={deal}"
    assert client.post(old.headers["Location"]).json()["result"]["TITLE"] == "Before rename"
    portals = {p["code"]: p for p in client.get("/sandbox/portals").json()}
    assert new_code in portals and portal not in portals


def test_rename_fault_moves_the_portal_to_a_fresh_code_and_does_not_run_the_call(world, portal):
    client, _, server = world
    taken = f"{portal}-r1"  # a live portal already has the first candidate code
    assert client.post("/sandbox/portals", json={"code": taken}).status_code == 200
    fired_before = client.get("/sandbox/state").json()["faults_fired"].get("rename", 0)
    client.post("/sandbox/faults", json={"kinds": {"rename": 1.0}, "seed": 3})
    r = client.post(hook(portal, "crm.item.add.json") + "?entityTypeId=31",
                    json={"fields": {"title": "Under the fault", "opportunity": "10"}})
    assert r.status_code == 302 and r.content == b""
    first = f"{portal}-r2"
    assert r.headers["Location"] == f"{server.url}/p/{first}/rest/1/sandboxhook/crm.item.add.json?entityTypeId=31"
    # a second rename starts from the same base and skips the codes in use; the old codes lead to the newest
    r2 = call(client, portal, "user.current")
    assert r2.status_code == 302 and r2.headers["Location"].startswith(f"{server.url}/p/{first}/")  # old code
    r3 = call(client, first, "user.current")
    second = f"{portal}-r3"
    assert r3.status_code == 302 and r3.headers["Location"] == f"{server.url}{hook(second, 'user.current.json')}"
    client.delete("/sandbox/faults")

    state = client.get(f"/p/{second}/sandbox/state").json()
    assert state["code"] == second and state["domain"].endswith(f"/p/{second}")
    assert state["client_endpoint"] == f"{server.url}/p/{second}/rest/"
    assert state["faults"] == {"rename": 2}
    assert state["counts"]["invoices"] == 0  # the redirected crm.item.add was not executed
    summary = client.get("/sandbox/state").json()
    assert summary["renamed"][portal] == first and summary["renamed"][first] == second
    assert summary["faults_fired"]["rename"] == fired_before + 2
    assert second in summary["portals"] and portal not in summary["portals"] and first not in summary["portals"]
    assert summary["portals"][taken]["faults"] == {}  # the portal that held `-r1` was not touched
    for old in (portal, first):
        moved = client.get(f"/p/{old}/sandbox/state")
        assert moved.status_code == 302 and moved.headers["Location"] == f"{server.url}/p/{second}/sandbox/state"
    # re-POSTed to where the 302 pointed, the call runs once
    again = client.post(r.headers["Location"].replace(f"/p/{first}/", f"/p/{second}/"),
                        json={"fields": {"title": "Under the fault", "opportunity": "10"}})
    assert again.status_code == 200 and again.json()["result"]["item"]["title"] == "Under the fault"
    assert client.get(f"/p/{second}/sandbox/state").json()["counts"]["invoices"] == 1


def test_rename_fault_is_seeded(world, portal):
    client, _, server = world

    def statuses(code: str) -> tuple[list[int], str]:
        client.post("/sandbox/faults", json={"kinds": {"rename": 0.5}, "seed": 1})
        out = []
        for _ in range(6):
            r = call(client, code, "user.current")
            out.append(r.status_code)
            if r.status_code == 302:
                code = r.headers["Location"].split("/p/", 1)[1].split("/", 1)[0]
        return out, code

    first, code = statuses(portal)
    second, _ = statuses(code)
    client.delete("/sandbox/faults")
    assert first == second and first[0] == 302 and first[1] == 200  # random.Random(1): 0.134, 0.847, ...
    assert code == f"{portal}-r{first.count(302)}"


def test_a_fault_script_answers_the_next_requests_in_order_then_the_draw_resumes(world, portal):
    client, _, _ = world
    assert client.post("/sandbox/faults", json={"script": [None, "nonsense"]}).status_code == 400
    r = client.post("/sandbox/faults", json={"kinds": {}, "script": [None, "server_error", "query_limit"]})
    assert r.json()["script"] == [None, "server_error", "query_limit"]
    assert [call(client, portal, "user.current").status_code for _ in range(4)] == [200, 500, 503, 200]
    assert client.get("/sandbox/faults").json()["script"] == []
    client.post("/sandbox/faults", json={"script": ["server_error", "server_error"]})
    client.delete("/sandbox/faults")  # clears a script that has not run out
    assert call(client, portal, "user.current").status_code == 200


def test_state_json_has_the_documented_sections(world, portal):
    client, _, _ = world
    call(client, portal, "im.notify.system.add", USER_ID=2, MESSAGE="Оплата получена", ATTACH=[{"MESSAGE": "x"}])
    call(client, portal, "im.message.add", DIALOG_ID="3", MESSAGE="Привет")
    deal = ok(call(client, portal, "crm.deal.add", fields={"TITLE": "T"}))
    assert isinstance(ok(call(client, portal, "crm.timeline.comment.add",
                              fields={"ENTITY_ID": deal, "ENTITY_TYPE": "deal", "COMMENT": "Оплачено"})), int)
    task = ok(call(client, portal, "tasks.task.add", fields={"TITLE": "Проверить оплату", "RESPONSIBLE_ID": 2,
                                                             "UF_CRM_TASK": [f"D_{deal}"]}))["task"]
    assert task["responsibleId"] == "2" and task["ufCrmTask"] == [f"D_{deal}"]
    state = client.get(f"/p/{portal}/sandbox/state").json()
    for key in ("member_id", "installed_apps", "issued_tokens", "placements", "events", "event_deliveries",
                "notifications", "tasks", "timeline_comments", "automation_triggers", "trigger_executions",
                "requests", "rate_limited", "faults"):
        assert key in state
    assert [(n["method"], n["user_id"], n["message"]) for n in state["notifications"]] == [
        ("im.notify.system.add", 2, "Оплата получена"), ("im.message.add", 3, "Привет")]
    assert state["notifications"][0]["attach"] == [{"MESSAGE": "x"}]
    assert state["timeline_comments"][0]["COMMENT"] == "Оплачено"
    comments = call(client, portal, "crm.timeline.comment.list", filter={"ENTITY_ID": deal, "ENTITY_TYPE": "deal"}).json()
    assert comments["total"] == 1 and comments["result"][0]["COMMENT"] == "Оплачено"
    assert call(client, portal, "im.notify.system.add", USER_ID=99, MESSAGE="x").status_code == 400
    summary = client.get("/sandbox/state").json()
    assert summary["portals"][portal]["requests"] == state["requests"] + 2  # two calls since the snapshot


def test_companies_and_requisites_find_inn(world, portal):
    client, _, _ = world
    company = ok(call(client, portal, "crm.company.add", fields={"TITLE": "ООО Ромашка"}))
    requisite = ok(call(client, portal, "crm.requisite.add", fields={
        "ENTITY_TYPE_ID": 4, "ENTITY_ID": company, "PRESET_ID": 1, "NAME": "Реквизиты",
        "RQ_INN": "7701234567", "RQ_KPP": "770101001"}))
    found = ok(call(client, portal, "crm.requisite.list", filter={"RQ_INN": "7701234567"},
                    select=["ENTITY_ID", "RQ_KPP"]))
    assert found == [{"ID": str(requisite), "ENTITY_ID": str(company), "RQ_KPP": "770101001"}]
    assert ok(call(client, portal, "crm.company.get", id=company))["TITLE"] == "ООО Ромашка"
    assert call(client, portal, "crm.requisite.add", fields={"ENTITY_TYPE_ID": 4, "ENTITY_ID": 999}).status_code == 400


def test_faults_are_seeded_and_counted(world, portal):
    client, _, _ = world

    def outcomes() -> list[int]:
        client.post("/sandbox/faults", json={"kinds": {"server_error": 0.5}, "seed": 7})
        return [call(client, portal, "user.current").status_code for _ in range(12)]

    first, second = outcomes(), outcomes()
    assert first == second and set(first) == {200, 500}
    for kind, status, code in (("query_limit", 503, "QUERY_LIMIT_EXCEEDED"),
                               ("operation_time_limit", 429, "OPERATION_TIME_LIMIT")):
        client.post("/sandbox/faults", json={"kinds": {kind: 1.0}})
        r = call(client, portal, "user.current")
        assert r.status_code == status and r.json()["error"] == code
    client.post("/sandbox/config", json={"timeout_seconds": 0.2, "slow_seconds": 0.0})
    client.post("/sandbox/faults", json={"kinds": {"timeout": 1.0}})
    assert call(client, portal, "user.current").status_code == 504
    client.post("/sandbox/faults", json={"kinds": {"slow": 1.0}})
    assert call(client, portal, "user.current").status_code == 200
    assert client.post("/sandbox/faults", json={"kinds": {"meteor": 1.0}}).status_code == 400
    client.delete("/sandbox/faults")
    assert call(client, portal, "user.current").status_code == 200
    faults = client.get(f"/p/{portal}/sandbox/state").json()["faults"]
    assert faults["server_error"] == first.count(500) * 2
    assert faults["query_limit"] == faults["operation_time_limit"] == faults["timeout"] == faults["slow"] == 1


def test_control_api_adds_users_visible_to_user_get(world, portal):
    client, _, _ = world
    assert [u["LAST_NAME"] for u in ok(call(client, portal, "user.get"))] == ["Админова", "Менеджеров", "Продажина"]
    added = client.post(f"/p/{portal}/sandbox/users", json={"name": "Глеб", "last_name": "Бухгалтеров"}).json()
    assert added["id"] == 4 and added["admin"] is False
    assert client.post(f"/p/{portal}/sandbox/users", json={"id": 4, "name": "X"}).status_code == 409
    found = ok(call(client, portal, "user.get", FILTER={"ID": 4}))
    assert [(u["ID"], u["NAME"]) for u in found] == [("4", "Глеб")]
    assert ok(call(client, portal, "user.get", ID=2))[0]["NAME"] == "Борис"
    assert ok(call(client, portal, "im.notify.personal.add", USER_ID=4, MESSAGE="Счёт оплачен")) >= 1
