"""NetSuite adapter: invoices, vendor bills and payments through SuiteTalk REST.

Reads go through SuiteQL (``POST query/v1/suiteql``, ``Prefer: transient``) on
``lastmodifieddate``; the engine's fresh reads of one document use the record API
(``GET record/v1/invoice|vendorBill/{id}``), plus SuiteQL for a bill's open amount,
which REST does not show. Writes are ``POST record/v1/customerPayment`` (AR) and
``vendorPayment`` (AP), one payment per request, answered 204 with the new id in
``Location``.

Idempotency: synchronous NetSuite writes take no idempotency key. The intent's
provider key travels as the payment's ``externalId`` (unique per record type, so a
second create with it is refused and then adopted) and our reference as its
``memo``; :meth:`NetSuiteAdapter.find_payment` looks both up before any resend.

Authentication: OAuth 2.0 client credentials with a JWT assertion signed by the
certificate's private key (``certificate_id`` + ``private_key_path``), the access
token cached in memory and, encrypted, in the store's ``connection`` row; or
Token-Based Authentication (OAuth 1.0a, HMAC-SHA256) with ``token_id`` +
``token_secret`` when no certificate is configured.

Choices where the fact sheet leaves room:

* A numeric reference is an internal id first, then a number (``tranid`` or
  ``transactionnumber``): NetSuite invoice numbers are numeric too.
* "Invalid Field Value … for the following field: doc" means the document cannot be
  listed in the payment's apply sublist (gone, paid, other entity or currency): it is
  :class:`DocumentNotPayable`, unless a re-read shows the document is gone
  (:class:`DocumentNotFound`).
* SuiteQL date-times are formatted with ``TO_CHAR`` (they render as ``M/D/YYYY``
  otherwise) and read as UTC, as is ``TO_TIMESTAMP`` in the change filter: the
  account's time zone must be UTC for second-exact change markers (the pull engine
  re-reads an overlap window).
* A voided payment is returned by :meth:`NetSuiteAdapter.find_payment` as
  ``deleted``; deleted payments are not visible to SuiteQL's ``transaction`` table.
* The account's concurrency limit is kept per process with a semaphore of
  ``capabilities.concurrency`` slots per account; a 429 is :class:`RateLimited`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import tomllib
import warnings
from binascii import b2a_base64
from collections.abc import Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import authlib.deprecate  # noqa: F401  (its "always" filter must be in place before ours)
import httpx
from authlib.integrations.base_client.errors import OAuthError
from authlib.oauth1.rfc5849.signature import generate_signature_base_string
from authlib.oauth1.rfc5849.util import escape
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey
from sqlmodel import SQLModel, select

with warnings.catch_warnings():
    # Authlib >= 1.7 nudges towards the httpx2 fork but fully supports httpx (see http.py).
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import OAuth1Auth, OAuth2Client

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
from connector.clock import Clock, SystemClock
from connector.config import ConnectionSettings
from connector.crypto import open_value, seal_value
from connector.errors import (
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
from connector.http import ProviderHTTP, grant_fingerprint
from connector.logging import get_logger, register_secret
from connector.mapping import Mapping_, MappingError, parse_mapping
from connector.mapping import _merge as merge_mapping
from connector.money import quantize
from connector.schema import Bill, Contact, Invoice, LedgerAccount, Payment
from connector.state import ConnectionRecord
from connector.store import Store, dialect_insert

__all__ = [
    "NETSUITE_ERROR_TABLE",
    "NetSuiteAdapter",
    "NetSuiteErrorRule",
    "NetSuiteMapping",
    "load_connection_mapping",
    "load_netsuite_mapping",
    "netsuite_error_rule",
    "translate_netsuite_error",
]

log = get_logger("connector.netsuite")

REST = "/services/rest"
RECORD = f"{REST}/record/v1"
SUITEQL = f"{REST}/query/v1/suiteql"
#: The scope our client-credentials assertion asks for (REST web services only).
SCOPE = "rest_webservices"
#: Lifetime of a client assertion: Oracle wants ``exp`` under iat + 60 min; a
#: short one limits what a leaked assertion is worth.
ASSERTION_LIFETIME = 300
#: Refetch the access token this long before it expires, so none dies in flight.
TOKEN_EXPIRY_MARGIN = timedelta(seconds=60)
#: Longest wait for one of the account's concurrency slots before giving up as
#: rate limited (nothing was sent).
SLOT_WAIT_SECONDS = 60.0
#: SuiteQL's largest page (fact sheet §3).
MAX_PAGE = 1000
#: Values in one SuiteQL ``IN (…)`` list of a batched read (documents, numbers).
IN_LIST_MAX = 500
#: Requests looked up by one SuiteQL query in :meth:`NetSuiteAdapter.find_payments`.
LOOKUP_CHUNK = 50

_DIGITS = re.compile(r"^\d+$")
_KEY_VERSION = re.compile(r"-v\d+$")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9-]+$")
_DUPLICATE = re.compile(r"This entity already exists", re.IGNORECASE)
_DOC_PATH = r"^apply\.items\[\d+\]\.doc"
_ACCOUNT_PATH = r"^account"

_RECORD_TYPE = {"invoice": "invoice", "bill": "vendorBill"}
_PAYMENT_RECORD = {"invoice": "customerPayment", "bill": "vendorPayment"}
_TRAN_TYPE = {"invoice": "CustInvc", "bill": "VendBill"}
_PAYMENT_TYPE = {"invoice": "CustPymt", "bill": "VendPymt"}
_DOC_KIND = {"CustInvc": "invoice", "VendBill": "bill"}
_WRITERS = {"invoice": "customer_payment", "bill": "vendor_payment"}
#: The body field of a payment's total (customerPayment "Payment Amount", vendorPayment
#: "Amount", fact sheet §1/§2).
AMOUNT_FIELD = {"invoice": "payment", "bill": "total"}

WRITE_FIELDS = frozenset(
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
        # derived by the adapter: total_amount when the payment leaves something
        # unapplied, else None (the vendorPayment body then carries no total)
        "unapplied_total",
    }
)
#: Keys the write expressions build with JMESPath multi-select hashes (the apply
#: line ``{doc: {id: …}, apply: `true`, amount: …}``); they are not request fields.
PAYLOAD_KEYS = frozenset({"doc", "id", "apply"})
MODELS: dict[str, type[SQLModel]] = {
    "invoice": Invoice,
    "bill": Bill,
    "payment": Payment,
    "contact": Contact,
    "ledger_account": LedgerAccount,
}

# -- SuiteQL ---------------------------------------------------------------------------
# Dates and date-times come back in the account's date format (M/D/YYYY, no time)
# unless formatted: every one is selected through TO_CHAR.
_STAMP = """TO_CHAR({col}, 'YYYY-MM-DD"T"HH24:MI:SS')"""
_DAY = "TO_CHAR({col}, 'YYYY-MM-DD')"
_DOCUMENT_COLUMNS = ", ".join(
    [
        "t.id",
        "t.tranid",
        "t.status",
        "t.foreigntotal",
        "t.foreignamountunpaid",
        "t.foreignamountremaining",
        "t.exchangerate",
        "t.memo",
        "t.entity",
        "BUILTIN.DF(t.entity) entityname",
        "c.symbol currencycode",
        f"{_DAY.format(col='t.trandate')} trandate",
        f"{_DAY.format(col='t.duedate')} duedate",
        f"{_STAMP.format(col='t.lastmodifieddate')} lastmodified",
    ]
)
_PAYMENT_COLUMNS = ", ".join(
    [
        "t.id",
        "t.type",
        "t.status",
        "t.foreigntotal",
        "t.exchangerate",
        "t.memo",
        "t.externalid",
        "t.account",
        "c.symbol currencycode",
        f"{_DAY.format(col='t.trandate')} trandate",
        f"{_STAMP.format(col='t.lastmodifieddate')} lastmodified",
    ]
)
_ENTITY_COLUMNS = ", ".join(
    [
        "e.id",
        "e.entityid",
        "e.companyname",
        "e.altname",
        "e.isinactive",
        "c.symbol currencycode",
        f"{_STAMP.format(col='e.lastmodifieddate')} lastmodified",
    ]
)


def _sql_text(value: str) -> str:
    """A SuiteQL string literal (Oracle quoting: ``'`` doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _sql_id(value: str) -> str:
    """An internal id for SuiteQL; refuses anything but digits (no injection)."""
    text = value.strip()
    if not _DIGITS.match(text):
        raise DocumentNotFound(f"{value!r} is not a NetSuite internal id")
    return text


#: DeletedRecord.recordtypeid values per unified entity (lower-case record type ids).
_DELETED_TYPES: dict[str, tuple[str, ...]] = {
    "invoice": ("invoice",),
    "bill": ("vendorbill",),
    "payment": ("customerpayment", "vendorpayment"),
}


def _since_clause(column: str, since: datetime | None, tz: tzinfo = UTC) -> str:
    if since is None:
        return ""
    # SuiteQL compares in the account's time zone, like the values it shows.
    stamp = since.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    return f" AND {column} >= TO_TIMESTAMP('{stamp}', 'YYYY-MM-DD HH24:MI:SS')"


# -- the mapping -----------------------------------------------------------------------
#: Top-level tables a connection may override: mapping.OVERRIDABLE plus the REST
#: record readers this adapter adds.
OVERRIDABLE = frozenset({"read", "record", "write", "enums", "constants"})


@dataclass(frozen=True)
class NetSuiteMapping:
    """The compiled ``netsuite.toml``: SuiteQL row readers, record readers, two writers."""

    rows: Mapping_
    records: Mapping_
    writers: dict[str, Mapping_]  # customer_payment | vendor_payment

    def write(self, document_type: str, request: dict[str, Any]) -> dict[str, Any]:
        """The create body of the payment for an invoice (AR) or a bill (AP)."""
        return self.writers[_WRITERS[document_type]].write_payment(request)


def load_netsuite_mapping(
    path: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str = "connection mapping",
) -> NetSuiteMapping:
    """Load and check the NetSuite mapping (the shipped one, or the file at ``path``).

    ``parse_mapping`` knows one ``[read]`` and one ``[write.payment]`` table; the record
    readers and each write table are compiled through it one at a time.

    Args:
        overrides: a connection's ``mapping`` table, merged over the file key by key
            (e.g. ``write.vendor_payment.memo``); a mistake names ``overrides_source``.

    Raises:
        MappingError: naming the file (or the connection), the key and the problem.
    """
    if path is None:
        source = "connector/mappings/netsuite.toml"
        text = (resources.files("connector") / "mappings" / "netsuite.toml").read_text("utf-8")
    else:
        source = str(path)
        text = path.read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(source, "-", f"not valid TOML ({exc})") from None
    if overrides:
        unknown = set(overrides) - OVERRIDABLE
        if unknown:
            raise MappingError(
                overrides_source,
                sorted(unknown)[0],
                f"cannot be overridden; use one of {sorted(OVERRIDABLE)}",
            )
        doc = merge_mapping(doc, overrides, "", overrides_source)
        source = overrides_source
    fields = WRITE_FIELDS | PAYLOAD_KEYS
    base = {"provider": doc.get("provider"), "enums": doc.get("enums", {})}
    rows = parse_mapping(
        {**base, "read": doc.get("read", {})}, source=source, models=MODELS, write_fields=fields
    )
    records = parse_mapping(
        {**base, "read": doc.get("record", {})},
        source=f"{source} [record]",
        models=MODELS,
        write_fields=fields,
    )
    for entity in ("invoice", "bill", "payment"):
        if entity not in records.readers:
            raise MappingError(source, f"record.{entity}", "missing (get_document needs it)")
    writes = doc.get("write", {})
    writers: dict[str, Mapping_] = {}
    for name in _WRITERS.values():
        table = writes.get(name)
        if not isinstance(table, dict) or not table:
            raise MappingError(source, f"write.{name}", "missing or empty")
        try:
            writers[name] = parse_mapping(
                {**base, "write": {"payment": table}},
                source=source,
                models=MODELS,
                write_fields=fields,
            )
        except MappingError as exc:
            raise MappingError(
                source, exc.key.replace("write.payment", f"write.{name}", 1), exc.problem
            ) from None
    return NetSuiteMapping(rows, records, writers)


def load_connection_mapping(settings: ConnectionSettings) -> NetSuiteMapping:
    """The shipped NetSuite mapping with this connection's overrides, validated."""
    return load_netsuite_mapping(
        overrides=settings.mapping,
        overrides_source=f"connections[id={settings.id!r}].mapping",
    )


# -- the error decision table ------------------------------------------------------------
@dataclass(frozen=True)
class NetSuiteErrorRule:
    """One row: (HTTP status, ``o:errorCode``, detail pattern, error path) → unified error."""

    status: int | None  # HTTP status, None = any
    code: str | None  # o:errorCode, None = any
    pattern: str  # regex on the detail text
    error: type[ConnectorError]
    action: str  # what the engine does; documentation for people
    path: str | None = None  # regex on o:errorPath, None = any


R = NetSuiteErrorRule
# Most specific first: the first matching row wins.
NETSUITE_ERROR_TABLE: tuple[NetSuiteErrorRule, ...] = (
    R(
        400,
        "USER_ERROR",
        r"This entity already exists",
        OutcomeUnknown,
        "a payment with our externalId exists: the adapter adopts it after checking its "
        "document and amount; otherwise the engine looks it up before anything else",
    ),
    R(
        400,
        "USER_ERROR",
        r"cannot apply .*amount due|exceeds the amount due|more than the amount due",
        AmountExceedsBalance,
        "re-read the document: someone else may have paid part of it",
    ),
    R(
        400,
        "USER_ERROR",
        r"total applied .*exceeds the payment amount",
        ValidationRejected,
        "bug-level: our payment amount is below what we apply; park, alert",
    ),
    R(
        400,
        "USER_ERROR",
        r"locked by a user defined workflow",
        DocumentNotPayable,
        "re-read the document: a workflow (RCRD_LOCKED_BY_WF) holds it; a person unlocks",
    ),
    R(
        400,
        "USER_ERROR",
        r"is not open|cannot create a payment",
        DocumentNotPayable,
        "re-read the document: paid → already_settled, else rejected",
    ),
    R(
        None,
        "RCRD_HAS_BEEN_CHANGED",
        r".*",
        StaleRowVersion,
        "look our payment up, then decide again from a fresh read under a new key version",
    ),
    R(
        None,
        None,
        r"Record has been changed|Record was changed by a different user",
        StaleRowVersion,
        "look our payment up, then decide again from a fresh read under a new key version",
    ),
    R(
        400,
        "USER_ERROR",
        r".*",
        ValidationRejected,
        "rejected with NetSuite's message (missing value, closed period, subsidiary…)",
    ),
    R(
        400,
        "INVALID_CONTENT",
        r".*",
        DocumentNotPayable,
        "the document cannot be listed in the payment's apply sublist (gone, paid, other "
        "entity or currency): the adapter re-reads it (gone → document_not_found), the "
        "engine then decides paid → already_settled, else rejected",
        path=_DOC_PATH,
    ),
    R(
        400,
        "INVALID_KEY_OR_REF",
        r".*",
        DocumentNotPayable,
        "as INVALID_CONTENT on the document",
        path=_DOC_PATH,
    ),
    R(
        400,
        "INVALID_CONTENT",
        r"for the following field: doc\b",
        DocumentNotPayable,
        "as INVALID_CONTENT on the document (reported without o:errorPath)",
    ),
    R(
        400,
        "INVALID_KEY_OR_REF",
        r"Invalid (doc|transaction|invoice|bill) reference key",
        DocumentNotPayable,
        "as INVALID_CONTENT on the document (SOAP/SuiteScript wording)",
    ),
    R(
        400,
        "INVALID_CONTENT",
        r".*",
        ValidationRejected,
        "rejected: fix payment_account_code / bill_payment_account_code (bank account id)",
        path=_ACCOUNT_PATH,
    ),
    R(
        400,
        "INVALID_KEY_OR_REF",
        r".*",
        ValidationRejected,
        "rejected: fix payment_account_code / bill_payment_account_code (bank account id)",
        path=_ACCOUNT_PATH,
    ),
    R(
        400,
        "INVALID_CONTENT",
        r".*",
        ValidationRejected,
        "rejected: an invalid reference or value (customer, currency…); the role may not see it",
    ),
    R(
        400,
        "INVALID_KEY_OR_REF",
        r".*",
        ValidationRejected,
        "rejected: an invalid reference",
    ),
    R(400, "INVALID_FLD_VALUE", r".*", ValidationRejected, "rejected: a value out of range"),
    R(
        400,
        "IDEMPOTENCY_ERROR",
        r".*",
        ValidationRejected,
        "bug-level: an async idempotency key was reused (we send none); park, alert",
    ),
    R(
        None,
        "SSS_REQUEST_LIMIT_EXCEEDED",
        r".*",
        RateLimited,
        "the account's concurrency limit (RESTlet wording): wait, then send again",
    ),
    R(
        None,
        "WS_CONCUR_SESSION_DISALLWD",
        r".*",
        RateLimited,
        "the account's concurrency limit (SOAP wording): wait, then send again",
    ),
    R(
        None,
        "WS_REQUEST_BLOCKED",
        r".*",
        RateLimited,
        "the account's concurrency limit (SOAP wording): wait, then send again",
    ),
    R(
        None,
        "RCRD_LOCKED_BY_WF",
        r".*",
        DocumentNotPayable,
        "re-read the document: a workflow holds it; a person unlocks",
    ),
    R(
        400,
        "INVALID_PARAMETER",
        r".*",
        ValidationRejected,
        "bug-level: a query parameter or SuiteQL NetSuite cannot run; rejected",
    ),
    R(
        400,
        "NONEXISTENT_FIELD",
        r".*",
        ValidationRejected,
        "bug-level: a field the record type does not have; rejected",
    ),
    R(
        400,
        None,
        r".*",
        ValidationRejected,
        "bug-level (INVALID_HEADER…): we sent a bad request; rejected with NetSuite's message",
    ),
    R(
        401,
        None,
        r"token.*expired|expired.*token",
        AuthExpired,
        "fetch a new access token and send again",
    ),
    R(
        401,
        "INVALID_LOGIN",
        r".*",
        AuthRevoked,
        "refused even with a fresh token (or with TBA): park the connection, a person "
        "re-authorizes the integration or fixes the role",
    ),
    R(401, None, r".*", AuthRevoked, "park the connection, a person re-authorizes"),
    R(
        403,
        "INSUFFICIENT_PERMISSION",
        r".*",
        AuthRevoked,
        "park the connection; the integration's role needs the permission",
    ),
    R(403, None, r".*", AuthRevoked, "park the connection; a person fixes the access"),
    R(
        404,
        "NONEXISTENT_ID",
        r".*",
        DocumentNotFound,
        "rejected: no such record (or the role cannot see it)",
    ),
    R(
        404,
        None,
        r".*",
        DocumentNotFound,
        "rejected: no such record (INVALID_RCRD_TYPE / INVALID_URL are bugs of ours)",
    ),
    R(
        405,
        None,
        r".*",
        ValidationRejected,
        "bug-level: INVALID_METHOD; rejected",
    ),
    R(
        415,
        None,
        r".*",
        ValidationRejected,
        "bug-level: unsupported media type; rejected",
    ),
    R(
        429,
        "CONCURRENCY_LIMIT_EXCEEDED",
        r".*",
        RateLimited,
        "the account's concurrency limit: the request was blocked, not run; wait, send again",
    ),
    R(429, None, r".*", RateLimited, "Too Many Requests: not run; wait, send again"),
    R(
        500,
        None,
        r".*",
        Transient,
        "UNEXPECTED_ERROR: reads retry later; writes are outcome unknown → look up first",
    ),
    R(503, None, r".*", Transient, "reads retry later; writes are outcome unknown"),
)
del R


def netsuite_error_rule(
    status: int, code: str | None, detail: str, path: str | None = None
) -> NetSuiteErrorRule | None:
    """The first row of :data:`NETSUITE_ERROR_TABLE` matching a failure, if any."""
    for rule in NETSUITE_ERROR_TABLE:
        if rule.status is not None and rule.status != status:
            continue
        if rule.code is not None and rule.code != code:
            continue
        if rule.path is not None and not re.search(rule.path, path or ""):
            continue
        if re.search(rule.pattern, detail or "", re.IGNORECASE):
            return rule
    return None


def translate_netsuite_error(
    status: int,
    code: str | None,
    detail: str,
    *,
    path: str | None = None,
    write: bool = False,
) -> ConnectorError:
    """Turn NetSuite's status, ``o:errorCode``, detail and error path into our taxonomy.

    The one boundary for NetSuite failures; on a write a failure that leaves the outcome
    open (5xx) becomes :class:`OutcomeUnknown`.
    """
    rule = netsuite_error_rule(status, code, detail, path)
    if rule is not None:
        cls = rule.error
    else:
        cls = (OutcomeUnknown if write else Transient) if status >= 500 else ValidationRejected
    if write and cls is Transient:
        cls = OutcomeUnknown
    return cls(
        detail or f"HTTP {status}",
        provider_code=code or str(status),
        provider_message=detail,
        status_code=status,
    )


# -- authentication ----------------------------------------------------------------------
_slot_guard = threading.Lock()
_slots: dict[str, threading.BoundedSemaphore] = {}
_token_locks: dict[str, threading.Lock] = {}


def _account_slots(key: str, limit: int) -> threading.BoundedSemaphore:
    """The process-wide slots of one NetSuite account (the limit is per account)."""
    with _slot_guard:
        return _slots.setdefault(key, threading.BoundedSemaphore(limit))


def _token_lock(key: str) -> threading.Lock:
    with _slot_guard:
        return _token_locks.setdefault(key, threading.Lock())


def sign_hmac_sha256(client: Any, request: Any) -> str:
    """HMAC-SHA256 OAuth 1.0a signature (NetSuite TBA; Authlib ships HMAC-SHA1 only)."""
    base = generate_signature_base_string(request)
    key = f"{escape(client.client_secret or '')}&{escape(client.token_secret or '')}"
    digest = hmac.new(key.encode(), base.encode(), hashlib.sha256).digest()
    return b2a_base64(digest)[:-1].decode("ascii")


class _TBAAuth(OAuth1Auth):
    """Token-Based Authentication: OAuth 1.0a signed with HMAC-SHA256 by Authlib.

    The JSON body is included in the signed request (``force_include_body``), as
    NetSuite clients do; Authlib then adds its ``oauth_body_hash``.
    """

    SIGNATURE_METHODS = {**OAuth1Auth.SIGNATURE_METHODS, "HMAC-SHA256": sign_hmac_sha256}


class _NetSuiteAssertion(PrivateKeyJWT):
    """``private_key_jwt`` as NetSuite wants it: ``kid`` = certificate id, ``scope`` claim."""

    name = "netsuite_client_credentials"

    def __init__(self, token_endpoint: str, certificate_id: str, alg: str) -> None:
        super().__init__(token_endpoint, headers={"kid": certificate_id, "typ": "JWT"}, alg=alg)

    def sign(self, auth: Any, token_endpoint: str) -> str:
        token: str = private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            alg=self.alg,
            claims={"scope": SCOPE},
            header=dict(self.headers),
            expires_in=ASSERTION_LIFETIME,
        )
        return token


