"""Errors raised by the pure domain, all under one root so callers can catch the boundary."""
from __future__ import annotations


class DomainError(Exception):
    """Root of every error the matching domain raises."""


class MoneyError(DomainError, ValueError):
    """An amount or currency that cannot be represented exactly."""


class InvalidInvoiceError(DomainError, ValueError):
    """An open invoice with impossible values (negative amount, naive datetime, ...)."""


class InvalidPaymentError(DomainError, ValueError):
    """An incoming payment with impossible values (amount not positive, ...)."""


class DuplicateInvoiceError(DomainError, ValueError):
    """The same invoice id given twice when building an index."""
