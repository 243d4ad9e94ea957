"""Bitrix24 boundary: REST client, typed errors, pacing."""
from .client import BitrixClient, BatchResult, OAuthApp, PortalCredentials, TokenGrant, call_with_token
from .errors import BitrixError

__all__ = ["BitrixClient", "BatchResult", "BitrixError", "OAuthApp", "PortalCredentials", "TokenGrant",
           "call_with_token"]
