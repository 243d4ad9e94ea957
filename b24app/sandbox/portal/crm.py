"""CRM methods of the Bitrix24 sandbox: deals, smart invoices (entityTypeId 31), companies, requisites,
pipelines, stages with semantics and timeline comments, in Bitrix24's own field names and shapes."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from .rest import PAGE_SIZE, CallContext, ListResult, RestError, arg, argument_error, method
from .state import INVOICE_CATEGORY_ID, SECOND_DEAL_CATEGORY_ID, Portal, iso, money

INVOICE_TYPE_ID = 31

# (STATUS_ID, NAME, SORT, SEMANTICS, COLOR)
DEAL_STAGES: dict[int, list[tuple[str, str, int, str | None, str]]] = {
    0: [("NEW", "Новая", 10, None, "#39A8EF"),
        ("PREPARATION", "Подготовка документов", 20, None, "#2FC6F6"),
        ("PREPAYMENT_INVOICE", "Счёт на предоплату", 30, None, "#55D0E0"),
        ("EXECUTING", "В работе", 40, None, "#47E4C2"),
        ("FINAL_INVOICE", "Финальный счёт", 50, None, "#FFA900"),
        ("WON", "Сделка успешна", 60, "S", "#7BD500"),
        ("LOSE", "Сделка провалена", 70, "F", "#FF5752"),
        ("APOLOGY", "Анализ причины провала", 80, "F", "#FF5752")],
    SECOND_DEAL_CATEGORY_ID: [
        ("C1:NEW", "Новая", 10, None, "#39A8EF"),
        ("C1:PREPARATION", "Подготовка документов", 20, None, "#2FC6F6"),
        ("C1:EXECUTING", "В работе", 30, None, "#47E4C2"),
        ("C1:WON", "Сделка успешна", 40, "S", "#7BD500"),
        ("C1:LOSE", "Сделка провалена", 50, "F", "#FF5752")],
}
DEAL_CATEGORIES = {0: ("Общая", "Y", 300), SECOND_DEAL_CATEGORY_ID: ("Повторные продажи", "N", 200)}
_P = f"DT31_{INVOICE_CATEGORY_ID}"
INVOICE_STAGES = [(f"{_P}:N", "Новый", 10, None, "#22B9FF"),
                  (f"{_P}:S", "Отправлен клиенту", 20, None, "#2FC6F6"),
                  (f"{_P}:P", "Оплачен", 30, "S", "#7BD500"),
                  (f"{_P}:D", "Не оплачен", 40, "F", "#FF5752")]


def invoice_stages(portal: Portal | None = None) -> list[tuple[str, str, int, str | None, str]]:
    """The invoice funnel's stages: the built-in ones and those the portal added (crm.status.add), by SORT."""
    extra = portal.extra_invoice_stages if portal is not None else []
    return sorted([*INVOICE_STAGES, *extra], key=lambda st: st[2])


def stage_semantics(stage_id: str, portal: Portal | None = None) -> str | None:
    for stages in [*DEAL_STAGES.values(), invoice_stages(portal)]:
        for sid, _name, _sort, sem, _color in stages:
            if sid == stage_id:
                return sem
    return None


def stage_name(stage_id: str, portal: Portal | None = None) -> str:
    for stages in [*DEAL_STAGES.values(), invoice_stages(portal)]:
        for sid, name, *_ in stages:
            if sid == stage_id:
                return name
    return stage_id


# ---------------------------------------------------------------------------------------------
# filter / order / select / paging, shared by every list method
_OPS = ("!@", ">=", "<=", "!=", "=%", "%=", "@", ">", "<", "=", "!", "%")


def _split_op(key: str) -> tuple[str, str]:
    for op in _OPS:
        if key.startswith(op):
            return op, key[len(op):]
    return "", key


def _field(record: dict[str, Any], name: str) -> tuple[bool, Any]:
    if name in record:
        return True, record[name]
    lowered = name.lower().replace("_", "")
    for key, value in record.items():
        if key.lower().replace("_", "") == lowered:
            return True, value
    return False, None


