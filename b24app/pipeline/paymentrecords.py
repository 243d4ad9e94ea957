"""Payment records on the deal (issue #15): the batch commands that leave one paid record per applied amount,
undo it, and find it again after a crash. Pure: builds commands and reads answers; the outbox sends them.

Docs (bitrix-tools/b24-rest-docs@2ba82021):
- `crm.item.payment.add {entityTypeId: 2, entityId}` → the new record's id; its sum is not a parameter
  (api-reference/crm/universal/payment/crm-item-payment-add.md) and `crm.item.payment.update` changes only
  `paid` and `paySystemId` (crm-item-payment-update.md). The sum and our marker are set with
  `sale.payment.update {id, fields: {sum, xmlId}}` (api-reference/sale/payment/sale-payment-update.md: scope
  `sale`, administrators; `xmlId` is the payment's "Внешний идентификатор"). The currency is not among its
  fields: a record has the deal's currency, so `commands_for` refuses another one.
- `crm.item.payment.pay` / `unpay` / `delete {id}` (crm-item-payment-pay.md, -unpay.md, -delete.md).
- A batch command refers to an earlier one's result as `$result[name][field]` (settings/how-to-call-rest-api/
  batch.md), so add + sum + pay go in one batch, beside the other effects of the payment: one HTTP request.
  Pay refers to the id in sale.payment.update's answer: when the sum failed, pay fails too. What a portal puts
  in place of a reference to a failed command is not documented (the sandbox leaves the text, which is no id;
  an empty value would be refused as a missing id): either way no record of sum 0 is paid.
- The re-check: `crm.item.payment.list` of the deal (its answer has no xmlId: crm-item-payment-get.md, the
  simple shape) and `sale.payment.list` filtered by our xmlId (sale-payment-list.md; its rows carry xmlId), one
  batch. A record is ours when both name it and its xmlId is exactly our marker (the filter is not trusted).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

DEAL = 2
MARKER_PREFIX = "b24app:"
_MARKER = re.compile(r"[A-Za-z0-9:_.\-]{1,100}")  # the xmlId's length limit is not documented: stay short
_CURRENCY = re.compile(r"[A-Z]{3}")

Commands = dict[str, tuple[str, dict]]


class PaymentRecordError(ValueError):
    """A payment record cannot be built from these values (bad amount, currency or marker)."""


@dataclass(frozen=True)
class Record:
    """One payment record as `crm.item.payment.list` shows it."""

    id: int
    account_number: str
    paid: bool
    sum: Decimal
    currency: str


def marker(key: str) -> str:
    """Our external id for the record of one applied amount, from its outbox key: the same tag the outbox
    gives its other effects (outbox.tag_for), short whatever the key."""
    if not str(key):
        raise PaymentRecordError("marker of an empty key")
    return MARKER_PREFIX + hashlib.sha256(str(key).encode()).hexdigest()[:24]


def _amount(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise PaymentRecordError(f"amount {value!r} is not a number") from None
    if not amount.is_finite() or amount <= 0:
        raise PaymentRecordError(f"amount {value!r} must be positive")
    return amount.quantize(Decimal("0.01"))


def commands_for(name: str, deal_id: int, amount: Any, currency: str, mark: str, *,
                 deal_currency: str | None = None, comment: str | None = None) -> Commands:
    """add + set sum and marker + pay, for one batch: `{name}_add`, `{name}_sum`, `{name}_pay` (in this order:
    the sum is set before the record is paid). `deal_currency`, when known, must be `currency`: the record
    takes the deal's currency and no method changes it."""
    amount = _amount(amount)
    currency = str(currency or "").upper()
    if not _CURRENCY.fullmatch(currency):
        raise PaymentRecordError(f"currency {currency!r} is not a three-letter code")
    if deal_currency is not None and deal_currency.upper() != currency:
        raise PaymentRecordError(f"the deal is in {deal_currency}, the payment in {currency}")
    if not _MARKER.fullmatch(mark or "") or not mark.startswith(MARKER_PREFIX):
        raise PaymentRecordError(f"marker {mark!r} is not ours")
    if int(deal_id) <= 0:
        raise PaymentRecordError(f"deal id {deal_id!r}")
    fields: dict[str, Any] = {"sum": amount, "xmlId": mark}
    if comment:
        fields["comments"] = str(comment)[:500]  # sale_order_payment's COMMENTS (sale/payment/sale-payment-update.md)
    return {
        f"{name}_add": ("crm.item.payment.add", {"entityTypeId": DEAL, "entityId": int(deal_id)}),
        f"{name}_sum": ("sale.payment.update", {"id": f"$result[{name}_add]", "fields": fields}),
        # the id as sale.payment.update answered it: when setting the sum failed, the reference stays unresolved
        # and pay fails too, so a record of sum 0 is never marked paid (batch runs on after an error, halt=0)
        f"{name}_pay": ("crm.item.payment.pay", {"id": f"$result[{name}_sum][payment][id]"}),
    }


