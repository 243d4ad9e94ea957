"""Pages a person sees in the Bitrix24 sandbox: deal and invoice cards with app tabs, the app page,
and the BX24 JS shim; apps open in an iframe through an auto-submitted POST form, as on Bitrix24."""
from __future__ import annotations

import html

from decimal import Decimal
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request

from .crm import invoice_stages, stage_name, stage_semantics
from .install import ensure_installation, frame_fields
from .state import Portal, SandboxState

STATIC_DIR = Path(__file__).with_name("static")


def _amount(value: Any) -> str:
    number = Decimal(str(value or 0)).quantize(Decimal("0.01"))
    whole, _, frac = format(number, "f").partition(".")
    groups = []
    while whole:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    return "\u00a0".join(groups or ["0"]) + "," + frac


def _frame(state: SandboxState, portal: Portal, host: str, client_id: str, handler: str, user_id: int,
           placement: str, options: dict[str, Any], lang: str, title: str, index: int,
           install: bool = False) -> dict[str, Any]:
    query, form = frame_fields(state, portal, host, client_id, user_id, placement, options, lang)
    sep = "&" if "?" in handler else "?"
    action = handler + sep + "&".join(f"{k}={v}" for k, v in query.items())
    user = portal.users[user_id]
    init = {"DOMAIN": query["DOMAIN"], "PROTOCOL": 0, "LANG": lang, "APP_SID": query["APP_SID"],
            "AUTH_ID": form["AUTH_ID"], "AUTH_EXPIRES": state.access_ttl, "REFRESH_ID": form["REFRESH_ID"],
            "MEMBER_ID": portal.member_id, "IS_ADMIN": user.admin, "INSTALL": install, "FIRST_RUN": install,
            "PLACEMENT": placement, "PLACEMENT_OPTIONS": options, "USER_ID": user_id, "CLIENT_ID": client_id}
    return {"index": index, "title": title or client_id, "action": action, "fields": form, "init": init,
            "client_id": client_id}


def _visible(portal: Portal, client_id: str, user_id: int) -> bool:
    inst = portal.installations.get(client_id)
    if inst is None:
        return False
    return inst.installed or portal.users[user_id].admin


def _page_user(portal: Portal) -> int:
    try:
        user_id = int(request.args.get("user", 1))
    except ValueError:
        user_id = 1
    return user_id if user_id in portal.users else 1


