"""Contract tests of the QuickBooks adapter against cassettes built from Intuit's samples.

Every cassette starts with the OAuth refresh against oauth.platform.intuit.com, then
the Accounting API calls on quickbooks.api.intuit.com. vcrpy replays only
(record_mode "none"), matches request bodies byte for byte and plays no interaction
twice (see ``conftest.py``).
"""

from __future__ import annotations

import base64
import re
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import vcr
from vcr.errors import CannotOverwriteExistingCassetteException

from connector import jsonutil
from connector.adapters import base as adapters_base
from connector.adapters.base import PaymentRequest
from connector.adapters.quickbooks import (
    QUICKBOOKS_ERROR_TABLE,
    QuickBooksAdapter,
    load_connection_mapping,
    load_quickbooks_mapping,
    translate_quickbooks_error,
)
from connector.errors import (
    AmountExceedsBalance,
    AuthExpired,
    AuthRevoked,
    ConnectorError,
    DocumentNotFound,
    OutcomeUnknown,
    RateLimited,
    StaleRowVersion,
    Transient,
    ValidationRejected,
)
from connector.mapping import MappingError
from connector.sandbox.clock import Clock
from connector.sandbox.faults import Faults
from connector.sandbox.quickbooks import QuickBooksLedger
from connector.state import ConnectionRecord
from connector.store import Store
from tests.adapters.quickbooks.conftest import Server
from tests.contract.conftest import CLIENT_ID, CLIENT_SECRET, SECRET_STRINGS, ContractVCR
from tests.contract.quickbooks import qbo_cassettes as qc
from tests.contract.quickbooks.conftest import make_settings, make_vcr
from tests.contract.vcrkit import stale_cassettes

API_PATH = f"/v3/company/{qc.REALM_ID}"


def _pay(
    key: str = "k1",
    *,
    intent: str = "intent-1",
    document: str = "70",
    amount: str = "55.00",
    contact: str = "20",
    on: date = date(2015, 1, 16),
    kind: str = "invoice",
) -> PaymentRequest:
    return PaymentRequest(
        intent_id=intent,
        document_remote_id=document,
        amount=Decimal(amount),
        currency="USD",
        transaction_date=on,
        reference=qc.REFERENCE,
        account_code="4",
        document_type=kind,
        contact_remote_id=contact,
        provider_key=key,
    )


def _bill(key: str, **kw: Any) -> PaymentRequest:
    return _pay(key, kind="bill", **kw)


def _assert_all_played(cassette: vcr.cassette.Cassette) -> None:
    assert cassette.all_played, f"unplayed interactions in {cassette._path}"
    assert cassette.play_count == len(cassette)


# -- 1. reads ---------------------------------------------------------------------------------
def test_get_invoice_by_id_maps_the_open_invoice(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter, qbo_wire: list[httpx.Request]
) -> None:
    with qbo_vcr.use_cassette("get_invoice_by_id.yaml") as cass:
        snap = qbo_adapter.get_document("130")
    _assert_all_played(cass)

    assert (snap.remote_id, snap.number, snap.kind) == ("130", "1037", "invoice")
    assert (snap.status, snap.provider_status, snap.payable) == ("authorised", "Open", True)
    assert snap.currency == "USD"  # no CurrencyRef: the company's home currency
    assert str(snap.total) == "362.07" and str(snap.balance) == "362.07"
    assert snap.row_version == "0"
    assert snap.contact_remote_id == "24"
    assert snap.record["customer_name"] == "Sonnenschein Family Store"
    assert snap.record["due_date"] == date(2014, 10, 19)
    assert snap.record["remote_updated_at"] == datetime(2014, 9, 19, 20, 16, 17, tzinfo=UTC)
    first = qbo_wire[0]
    assert first.url.path == f"{API_PATH}/invoice/130"
    assert first.url.params["minorversion"] == "75"
    assert "requestid" not in first.url.params
    assert first.headers["Authorization"] == "Bearer scrubbed-access-token-1"


def test_get_bill_with_balance_zero_is_paid(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter
) -> None:
    with qbo_vcr.use_cassette("get_bill_paid.yaml") as cass:
        snap = qbo_adapter.get_document("25", "bill")
    _assert_all_played(cass)
    assert (snap.kind, snap.status, snap.provider_status) == ("bill", "paid", "Paid")
    assert snap.payable is False
    assert snap.total == Decimal("103.55") and snap.balance == Decimal("0.00")
    assert snap.contact_remote_id == "46"
    assert snap.record["supplier_name"] == "Norton Lumber and Building Materials"
    assert snap.row_version == "2"


