"""Non-CRM REST methods of the Bitrix24 sandbox: app.info, users, placements, events, batch, im, tasks,
automation triggers."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .rest import CallContext, ListResult, RestError, arg, argument_error, as_int, method, run_batch
from .crm import list_records
from .state import EventBinding, IssuedToken, Placement, Portal, SandboxState, User, iso

PLACEMENT_CODES = (
    "CRM_DEAL_DETAIL_TAB", "CRM_DEAL_DETAIL_ACTIVITY", "CRM_DEAL_DETAIL_TOOLBAR", "CRM_DEAL_LIST_MENU",
    "CRM_DEAL_LIST_TOOLBAR", "CRM_DEAL_ACTIVITY_TIMELINE_MENU", "CRM_SMART_INVOICE_DETAIL_TAB",
    "CRM_SMART_INVOICE_DETAIL_ACTIVITY", "CRM_SMART_INVOICE_DETAIL_TOOLBAR", "CRM_SMART_INVOICE_LIST_MENU",
    "CRM_SMART_INVOICE_LIST_TOOLBAR", "CRM_COMPANY_DETAIL_TAB", "LEFT_MENU", "REST_APP_URI",
    "PAGE_BACKGROUND_WORKER", "USER_PROFILE_MENU", "IM_NAVIGATION", "IM_CONTEXT_MENU",
)
EVENT_CODES = (
    "ONAPPINSTALL", "ONAPPUNINSTALL", "ONAPPUPDATE", "ONAPPPAYMENT", "ONAPPTEST",
    "ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALDELETE", "ONCRMDEALMOVETOCATEGORY",
    "ONCRMDYNAMICITEMADD", "ONCRMDYNAMICITEMUPDATE", "ONCRMDYNAMICITEMDELETE",
    "ONCRMDYNAMICITEMADD_31", "ONCRMDYNAMICITEMUPDATE_31", "ONCRMDYNAMICITEMDELETE_31",
    "ONCRMCOMPANYADD", "ONCRMCOMPANYUPDATE", "ONCRMCOMPANYDELETE", "ONUSERADD",
)


def app_info_result(state: SandboxState, portal: Portal, host: str, token: IssuedToken | None, *,
                    oauth_server: bool = False) -> dict[str, Any]:
    """`app.info`. A portal answers the documented fields only (api-reference/common/system/app-info.md:
    ID, CODE, VERSION, STATUS, INSTALLED, PAYMENT_EXPIRED, DAYS, LANGUAGE_ID, LICENSE...); the OAuth server
    (settings/oauth/simple-way.md: "the trusted status is app.info on the auth server") adds `client_id`,
    `scope`, `expires`, `user_id` and the `install` block. For a local app CODE is its client_id (the docs do
    not say what CODE is for a local app; a Market app's is its vendor code, e.g. "telefum24.kp10")."""
    if token is None:  # the inbound webhook has no application
        return {"SCOPE": ["crm", "placement", "im", "task", "user_brief", "sale"], "LICENSE": "ru_project",
                "LICENSE_PREVIOUS": "ru_project", "LICENSE_TYPE": "project", "LICENSE_FAMILY": "project"}
    app = state.apps[token.client_id]
    inst = portal.installations.get(token.client_id)
    installed = bool(inst and inst.installed)
    version = inst.version if inst else app.version
    domain = portal.domain(host)
    result: dict[str, Any] = {
        "ID": inst.local_id if inst else 0, "CODE": app.code, "VERSION": version, "STATUS": "L",
        "INSTALLED": installed, "PAYMENT_EXPIRED": "N", "DAYS": None, "LANGUAGE_ID": portal.lang,
        "LICENSE": "ru_project", "LICENSE_TYPE": "project", "LICENSE_FAMILY": "project",
    }
    if oauth_server:
        result.update({
            "client_id": app.client_id, "scope": app.scope, "expires": iso(token.expires_at),
            "user_id": token.user_id,
            "install": {"installed": installed, "version": version, "status": "L", "scope": app.scope,
                        "domain": domain, "uri": f"http://{domain}/", "client_endpoint": portal.client_endpoint(host),
                        "member_id": portal.member_id, "member_type": "PORTAL"}})
    return result


@method("app.info")
def app_info(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return app_info_result(ctx.state, ctx.portal, ctx.host, ctx.token)


@method("batch")
def batch(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return run_batch(ctx, params)


@method("scope")
def scope(ctx: CallContext, params: dict[str, Any]) -> list[str]:
    if ctx.scopes is None:
        return ["crm", "placement", "im", "task", "user", "user_brief", "sale"]
    return sorted(ctx.scopes)


# ---------------------------------------------------------------------------------------------
# users
def _user(ctx: CallContext) -> User:
    user = ctx.portal.users.get(ctx.user_id)
    if user is None:
        raise RestError("NO_AUTH_FOUND", "Wrong authorization data", 401)
    return user


@method("user.current", scope=("user", "user_brief", "user_basic"))
def user_current(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return _user(ctx).rest()


@method("user.admin")
def user_admin(ctx: CallContext, params: dict[str, Any]) -> bool:
    return _user(ctx).admin


@method("profile")
def profile(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    user = _user(ctx)
    return {"ID": str(user.id), "ADMIN": user.admin, "NAME": user.name, "LAST_NAME": user.last_name,
            "PERSONAL_GENDER": "", "PERSONAL_PHOTO": "", "TIME_ZONE": "", "TIME_ZONE_OFFSET": 0}


@method("user.get", scope=("user", "user_brief", "user_basic"))
def user_get(ctx: CallContext, params: dict[str, Any]) -> ListResult:
    flt = dict(arg(params, "FILTER") or arg(params, "filter") or {})
    for key, value in params.items():  # user.get also takes filter fields at the top level
        if key.upper() in ("ID", "ACTIVE", "NAME", "LAST_NAME", "EMAIL", "ADMIN"):
            flt[key.upper()] = value
    records = [{**u.rest(), "ID": u.id, "IS_ADMIN": u.admin} for u in ctx.portal.users.values()]
    rows, total, nxt = list_records(records, {"filter": flt, "start": arg(params, "start", 0),
                                              "order": {"ID": "ASC"}}, "ID")
    for row in rows:
        row["ID"] = str(row["ID"])
        row.pop("IS_ADMIN", None)
    return ListResult(rows, total, nxt)


# ---------------------------------------------------------------------------------------------
# placements
def _check_handler(url: str, name: str) -> str:
    if not url:
        raise argument_error(name)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RestError("ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol", 400)
    if not parts.hostname or "." not in parts.hostname:
        raise RestError("ERROR_WRONG_HANDLER_URL", "Wrong handler URL", 400)
    return url


@method("placement.bind", scope="placement", app_only=True, admin_only=True)
def placement_bind(ctx: CallContext, params: dict[str, Any]) -> bool:
    code = str(arg(params, "PLACEMENT") or "").upper()
    if not code:
        raise argument_error("PLACEMENT")
    handler = _check_handler(str(arg(params, "HANDLER") or ""), "HANDLER")
    if code not in PLACEMENT_CODES or (code.startswith("CRM_") and ctx.scopes is not None and "crm" not in ctx.scopes):
        raise RestError("ERROR_PLACEMENT_NOT_FOUND", "Placement not found", 400)
    assert ctx.client_id is not None
    for existing in ctx.portal.placements:
        if existing.client_id == ctx.client_id and existing.placement == code and existing.handler == handler:
            raise RestError("ERROR_CORE", "Unable to set placement handler: Handler already binded", 400)
    lang_all = arg(params, "LANG_ALL") or {}
    ctx.portal.placements.append(Placement(
        id=ctx.portal.next_id("placement"), client_id=ctx.client_id, placement=code, handler=handler,
        title=str(arg(params, "TITLE") or ""), description=str(arg(params, "DESCRIPTION") or ""),
        group_name=str(arg(params, "GROUP_NAME") or ""), options=arg(params, "OPTIONS") or [],
        lang_all=lang_all if isinstance(lang_all, dict) else {}))
    return True


@method("placement.unbind", scope="placement", app_only=True, admin_only=True)
def placement_unbind(ctx: CallContext, params: dict[str, Any]) -> dict[str, int]:
    code = str(arg(params, "PLACEMENT") or "").upper()
    if not code:
        raise argument_error("PLACEMENT")
    handler = str(arg(params, "HANDLER") or "")
    keep, removed = [], 0
    for p in ctx.portal.placements:
        if p.client_id == ctx.client_id and p.placement == code and (not handler or p.handler == handler):
            removed += 1
        else:
            keep.append(p)
    ctx.portal.placements[:] = keep
    return {"count": removed}


@method("placement.get", scope="placement", app_only=True)
def placement_get(ctx: CallContext, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [p.rest() for p in ctx.portal.placements if p.client_id == ctx.client_id]


@method("placement.list", scope="placement")
def placement_list(ctx: CallContext, params: dict[str, Any]) -> list[str]:
    return list(PLACEMENT_CODES)


# ---------------------------------------------------------------------------------------------
# events
@method("events")
def events(ctx: CallContext, params: dict[str, Any]) -> list[str]:
    return list(EVENT_CODES)


@method("event.bind", app_only=True, admin_only=True)
def event_bind(ctx: CallContext, params: dict[str, Any]) -> bool:
    name = str(arg(params, "event") or "").upper()
    if not name:
        raise argument_error("event")
    event_type = str(arg(params, "event_type") or "online").lower()
    handler = str(arg(params, "handler") or "")
    if event_type != "offline":
        _check_handler(handler, "handler")
    if name not in EVENT_CODES:
        raise RestError("ERROR_EVENT_NOT_FOUND", "Event not found", 400)
    auth_type = int(str(arg(params, "auth_type") or 0) or 0)
    if auth_type and auth_type not in ctx.portal.users:
        raise RestError("ERROR_ARGUMENT", "User not found", 400, argument="auth_type")
    assert ctx.client_id is not None
    for b in ctx.portal.events:
        if (b.client_id, b.event, b.handler, b.auth_type) == (ctx.client_id, name, handler, auth_type):
            raise RestError("ERROR_CORE", "Unable to set event handler: Handler already binded", 400)
    ctx.portal.events.append(EventBinding(ctx.portal.next_id("event_binding"), ctx.client_id, name, handler,
                                          auth_type, event_type))
    return True


@method("event.unbind", app_only=True, admin_only=True)
def event_unbind(ctx: CallContext, params: dict[str, Any]) -> dict[str, int]:
    name = str(arg(params, "event") or "").upper()
    if not name:
        raise argument_error("event")
    handler = str(arg(params, "handler") or "")
    auth_type = arg(params, "auth_type")
    keep, removed = [], 0
    for b in ctx.portal.events:
        if (b.client_id == ctx.client_id and b.event == name and (not handler or b.handler == handler)
                and (auth_type in (None, "") or b.auth_type == int(str(auth_type)))):
            removed += 1
        else:
            keep.append(b)
    ctx.portal.events[:] = keep
    return {"count": removed}


@method("event.get", app_only=True)
def event_get(ctx: CallContext, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [b.rest() for b in ctx.portal.events if b.client_id == ctx.client_id]


# ---------------------------------------------------------------------------------------------
# notifications, chat, tasks
def _notify(ctx: CallContext, params: dict[str, Any], kind: str) -> int:
    user_id = arg(params, "USER_ID")
    if user_id in (None, ""):
        raise RestError("USER_ID_EMPTY", "Recipient ID is empty", 400)
    uid = as_int(user_id, "USER_ID")
    if uid not in ctx.portal.users:
        raise RestError("USER_ID_EMPTY", "Recipient not found", 400)
    message = str(arg(params, "MESSAGE") or "")
    attach = arg(params, "ATTACH")
    if not message.strip() and not attach:
        raise RestError("MESSAGE_EMPTY", "Message text is empty", 400)
    new_id = ctx.portal.next_id("notification")
    tag = arg(params, "TAG")
    if tag:
        # Bitrix24: a notification with an existing TAG replaces the earlier ones (the user sees one).
        for old in ctx.portal.notifications:
            if old.get("tag") == tag and old.get("client_id") == ctx.client_id and not old.get("replaced_by"):
                old["replaced_by"] = new_id
    ctx.portal.notifications.append({
        "id": new_id, "method": kind, "user_id": uid, "from_user_id": ctx.user_id, "client_id": ctx.client_id,
        "message": message, "attach": attach, "tag": tag, "sub_tag": arg(params, "SUB_TAG"),
        "dialog_id": None, "created": iso(ctx.now)})
    return new_id


@method("im.notify.system.add", scope="im")
def notify_system(ctx: CallContext, params: dict[str, Any]) -> int:
    return _notify(ctx, params, "im.notify.system.add")


@method("im.notify.personal.add", scope="im")
def notify_personal(ctx: CallContext, params: dict[str, Any]) -> int:
    return _notify(ctx, params, "im.notify.personal.add")


@method("im.notify", scope="im")
def notify_legacy(ctx: CallContext, params: dict[str, Any]) -> int:
    return _notify(ctx, params, "im.notify")


@method("im.message.add", scope="im")
def message_add(ctx: CallContext, params: dict[str, Any]) -> int:
    dialog = str(arg(params, "DIALOG_ID") or "")
    if not dialog:
        raise RestError("DIALOG_ID_EMPTY", "Dialog ID can't be empty", 400)
    if dialog.isdigit() and int(dialog) not in ctx.portal.users:
        raise RestError("USER_NOT_FOUND", "User not found", 400)
    message = str(arg(params, "MESSAGE") or "")
    attach = arg(params, "ATTACH")
    if not message.strip() and not attach:
        raise RestError("MESSAGE_EMPTY", "Message can't be empty", 400)
    new_id = ctx.portal.next_id("message")
    ctx.portal.notifications.append({
        "id": new_id, "method": "im.message.add", "user_id": int(dialog) if dialog.isdigit() else None,
        "from_user_id": ctx.user_id, "client_id": ctx.client_id, "message": message, "attach": attach,
        "tag": None, "sub_tag": None, "dialog_id": dialog, "created": iso(ctx.now)})
    return new_id


@method("tasks.task.add", scope="task")
def task_add(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    fields = arg(params, "fields")
    if not isinstance(fields, dict):
        raise RestError("ERROR_CORE", "Wrong fields", 400)
    fields = {str(k).upper(): v for k, v in fields.items()}
    title = str(fields.get("TITLE") or "").strip()
    if not title:
        raise RestError("ERROR_CORE", "Не указано название задачи", 400)
    responsible = fields.get("RESPONSIBLE_ID")
    if responsible in (None, "") or as_int(responsible, "RESPONSIBLE_ID") not in ctx.portal.users:
        raise RestError("ERROR_CORE", "Не указан ответственный", 400)
    crm = fields.get("UF_CRM_TASK") or []
    if isinstance(crm, str):
        crm = [crm]
    new_id = ctx.portal.next_id("task")
    now = iso(ctx.now)
    task = {"id": str(new_id), "parentId": None, "title": title,
            "description": str(fields.get("DESCRIPTION") or ""), "priority": str(fields.get("PRIORITY", "1")),
            "status": "2", "createdBy": str(fields.get("CREATED_BY") or ctx.user_id),
            "responsibleId": str(responsible), "createdDate": now, "changedDate": now,
            "deadline": fields.get("DEADLINE"), "groupId": str(fields.get("GROUP_ID") or 0),
            "ufCrmTask": list(crm)}
    ctx.portal.tasks.append({**task, "client_id": ctx.client_id})
    return {"task": task}


# api-reference/tasks/tasks-task-list.md: the filter keys it lists, and the only documented prefixes
# ("Перед названием фильтруемого поля можно указать тип фильтрации": `!`, `<`, `<=`, `>`, `>=`). A substring
# search is `TITLE` with the wildcards `%` and `_` in the value ("можно искать по шаблону [%_]"); `%TITLE` is
# not documented. What the real portal answers to an undocumented prefix the page does not say: the sandbox
# refuses it in the page's only documented error shape (`"error": "0"`), so an app relying on it fails here.
TASK_FILTER_FIELDS = frozenset((
    "ID", "PARENT_ID", "GROUP_ID", "CREATED_BY", "STATUS_CHANGED_BY", "PRIORITY", "FORUM_TOPIC_ID",
    "RESPONSIBLE_ID", "TITLE", "TAG", "REAL_STATUS", "STATUS", "MARK", "SITE_ID", "ADD_IN_REPORT", "DATE_START",
    "DEADLINE", "CREATED_DATE", "CLOSED_DATE", "CHANGED_DATE", "ACCOMPLICE", "AUDITOR", "DEPENDS_ON",
    "ONLY_ROOT_TASKS", "STAGE_ID", "SPRINT_ID", "BACKLOG_ID", "UF_CRM_TASK", "::SUBFILTER-PARAMS"))
_TASK_FILTER_KEY = re.compile(r"^(!|<=|>=|<|>)?(.+)$")


def _like(pattern: str, text: str) -> bool:
    """SQL LIKE, case-insensitive: `%` any run of characters, `_` exactly one."""
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, text, re.IGNORECASE | re.DOTALL) is not None


@method("tasks.task.list", scope="task")
def task_list(ctx: CallContext, params: dict[str, Any]) -> ListResult:
    """The subset the app uses: filter RESPONSIBLE_ID and TITLE (LIKE pattern); result {"tasks": [...]}."""
    flt = arg(params, "filter") or {}
    if not isinstance(flt, dict):
        raise RestError("ERROR_CORE", "Wrong filter", 400)
    flt = {str(k).upper(): v for k, v in flt.items()}
    for key in flt:
        m = _TASK_FILTER_KEY.match(key)
        if m is None or m.group(2) not in TASK_FILTER_FIELDS:
            raise RestError("0", f"Unknown filter key {key} (not in tasks-task-list.md)", 400)
    rows = [{k: v for k, v in t.items() if k != "client_id"} for t in ctx.portal.tasks]
    if flt.get("RESPONSIBLE_ID") not in (None, ""):
        rows = [t for t in rows if t["responsibleId"] == str(flt["RESPONSIBLE_ID"])]
    if flt.get("TITLE") not in (None, ""):
        rows = [t for t in rows if _like(str(flt["TITLE"]), t["title"])]
    select = arg(params, "select")
    if isinstance(select, list) and select and "*" not in select:  # select: UPPER_CASE names, camelCase keys
        wanted = {str(s).replace("_", "").lower() for s in select} | {"id"}
        rows = [{k: v for k, v in t.items() if k.lower() in wanted} for t in rows]
    # total: api-reference/tasks/tasks-task-list.md (list methods answer total, and next past 50 rows)
    return ListResult({"tasks": rows}, len(rows), None)


# ---------------------------------------------------------------------------------------------
# automation triggers
# api-reference/crm/automation/triggers/crm-automation-trigger-{add,list,execute,delete}.md: "Кто может
# выполнять метод: администратор с доступом к CRM в контексте приложения"; errors (HTTP 400) `ACCESS_DENIED`
# «Access denied! Application context required» and «Access denied! Admin permissions required». The rights
# are those of the user whose token calls: for the app's stored tokens, the user who installed it.
def _trigger_rights(ctx: CallContext) -> None:
    if ctx.is_webhook:
        raise RestError("ACCESS_DENIED", "Access denied! Application context required", 400)
    if not ctx.user_is_admin():
        raise RestError("ACCESS_DENIED", "Access denied! Admin permissions required", 400)


@method("crm.automation.trigger.add", scope="crm")
def trigger_add(ctx: CallContext, params: dict[str, Any]) -> bool:
    _trigger_rights(ctx)
    code = str(arg(params, "CODE") or "")
    name = str(arg(params, "NAME") or "")
    if not code:
        raise argument_error("CODE", "Empty trigger code")
    if not name:
        raise argument_error("NAME", "Empty trigger name")
    ctx.portal.automation_triggers[code] = {"CODE": code, "NAME": name, "client_id": ctx.client_id}
    return True


@method("crm.automation.trigger.list", scope="crm")
def trigger_list(ctx: CallContext, params: dict[str, Any]) -> list[dict[str, str]]:
    _trigger_rights(ctx)
    return [{"NAME": t["NAME"], "CODE": t["CODE"]} for t in ctx.portal.automation_triggers.values()
            if t["client_id"] == ctx.client_id]


@method("crm.automation.trigger.delete", scope="crm")
def trigger_delete(ctx: CallContext, params: dict[str, Any]) -> bool:
    _trigger_rights(ctx)
    code = str(arg(params, "CODE") or "")
    trig = ctx.portal.automation_triggers.get(code)
    if not trig or trig["client_id"] != ctx.client_id:
        raise RestError("ERROR_NOT_FOUND", "Trigger not found", 400)
    del ctx.portal.automation_triggers[code]
    return True


@method("crm.automation.trigger.execute", scope="crm")
def trigger_execute(ctx: CallContext, params: dict[str, Any]) -> bool:
    _trigger_rights(ctx)
    code = str(arg(params, "CODE") or "")
    trig = ctx.portal.automation_triggers.get(code)
    if not trig or trig["client_id"] != ctx.client_id:
        raise RestError("ERROR_NOT_FOUND", "Trigger not found", 400)
    owner_type = as_int(arg(params, "OWNER_TYPE_ID"), "OWNER_TYPE_ID")
    owner_id = as_int(arg(params, "OWNER_ID"), "OWNER_ID")
    store = {2: ctx.portal.deals, 31: ctx.portal.invoices, 4: ctx.portal.companies}.get(owner_type)
    if store is None or owner_id not in store:
        raise RestError("ERROR_NOT_FOUND", "Owner not found", 400)
    ctx.portal.trigger_executions.append({"code": code, "owner_type_id": owner_type, "owner_id": owner_id,
                                          "client_id": ctx.client_id, "at": iso(ctx.now)})
    return True