def register_pages(app: Flask, state: SandboxState) -> None:
    @app.route("/api/v1/")
    def bx24_js() -> Response:
        body = (STATIC_DIR / "bx24.js").read_text(encoding="utf-8")
        response = Response(body, mimetype="application/javascript")
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    @app.route("/")
    def sandbox_index() -> str:
        with state.lock:
            portals = list(state.portals.values())
            return render_template("portal_index.html", portals=portals, portal=None, apps=list(state.apps.values()))

    @app.route("/p/<code>/")
    def portal_home(code: str) -> str:
        portal: Portal = g.portal
        user_id = _page_user(portal)
        with state.lock:
            deals = [{"id": d["ID"], "title": d.get("TITLE"), "stage": stage_name(d["STAGE_ID"]),
                      "amount": _amount(d.get("OPPORTUNITY")), "currency": d.get("CURRENCY_ID")}
                     for d in portal.deals.values()]
            invoices = [{"id": i["id"], "number": i.get("accountNumber"), "title": i.get("title"),
                         "stage": stage_name(i["stageId"], portal), "amount": _amount(i.get("opportunity"))}
                        for i in portal.invoices.values()]
            apps = [{"client_id": a.client_id, "installed": bool(portal.installations.get(a.client_id)
                                                                  and portal.installations[a.client_id].installed)}
                    for a in state.apps.values()]
        return render_template("portal_index.html", portal=portal, portals=None, deals=deals,
                               invoices=invoices, apps=apps, user=portal.users[user_id], user_id=user_id)

    def entity_page(kind: str, entity_id: int) -> Any:
        portal: Portal = g.portal
        user_id = _page_user(portal)
        lang = request.args.get("lang", portal.lang)
        host = request.host
        with state.lock:
            if kind == "deal":
                record = portal.deals.get(entity_id)
                placement_code = "CRM_DEAL_DETAIL_TAB"
            else:
                record = portal.invoices.get(entity_id)
                placement_code = "CRM_SMART_INVOICE_DETAIL_TAB"
            if record is None:
                return Response("Элемент не найден", status=404, mimetype="text/plain")
            if kind == "deal":
                responsible = portal.users.get(int(record.get("ASSIGNED_BY_ID") or 0))
                company = portal.companies.get(int(record.get("COMPANY_ID") or 0))
                card = {"title": record.get("TITLE") or f"Сделка #{entity_id}", "kind": "Сделка",
                        "stage": stage_name(record["STAGE_ID"]), "stage_id": record["STAGE_ID"],
                        "sem": stage_semantics(record["STAGE_ID"]),
                        "amount": _amount(record.get("OPPORTUNITY")), "currency": record.get("CURRENCY_ID"),
                        "responsible": responsible.full_name if responsible else "—",
                        "company": company.get("TITLE") if company else "—"}
                related = [{"id": i["id"], "number": i.get("accountNumber"), "title": i.get("title"),
                            "amount": _amount(i.get("opportunity")), "currency": i.get("currencyId"),
                            "stage": stage_name(i["stageId"], portal), "stage_id": i["stageId"],
                            "sem": stage_semantics(i["stageId"])}
                           for i in portal.invoices.values() if i.get("parentId2") == entity_id]
                # the deal's money fields and payment records (Bitrix24 shows both on the deal card)
                money_fields = [{"name": name, "value": record.get(name) or ""}
                                for name, uf in portal.deal_userfields.items() if uf["USER_TYPE_ID"] == "money"]
                payments = [{"id": p["id"], "number": p["accountNumber"], "amount": _amount(p["sum"]),
                             "currency": p["currency"], "paid": p["paid"] == "Y", "date_paid": p["datePaid"]}
                            for p in portal.payments.values() if p["entityTypeId"] == 2 and p["entityId"] == entity_id]
            else:
                responsible = portal.users.get(int(record.get("assignedById") or 0))
                company = portal.companies.get(int(record.get("companyId") or 0))
                card = {"title": record.get("title") or f"Счёт #{entity_id}", "kind": "Счёт",
                        "number": record.get("accountNumber"), "stage": stage_name(record["stageId"], portal),
                        "stage_id": record["stageId"], "sem": stage_semantics(record["stageId"], portal),
                        "amount": _amount(record.get("opportunity")),
                        "currency": record.get("currencyId"),
                        "responsible": responsible.full_name if responsible else "—",
                        "company": company.get("TITLE") if company else "—",
                        "deal_id": record.get("parentId2")}
                related = []
                money_fields, payments = [], []
            placements = [p for p in portal.placements
                          if p.placement == placement_code and _visible(portal, p.client_id, user_id)]
        tabs = [_frame(state, portal, host, p.client_id, p.handler, user_id, placement_code,
                       {"ID": str(entity_id)}, lang, p.title, i) for i, p in enumerate(placements)]
        try:
            open_tab = int(request.args["tab"]) if "tab" in request.args else None
        except ValueError:
            open_tab = None
        if open_tab is not None and not 0 <= open_tab < len(tabs):
            open_tab = None
        return render_template("portal_card.html", portal=portal, card=card, related=related, tabs=tabs,
                               open_tab=open_tab, user=portal.users[user_id], user_id=user_id,
                               money_fields=money_fields, payments=payments,
                               entity_kind=kind, entity_id=entity_id, invoice_stages=invoice_stages(portal))

    @app.route("/p/<code>/crm/deal/details/<int:deal_id>/")
    def deal_page(code: str, deal_id: int) -> Any:
        return entity_page("deal", deal_id)

    @app.route("/p/<code>/crm/type/31/details/<int:item_id>/")
    def invoice_page(code: str, item_id: int) -> Any:
        return entity_page("invoice", item_id)

    @app.route("/p/<code>/company/personal/user/<int:user_id>/")
    def user_profile(code: str, user_id: int) -> Any:
        """A user's profile page, as linked from anywhere in the portal (the path Bitrix24 uses)."""
        portal: Portal = g.portal
        user = portal.users.get(user_id)
        if user is None:
            return Response("Пользователь не найден", status=404, mimetype="text/plain")
        return Response(f"<!doctype html><meta charset=utf-8><title>{html.escape(user.full_name)}</title>"
                        f"<h1 id='profile-name'>{html.escape(user.full_name)}</h1>", mimetype="text/html")

    @app.route("/p/<code>/marketplace/app/<client_id>/")
    def app_page(code: str, client_id: str) -> Any:
        portal: Portal = g.portal
        user_id = _page_user(portal)
        lang = request.args.get("lang", portal.lang)
        registered = state.apps.get(client_id)
        if registered is None:
            return Response("Приложение не найдено", status=404, mimetype="text/plain")
        user = portal.users[user_id]
        with state.lock:
            inst = portal.installations.get(client_id)
            installed = bool(inst and inst.installed)
        if not installed and not user.admin:
            return render_template("portal_app.html", portal=portal, tabs=[], open_tab=None, app=registered,
                                   user=user, user_id=user_id, message="Приложение ещё не установлено полностью. "
                                                            "Обратитесь к администратору.")
        if not installed:
            ensure_installation(state, portal, client_id, user_id)
        handler = registered.handler_url if installed else registered.install_url
        tab = _frame(state, portal, request.host, client_id, handler, user_id, "DEFAULT", {}, lang,
                     registered.client_id, 0, install=not installed)
        return render_template("portal_app.html", portal=portal, tabs=[tab], open_tab=0, app=registered,
                               user=user, user_id=user_id, message=None)

    @app.route("/p/<code>/sandbox/frame-auth", methods=["POST"])
    def frame_auth(code: str) -> Response:
        """`BX24.refreshAuth()`: the portal page hands the frame a fresh token pair."""
        portal: Portal = g.portal
        body = request.get_json(force=True) or {}
        client_id = str(body.get("client_id") or "")
        user_id = int(body.get("user_id") or 1)
        if client_id not in portal.installations or user_id not in portal.users:
            return jsonify({"error": "NOT_INSTALLED"}), 404  # type: ignore[return-value]
        access, refresh = state.issue_pair(portal, client_id, user_id)
        return jsonify({"AUTH_ID": access.value, "REFRESH_ID": refresh.value, "AUTH_EXPIRES": state.access_ttl,
                        "access_token": access.value, "refresh_token": refresh.value,
                        "expires_in": state.access_ttl})