def test_get_invoice_by_number_falls_back_from_id_to_docnumber(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter, qbo_wire: list[httpx.Request]
) -> None:
    with qbo_vcr.use_cassette("get_invoice_by_number.yaml") as cass:
        snap = qbo_adapter.get_document("1037")
    _assert_all_played(cass)
    assert snap.remote_id == "130"
    assert qbo_wire[1].url.params["query"] == "SELECT * FROM Invoice WHERE DocNumber = '1037'"


def test_unknown_document_is_not_found(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter
) -> None:
    with (
        qbo_vcr.use_cassette("get_invoice_missing.yaml") as cass,
        pytest.raises(DocumentNotFound, match="'999'"),
    ):
        qbo_adapter.get_document("999")
    _assert_all_played(cass)


def test_token_refresh_is_scrubbed_and_the_rotated_grant_stored(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter, sqlite_store: Store
) -> None:
    with qbo_vcr.use_cassette("get_bill_paid.yaml") as cass:
        qbo_adapter.get_document("25", "bill")
    token_request = cass.requests[0]
    assert token_request.uri == qc.TOKEN_URL
    assert token_request.body == b"grant_type=refresh_token"
    assert "authorization" not in {k.lower() for k in token_request.headers}
    with sqlite_store.session() as s:
        rec = s.get(ConnectionRecord, "qbo-test")
        assert rec is not None
        assert rec.access_token == "scrubbed-access-token-1"
        assert rec.refresh_token == "scrubbed-refresh-token-1"


# -- 2. writes: the exact requests -------------------------------------------------------------
def test_push_payment_sends_the_exact_body_with_requestid(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter, qbo_wire: list[httpx.Request]
) -> None:
    with qbo_vcr.use_cassette("push_payment_ok.yaml") as cass:
        [result] = qbo_adapter.push_payments([_pay("k1")], idempotency_key="k1")
    _assert_all_played(cass)

    expected = jsonutil.dumps(qc.payment_body()).encode()
    assert b'"TotalAmt": 55.00,' in expected  # a JSON number, digit for digit
    post, verify = qbo_wire
    assert post.method == "POST"
    assert post.url.path == f"{API_PATH}/payment"
    assert dict(post.url.params) == {"requestid": "k1", "minorversion": "75"}
    assert post.headers["Content-Type"] == "application/json"
    assert post.content == expected
    assert cass.requests[1].body == expected
    # The created payment is read back (a replayed requestid may name a dead one).
    assert verify.url.params["query"] == "SELECT * FROM Payment WHERE Id IN ('163')"

    assert result.error is None and result.status_code == 200
    assert result.payment is not None
    assert result.payment.remote_id == "163"
    assert result.payment.document_remote_id == "70"
    assert result.payment.amount == Decimal("55.00")
    assert result.payment.reference == qc.REFERENCE
    assert result.payment.status == "authorised"
    assert result.payment.record["type"] == "accounts_receivable"
    assert result.payment.record["row_version"] == "0"


@pytest.mark.parametrize(
    ("cassette_name", "key", "overrides", "request_kw", "remote_id"),
    [
        (
            "push_bill_payment_check.yaml",
            "k2",
            {},
            {"document": "234", "amount": "200.00", "contact": "56", "on": date(2015, 7, 14)},
            "236",
        ),
        (
            "push_bill_payment_card.yaml",
            "k3",
            {"bill_payment_type": "CreditCard", "bill_payment_account_code": "41"},
            {"document": "78", "amount": "86.44", "contact": "48"},
            "165",
        ),
    ],
    ids=["check", "credit-card"],
)
def test_push_bill_payment_by_pay_type(
    qbo_vcr: ContractVCR,
    sqlite_store: Store,
    cassette_name: str,
    key: str,
    overrides: dict[str, str],
    request_kw: dict[str, Any],
    remote_id: str,
) -> None:
    adapter = QuickBooksAdapter(make_settings(**overrides), sqlite_store)
    try:
        with qbo_vcr.use_cassette(cassette_name) as cass:
            [result] = adapter.push_payments([_bill(key, **request_kw)], idempotency_key=key)
    finally:
        adapter.close()
    _assert_all_played(cass)
    assert result.payment is not None
    assert result.payment.remote_id == remote_id
    assert result.payment.amount == Decimal(request_kw["amount"])
    assert result.payment.record["type"] == "accounts_payable"
    assert result.payment.reference == qc.REFERENCE


