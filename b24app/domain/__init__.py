"""Pure matching domain: purpose parsing, invoice-number keys, money, matching and explanations.

Imports nothing outside the Python standard library (and no other package of ours): the rest of the app
imports the domain, never the reverse.
"""
from __future__ import annotations

from .errors import (
    CurrencyMismatchError,
    DomainError,
    DuplicateInvoiceError,
    InvalidInvoiceError,
    InvalidPaymentError,
    MoneyError,
    UnknownCurrencyError,
)
from .explain import explain
from .formatting import format_money
from .matching import (
    Allocation,
    Confidence,
    IncomingPayment,
    InvoiceIndex,
    MatchDecision,
    OpenInvoice,
    Outcome,
    Reason,
    match_payment,
    naive_match,
)
from .money import Money, currency_from_numeric, parse_amount
from .numbers import normalize_invoice_number, number_tail_key
from .purposes import extract_invoice_numbers

__all__ = [
    "Allocation", "Confidence", "CurrencyMismatchError", "DomainError", "DuplicateInvoiceError",
    "IncomingPayment", "InvalidInvoiceError", "InvalidPaymentError", "InvoiceIndex", "MatchDecision",
    "Money", "MoneyError", "OpenInvoice", "Outcome", "Reason", "UnknownCurrencyError",
    "currency_from_numeric", "explain", "extract_invoice_numbers", "format_money", "match_payment",
    "naive_match", "normalize_invoice_number", "number_tail_key", "parse_amount",
]
