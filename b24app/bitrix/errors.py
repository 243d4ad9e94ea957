"""Typed Bitrix24 errors: one root, a class per documented error code."""
from __future__ import annotations


class BitrixError(Exception):
    """Root of everything the Bitrix24 boundary raises."""

    retryable = False

    def __init__(self, code: str, description: str = "", status: int | None = None, method: str | None = None):
        super().__init__(f"{method + ': ' if method else ''}{code}: {description}".strip())
        self.code = code
        self.description = description
        self.status = status
        self.method = method


class ExpiredToken(BitrixError):
    """401 expired_token: refresh once, persist, retry."""


class InvalidToken(BitrixError):
    """401 NO_AUTH_FOUND / invalid_token: the token is not one the portal knows."""


class InsufficientScope(BitrixError):
    pass


class AccessDenied(BitrixError):
    pass


class QueryLimitExceeded(BitrixError):
    """503 QUERY_LIMIT_EXCEEDED: the leaky bucket is full; wait and retry."""

    retryable = True


class OperationTimeLimit(BitrixError):
    """429 OPERATION_TIME_LIMIT: this method's operating budget is spent; retry later."""

    retryable = True


class MethodNotFound(BitrixError):
    pass


class NotFound(BitrixError):
    pass


class InvalidArgument(BitrixError):
    pass


class PaymentRequired(BitrixError):
    pass


class PortalGone(BitrixError):
    """The app is not installed any more (or the portal was deleted)."""


class BitrixServerError(BitrixError):
    retryable = True


class BitrixUnavailable(BitrixError):
    """Network failure or timeout after retries."""

    retryable = True


class InvalidGrant(BitrixError):
    """The OAuth server refused the refresh token: the portal must open the app again."""


class OAuthError(BitrixError):
    pass


ERROR_CLASSES: dict[str, type[BitrixError]] = {
    "expired_token": ExpiredToken,
    "NO_AUTH_FOUND": InvalidToken,
    "invalid_token": InvalidToken,
    "INVALID_CREDENTIALS": AccessDenied,
    "insufficient_scope": InsufficientScope,
    "ACCESS_DENIED": AccessDenied,
    "user_access_error": AccessDenied,
    "WRONG_AUTH_TYPE": AccessDenied,
    "QUERY_LIMIT_EXCEEDED": QueryLimitExceeded,
    "OVERLOAD_LIMIT": QueryLimitExceeded,
    "OPERATION_TIME_LIMIT": OperationTimeLimit,
    "ERROR_METHOD_NOT_FOUND": MethodNotFound,
    "NOT_FOUND": NotFound,
    "ERROR_NOT_FOUND": NotFound,
    "ERROR_ARGUMENT": InvalidArgument,
    "INVALID_ARG_VALUE": InvalidArgument,
    "PAYMENT_REQUIRED": PaymentRequired,
    "NOT_INSTALLED": PortalGone,
    "APPLICATION_NOT_FOUND": PortalGone,
    "PORTAL_DELETED": PortalGone,
    "INTERNAL_SERVER_ERROR": BitrixServerError,
    "ERROR_UNEXPECTED_ANSWER": BitrixServerError,
    "invalid_grant": InvalidGrant,
    "invalid_client": OAuthError,
    "invalid_request": OAuthError,
}


def error_from(code: str, description: str = "", status: int | None = None, method: str | None = None) -> BitrixError:
    cls = ERROR_CLASSES.get(code)
    if cls is None and not code and "not found" in description.lower():
        cls = NotFound  # inside batch, CRM methods answer {"error": "", "error_description": "Not found"}
    if cls is None:
        cls = BitrixServerError if (status or 0) >= 500 else BitrixError
    return cls(code, description, status, method)