@pytest.mark.parametrize(
    ("cassette_name", "key", "error", "code"),
    [
        ("push_payment_stale.yaml", "k4", StaleRowVersion, "5010"),
        ("push_payment_exceeds.yaml", "k5", AmountExceedsBalance, "6000"),
        ("push_payment_replayed_dead.yaml", "k6", StaleRowVersion, "replayed_dead_payment"),
    ],
)
def test_per_item_refusals_are_item_results(
    qbo_vcr: ContractVCR,
    qbo_adapter: QuickBooksAdapter,
    cassette_name: str,
    key: str,
    error: type[ConnectorError],
    code: str,
) -> None:
    with qbo_vcr.use_cassette(cassette_name) as cass:
        [result] = qbo_adapter.push_payments([_pay(key)], idempotency_key=key)
    _assert_all_played(cass)
    assert result.payment is None
    assert type(result.error) is error
    assert result.error.provider_code == code


def test_exceeds_keeps_quickbooks_message(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter
) -> None:
    with qbo_vcr.use_cassette("push_payment_exceeds.yaml"):
        [result] = qbo_adapter.push_payments([_pay("k5")], idempotency_key="k5")
    assert result.error is not None
    assert result.error.status_code == 400
    assert result.error.provider_message == f"{qc.MSG_BUSINESS}: {qc.DETAIL_EXCEEDS}"
    assert "intuit_tid 1-6aa36f3e" in result.error.message


def test_500_on_a_write_is_outcome_unknown(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter
) -> None:
    with qbo_vcr.use_cassette("push_payment_500.yaml") as cass, pytest.raises(OutcomeUnknown):
        qbo_adapter.push_payments([_pay("k7")], idempotency_key="k7")
    _assert_all_played(cass)


def test_batch_push_answers_per_item_in_request_order(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter, qbo_wire: list[httpx.Request]
) -> None:
    batch = [
        _pay("k8", intent="i-pay"),
        _bill(
            "k8",
            intent="i-bill",
            document="234",
            amount="200.00",
            contact="56",
            on=date(2015, 7, 14),
        ),
    ]
    with qbo_vcr.use_cassette("push_batch.yaml") as cass:
        paid, stale = qbo_adapter.push_payments(batch, idempotency_key="k8")
    _assert_all_played(cass)
    assert qbo_wire[0].url.path == f"{API_PATH}/batch"
    assert qbo_wire[0].url.params["requestid"] == "k8"
    assert paid.intent_id == "i-pay" and paid.payment is not None
    assert paid.payment.remote_id == "163"
    assert stale.intent_id == "i-bill" and stale.payment is None
    assert type(stale.error) is StaleRowVersion
    assert stale.error.provider_code == "5010"


def test_find_payment_keeps_our_reference_on_our_invoice(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter
) -> None:
    with qbo_vcr.use_cassette("find_payment.yaml") as cass:
        found = qbo_adapter.find_payment(_pay())
    _assert_all_played(cass)
    assert [(p.remote_id, p.status) for p in found] == [("163", "authorised"), ("166", "deleted")]
    live, voided = found
    assert live.amount == Decimal("55.00")
    assert live.reference == qc.REFERENCE
    assert voided.amount == Decimal("0.00")
    assert voided.record["status"] == "void"


# -- 3. pulls ---------------------------------------------------------------------------------
def test_list_changed_invoices_pages_by_last_updated_time(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter, qbo_wire: list[httpx.Request]
) -> None:
    since = datetime.fromisoformat(qc.SINCE)
    with qbo_vcr.use_cassette("list_changed_invoices.yaml") as cass:
        page = qbo_adapter.list_changed("invoice", since, page=1, page_size=2)
    _assert_all_played(cass)
    statement = qbo_wire[0].url.params["query"]
    assert "WHERE MetaData.LastUpdatedTime >= '2014-09-19T20:00:00+00:00'" in statement
    assert " OR " not in statement
    assert [(r["remote_id"], r["status"]) for r in page.records] == [
        ("130", "authorised"),
        ("131", "void"),
    ]
    assert page.has_more is True  # a full page of 2
    assert page.max_updated_at == datetime(2014, 9, 20, 16, 0, tzinfo=UTC)


