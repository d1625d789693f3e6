"""One error taxonomy for every provider.

Adapters translate provider failures into these classes at exactly one boundary
(``raise … from exc``), keeping the provider's own code and message. The engine
decides what to do by the class alone: each class says whether the request is
known not to have been applied (``retriable``), is final (``terminal``), or may
have been applied (``OutcomeUnknown``).
"""

from __future__ import annotations

from decimal import Decimal


class ConnectorError(Exception):
    """Base class. ``code`` is our stable code; provider details ride along."""

    code = "connector_error"
    terminal = False  # the allocation can never succeed as sent
    retriable = False  # safe to send again: the provider did not apply it

    def __init__(
        self,
        message: str = "",
        *,
        provider_code: str | None = None,
        provider_message: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message or provider_message or self.code)
        self.message = message or provider_message or self.code
        self.provider_code = provider_code
        self.provider_message = provider_message
        self.status_code = status_code

    def as_dict(self) -> dict[str, object]:
        """Plain data for the attempt log and JSON output (never holds secrets)."""
        return {
            "code": self.code,
            "message": self.message,
            "provider_code": self.provider_code,
            "provider_message": self.provider_message,
            "status_code": self.status_code,
        }


class AlreadySettled(ConnectorError):
    """The document is already fully paid in the ledger."""

    code = "already_settled"
    terminal = True


class AmountExceedsBalance(ConnectorError):
    """The amount is more than the document's open balance."""

    code = "amount_exceeds_balance"
    terminal = True

    def __init__(
        self,
        message: str = "",
        *,
        amount: Decimal | None = None,
        balance: Decimal | None = None,
        **kw: object,
    ) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.amount = amount
        self.balance = balance


class DocumentNotFound(ConnectorError):
    """No such invoice or bill in the ledger."""

    code = "document_not_found"
    terminal = True


class DocumentNotPayable(ConnectorError):
    """The document exists but cannot take a payment (draft, void, deleted…)."""

    code = "document_not_payable"
    terminal = True


class StaleRowVersion(ConnectorError):
    """The document changed since it was read; read again and decide again."""

    code = "stale_row_version"
    retriable = True


class ValidationRejected(ConnectorError):
    """The provider refused the request as invalid; sending it again won't help."""

    code = "validation_rejected"
    terminal = True


class AuthExpired(ConnectorError):
    """The access token expired; refresh and retry."""

    code = "auth_expired"
    retriable = True


class AuthRevoked(ConnectorError):
    """The grant is gone (revoked, expired refresh token): a person must reconnect."""

    code = "auth_revoked"


class RateLimited(ConnectorError):
    """The provider refused for rate limits; the request was not applied."""

    code = "rate_limited"
    retriable = True

    def __init__(self, message: str = "", *, retry_after: float | None = None, **kw: object):
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class Transient(ConnectorError):
    """A failure where the request provably did not take effect (connect error, 503 on read)."""

    code = "transient"
    retriable = True


class OutcomeUnknown(ConnectorError):
    """A write may or may not have been applied (timeout, dropped connection, 5xx)."""

    code = "outcome_unknown"


ALL_ERRORS: tuple[type[ConnectorError], ...] = (
    AlreadySettled,
    AmountExceedsBalance,
    DocumentNotFound,
    DocumentNotPayable,
    StaleRowVersion,
    ValidationRejected,
    AuthExpired,
    AuthRevoked,
    RateLimited,
    Transient,
    OutcomeUnknown,
)
