"""QuickBooks Online adapter: invoices, bills and payments through the Accounting API v3.

Facts come from ``providers/quickbooks.md`` (the fact sheet); section numbers below
refer to it.

Reads go through ``query`` (``SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >=
'…' ORDERBY MetaData.LastUpdatedTime STARTPOSITION n MAXRESULTS m``, §7: no ``OR``, at
most 1000 per page) and the mapping ``connector/mappings/quickbooks.toml``. Invoices and
bills have no status (§3): "paid" is ``Balance`` 0, "void" is ``TotalAmt`` 0 with a
``PrivateNote`` starting "Voided"; a deleted document answers 610 →
:class:`DocumentNotFound`. The row version is ``SyncToken``.

Writes create a ``Payment`` (AR) or a ``BillPayment`` (AP), built by the mapping's
``[write.payment]`` / ``[write.bill_payment]`` tables, one per call (``POST
…/payment``) or, for several, one ``batch`` call (≤ 30 items, §6).

Idempotency (§5):

* every create carries ``?requestid=`` — the engine's key when it fits QuickBooks'
  limit (50 characters; 36 for a batch), else a deterministic hash of it;
* our reference travels on the payment: always in full in ``PrivateNote`` (≤ 4000),
  and also in ``PaymentRefNum`` (Payment) / ``DocNumber`` (BillPayment) when it fits
  their 21 characters (§2 gives 21 for ``DocNumber``; the fact sheet states no limit
  for ``PaymentRefNum``, we assume QuickBooks' usual 21). A longer reference (one with
  a caller's text) lives in ``PrivateNote`` only;
* :meth:`QuickBooksAdapter.find_payment` queries the payments (bill payments) of the
  document's customer (vendor) on the payment date, keeps those carrying our reference
  and linked to the document, and reports voided ones as ``status="deleted"`` (deleted
  ones vanish from queries, §7);
* ``requestid`` is not trusted alone: QuickBooks replays the original answer even if
  that payment was deleted since (§5, LanternOps/breeze#4624). Every created payment is
  therefore read back (one ``Id IN (…)`` query per call); a payment that is gone or
  voided is reported as :class:`StaleRowVersion` for that item. The engine then looks
  for our payment and, finding none alive, mints a new key version and decides again
  from a fresh read (``PushEngine._redecide``) — :class:`OutcomeUnknown` would instead
  resend the same key while a key window is alive (replaying the dead id again) or end
  in ``conflict`` when the lookup sees the voided payment.
* ``key_window`` is None: the fact sheet finds no documented retention of requestids
  (§5, UNCONFIRMED), so the engine looks up before every resend.
"""

from __future__ import annotations

import hashlib
import html
import re
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

import httpx
import jmespath
import jmespath.exceptions
from jmespath.parser import ParsedResult
from sqlmodel import SQLModel

from connector import jsonutil
from connector.adapters.base import (
    Capabilities,
    DocumentSnapshot,
    ItemResult,
    Page,
    PaymentLine,
    PaymentRequest,
    RemotePayment,
)
from connector.clock import Clock
from connector.config import ConnectionSettings
from connector.errors import (
    AlreadySettled,
    AmountExceedsBalance,
    AuthExpired,
    AuthRevoked,
    ConnectorError,
    DocumentNotFound,
    DocumentNotPayable,
    OutcomeUnknown,
    RateLimited,
    StaleRowVersion,
    Transient,
    ValidationRejected,
)
from connector.http import ProviderHTTP
from connector.logging import get_logger
from connector.mapping import OVERRIDABLE, EntityMapping, Mapping_, MappingError, parse_mapping
from connector.money import quantize, to_decimal
from connector.schema import Bill, Contact, Invoice, LedgerAccount, Payment
from connector.store import Store

__all__ = [
    "QUICKBOOKS_ERROR_TABLE",
    "QuickBooksAdapter",
    "QuickBooksErrorRule",
    "QuickBooksMapping",
    "load_connection_mapping",
    "load_quickbooks_mapping",
    "qbo_request_id",
    "translate_quickbooks_error",
]

log = get_logger("connector.quickbooks")

API = "/v3/company"
#: §0: every request is served as minor version 75 from 2025-08-01; say so explicitly.
MINOR_VERSION = "75"
#: §5: requestid max 50 characters; in a batch 36, with bIds of at most 10.
REQUEST_ID_MAX = 50
BATCH_REQUEST_ID_MAX = 36
#: §6: at most 30 payloads per batch.
BATCH_MAX = 30
#: §7: at most 1000 entities per query answer.
QUERY_MAX = 1000
#: Statements longer than this go as ``POST …/query`` (``Content-Type: application/text``,
#: §7) instead of in the URL: a batched ``Id IN (…)`` read of 1000 ids would not fit one.
QUERY_GET_MAX = 1500
#: Customers (vendors) named in one lookup query's ``IN`` list.
PARTY_IN_MAX = 100
#: BillPayment ``DocNumber`` max 21 (§2); ``PaymentRefNum`` assumed the same.
SHORT_REFERENCE_MAX = 21
#: §1/§2: ``PrivateNote`` max 4000.
PRIVATE_NOTE_MAX = 4000

_NUMERIC = re.compile(r"^\d+$")
_REQUEST_ID_CHARS = re.compile(r"^[A-Za-z0-9._:-]+$")
_XML_ERROR = re.compile(r'<Error[^>]*\bcode="(?P<code>[^"]*)"', re.IGNORECASE)
_XML_MESSAGE = re.compile(r"<Message>(?P<text>.*?)</Message>", re.IGNORECASE | re.DOTALL)
_XML_DETAIL = re.compile(r"<Detail>(?P<text>.*?)</Detail>", re.IGNORECASE | re.DOTALL)
_XML_TYPE = re.compile(r'<Fault[^>]*\btype="(?P<type>[^"]*)"', re.IGNORECASE)

