"""Pure matching domain: purpose parsing, invoice-number keys, money, matching and explanations.

Imports nothing outside the Python standard library (and no other package of ours): the rest of the app
imports the domain, never the reverse.
"""
from __future__ import annotations

from .errors import (
    DomainError,
    DuplicateInvoiceError,
    InvalidInvoiceError,
    InvalidPaymentError,
    MoneyError,
)
from .explain import explain
from .formatting import format_money
from .matching import (
    Share,
    Confidence,
    IncomingPayment,
    InvoiceIndex,
    MatchDecision,
    OpenInvoice,
    Outcome,
    Reason,
    match_payment,
    naive_match,
    settle,
)
from .money import CURRENCIES, currency_alpha, parse_amount, parse_search_amount
from .numbers import normalize_invoice_number, number_tail_key
from .purposes import extract_invoice_numbers

__all__ = [
    "Share", "CURRENCIES", "Confidence", "DomainError", "DuplicateInvoiceError",
    "IncomingPayment", "InvalidInvoiceError", "InvalidPaymentError", "InvoiceIndex", "MatchDecision",
    "MoneyError", "OpenInvoice", "Outcome", "Reason",
    "currency_alpha", "explain", "extract_invoice_numbers", "format_money", "match_payment",
    "naive_match", "normalize_invoice_number", "number_tail_key", "parse_amount", "parse_search_amount",
    "settle",
]
