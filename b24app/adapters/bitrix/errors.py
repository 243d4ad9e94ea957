"""Typed Bitrix24 errors: one root, a class per documented error code."""
from __future__ import annotations


class BitrixError(Exception):
    """Root of everything the Bitrix24 boundary raises."""

    retryable = False
    # Whether the request may have been carried out although it raised: no answer, or a server error. The
    # classes below that Bitrix24 answers before doing any work (rate limits, tokens, access) say False.
    may_have_run = True

    def __init__(self, code: str, description: str = "", status: int | None = None, method: str | None = None):
        super().__init__(f"{method + ': ' if method else ''}{code}: {description}".strip())
        self.code = code
        self.description = description
        self.status = status
        self.method = method


class ExpiredToken(BitrixError):
    """401 expired_token: refresh once, persist, retry."""

    may_have_run = False


class InvalidToken(BitrixError):
    """401 NO_AUTH_FOUND / invalid_token: the token is not one the portal knows."""

    may_have_run = False


class InsufficientScope(BitrixError):
    may_have_run = False


class AccessDenied(BitrixError):
    may_have_run = False


class QueryLimitExceeded(BitrixError):
    """503 QUERY_LIMIT_EXCEEDED: the leaky bucket is full; wait and retry."""

    retryable = True
    may_have_run = False


class OperationTimeLimit(BitrixError):
    """429 OPERATION_TIME_LIMIT: this method's operating budget is spent for minutes (limits.md); `reset_at`
    (epoch seconds, set by the client) says when to try it again. The client does not wait for it."""

    retryable = True
    may_have_run = False
    reset_at: float | None = None


class MethodNotFound(BitrixError):
    may_have_run = False


class NotFound(BitrixError):
    pass


class InvalidArgument(BitrixError):
    pass


class PaymentRequired(BitrixError):
    may_have_run = False


class PortalGone(BitrixError):
    """The app is not installed any more (or the portal was deleted)."""

    may_have_run = False


class AppNotInstalled(PortalGone):
    """The OAuth server refused a refresh with `invalid_client`: "the application may not be installed in this
    Bitrix24" (settings/oauth/error-codes.md), which is what it answers once the app was uninstalled. (A wrong
    client_id/secret answers the same, but then on every portal at once: check the configuration.)"""


class BitrixServerError(BitrixError):
    retryable = True


class PortalMovedTooOften(BitrixServerError):
    """The portal answered with yet another new address (renamed) more often than one call follows."""

    may_have_run = False


class BitrixUnavailable(BitrixError):
    """Network failure or timeout after retries."""

    retryable = True


class InvalidGrant(BitrixError):
    """The OAuth server refused the refresh token: the portal must open the app again."""

    may_have_run = False


class OAuthError(BitrixError):
    may_have_run = False


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