def _num(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None


def _cmp_key(record_value: Any, wanted: Any) -> tuple[Any, Any]:
    if isinstance(record_value, (int, Decimal)) and not isinstance(record_value, bool):
        number = _num(wanted)
        if number is not None:
            return Decimal(record_value), number
    left = "" if record_value is None else str(record_value)
    return left.casefold(), ("" if wanted is None else str(wanted)).casefold()


def _equal(record_value: Any, wanted: Any) -> bool:
    if wanted is None or wanted == "":
        return record_value is None or record_value == "" or record_value == 0
    if record_value is None or record_value == "":
        return False
    a, b = _cmp_key(record_value, wanted)
    return a == b


def matches(record: dict[str, Any], flt: dict[str, Any]) -> bool:
    for key, wanted in (flt or {}).items():
        op, name = _split_op(str(key))
        _, value = _field(record, name)
        values = wanted if isinstance(wanted, list) else None
        if op in ("", "=") and values is not None:
            op = "@"
        if op in ("!", "!=") and values is not None:
            op = "!@"
        if op == "@":
            if not any(_equal(value, w) for w in (values if values is not None else [wanted])):
                return False
        elif op == "!@":
            if any(_equal(value, w) for w in (values if values is not None else [wanted])):
                return False
        elif op in ("", "="):
            if not _equal(value, wanted):
                return False
        elif op in ("!", "!="):
            if _equal(value, wanted):
                return False
        elif op in (">", ">=", "<", "<="):
            if value in (None, ""):
                return False
            a, b = _cmp_key(value, wanted)
            if type(a) is not type(b):
                return False
            ok = {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]
            if not ok:
                return False
        elif op in ("%", "=%", "%="):
            needle = str(wanted).strip("%").casefold()
            if needle not in ("" if value is None else str(value)).casefold():
                return False
    return True


def _sort(records: list[dict[str, Any]], order: Any) -> list[dict[str, Any]]:
    if not isinstance(order, dict):
        return records
    for name, direction in reversed(list(order.items())):
        desc = str(direction).upper() == "DESC"

        def key(record: dict[str, Any], name: str = name) -> tuple[int, Any]:
            _, value = _field(record, name)
            if value is None or value == "":
                return (0, "")
            if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
                return (1, Decimal(value))
            number = _num(value)
            return (1, number) if number is not None else (2, str(value))

        records = sorted(records, key=key, reverse=desc)
    return records


def _page(records: list[Any], params: dict[str, Any]) -> tuple[list[Any], int | None, int | None]:
    raw_start = arg(params, "start", 0)
    try:
        start = int(raw_start or 0)
    except (TypeError, ValueError):
        start = 0
    if start == -1:  # "no counting" mode of huge exports: one page, no total, no next
        return records[:PAGE_SIZE], None, None
    start = max(0, start)
    page = records[start:start + PAGE_SIZE]
    nxt = start + PAGE_SIZE if start + PAGE_SIZE < len(records) else None
    return page, len(records), nxt


def _select(record: dict[str, Any], select: Any, id_key: str) -> dict[str, Any]:
    if not select or not isinstance(select, list) or "*" in select:
        return dict(record)
    out = {id_key: record.get(id_key)}
    for name in select:
        found, value = _field(record, str(name))
        if found:
            real = next((k for k in record if k.lower().replace("_", "") ==
                         str(name).lower().replace("_", "")), str(name))
            out[real] = value
    return out


def list_records(records: list[dict[str, Any]], params: dict[str, Any], id_key: str,
                 default_order: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], int | None, int | None]:
    flt = arg(params, "filter") or {}
    if not isinstance(flt, dict):
        flt = {}
    selected = [r for r in records if matches(r, flt)]
    selected = _sort(selected, arg(params, "order") or default_order or {id_key: "ASC"})
    page, total, nxt = _page(selected, params)
    select = arg(params, "select")
    return [_select(r, select, id_key) for r in page], total, nxt


# ---------------------------------------------------------------------------------------------
# legacy UPPER_CASE entities (deals, companies, requisites): everything is a string on the wire
def _legacy_out(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Decimal):
            out[key] = format(value.quantize(Decimal("0.01")), "f")
        elif isinstance(value, bool):
            out[key] = "Y" if value else "N"
        elif isinstance(value, int):
            out[key] = str(value)
        else:
            out[key] = value
    return out


def _fields(params: dict[str, Any]) -> dict[str, Any]:
    fields = arg(params, "fields")
    if not isinstance(fields, dict):
        raise RestError("", "Parameter 'fields' must be array.", 400)
    return {str(k).upper(): v for k, v in fields.items()}


def _legacy_id(params: dict[str, Any]) -> int:
    raw = arg(params, "id")
    try:
        number = int(str(raw))
    except (TypeError, ValueError):
        raise RestError("", "ID is not defined or invalid.", 400) from None
    if number <= 0:
        raise RestError("", "ID is not defined or invalid.", 400)
    return number


