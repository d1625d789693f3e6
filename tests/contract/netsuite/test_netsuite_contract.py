"""Contract tests of the NetSuite adapter against cassettes built from recorded samples.

Every JWT cassette starts with the client-credentials grant on the account's token
endpoint, then the REST and SuiteQL calls on ``1234567.suitetalk.api.netsuite.com``.
vcrpy replays only (record_mode "none"), matches request bodies byte for byte and
plays no interaction twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.server
import re
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit
from urllib.request import parse_http_list, parse_keqv_list

import httpx
import pytest
import vcr
from authlib.oauth1.rfc5849.signature import construct_base_string
from authlib.oauth1.rfc5849.util import escape, unescape
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from vcr.errors import CannotOverwriteExistingCassetteException

from connector import jsonutil
from connector.adapters.base import PaymentRequest
from connector.adapters.netsuite import (
    NETSUITE_ERROR_TABLE,
    NetSuiteAdapter,
    load_connection_mapping,
    load_netsuite_mapping,
    netsuite_error_rule,
    translate_netsuite_error,
)
from connector.errors import (
    AuthRevoked,
    ConnectorError,
    DocumentNotFound,
    DocumentNotPayable,
    OutcomeUnknown,
    RateLimited,
    Transient,
    ValidationRejected,
)
from connector.mapping import MappingError
from connector.state import ConnectionRecord
from connector.store import Store
from tests.contract.netsuite import netsuite_cassettes as nc
from tests.contract.netsuite.conftest import (
    CERTIFICATE_ID,
    CLIENT_ID,
    CLIENT_SECRET,
    SECRET_STRINGS,
    TOKEN_ID,
    TOKEN_SECRET,
    ContractVCR,
    make_settings,
    make_vcr,
    write_key,
)
from tests.contract.vcrkit import stale_cassettes

SAMPLES = nc.load_samples()
FACT_SHEET = Path(__file__).parent / "fact_sheet_netsuite.md"


def _assert_all_played(cassette: vcr.cassette.Cassette) -> None:
    assert cassette.all_played, f"unplayed interactions in {cassette._path}"
    assert cassette.play_count == len(cassette)


def _pay(
    kind: str = "invoice",
    *,
    amount: str = "5.00",
    key: str = nc.CUSTOMER_PAYMENT_EID,
    reference: str = nc.REFERENCE,
    on: date = date(2025, 5, 26),
) -> PaymentRequest:
    invoice = kind == "invoice"
    return PaymentRequest(
        intent_id="intent-1",
        document_remote_id=nc.INVOICE_ID if invoice else nc.BILL_ID,
        amount=Decimal(amount),
        currency="USD",
        transaction_date=on,
        reference=reference,
        account_code="1",
        document_type=kind,
        contact_remote_id=nc.CUSTOMER_ID if invoice else nc.VENDOR_ID,
        provider_key=key,
    )


def _q(request: httpx.Request) -> str:
    q: str = jsonutil.loads(request.content)["q"]
    return q


# -- 1. reads ---------------------------------------------------------------------------
def test_get_invoice_by_id_reads_the_record(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter, ns_wire: list[httpx.Request]
) -> None:
    with ns_vcr.use_cassette("get_invoice_by_id.yaml") as cass:
        snap = ns_adapter.get_document(nc.INVOICE_ID)
    _assert_all_played(cass)

    assert snap.remote_id == nc.INVOICE_ID
    assert snap.number == nc.INVOICE_NUMBER
    assert snap.kind == "invoice"
    assert (snap.status, snap.provider_status) == ("authorised", "Open")
    assert snap.payable
    assert snap.currency == "USD"
    assert str(snap.total) == "100.00"
    assert str(snap.balance) == "95.00"
    assert snap.row_version == "2025-05-27T16:04:11Z"
    assert snap.record["remote_updated_at"] == datetime(2025, 5, 27, 16, 4, 11, tzinfo=UTC)
    assert snap.contact_remote_id == nc.CUSTOMER_ID
    get, suiteql = ns_wire
    assert get.headers["Authorization"] == "Bearer scrubbed-access-token-1"
    assert suiteql.headers["Prefer"] == "transient"
    assert suiteql.headers["Authorization"] == "Bearer scrubbed-access-token-1"
    assert "X-NetSuite-Idempotency-Key" not in get.headers


def test_token_request_is_scrubbed_and_the_token_stored(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter, ns_store: Store
) -> None:
    with ns_vcr.use_cassette("get_invoice_by_id.yaml") as cass:
        ns_adapter.get_document(nc.INVOICE_ID)
    token_request = cass.requests[0]
    assert token_request.uri == nc.TOKEN_URL
    # What was matched is the scrubbed form: no client assertion was recorded.
    assert token_request.body == nc.TOKEN_REQUEST_BODY.encode()
    assert b"client_assertion=" not in token_request.body
    assert "authorization" not in {k.lower() for k in token_request.headers}
    with ns_store.session() as s:
        rec = s.get(ConnectionRecord, "netsuite-test")
        assert rec is not None
        assert rec.provider == "netsuite"
        assert rec.tenant == nc.ACCOUNT_ID
        assert rec.access_token == "scrubbed-access-token-1"
        assert rec.refresh_token is None  # client credentials: nothing to refresh
        assert rec.access_token_expires_at is not None
        assert rec.access_token_expires_at > datetime.now(UTC) + timedelta(minutes=55)


def test_get_invoice_by_number_looks_it_up_through_suiteql(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter, ns_wire: list[httpx.Request]
) -> None:
    with ns_vcr.use_cassette("get_invoice_by_number.yaml") as cass:
        snap = ns_adapter.get_document(nc.INVOICE_NUMBER)
    _assert_all_played(cass)
    assert snap.remote_id == nc.INVOICE_ID
    assert "t.tranid = 'INV6666'" in _q(ns_wire[0])


def test_get_bill_takes_the_open_amount_from_suiteql(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter
) -> None:
    with ns_vcr.use_cassette("get_bill.yaml") as cass:
        snap = ns_adapter.get_document(nc.BILL_ID, "bill")
    _assert_all_played(cass)
    assert snap.kind == "bill"
    assert str(snap.total) == "200.00"
    assert str(snap.balance) == "150.00"  # foreignamountunpaid
    assert snap.record["supplier_id"] == nc.VENDOR_ID
    assert snap.payable


def test_missing_invoice_is_not_found_after_the_number_lookup(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter
) -> None:
    with (
        ns_vcr.use_cassette("get_invoice_missing.yaml") as cass,
        pytest.raises(DocumentNotFound, match=nc.MISSING_ID),
    ):
        ns_adapter.get_document(nc.MISSING_ID)
    _assert_all_played(cass)


# -- 2. the client assertion --------------------------------------------------------------
def _assertion_via(key_file: Path, tmp_path: Path) -> tuple[dict[str, str], dict[str, Any], str]:
    """Fetch a token through a mock transport; return the form, the JWT header and token."""
    seen: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            seen.update(parse_qsl(request.content.decode()))
            return httpx.Response(
                200, json={"access_token": "at-1", "expires_in": 3600, "token_type": "bearer"}
            )
        return httpx.Response(200, json={"items": [], "hasMore": False})

    store = Store(f"sqlite:///{tmp_path}/assertion-{key_file.stem}.db")
    store.upgrade()
    adapter = NetSuiteAdapter(
        make_settings(key_file), store, transport=httpx.MockTransport(handler)
    )
    try:
        adapter.list_changed("ledger_account", None, 1, 10)
    finally:
        adapter.close()
        store.dispose()
    token = seen["client_assertion"]
    header = jsonutil.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    return seen, header, token


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_client_assertion_is_what_netsuite_asks_for(tmp_path: Path, key_type: str) -> None:
    private: Any = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=3072)
    )
    key_file = write_key(tmp_path / f"{key_type}.pem", private)
    form, header, token = _assertion_via(key_file, tmp_path)

    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert header == {"typ": "JWT", "kid": CERTIFICATE_ID, "alg": header["alg"]}
    assert header["alg"] == ("ES256" if key_type == "ec" else "PS256")  # never RS256
    public = (ECKey if key_type == "ec" else RSAKey).import_key(private.public_key())
    claims = jwt.decode(token, public, algorithms=[header["alg"]]).claims
    assert claims["iss"] == CLIENT_ID
    assert claims["scope"] == "rest_webservices"
    assert claims["aud"] == nc.TOKEN_URL
    assert 0 < claims["exp"] - claims["iat"] <= 3600
    assert abs(claims["iat"] - datetime.now(UTC).timestamp()) < 60


# -- 3. push_payments: the exact requests -------------------------------------------------------
def test_push_customer_payment_sends_the_exact_body_and_reads_location(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter, ns_wire: list[httpx.Request]
) -> None:
    request = _pay()
    with ns_vcr.use_cassette("push_customer_payment.yaml") as cass:
        results = ns_adapter.push_payments([request], idempotency_key=request.provider_key)
    _assert_all_played(cass)

    expected = jsonutil.dumps(
        {
            "customer": {"id": "313"},
            "payment": Decimal("5.00"),
            "account": {"id": "1"},
            "tranDate": "2025-05-26",
            "memo": nc.REFERENCE,
            "externalId": "EXT-TEST-3200",
            "apply": {"items": [{"doc": {"id": "8935"}, "apply": True, "amount": Decimal("5.00")}]},
        }
    ).encode()
    assert b'"payment": 5.00,' in expected  # a JSON number, digit for digit
    (sent,) = ns_wire
    assert sent.method == "POST"
    assert str(sent.url) == f"{nc.RECORD}/customerPayment"
    assert sent.headers["Content-Type"] == "application/json"
    assert "X-NetSuite-Idempotency-Key" not in sent.headers  # ignored on sync writes
    assert "Prefer" not in sent.headers
    assert sent.content == expected
    assert cass.requests[1].body == expected

    (result,) = results
    assert result.error is None
    assert result.status_code == 204
    assert result.payment is not None
    assert result.payment.remote_id == nc.CUSTOMER_PAYMENT_ID  # from Location
    assert result.payment.document_remote_id == nc.INVOICE_ID
    assert result.payment.amount == Decimal("5.00")
    assert result.payment.reference == nc.REFERENCE
    assert result.payment.record["type"] == "accounts_receivable"


def test_push_vendor_payment_sends_the_exact_body(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter, ns_wire: list[httpx.Request]
) -> None:
    request = _pay(
        "bill",
        amount="50.00",
        key=nc.VENDOR_PAYMENT_EID,
        reference=nc.BILL_REFERENCE,
        on=date(2025, 5, 22),
    )
    with ns_vcr.use_cassette("push_vendor_payment.yaml") as cass:
        (result,) = ns_adapter.push_payments([request], idempotency_key=request.provider_key)
    _assert_all_played(cass)
    (sent,) = ns_wire
    assert str(sent.url) == f"{nc.RECORD}/vendorPayment"
    body = jsonutil.loads(sent.content)
    assert list(body) == ["entity", "account", "tranDate", "memo", "externalId", "apply"]
    assert "total" not in body  # NetSuite totals the applied lines
    assert result.payment is not None
    assert result.payment.remote_id == nc.VENDOR_PAYMENT_ID
    assert result.payment.record["type"] == "accounts_payable"


def test_duplicate_external_id_is_looked_up_and_adopted(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter, ns_wire: list[httpx.Request]
) -> None:
    with ns_vcr.use_cassette("push_duplicate_external_id.yaml") as cass:
        (result,) = ns_adapter.push_payments([_pay()], idempotency_key=nc.CUSTOMER_PAYMENT_EID)
    _assert_all_played(cass)
    assert result.error is None
    assert result.payment is not None
    assert result.payment.remote_id == nc.CUSTOMER_PAYMENT_ID
    assert result.payment.amount == Decimal("5.00")
    assert result.payment.reference == nc.REFERENCE
    assert result.payment.status == "authorised"
    assert ns_wire[1].url.path.endswith("/customerPayment/eid:EXT-TEST-3200")


def test_invalid_account_is_a_rejected_item(
    ns_vcr: ContractVCR, key_path: Path, ns_store: Store
) -> None:
    adapter = NetSuiteAdapter(make_settings(key_path), ns_store)
    request = PaymentRequest(**{**_pay().__dict__, "account_code": "9999"})
    try:
        with ns_vcr.use_cassette("push_invalid_account.yaml") as cass:
            (result,) = adapter.push_payments([request], idempotency_key=request.provider_key)
    finally:
        adapter.close()
    _assert_all_played(cass)
    assert result.payment is None
    assert type(result.error) is ValidationRejected
    assert result.error.provider_code == "INVALID_CONTENT"
    assert result.error.provider_message is not None
    assert "for the following field: account" in result.error.provider_message
    assert result.status_code == 400


def test_500_on_create_is_outcome_unknown(ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter) -> None:
    with (
        ns_vcr.use_cassette("push_500_unexpected.yaml") as cass,
        pytest.raises(ConnectorError) as info,
    ):
        ns_adapter.push_payments([_pay()], idempotency_key=nc.CUSTOMER_PAYMENT_EID)
    _assert_all_played(cass)
    assert type(info.value) is OutcomeUnknown
    assert info.value.status_code == 500
    assert "UNEXPECTED_ERROR" in (info.value.provider_message or "")


# -- 4. find_payment ---------------------------------------------------------------------
def test_find_payment_searches_memo_and_every_key_version(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter, ns_wire: list[httpx.Request]
) -> None:
    request = _pay(key="cx-intent-9-v2")
    with ns_vcr.use_cassette("find_payment.yaml") as cass:
        found = ns_adapter.find_payment(request)
    _assert_all_played(cass)
    (sent,) = ns_wire
    q = _q(sent)
    assert "l.previousdoc = 8935" in q
    assert "t.externalid LIKE 'cx-intent-9-v%'" in q
    (payment,) = found
    assert payment.remote_id == nc.CUSTOMER_PAYMENT_ID
    assert payment.document_remote_id == nc.INVOICE_ID
    assert payment.amount == Decimal("5.00")
    assert payment.reference == nc.REFERENCE
    assert payment.status == "authorised"
    assert payment.record["transaction_date"] == date(2025, 5, 27)


# -- 5. list_changed ---------------------------------------------------------------------------
def test_list_changed_invoices_filters_on_lastmodifieddate_and_pages(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter, ns_wire: list[httpx.Request]
) -> None:
    since = datetime(2025, 5, 20, 2, 0, tzinfo=timezone(timedelta(hours=2)))  # 00:00 UTC
    with ns_vcr.use_cassette("list_changed_invoices.yaml") as cass:
        page = ns_adapter.list_changed("invoice", since, page=1, page_size=2)
    _assert_all_played(cass)
    (sent,) = ns_wire
    assert sent.url.params["limit"] == "2"
    assert sent.url.params["offset"] == "0"
    assert "TO_TIMESTAMP('2025-05-20 00:00:00'" in _q(sent)
    assert page.has_more is True
    assert [r["number"] for r in page.records] == ["INV6666", "INV6667"]
    assert [r["status"] for r in page.records] == ["authorised", "paid"]
    assert [r["balance"] for r in page.records] == [Decimal("95.00"), Decimal("0.00")]
    assert page.records[1]["total"] == Decimal("42.50")
    assert page.records[1]["invoice_date"] == date(2025, 5, 27)
    assert page.max_updated_at == datetime(2025, 5, 27, 17, 30, tzinfo=UTC)


def test_list_changed_payments_reads_allocations_and_positive_amounts(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter
) -> None:
    with ns_vcr.use_cassette("list_changed_payments.yaml") as cass:
        page = ns_adapter.list_changed("payment", None, page=1, page_size=100)
    _assert_all_played(cass)
    assert page.has_more is False
    ar, ap, gone = page.records
    assert gone["remote_id"] == "9001" and gone["deleted"] is True and gone["status"] == "deleted"
    # A deletion never moves the page's change marker past the live records'.
    assert page.max_updated_at == ap["remote_updated_at"]
    assert (ar["type"], ar["total_amount"]) == ("accounts_receivable", Decimal("5.00"))
    assert ar["allocations"] == [
        {"id": nc.INVOICE_ID, "type": "invoice", "amount": Decimal("5.00")}
    ]
    assert (ap["type"], ap["total_amount"]) == ("accounts_payable", Decimal("50.00"))
    assert ap["allocations"] == [{"id": nc.BILL_ID, "type": "bill", "amount": Decimal("50.00")}]


# -- 6. errors at the boundary ----------------------------------------------------------------
def test_401_fetches_one_new_token_then_parks_the_connection(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter, ns_store: Store, ns_wire: list[httpx.Request]
) -> None:
    with ns_vcr.use_cassette("error_401_invalid_login.yaml") as cass, pytest.raises(AuthRevoked):
        ns_adapter.get_document(nc.INVOICE_ID)
    _assert_all_played(cass)  # two grants, two refused GETs, nothing more
    assert [r.headers["Authorization"] for r in ns_wire] == [
        "Bearer scrubbed-access-token-1",
        "Bearer scrubbed-access-token-2",
    ]
    with ns_store.session() as s:
        rec = s.get(ConnectionRecord, "netsuite-test")
        assert rec is not None
        assert rec.status == "needs_reauth"
        assert "INVALID_LOGIN" in (rec.status_reason or "")
        assert rec.access_token is None


def test_429_concurrency_limit_is_rate_limited_without_sleeping(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter, ns_wire: list[httpx.Request]
) -> None:
    slept: list[float] = []
    ns_adapter.http._sleep = slept.append
    with (
        ns_vcr.use_cassette("error_429_concurrency.yaml") as cass,
        pytest.raises(RateLimited) as info,
    ):
        ns_adapter.get_document(nc.INVOICE_ID)
    _assert_all_played(cass)
    assert len(ns_wire) == 1
    assert slept == []
    assert info.value.status_code == 429
    assert info.value.retriable
    assert ns_adapter.http.rate.throttled == 1


# -- 7. Token-Based Authentication -----------------------------------------------------------
def _verify_tba(request: httpx.Request) -> dict[str, str]:
    scheme, _, rest = request.headers["Authorization"].partition(" ")
    assert scheme == "OAuth"
    params = {unescape(k): unescape(v) for k, v in parse_keqv_list(parse_http_list(rest)).items()}
    signed = [(k, v) for k, v in params.items() if k not in {"realm", "oauth_signature"}]
    url = str(request.url)
    base = construct_base_string(
        request.method, url, [*parse_qsl(urlsplit(url).query), *signed], request.url.host
    )
    digest = hmac.new(
        f"{escape(CLIENT_SECRET)}&{escape(TOKEN_SECRET)}".encode(), base.encode(), hashlib.sha256
    ).digest()
    assert params["oauth_signature"] == binascii.b2a_base64(digest)[:-1].decode()
    return params


def test_tba_signs_every_request_with_hmac_sha256(
    ns_vcr: ContractVCR, tba_adapter: NetSuiteAdapter, tba_wire: list[httpx.Request]
) -> None:
    with ns_vcr.use_cassette("tba_get_invoice.yaml") as cass:
        snap = tba_adapter.get_document(nc.INVOICE_ID)
    _assert_all_played(cass)  # no token call at all
    assert snap.balance == Decimal("95.00")
    get, suiteql = tba_wire
    for request in (get, suiteql):
        params = _verify_tba(request)
        assert params["realm"] == nc.ACCOUNT_ID
        assert params["oauth_signature_method"] == "HMAC-SHA256"
        assert params["oauth_consumer_key"] == CLIENT_ID
        assert params["oauth_token"] == TOKEN_ID
        assert params["oauth_version"] == "1.0"
    # The JSON body of the SuiteQL POST is covered by the signature (body hash).
    assert "oauth_body_hash" in _verify_tba(suiteql)


# -- 8. no repeats, no drift ----------------------------------------------------------------
def test_a_second_send_fails_because_repeats_are_off(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter
) -> None:
    with ns_vcr.use_cassette("push_customer_payment.yaml") as cass:
        first = ns_adapter.push_payments([_pay()], idempotency_key=nc.CUSTOMER_PAYMENT_EID)
        assert first[0].payment is not None
        with pytest.raises(CannotOverwriteExistingCassetteException):
            ns_adapter.push_payments([_pay()], idempotency_key=nc.CUSTOMER_PAYMENT_EID)
    assert cass.play_count == 2  # the grant and the one POST


@pytest.mark.parametrize(
    "changes",
    [{"amount": Decimal("5.01")}, {"provider_key": "EXT-TEST-3201"}, {"reference": "other"}],
)
def test_a_changed_body_does_not_match_the_cassette(
    ns_vcr: ContractVCR, ns_adapter: NetSuiteAdapter, changes: dict[str, Any]
) -> None:
    request = PaymentRequest(**{**_pay().__dict__, **changes})
    with (
        ns_vcr.use_cassette("push_customer_payment.yaml"),
        pytest.raises(CannotOverwriteExistingCassetteException),
    ):
        ns_adapter.push_payments([request], idempotency_key=request.provider_key)


# -- 9. the error decision table ----------------------------------------------------------------
# One (detail, o:errorPath) per row, in the table's order: a row added without a sample,
# or a sample that reaches another row, fails test_every_error_table_row_is_reachable.
LOGIN_DETAIL = SAMPLES["netsuite_rest_error_examples"]["invalid_login_401"]["body"][
    "o:errorDetails"
][0]["detail"]
ROW_SAMPLES: list[tuple[str, str | None]] = [
    (nc.DUPLICATE_DETAIL, None),
    (
        "Error while accessing a resource. You cannot apply 50.01 to 1001: "
        "the amount due is 50.00.",
        "apply.items[0].amount",
    ),
    (
        "Error while accessing a resource. The total applied (60.00) exceeds the payment "
        "amount (50.00).",
        "payment",
    ),
    (
        "Error while accessing a resource. This record has been locked by a user defined workflow.",
        None,
    ),
    (
        "Error while accessing a resource. You cannot create a payment from invoice 1001: it is not open.",
        None,
    ),
    ("Error while accessing a resource. Record has been changed.", None),
    (
        "Unable to save record. Record was changed by a different user. Please reload and try again.",
        None,
    ),
    ("Error while accessing a resource. Please enter value(s) for: Customer", "customer"),
    (
        "Error while accessing resource: You have entered an Invalid Field Value 8935 for the "
        "following field: doc",
        "apply.items[0].doc",
    ),
    ("Invalid doc reference key 8935.", "apply.items[0].doc"),
    (
        "Error while accessing resource: You have entered an Invalid Field Value 8935 for the "
        "following field: doc",
        None,
    ),
    ("Invalid transaction reference key 8935.", None),
    (
        "Error while accessing resource: You have entered an Invalid Field Value 6 for the "
        "following field: account",
        "account",
    ),
    ("Invalid account reference key 6.", "account"),
    (
        "Error while accessing resource: You have entered an Invalid Field Value 9 for the "
        "following field: currency",
        "currency",
    ),
    ("Invalid entity reference key 313 for subsidiary 2.", "customer"),
    ("Value 0.0 outside of valid min/max range for field payment", "payment"),
    (
        'A request with the same idempotency key is already submitted. See the "Location" header',
        None,
    ),
    ("SSS_REQUEST_LIMIT_EXCEEDED", None),
    ("Only one request may be made against a session at a time", None),
    ("The request was blocked: concurrent request limit", None),
    ("This record has been locked by a user defined workflow.", None),
    ("Invalid search query. Detailed unprocessed description follows. Unparseable date:", "q"),
    ("Unknown field name 'lastModifiedDate' in the search query.", "q"),
    ("Invalid value for the request header Prefer.", "Prefer"),
    ("Invalid login attempt: the access token has expired.", None),
    (LOGIN_DETAIL, None),
    ("Unauthorized", None),
    (
        "Permission Violation: You need the 'Lists -> Currency' permission to access this page.",
        None,
    ),
    ("Forbidden", None),
    (nc.NONEXISTENT_DETAIL, None),
    ("The record type [nope] is invalid.", None),
    ("The HTTP method PUT is not allowed for /services/rest/record/v1/invoice.", None),
    ("Unsupported Media Type", None),
    (nc.CONCURRENCY_DETAIL, None),
    ("Too Many Requests", None),
    (nc.UNEXPECTED_DETAIL, None),
    ("Service Unavailable", None),
]


def test_every_row_has_a_sample() -> None:
    assert len(ROW_SAMPLES) == len(NETSUITE_ERROR_TABLE)


@pytest.mark.parametrize(
    "index",
    range(len(NETSUITE_ERROR_TABLE)),
    ids=lambda i: f"row{i}-{NETSUITE_ERROR_TABLE[i].status}-{NETSUITE_ERROR_TABLE[i].code}",
)
def test_every_error_table_row_is_reachable(index: int) -> None:
    rule = NETSUITE_ERROR_TABLE[index]
    assert index < len(ROW_SAMPLES), f"add a sample detail for row {index}: {rule}"
    detail, path = ROW_SAMPLES[index]
    status = rule.status if rule.status is not None else 400
    assert re.search(rule.pattern, detail, re.IGNORECASE)
    assert netsuite_error_rule(status, rule.code, detail, path) is rule, "row shadowed"

    err = translate_netsuite_error(status, rule.code, detail, path=path)
    assert type(err) is rule.error
    assert err.status_code == status
    assert err.provider_message == detail
    assert err.provider_code == (rule.code or str(status))
    on_write = translate_netsuite_error(status, rule.code, detail, path=path, write=True)
    assert type(on_write) is (OutcomeUnknown if rule.error is Transient else rule.error)


def _fact_sheet_codes() -> set[str]:
    text = FACT_SHEET.read_text(encoding="utf-8")
    codes = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`", text))
    codes |= set(re.findall(r"o:errorCode:\s*`?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)", text))
    # Names in backticks that are not error codes (query operators, placeholders).
    return codes - {"ON_OR_AFTER", "ON_OR_BEFORE", "REST_SERVICES"}


def test_the_fact_sheet_lists_the_codes_we_expect() -> None:
    codes = _fact_sheet_codes()
    assert {
        "USER_ERROR",
        "INVALID_CONTENT",
        "INVALID_LOGIN",
        "RCRD_HAS_BEEN_CHANGED",
        "INVALID_KEY_OR_REF",
        "IDEMPOTENCY_ERROR",
        "CONCURRENCY_LIMIT_EXCEEDED",
    } <= codes
    assert len(codes) >= 14


@pytest.mark.parametrize("code", sorted(_fact_sheet_codes()))
def test_every_fact_sheet_error_code_has_its_own_row(code: str) -> None:
    rows = [r for r in NETSUITE_ERROR_TABLE if r.code == code]
    assert rows, f"{code} (fact sheet) has no row in NETSUITE_ERROR_TABLE"
    status = rows[0].status or 400
    rule = netsuite_error_rule(status, code, "a detail NetSuite never wrote")
    assert rule is not None and rule.code == code, f"{code} only reaches a generic row"


SAMPLE_ERRORS: dict[str, type[ConnectorError]] = {
    "invalid_login_401": AuthRevoked,
    "invalid_login_401_client_report": AuthRevoked,
    "invalid_reference_in_body_400": ValidationRejected,
    "duplicate_idempotency_key_async": ValidationRejected,
    "nonexistent_field_in_q_filter_400": ValidationRejected,
    "duplicate_externalId_on_create_400_UNVERIFIED_SOURCE": OutcomeUnknown,
    "workflow_locked_record_UNVERIFIED_SOURCE": DocumentNotPayable,
}


def test_every_sample_error_body_translates() -> None:
    examples = {k: v for k, v in SAMPLES["netsuite_rest_error_examples"].items() if k[0] != "_"}
    assert set(examples) == set(SAMPLE_ERRORS)
    for name, example in examples.items():
        status = int(example.get("http_status", 400))
        response = httpx.Response(status, content=jsonutil.dumps(example["body"]).encode())
        err = NetSuiteAdapter._error_from(response, write=False)
        assert type(err) is SAMPLE_ERRORS[name], name
        assert err.provider_code == example["body"]["o:errorDetails"][0]["o:errorCode"]
        assert err.provider_message == example["body"]["o:errorDetails"][0]["detail"]


def test_unlisted_5xx_is_transient_on_reads_and_unknown_on_writes() -> None:
    assert type(translate_netsuite_error(502, None, "Bad Gateway")) is Transient
    assert type(translate_netsuite_error(504, None, "Timeout", write=True)) is OutcomeUnknown
    assert type(translate_netsuite_error(418, None, "?")) is ValidationRejected


# -- 10. the mapping ---------------------------------------------------------------------------
def test_a_mistake_in_a_write_table_names_the_table(tmp_path: Path) -> None:
    shipped = Path(nc.__file__).parents[3] / "connector" / "mappings" / "netsuite.toml"
    text = shipped.read_text(encoding="utf-8")
    assert load_netsuite_mapping(shipped).writers.keys() == {"customer_payment", "vendor_payment"}
    typo = tmp_path / "typo.toml"
    typo.write_text(
        text.replace('"entity.id" = "contact_remote_id"', '"entity.id" = "contact_remote_idd"')
    )
    with pytest.raises(MappingError) as info:
        load_netsuite_mapping(typo)
    assert info.value.key == "write.vendor_payment.entity.id"
    missing = tmp_path / "missing.toml"
    missing.write_text(text.replace("[write.customer_payment]", "[write.customer_paymnt]"))
    with pytest.raises(MappingError, match=r"write\.customer_payment"):
        load_netsuite_mapping(missing)


# -- cassettes: secrets and provenance -----------------------------------------------------------
CASSETTE_FILES = sorted(nc.CASSETTE_DIR.glob("*.yaml"))
BEARER = re.compile(r"Bearer\s+[A-Za-z0-9\-._~+/]+=*")


def test_cassettes_exist() -> None:
    assert {p.name for p in CASSETTE_FILES} == {f"{n}.yaml" for n in nc.BUILDERS}


@pytest.mark.parametrize("path", CASSETTE_FILES, ids=lambda p: p.name)
def test_cassette_holds_no_secrets(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for secret in SECRET_STRINGS:
        assert secret not in text
    assert not BEARER.search(text)
    assert "authorization" not in text.lower()
    assert "client_assertion=" not in text
    assert "eyJ" not in text  # no JWT (assertion or token)
    assert "oauth_signature" not in text
    assert set(re.findall(r"uri: (https://[^/]+)/", text)) <= {nc.BASE_URL}


def test_cassettes_match_generator() -> None:
    stale = stale_cassettes(nc.build_all(), nc.CASSETTE_DIR)
    assert not stale, f"run python -m tests.contract.netsuite.netsuite_cassettes; stale: {stale}"


# -- recording: the scrubbers on real traffic ---------------------------------------------------
class _StubNetSuite(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in for the account's host (recording test only)."""

    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def _answer(self, status: int, payload: object) -> None:
        body = jsonutil.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path, dict(self.headers.items()), body))
        return body

    def do_POST(self) -> None:
        self._read()
        if self.path.endswith("/token"):
            payload = {"access_token": "at-live-5c1d", "expires_in": 3600, "token_type": "bearer"}
            self._answer(200, payload)
        else:
            self._answer(
                200, {"items": [{"links": [], "id": "1", "isbasecurrency": "T", "symbol": "USD"}]}
            )

    def do_GET(self) -> None:
        self._read()
        self._answer(200, nc.invoice_record())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stub_netsuite() -> Iterator[str]:
    _StubNetSuite.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubNetSuite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("mode", ["jwt", "tba"])