def test_list_changed_payments_merges_both_kinds_with_allocations(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter
) -> None:
    since = datetime.fromisoformat(qc.SINCE)
    with qbo_vcr.use_cassette("list_changed_payments.yaml") as cass:
        page = qbo_adapter.list_changed("payment", since, page=1, page_size=2)
    _assert_all_played(cass)
    by_id = {r["remote_id"]: r for r in page.records}
    assert by_id["163"]["type"] == "accounts_receivable"
    assert by_id["163"]["total_amount"] == Decimal("65.00")  # 10.00 of it unapplied
    assert by_id["163"]["allocations"] == [
        {"id": "70", "type": "invoice", "amount": Decimal("55.0")}
    ]
    assert by_id["236"]["type"] == by_id["165"]["type"] == "accounts_payable"
    assert by_id["165"]["account_id"] == "41"  # the card account
    assert by_id["236"]["account_id"] == "35"
    assert page.has_more is True  # the BillPayment stream filled its page
    # The cut-off is the full stream's last change, not the later Payment's.
    assert page.max_updated_at == datetime(2015, 7, 14, 19, 34, 4, tzinfo=UTC)


def test_changes_reads_cdc_with_deleted_entries(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter
) -> None:
    with qbo_vcr.use_cassette("cdc.yaml") as cass:
        changes = qbo_adapter.changes(["invoice", "payment"], datetime.fromisoformat(qc.SINCE))
    _assert_all_played(cass)
    live, deleted = changes["invoice"]
    assert live["remote_id"] == "130" and live["status"] == "authorised"
    assert deleted == {
        "remote_id": "979",
        "status": "deleted",
        "deleted": True,
        "remote_updated_at": datetime.fromisoformat("2015-12-23T12:55:50-08:00"),
    }
    assert changes["payment"] == []


# -- 4. errors at the boundary --------------------------------------------------------------
def test_fault_inside_a_200_is_an_error(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter
) -> None:
    with (
        qbo_vcr.use_cassette("fault_in_200.yaml") as cass,
        pytest.raises(ValidationRejected) as info,
    ):
        qbo_adapter.list_changed("invoice", None, page=1, page_size=10)
    _assert_all_played(cass)
    assert info.value.provider_code == "4001"
    assert info.value.status_code == 200


def test_401_token_expired_refreshes_once_and_resends(
    qbo_vcr: ContractVCR,
    qbo_adapter: QuickBooksAdapter,
    sqlite_store: Store,
    qbo_wire: list[httpx.Request],
) -> None:
    with qbo_vcr.use_cassette("error_401_token_expired.yaml") as cass:
        snap = qbo_adapter.get_document("25", "bill")
    _assert_all_played(cass)
    assert snap.status == "paid"
    assert [r.headers["Authorization"] for r in qbo_wire] == [
        "Bearer scrubbed-access-token-1",
        "Bearer scrubbed-access-token-2",
    ]
    with sqlite_store.session() as s:
        rec = s.get(ConnectionRecord, "qbo-test")
        assert rec is not None and rec.refresh_token == "scrubbed-refresh-token-2"


@pytest.mark.parametrize(
    ("cassette_name", "error", "code"),
    [
        ("error_401_twice.yaml", AuthRevoked, "3200"),
        ("error_403_other_realm.yaml", AuthRevoked, "3100"),
    ],
)
def test_gateway_refusals_read_the_lower_case_fault(
    qbo_vcr: ContractVCR,
    qbo_adapter: QuickBooksAdapter,
    cassette_name: str,
    error: type[ConnectorError],
    code: str,
) -> None:
    with qbo_vcr.use_cassette(cassette_name) as cass, pytest.raises(ConnectorError) as info:
        qbo_adapter.get_document("25", "bill")
    _assert_all_played(cass)
    assert type(info.value) is error
    assert info.value.provider_code == code


def test_429_xml_throttle_is_rate_limited_without_sleeping(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter
) -> None:
    slept: list[float] = []
    qbo_adapter.http._sleep = slept.append
    with (
        qbo_vcr.use_cassette("error_429_throttle_xml.yaml") as cass,
        pytest.raises(RateLimited) as info,
    ):
        qbo_adapter.get_document("25", "bill")
    _assert_all_played(cass)
    assert info.value.retry_after == 60
    assert slept == []  # 60 s is above max_inline_wait_seconds: rescheduled, not slept