@dataclass(frozen=True)
class Outcome:
    """What one record's commands left: its id (None when not even added), whether it is complete (sum,
    marker, paid), and the commands that remove a half-made record (it carries no marker to be found by)."""

    payment_id: int | None
    complete: bool
    cleanup: Commands


def outcome(name: str, results: dict[str, Any], errors: dict[str, Any]) -> Outcome:
    """Read the batch answer of `commands_for(name, ...)`."""
    try:
        payment_id = int(results[f"{name}_add"]) if f"{name}_add" not in errors else None
    except (KeyError, TypeError, ValueError):
        payment_id = None
    if payment_id is None:
        return Outcome(None, False, {})
    if f"{name}_sum" in errors or f"{name}_pay" in errors or results.get(f"{name}_pay") is not True:
        return Outcome(payment_id, False, undo_commands(f"{name}_cleanup", payment_id))
    return Outcome(payment_id, True, {})


def repair_commands(name: str, record: Record, amount: Any) -> Commands:
    """For a record the re-check found: what is still missing (its sum, its paid state); {} when none."""
    amount = _amount(amount)
    out: Commands = {}
    if record.sum != amount:
        out[f"{name}_sum"] = ("sale.payment.update", {"id": record.id, "fields": {"sum": amount}})
    if not record.paid:
        out[f"{name}_pay"] = ("crm.item.payment.pay", {"id": record.id})
    return out


def undo_commands(name: str, payment_id: int, *, delete: bool = True) -> Commands:
    """Unpay, then (by default) remove the record: `{name}_unpay`, `{name}_delete`."""
    out: Commands = {f"{name}_unpay": ("crm.item.payment.unpay", {"id": int(payment_id)})}
    if delete:
        out[f"{name}_delete"] = ("crm.item.payment.delete", {"id": int(payment_id)})
    return out


def recheck_commands(name: str, deal_id: int, mark: str) -> Commands:
    """The re-check after a crash: the deal's records and the portal's records carrying our marker."""
    return {
        f"{name}_deal": ("crm.item.payment.list", {"entityTypeId": DEAL, "entityId": int(deal_id)}),
        f"{name}_mark": ("sale.payment.list", {"select": ["id", "xmlId", "sum", "paid", "currency"],
                                               "filter": {"=xmlId": mark}}),
    }


def records(rows: Any) -> list[Record]:
    """`crm.item.payment.list`'s result as records (rows that do not parse are skipped)."""
    out = []
    for row in rows if isinstance(rows, list) else []:
        try:
            out.append(Record(int(row["id"]), str(row.get("accountNumber") or ""), row.get("paid") == "Y",
                              Decimal(str(row.get("sum") if row.get("sum") is not None else 0)),
                              str(row.get("currency") or "")))
        except (KeyError, TypeError, ValueError, InvalidOperation):
            continue
    return out


def find_ours(deal_rows: Any, marked: Any, mark: str) -> list[Record]:
    """Our records on the deal: in `crm.item.payment.list` of the deal (`deal_rows`) and, in `sale.payment.list`
    (`marked`: its result, `{"payments": [...]}`), with xmlId exactly `mark`. Oldest first; more than one
    means a duplicate the caller removes."""
    payments = marked.get("payments") if isinstance(marked, dict) else marked
    ours = {int(p["id"]) for p in _rows(payments) if p.get("xmlId") == mark and str(p.get("id", "")).isdigit()}
    return sorted((r for r in records(deal_rows) if r.id in ours), key=lambda r: r.id)


def _rows(value: Any) -> Iterable[dict]:
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def enqueue_record(s, portal_id: int, rules, deal_id: int | None, invoice_id: int, amount: Any, currency: str,
                   key: str, op_pk: int | None, now, *, comment: str | None = None) -> None:
    """After an amount went onto one of the deal's invoices (a payment, a top-up, the client's credit): its paid
    record, one per applied amount (outbox key `<key>:record`, whose tag is the record's marker)."""
    amount = Decimal(str(amount))
    if not (getattr(rules, "payment_records", False) and deal_id and amount > 0):
        return
    from .effects import PaymentRecord
    from .queue import enqueue

    record_key = f"{key}:record"
    effect = PaymentRecord(int(deal_id), int(invoice_id), str(amount.quantize(Decimal("0.01"))),
                           str(currency).upper(), marker(record_key), key, comment or None)
    enqueue(s, portal_id, record_key, effect, op_pk, now=now)
