"""Typed errors raised by the T-Bank client code, so callers can react without parsing strings."""
from __future__ import annotations

from enum import StrEnum


class BankError(Exception):
    """Root of every error raised by `b24app.adapters.banks`."""


class TIDError(BankError):
    """T-ID (OAuth) answered with an error in OAuth shape `{"error", "error_description"}`."""

    def __init__(self, error: str, description: str | None = None, *, status: int | None = None) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(f"{error}: {description}" if description else error)


class BankInvalidGrant(TIDError):
    """The code or refresh token is dead: stop retrying and send the user through authorization again."""


class InvalidClient(TIDError):
    """client_id / client_secret were rejected (configuration problem, not a user problem)."""


class BankAPIError(BankError):
    """The Business API answered with an error body `{errorId, errorCode, errorMessage}`."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_id: str | None = None,
        error_code: str | None = None,
        request_id: str | None = None,
        details: object = None,
    ) -> None:
        self.status = status
        self.error_id = error_id
        self.error_code = error_code
        self.message = message
        self.request_id = request_id
        self.details = details
        super().__init__(f"{status} {error_code}: {message} (request {request_id})" if status else message)


class Unauthorized(BankAPIError):
    """401: the access token is expired, revoked or unknown."""


class Forbidden(BankAPIError):
    """403: the token lacks the scope for this company (or the IP is not allowed)."""


class InvalidData(BankAPIError):
    """400/422: the request did not match the API contract."""


class RateLimited(BankAPIError):
    """429: «Слишком много запросов» even after backing off."""


class BankServerError(BankAPIError):
    """5xx from the bank even after retrying."""


class BankUnavailable(BankAPIError):
    """The bank could not be reached (connection error or timeout) even after retrying."""


class MalformedOperation(BankError, ValueError):
    """An operation object from a statement or webhook could not be understood."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class SyncErrorCode(StrEnum):
    """Why an account's last statement read failed (bank_accounts.last_error_code); the text beside it is for
    people. Pages decide the link's health on this code, never on the words of the message."""

    RATE_LIMITED = "rate_limited"    # 429 even after backing off (RateLimited)
    NEEDS_CONSENT = "needs_consent"  # the link is not active, the grant is dead, or 401/403 on the statement
    UNAVAILABLE = "unavailable"      # the bank could not be reached, or timed out
    BANK_ERROR = "bank_error"        # any other answer of the bank that is an error (5xx, 400/422, T-ID)
    MALFORMED = "malformed"          # the read worked; some statement items were refused as malformed
    INTERNAL = "internal"            # our own failure (Bitrix24, the database, a bug)


ERROR_BY_STATUS: dict[int, type[BankAPIError]] = {
    400: InvalidData,
    401: Unauthorized,
    403: Forbidden,
    422: InvalidData,
    429: RateLimited,
}


def api_error_class(status: int) -> type[BankAPIError]:
    """Pick the typed error class for an HTTP status of the Business API."""
    if status in ERROR_BY_STATUS:
        return ERROR_BY_STATUS[status]
    if status >= 500:
        return BankServerError
    return BankAPIError
