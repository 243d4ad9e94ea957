"""The lookups the web layer needs to check a request: is this payment (or invoice) the portal's, who owns a
tab's invoices, was a payment offered to a tab; and the one count the admin page's load bar shows."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from b24app.storage.models import Allocation, Decision, Invoice, Operation
from .review import candidate_ids


def operation_of(s: Session, portal_id: int, op_pk: int) -> Operation | None:
    """The portal's payment `op_pk`; None when there is none or it is another portal's."""
    op = s.get(Operation, op_pk)
    return op if op is not None and op.portal_id == portal_id else None


def invoice_of(s: Session, portal_id: int, b24_id: int) -> Invoice | None:
    """The portal's cached invoice with this Bitrix24 id."""
    return s.scalar(select(Invoice).where(Invoice.portal_id == portal_id, Invoice.b24_id == b24_id))


def _tab_invoices(portal_id: int, kind: str, entity_id: int):
    q = select(Invoice.b24_id).where(Invoice.portal_id == portal_id)
    return q.where(Invoice.deal_id == entity_id) if kind == "deal" else q.where(Invoice.b24_id == entity_id)


def tab_owners(s: Session, portal_id: int, kind: str, entity_id: int) -> set[int | None]:
    """The responsibles of a deal tab's invoices (or of the invoice tab's one invoice)."""
    q = select(Invoice.assigned_by_id).where(Invoice.portal_id == portal_id)
    q = q.where(Invoice.deal_id == entity_id) if kind == "deal" else q.where(Invoice.b24_id == entity_id)
    return set(s.scalars(q))


def offered_here(s: Session, portal_id: int, op_pk: int, kind: str, entity_id: int) -> bool:
    """Whether the payment's current decision named one of this tab's invoices as a candidate."""
    decision = s.scalar(select(Decision).where(Decision.portal_id == portal_id, Decision.operation_pk == op_pk,
                                               Decision.superseded_at.is_(None)))
    if decision is None:
        return False
    mine = set(s.scalars(_tab_invoices(portal_id, kind, entity_id)))
    return bool(mine & set(candidate_ids(decision.candidates)))


def allocated_invoices(s: Session, portal_id: int, op_pk: int) -> list[Invoice]:
    """Every invoice the payment is currently applied to (in any tab)."""
    return list(s.scalars(select(Invoice).where(
        Invoice.portal_id == portal_id, Invoice.b24_id.in_(select(Allocation.invoice_b24_id).where(
            Allocation.operation_pk == op_pk, Allocation.portal_id == portal_id,
            Allocation.revoked_at.is_(None))))))


def loaded_since(s: Session, portal_id: int, since: datetime) -> int:
    """How many operations the app stored for the first time since `since`."""
    return s.scalar(select(func.count()).select_from(Operation).where(
        Operation.portal_id == portal_id, Operation.first_seen_at >= since)) or 0
