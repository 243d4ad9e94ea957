"""Invoice cache against a portal with more client companies than one page of requisites holds."""
from __future__ import annotations

from sqlalchemy import select

from b24app.adapters.bitrix.query import build_query
from b24app.pipeline.invoices import refresh_all
from b24app.storage.models import Invoice


def _batch(stack, cmds: dict[str, tuple[str, dict]]) -> dict:
    body = stack.rest("batch", {"halt": 1, "cmd": {k: f"{m}?{build_query(p)}" for k, (m, p) in cmds.items()}})
    assert not body["result"]["result_error"], body["result"]["result_error"]
    return body["result"]["result"]


def test_every_company_of_120_gets_its_inn_even_with_two_requisites_each(stack):
    """Each company has a requisite without INN (bank details only) and one with: 50 companies per command
    match 100 requisites, two pages. Before paging, companies on the second page got no INN."""
    assert stack.install()["install_finish"]
    inns = {}
    for chunk in range(0, 120, 12):  # 12 companies × 4 commands = 48 commands per batch
        cmds: dict[str, tuple[str, dict]] = {}
        for n in range(chunk, chunk + 12):
            inn = f"77{n:08d}"
            cmds[f"c{n}"] = ("crm.company.add", {"fields": {"TITLE": f"ООО Клиент {n}"}})
            cmds[f"a{n}"] = ("crm.requisite.add", {"fields": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": f"$result[c{n}]",
                                                              "PRESET_ID": 1, "NAME": "Банк"}})
            cmds[f"b{n}"] = ("crm.requisite.add", {"fields": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": f"$result[c{n}]",
                                                              "PRESET_ID": 1, "NAME": "Организация", "RQ_INN": inn}})
            cmds[f"i{n}"] = ("crm.item.add", {"entityTypeId": 31, "fields": {
                "title": f"Счёт {n}", "accountNumber": f"T-{n}", "opportunity": 100, "currencyId": "RUB",
                "assignedById": 1, "companyId": f"$result[c{n}]"}})
            inns[f"T-{n}"] = inn
        _batch(stack, cmds)
    refresh_all(stack.ctx, stack.ctx.portals.find(stack.member_id()))
    with stack.ctx.db.session() as s:
        got = {inv.number: inv.payer_inn for inv in s.scalars(select(Invoice))}
    assert got == inns