def test_503_on_a_read_is_transient(qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter) -> None:
    with qbo_vcr.use_cassette("error_503_read.yaml") as cass, pytest.raises(Transient) as info:
        qbo_adapter.get_document("25", "bill")
    _assert_all_played(cass)
    assert info.value.status_code == 503


@pytest.mark.parametrize(
    ("status", "body", "content_type", "error", "code"),
    [
        (429, qc.THROTTLE_XML, "application/xml", RateLimited, "3001"),
        (
            401,
            jsonutil.dumps(qc._gateway(401, "3200", "AuthenticationFailed", "Token expired: AB0")),
            "application/json",
            AuthExpired,
            "3200",
        ),
        (
            400,
            jsonutil.dumps(qc._fault("610", "Object Not Found", "Object Not Found : gone")),
            "application/json",
            DocumentNotFound,
            "610",
        ),
        (502, "Bad Gateway", "text/plain", Transient, "502"),
    ],
    ids=["xml-throttle", "gateway-401-expired", "fault-610", "plain-502"],
)
def test_error_bodies_in_every_form(
    status: int, body: str, content_type: str, error: type[ConnectorError], code: str
) -> None:
    response = httpx.Response(status, content=body.encode(), headers={"Content-Type": content_type})
    data = None if content_type != "application/json" else jsonutil.loads(body)
    err = QuickBooksAdapter._error_from(response, data, write=False)
    assert type(err) is error
    assert err.provider_code == code
    assert err.status_code == status


# -- 5. strict replay --------------------------------------------------------------------------
def test_duplicate_send_fails_because_repeats_are_off(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter
) -> None:
    with qbo_vcr.use_cassette("push_payment_ok.yaml") as cass:
        [first] = qbo_adapter.push_payments([_pay("k1")], idempotency_key="k1")
        assert first.payment is not None
        with pytest.raises(CannotOverwriteExistingCassetteException):
            qbo_adapter.push_payments([_pay("k1")], idempotency_key="k1")
    assert cass.play_count == 3  # the token call, the one POST and its read-back


@pytest.mark.parametrize(
    ("request_", "key"),
    [(_pay("k1", amount="55.01"), "k1"), (_pay("k1"), "k1-other")],
    ids=["one-cent-more", "other-requestid"],
)
def test_changed_body_or_requestid_does_not_match(
    qbo_vcr: ContractVCR, qbo_adapter: QuickBooksAdapter, request_: PaymentRequest, key: str
) -> None:
    with (
        qbo_vcr.use_cassette("push_payment_ok.yaml"),
        pytest.raises(CannotOverwriteExistingCassetteException),
    ):
        qbo_adapter.push_payments([request_], idempotency_key=key)


