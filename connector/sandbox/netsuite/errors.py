"""NetSuite REST error bodies (fact sheet §5, samples/netsuite_rest_error_examples.json).

Every REST failure is an RFC 7807-like object::

    {"type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1",
     "title": "Bad Request", "status": 400,
     "o:errorDetails": [{"detail": "...", "o:errorCode": "USER_ERROR", "o:errorPath": "..."}]}

The ``type`` URLs follow the RFC 9110 form that current accounts send (Airbyte's
recorded ``NONEXISTENT_FIELD`` sample); Oracle's older examples use RFC 2616 URLs, which
have the same JSON type. Wording that no public source quotes is marked "sandbox
wording" where it is produced.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CONTENT_TYPE_ERROR",
    "DETAIL_DUPLICATE",
    "DETAIL_INVALID_LOGIN",
    "NetSuiteError",
    "concurrency_limit",
    "invalid_field_value",
    "invalid_login",
    "invalid_query",
    "not_found",
    "record_changed",
    "unexpected_error",
    "user_error",
]

CONTENT_TYPE_ERROR = "application/vnd.oracle.resource+json; type=error; charset=UTF-8"

#: Oracle's text (samples: invalid_login_401).
DETAIL_INVALID_LOGIN = (
    "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI "
    "at Setup > Users/Roles > User Management > View Login Audit Trail."
)
#: Public connector code, "measured live" (samples: duplicate_externalId_on_create_400).
DETAIL_DUPLICATE = "Error while accessing a resource. This entity already exists."

_TYPES = {
    400: "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1",
    401: "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.2",
    403: "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.4",
    404: "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.5",
    405: "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.6",
    415: "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.16",
    429: "https://www.rfc-editor.org/rfc/rfc6585.html#section-4",
    500: "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.6.1",
    503: "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.6.4",
}
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class NetSuiteError(Exception):
    """A REST failure rendered as NetSuite's error JSON.

    Args:
        status: HTTP status.
        code: ``o:errorCode``.
        detail: ``detail``.
        title: Overrides the status's reason phrase (the async idempotency conflict uses
            ``"Conflict"`` with status 400, as Oracle documents it).
        extra: More keys of the error detail (``o:errorPath``, ``o:errorQueryParam``,
            ``o:errorHeader``...).
        headers: Response headers to send with the error.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        type_: str | None = None,
        extra: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.type = type_ or _TYPES.get(status, _TYPES[400])
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        detail: dict[str, Any] = {"detail": self.detail}
        detail.update(self.extra)
        detail["o:errorCode"] = self.code
        return {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "o:errorDetails": [detail],
        }


def invalid_login() -> NetSuiteError:
    """401 ``INVALID_LOGIN``: bad, expired or revoked credentials of any kind."""
    return NetSuiteError(401, "INVALID_LOGIN", DETAIL_INVALID_LOGIN)


def not_found() -> NetSuiteError:
    """404 for a record id that does not exist (sandbox wording, not in the fact sheet)."""
    return NetSuiteError(
        404,
        "NONEXISTENT_ID",
        "The record instance does not exist. Provide a valid record instance ID.",
    )


def invalid_field_value(value: object, field: str, path: str) -> NetSuiteError:
    """400 ``INVALID_CONTENT`` for a reference NetSuite cannot resolve (Oracle's example)."""
    return NetSuiteError(
        400,
        "INVALID_CONTENT",
        "Error while accessing resource: You have entered an Invalid Field Value "
        f"{value} for the following field: {field}",
        extra={"o:errorPath": path},
    )


def user_error(detail: str, path: str | None = None) -> NetSuiteError:
    """400 ``USER_ERROR`` with NetSuite's "Error while accessing a resource." prefix."""
    text = (
        detail
        if detail.startswith("Error while")
        else f"Error while accessing a resource. {detail}"
    )
    return NetSuiteError(
        400, "USER_ERROR", text, extra={"o:errorPath": path} if path is not None else None
    )


def record_changed() -> NetSuiteError:
    """400 ``RCRD_HAS_BEEN_CHANGED`` (Oracle's message text; REST status unconfirmed)."""
    return NetSuiteError(
        400,
        "RCRD_HAS_BEEN_CHANGED",
        "Error while accessing a resource. Record has been changed.",
    )


def concurrency_limit() -> NetSuiteError:
    """429 for the account concurrency limit (the error code is unconfirmed, §5)."""
    return NetSuiteError(
        429,
        "CONCURRENCY_LIMIT_EXCEEDED",
        "Concurrent request limit exceeded. Request blocked.",
    )


def unexpected_error(error_id: str) -> NetSuiteError:
    """500 ``UNEXPECTED_ERROR`` (sandbox wording)."""
    return NetSuiteError(
        500,
        "UNEXPECTED_ERROR",
        f"An unexpected error has occurred. Error ID: {error_id}",
    )


def invalid_query(message: str) -> NetSuiteError:
    """400 ``INVALID_PARAMETER`` on ``q`` for SuiteQL text NetSuite cannot run.

    The wording is the one recorded from live accounts in public client code
    ("Invalid search query. Detailed unprocessed description follows. ...").
    """
    return NetSuiteError(
        400,
        "INVALID_PARAMETER",
        f"Invalid search query. Detailed unprocessed description follows. {message}",
        extra={"o:errorQueryParam": "q"},
    )
