"""The deal's «Оплачено» money field (issue #15): kept equal to the money the app put on the deal's invoices.

Created only when the admin asks (`crm.deal.userfield.add`, type money, CRM administrators). The outbox kind
`deal_paid_sum` sets it; its value is computed from our records when the item is sent, so a retry never writes an
older total, and the plan reads the deal first and sends nothing when the field already shows it (exactly once by
construction: the value is absolute, and the field itself is the marker a re-check after a crash finds).
Format `1700.00|RUB`: a wrong format is accepted by Bitrix24 and leaves the field empty
(tutorials/crm/how-to-edit-crm-objects/how-to-set-paid-sum-to-deal.md), so it is built here and read back in tests.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from sqlalchemy import func, select

from b24app.storage.models import Allocation, Credit, Invoice

FIELD_CODE = "B24APP_PAID"             # Bitrix24 stores it as UF_CRM_B24APP_PAID
FIELD_NAME = "UF_CRM_" + FIELD_CODE
LABELS = {"ru": "Оплачено", "en": "Paid"}


def create_field(ctx, member_id: str) -> str:
    """Add the money field to deals; returns its name. BitrixError propagates (e.g. not a CRM administrator)."""
    ctx.bitrix(member_id).call("crm.deal.userfield.add", {"fields": {
        "FIELD_NAME": FIELD_CODE, "USER_TYPE_ID": "money", "MULTIPLE": "N", "LABEL": LABELS["ru"],
        "EDIT_FORM_LABEL": LABELS, "LIST_COLUMN_LABEL": LABELS}})
    return FIELD_NAME


def money_value(total: Decimal, currency: str) -> str:
    return f"{Decimal(total).quantize(Decimal('0.01'))}|{currency.upper()}"


def same_money(shown, value: str) -> bool:
    """The field shows this amount and currency (Bitrix24 drops trailing zeros: 1700.00|RUB reads 1700|RUB)."""
    try:
        a, ca = str(shown or "").split("|")
        b, cb = value.split("|")
        return ca == cb and Decimal(a) == Decimal(b)
    except (ValueError, InvalidOperation):
        return False


def deal_paid_value(s, portal_id: int, deal_id: int) -> str:
    """What the app has put on the deal's invoices (payments and the client's credit), in their currency."""
    invoices = list(s.execute(select(Invoice.b24_id, Invoice.currency).where(
        Invoice.portal_id == portal_id, Invoice.deal_id == deal_id)))
    ids = [i for i, _ in invoices] or [-1]
    currency = invoices[0][1] if invoices else "RUB"
    paid = s.scalar(select(func.coalesce(func.sum(Allocation.amount), 0)).where(
        Allocation.portal_id == portal_id, Allocation.revoked_at.is_(None), Allocation.invoice_b24_id.in_(ids)))
    credit = s.scalar(select(func.coalesce(func.sum(-Credit.amount), 0)).where(
        Credit.portal_id == portal_id, Credit.kind == "applied", Credit.revoked_at.is_(None),
        Credit.invoice_b24_id.in_(ids)))
    # An overpaid allocation's amount includes its surplus; what was kept of it as the payer's credit is not money
    # on this deal (it counts where the credit is applied). Surplus rows name their invoice in their reason.
    decisions = select(Allocation.decision_id).where(
        Allocation.portal_id == portal_id, Allocation.revoked_at.is_(None), Allocation.invoice_b24_id.in_(ids))
    kept = sum((Decimal(c.amount) for c in s.scalars(select(Credit).where(
        Credit.portal_id == portal_id, Credit.kind == "surplus", Credit.revoked_at.is_(None),
        Credit.decision_id.in_(decisions))) if _surplus_invoice(c) in ids), Decimal("0"))
    return money_value(Decimal(paid or 0) + Decimal(credit or 0) - kept, currency)


def _surplus_invoice(row) -> int | None:
    for reason in row.reasons or ():
        invoice_id = (reason.get("params") or {}).get("invoice_id") if isinstance(reason, dict) else None
        if invoice_id is not None:
            return int(invoice_id)
    return None


def enqueue_sum(s, portal_id: int, rules, deal_id: int | None, key: str, op_pk: int | None, now) -> None:
    """After money moved on one of the deal's invoices: bring the field up to date (when the admin created it)."""
    if rules.deal_paid_field and deal_id:
        from .effects import DealPaidSum
        from .queue import enqueue

        enqueue(s, portal_id, f"{key}:paid_sum", DealPaidSum(deal_id, rules.deal_paid_field), op_pk, now=now)