# -- 6. the error decision table ---------------------------------------------------------------
# A (status, code, message) for every row, keyed by the row: a new row without a sample
# here fails test_every_error_table_row_is_reachable.
ROW_SAMPLES: dict[tuple[int | None, tuple[str, ...], str], tuple[int, str | None, str]] = {
    (None, ("5010",), r".*"): (400, "5010", "Stale Object Error: You and root were working…"),
    (None, ("600",), r".*"): (400, "600", "Duplicate Request ID"),
    (None, ("610",), r".*"): (400, "610", "Object Not Found: Something you're trying to use…"),
    (None, ("620",), r".*"): (400, "620", "Txn ID cannot be linked"),
    (None, ("6000",), r"exceeds the payment total|credits applied exceed"): (
        400,
        "6000",
        "The amount applied to transactions (80.00) exceeds the payment total (50.00)",
    ),
    (None, ("6000",), r"exceed\w*\b.*\bbalance|more than the (open )?balance"): (
        400,
        "6000",
        qc.DETAIL_EXCEEDS,
    ),
    (None, ("6000",), r"(doesn't|does not|no longer) exist|has been deleted"): (
        400,
        "6000",
        "The Invoice with Id 9 you're linking to doesn't exist or has been deleted",
    ),
    (None, ("6000",), r"voided|already (been )?paid|paid in full"): (
        400,
        "6000",
        "This Invoice has been voided",
    ),
    (None, ("6000",), r"another (customer|vendor)|belongs to another"): (
        400,
        "6000",
        "Invoice 1037 belongs to another customer",
    ),
    (None, ("6000",), r"currenc"): (400, "6000", "The currency EUR does not match USD"),
    (None, ("6000",), r"account"): (400, "6000", "DepositToAccountRef must be a Bank account"),
    (None, ("6000",), r".*"): (400, "6000", qc.MSG_BUSINESS),
    (None, ("6140", "6210", "6240"), r"duplicate"): (
        400,
        "6140",
        "Duplicate Document Number Error",
    ),
    (None, ("6200", "6210"), r".*"): (400, "6200", "Account Period Closed"),
    (None, ("6190",), r".*"): (400, "6190", "Invalid Company Status"),
    (None, ("10200",), r".*"): (400, "10200", "Company Reset"),
    (None, ("5020", "120"), r".*"): (403, "5020", "Permission Denied Error"),
    (None, ("3001",), r".*"): (429, "3001", "message=ThrottleExceeded; errorCode=003001"),
    (None, ("3200",), r"expired"): (401, "3200", "AuthenticationFailed: Token expired: AB0"),
    (None, ("3200",), r".*"): (401, "3200", "message=AuthenticationFailed; errorCode=003200"),
    (None, ("3100",), r".*"): (403, "3100", "message=ApplicationAuthorizationFailed"),
    (None, ("2130",), r".*"): (400, "2130", "Invalid Request Id Format"),
    (None, ("1040",), r".*"): (400, "1040", "Batch size exceeds allowed limit"),
    (None, ("4000", "4001", "4002", "10100"), r".*"): (400, "4000", "Error parsing query"),
    (
        None,
        ("630", "2010", "2020", "2050", "2140", "2290", "2500", "5030", "6070"),
        r".*",
    ): (400, "2020", "Required param missing"),
    (None, ("6540",), r".*"): (400, "6540", "Deposited Transaction cannot be changed"),
    (None, ("10000",), r".*"): (500, "10000", qc.MSG_SYSTEM),
    (400, (), r".*"): (400, None, "Bad Request"),
    (401, (), r"expired"): (401, None, "token expired"),
    (401, (), r".*"): (401, None, "Unauthorized"),
    (403, (), r".*"): (403, None, "Forbidden"),
    (404, (), r".*"): (404, None, "Not Found"),
    (429, (), r".*"): (429, None, ""),
    (500, (), r".*"): (500, None, "Internal Server Error"),
    (503, (), r".*"): (503, None, "Service Unavailable"),
}


def _first_row(status: int, code: str | None, message: str) -> int | None:
    for i, rule in enumerate(QUICKBOOKS_ERROR_TABLE):
        if rule.status is not None and rule.status != status:
            continue
        if rule.codes and (code or "") not in rule.codes:
            continue
        if re.search(rule.pattern, message, re.IGNORECASE | re.DOTALL):
            return i
    return None


@pytest.mark.parametrize(
    "index",
    range(len(QUICKBOOKS_ERROR_TABLE)),
    ids=lambda i: f"row{i}-{QUICKBOOKS_ERROR_TABLE[i].codes or QUICKBOOKS_ERROR_TABLE[i].status}",
)
def test_every_error_table_row_is_reachable(index: int) -> None:
    rule = QUICKBOOKS_ERROR_TABLE[index]
    sample = ROW_SAMPLES.get((rule.status, rule.codes, rule.pattern))
    assert sample is not None, f"add a sample for row {index}: {rule}"
    status, code, message = sample
    assert _first_row(status, code, message) == index, "row shadowed by an earlier one"
    assert rule.action

    err = translate_quickbooks_error(status, code, message)
    assert type(err) is rule.error
    assert err.status_code == status
    assert err.provider_message == message
    assert err.provider_code == (code or str(status))

    on_write = translate_quickbooks_error(status, code, message, write=True)
    assert type(on_write) is (OutcomeUnknown if rule.error is Transient else rule.error)


def test_unlisted_codes_fall_back_by_status() -> None:
    assert type(translate_quickbooks_error(400, "9999", "new")) is ValidationRejected
    assert type(translate_quickbooks_error(502, None, "Bad Gateway")) is Transient
    assert (
        type(translate_quickbooks_error(504, None, "Gateway Timeout", write=True)) is OutcomeUnknown
    )


