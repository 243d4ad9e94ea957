"""Writing effects into the outbox: inside the caller's transaction (the decision's), once per key.

`outbox.py` sends what is written here; the modules that decide (reconcile, credit, notices, paidfield,
paymentrecords) only enqueue, so none of them imports the sender.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from b24app.storage.models import OutboxItem

from .effects import Effect


def enqueue(s, portal_id: int, key: str, effect: Effect, operation_pk: int | None = None, now=None) -> bool:
    """Add an effect inside the caller's transaction; a second enqueue of the same key is a no-op."""
    if not isinstance(effect, Effect):
        raise TypeError(f"enqueue takes an effect of b24app.pipeline.effects, not {effect!r}")
    if s.scalar(select(OutboxItem.id).where(OutboxItem.portal_id == portal_id, OutboxItem.key == key)):
        return False
    item = OutboxItem(portal_id=portal_id, key=key, kind=effect.kind.value, payload=effect.to_payload(),
                      operation_pk=operation_pk)
    if now is not None:
        item.next_attempt_at = item.created_at = now
    with s.begin_nested():
        s.add(item)
        try:
            s.flush()
        except IntegrityError:
            return False
    return True
