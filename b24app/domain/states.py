"""Where a bank operation stands in reconciliation (`operations.state`). Values are the stored strings.

    pending ──settles──▶ new ──reconcile──▶ matched | overpaid | review | unmatched | ignored
    (an Authorization)   (a settled credit)
    review | unmatched ──a person──▶ matched | overpaid (assigned) | ignored | refund | credit (closed)
    any decided state ──undo──▶ review (or the review state it was closed from)

Debits are stored `ignored` at once: they are never reconciled.
"""
from __future__ import annotations

from enum import StrEnum


class OpState(StrEnum):
    PENDING = "pending"      # an Authorization: money not settled yet, not reconciled
    NEW = "new"              # a settled credit the reconciler has not decided on yet
    MATCHED = "matched"      # pays one or more invoices (paid or underpaid)
    OVERPAID = "overpaid"    # pays them with money left over (kept as the payer's credit, or for review)
    REVIEW = "review"        # several candidates, or a likely double payment: a person decides
    UNMATCHED = "unmatched"  # no invoice found: a person decides
    IGNORED = "ignored"      # a debit, our own transfer, an excluded category, or closed by a person with a reason
    REFUND = "refund"        # closed by a person: to be paid back to the payer
    CREDIT = "credit"        # closed by a person: kept as the credit of the payer's INN

    @property
    def awaits_person(self) -> bool:
        """In the review queue: a person may assign it or close it."""
        return self in REVIEW_STATES


REVIEW_STATES = (OpState.REVIEW, OpState.UNMATCHED)
#: How a person closes a review item that pays no invoice -> the operation's (and decision's) new state.
CLOSE_ACTIONS = {"ignore": OpState.IGNORED, "refund": OpState.REFUND, "credit": OpState.CREDIT}
CLOSED_STATES = tuple(CLOSE_ACTIONS.values())