SHARED_FACT_SHEET = Path("/work/shared/providers/quickbooks.md")
VENDORED_FACT_SHEET = Path(__file__).parent / "quickbooks_fact_sheet.md"
_CODE_PREFIX = re.compile(r"(?:\bcode\s*\**\s*|\bError\s+|errorCode=0*)(\d{3,5})\b")
_CODE_LIST_ITEM = re.compile(
    r"(?:^  - |,\s*|\*\*|\band\s+)(\d{3,5}(?:/\d{3,5})*)\**\s+(?=[A-Za-z(\"])"
)


def fact_sheet_codes(text: str) -> set[str]:
    """Every error code the fact sheet names (§4 to §6 and the pain points of §12)."""
    codes: set[str] = set()
    errors = text.split("## 4.", 1)[1].split("## 7.", 1)[0]
    pains = text.split("## 12.", 1)[1].split("## 13.", 1)[0]
    for section in (errors, pains):
        codes.update(m.group(1) for m in _CODE_PREFIX.finditer(section))
    for line in errors.split("## 5.", 1)[0].splitlines():
        if line.startswith("  - "):  # the "Relevant codes" list
            for m in _CODE_LIST_ITEM.finditer(line):
                codes.update(m.group(1).split("/"))
    return codes


def test_every_fact_sheet_error_code_is_in_the_table() -> None:
    path = SHARED_FACT_SHEET if SHARED_FACT_SHEET.exists() else VENDORED_FACT_SHEET
    codes = fact_sheet_codes(path.read_text(encoding="utf-8"))
    # The parser found the list (not an empty set that proves nothing).
    assert {"610", "5010", "6000", "3200", "3001", "1040", "2130", "4001", "10000"} <= codes
    covered = {code for rule in QUICKBOOKS_ERROR_TABLE for code in rule.codes}
    assert codes <= covered, f"codes missing from QUICKBOOKS_ERROR_TABLE: {sorted(codes - covered)}"


def test_vendored_fact_sheet_is_current() -> None:
    vendored = VENDORED_FACT_SHEET.read_text(encoding="utf-8")
    if SHARED_FACT_SHEET.exists():
        assert vendored == SHARED_FACT_SHEET.read_text(encoding="utf-8")
    assert "## 4. Optimistic concurrency" in vendored


# -- 7. the mapping -------------------------------------------------------------------------
def test_mapping_writers_are_checked_at_load() -> None:
    text = (Path(__file__).parents[3] / "connector" / "mappings" / "quickbooks.toml").read_text()
    assert load_quickbooks_mapping(text).writers.keys() == {"payment", "bill_payment"}
    typo = text.replace('TotalAmt = "total_amount"', 'TotalAmt = "total_amuont"', 1)
    assert typo != text
    with pytest.raises(MappingError, match="total_amuont"):
        load_quickbooks_mapping(typo, source="typo.toml")
    in_hash = text.replace("TxnId: document_remote_id", "TxnId: document_id", 1)
    with pytest.raises(MappingError, match="document_id"):
        load_quickbooks_mapping(in_hash)
    with pytest.raises(MappingError, match=r"write\.refund"):
        load_quickbooks_mapping(text + '\n[write.refund]\nTotalAmt = "amount"\n')


def test_connection_overrides_are_merged_and_checked(
    monkeypatch: pytest.MonkeyPatch, sqlite_store: Store
) -> None:
    no_ref_num = make_settings(mapping={"write": {"payment": {"PaymentRefNum": "`null`"}}})
    body = load_connection_mapping(no_ref_num).write(
        "payment", {**_pay().as_mapping_input(), "short_reference": qc.REFERENCE}
    )
    assert "PaymentRefNum" not in body
    assert body["PrivateNote"] == qc.REFERENCE

    typo = make_settings(mapping={"write": {"bill_payment": {"TotalAmt": "amuont"}}})
    with pytest.raises(MappingError) as info:
        load_connection_mapping(typo)
    assert info.value.file == "connections[id='qbo-test'].mapping"
    with pytest.raises(MappingError, match="cannot be overridden"):
        load_connection_mapping(make_settings(mapping={"provider": "xero"}))

    # Through the project's seams, once QuickBooks is a supported provider.
    monkeypatch.setattr(adapters_base, "SUPPORTED_PROVIDERS", frozenset({"xero", "quickbooks"}))
    with pytest.raises(MappingError, match="amuont"):
        adapters_base.validate_connection_mapping(typo)
    built = adapters_base.build_adapter(make_settings(), sqlite_store)
    try:
        assert isinstance(built, QuickBooksAdapter)
        assert built.capabilities.max_key_length == 50
        assert built.capabilities.key_window is None
    finally:
        built.close()


