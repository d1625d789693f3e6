"""QuickBooks Online faults: the ``{"Fault": {"Error": [...], "type": ...}}`` envelope.

Provenance of the wording (fact sheet ``providers/quickbooks.md`` §4 and the samples):

* verbatim from Intuit samples: 610 "Object Not Found", 5010 "Stale Object Error",
  6240 "Duplicate Name Exists Error" (``batch_response_with_faults__…json``), the throttle
  text of 3001 and the 3200 message (fact sheet §4);
* from public error reports (not in the fact sheet): the 6000 message "A business
  validation error has occurred while processing your request", 4000 "Error parsing
  query" / ``QueryParserError: Encountered …``, 4001 "Invalid query" /
  ``QueryValidationError: Property X not found for Entity Y``, 2020 "Required param
  missing…", 2010 "Request has invalid or unsupported property", 10000 "An application
  error has occurred while processing your request";
* sandbox wording (marked ``# sandbox wording`` where used): every 6000 ``Detail``, the
  2130/1040/5030 details, and the query-validation details other than the two above.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MSG_BUSINESS",
    "QboFault",
    "business",
    "duplicate_name",
    "invalid_property",
    "not_found",
    "query_invalid",
    "query_parse",
    "required",
    "stale",
    "system_error",
    "unsupported",
]

MSG_BUSINESS = "A business validation error has occurred while processing your request"
DETAIL_NOT_FOUND = (
    "Object Not Found : Something you're trying to use has been made inactive. "
    "Check the fields with accounts, customers, items, vendors or employees."
)
DETAIL_STALE = (
    "Stale Object Error : You and root were working on this at the same time. "
    "root finished before you did, so your work was not saved."
)
DETAIL_DUPLICATE_NAME = (
    "The name supplied already exists. : Another customer, vendor or employee is already "
    "using this \nname. Please use a different name."
)
MSG_SYSTEM = "An application error has occurred while processing your request"
DETAIL_SYSTEM = (
    "System Failure Error: An unexpected error occurred while accessing or saving your "
    "data. Please wait a few minutes and try again. If the problem persists, contact "
    "customer support."
)


class QboFault(Exception):
    """One QuickBooks fault (one ``Error`` entry) with its HTTP status.

    Args:
        code: The error code as QuickBooks writes it: a string (``"6000"``).
        message: ``Message``.
        detail: ``Detail``.
        element: ``element`` (the offending field, usually empty).
        fault_type: ``Fault.type``: ValidationFault, SystemFault, AuthenticationFault…
        status: HTTP status of a standalone (non-batch) answer.
    """

    def __init__(
        self,
        code: str,
        message: str,
        detail: str,
        *,
        element: str = "",
        fault_type: str = "ValidationFault",
        status: int = 400,
    ) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.code = code
        self.message = message
        self.detail = detail
        self.element = element
        self.fault_type = fault_type
        self.status = status

    def fault(self) -> dict[str, Any]:
        """The ``Fault`` object (what a batch item carries, and the body's ``Fault``)."""
        return {
            "Error": [
                {
                    "Message": self.message,
                    "Detail": self.detail,
                    "code": self.code,
                    "element": self.element,
                }
            ],
            "type": self.fault_type,
        }


def not_found(element: str = "") -> QboFault:
    """610, verbatim from Intuit's batch sample."""
    return QboFault("610", "Object Not Found", DETAIL_NOT_FOUND, element=element)


def stale() -> QboFault:
    """5010, verbatim from Intuit's batch sample."""
    return QboFault("5010", "Stale Object Error", DETAIL_STALE)


def duplicate_name() -> QboFault:
    """6240, verbatim from Intuit's batch sample."""
    return QboFault("6240", "Duplicate Name Exists Error", DETAIL_DUPLICATE_NAME)


def business(text: str, element: str = "") -> QboFault:
    """6000 with ``Detail`` "Business Validation Error: <text>" (the texts are sandbox wording)."""
    return QboFault("6000", MSG_BUSINESS, f"Business Validation Error: {text}", element=element)


def required(name: str) -> QboFault:
    """2020 for a missing required field."""
    return QboFault(
        "2020",
        "Required param missing, need to supply the required value for the API",
        f"Required parameter {name} is missing in the request",
        element=name,
    )


def invalid_property(detail: str, element: str = "") -> QboFault:
    """2010 for a malformed body or a value of the wrong type."""
    return QboFault("2010", "Request has invalid or unsupported property", detail, element=element)


def query_parse(detail: str) -> QboFault:
    """4000: the statement does not parse."""
    return QboFault("4000", "Error parsing query", f"QueryParserError: {detail}")


def query_invalid(detail: str) -> QboFault:
    """4001: the statement parses but is not allowed."""
    return QboFault("4001", "Invalid query", f"QueryValidationError: {detail}")


def unsupported(detail: str) -> QboFault:
    """5030 "Feature Not Supported": what the sandbox does not emulate (sandbox wording)."""
    return QboFault("5030", "Feature Not Supported", detail)


def system_error(status: int = 500) -> QboFault:
    """10000 SystemFault, for injected server errors."""
    return QboFault("10000", MSG_SYSTEM, DETAIL_SYSTEM, fault_type="SystemFault", status=status)