REQUEST_FIELDS = frozenset(
    {
        "document_type",
        "contact_remote_id",
        "provider_key",
        "intent_id",
        "document_remote_id",
        "amount",
        "currency",
        "transaction_date",
        "reference",
        "account_code",
        "currency_rate",
        "lines",
        "unapplied",
        "total_amount",
    }
)
#: What the adapter derives from the connection for the writers (see the mapping file).
DERIVED_FIELDS = frozenset({"short_reference", "pay_type", "bill_account"})
WRITE_FIELDS = REQUEST_FIELDS | DERIVED_FIELDS
#: Reader name → unified model (QuickBooks splits payments and contacts in two).
MODELS: dict[str, type[SQLModel]] = {
    "invoice": Invoice,
    "bill": Bill,
    "payment": Payment,
    "bill_payment": Payment,
    "customer": Contact,
    "vendor": Contact,
    "ledger_account": LedgerAccount,
}
WRITERS = ("payment", "bill_payment")
#: Unified entity → (QuickBooks entity, reader) streams merged into one.
STREAMS: dict[str, tuple[tuple[str, str], ...]] = {
    "invoice": (("Invoice", "invoice"),),
    "bill": (("Bill", "bill"),),
    "payment": (("Payment", "payment"), ("BillPayment", "bill_payment")),
    "contact": (("Customer", "customer"), ("Vendor", "vendor")),
    "ledger_account": (("Account", "ledger_account"),),
}
#: Name-list entities: queries skip inactive ones unless asked for them.
_HAS_ACTIVE = frozenset({"Customer", "Vendor", "Account"})
_PAY_KIND = {"invoice": "Payment", "bill": "BillPayment"}
_DOC_KIND = {"invoice": "Invoice", "bill": "Bill"}
_PARTY_FIELD = {"Payment": "CustomerRef", "BillPayment": "VendorRef"}
_ALLOCATION_TYPES = {"Invoice": "invoice", "Bill": "bill", "CreditMemo": "credit_note"}
_PROVIDER_STATUS = {"void": "Voided", "paid": "Paid"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# CDC answers for the last 30 days only; keep an hour for the ledger's clock.
_CDC_LOOKBACK = timedelta(days=30) - timedelta(hours=1)


# -- the error decision table ---------------------------------------------------------
@dataclass(frozen=True)
class QuickBooksErrorRule:
    """One row of the decision table: provider signal → unified error."""

    status: int | None  # HTTP status, None = any
    codes: tuple[str, ...]  # Fault Error ``code`` (a string), () = any
    pattern: str  # regex on "Message: Detail"
    error: type[ConnectorError]
    action: str  # what the engine does; documentation for people


_R = QuickBooksErrorRule
# Most specific first: the first matching row wins. Codes from the fact sheet §4 to §6.
QUICKBOOKS_ERROR_TABLE: tuple[QuickBooksErrorRule, ...] = (
    _R(None, ("5010",), r".*", StaleRowVersion,
       "the object moved: look up our payment, then a new key version and a fresh preflight"),
    _R(None, ("600",), r".*", OutcomeUnknown,
       "the requestid was used before: our payment may exist; look it up before anything else"),
    _R(None, ("610",), r".*", DocumentNotFound,
       "rejected: the document (or a referenced name/account) is deleted or inactive"),
    _R(None, ("620",), r".*", DocumentNotPayable,
       "re-read the document: it cannot take this payment (paid, voided…)"),
    _R(None, ("6000",), r"exceeds the payment total|credits applied exceed", ValidationRejected,
       "bug-level: our lines do not add up to TotalAmt; park, alert"),
    _R(None, ("6000",), r"exceed\w*\b.*\bbalance|more than the (open )?balance",
       AmountExceedsBalance, "re-read the document: someone else may have paid"),
    _R(None, ("6000",), r"(doesn't|does not|no longer) exist|has been deleted",
       DocumentNotFound, "rejected: the document was deleted"),
    _R(None, ("6000",), r"voided|already (been )?paid|paid in full", DocumentNotPayable,
       "re-read the document: paid → already_settled, void → rejected"),
    _R(None, ("6000",), r"another (customer|vendor)|belongs to another", ValidationRejected,
       "rejected: the document's customer/vendor changed; a person re-submits"),
    _R(None, ("6000",), r"currenc", ValidationRejected,
       "rejected: the payment's currency must be the customer's/vendor's"),
    _R(None, ("6000",), r"account", ValidationRejected,
       "rejected: fix payment_account_code / bill_payment_account_code (type Bank…)"),
    _R(None, ("6000",), r".*", ValidationRejected,
       "rejected with QuickBooks' business-rule message"),
    _R(None, ("6140", "6210", "6240"), r"duplicate", ValidationRejected,
       "rejected: the DocNumber/name is taken; a person checks for an existing payment"),
    _R(None, ("6200", "6210"), r".*", ValidationRejected,
       "rejected: the books are closed for this date; a person picks another date"),
    _R(None, ("6190",), r".*", AuthRevoked,
       "park the connection: the company's subscription lapsed"),
    _R(None, ("10200",), r".*", AuthRevoked,
       "park the connection: the company was reset"),
    _R(None, ("5020", "120"), r".*", AuthRevoked,
       "park the connection: the connected user lost access; a person fixes permissions"),
    _R(None, ("3001",), r".*", RateLimited, "wait (60 s, or Retry-After), then send again"),
    _R(None, ("3200",), r"expired", AuthExpired, "refresh the token and send again"),
    _R(None, ("3200",), r".*", AuthRevoked, "park the connection: a person must reconnect"),
    _R(None, ("3100",), r".*", AuthRevoked,
       "park the connection: the grant is not for this realm (or was revoked)"),
    _R(None, ("2130",), r".*", ValidationRejected,
       "bug-level: requestid or bId format; park, alert"),
    _R(None, ("1040",), r".*", ValidationRejected, "bug-level: batch above 30 items; park, alert"),
    _R(None, ("4000", "4001", "4002", "10100"), r".*", ValidationRejected,
       "bug-level: a query we built was refused; park, alert"),
    _R(None, ("630", "2010", "2020", "2050", "2140", "2290", "2500", "5030", "6070"), r".*",
       ValidationRejected, "bug-level: the payload broke a field rule; park, alert"),
    _R(None, ("6540",), r".*", ValidationRejected,
       "rejected: a deposited transaction cannot change"),
    _R(None, ("10000",), r".*", Transient,
       "server-side failure: reads retry later; writes are outcome unknown"),
    _R(400, (), r".*", ValidationRejected, "rejected with QuickBooks' message"),
    _R(401, (), r"expired", AuthExpired, "refresh the token and send again"),
    _R(401, (), r".*", AuthRevoked, "park the connection: a person must reconnect"),
    _R(403, (), r".*", AuthRevoked, "park the connection: access to this realm is refused"),
    _R(404, (), r".*", DocumentNotFound, "rejected: no such document"),
    _R(429, (), r".*", RateLimited, "wait (60 s, or Retry-After), then send again"),
    _R(500, (), r".*", Transient, "reads: retry later; writes: outcome unknown"),
    _R(503, (), r".*", Transient, "reads: retry later; writes: outcome unknown"),
)  # fmt: skip


def translate_quickbooks_error(
    status: int, code: str | None, message: str, *, write: bool = False
) -> ConnectorError:
    """Turn QuickBooks' status, Fault code and message into our taxonomy (one boundary)."""
    provider_code = code or str(status)
    for rule in QUICKBOOKS_ERROR_TABLE:
        if rule.status is not None and rule.status != status:
            continue
        if rule.codes and (code or "") not in rule.codes:
            continue
        if re.search(rule.pattern, message or "", re.IGNORECASE | re.DOTALL):
            cls = rule.error
            if write and cls is Transient:
                cls = OutcomeUnknown
            return cls(
                message or f"HTTP {status}",
                provider_code=provider_code,
                provider_message=message,
                status_code=status,
            )
    fallback: type[ConnectorError] = (
        (OutcomeUnknown if write else Transient) if status >= 500 else ValidationRejected
    )
    return fallback(
        message or f"HTTP {status}",
        provider_code=provider_code,
        provider_message=message,
        status_code=status,
    )


@dataclass(frozen=True)
class _Fault:
    code: str | None
    message: str
    fault_type: str | None


def _fault_of(body: Any) -> _Fault | None:
    """The Fault of a JSON body: ``Fault.Error[]`` or the gateway's ``fault.error[]``."""
    if not isinstance(body, dict):
        return None
    fault = body.get("Fault") or body.get("fault")
    if not isinstance(fault, dict):
        return None
    errors = fault.get("Error") or fault.get("error") or []
    if isinstance(errors, dict):
        errors = [errors]
    code: str | None = None
    parts: list[str] = []
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict):
            continue
        if code is None and error.get("code") not in (None, ""):
            code = str(error["code"])
        text = str(error.get("Message") or error.get("message") or "")
        detail = str(error.get("Detail") or error.get("detail") or "")
        parts.append(f"{text}: {detail}" if text and detail else text or detail)
    fault_type = fault.get("type")
    return _Fault(code, "; ".join(p for p in parts if p), str(fault_type) if fault_type else None)