def _int_or(value: Any, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def _deal_stage(fields: dict[str, Any], category: int, current: str | None) -> str:
    stages = [s[0] for s in DEAL_STAGES[category]]
    stage = fields.get("STAGE_ID")
    if stage in (None, ""):
        return current if current in stages else stages[0]
    if stage not in stages:
        raise RestError("", f"Stage '{stage}' is not found in pipeline {category}.", 400)
    return str(stage)


def _apply_deal_fields(ctx: CallContext, deal: dict[str, Any], fields: dict[str, Any]) -> None:
    if "CATEGORY_ID" in fields:
        category = _int_or(fields["CATEGORY_ID"], -1)
        if category not in DEAL_CATEGORIES:
            raise RestError("", f"Category {fields['CATEGORY_ID']} is not found.", 400)
        if deal.get("ID") and category != deal["CATEGORY_ID"]:
            raise RestError("", "Category can not be changed by update; use crm.deal.category.set.", 400)
        deal["CATEGORY_ID"] = category
    elif "STAGE_ID" in fields and str(fields["STAGE_ID"]).startswith("C"):
        match = re.match(r"C(\d+):", str(fields["STAGE_ID"]))
        if match and not deal.get("ID"):
            deal["CATEGORY_ID"] = int(match.group(1))
    deal.setdefault("CATEGORY_ID", 0)
    deal["STAGE_ID"] = _deal_stage(fields, deal["CATEGORY_ID"], deal.get("STAGE_ID"))
    sem = stage_semantics(deal["STAGE_ID"])
    deal["STAGE_SEMANTIC_ID"] = sem or "P"
    deal["CLOSED"] = "Y" if sem else "N"
    for key, value in fields.items():
        if key in ("ID", "CATEGORY_ID", "STAGE_ID", "DATE_CREATE", "DATE_MODIFY", "STAGE_SEMANTIC_ID", "CLOSED"):
            continue
        if key.startswith("UF_CRM_"):
            uf = ctx.portal.deal_userfields.get(key)
            if uf is None:
                continue  # not a field of this portal: ignored
            deal[key] = _money_uf(value) if uf["USER_TYPE_ID"] == "money" else value
        elif key == "OPPORTUNITY":
            deal[key] = money(value)
        elif key in ("ASSIGNED_BY_ID", "COMPANY_ID", "CONTACT_ID"):
            deal[key] = _int_or(value, 0)
        else:
            deal[key] = value


_MONEY_UF = re.compile(r"(\d+)(?:\.(\d+))?\|([A-Z]{3})")


def _money_uf(value: Any) -> str:
    """A money userfield's value: `1700|RUB` (tutorials/crm/how-to-edit-crm-objects/how-to-set-paid-sum-to-deal.md:
    a dot before the fraction, the currency in three capital letters; `1700,00|RUB` or `1700.00|руб` is answered
    with success and leaves the field empty; `1700.00` is kept as `1700`, `1750.25` unchanged)."""
    m = _MONEY_UF.fullmatch(str(value or ""))
    if not m:
        return ""
    whole, fraction, currency = m.groups()
    fraction = (fraction or "").rstrip("0")
    return f"{int(whole)}{'.' + fraction if fraction else ''}|{currency}"


_UF_TYPES = ("string", "integer", "double", "boolean", "datetime", "date", "money", "url", "address", "enumeration",
             "file", "employee", "crm_status", "iblock_section", "iblock_element", "crm")


@method("crm.deal.userfield.add", scope="crm", admin_only=True)
def deal_userfield_add(ctx: CallContext, params: dict[str, Any]) -> int:
    """api-reference/crm/deals/user-defined-fields/crm-deal-userfield-add.md: CRM administrators; FIELD_NAME unique,
    A-Z 0-9 _, prefixed with UF_CRM_, 20 characters at most; USER_TYPE_ID one of the documented types; returns
    the field's integer id. The page lists no error codes: ERROR_CORE with a plain message is an assumption."""
    fields = arg(params, "fields")
    if not isinstance(fields, dict):
        raise RestError("ERROR_CORE", "fields is required", 400)
    name = str(fields.get("FIELD_NAME") or "")
    kind = str(fields.get("USER_TYPE_ID") or "")
    if not name or not re.fullmatch(r"[A-Z0-9_]+", name):
        raise RestError("ERROR_CORE", "FIELD_NAME is required: A-Z, 0-9 and _", 400)
    if not name.startswith("UF_CRM_"):
        name = "UF_CRM_" + name
    if len(name) > 20:
        raise RestError("ERROR_CORE", "FIELD_NAME is longer than 20 characters", 400)
    if kind not in _UF_TYPES:
        raise RestError("ERROR_CORE", "USER_TYPE_ID is not a known type", 400)
    if name in ctx.portal.deal_userfields:
        raise RestError("ERROR_CORE", f"A field named {name} exists already", 400)
    field_id = 6000 + len(ctx.portal.deal_userfields) + 1
    ctx.portal.deal_userfields[name] = {"ID": field_id, "USER_TYPE_ID": kind,
                                        "MULTIPLE": "Y" if fields.get("MULTIPLE") == "Y" else "N"}
    return field_id


@method("crm.deal.add", scope="crm")
def deal_add(ctx: CallContext, params: dict[str, Any]) -> int:
    fields = _fields(params)
    with ctx.state.lock:
        now = iso(ctx.now)
        deal: dict[str, Any] = {"TITLE": "", "TYPE_ID": "SALE", "OPPORTUNITY": Decimal("0"), "CURRENCY_ID": "RUB",
                                "ASSIGNED_BY_ID": ctx.user_id, "COMPANY_ID": 0, "CONTACT_ID": None,
                                "OPENED": "Y", "COMMENTS": None, "BEGINDATE": now, "CLOSEDATE": None,
                                "CREATED_BY_ID": ctx.user_id, "MODIFY_BY_ID": ctx.user_id,
                                "DATE_CREATE": now, "DATE_MODIFY": now, "IS_MANUAL_OPPORTUNITY": "N"}
        _apply_deal_fields(ctx, deal, fields)
        new_id = ctx.portal.next_id("deal")
        deal = {"ID": new_id, **deal}
        ctx.portal.deals[new_id] = deal
    ctx.emit("ONCRMDEALADD", {"FIELDS": {"ID": str(new_id)}})
    return new_id


def _get_deal(portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    deal = portal.deals.get(_legacy_id(params))
    if deal is None:
        raise RestError("", "Not found", 400)
    return deal


@method("crm.deal.get", scope="crm")
def deal_get(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    deal = _get_deal(ctx.portal, params)
    user = ctx.portal.users.get(ctx.user_id)
    if not ctx.is_webhook and user is not None and not user.may_read_deal(deal):
        # "Access denied": the user has no read right on this deal [D: api-reference/crm/deals/crm-deal-get.md,
        # "Возможные коды ошибок": empty code, HTTP 400 like the method's other errors].
        raise RestError("", "Access denied", 400)
    return _legacy_out(deal)


@method("crm.deal.update", scope="crm")
def deal_update(ctx: CallContext, params: dict[str, Any]) -> bool:
    deal = _get_deal(ctx.portal, params)
    fields = _fields(params)
    updated = dict(deal)
    _apply_deal_fields(ctx, updated, fields)
    updated["DATE_MODIFY"] = iso(ctx.now)
    updated["MODIFY_BY_ID"] = ctx.user_id
    deal.clear()
    deal.update(updated)
    ctx.emit("ONCRMDEALUPDATE", {"FIELDS": {"ID": str(deal["ID"])}})
    return True


@method("crm.deal.delete", scope="crm")
def deal_delete(ctx: CallContext, params: dict[str, Any]) -> bool:
    deal = _get_deal(ctx.portal, params)
    del ctx.portal.deals[deal["ID"]]
    ctx.emit("ONCRMDEALDELETE", {"FIELDS": {"ID": str(deal["ID"])}})
    return True


@method("crm.deal.list", scope="crm")
def deal_list(ctx: CallContext, params: dict[str, Any]) -> ListResult:
    rows, total, nxt = list_records(list(ctx.portal.deals.values()), params, "ID")
    return ListResult([_legacy_out(r) for r in rows], total, nxt)


@method("crm.company.add", scope="crm")
def company_add(ctx: CallContext, params: dict[str, Any]) -> int:
    fields = _fields(params)
    now = iso(ctx.now)
    new_id = ctx.portal.next_id("company")
    # IS_MY_COMPANY: "Y" for the portal's own companies (api-reference/crm/companies/crm-company-fields.md)
    company = {"ID": new_id, "TITLE": "", "COMPANY_TYPE": "CUSTOMER", "IS_MY_COMPANY": "N", "ASSIGNED_BY_ID": ctx.user_id,
               "CREATED_BY_ID": ctx.user_id, "DATE_CREATE": now, "DATE_MODIFY": now, "OPENED": "Y"}
    for key, value in fields.items():
        if key not in ("ID", "DATE_CREATE", "DATE_MODIFY"):
            company[key] = _int_or(value, 0) if key == "ASSIGNED_BY_ID" else value
    ctx.portal.companies[new_id] = company
    ctx.emit("ONCRMCOMPANYADD", {"FIELDS": {"ID": str(new_id)}})
    return new_id


def _get_company(portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    company = portal.companies.get(_legacy_id(params))
    if company is None:
        raise RestError("", "Not found", 400)
    return company


@method("crm.company.get", scope="crm")
def company_get(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return _legacy_out(_get_company(ctx.portal, params))


@method("crm.company.update", scope="crm")
def company_update(ctx: CallContext, params: dict[str, Any]) -> bool:
    company = _get_company(ctx.portal, params)
    for key, value in _fields(params).items():
        if key not in ("ID", "DATE_CREATE"):
            company[key] = value
    company["DATE_MODIFY"] = iso(ctx.now)
    ctx.emit("ONCRMCOMPANYUPDATE", {"FIELDS": {"ID": str(company["ID"])}})
    return True


@method("crm.company.list", scope="crm")
def company_list(ctx: CallContext, params: dict[str, Any]) -> ListResult:
    rows, total, nxt = list_records(list(ctx.portal.companies.values()), params, "ID")
    return ListResult([_legacy_out(r) for r in rows], total, nxt)


@method("crm.requisite.add", scope="crm")
def requisite_add(ctx: CallContext, params: dict[str, Any]) -> int:
    fields = _fields(params)
    entity_type = _int_or(fields.get("ENTITY_TYPE_ID"), 0)
    entity_id = _int_or(fields.get("ENTITY_ID"), 0)
    if entity_type not in (3, 4):
        raise RestError("", "The field ENTITY_TYPE_ID is not defined or invalid.", 400)
    if entity_type == 4 and entity_id not in ctx.portal.companies:
        raise RestError("", f"Entity not found (ENTITY_TYPE_ID: 4, ENTITY_ID: {entity_id}).", 400)
    new_id = ctx.portal.next_id("requisite")
    now = iso(ctx.now)
    requisite = {"ID": new_id, "ENTITY_TYPE_ID": entity_type, "ENTITY_ID": entity_id,
                 "PRESET_ID": _int_or(fields.get("PRESET_ID"), 1), "NAME": "Организация", "ACTIVE": "Y",
                 "SORT": 500, "RQ_INN": "", "RQ_KPP": "", "RQ_OGRN": "", "RQ_COMPANY_NAME": "",
                 "DATE_CREATE": now, "DATE_MODIFY": now, "CREATED_BY_ID": ctx.user_id}
    for key, value in fields.items():
        if key not in ("ID", "ENTITY_TYPE_ID", "ENTITY_ID", "PRESET_ID"):
            requisite[key] = value
    ctx.portal.requisites[new_id] = requisite
    return new_id


@method("crm.requisite.get", scope="crm")
def requisite_get(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    requisite = ctx.portal.requisites.get(_legacy_id(params))
    if requisite is None:
        raise RestError("", "Not found", 400)
    return _legacy_out(requisite)


@method("crm.requisite.list", scope="crm")
def requisite_list(ctx: CallContext, params: dict[str, Any]) -> ListResult:
    rows, total, nxt = list_records(list(ctx.portal.requisites.values()), params, "ID")
    return ListResult([_legacy_out(r) for r in rows], total, nxt)


# ---------------------------------------------------------------------------------------------
# pipelines and stages
@method("crm.category.list", scope="crm")
def category_list(ctx: CallContext, params: dict[str, Any]) -> ListResult:
    entity_type = _int_or(arg(params, "entityTypeId"), 0)
    if entity_type == 2:
        # originId/originatorId: api-reference/crm/universal/category/crm-category-list.md (the example's
        # default pipeline omits them; the sandbox gives every pipeline the same keys)
        cats = [{"id": cid, "name": name, "sort": sort, "entityTypeId": 2, "isDefault": default,
                 "originId": "", "originatorId": ""}
                for cid, (name, default, sort) in DEAL_CATEGORIES.items()]
        cats.sort(key=lambda c: (c["sort"], c["id"]))
    elif entity_type == INVOICE_TYPE_ID:
        cats = [{"id": INVOICE_CATEGORY_ID, "name": "Счета", "sort": 500, "entityTypeId": INVOICE_TYPE_ID,
                 "isDefault": "Y", "originId": "", "originatorId": ""}]
    else:
        raise RestError("NOT_FOUND", "SPA not found", 400)
    return ListResult({"categories": cats}, len(cats), None)


@method("crm.type.list", scope="crm")
def type_list(ctx: CallContext, params: dict[str, Any]) -> ListResult:
    """User-defined types (smart processes): the sandbox has none. Whether a portal lists the smart invoice
    (entityTypeId 31) here is not documented (api-reference/crm/universal/user-defined-object-types/
    crm-type-list.md shows smart processes only); its availability is read from crm.category.list."""
    return ListResult({"types": []}, 0, None)


def _status_rows(portal: Portal | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    counter = 0
    extra_sem = {None: "process", "S": "success", "F": "failure"}
    for category, stages in DEAL_STAGES.items():
        entity = "DEAL_STAGE" if category == 0 else f"DEAL_STAGE_{category}"
        for sid, name, sort, sem, color in stages:
            counter += 1
            rows.append({"ID": str(counter), "ENTITY_ID": entity, "STATUS_ID": sid, "NAME": name,
                         "NAME_INIT": name, "SORT": str(sort), "SYSTEM": "Y" if sem or sort == 10 else "N",
                         "CATEGORY_ID": str(category) if category else None, "COLOR": color,
                         "SEMANTICS": sem, "EXTRA": {"SEMANTICS": extra_sem[sem], "COLOR": color}})
    for sid, name, sort, sem, color in INVOICE_STAGES:
        counter += 1
        rows.append({"ID": str(100 + counter), "ENTITY_ID": f"SMART_INVOICE_STAGE_{INVOICE_CATEGORY_ID}",
                     "STATUS_ID": sid, "NAME": name, "NAME_INIT": name, "SORT": str(sort),
                     "SYSTEM": "Y", "CATEGORY_ID": str(INVOICE_CATEGORY_ID), "COLOR": color,
                     "SEMANTICS": sem})
    for n, (sid, name, sort, sem, color) in enumerate(portal.extra_invoice_stages if portal else []):
        rows.append({"ID": str(_EXTRA_STATUS_ID + n), "ENTITY_ID": f"SMART_INVOICE_STAGE_{INVOICE_CATEGORY_ID}",
                     "STATUS_ID": sid, "NAME": name, "NAME_INIT": "", "SORT": str(sort),
                     "SYSTEM": "N", "CATEGORY_ID": str(INVOICE_CATEGORY_ID), "COLOR": color,
                     "SEMANTICS": sem})
    return rows


_EXTRA_STATUS_ID = 700
_STATUS_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")


@method("crm.status.add", scope="crm", admin_only=True)
def status_add(ctx: CallContext, params: dict[str, Any]) -> int:
    """api-reference/crm/status/crm-status-add.md: CRM administrators only; returns the new element's integer
    id. A stage of a funnel gets the funnel's prefix (for smart invoices `DT31_<category>:`) unless STATUS_ID has
    it; a duplicate STATUS_ID and an in-progress stage sorted after the success stage are refused. The sandbox
    keeps directories for smart-invoice stages only (other ENTITY_IDs: "Specified entity type is not
    supported."). The docs give the messages but no error code per row: ERROR_CORE here is an assumption."""
    fields = arg(params, "fields")
    if not isinstance(fields, dict):
        raise RestError("ERROR_CORE", "Invalid parameters.", 400)
    entity = str(fields.get("ENTITY_ID") or "")
    status_id = str(fields.get("STATUS_ID") or "")
    name = str(fields.get("NAME") or "").strip()
    if not entity:
        raise RestError("ERROR_CORE", "The field ENTITY_ID is required.", 400)
    if not status_id:
        raise RestError("ERROR_CORE", "The field STATUS_ID is required.", 400)
    if entity != f"SMART_INVOICE_STAGE_{INVOICE_CATEGORY_ID}":
        raise RestError("ERROR_CORE", "Specified entity type is not supported.", 400)
    if not name:
        raise RestError("ERROR_CORE", 'The required field "Title" is not filled', 400)
    prefix = f"{_P}:"
    if not status_id.startswith(prefix):
        status_id = prefix + status_id
    if len(status_id) > 50:  # "For other ENTITY_IDs, the maximum length of STATUS_ID is 50 characters"
        raise RestError("ERROR_CORE", "Invalid parameters.", 400)
    semantics = fields.get("SEMANTICS") or None
    if semantics not in (None, "S", "F"):
        raise RestError("ERROR_CORE", "Invalid parameters.", 400)
    sort = _int_or(fields.get("SORT"), 10) if fields.get("SORT") not in (None, "") else 10
    color = str(fields.get("COLOR") or "#ACE9FB")
    if not _STATUS_COLOR.fullmatch(color):
        raise RestError("ERROR_CORE", "Invalid parameters.", 400)
    stages = invoice_stages(ctx.portal)
    if any(st[0] == status_id for st in stages):
        raise RestError("ERROR_CORE", "Duplicate STATUS_ID.", 400)
    success = min((st[2] for st in stages if st[3] == "S"), default=None)
    if semantics is None and success is not None and sort >= success:
        # "Cannot create an intermediate stage after success" (the docs leave its message blank)
        raise RestError("ERROR_CORE", "Cannot create an intermediate stage after success", 400)
    if semantics == "S":
        raise RestError("ERROR_CORE", "Invalid parameters.", 400)  # the sandbox keeps one success stage
    ctx.portal.extra_invoice_stages.append((status_id, name, sort, semantics, color))
    return _EXTRA_STATUS_ID + len(ctx.portal.extra_invoice_stages) - 1


@method("crm.status.list", scope="crm")
def status_list(ctx: CallContext, params: dict[str, Any]) -> ListResult:
    flt = arg(params, "filter") or {}
    rows = [r for r in _status_rows(ctx.portal) if matches(r, flt if isinstance(flt, dict) else {})]
    order = arg(params, "order") or {"SORT": "ASC"}
    rows = _sort(rows, order)
    return ListResult(rows, len(rows), None)


# ---------------------------------------------------------------------------------------------
# smart invoices through crm.item.* (camelCase, numbers as numbers)
_ITEM_INTS = {"id", "categoryId", "companyId", "contactId", "mycompanyId", "assignedById", "createdBy",
              "updatedBy", "movedBy", "parentId2", "parentId7", "locationId", "entityTypeId"}
_ITEM_MONEY = {"opportunity", "taxValue"}
_READONLY = {"id", "createdTime", "updatedTime", "movedTime", "createdBy", "updatedBy", "movedBy",
             "previousStageId", "entityTypeId"}


def camel(name: str) -> str:
    """`PARENT_ID_2` → `parentId2`; camelCase names pass through."""
    if name != name.upper():
        return name
    parts = [p for p in name.lower().split("_") if p]
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:]) if parts else name


def _item_out(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, Decimal):  # the wire format is a JSON number, as on a real portal
            out[key] = int(value) if value == value.to_integral_value() else float(value)
        else:
            out[key] = value
    return out


def _entity_type(params: dict[str, Any]) -> int:
    raw = arg(params, "entityTypeId")
    if raw in (None, ""):
        raise argument_error("entityTypeId", "Parameter 'entityTypeId' is required")
    entity_type = _int_or(raw, 0)
    if entity_type != INVOICE_TYPE_ID:
        raise RestError("NOT_FOUND", "SPA not found", 400)
    return entity_type


def _apply_item_fields(ctx: CallContext, item: dict[str, Any], fields: dict[str, Any]) -> None:
    normalized = {camel(str(k)): v for k, v in fields.items()}
    if "categoryId" in normalized and _int_or(normalized["categoryId"], -1) != INVOICE_CATEGORY_ID:
        raise RestError("CATEGORY_NOT_FOUND", "Pipeline not found", 400)
    stages = [s[0] for s in invoice_stages(ctx.portal)]
    if "stageId" in normalized and normalized["stageId"] not in ("", None):
        if normalized["stageId"] not in stages:
            raise RestError("CRM_FIELD_ERROR_VALUE_NOT_VALID",
                            f"Invalid value for field \"Stage\": {normalized['stageId']}", 400)
        if item.get("stageId") != normalized["stageId"]:
            if item.get("stageId"):
                item["previousStageId"] = item["stageId"]
            item["movedTime"] = iso(ctx.now)
            item["movedBy"] = ctx.user_id
    for key, value in normalized.items():
        if key in _READONLY:
            continue
        if key in _ITEM_MONEY:
            item[key] = money(value)
        elif re.fullmatch(r"parentId\d+", key):
            item[key] = _int_or(value, 0) or None  # no parent is null, not 0
        elif key in _ITEM_INTS:
            item[key] = _int_or(value, 0)
        else:
            item[key] = value


@method("crm.item.add", scope="crm")
def item_add(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    _entity_type(params)
    fields = arg(params, "fields")
    if not isinstance(fields, dict):
        raise argument_error("fields", "Parameter 'fields' must be array")
    now = iso(ctx.now)
    item: dict[str, Any] = {
        "id": 0, "xmlId": None, "title": "", "createdBy": ctx.user_id, "updatedBy": ctx.user_id,
        "movedBy": ctx.user_id, "createdTime": now, "updatedTime": now, "movedTime": now,
        "categoryId": INVOICE_CATEGORY_ID, "opened": "Y", "stageId": INVOICE_STAGES[0][0], "previousStageId": None,
        "begindate": now, "closedate": None, "companyId": 0, "contactId": 0, "opportunity": Decimal("0"),
        "isManualOpportunity": "Y", "taxValue": Decimal("0"), "currencyId": "RUB", "mycompanyId": 0,
        "sourceId": None, "sourceDescription": None, "accountNumber": "", "assignedById": ctx.user_id,
        "parentId2": None, "comments": None, "observers": [], "contactIds": [],
        "entityTypeId": INVOICE_TYPE_ID}
    _apply_item_fields(ctx, item, fields)
    new_id = ctx.portal.next_id("invoice")
    item["id"] = new_id
    if not item.get("accountNumber"):
        item["accountNumber"] = str(new_id)
    if not item.get("title"):
        item["title"] = f"Счёт #{new_id}"
    ctx.portal.invoices[new_id] = item
    ctx.emit("ONCRMDYNAMICITEMADD", {"FIELDS": {"ID": str(new_id), "ENTITY_TYPE_ID": str(INVOICE_TYPE_ID)}})
    return {"item": _item_out(item)}


def _get_item(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    _entity_type(params)
    raw = arg(params, "id")
    if raw in (None, ""):
        raise argument_error("id", "Parameter 'id' is required")
    item = ctx.portal.invoices.get(_int_or(raw, 0))
    if item is None:
        raise RestError("NOT_FOUND", "Element not found", 400)
    return item


@method("crm.item.get", scope="crm")
def item_get(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"item": _item_out(_get_item(ctx, params))}


@method("crm.item.update", scope="crm")
def item_update(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    item = _get_item(ctx, params)
    fields = arg(params, "fields")
    if not isinstance(fields, dict):
        raise argument_error("fields", "Parameter 'fields' must be array")
    updated = dict(item)
    _apply_item_fields(ctx, updated, fields)
    updated["updatedTime"] = iso(ctx.now)
    updated["updatedBy"] = ctx.user_id
    item.clear()
    item.update(updated)
    ctx.emit("ONCRMDYNAMICITEMUPDATE", {"FIELDS": {"ID": str(item["id"]), "ENTITY_TYPE_ID": str(INVOICE_TYPE_ID)}})
    return {"item": _item_out(item)}


@method("crm.item.delete", scope="crm")
def item_delete(ctx: CallContext, params: dict[str, Any]) -> list[Any]:
    item = _get_item(ctx, params)
    del ctx.portal.invoices[item["id"]]
    ctx.emit("ONCRMDYNAMICITEMDELETE", {"FIELDS": {"ID": str(item["id"]), "ENTITY_TYPE_ID": str(INVOICE_TYPE_ID)}})
    return []


@method("crm.item.list", scope="crm")
def item_list(ctx: CallContext, params: dict[str, Any]) -> ListResult:
    _entity_type(params)
    flt = arg(params, "filter") or {}
    if isinstance(flt, dict):
        flt = {_camel_filter_key(k): v for k, v in flt.items()}
    rows, total, nxt = list_records(list(ctx.portal.invoices.values()), {**params, "filter": flt}, "id")
    return ListResult({"items": [_item_out(r) for r in rows]}, total, nxt)


def _camel_filter_key(key: str) -> str:
    m = re.match(r"^([!@<>=%]*)(.*)$", str(key))
    assert m is not None
    return m.group(1) + camel(m.group(2))


# ---------------------------------------------------------------------------------------------
# timeline comments
_TIMELINE_TYPES = {"deal": "deals", "company": "companies", "smart_invoice": "invoices", "dynamic_31": "invoices"}


@method("crm.timeline.comment.add", scope="crm")
def timeline_add(ctx: CallContext, params: dict[str, Any]) -> int:
    # api-reference/crm/timeline/comments/crm-timeline-comment-add.md: "С версии crm 23.100.0 метод принимает
    # только параметры с ключом `fields` в нижнем регистре. Другие недокументированные варианты (Fields, FIELDS,
    # arFields) не принимаются." Its error table: `100` «Не переданы обязательные поля».
    if not isinstance(params.get("fields"), dict):
        raise RestError("100", "Required fields are not set: fields", 400)
    fields = _fields(params)
    entity_type = str(fields.get("ENTITY_TYPE", "")).lower()
    entity_id = _int_or(fields.get("ENTITY_ID"), 0)
    if entity_type not in _TIMELINE_TYPES:
        raise RestError("", "ENTITY_TYPE is not defined or invalid.", 400)
    if entity_id not in getattr(ctx.portal, _TIMELINE_TYPES[entity_type]):
        raise RestError("", "Entity not found.", 400)
    if not str(fields.get("COMMENT", "")).strip():
        raise RestError("", "Empty comment message.", 400)
    new_id = ctx.portal.next_id("timeline")
    ctx.portal.timeline_comments.append({
        "ID": new_id, "CREATED": iso(ctx.now), "ENTITY_ID": entity_id, "ENTITY_TYPE": entity_type,
        "AUTHOR_ID": _int_or(fields.get("AUTHOR_ID"), ctx.user_id), "COMMENT": str(fields["COMMENT"]),
        "FILES": [], "client_id": ctx.client_id})
    return new_id


@method("crm.timeline.comment.list", scope="crm")
def timeline_list(ctx: CallContext, params: dict[str, Any]) -> ListResult:
    flt = arg(params, "filter")
    if not isinstance(flt, dict) or not arg(flt, "ENTITY_ID") or not arg(flt, "ENTITY_TYPE"):
        raise RestError("", "ENTITY_ID and ENTITY_TYPE are required in filter.", 400)
    records = [{k: v for k, v in c.items() if k != "client_id"} for c in ctx.portal.timeline_comments]
    rows, total, nxt = list_records(records, params, "ID", {"ID": "DESC"})
    return ListResult([_legacy_out(r) for r in rows], total, nxt)