def test_recording_scrubs_secrets_and_replays_strictly(
    tmp_path: Path, key_path: Path, stub_netsuite: str, mode: str
) -> None:
    settings = make_settings(
        key_path,
        mode=mode,
        base_url=stub_netsuite,
        token_url=f"{stub_netsuite}/services/rest/auth/oauth2/v1/token",
    )

    def read(db: str, config: ContractVCR) -> Decimal:
        store = Store(f"sqlite:///{tmp_path}/{db}")
        store.upgrade()
        adapter = NetSuiteAdapter(settings, store)
        try:
            with config.use_cassette("recorded.yaml"):
                return adapter.get_document(nc.INVOICE_ID).balance
        finally:
            adapter.close()
            store.dispose()

    assert read("record.db", make_vcr(tmp_path, record_mode="all")) == Decimal("95.00")
    # The secrets really went over the wire...
    authorizations = [h.get("Authorization", "") for _, path, h, _ in _StubNetSuite.seen]
    if mode == "jwt":
        token_call = _StubNetSuite.seen[0]
        assertion = dict(parse_qsl(token_call[3].decode()))["client_assertion"]
        assert assertion.startswith("eyJ")
        assert authorizations[1:] == ["Bearer at-live-5c1d"] * 2
        secrets = [assertion, "at-live-5c1d"]
    else:
        assert all(a.startswith('OAuth realm="1234567"') for a in authorizations)
        secrets = [a.split("oauth_signature=")[1] for a in authorizations]
    # ...and none of them reached the cassette.
    text = (tmp_path / "recorded.yaml").read_text(encoding="utf-8")
    for secret in (*SECRET_STRINGS, *secrets):
        assert secret not in text
    assert "authorization" not in text.lower()
    assert "client_assertion=" not in text
    assert "eyJ" not in text

    # The recording replays under the strict config, with the stub gone quiet.
    _StubNetSuite.seen = []
    assert read("replay.db", make_vcr(tmp_path)) == Decimal("95.00")
    assert _StubNetSuite.seen == []


def test_connection_overrides_change_the_payload_and_mistakes_name_the_connection(
    key_path: Path,
) -> None:
    custom = load_connection_mapping(
        make_settings(key_path, mapping={"write": {"vendor_payment": {"memo": "intent_id"}}})
    )
    values = {**_pay("bill").as_mapping_input(), "intent_id": "intent-42"}
    assert custom.write("bill", values)["memo"] == "intent-42"
    assert custom.write("invoice", values)["memo"] == nc.REFERENCE  # only AP changed

    with pytest.raises(MappingError) as info:
        load_connection_mapping(
            make_settings(key_path, mapping={"write": {"customer_payment": {"memo": "memo_txt"}}})
        )
    assert info.value.file == "connections[id='netsuite-test'].mapping"
    assert info.value.key == "write.customer_payment.memo"
    with pytest.raises(MappingError, match="cannot be overridden"):
        load_connection_mapping(make_settings(key_path, mapping={"provider": "xero"}))