def _xml_fault(text: str) -> _Fault | None:
    """The throttle fault QuickBooks may send as XML even to JSON requests (§4)."""
    code = _XML_ERROR.search(text)
    if code is None:
        return None
    parts = [
        html.unescape(m.group("text").strip())
        for m in (_XML_MESSAGE.search(text), _XML_DETAIL.search(text))
        if m is not None
    ]
    kind = _XML_TYPE.search(text)
    return _Fault(code.group("code"), ": ".join(parts), kind.group("type") if kind else None)


def _effective_status(status: int, fault: _Fault | None) -> int:
    """A Fault inside a 200 (§4) or a batch item: 500 for a SystemFault, else 400."""
    if 200 <= status < 300:
        return 500 if fault is not None and fault.fault_type == "SystemFault" else 400
    return status


def qbo_request_id(key: str, limit: int = REQUEST_ID_MAX) -> str:
    """The ``requestid`` for an idempotency key: the key itself when it fits, else a hash.

    Deterministic, so a resend of the same key sends the same requestid.
    """
    if 0 < len(key) <= limit and _REQUEST_ID_CHARS.match(key):
        return key
    return "h" + hashlib.sha256(key.encode("utf-8")).hexdigest()[: limit - 1]


def _quote(value: str) -> str:
    """A string literal for the query language (backslash escapes, §7)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _qbo_time(moment: datetime) -> str:
    """A ``MetaData.LastUpdatedTime`` / ``changedSince`` literal (UTC, seconds)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _is_voided(raw: dict[str, Any]) -> bool:
    total = raw.get("TotalAmt")
    note = str(raw.get("PrivateNote") or "")
    return total is not None and to_decimal(total) == 0 and note.lower().startswith("voided")


# -- the mapping ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Writer:
    """One ``[write.<name>]`` table: dotted provider path → compiled expression."""

    fields: tuple[tuple[tuple[str, ...], ParsedResult], ...]

    def write(self, request: dict[str, Any]) -> dict[str, Any]:
        """The provider payload for a request (a null value leaves the key out)."""
        payload: dict[str, Any] = {}
        for path, expr in self.fields:
            value = expr.search(request)
            if value is None:
                continue
            node = payload
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        return payload


def _fields_in(node: Any) -> Iterator[str]:
    """Every ``field`` an expression's AST reads (hash keys and literals are not fields)."""
    if isinstance(node, dict):
        if node.get("type") == "field":
            yield str(node.get("value"))
        for child in node.get("children") or []:
            yield from _fields_in(child)


def _compile_writer(source: str, name: str, table: Any) -> _Writer:
    if not isinstance(table, dict) or not table:
        raise MappingError(source, f"write.{name}", "missing or empty table")
    fields: list[tuple[tuple[str, ...], ParsedResult]] = []
    for path, text in table.items():
        key = f"write.{name}.{path}"
        if not isinstance(text, str) or not text.strip():
            raise MappingError(source, key, "expected a JMESPath expression string")
        try:
            expr = jmespath.compile(text)
        except jmespath.exceptions.JMESPathError as exc:
            raise MappingError(source, key, f"bad JMESPath expression {text!r}: {exc}") from None
        # A reference to a field the request does not have would silently write
        # nothing; catch the typo at load time (unlike a regex, the AST knows that
        # ``{Amount: amount}`` reads ``amount`` only).
        unknown = sorted(set(_fields_in(expr.parsed)) - WRITE_FIELDS)
        if unknown:
            raise MappingError(
                source,
                key,
                f"refers to unknown request field(s) {unknown}; known: {sorted(WRITE_FIELDS)}",
            )
        fields.append((tuple(path.split(".")), expr))
    return _Writer(tuple(fields))


