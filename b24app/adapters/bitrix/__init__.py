"""Bitrix24 boundary: REST client (OAuth, batches, paging), typed errors, pacing of calls per portal.

Imports only itself, the standard library and httpx: nothing of the app's storage, web or pipeline.
"""
from .client import BitrixClient, BatchResult, OAuthApp, PortalCredentials, TokenGrant, call_with_token
from .errors import BitrixError

__all__ = ["BitrixClient", "BatchResult", "BitrixError", "OAuthApp", "PortalCredentials", "TokenGrant",
           "call_with_token"]
