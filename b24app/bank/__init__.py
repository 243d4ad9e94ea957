"""The app's bank client code: T-Bank's T-ID OAuth and Business API, Tochka's API, operation parsing and 1C
statement files (stateless; storage lives elsewhere).

Imports only itself, the standard library and httpx, authlib, cryptography: nothing of the app's storage, web
or pipeline.
"""
from __future__ import annotations

from .api import BankAccount, BankAPI
from .errors import (
    BankAPIError, BankError, BankServerError, BankUnavailable, Forbidden, InvalidClient, InvalidData, InvalidGrant,
    MalformedOperation, RateLimited, TIDError, Unauthorized,
)
from .operations import BankOperation, parse_operation
from .tid import Introspection, TIDClient, TokenSet, company_scope, new_code_verifier

__all__ = [
    "BankAccount", "BankAPI", "BankAPIError", "BankError", "BankOperation", "BankServerError", "BankUnavailable",
    "Forbidden", "Introspection", "InvalidClient", "InvalidData", "InvalidGrant", "MalformedOperation",
    "RateLimited", "TIDClient", "TIDError", "TokenSet", "Unauthorized", "company_scope", "new_code_verifier",
    "parse_operation",
]