def _signing_key(path: str) -> tuple[ECKey | RSAKey, str]:
    """The certificate's private key and its JWS algorithm (ES256/384/512 or PS256)."""
    try:
        pem = Path(path).read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AuthRevoked(
            f"cannot read the NetSuite private key at {path}: {type(exc).__name__}; "
            f"point private_key_path at the PEM of the certificate mapped in NetSuite"
        ) from exc
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(key.curve.name)
        if alg is None:
            raise AuthRevoked(f"NetSuite takes EC keys on P-256/384/521, not {key.curve.name}")
        return ECKey.import_key(pem), alg
    if isinstance(key, rsa.RSAPrivateKey):
        return RSAKey.import_key(pem), "PS256"  # NetSuite accepts PS*, not RS*
    raise AuthRevoked("NetSuite certificates are RSA or EC keys")


class NetSuiteCredentials:
    """One connection's NetSuite credentials and its row in the store.

    Client credentials (JWT): the access token lives in memory and, sealed with the
    store's cipher, in the ``connection`` row. A fetch runs inside one database
    transaction holding that row's lock (``FOR UPDATE`` on PostgreSQL, SQLite's single
    writer), so threads and processes fetch one token between them: a second fetcher
    waits, then finds the stored token and uses it. There is no refresh token; an
    expired or refused token is replaced by a new client-credentials grant.

    A grant the ledger refuses (``invalid_grant``, ``invalid_client``) or, with TBA, a
    401 parks the connection (``needs_reauth``) until the config names other
    credentials (a new certificate id or token id).
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        store: Store,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or SystemClock()
        self.transport = transport
        self.mode = "jwt" if settings.certificate_id and settings.private_key_path else "tba"
        if self.mode == "tba" and not (settings.token_id and settings.token_secret):
            raise ValueError(
                f"connection {settings.id!r}: NetSuite needs certificate_id + private_key_path "
                f"(OAuth 2.0 client credentials) or token_id + token_secret (TBA)"
            )
        identity = settings.certificate_id if self.mode == "jwt" else settings.token_id
        self.fingerprint = grant_fingerprint(
            f"netsuite:{self.mode}:{settings.tenant}:{settings.client_id}:{identity}"
        )
        self._lock = _token_lock(f"{store.url}|{settings.id}")
        self._cached: tuple[str, datetime] | None = None

    # -- the connection row -------------------------------------------------------------
    def _row(self, session: Any) -> ConnectionRecord:
        """The connection's row, created or reset for new credentials, under its lock."""
        now = self.clock.now()
        session.execute(
            dialect_insert(session, ConnectionRecord.__table__)  # type: ignore[attr-defined]
            .values(
                id=self.settings.id,
                provider=self.settings.provider,
                tenant=self.settings.tenant,
                status="active",
                grant_fingerprint=self.fingerprint,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )
        query = select(ConnectionRecord).where(ConnectionRecord.id == self.settings.id)
        if not self.store.is_sqlite:
            query = query.with_for_update()
        rec: ConnectionRecord = session.exec(query).one()
        if rec.grant_fingerprint != self.fingerprint:
            # New credentials in the config replace whatever state we had.
            rec.grant_fingerprint = self.fingerprint
            rec.refresh_token = None
            rec.access_token = None
            rec.access_token_expires_at = None
            rec.status, rec.status_reason = "active", None
            rec.updated_at = now
            session.add(rec)
        return rec

    def park(self, reason: str) -> None:
        """Mark the connection ``needs_reauth`` (idempotent); drop any stored token."""
        self._cached = None
        with self.store.session() as s:
            rec = self._row(s)
            if rec.status != "needs_reauth":
                rec.status = "needs_reauth"
                rec.status_reason = reason[:512]
            rec.access_token = None
            rec.access_token_expires_at = None
            rec.updated_at = self.clock.now()
            s.add(rec)
        log.error("connection_parked", connection=self.settings.id, reason=reason[:200])

    # -- client credentials ------------------------------------------------------------------
    def _fresh(self, expires_at: datetime | None) -> bool:
        return bool(expires_at and expires_at - TOKEN_EXPIRY_MARGIN > self.clock.now())

    def access_token(self) -> str:
        """A valid access token: from memory, from the store, or a new grant."""
        if self._cached and self._fresh(self._cached[1]):
            return self._cached[0]
        return self.fetch(rejected=None)

    def fetch(self, rejected: str | None) -> str:
        """A new access token, unless another fetcher already replaced ``rejected``.

        Raises:
            AuthRevoked: the ledger refused the grant (the connection is now parked).
            Transient: the token endpoint could not be reached or failed.
        """
        with self._lock:
            self._cached = None
            failure: ConnectorError | None = None
            with self.store.session() as s:
                rec = self._row(s)
                if rec.status == "needs_reauth":
                    raise AuthRevoked(rec.status_reason or "connection needs to be reauthorised")
                current = open_value(self.store.cipher, rec.access_token)
                if current and current != rejected and self._fresh(rec.access_token_expires_at):
                    assert rec.access_token_expires_at is not None
                    register_secret(current)
                    self._cached = (current, rec.access_token_expires_at)
                    return current
                try:
                    token = self._grant()
                except AuthRevoked as exc:
                    # Park in this same transaction; raise once it is committed.
                    rec.status = "needs_reauth"
                    rec.status_reason = (
                        f"NetSuite refused the client-credentials grant ({exc.provider_code}): "
                        f"check the integration, the certificate mapping ({self.settings.certificate_id}) "
                        f"and the role, then restart"
                    )[:512]
                    rec.access_token = None
                    rec.access_token_expires_at = None
                    rec.updated_at = self.clock.now()
                    s.add(rec)
                    failure = exc
                else:
                    access = str(token["access_token"])
                    register_secret(access)
                    expires_in = float(token.get("expires_in", 3600))
                    expires_at = self.clock.now() + timedelta(seconds=expires_in)
                    rec.access_token = seal_value(self.store.cipher, access)
                    rec.access_token_expires_at = expires_at
                    rec.token_refreshed_at = self.clock.now()
                    rec.updated_at = self.clock.now()
                    s.add(rec)
            if failure is not None:
                log.error("connection_parked", connection=self.settings.id, reason=failure.code)
                raise failure
            self._cached = (access, expires_at)
            log.info("token_fetched", connection=self.settings.id, expires_in=expires_in)
            return access

    def _grant(self) -> dict[str, Any]:
        """``POST …/auth/oauth2/v1/token`` with ``grant_type=client_credentials``."""
        assert self.settings.certificate_id and self.settings.private_key_path
        key, alg = _signing_key(self.settings.private_key_path)
        client = OAuth2Client(
            client_id=self.settings.client_id,
            client_secret=key,
            token_endpoint_auth_method=_NetSuiteAssertion(
                self.settings.token_url, self.settings.certificate_id, alg
            ),
            timeout=self.settings.timeout_seconds,
            transport=self.transport,
        )
        try:
            return dict(
                client.fetch_token(self.settings.token_url, grant_type="client_credentials")
            )
        except OAuthError as exc:
            if exc.error in {"invalid_grant", "invalid_client", "unauthorized_client"}:
                raise AuthRevoked(
                    "NetSuite refused the client-credentials grant",
                    provider_code=exc.error,
                    provider_message=exc.description,
                ) from exc
            raise Transient(
                f"token request failed: {exc.error}",
                provider_code=exc.error,
                provider_message=exc.description,
            ) from exc
        except httpx.HTTPError as exc:
            raise Transient(f"token endpoint unreachable: {type(exc).__name__}") from exc
        except ValueError as exc:  # a body that is not a token response (HTML 5xx page…)
            raise Transient(f"token endpoint answered something else: {exc}") from exc
        finally:
            client.close()

    # -- httpx auth ------------------------------------------------------------------------
    def httpx_auth(self) -> httpx.Auth:
        """The request authentication of this connection's mode."""
        if self.mode == "jwt":
            return _BearerAuth(self)
        assert self.settings.token_id and self.settings.token_secret
        register_secret(self.settings.token_secret.get_secret_value())
        return _TBAAuth(
            self.settings.client_id,
            client_secret=self.settings.client_secret.get_secret_value(),
            token=self.settings.token_id,
            token_secret=self.settings.token_secret.get_secret_value(),
            signature_method="HMAC-SHA256",
            realm=self.settings.tenant,
            force_include_body=True,
        )


class _BearerAuth(httpx.Auth):
    """Adds the client-credentials token; on a 401 fetches a new one and sends again.

    A 401 is refused before processing, so the second send cannot apply anything twice.
    """

    def __init__(self, credentials: NetSuiteCredentials) -> None:
        self.credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.credentials.access_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            token = self.credentials.fetch(rejected=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


# -- the adapter ---------------------------------------------------------------------------
class NetSuiteAdapter:
    """The NetSuite implementation of :class:`connector.adapters.base.Adapter`."""

    provider = "netsuite"
    entities: tuple[str, ...] = ("invoice", "bill", "payment", "contact", "ledger_account")
    capabilities = Capabilities(
        max_batch=1,  # one payment per create request (batch writes are async-only)
        concurrency=5,  # the smallest account limit (Standard tier, no SuiteCloud Plus)
        per_minute=600,  # NetSuite has no per-minute quota; concurrency governs
        idempotency="externalId = provider key (unique per record type) + lookup by "
        "externalId/memo before any resend",
        key_window=None,  # synchronous writes take no idempotency key
        max_key_length=255,
        # §1: a customerPayment above what it applies keeps the rest unapplied; §2 lists
        # vendorPayment.unapplied (the same behaviour for vendor payments is unconfirmed).
        unapplied_credit=True,
    )

    def __init__(
        self,
        settings: ConnectionSettings,
        store: Store,
        *,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        mapping: NetSuiteMapping | None = None,
    ) -> None:
        self.settings = settings
        self.mapping = mapping or load_connection_mapping(settings)
        self._tz: tzinfo = ZoneInfo(settings.timezone)
        self.credentials = NetSuiteCredentials(settings, store, clock, transport)
        self.http = ProviderHTTP(
            settings,
            store,
            clock=clock,
            transport=transport,
            auth=self.credentials.httpx_auth(),
            limits=self.capabilities,
        )
        host = urlsplit(settings.base_url).netloc.lower()
        self._slots = _account_slots(
            f"{host}|{settings.tenant.upper()}", self.capabilities.concurrency
        )
        self._currencies: dict[str, str] = {}

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()

    # -- the error boundary ----------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        write: bool = False,
        ok_statuses: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        """Send one request within the account's concurrency limit; translate failures."""
        content = None
        hdrs = dict(headers or {})
        if body is not None:
            content = jsonutil.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if not self._slots.acquire(timeout=SLOT_WAIT_SECONDS):
            raise RateLimited(
                f"all {self.capabilities.concurrency} NetSuite request slots stayed busy",
                retry_after=1.0,
            )
        try:
            # The bearer auth raises AuthRevoked itself (and parks) when the grant is refused.
            response = self.http.request(
                method, path, params=params, content=content, headers=hdrs, write=write
            )
        finally:
            self._slots.release()
        if response.status_code in ok_statuses:
            return response
        err = self._error_from(response, write)
        if isinstance(err, AuthRevoked):
            self.credentials.park(
                f"NetSuite answered {err.status_code} {err.provider_code}: {err.message}"
            )
        raise err

    @staticmethod
    def _error_from(response: httpx.Response, write: bool) -> ConnectorError:
        status = response.status_code
        code: str | None = None
        path: str | None = None
        detail = response.text[:500]
        try:
            data = jsonutil.loads(response.content)
        except ValueError:
            data = None
        if isinstance(data, dict):
            details = [d for d in data.get("o:errorDetails") or [] if isinstance(d, dict)]
            if details:
                first = details[0]
                code = first.get("o:errorCode")
                path = (
                    first.get("o:errorPath")
                    or first.get("o:errorQueryParam")
                    or first.get("o:errorHeader")
                )
                detail = "; ".join(str(d.get("detail") or "") for d in details if d.get("detail"))
            detail = detail or str(data.get("title") or "")
        return translate_netsuite_error(status, code, detail, path=path, write=write)

    def _json(self, response: httpx.Response, write: bool = False) -> Any:
        try:
            return jsonutil.loads(response.content)
        except ValueError as exc:
            raise (OutcomeUnknown if write else Transient)(
                f"HTTP {response.status_code} with a body that is not JSON",
                provider_message=response.text[:300],
                status_code=response.status_code,
            ) from exc

    def _suiteql(self, q: str, *, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
        """One page of a SuiteQL query (a read: safe to retry)."""
        params = {"limit": limit, "offset": offset} if limit is not None else None
        response = self._call(
            "POST", SUITEQL, params=params, body={"q": q}, headers={"Prefer": "transient"}
        )
        data = self._json(response)
        if not isinstance(data, dict):
            raise Transient("SuiteQL answered something that is not a collection")
        # SuiteQL shows date-times in the account's time zone (the connection's
        # `timezone`); the store keeps UTC. TO_CHAR gave us local "YYYY-MM-DDTHH:MM:SS".
        for item in data.get("items") or []:
            local = item.get("lastmodified") if isinstance(item, dict) else None
            if isinstance(local, str) and local and not local.endswith("Z"):
                moment = datetime.fromisoformat(local).replace(tzinfo=self._tz)
                item["lastmodified"] = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return data

    def _rows(self, q: str) -> list[dict[str, Any]]:
        """Every row of a small query (lookups: one page of up to 1000 rows)."""
        return [dict(item) for item in self._suiteql(q).get("items") or []]

    def _all_rows(self, q: str) -> list[dict[str, Any]]:
        """Every row of a query: the first page as :meth:`_rows` asks it (the default
        page is the largest, §3), then ``limit``/``offset`` pages while ``hasMore``."""
        data = self._suiteql(q)
        rows = [dict(item) for item in data.get("items") or []]
        while data.get("hasMore") and data.get("items"):
            data = self._suiteql(q, limit=MAX_PAGE, offset=len(rows))
            rows += [dict(item) for item in data.get("items") or []]
        return rows

    def _first_rows(self, q: str, n: int) -> tuple[list[dict[str, Any]], bool]:
        """The first ``n`` rows of a query (pages of at most 1000), and whether more exist."""
        limit = min(n, MAX_PAGE)
        rows: list[dict[str, Any]] = []
        more = True
        while more and len(rows) < n:
            data = self._suiteql(q, limit=limit, offset=len(rows))
            items = [dict(i) for i in data.get("items") or []]
            rows += items
            more = bool(data.get("hasMore")) and bool(items)
        return rows[:n], more or len(rows) > n

    def _currency_code(self, currency_id: str | None) -> str:
        """ISO code (``currency.symbol``) of a currency internal id, cached per adapter.

        No id (an account without Multiple Currencies leaves the field out) is the
        account's base currency.
        """
        key = currency_id or "base"
        if key not in self._currencies:
            rows = self._rows(
                "SELECT c.id, c.symbol, c.isbasecurrency FROM currency c ORDER BY c.id"
            )
            self._currencies = {str(r["id"]): str(r.get("symbol") or "") for r in rows}
            base = [r for r in rows if str(r.get("isbasecurrency")) == "T"]
            if base:
                self._currencies["base"] = str(base[0].get("symbol") or "")
        code = self._currencies.get(key)
        if not code:
            raise Transient(f"currency {key} is not in NetSuite's currency list")
        return code

    # -- reads ---------------------------------------------------------------------------
    def _id_by_number(self, ref: str, kind: str) -> str:
        text = _sql_text(ref.strip())
        rows = self._rows(
            f"SELECT t.id FROM transaction t WHERE t.type = '{_TRAN_TYPE[kind]}' "
            f"AND (t.tranid = {text} OR t.transactionnumber = {text}) ORDER BY t.id"
        )
        ids = sorted({str(r["id"]) for r in rows if r.get("id")})
        if not ids:
            raise DocumentNotFound(f"no {kind} {ref!r} in NetSuite account {self.settings.tenant}")
        if len(ids) > 1:
            raise DocumentNotFound(
                f"{len(ids)} {kind}s are numbered {ref!r} in NetSuite account "
                f"{self.settings.tenant} (internal ids {', '.join(ids)}): name one by its id"
            )
        return ids[0]

    def _record(self, kind: str, internal_id: str) -> dict[str, Any]:
        response = self._call("GET", f"{RECORD}/{_RECORD_TYPE[kind]}/{internal_id}")
        data = self._json(response)
        if not isinstance(data, dict):
            raise Transient(f"GET {_RECORD_TYPE[kind]}/{internal_id} answered no record")
        return data

    def get_document(self, ref: str, kind: str = "invoice") -> DocumentSnapshot:
        """Fresh read of an invoice or bill by internal id, else by number (``tranid``).

        A numeric ``ref`` is an internal id first (NetSuite invoice numbers are numeric
        too): only when no such record exists is it looked up as a number.
        """
        if kind not in _RECORD_TYPE:
            raise ValueError(f"unknown document kind {kind!r}")
        ref = ref.strip()
        raw: dict[str, Any] | None = None
        if _DIGITS.match(ref):
            try:
                raw = self._record(kind, ref)
            except DocumentNotFound:
                raw = None
        if raw is None:
            raw = self._record(kind, self._id_by_number(ref, kind))
        internal_id = str(raw.get("id"))
        query: dict[str, Any] = {}
        if kind == "bill":
            rows = self._rows(
                "SELECT t.id, t.foreignamountunpaid, t.foreignamountremaining FROM transaction t "
                f"WHERE t.id = {_sql_id(internal_id)} AND t.type = 'VendBill'"
            )
            if not rows:
                raise DocumentNotFound(f"bill {internal_id} is not in SuiteQL's transactions")
            query = rows[0]
        return self._document(kind, raw, query)

    def _document(self, kind: str, raw: dict[str, Any], query: dict[str, Any]) -> DocumentSnapshot:
        """The snapshot of a REST record (and, for a bill, its SuiteQL open amount)."""
        currency = self._currency_code((raw.get("currency") or {}).get("id"))
        view = {"record": raw, "query": query, "currency": currency}
        record = self.mapping.records.reader(kind).read(view)
        self._settle_amounts(record, currency, "balance")
        status = raw.get("status") or {}
        return DocumentSnapshot(
            remote_id=str(record["remote_id"]),
            number=record.get("number"),
            kind=kind,
            status=record["status"],
            provider_status=str(status.get("refName") or status.get("id") or "unknown"),
            currency=currency,
            total=record["total"],
            balance=record["balance"],
            row_version=record.get("row_version"),
            record=record,
            contact_remote_id=(raw.get("entity") or {}).get("id"),
        )

    def get_documents(
        self, remote_ids: Sequence[str], kind: str = "invoice"
    ) -> dict[str, DocumentSnapshot]:
        """Fresh reads of many invoices or bills, keyed by the ref as given.

        :meth:`get_document` reads the REST record (SuiteQL does not show everything the
        record does), so this does the same with ``capabilities.concurrency`` GETs in
        flight (within the account's slots). Refs that are no internal id are resolved
        as numbers with one SuiteQL query (a number several documents carry is left
        out, as get_document refuses it); the open amounts of bills come from one
        SuiteQL query. Refs that name nothing are absent.
        """
        if kind not in _RECORD_TYPE:
            raise ValueError(f"unknown document kind {kind!r}")
        wanted = {ref: ref.strip() for ref in remote_ids if ref and ref.strip()}
        refs = list(dict.fromkeys(wanted.values()))
        records = self._records(kind, [r for r in refs if _DIGITS.match(r)])
        numbered = self._ids_by_number([r for r in refs if r not in records], kind)
        records.update(
            self._records(kind, [i for i in dict.fromkeys(numbered.values()) if i not in records])
        )
        raws: dict[str, dict[str, Any]] = {}
        for ref in refs:
            raw = records.get(ref) if ref in records else records.get(numbered.get(ref, ""))
            if raw is not None:
                raws[ref] = raw
        open_rows: dict[str, dict[str, Any]] = {}
        if kind == "bill" and raws:
            ids = list(dict.fromkeys(_sql_id(str(raw.get("id"))) for raw in raws.values()))
            for start in range(0, len(ids), IN_LIST_MAX):
                listed = ", ".join(ids[start : start + IN_LIST_MAX])
                for row in self._all_rows(
                    "SELECT t.id, t.foreignamountunpaid, t.foreignamountremaining "
                    f"FROM transaction t WHERE t.id IN ({listed}) AND t.type = 'VendBill' "
                    "ORDER BY t.id"
                ):
                    open_rows[str(row.get("id"))] = row
        snapshots: dict[str, DocumentSnapshot] = {}
        for ref, raw in raws.items():
            query: dict[str, Any] = {}
            if kind == "bill":
                open_row = open_rows.get(str(raw.get("id")))
                if open_row is None:
                    continue  # get_document: not in SuiteQL's transactions → not found
                query = open_row
            snapshots[ref] = self._document(kind, raw, query)
        return {given: snapshots[ref] for given, ref in wanted.items() if ref in snapshots}

    def _records(self, kind: str, internal_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """REST records by internal id, ``capabilities.concurrency`` GETs at a time; ids
        NetSuite does not know are left out."""

        def fetch(internal_id: str) -> tuple[str, dict[str, Any] | None]:
            try:
                return internal_id, self._record(kind, internal_id)
            except DocumentNotFound:
                return internal_id, None

        ids = list(dict.fromkeys(internal_ids))
        workers = min(self.capabilities.concurrency, len(ids))
        if workers <= 1:
            found = [fetch(i) for i in ids]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="netsuite-read") as pool:
                found = list(pool.map(fetch, ids))
        return {internal_id: raw for internal_id, raw in found if raw is not None}

    def _ids_by_number(self, refs: Sequence[str], kind: str) -> dict[str, str]:
        """Internal ids of documents numbered ``refs`` (``tranid`` or ``transactionnumber``),
        for the refs exactly one document carries."""
        out: dict[str, str] = {}
        for start in range(0, len(refs), IN_LIST_MAX):
            chunk = list(refs[start : start + IN_LIST_MAX])
            texts = ", ".join(_sql_text(ref) for ref in chunk)
            rows = self._all_rows(
                f"SELECT t.id, t.tranid, t.transactionnumber FROM transaction t "
                f"WHERE t.type = '{_TRAN_TYPE[kind]}' "
                f"AND (t.tranid IN ({texts}) OR t.transactionnumber IN ({texts})) ORDER BY t.id"
            )
            for ref in chunk:
                ids = {
                    str(row["id"])
                    for row in rows
                    if row.get("id") and ref in (row.get("tranid"), row.get("transactionnumber"))
                }
                if len(ids) == 1:
                    out[ref] = ids.pop()
        return out

    @staticmethod
    def _settle_amounts(record: dict[str, Any], currency: str, balance_field: str) -> None:
        """Amounts positive (SuiteQL signs AP negative) at the currency's precision; an open
        document with nothing left to pay is paid."""
        for name in ("total", balance_field):
            if record.get(name) is not None:
                record[name] = quantize(abs(record[name]), currency)
        if record.get(balance_field) is None:
            record[balance_field] = record.get("total") or Decimal(0)
        if record.get("status") == "authorised" and record[balance_field] == 0 and record["total"]:
            record["status"] = "paid"

    def list_changed(self, entity: str, since: datetime | None, page: int, page_size: int) -> Page:
        """One page of ``entity`` changed at or after ``since``, oldest change first."""
        if page < 1 or not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page must be ≥ 1 and page_size within 1..{MAX_PAGE}")
        if entity == "contact":
            return self._list_contacts(since, page, page_size)
        if entity in ("invoice", "bill"):
            q = (
                f"SELECT {_DOCUMENT_COLUMNS} FROM transaction t "
                "LEFT JOIN currency c ON c.id = t.currency "
                f"WHERE t.type = '{_TRAN_TYPE[entity]}'"
                f"{_since_clause('t.lastmodifieddate', since, self._tz)} "
                "ORDER BY t.lastmodifieddate, t.id"
            )
        elif entity == "payment":
            q = (
                f"SELECT {_PAYMENT_COLUMNS} FROM transaction t "
                "LEFT JOIN currency c ON c.id = t.currency "
                "WHERE t.type IN ('CustPymt', 'VendPymt')"
                f"{_since_clause('t.lastmodifieddate', since, self._tz)} "
                "ORDER BY t.lastmodifieddate, t.id"
            )
        elif entity == "ledger_account":
            # The account table carries no change marker: the chart is read whole.
            q = (
                "SELECT a.id, a.acctnumber, a.fullname, a.accountsearchdisplayname, "
                "a.accttype, a.isinactive, c.symbol currencycode FROM account a "
                "LEFT JOIN currency c ON c.id = a.currency ORDER BY a.id"
            )
        else:
            raise ValueError(f"unknown entity {entity!r}; use {list(self.entities)}")
        data = self._suiteql(q, limit=page_size, offset=(page - 1) * page_size)
        items = [dict(i) for i in data.get("items") or []]
        reader = self.mapping.rows.reader(entity)
        records = [reader.read(item) for item in items]
        for rec in records:
            if entity in ("invoice", "bill", "payment"):
                rec["currency"] = rec.get("currency") or self._currency_code(None)
            if entity in ("invoice", "bill"):
                self._settle_amounts(rec, rec["currency"], "balance")
            elif entity == "payment":
                rec["total_amount"] = quantize(
                    abs(rec["total_amount"] or Decimal(0)), rec["currency"]
                )
        if entity == "payment" and records:
            self._attach_allocations(records)
        has_more = bool(data.get("hasMore"))
        result = self._page(records, page, page_size, has_more)
        if entity in _DELETED_TYPES and not has_more:
            # Deletions ride on the run's last page as tombstones. They do not move
            # the page's change marker: a deletion stamped after a record that was
            # edited meanwhile must not make the next run start past that edit.
            result.records.extend(self._deletions(entity, since))
        return result

    def _deletions(self, entity: str, since: datetime | None) -> list[dict[str, Any]]:
        """Tombstones from SuiteQL's DeletedRecord table since ``since``."""
        types = ", ".join(f"'{t}'" for t in _DELETED_TYPES[entity])
        rows = self._rows(
            f"SELECT d.recordid, d.recordtypeid, {_STAMP.format(col='d.deleteddate')} lastmodified "
            f"FROM deletedrecord d WHERE d.recordtypeid IN ({types})"
            f"{_since_clause('d.deleteddate', since, self._tz)} ORDER BY d.deleteddate"
        )
        return [
            {
                "remote_id": str(row["recordid"]),
                "deleted": True,
                "status": "deleted",
                "remote_updated_at": datetime.fromisoformat(
                    str(row["lastmodified"]).replace("Z", "+00:00")
                ),
            }
            for row in rows
            if row.get("recordid") and row.get("lastmodified")
        ]

    @staticmethod
    def _page(records: list[dict[str, Any]], page: int, size: int, has_more: bool) -> Page:
        stamps = [r["remote_updated_at"] for r in records if r.get("remote_updated_at")]
        return Page(
            records=records,
            page=page,
            page_size=size,
            has_more=has_more,
            max_updated_at=max(stamps) if stamps else None,
        )

    def _attach_allocations(self, records: list[dict[str, Any]]) -> None:
        """``allocations[]`` of each payment, from the transaction links (one query)."""
        ids = ", ".join(_sql_id(str(r["remote_id"])) for r in records)
        rows = self._rows(
            "SELECT l.nextdoc, l.previousdoc, l.previoustype, l.foreignamount "
            f"FROM nexttransactionlinelink l WHERE l.nextdoc IN ({ids}) "
            "ORDER BY l.nextdoc, l.previousdoc"
        )
        by_payment: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_payment.setdefault(str(row.get("nextdoc")), []).append(row)
        for rec in records:
            currency = rec["currency"]
            rec["allocations"] = [
                {
                    "id": str(row["previousdoc"]),
                    "type": _DOC_KIND.get(str(row.get("previoustype")), "invoice"),
                    "amount": quantize(abs(Decimal(str(row.get("foreignamount") or 0))), currency),
                }
                for row in by_payment.get(str(rec["remote_id"]), [])
                if row.get("previousdoc")
            ]

    def _list_contacts(self, since: datetime | None, page: int, size: int) -> Page:
        """Customers and vendors as one stream ordered by change.

        Two tables, one keyset: each is read from its start up to ``page * size`` rows,
        the two are merged by (change, id) and the requested slice is returned, so the
        page's newest change never passes a row of the other table that is not yet read.
        """
        want = page * size
        merged: list[dict[str, Any]] = []
        has_more = False
        for table in ("customer", "vendor"):
            where = _since_clause("e.lastmodifieddate", since, self._tz).replace(
                " AND ", " WHERE ", 1
            )
            q = (
                f"SELECT {_ENTITY_COLUMNS} FROM {table} e "
                f"LEFT JOIN currency c ON c.id = e.currency{where} "
                "ORDER BY e.lastmodifieddate, e.id"
            )
            rows, more = self._first_rows(q, want)
            has_more = has_more or more
            merged += [{**row, "kind": table} for row in rows]
        merged.sort(key=lambda r: (str(r.get("lastmodified") or ""), int(r.get("id") or 0)))
        has_more = has_more or len(merged) > want
        reader = self.mapping.rows.reader("contact")
        records = [reader.read(row) for row in merged[want - size : want]]
        return self._page(records, page, size, has_more)

    # -- writes --------------------------------------------------------------------------
    def push_payments(
        self, batch: Sequence[PaymentRequest], idempotency_key: str
    ) -> list[ItemResult]:
        """``POST record/v1/customerPayment|vendorPayment``: one request per payment.

        ``idempotency_key`` is the intent's provider key, which every request also
        carries as ``request.provider_key``: it is sent as the payment's ``externalId``.
        """
        if len(batch) > self.capabilities.max_batch:
            raise ValueError(
                f"NetSuite takes {self.capabilities.max_batch} payment per request, "
                f"got {len(batch)}"
            )
        return [self._push_one(request) for request in batch]

    def _push_one(self, request: PaymentRequest) -> ItemResult:
        kind = request.document_type
        if kind not in _PAYMENT_RECORD:
            raise ValueError(f"unknown document type {kind!r}")
        values = request.as_mapping_input()
        values["unapplied_total"] = request.total if request.unapplied > 0 else None
        if kind == "bill" and self.settings.bill_payment_account_code:
            values["account_code"] = self.settings.bill_payment_account_code
        payload = self.mapping.write(kind, values)
        items = (payload.get("apply") or {}).get("items")
        total = payload.get(AMOUNT_FIELD[kind])
        if (
            request.multi and (not isinstance(items, list) or len(items) != len(request.lines))
        ) or (request.unapplied and total != request.total):
            # A connection's mapping override that writes one apply line, or no total,
            # would pay less than asked while looking applied.
            return ItemResult(
                request.intent_id,
                error=ValidationRejected(
                    f"the {_WRITERS[kind]} mapping does not write one apply line per document "
                    f"and the payment's total (use `lines` and `total_amount` / "
                    f"`unapplied_total`)",
                    provider_code="mapping",
                ),
            )
        try:
            response = self._call(
                "POST",
                f"{RECORD}/{_PAYMENT_RECORD[kind]}",
                body=payload,
                write=True,
                ok_statuses=(200, 201, 204),
            )
        except (OutcomeUnknown, RateLimited, Transient, AuthRevoked, AuthExpired) as exc:
            if _DUPLICATE.search(exc.provider_message or "") and exc.status_code == 400:
                return self._adopt(request, exc)
            raise
        except ConnectorError as exc:
            return ItemResult(
                request.intent_id, error=self._refine(request, exc), status_code=exc.status_code
            )
        location = response.headers.get("Location") or ""
        match = re.search(r"/(\d+)/?$", location)
        if not match:
            # Created, but we cannot tell which record: only a lookup can say.
            return ItemResult(
                request.intent_id,
                error=OutcomeUnknown(
                    f"NetSuite answered {response.status_code} without the new record's Location",
                    provider_message=location or None,
                    status_code=response.status_code,
                ),
                status_code=response.status_code,
            )
        payment = self._created(request, match.group(1))
        log.info(
            "netsuite_payment_created",
            connection=self.settings.id,
            payment=payment.remote_id,
            document=request.document_remote_id,
        )
        return ItemResult(request.intent_id, payment=payment, status_code=response.status_code)

    def _created(self, request: PaymentRequest, remote_id: str) -> RemotePayment:
        record: dict[str, Any] = {
            "remote_id": remote_id,
            "type": "accounts_payable"
            if request.document_type == "bill"
            else "accounts_receivable",
            "status": "authorised",
            "total_amount": request.total,
            "currency": request.currency,
            "transaction_date": request.transaction_date,
            "reference": request.reference,
            "account_id": request.account_code,
        }
        if request.multi:
            record["allocations"] = _allocation_records(request.applied_lines, request)
        return RemotePayment(
            remote_id=remote_id,
            document_remote_id=request.document_remote_id,
            amount=request.amount,
            reference=request.reference,
            status="authorised",
            record=record,
            allocations=request.applied_lines,
        )

    def _refine(self, request: PaymentRequest, err: ConnectorError) -> ConnectorError:
        """Tell "gone" from "not open": NetSuite refuses both as an invalid ``doc``."""
        if not isinstance(err, DocumentNotPayable) or err.provider_code not in {
            "INVALID_CONTENT",
            "INVALID_KEY_OR_REF",
        }:
            return err
        if request.multi:
            try:
                readable = self.get_documents(list(request.document_ids), request.document_type)
            except ConnectorError:
                return err
            gone = [d for d in request.document_ids if d not in readable]
            if gone:
                return DocumentNotFound(
                    f"{request.document_type} {', '.join(gone)} no longer exist"
                    if len(gone) > 1
                    else f"{request.document_type} {gone[0]} no longer exists",
                    provider_code=err.provider_code,
                    provider_message=err.provider_message,
                    status_code=err.status_code,
                )
            return err
        try:
            self.get_document(request.document_remote_id, request.document_type)
        except DocumentNotFound:
            return DocumentNotFound(
                f"{request.document_type} {request.document_remote_id} no longer exists",
                provider_code=err.provider_code,
                provider_message=err.provider_message,
                status_code=err.status_code,
            )
        except ConnectorError:
            return err
        return err

    def _adopt(self, request: PaymentRequest, err: ConnectorError) -> ItemResult:
        """A payment with our externalId exists: it is ours if it pays our document."""
        kind = request.document_type
        try:
            response = self._call(
                "GET",
                f"{RECORD}/{_PAYMENT_RECORD[kind]}/eid:{request.provider_key}",
                params={"expandSubResources": "true"},
            )
        except DocumentNotFound:
            return ItemResult(
                request.intent_id,
                error=OutcomeUnknown(
                    f"NetSuite says externalId {request.provider_key} exists but cannot show it",
                    provider_code=err.provider_code,
                    provider_message=err.provider_message,
                    status_code=err.status_code,
                ),
                status_code=err.status_code,
            )
        raw = self._json(response)
        found = self._remote_from_record(raw, request)
        if (
            found is not None
            and found.status != "deleted"
            and [quantize(line.amount, request.currency) for line in found.allocations]
            == [quantize(line.amount, request.currency) for line in request.applied_lines]
        ):
            log.info(
                "netsuite_payment_adopted",
                connection=self.settings.id,
                payment=found.remote_id,
                external_id=request.provider_key,
            )
            return ItemResult(request.intent_id, payment=found, status_code=err.status_code)
        return ItemResult(
            request.intent_id,
            error=ValidationRejected(
                f"externalId {request.provider_key} already belongs to NetSuite payment "
                f"{raw.get('id') if isinstance(raw, dict) else '?'}, which does not apply "
                f"{request.amount} to {kind} {request.document_remote_id}",
                provider_code=err.provider_code,
                provider_message=err.provider_message,
                status_code=err.status_code,
            ),
            status_code=err.status_code,
        )

    def _remote_from_record(self, raw: Any, request: PaymentRequest) -> RemotePayment | None:
        """The lines of a REST payment record on the request's documents, as a
        RemotePayment (None unless it applies to every one of them)."""
        if not isinstance(raw, dict):
            return None
        apply = raw.get("apply") or {}
        items = apply.get("items") if isinstance(apply, dict) else None
        applied: list[tuple[str, Any]] = []
        for document_id in request.document_ids:
            line = next(
                (
                    item
                    for item in items or []
                    if str((item.get("doc") or {}).get("id")) == document_id
                    and item.get("apply", True) is not False
                ),
                None,
            )
            if line is None or line.get("amount") is None:
                return None
            applied.append((document_id, line["amount"]))
        currency = self._currency_code((raw.get("currency") or {}).get("id"))
        view = {"record": raw, "currency": currency, "kind": _PAYMENT_TYPE[request.document_type]}
        record = self.mapping.records.reader("payment").read(view)
        record["total_amount"] = quantize(abs(record["total_amount"] or Decimal(0)), currency)
        status = "deleted" if record["status"] in {"void", "deleted"} else "authorised"
        lines = tuple(
            PaymentLine(document_id, quantize(abs(Decimal(str(amount))), currency))
            for document_id, amount in applied
        )
        if request.multi:
            record["allocations"] = _allocation_records(lines, request)
        return RemotePayment(
            remote_id=str(record["remote_id"]),
            document_remote_id=request.document_remote_id,
            amount=sum((line.amount for line in lines), Decimal(0)),
            reference=record.get("reference"),
            status=status,
            record=record,
            allocations=lines,
        )

    def find_payment(self, request: PaymentRequest) -> list[RemotePayment]:
        """Payments on the intent's document(s) carrying our externalId or our memo.

        The externalId of any key version of the intent matches (a versioned key changes
        the externalId), and so does the memo (our reference). A voided payment is
        returned with ``status="deleted"``: it settles nothing.

        Raises:
            DocumentNotFound: a document id that is no internal id.
        """
        for document_id in request.document_ids:
            _sql_id(document_id)
        return self.find_payments([request])[request.intent_id]

    def find_payments(self, requests: Sequence[PaymentRequest]) -> dict[str, list[RemotePayment]]:
        """:meth:`find_payment` for many requests: one SuiteQL query per payment type for
        up to :data:`LOOKUP_CHUNK` requests (``l.previousdoc IN (…)`` and the memos and
        externalIds of all of them), the rows then matched to each request here.

        A request whose document id is no internal id finds nothing.
        """
        found: dict[str, list[RemotePayment]] = {r.intent_id: [] for r in requests}
        by_type: dict[str, list[PaymentRequest]] = {}
        for request in requests:
            if all(_DIGITS.match(d.strip()) for d in request.document_ids):
                by_type.setdefault(_PAYMENT_TYPE[request.document_type], []).append(request)
        for tran_type, members in by_type.items():
            for start in range(0, len(members), LOOKUP_CHUNK):
                chunk = members[start : start + LOOKUP_CHUNK]
                rows = self._all_rows(self._lookup_query(tran_type, chunk))
                for request in chunk:
                    found[request.intent_id] = self._matches(request, rows)
        return found

    @staticmethod
    def _key_matches(request: PaymentRequest) -> tuple[list[str], str | None]:
        """The SuiteQL conditions that find ``request``'s payments by memo or externalId,
        and the key stem whose later versions match too."""
        matches = [f"t.memo = {_sql_text(request.reference)}"]
        stem: str | None = None
        if request.provider_key:
            matches.append(f"t.externalid = {_sql_text(request.provider_key)}")
            candidate = _KEY_VERSION.sub("", request.provider_key)
            if candidate != request.provider_key and _SAFE_KEY.match(candidate):
                stem = candidate
                matches.append(f"t.externalid LIKE {_sql_text(stem + '-v%')}")
        return matches, stem

    def _lookup_query(self, tran_type: str, requests: Sequence[PaymentRequest]) -> str:
        docs = list(dict.fromkeys(_sql_id(d) for r in requests for d in r.document_ids))
        matches = list(dict.fromkeys(m for r in requests for m in self._key_matches(r)[0]))
        on_docs = (
            f"l.previousdoc = {docs[0]}"
            if len(docs) == 1
            else (f"l.previousdoc IN ({', '.join(docs)})")
        )
        return (
            f"SELECT {_PAYMENT_COLUMNS}, l.previousdoc, l.foreignamount applied "
            "FROM transaction t INNER JOIN nexttransactionlinelink l ON l.nextdoc = t.id "
            "LEFT JOIN currency c ON c.id = t.currency "
            f"WHERE t.type = '{tran_type}' "
            f"AND {on_docs} AND ({' OR '.join(matches)}) ORDER BY t.id"
        )

    def _matches(self, request: PaymentRequest, rows: list[dict[str, Any]]) -> list[RemotePayment]:
        """The payments among lookup ``rows`` that are ``request``'s, one per payment, with
        what each applies to the request's documents."""
        _, stem = self._key_matches(request)
        docs = {_sql_id(d) for d in request.document_ids}
        reader = self.mapping.rows.reader("payment")
        records: dict[str, dict[str, Any]] = {}
        applied: dict[str, dict[str, Decimal]] = {}
        for row in rows:
            doc = str(row.get("previousdoc") or "")
            external = str(row.get("externalid") or "")
            if doc not in docs:
                continue
            if not (
                row.get("memo") == request.reference
                or (request.provider_key and external == request.provider_key)
                or (stem is not None and external.startswith(stem + "-v"))
            ):
                continue
            remote_id = str(row.get("id"))
            if remote_id not in records:
                record = reader.read(row)
                currency = record.get("currency") or request.currency
                record["total_amount"] = quantize(
                    abs(record["total_amount"] or Decimal(0)), currency
                )
                records[remote_id] = record
            currency = records[remote_id].get("currency") or request.currency
            amount = quantize(abs(Decimal(str(row.get("applied") or 0))), currency)
            per_doc = applied.setdefault(remote_id, {})
            per_doc[doc] = per_doc.get(doc, Decimal(0)) + amount
        found: list[RemotePayment] = []
        for remote_id, record in records.items():
            lines = tuple(
                PaymentLine(d, applied[remote_id][d])
                for d in request.document_ids
                if d in applied[remote_id]
            )
            if request.multi:
                record["allocations"] = _allocation_records(lines, request)
            found.append(
                RemotePayment(
                    remote_id=remote_id,
                    document_remote_id=request.document_remote_id
                    if request.multi
                    else lines[0].document_remote_id,
                    amount=sum((line.amount for line in lines), Decimal(0)),
                    reference=record.get("reference"),
                    status="deleted" if record["status"] in {"void", "deleted"} else "authorised",
                    record=record,
                    allocations=lines,
                )
            )
        return found


def _allocation_records(
    lines: Sequence[PaymentLine], request: PaymentRequest
) -> list[dict[str, Any]]:
    """Unified ``allocations[]`` (``{id, type, amount}``) of a payment's lines."""
    return [
        {"id": line.document_remote_id, "type": request.document_type, "amount": line.amount}
        for line in lines
    ]
