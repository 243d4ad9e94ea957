"""What the app asks Bitrix24 to do, as the pipeline hands it to the outbox: one kind, one payload type per kind.

`reconcile`, `credit`, `paidfield` and `notices` build these; `outbox` stores `kind` and `to_payload()` in
`outbox_items.kind`/`payload` and plans its Bitrix24 commands from `effect_of(item)`. The stored strings and
JSON are the ones written before these types existed (same keys, same order, optional keys left out the same
way), so old rows load unchanged and no migration was needed. Pure: imports nothing of ours but the CRM ids.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar

from b24app.adapters.bitrix.crm import EntityType


class EffectKind(StrEnum):
    """outbox_items.kind. The properties replace the outbox's former kind lists."""

    INVOICE_PAID = "invoice_paid"        # move the smart invoice to its funnel's success stage
    INVOICE_PARTIAL = "invoice_partial"  # move an underpaid one to the admin's "partly paid" stage (#15)
    INVOICE_REOPEN = "invoice_reopen"    # undo: back to where it was, if nobody moved it since
    DEAL_STAGE = "deal_stage"            # move the deal to the chosen (or success) stage of its pipeline
    DEAL_REOPEN = "deal_reopen"          # undo of a deal move
    DEAL_PAID_SUM = "deal_paid_sum"      # set the deal's «Оплачено» money field (b24app/pipeline/paidfield.py, #15)
    TIMELINE = "timeline"                # a comment on the deal's timeline
    NOTIFY = "notify"                    # a system notification to a user
    TASK = "task"                        # a task for the manager
    TRIGGER = "trigger"                  # the app's automation trigger on the deal
    PAYMENT_RECORD = "payment_record"    # a paid payment record of one applied amount on the deal (#15)
    PAYMENT_RECORD_UNDO = "payment_record_undo"  # undo: unpay and delete the app's record

    @property
    def reads_invoice(self) -> bool:
        """Reads the smart invoice (and its funnel's stage list) and moves its stage."""
        return self in (EffectKind.INVOICE_PAID, EffectKind.INVOICE_PARTIAL, EffectKind.INVOICE_REOPEN)

    @property
    def moves_deal(self) -> bool:
        """crm.deal.update of STAGE_ID only: the outbox reads the deal right after and recognises the echo."""
        return self in (EffectKind.DEAL_STAGE, EffectKind.DEAL_REOPEN)

    @property
    def reads_deal(self) -> bool:
        """Reads the deal first and decides on what it shows."""
        return self.moves_deal or self in (EffectKind.DEAL_PAID_SUM, EffectKind.PAYMENT_RECORD)

    @property
    def records_payment(self) -> bool:
        """crm.item.payment.* / sale.payment.*: several commands in one batch (b24app/pipeline/paymentrecords.py),
        skipped where the portal did not grant scope `sale` or the installer is no administrator."""
        return self in (EffectKind.PAYMENT_RECORD, EffectKind.PAYMENT_RECORD_UNDO)

    @property
    def money_first(self) -> bool:
        """Sent before chat, comments and triggers: invoice and deal stages are the money state people see.
        Payment records come right after them (outbox._claim): 3 commands each, they would push a statement's
        stage moves into later batches."""
        return self.reads_invoice or self.moves_deal

    @property
    def moves_money_state(self) -> bool:
        """What undo takes back once it is known to have happened: a stage move (its from_stage is recorded) or a
        payment record (its id is recorded); undo waits while one is on its way."""
        return self in (EffectKind.INVOICE_PAID, EffectKind.INVOICE_PARTIAL, EffectKind.DEAL_STAGE,
                        EffectKind.PAYMENT_RECORD)

    @property
    def irreversible(self) -> bool:
        """Sent is sent: a later decision cannot take it back in Bitrix24."""
        return self in (EffectKind.NOTIFY, EffectKind.TIMELINE, EffectKind.TASK, EffectKind.TRIGGER)


@dataclass(frozen=True)
class Effect:
    """Base of the payload types; `kind` names the subclass. The stored JSON holds the fields in `_keys` order
    (the declaration order unless a class says otherwise), leaving out those of `_omit_none` while None."""

    kind: ClassVar[EffectKind]
    _keys: ClassVar[tuple[str, ...]] = ()
    _omit_none: ClassVar[tuple[str, ...]] = ()

    def to_payload(self) -> dict:
        keys = self._keys or tuple(f.name for f in fields(self))
        return {k: getattr(self, k) for k in keys if not (k in self._omit_none and getattr(self, k) is None)}

    @classmethod
    def from_payload(cls, p: dict) -> "Effect":
        """A stored payload: required keys must be there, optional ones take their default; others are ignored."""
        values = {}
        for f in fields(cls):
            if f.name in p:
                values[f.name] = p[f.name]
            elif f.default is MISSING and f.default_factory is MISSING:
                raise KeyError(f"{cls.kind} payload without {f.name!r}")
        return cls(**values)


@dataclass(frozen=True)
class InvoicePaid(Effect):
    kind: ClassVar[EffectKind] = EffectKind.INVOICE_PAID
    invoice_id: int


@dataclass(frozen=True)
class InvoicePartial(Effect):
    kind: ClassVar[EffectKind] = EffectKind.INVOICE_PARTIAL
    invoice_id: int
    stages: dict[str, str] = field(default_factory=dict)  # funnel (category id as text) -> its partly-paid stage


@dataclass(frozen=True)
class InvoiceReopen(Effect):
    kind: ClassVar[EffectKind] = EffectKind.INVOICE_REOPEN
    invoice_id: int
    paid_stage: str   # where the app moved it: only an invoice still there is moved back
    to_stage: str     # where it was before


