"""Payment records of the Bitrix24 sandbox: `crm.item.payment.*` (scope crm) on deals and invoices, and the
low-level `sale.payment.get/update/list` (scope sale, administrators) that set what the CRM methods cannot.

Docs (bitrix-tools/b24-rest-docs@2ba82021):
- api-reference/crm/universal/payment/index.md: payments exist for deals (2) and invoices (31) only; for other
  types `crm.item.payment.add` answers «Для данной сущности функционал создания оплат недоступен» and
  `crm.item.payment.list` an empty list; `filter`/`order` are those of sale.payment.list.
- crm-item-payment-{add,get,list,pay,unpay,delete,update}.md: errors are `{"error": 0, ...}` with HTTP 400
  (access denied, wrong type, entity not found, payment not found), `100` for a missing parameter; the simple
  shape is id, accountNumber (`3653/1`), paid Y/N, datePaid, empPaidId, paySystemId, sum, currency,
  paySystemName; crm.item.payment.update changes only `paid` and `paySystemId`.
- api-reference/sale/payment/sale-payment-{get,update,list}.md: `{"result": {"payment": {...}}}` with every
  sale_order_payment field (xmlId "external id", comments, sum...); unknown id → 200640400001 "payment is not
  exists"; no right to read → 200040300010, to change → 200040300020; all under HTTP 400.

Where the docs are silent the sandbox says so at the spot: the sum and currency of a new record (the examples
show `sum: 0`; the sandbox takes the entity's currency), the exact texts of the `0`/`100` errors (the code
tables give descriptions, not messages), the default pay system (the examples show 6 «Наличные»), and what
happens to a paid record's sum or deletion (allowed here; the app unpays before deleting anyway).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from .rest import CallContext, ListResult, RestError, arg, method
from .crm import list_records
from .state import Portal, iso, money

DEAL, INVOICE = 2, 31
PAY_SYSTEMS = {6: "Наличные", 1: "Банковский перевод (Компании)"}  # ids/names of the docs' examples
DEFAULT_PAY_SYSTEM = 6
SIMPLE = ("id", "accountNumber", "paid", "datePaid", "empPaidId", "paySystemId", "sum", "currency", "paySystemName")
# sale_order_payment fields (sale-payment-get.md example) the sandbox keeps beside the simple shape
_SALE_DEFAULTS: dict[str, Any] = {
    "comments": "", "companyId": None, "dateBill": None, "dateMarked": None, "datePayBefore": None,
    "dateResponsibleId": None, "empMarkedId": None, "empResponsibleId": None, "empReturnId": None,
    "externalPayment": "N", "id1c": "", "isReturn": "N", "marked": "N", "payReturnComment": "",
    "payReturnDate": None, "payReturnNum": "", "paySystemIsCash": "Y", "paySystemXmlId": "",
    "payVoucherDate": None, "payVoucherNum": "", "priceCod": "0", "psCurrency": "", "psInvoiceId": None,
    "psResponseDate": None, "psStatus": "", "psStatusCode": "", "psStatusDescription": "", "psStatusMessage": "",
    "psSum": None, "reasonMarked": "", "responsibleId": None, "updated1c": "N", "version1c": "",
}
# sale-payment-update.md, "Параметр fields": every field the page lists
_UPDATABLE = ("paySystemId", "paid", "datePaid", "empPaidId", "psStatus", "psStatusCode", "psStatusDescription",
              "psStatusMessage", "psSum", "psCurrency", "psResponseDate", "payVoucherNum", "payVoucherDate",
              "datePayBefore", "dateBill", "xmlId", "sum", "companyId", "payReturnNum", "priceCod", "payReturnDate",
              "empReturnId", "payReturnComment", "responsibleId", "empResponsibleId", "isReturn", "comments",
              "updated1c", "id1c", "version1c", "externalPayment", "psInvoiceId", "marked", "reasonMarked",
              "empMarkedId")


def _crm_error(description: str) -> RestError:
    """crm.item.payment.*: code 0 under HTTP 400 (the pages' "Обработка ошибок")."""
    return RestError(0, description, 400)  # Bitrix24 sends the number 0


def _missing(name: str) -> RestError:
    # code 100 "Не указан параметр id" / "Не переданы обязательные поля"; the message text is not documented
    return RestError(100, f"Required parameter '{name}' is not specified", 400)


def _number(value: Any) -> int | float:
    d = Decimal(value)
    return int(d) if d == d.to_integral_value() else float(d)


def simple(p: dict[str, Any]) -> dict[str, Any]:
    """sale_order_payment_crm_simple (crm-item-payment-get.md)."""
    out = {k: p[k] for k in SIMPLE}
    out["sum"] = _number(p["sum"])
    return out


def full(p: dict[str, Any]) -> dict[str, Any]:
    """sale_order_payment as sale.payment.get prints it (no entity link: the sale layer knows only orderId)."""
    out = {k: v for k, v in p.items() if k not in ("entityTypeId", "entityId")}
    out["sum"] = _number(p["sum"])
    return dict(sorted(out.items()))


def control_view(p: dict[str, Any]) -> dict[str, Any]:
    """What the sandbox's /sandbox/state shows of a record (tests read it to check what the app left)."""
    return {**simple(p), "entityTypeId": p["entityTypeId"], "entityId": p["entityId"], "orderId": p["orderId"],
            "xmlId": p["xmlId"], "comments": p["comments"], "sum": str(p["sum"])}


def _id(params: dict[str, Any]) -> int:
    raw = arg(params, "id")
    if raw in (None, ""):
        raise _missing("id")
    try:
        return int(str(raw).strip())
    except ValueError:
        raise _crm_error("Оплата не найдена или доступ запрещен") from None


def _entity(ctx: CallContext, params: dict[str, Any], *, adding: bool) -> tuple[int, dict[str, Any] | None]:
    type_raw, id_raw = arg(params, "entityTypeId"), arg(params, "entityId")
    if type_raw in (None, "") or id_raw in (None, ""):
        raise _missing("entityTypeId" if type_raw in (None, "") else "entityId")
    try:
        type_id, entity_id = int(str(type_raw)), int(str(id_raw))
    except ValueError:
        raise _crm_error("Некорректный тип объекта CRM") from None
    if type_id not in (DEAL, INVOICE):
        if adding:  # index.md, "Связь оплат с другими объектами"
            raise _crm_error("Для данной сущности функционал создания оплат недоступен")
        return type_id, None
    record = (ctx.portal.deals if type_id == DEAL else ctx.portal.invoices).get(entity_id)
    if record is None:  # crm-item-payment-add.md, the error example
        raise _crm_error(f"Сущность с идентификатором №{entity_id} не существует")
    _check_right(ctx, type_id, record)
    return type_id, record


def _check_right(ctx: CallContext, type_id: int, record: dict[str, Any]) -> None:
    """"требуется право на изменение/чтение объекта CRM": the sandbox models only the deal read right
    (User.deal_read), so that is what it checks for both; invoices are open to every user here."""
    user = ctx.portal.users.get(ctx.user_id)
    if type_id == DEAL and not ctx.is_webhook and user is not None and not user.may_read_deal(record):
        raise _crm_error("Недостаточно прав")


def _payment(ctx: CallContext, payment_id: int) -> dict[str, Any]:
    p = ctx.portal.payments.get(payment_id)
    if p is None:
        raise _crm_error("Оплата не найдена или доступ запрещен")
    entity = (ctx.portal.deals if p["entityTypeId"] == DEAL else ctx.portal.invoices).get(p["entityId"])
    if entity is not None:
        try:
            _check_right(ctx, p["entityTypeId"], entity)
        except RestError:  # the pages name both cases with one code and one description
            raise _crm_error("Оплата не найдена или доступ запрещен") from None
    return p


def _order_id(portal: Portal, type_id: int, entity_id: int) -> int:
    """A deal's payments belong to one order (accountNumber `<order>/<n>`, crm-item-payment-list.md example)."""
    key = entity_id if type_id == DEAL else -entity_id
    if key not in portal.deal_orders:
        portal.deal_orders[key] = 3652 + portal.next_id("order")  # the docs' example numbers start at 3653
    return portal.deal_orders[key]


def _set_paid(ctx: CallContext, p: dict[str, Any], paid: bool, *, when: Any = None) -> None:
    p["paid"] = "Y" if paid else "N"
    # datePaid / empPaidId: the list example prints both null on an unpaid record
    p["datePaid"] = (str(when) if when else iso(ctx.now)) if paid else None
    p["empPaidId"] = ctx.user_id if paid else None


@method("crm.item.payment.add", scope="crm")
def payment_add(ctx: CallContext, params: dict[str, Any]) -> int:
    type_id, record = _entity(ctx, params, adding=True)
    assert record is not None
    entity_id = int(str(arg(params, "entityId")))
    order_id = _order_id(ctx.portal, type_id, entity_id)
    n = 1 + sum(1 for q in ctx.portal.payments.values() if q["orderId"] == order_id)
    payment_id = 1032 + ctx.portal.next_id("payment")  # the docs' examples: 1033, 1036...
    currency = str(record.get("CURRENCY_ID") or record.get("currencyId") or "RUB")  # docs silent: entity's
    ctx.portal.payments[payment_id] = {
        **_SALE_DEFAULTS, "id": payment_id, "accountNumber": f"{order_id}/{n}", "paid": "N", "datePaid": None,
        "empPaidId": None, "paySystemId": DEFAULT_PAY_SYSTEM, "sum": Decimal("0"), "currency": currency,
        "paySystemName": PAY_SYSTEMS[DEFAULT_PAY_SYSTEM], "orderId": order_id, "xmlId": f"bx_{payment_id:013x}",
        "dateBill": iso(ctx.now), "dateResponsibleId": iso(ctx.now), "responsibleId": ctx.user_id,
        "empResponsibleId": ctx.user_id, "entityTypeId": type_id, "entityId": entity_id}
    return payment_id


@method("crm.item.payment.get", scope="crm")
def payment_get(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return simple(_payment(ctx, _id(params)))


@method("crm.item.payment.list", scope="crm")
def payment_list(ctx: CallContext, params: dict[str, Any]) -> ListResult:
    type_id, record = _entity(ctx, params, adding=False)
    if record is None:
        return ListResult([])
    entity_id = int(str(arg(params, "entityId")))
    own = [p for p in ctx.portal.payments.values() if p["entityTypeId"] == type_id and p["entityId"] == entity_id]
    # index.md: `filter`/`order` in the format of sale.payment.list, so they see every sale field (xmlId too);
    # the answer has the simple shape and no total/next (the page's example prints neither)
    rows, _, _ = list_records(own, {"filter": arg(params, "filter") or {}, "order": arg(params, "order"),
                                    "start": -1}, "id")
    return ListResult([simple(ctx.portal.payments[r["id"]]) for r in rows])


@method("crm.item.payment.pay", scope="crm")
def payment_pay(ctx: CallContext, params: dict[str, Any]) -> bool:
    _set_paid(ctx, _payment(ctx, _id(params)), True)
    return True


@method("crm.item.payment.unpay", scope="crm")
def payment_unpay(ctx: CallContext, params: dict[str, Any]) -> bool:
    _set_paid(ctx, _payment(ctx, _id(params)), False)
    return True


@method("crm.item.payment.update", scope="crm")
def payment_update(ctx: CallContext, params: dict[str, Any]) -> bool:
    """Only `paid` and `paySystemId` (crm-item-payment-update.md); other keys are ignored (docs silent)."""
    p = _payment(ctx, _id(params))
    fields = arg(params, "fields")
    if not isinstance(fields, dict) or not fields:
        raise _missing("fields")
    if "paySystemId" in fields:
        _pay_system(p, fields["paySystemId"], _crm_error("Платежная система не найдена"))
    if "paid" in fields:
        _set_paid(ctx, p, str(fields["paid"]).upper() == "Y")
    return True


@method("crm.item.payment.delete", scope="crm")
def payment_delete(ctx: CallContext, params: dict[str, Any]) -> bool:
    p = _payment(ctx, _id(params))
    del ctx.portal.payments[p["id"]]
    return True


def _pay_system(p: dict[str, Any], value: Any, error: RestError) -> None:
    try:
        ps = int(str(value))
    except ValueError:
        raise error from None
    if ps not in PAY_SYSTEMS:
        raise error
    p["paySystemId"], p["paySystemName"] = ps, PAY_SYSTEMS[ps]


# ---------------------------------------------------------------------------------------------
# sale.payment.* (scope sale, "Кто может выполнять метод: администратор")
def _sale_right(ctx: CallContext, code: int) -> None:
    """sale-payment-get.md / -update.md: 200040300010 (read) / 200040300020 (update) "Недостаточно прав"; the
    message text is not documented ("Access Denied" is an assumption). The admin check is the documented
    "администратор"; the sandbox's users are either portal administrators or not."""
    if not ctx.is_webhook and not ctx.user_is_admin():
        raise RestError(code, "Access Denied", 400)


def _sale_payment(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    raw = arg(params, "id")
    if raw in (None, ""):
        raise _missing("id")
    try:
        p = ctx.portal.payments.get(int(str(raw).strip()))
    except ValueError:
        p = None
    if p is None:  # the documented example of both pages
        raise RestError(200640400001, "payment is not exists", 400)
    return p


@method("sale.payment.get", scope="sale")
def sale_payment_get(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    _sale_right(ctx, 200040300010)
    return {"payment": full(_sale_payment(ctx, params))}


@method("sale.payment.update", scope="sale")
def sale_payment_update(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """sale-payment-update.md. The fields table marks paySystemId required, but for an update the sandbox does
    not insist (the docs' example sends it; what a portal answers without it is not documented)."""
    _sale_right(ctx, 200040300020)
    p = _sale_payment(ctx, params)
    fields = arg(params, "fields")
    if not isinstance(fields, dict) or not fields:
        raise _missing("fields")
    unknown = sorted(k for k in fields if k not in _UPDATABLE)
    if unknown:  # docs silent on keys the page does not list; the sandbox refuses them so a typo is caught
        raise RestError(0, f"Unknown fields: {', '.join(unknown)}", 400)
    if "paySystemId" in fields:
        _pay_system(p, fields["paySystemId"], RestError(0, "pay system is not exists", 400))
    if "sum" in fields:
        amount = money(fields["sum"])
        if amount < 0:
            raise RestError(0, "sum must not be negative", 400)
        p["sum"] = amount
    if "paid" in fields:
        _set_paid(ctx, p, str(fields["paid"]).upper() == "Y", when=fields.get("datePaid"))
    elif "datePaid" in fields:
        p["datePaid"] = fields["datePaid"] or None
    for key in _UPDATABLE:
        if key in fields and key not in ("paySystemId", "sum", "paid", "datePaid"):
            p[key] = _typed(key, fields[key])
    return {"payment": full(p)}


def _typed(key: str, value: Any) -> Any:
    """Values inside a batch command arrive as strings; the answer prints ids and psSum as numbers
    (sale-payment-get.md example)."""
    if value in (None, ""):
        return None if key.endswith("Id") or key == "psSum" else value
    if key == "psSum":
        return _number(money(value))
    if key.endswith("Id") and key not in ("xmlId", "id1c") and str(value).strip().isdigit():
        return int(str(value).strip())
    return value


@method("sale.payment.list", scope="sale")
def sale_payment_list(ctx: CallContext, params: dict[str, Any]) -> ListResult:
    """sale-payment-list.md: select/filter/order/start over every payment of the portal, 50 a page,
    `{"payments": [...]}` with `total`."""
    _sale_right(ctx, 200040300010)
    records = [full(p) for p in ctx.portal.payments.values()]
    rows, total, nxt = list_records(records, params, "id")
    return ListResult({"payments": rows}, total, nxt)
