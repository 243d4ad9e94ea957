"""Bank clients: T-Bank (`tbank` Business API, `tid` T-ID OAuth), Tochka (`tochka` Open API), 1C statement files
(`onec`), and the one typed statement line all three produce (`operations.BankOperation`). Stateless.

Imports only itself, the standard library, `b24app.domain`, `b24app.backoff` and httpx, authlib, cryptography:
nothing of the app's storage, web or pipeline.
"""
from __future__ import annotations

from .tbank import AccountInfo, BankAPI
from .errors import (
    BankAPIError, BankError, BankServerError, BankUnavailable, Forbidden, InvalidClient, InvalidData, BankInvalidGrant,
    MalformedOperation, RateLimited, TIDError, Unauthorized,
)
from .operations import BankOperation, parse_operation
from .tid import Introspection, TIDClient, TokenSet, company_scope, new_code_verifier

__all__ = [
    "AccountInfo", "BankAPI", "BankAPIError", "BankError", "BankOperation", "BankServerError", "BankUnavailable",
    "Forbidden", "Introspection", "InvalidClient", "InvalidData", "BankInvalidGrant", "MalformedOperation",
    "RateLimited", "TIDClient", "TIDError", "TokenSet", "Unauthorized", "company_scope", "new_code_verifier",
    "parse_operation",
]