@dataclass(frozen=True)
class QuickBooksMapping:
    """The readers (checked by :func:`connector.mapping.parse_mapping`) and both writers."""

    readers: Mapping_
    writers: dict[str, _Writer]

    def reader(self, name: str) -> EntityMapping:
        """The reader ``name`` (``invoice``, ``bill_payment``, ``vendor``…)."""
        return self.readers.reader(name)

    def write(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """The ``payment`` or ``bill_payment`` payload of a request."""
        return self.writers[name].write(request)


def _merge(base: dict[str, Any], override: Any, path: str, source: str) -> dict[str, Any]:
    """Deep-merge a connection's override into the shipped document: tables merge, values
    replace (as :func:`connector.mapping.load_mapping` does for the other providers)."""
    out = dict(base)
    for key, value in override.items():
        here = f"{path}.{key}" if path else str(key)
        if isinstance(value, dict):
            current = out.get(key, {})
            if not isinstance(current, dict):
                raise MappingError(source, here, "is a value in the shipped mapping, not a table")
            out[key] = _merge(current, value, here, source)
        else:
            out[key] = value
    return out


def load_quickbooks_mapping(
    text: str | None = None,
    *,
    source: str | None = None,
    overrides: dict[str, Any] | None = None,
    overrides_source: str = "connection mapping",
) -> QuickBooksMapping:
    """Load and check ``connector/mappings/quickbooks.toml`` (or the given TOML text).

    Args:
        overrides: a connection's ``mapping`` table, merged over the shipped mapping
            key by key (``write.payment.PaymentRefNum``…) and checked like the file.

    Raises:
        MappingError: naming the file (or the override), the key and the problem.
    """
    if text is None:
        text = (resources.files("connector") / "mappings" / "quickbooks.toml").read_text("utf-8")
        source = source or "connector/mappings/quickbooks.toml"
    source = source or "<quickbooks mapping>"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(source, "-", f"not valid TOML ({exc})") from None
    if overrides:
        unknown = sorted(set(overrides) - OVERRIDABLE)
        if unknown:
            raise MappingError(
                overrides_source,
                unknown[0],
                f"cannot be overridden; use one of {sorted(OVERRIDABLE)}",
            )
        doc = _merge(doc, overrides, "", overrides_source)
        source = overrides_source
    write = doc.get("write", {})
    if not isinstance(write, dict):
        raise MappingError(source, "write", "must be a table of tables")
    extra = sorted(set(write) - set(WRITERS))
    if extra:
        raise MappingError(source, f"write.{extra[0]}", f"unknown writer; known: {list(WRITERS)}")
    readers = parse_mapping(
        {k: v for k, v in doc.items() if k != "write"},
        source=source,
        models=MODELS,
        write_fields=WRITE_FIELDS,
    )
    missing = sorted(set(MODELS) - set(readers.readers))
    if missing:
        raise MappingError(source, f"read.{missing[0]}", "missing [read] table")
    writers = {name: _compile_writer(source, name, write.get(name)) for name in WRITERS}
    return QuickBooksMapping(readers, writers)


def load_connection_mapping(settings: ConnectionSettings) -> QuickBooksMapping:
    """The shipped QuickBooks mapping with this connection's overrides, validated."""
    return load_quickbooks_mapping(
        overrides=settings.mapping,
        overrides_source=f"connections[id={settings.id!r}].mapping",
    )


_ITEM_ERRORS: tuple[type[ConnectorError], ...] = (
    StaleRowVersion,
    AmountExceedsBalance,
    DocumentNotPayable,
    DocumentNotFound,
    ValidationRejected,
    AlreadySettled,
)


class QuickBooksAdapter:
    """The QuickBooks Online implementation of :class:`connector.adapters.base.Adapter`."""

    provider = "quickbooks"
    entities: tuple[str, ...] = ("invoice", "bill", "payment", "contact", "ledger_account")
    capabilities = Capabilities(
        max_batch=BATCH_MAX,  # §6
        concurrency=10,  # §8: 10 concurrent requests per app and realm
        per_minute=500,  # §8: 500 requests per minute per realm
        idempotency="requestid + lookup by PaymentRefNum",
        key_window=None,  # §5: no documented requestid retention → always look up first
        max_key_length=REQUEST_ID_MAX,
        # §1: a Payment whose TotalAmt exceeds its lines keeps the rest as UnappliedAmt;
        # §2: a BillPayment's overpayment "is treated as a credit".
        unapplied_credit=True,
    )

    def __init__(
        self,
        settings: ConnectionSettings,
        store: Store,
        *,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        mapping: QuickBooksMapping | None = None,
    ) -> None:
        self.settings = settings
        self.realm_id = settings.tenant
        self.mapping = mapping or load_connection_mapping(settings)
        self.http = ProviderHTTP(
            settings, store, clock=clock, transport=transport, limits=self.capabilities
        )
        self._home_currency: str | None = None

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()

    # -- the error boundary -------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        text: str | None = None,
        write: bool = False,
    ) -> dict[str, Any]:
        content = None
        headers: dict[str, str] = {}
        if body is not None:
            content = jsonutil.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif text is not None:
            content = text.encode()
            headers["Content-Type"] = "application/text"
        query = {**(params or {}), "minorversion": MINOR_VERSION}
        response = self.http.request(
            method,
            f"{API}/{self.realm_id}{path}",
            params=query,
            content=content,
            headers=headers,
            write=write,
        )
        data: Any = None
        try:
            data = jsonutil.loads(response.content) if response.content else None
        except ValueError:
            data = None
        if response.status_code == 200:
            if not isinstance(data, dict):
                raise (OutcomeUnknown if write else Transient)(
                    f"{method} {path}: HTTP 200 with a body that is not a JSON object",
                    provider_message=response.text[:300],
                    status_code=200,
                )
            if _fault_of(data) is None:
                return data
        raise self._error_from(response, data, write)

    @staticmethod
    def _error_from(response: httpx.Response, data: Any, write: bool) -> ConnectorError:
        fault = _fault_of(data) if data is not None else _xml_fault(response.text)
        status = response.status_code
        code = fault.code if fault else None
        message = (fault.message if fault else "") or response.text[:500]
        err = translate_quickbooks_error(
            _effective_status(status, fault), code, message, write=write
        )
        err.status_code = status
        tid = response.headers.get("intuit_tid")
        if tid:
            err.message = f"{err.message} (intuit_tid {tid})"
        log.warning(
            "quickbooks_fault",
            status=status,
            code=code,
            error=err.code,
            intuit_tid=tid,
            write=write,
        )
        return err

    def _query(self, statement: str) -> dict[str, Any]:
        if len(statement) > QUERY_GET_MAX:
            data = self._call("POST", "/query", text=statement)
        else:
            data = self._call("GET", "/query", params={"query": statement})
        answer = data.get("QueryResponse")
        return answer if isinstance(answer, dict) else {}

    def _query_all(self, entity: str, where: str) -> list[dict[str, Any]]:
        """Every ``entity`` matching ``where``, page by page."""
        out: list[dict[str, Any]] = []
        start = 1
        while True:
            items = (
                self._query(
                    f"SELECT * FROM {entity} WHERE {where} STARTPOSITION {start} MAXRESULTS {QUERY_MAX}"
                ).get(entity)
                or []
            )
            out.extend(i for i in items if isinstance(i, dict))
            if len(items) < QUERY_MAX:
                return out
            start += QUERY_MAX

    def home_currency(self) -> str:
        """The company's home currency (``Preferences``), read once when first needed."""
        if self._home_currency is None:
            prefs = self._call("GET", "/preferences").get("Preferences") or {}
            home = ((prefs.get("CurrencyPrefs") or {}).get("HomeCurrency") or {}).get("value")
            self._home_currency = str(home or "USD")
        return self._home_currency

    # -- reads ---------------------------------------------------------------------------
    def _read(self, reader: str, raw: dict[str, Any]) -> dict[str, Any]:
        record = self.mapping.reader(reader).read(raw)
        if "currency" in record and not record["currency"] and reader in {"invoice", "bill"}:
            # QuickBooks leaves CurrencyRef out without multicurrency (Intuit's samples).
            record["currency"] = self.home_currency()
        currency = str(record.get("currency") or "USD")
        for name in ("total", "balance", "total_amount"):
            if record.get(name) is not None:
                record[name] = quantize(record[name], currency)
        if reader in {"payment", "bill_payment"}:
            record["allocations"] = _allocations(raw)
        return record

    def _snapshot(self, raw: dict[str, Any], kind: str) -> DocumentSnapshot:
        record = self._read(kind, raw)
        status = str(record["status"])
        total, balance = record["total"], record["balance"]
        provider_status = _PROVIDER_STATUS.get(status) or (
            "Partially paid" if balance < total else "Open"
        )
        return DocumentSnapshot(
            remote_id=str(record["remote_id"]),
            number=record.get("number"),
            kind=kind,
            status=status,
            provider_status=provider_status,
            currency=str(record["currency"]),
            total=total,
            balance=balance,
            row_version=record.get("row_version"),
            record=record,
            contact_remote_id=record.get("customer_id" if kind == "invoice" else "supplier_id"),
        )

    def get_document(self, ref: str, kind: str = "invoice") -> DocumentSnapshot:
        """Fresh read of an invoice or bill by Id (``GET …/invoice/{id}``) or ``DocNumber``.

        A numeric ``ref`` is tried as an Id first, then as a DocNumber (QuickBooks'
        numbers are often numeric too).
        """
        entity = _DOC_KIND["bill" if kind == "bill" else "invoice"]
        ref = ref.strip()
        raw: Any = None
        if _NUMERIC.match(ref):
            try:
                raw = self._call("GET", f"/{entity.lower()}/{ref}").get(entity)
            except DocumentNotFound:
                raw = None
        if not isinstance(raw, dict):
            items = (
                self._query(f"SELECT * FROM {entity} WHERE DocNumber = {_quote(ref)}").get(entity)
                or []
            )
            if not items:
                raise DocumentNotFound(f"no {kind} {ref!r} in QuickBooks realm {self.realm_id}")
            if len(items) > 1:
                ids = ", ".join(str(i.get("Id")) for i in items)
                raise DocumentNotFound(
                    f"{len(items)} {kind}s are numbered {ref!r} in QuickBooks realm "
                    f"{self.realm_id} (Ids {ids}): pass the Id instead"
                )
            raw = items[0]
        return self._snapshot(raw, "bill" if kind == "bill" else "invoice")

    def get_documents(
        self, remote_ids: Sequence[str], kind: str = "invoice"
    ) -> dict[str, DocumentSnapshot]:
        """Fresh reads of many invoices or bills, keyed by the ref as given.

        ``SELECT * FROM Invoice WHERE Id IN (…)`` (up to 1000 ids a query, §7), then
        ``DocNumber IN (…)`` for the refs that are no Id — what :meth:`get_document`
        does one ref at a time. A number several documents carry is left out (as
        get_document refuses it), and so are deleted documents (gone from queries, §7;
        get_document gets 610 for them). Voided ones are read with their state.
        """
        kind = "bill" if kind == "bill" else "invoice"
        entity = _DOC_KIND[kind]
        wanted = {ref: ref.strip() for ref in remote_ids if ref and ref.strip()}
        refs = list(dict.fromkeys(wanted.values()))
        by_id: dict[str, dict[str, Any]] = {}
        for raw in self._query_in(entity, "Id", [r for r in refs if _NUMERIC.match(r)]):
            by_id[str(raw.get("Id"))] = raw
        by_number: dict[str, list[dict[str, Any]]] = {}
        for raw in self._query_in(entity, "DocNumber", [r for r in refs if r not in by_id]):
            by_number.setdefault(str(raw.get("DocNumber") or "").casefold(), []).append(raw)
        snapshots: dict[str, DocumentSnapshot] = {}
        for ref in refs:
            found = by_id.get(ref)
            if found is None:
                numbered = by_number.get(ref.casefold()) or []
                if len(numbered) != 1:
                    continue
                found = numbered[0]
            snapshots[ref] = self._snapshot(found, kind)
        return {given: snapshots[ref] for given, ref in wanted.items() if ref in snapshots}

    def _query_in(
        self, entity: str, field_name: str, values: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Every ``entity`` whose ``field_name`` is one of ``values`` (1000 values a query)."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(values), QUERY_MAX):
            listed = ", ".join(_quote(v) for v in values[start : start + QUERY_MAX])
            out.extend(self._query_all(entity, f"{field_name} IN ({listed})"))
        return out

    def _page_of(
        self, entity: str, since: datetime | None, page: int, page_size: int
    ) -> list[dict[str, Any]]:
        conditions = []
        if since is not None:
            conditions.append(f"MetaData.LastUpdatedTime >= '{_qbo_time(since)}'")
        if entity in _HAS_ACTIVE:
            conditions.append("Active IN (true, false)")  # inactive names too
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        start = (max(page, 1) - 1) * page_size + 1
        statement = (
            f"SELECT * FROM {entity}{where} ORDERBY MetaData.LastUpdatedTime "
            f"STARTPOSITION {start} MAXRESULTS {page_size}"
        )
        items = self._query(statement).get(entity) or []
        return [i for i in items if isinstance(i, dict)]

    def list_changed(self, entity: str, since: datetime | None, page: int, page_size: int) -> Page:
        """One page of ``entity`` changed at or after ``since``, oldest change first.

        Payments (Payment + BillPayment) and contacts (Customer + Vendor) are two
        QuickBooks streams paged alike. When a stream fills its page, the page's
        ``max_updated_at`` is the earliest last change among the full streams, so the
        engine's keyset restart (or next page number) cannot skip a record of either.
        """
        page_size = max(1, min(page_size, QUERY_MAX))
        records: list[dict[str, Any]] = []
        cutoffs: list[datetime] = []
        has_more = False
        for qbo_entity, reader in STREAMS[entity]:
            items = self._page_of(qbo_entity, since, page, page_size)
            recs = [self._read(reader, item) for item in items]
            records.extend(recs)
            if len(items) >= page_size:
                has_more = True
                stamps = [r["remote_updated_at"] for r in recs if r.get("remote_updated_at")]
                if stamps:
                    cutoffs.append(max(stamps))
        newest_cut = min(cutoffs) if cutoffs else None
        if since is not None:
            # The query never returns deleted objects; CDC does. Deletions of this
            # window (up to the page's cut when more pages follow) join the page.
            records.extend(self._deletions(entity, since, newest_cut))
        records.sort(key=lambda r: r.get("remote_updated_at") or _EPOCH)
        stamps = [r["remote_updated_at"] for r in records if r.get("remote_updated_at")]
        newest = newest_cut if newest_cut is not None else (max(stamps) if stamps else None)
        return Page(
            records=records,
            page=page,
            page_size=page_size,
            has_more=has_more,
            max_updated_at=newest,
        )

    def _deletions(
        self, entity: str, since: datetime, until: datetime | None
    ) -> list[dict[str, Any]]:
        """Deleted ``entity`` objects changed in ``[since, until]`` according to CDC.

        CDC looks back at most 30 days: an older ``since`` (a backfill from long
        ago) has no deletions to report for records this store never held, so
        the refusal is logged and nothing is merged.
        """
        if since < datetime.now(UTC) - _CDC_LOOKBACK:
            return []
        try:
            found = self.changes([entity], since)[entity]
        except ValidationRejected as exc:
            log.warning(
                "qbo_cdc_skipped", connection=self.settings.id, entity=entity, error=str(exc)
            )
            return []
        out: list[dict[str, Any]] = []
        for rec in found:
            stamp = rec.get("remote_updated_at")
            if not rec.get("deleted") or stamp is None or stamp < since:
                continue
            if until is not None and stamp > until:
                continue
            out.append(rec)
        return out

    def changes(self, entities: Sequence[str], since: datetime) -> dict[str, list[dict[str, Any]]]:
        """What changed since ``since`` via Change Data Capture (§7), deletes included.

        One ``GET …/cdc`` for all ``entities`` (unified names). Live records are read
        by the mapping; deleted ones carry only ``remote_id``, ``status="deleted"``,
        ``deleted=True`` and ``remote_updated_at``. QuickBooks looks back at most 30
        days and returns at most 1000 objects: callers keep ``since`` recent and
        split a window that comes back full.
        """
        streams = [
            (unified, qbo, reader) for unified in entities for qbo, reader in STREAMS[unified]
        ]
        data = self._call(
            "GET",
            "/cdc",
            params={
                "entities": ",".join(qbo for _, qbo, _ in streams),
                "changedSince": _qbo_time(since),
            },
        )
        out: dict[str, list[dict[str, Any]]] = {unified: [] for unified in entities}
        for block in data.get("CDCResponse") or []:
            for group in (block or {}).get("QueryResponse") or []:
                for unified, qbo, reader in streams:
                    for raw in (group or {}).get(qbo) or []:
                        if str(raw.get("status", "")).lower() == "deleted":
                            stamp = (raw.get("MetaData") or {}).get("LastUpdatedTime")
                            out[unified].append(
                                {
                                    "remote_id": str(raw.get("Id")),
                                    "status": "deleted",
                                    "deleted": True,
                                    "remote_updated_at": (
                                        datetime.fromisoformat(stamp) if stamp else None
                                    ),
                                }
                            )
                        else:
                            out[unified].append(self._read(reader, raw))
        return out

    # -- writes ----------------------------------------------------------------------------
    def _write_input(self, request: PaymentRequest) -> dict[str, Any]:
        data = request.as_mapping_input()
        reference = request.reference
        data["short_reference"] = reference if len(reference) <= SHORT_REFERENCE_MAX else None
        data["pay_type"] = self.settings.bill_payment_type
        data["bill_account"] = self.settings.bill_payment_account_code or request.account_code
        if not data["contact_remote_id"]:
            data["contact_remote_id"] = self.get_document(
                request.document_remote_id, request.document_type
            ).contact_remote_id
        return data

    def payload(self, request: PaymentRequest) -> dict[str, Any]:
        """The Payment / BillPayment body the mapping builds for ``request``."""
        if len(request.reference) > PRIVATE_NOTE_MAX:
            raise ValidationRejected(
                f"reference of {len(request.reference)} characters exceeds PrivateNote's "
                f"{PRIVATE_NOTE_MAX}"
            )
        name = "bill_payment" if request.document_type == "bill" else "payment"
        body = self.mapping.write(name, self._write_input(request))
        lines = body.get("Line")
        if (request.multi or request.unapplied) and (
            not isinstance(lines, list)
            or len(lines) != len(request.applied_lines)
            or body.get("TotalAmt") != request.total
        ):
            # A connection's mapping override that writes one Line, or TotalAmt from
            # `amount`, would pay less than asked while looking applied.
            raise ValidationRejected(
                f"the {name} mapping does not write one Line per document and TotalAmt = "
                f"amount + unapplied (write.{name}.Line / TotalAmt: use `lines` and "
                f"`total_amount`)",
                provider_code="mapping",
            )
        return body

    def _linked(self, raw: dict[str, Any], document_id: str, txn_type: str) -> Decimal | None:
        """What the payment applies to the document (None: not linked to it)."""
        applied: Decimal | None = None
        for line in raw.get("Line") or []:
            for link in (line or {}).get("LinkedTxn") or []:
                if str(link.get("TxnId")) == document_id and link.get("TxnType") == txn_type:
                    applied = (applied or Decimal(0)) + to_decimal(line.get("Amount") or 0)
        return applied

    def _remote(self, raw: dict[str, Any], request: PaymentRequest) -> RemotePayment:
        """The payment as it answers ``request``: what it applies to the request's
        document(s) (``amount``, ``allocations``); its total is ``record["total_amount"]``."""
        kind = _PAY_KIND[request.document_type]
        record = self._read("bill_payment" if kind == "BillPayment" else "payment", raw)
        record.pop("allocations", None)
        if not record.get("currency"):  # no CurrencyRef without multicurrency
            record["currency"] = request.currency
        txn_type = _DOC_KIND[request.document_type]
        lines = []
        for document_id in request.document_ids:
            applied = self._linked(raw, document_id, txn_type)
            if applied is not None:
                lines.append(PaymentLine(document_id, quantize(applied, request.currency)))
        if request.multi:
            record["allocations"] = [
                {
                    "id": line.document_remote_id,
                    "type": request.document_type,
                    "amount": line.amount,
                }
                for line in lines
            ]
        dead = record["status"] in {"void", "deleted"}
        return RemotePayment(
            remote_id=str(record["remote_id"]),
            document_remote_id=request.document_remote_id,
            amount=quantize(sum((line.amount for line in lines), Decimal(0)), request.currency),
            reference=request.reference if self._carries(raw, request.reference) else None,
            status="deleted" if dead else "authorised",
            record=record,
            allocations=tuple(lines),
        )

    @staticmethod
    def _carries(raw: dict[str, Any], reference: str) -> bool:
        """Whether a payment carries exactly our reference (a void prefixes the note, §0)."""
        note = str(raw.get("PrivateNote") or "")
        if note == reference or (note.lower().startswith("voided") and note.endswith(reference)):
            return True
        return reference in (raw.get("PaymentRefNum"), raw.get("DocNumber"))

    def push_payments(
        self, batch: Sequence[PaymentRequest], idempotency_key: str
    ) -> list[ItemResult]:
        """Create the payments: ``POST …/payment`` (``…/billpayment``) for one, ``batch``
        for several, always with ``?requestid=``; then read the created ones back.

        Per-item refusals (business rules, stale objects, validation) are item results;
        call-level failures (rate limits, auth, transport, 5xx) are raised.
        """
        if not batch:
            return []
        if len(batch) > BATCH_MAX:
            raise ValueError(f"at most {BATCH_MAX} payments per call, got {len(batch)}")
        if len(batch) == 1:
            results = [self._create_one(batch[0], idempotency_key)]
        else:
            results = self._create_batch(batch, idempotency_key)
        return self._verify(batch, results)

    def _create_one(self, request: PaymentRequest, key: str) -> ItemResult:
        kind = _PAY_KIND[request.document_type]
        try:
            body = self.payload(request)
            data = self._call(
                "POST",
                f"/{kind.lower()}",
                params={"requestid": qbo_request_id(key)},
                body=body,
                write=True,
            )
        except _ITEM_ERRORS as exc:
            return ItemResult(request.intent_id, error=exc, status_code=exc.status_code)
        return self._created(request, data.get(kind), 200)

    def _created(self, request: PaymentRequest, raw: Any, status: int) -> ItemResult:
        if not isinstance(raw, dict) or not raw.get("Id"):
            return ItemResult(
                request.intent_id,
                error=OutcomeUnknown(
                    f"QuickBooks answered {status} without a {_PAY_KIND[request.document_type]} Id"
                ),
                status_code=status,
            )
        return ItemResult(request.intent_id, payment=self._remote(raw, request), status_code=status)

    def _create_batch(self, batch: Sequence[PaymentRequest], key: str) -> list[ItemResult]:
        items: list[dict[str, Any]] = []
        early: dict[int, ItemResult] = {}
        for n, request in enumerate(batch, start=1):
            try:
                body = self.payload(request)
            except _ITEM_ERRORS as exc:
                early[n] = ItemResult(request.intent_id, error=exc)
                continue
            kind = _PAY_KIND[request.document_type]
            items.append({"bId": f"b{n}", "operation": "create", kind: body})
        answers: dict[str, dict[str, Any]] = {}
        if items:
            data = self._call(
                "POST",
                "/batch",
                params={"requestid": qbo_request_id(key, BATCH_REQUEST_ID_MAX)},
                body={"BatchItemRequest": items},
                write=True,
            )
            for answer in data.get("BatchItemResponse") or []:
                if isinstance(answer, dict):
                    answers[str(answer.get("bId"))] = answer
        results: list[ItemResult] = []
        for n, request in enumerate(batch, start=1):
            if n in early:
                results.append(early[n])
                continue
            answer = answers.get(f"b{n}")
            fault = _fault_of(answer) if answer is not None else None
            if fault is not None:
                err = translate_quickbooks_error(
                    _effective_status(200, fault), fault.code, fault.message, write=True
                )
                err.status_code = 200
                results.append(ItemResult(request.intent_id, error=err, status_code=200))
            else:
                kind = _PAY_KIND[request.document_type]
                results.append(self._created(request, (answer or {}).get(kind), 200))
        return results

    def _verify(
        self, batch: Sequence[PaymentRequest], results: list[ItemResult]
    ) -> list[ItemResult]:
        """Read the created payments back: a replayed requestid may name a dead one (§5)."""
        wanted: dict[str, list[str]] = {}
        for request, result in zip(batch, results, strict=True):
            if result.payment is not None:
                kind = _PAY_KIND[request.document_type]
                wanted.setdefault(kind, []).append(result.payment.remote_id)
        if not wanted:
            return results
        alive: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            for kind, ids in wanted.items():
                listed = ", ".join(_quote(i) for i in dict.fromkeys(ids))
                for raw in (
                    self._query(f"SELECT * FROM {kind} WHERE Id IN ({listed})").get(kind) or []
                ):
                    alive[(kind, str(raw.get("Id")))] = raw
        except ConnectorError as exc:
            # Created (or replayed) but unconfirmed: the engine looks it up before anything.
            return [
                ItemResult(
                    r.intent_id,
                    error=OutcomeUnknown(
                        f"payment {r.payment.remote_id} answered, but reading it back failed "
                        f"({exc.code}: {exc.message})"
                    ),
                    status_code=r.status_code,
                )
                if r.payment is not None
                else r
                for r in results
            ]
        out: list[ItemResult] = []
        for request, result in zip(batch, results, strict=True):
            if result.payment is None:
                out.append(result)
                continue
            kind = _PAY_KIND[request.document_type]
            raw = alive.get((kind, result.payment.remote_id))
            if raw is None or _is_voided(raw):
                what = "voided" if raw is not None else "deleted"
                log.warning(
                    "quickbooks_replayed_dead_payment",
                    intent=request.intent_id,
                    payment=result.payment.remote_id,
                    state=what,
                )
                out.append(
                    ItemResult(
                        request.intent_id,
                        error=StaleRowVersion(
                            f"requestid {qbo_request_id(request.provider_key)} answered with "
                            f"{kind} {result.payment.remote_id}, which is {what} in QuickBooks: "
                            f"a replay of an earlier answer; look up, then send under a new key",
                            provider_code="replayed_dead_payment",
                            status_code=result.status_code,
                        ),
                        status_code=result.status_code,
                    )
                )
            else:
                out.append(
                    ItemResult(
                        request.intent_id,
                        payment=self._remote(raw, request),
                        status_code=result.status_code,
                    )
                )
        return out

    def find_payment(self, request: PaymentRequest) -> list[RemotePayment]:
        """Payments (bill payments) of the document's customer (vendor) on the payment
        date that carry our reference and are linked to the document(s); voided ones as
        ``status="deleted"`` (deleted ones are gone from queries, §7)."""
        return self.find_payments([request])[request.intent_id]

    def find_payments(self, requests: Sequence[PaymentRequest]) -> dict[str, list[RemotePayment]]:
        """:meth:`find_payment` for many requests: one query per payment kind and date.

        The query language has no ``OR`` (§7) and the reference's fields are not known
        to be filterable, so the lookup stays the one :meth:`find_payment` always made —
        the payments of the customers (vendors) on the date — with ``IN`` over the
        parties (``CustomerRef IN ('20', '24')``; §7 recommends ``IN`` for multi-id
        lookups, that it works on a Ref is unconfirmed) and our reference matched here.
        A request without its contact gets it from a batched read of its documents.
        """
        found: dict[str, list[RemotePayment]] = {r.intent_id: [] for r in requests}
        parties = self._parties(requests)
        groups: dict[tuple[str, str, bool], list[PaymentRequest]] = {}
        for request in requests:
            key = (
                _PAY_KIND[request.document_type],
                request.transaction_date.isoformat(),
                parties.get(request.intent_id) is not None,
            )
            groups.setdefault(key, []).append(request)
        for (kind, day, by_party), members in groups.items():
            names = list(dict.fromkeys(str(parties[r.intent_id]) for r in members if by_party))
            chunks = [names[i : i + PARTY_IN_MAX] for i in range(0, len(names), PARTY_IN_MAX)]
            for chunk in chunks or [[]]:
                conditions = [f"TxnDate = {_quote(day)}"]
                if len(chunk) == 1:
                    conditions.insert(0, f"{_PARTY_FIELD[kind]} = {_quote(chunk[0])}")
                elif chunk:
                    listed = ", ".join(_quote(n) for n in chunk)
                    conditions.insert(0, f"{_PARTY_FIELD[kind]} IN ({listed})")
                asked = set(chunk)
                for raw in self._query_all(kind, " AND ".join(conditions)):
                    party = str((raw.get(_PARTY_FIELD[kind]) or {}).get("value") or "")
                    for request in members:
                        if by_party and (
                            parties[request.intent_id] not in asked
                            or parties[request.intent_id] != party
                        ):
                            continue
                        if not self._carries(raw, request.reference):
                            continue
                        payment = self._remote(raw, request)
                        if payment.status == "deleted" or payment.allocations:
                            # A voided payment has no lines left: our reference identifies it.
                            found[request.intent_id].append(payment)
        return found

    def _parties(self, requests: Sequence[PaymentRequest]) -> dict[str, str | None]:
        """Each request's customer (vendor): its own, else its document's (one batched
        read per document kind); None when the document cannot be read."""
        parties: dict[str, str | None] = {}
        missing: dict[str, list[PaymentRequest]] = {}
        for request in requests:
            if request.contact_remote_id:
                parties[request.intent_id] = str(request.contact_remote_id)
            else:
                missing.setdefault(request.document_type, []).append(request)
        for kind, members in missing.items():
            docs = self.get_documents([r.document_remote_id for r in members], kind)
            for request in members:
                doc = docs.get(request.document_remote_id)
                parties[request.intent_id] = doc.contact_remote_id if doc is not None else None
        return parties


def _allocations(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """``allocations[]`` of a Payment/BillPayment from ``Line[].LinkedTxn``."""
    out: list[dict[str, Any]] = []
    for line in raw.get("Line") or []:
        amount = to_decimal((line or {}).get("Amount") or 0)
        for link in (line or {}).get("LinkedTxn") or []:
            txn_type = str(link.get("TxnType") or "")
            out.append(
                {
                    "id": str(link.get("TxnId")),
                    "type": _ALLOCATION_TYPES.get(txn_type, txn_type.lower()),
                    "amount": amount,
                }
            )
    return out