# -- cassettes: secrets and provenance --------------------------------------------------------
CASSETTE_FILES = sorted(qc.CASSETTE_DIR.glob("*.yaml"))
# A bearer token (not the ``WWW-Authenticate: Bearer realm="Intuit"`` challenge).
BEARER = re.compile(r"Bearer\s+(?!realm=)[A-Za-z0-9\-._~+/]+=*")
AUTH_HEADER = re.compile(r"^\s*authorization:", re.IGNORECASE | re.MULTILINE)


def test_cassettes_exist() -> None:
    assert {p.name for p in CASSETTE_FILES} == {f"{n}.yaml" for n in qc.BUILDERS}


@pytest.mark.parametrize("path", CASSETTE_FILES, ids=lambda p: p.name)
def test_cassette_holds_no_secrets_and_starts_with_the_refresh(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    for secret in (*SECRET_STRINGS, basic):
        assert secret not in text
    assert not BEARER.search(text)
    assert not AUTH_HEADER.search(text)
    assert "refresh_token=" not in text and "client_secret" not in text
    hosts = re.findall(r"uri: (https://[^/?]+)", text)
    assert hosts[0] == "https://oauth.platform.intuit.com"
    assert set(hosts) <= {"https://quickbooks.api.intuit.com", "https://oauth.platform.intuit.com"}


def test_cassettes_match_generator() -> None:
    stale = stale_cassettes(qc.build_all(), qc.CASSETTE_DIR)
    assert not stale, f"run python -m tests.contract.quickbooks.qbo_cassettes; stale: {stale}"


# -- recording: the scrubbers on real QuickBooks-shaped traffic --------------------------------
def test_recording_against_the_sandbox_scrubs_secrets_and_replays_strictly(
    tmp_path: Path,
) -> None:
    ledger = QuickBooksLedger(
        seed=5,
        invoices=2,
        bills=1,
        clock=Clock(frozen_at=datetime.now(UTC).replace(microsecond=0)),
        lock=threading.RLock(),
        faults=Faults(seed=5),
        rate_limits=False,
    )
    server = Server()
    server.mount(ledger)
    try:
        table = ledger.connection_tables(server.url)[0]
        settings = make_settings(
            id="qbo-rec",
            base_url=table["base_url"],
            token_url=table["token_url"],
            client_id=table["client_id"],
            client_secret=table["client_secret"],
            refresh_token=table["refresh_token"],
            realm_id=table["realm_id"],
            payment_account_code=table["payment_account_code"],
        )
        doc = ledger.add_invoice(ledger.realm_ids[0], total=Decimal("30.00"))
        request = PaymentRequest(
            intent_id="i-rec",
            document_remote_id=doc["Id"],
            amount=Decimal("30.00"),
            currency="USD",
            transaction_date=date(2024, 5, 1),
            reference="cx-rec-1",
            account_code=table["payment_account_code"],
            contact_remote_id=doc["CustomerRef"]["value"],
        )
        secrets = [table["client_secret"], table["refresh_token"]]

        def push(db: str, config: ContractVCR) -> str | None:
            store = Store(f"sqlite:///{tmp_path}/{db}")
            store.upgrade()
            adapter = QuickBooksAdapter(settings, store)
            try:
                with config.use_cassette("recorded.yaml"):
                    [result] = adapter.push_payments([request], idempotency_key="k-rec")
                secrets.append(adapter.http.tokens.access_token())
                return result.payment.remote_id if result.payment else None
            finally:
                adapter.close()
                store.dispose()

        recorded = push("record.db", make_vcr(tmp_path, record_mode="all"))
        assert recorded is not None
        text = (tmp_path / "recorded.yaml").read_text(encoding="utf-8")
        basic = base64.b64encode(f"{table['client_id']}:{table['client_secret']}".encode()).decode()
        for secret in (*secrets, basic):
            assert secret not in text
        assert not BEARER.search(text)
        assert not AUTH_HEADER.search(text)
        assert "requestid=k-rec" in text

        server.mount(None)  # the ledger is gone: only the cassette can answer
        replayed = push("replay.db", make_vcr(tmp_path))
        assert replayed == recorded
    finally:
        server.stop()
        ledger.close()
