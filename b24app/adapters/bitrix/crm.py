"""Bitrix24 CRM entity type ids and the commands the outbox and the tab both send (pure: no I/O).

A command is `(method, params)`, the shape `BitrixClient.batch` takes. Entity type ids: deal 2, smart invoice 31
(api-reference/crm/data-types.md#object_type); smart invoices are read and moved through the universal
crm.item.* methods (crm/universal/crm-item-get.md, crm-item-list.md, crm-item-update.md), deals through
crm.deal.* (crm/deals/crm-deal-update.md, crm-deal-list.md); stage lists through crm.status.list
(crm/status/crm-status-list.md: ENTITY_ID SMART_INVOICE_STAGE_<category>, DEAL_STAGE / DEAL_STAGE_<category>).
"""
from __future__ import annotations

from enum import IntEnum

Command = tuple[str, dict]


class EntityType(IntEnum):
    """entityTypeId / OWNER_TYPE_ID of the CRM objects the app touches (an int to Bitrix24 and in JSON)."""

    DEAL = 2
    INVOICE = 31  # the smart invoice (not the old crm.invoice, entity type 5)


INVOICE_TYPE = EntityType.INVOICE
DEAL_TYPE = EntityType.DEAL


def invoice_get(invoice_id) -> Command:
    return "crm.item.get", {"entityTypeId": EntityType.INVOICE, "id": invoice_id}


def invoice_list(filter_: dict, select: list[str], order: dict | None = None) -> Command:
    params = {"entityTypeId": EntityType.INVOICE, "filter": filter_, "select": select}
    if order is not None:
        params["order"] = order
    return "crm.item.list", params


def invoice_move(invoice_id, stage: str) -> Command:
    """Move a smart invoice to a stage (crm.item.update of stageId only)."""
    return "crm.item.update", {"entityTypeId": EntityType.INVOICE, "id": invoice_id, "fields": {"stageId": stage}}


def invoice_stages(category) -> Command:
    """The stage list of one smart-invoice funnel (category)."""
    return "crm.status.list", {"filter": {"ENTITY_ID": f"SMART_INVOICE_STAGE_{category}"}}


def deal_stages(category: str) -> Command:
    """The stage list of one deal pipeline: DEAL_STAGE for the general one (0), DEAL_STAGE_<id> for the others."""
    entity = "DEAL_STAGE" if str(category) == "0" else f"DEAL_STAGE_{category}"
    return "crm.status.list", {"filter": {"ENTITY_ID": entity}, "order": {"SORT": "ASC"}}


def deal_list(ids: list[int], select: list[str]) -> Command:
    """Up to 50 deals by id in one command (crm-deal-list.md: `@ID` takes an array)."""
    return "crm.deal.list", {"filter": {"@ID": ids}, "select": select}


def deal_update(deal_id, fields: dict) -> Command:
    return "crm.deal.update", {"id": deal_id, "fields": fields}


def deal_move(deal_id, stage: str) -> Command:
    """Move a deal to a stage (crm.deal.update of STAGE_ID only: the outbox recognises its echo)."""
    return deal_update(deal_id, {"STAGE_ID": stage})


def trigger(code: str, owner_id, owner_type: int = EntityType.DEAL) -> Command:
    """Fire an app automation trigger on a CRM object (crm/automation/triggers/crm-automation-trigger-execute.md)."""
    return "crm.automation.trigger.execute", {"CODE": code, "OWNER_TYPE_ID": owner_type, "OWNER_ID": owner_id}