@dataclass(frozen=True)
class DealStage(Effect):
    kind: ClassVar[EffectKind] = EffectKind.DEAL_STAGE
    _omit_none: ClassVar[tuple[str, ...]] = ("default",)
    deal_id: int
    stages: dict[str, str | None] = field(default_factory=dict)  # pipeline id (text) -> target stage
    default: str | None = None  # "success": a pipeline without a target goes to its success stage


@dataclass(frozen=True)
class DealReopen(Effect):
    kind: ClassVar[EffectKind] = EffectKind.DEAL_REOPEN
    deal_id: int
    moved_stage: str  # where the app moved it: only a deal still there is moved back
    to_stage: str


@dataclass(frozen=True)
class DealPaidSum(Effect):
    kind: ClassVar[EffectKind] = EffectKind.DEAL_PAID_SUM
    _omit_none: ClassVar[tuple[str, ...]] = ("value",)
    deal_id: int
    field: str                 # the deal's money field (UF_CRM_…)
    value: str | None = None   # "1500.00|RUB": filled by the outbox when it sends, from the records as they are then


@dataclass(frozen=True)
class Timeline(Effect):
    kind: ClassVar[EffectKind] = EffectKind.TIMELINE
    _keys: ClassVar[tuple[str, ...]] = ("deal_id", "lang", "comment")
    _omit_none: ClassVar[tuple[str, ...]] = ("lang",)
    deal_id: int
    comment: str
    lang: str | None = None  # of the reference appended to the comment (ru when not given)


@dataclass(frozen=True)
class Notify(Effect):
    kind: ClassVar[EffectKind] = EffectKind.NOTIFY
    user_id: int
    message: str


@dataclass(frozen=True)
class Task(Effect):
    kind: ClassVar[EffectKind] = EffectKind.TASK
    responsible_id: int
    title: str
    description: str = ""
    deal_id: int | None = None  # written even when None (as before)


@dataclass(frozen=True)
class Trigger(Effect):
    kind: ClassVar[EffectKind] = EffectKind.TRIGGER
    _keys: ClassVar[tuple[str, ...]] = ("code", "owner_type_id", "owner_id")
    code: str
    owner_id: int
    owner_type_id: int = EntityType.DEAL


@dataclass(frozen=True)
class PaymentRecord(Effect):
    """One applied amount as a paid payment record on the deal. `marker` (paymentrecords.marker of the item's
    key) is the record's xmlId, what the re-check after a crash finds it by; `ref` names what applied the
    amount (`op12:d3:inv7`, `credit5:inv7`) and `invoice_id` the invoice it went to."""

    kind: ClassVar[EffectKind] = EffectKind.PAYMENT_RECORD
    _omit_none: ClassVar[tuple[str, ...]] = ("comment",)
    deal_id: int
    invoice_id: int
    amount: str      # Decimal as text, "1500.00"
    currency: str
    marker: str
    ref: str
    comment: str | None = None  # the record's comments: which invoice, and what remains due on it


@dataclass(frozen=True)
class PaymentRecordUndo(Effect):
    kind: ClassVar[EffectKind] = EffectKind.PAYMENT_RECORD_UNDO
    deal_id: int
    payment_id: int  # the record crm.item.payment.add returned (kept in the record item's result)
    marker: str


TYPES: dict[EffectKind, type[Effect]] = {t.kind: t for t in (
    InvoicePaid, InvoicePartial, InvoiceReopen, DealStage, DealReopen, DealPaidSum, Timeline, Notify, Task, Trigger,
    PaymentRecord, PaymentRecordUndo)}


class UnknownEffect(ValueError):
    """A stored kind no type reads (a row of a newer or older app): the outbox skips it, saying so."""


def load(kind: str, payload: dict[str, Any]) -> Effect:
    """The effect a stored row holds; UnknownEffect for a kind this app does not know."""
    try:
        known = EffectKind(kind)
    except ValueError as exc:
        raise UnknownEffect(f"unknown kind {kind}") from exc
    return TYPES[known].from_payload(payload or {})


def undo_of(kind: str, payload: dict, result: dict | None
            ) -> InvoiceReopen | DealReopen | PaymentRecordUndo | None:
    """The effect that moves back a stage move the outbox recorded as made (`result` has its from/to stages),
    or unpays and deletes a payment record it made (`result` has its `payment_id`); None for anything else (not
    a stage move, or it moved nothing)."""
    result = result or {}
    if kind == EffectKind.PAYMENT_RECORD:
        if not result.get("payment_id"):
            return None
        return PaymentRecordUndo(int(payload["deal_id"]), int(result["payment_id"]), str(payload["marker"]))
    if kind not in (EffectKind.INVOICE_PAID, EffectKind.INVOICE_PARTIAL, EffectKind.DEAL_STAGE) \
            or not result.get("from_stage"):
        return None
    if kind == EffectKind.DEAL_STAGE:
        return DealReopen(payload["deal_id"], moved_stage=result["to_stage"], to_stage=result["from_stage"])
    return InvoiceReopen(payload["invoice_id"], paid_stage=result["to_stage"], to_stage=result["from_stage"])


def undo_suffix(back: Effect) -> str:
    """The key tail of an undo effect (`undo:d<decision>:<tail>`): one per invoice, deal or record."""
    if isinstance(back, DealReopen):
        return f"deal{back.deal_id}"
    if isinstance(back, PaymentRecordUndo):
        return f"rec{back.payment_id}"
    return f"inv{back.invoice_id}"
