"""Contract tests of the Xero adapter against cassettes built from Xero's own examples.

Every cassette starts with the OAuth refresh against identity.xero.com, then
the Accounting API calls on api.xero.com. vcrpy replays only (record_mode
"none"), matches request bodies byte for byte and plays no interaction twice.
"""

from __future__ import annotations

import base64
import http.server
import re
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
import vcr
from vcr.errors import CannotOverwriteExistingCassetteException

from connector import jsonutil
from connector.adapters.base import ItemResult, PaymentRequest
from connector.adapters.xero import XERO_ERROR_TABLE, XeroAdapter, translate_xero_error
from connector.errors import (
    AmountExceedsBalance,
    AuthExpired,
    ConnectorError,
    DocumentNotFound,
    DocumentNotPayable,
    OutcomeUnknown,
    RateLimited,
    Transient,
    ValidationRejected,
)
from connector.state import ConnectionRecord
from connector.store import Store
from tests.contract import xero_cassettes as xc
from tests.contract.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    SECRET_STRINGS,
    ContractVCR,
    make_settings,
    make_vcr,
)
from tests.contract.vcrkit import stale_cassettes

PAID_UPDATED = "/Date(1551981568133+0000)/"  # UpdatedDateUTC of the spec's INV-0006


def _pay(
    invoice_id: str,
    amount: str,
    reference: str,
    *,
    intent: str = "intent-1",
    on: date = date(2019, 3, 12),
) -> PaymentRequest:
    return PaymentRequest(
        intent_id=intent,
        document_remote_id=invoice_id,
        amount=Decimal(amount),
        currency="NZD",
        transaction_date=on,
        reference=reference,
        account_code=xc.ACCOUNT_CODE,
    )


def _assert_all_played(cassette: vcr.cassette.Cassette) -> None:
    assert cassette.all_played, f"unplayed interactions in {cassette._path}"
    assert cassette.play_count == len(cassette)


# -- 1. reads ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cassette_name", "ref"),
    [("get_invoice_by_number.yaml", "INV-0006"), ("get_invoice_by_id.yaml", xc.INV_0006_PAID)],
)
def test_get_document_maps_the_paid_invoice(
    xero_vcr: ContractVCR,
    adapter: XeroAdapter,
    wire: list[httpx.Request],
    cassette_name: str,
    ref: str,
) -> None:
    with xero_vcr.use_cassette(cassette_name) as cass:
        snap = adapter.get_document(ref)
    _assert_all_played(cass)

    assert snap.remote_id == xc.INV_0006_PAID
    assert snap.number == "INV-0006"
    assert snap.kind == "invoice"
    assert snap.status == "paid"
    assert snap.provider_status == "PAID"
    assert snap.payable is False
    assert snap.currency == "NZD"
    assert isinstance(snap.total, Decimal)
    assert str(snap.total) == "148062.76"
    assert str(snap.balance) == "0.00"
    assert snap.row_version == PAID_UPDATED
    assert snap.record["remote_updated_at"] == datetime(2019, 3, 7, 17, 59, 28, 133000, tzinfo=UTC)
    assert snap.record["customer_name"] == "Liam Gallagher"
    # On the wire: tenant header and a bearer token from the refresh.
    (sent,) = wire
    assert sent.headers["xero-tenant-id"] == xc.TENANT_ID
    assert sent.headers["Authorization"] == "Bearer scrubbed-access-token-1"
    assert "Idempotency-Key" not in sent.headers


def test_get_document_by_unknown_number_is_not_found(
    xero_vcr: ContractVCR, adapter: XeroAdapter
) -> None:
    with (
        xero_vcr.use_cassette("get_invoice_by_number_missing.yaml") as cass,
        pytest.raises(DocumentNotFound, match="INV-9999"),
    ):
        adapter.get_document("INV-9999")
    _assert_all_played(cass)


def test_token_refresh_is_scrubbed_and_rotated_grant_is_stored(
    xero_vcr: ContractVCR, adapter: XeroAdapter, sqlite_store: Store
) -> None:
    with xero_vcr.use_cassette("get_invoice_by_id.yaml") as cass:
        adapter.get_document(xc.INV_0006_PAID)
    token_request = cass.requests[0]
    assert token_request.uri == xc.TOKEN_URL
    # What was matched is the scrubbed form; nothing secret was recorded.
    assert token_request.body == b"grant_type=refresh_token"
    assert "authorization" not in {k.lower() for k in token_request.headers}
    with sqlite_store.session() as s:
        rec = s.get(ConnectionRecord, "xero-test")
        assert rec is not None
        assert rec.access_token == "scrubbed-access-token-1"
        assert rec.refresh_token == "scrubbed-refresh-token-1"  # rotated and stored


# -- 2. push_payments: the exact request ---------------------------------------------
def test_push_payments_sends_exact_put_with_idempotency_key(
    xero_vcr: ContractVCR, adapter: XeroAdapter, wire: list[httpx.Request]
) -> None:
    request = _pay(xc.INV_0004_AUTHORISED, "1.00", "cx-k1-1")
    with xero_vcr.use_cassette("push_payment_ok.yaml") as cass:
        results = adapter.push_payments([request], idempotency_key="k1")
    _assert_all_played(cass)

    expected_body = jsonutil.dumps(
        {
            "Payments": [
                {
                    "Invoice": {"InvoiceID": xc.INV_0004_AUTHORISED},
                    "Account": {"Code": "970"},
                    "Date": "2019-03-12",
                    "Amount": Decimal("1.00"),
                    "Reference": "cx-k1-1",
                }
            ]
        }
    ).encode()
    assert b'"Amount": 1.00,' in expected_body  # a JSON number, digit for digit
    (sent,) = wire
    assert sent.method == "PUT"
    assert str(sent.url) == "https://api.xero.com/api.xro/2.0/Payments?summarizeErrors=false"
    assert sent.headers["Idempotency-Key"] == "k1"
    assert sent.headers["xero-tenant-id"] == xc.TENANT_ID
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.content == expected_body
    # The cassette's recorded request carries the same contract (enforced by the
    # contract_headers and raw_body matchers on replay).
    recorded = cass.requests[1]
    assert recorded.headers["Idempotency-Key"] == "k1"
    assert recorded.headers["xero-tenant-id"] == xc.TENANT_ID
    assert recorded.body == expected_body

    (result,) = results
    assert result.intent_id == "intent-1"
    assert result.error is None
    assert result.status_code == 200
    assert result.payment is not None
    assert result.payment.remote_id == xc.PAYMENT_OK_ID
    assert result.payment.document_remote_id == xc.INV_0004_AUTHORISED
    assert result.payment.amount == Decimal("1.00")
    assert result.payment.reference == "cx-k1-1"
    assert result.payment.status == "authorised"
    assert adapter.http.rate.remaining["X-MinLimit-Remaining"] == 58


# -- 3. partial failure under summarizeErrors=false ----------------------------------
def test_push_payments_mixed_results_are_per_item(
    xero_vcr: ContractVCR, adapter: XeroAdapter
) -> None:
    batch = [
        _pay(xc.INV_0004_AUTHORISED, "1.00", "cx-k2-1", intent="i-ok"),
        _pay(xc.INV_0003_AUTHORISED, "500.00", "cx-k2-2", intent="i-too-much"),
        _pay(xc.INV_0001_VOIDED, "40.00", "cx-k2-3", intent="i-voided"),
    ]
    with xero_vcr.use_cassette("push_payments_mixed.yaml") as cass:
        ok, too_much, voided = adapter.push_payments(batch, idempotency_key="k2")
    _assert_all_played(cass)

    assert ok.intent_id == "i-ok"
    assert ok.error is None
    assert ok.payment is not None
    assert ok.payment.remote_id == xc.PAYMENT_OK_ID
    assert ok.payment.amount == Decimal("1.00")

    assert too_much.intent_id == "i-too-much"
    assert too_much.payment is None  # the zero PaymentID is not a payment
    assert type(too_much.error) is AmountExceedsBalance
    assert too_much.error.provider_message == xc.MSG_EXCEEDS
    assert too_much.error.terminal

    assert voided.intent_id == "i-voided"
    assert voided.payment is None
    assert type(voided.error) is DocumentNotPayable
    assert voided.error.provider_message == xc.MSG_NOT_AUTHORISED


def test_push_payments_ok_without_payment_id_is_outcome_unknown(
    xero_vcr: ContractVCR, adapter: XeroAdapter
) -> None:
    with xero_vcr.use_cassette("push_payment_without_id.yaml") as cass:
        (result,) = adapter.push_payments(
            [_pay(xc.INV_0004_AUTHORISED, "1.00", "cx-k3-1")], idempotency_key="k3"
        )
    _assert_all_played(cass)
    assert result.payment is None
    assert type(result.error) is OutcomeUnknown


# -- 4. find_payment ----------------------------------------------------------------
def test_find_payment_keeps_exact_reference_on_the_same_invoice(
    xero_vcr: ContractVCR, adapter: XeroAdapter, wire: list[httpx.Request]
) -> None:
    # The id typed in upper case: GUIDs compare case-insensitively.
    request = _pay(xc.INV_0002_PAID.upper(), "46.00", xc.FIND_REFERENCE)
    with xero_vcr.use_cassette("find_payment.yaml") as cass:
        found = adapter.find_payment(request)
    _assert_all_played(cass)

    (sent,) = wire
    assert sent.url.raw_path == b"/api.xro/2.0/Payments?where=Reference%3D%3D%22cx-ref-1%22"
    assert [p.remote_id for p in found] == [xc.PAYMENT_FOUND_ID]
    (payment,) = found
    assert payment.reference == xc.FIND_REFERENCE
    assert payment.document_remote_id == xc.INV_0002_PAID
    assert payment.amount == Decimal("46.00")
    assert payment.status == "authorised"


# -- 5. list_changed ---------------------------------------------------------------
def test_list_changed_invoices_sends_since_and_paging(
    xero_vcr: ContractVCR, adapter: XeroAdapter, wire: list[httpx.Request]
) -> None:
    # 01:00 on 2 Nov at +13:00 is 12:00 UTC on 1 Nov.
    since = datetime(2018, 11, 2, 1, 0, 0, tzinfo=timezone(timedelta(hours=13)))
    with xero_vcr.use_cassette("list_changed_invoices.yaml") as cass:
        page = adapter.list_changed("invoice", since, page=1, page_size=100)
    _assert_all_played(cass)

    (sent,) = wire
    assert sent.headers["If-Modified-Since"] == "2018-11-01T12:00:00"
    assert sent.url.params["page"] == "1"
    assert sent.url.params["pageSize"] == "100"
    assert page.page == 1
    assert page.page_size == 100
    assert page.has_more is False  # pagination: pageCount 1
    numbers = [r["number"] for r in page.records]
    assert numbers == ["INV-0001", "INV-0002", "INV-0003"]
    assert [r["status"] for r in page.records] == ["void", "paid", "authorised"]
    assert [r["total"] for r in page.records] == [
        Decimal("40.00"),
        Decimal("46.00"),
        Decimal("115.00"),
    ]
    assert page.records[2]["balance"] == Decimal("115.00")
    assert page.records[1]["due_date"] == date(2018, 12, 30)
    assert page.max_updated_at == datetime(2018, 11, 2, 16, 37, 28, 927000, tzinfo=UTC)
    assert adapter.http.rate.remaining == {
        "X-MinLimit-Remaining": 58,
        "X-DayLimit-Remaining": 4990,
        "X-AppMinLimit-Remaining": 9998,
    }


def test_list_changed_payments_reads_pagination_has_more(
    xero_vcr: ContractVCR, adapter: XeroAdapter, wire: list[httpx.Request]
) -> None:
    with xero_vcr.use_cassette("list_changed_payments.yaml") as cass:
        page = adapter.list_changed("payment", None, page=1, page_size=2)
    _assert_all_played(cass)

    (sent,) = wire
    assert "If-Modified-Since" not in sent.headers
    assert page.has_more is True  # pagination: page 1 of 2
    first = page.records[0]
    assert first["remote_id"] == xc.PAYMENT_FOUND_ID
    assert first["total_amount"] == Decimal("46.00")
    assert first["type"] == "accounts_receivable"
    assert first["allocations"] == [
        {"id": xc.INV_0002_PAID, "type": "invoice", "amount": Decimal("46.00")}
    ]


# -- 6. errors at the boundary ---------------------------------------------------------
def test_404_plain_text_is_document_not_found(xero_vcr: ContractVCR, adapter: XeroAdapter) -> None:
    with (
        xero_vcr.use_cassette("error_404_plain_text.yaml") as cass,
        pytest.raises(DocumentNotFound) as info,
    ):
        adapter.get_document(xc.INV_MISSING)
    _assert_all_played(cass)
    assert type(info.value) is DocumentNotFound
    assert info.value.status_code == 404
    assert info.value.provider_message == xc.MSG_404


@pytest.mark.parametrize(
    ("cassette_name", "key", "invoice_id", "error", "message"),
    [
        (
            "error_400_account_not_found.yaml",
            "k4",
            xc.INV_0004_AUTHORISED,
            ValidationRejected,
            xc.MSG_ACCOUNT_NOT_FOUND,
        ),
        (
            "error_400_not_authorised.yaml",
            "k5",
            xc.INV_0001_VOIDED,
            DocumentNotPayable,
            xc.MSG_NOT_AUTHORISED,
        ),
    ],
)
def test_400_validation_exception_keeps_provider_message(
    xero_vcr: ContractVCR,
    adapter: XeroAdapter,
    cassette_name: str,
    key: str,
    invoice_id: str,
    error: type[ConnectorError],
    message: str,
) -> None:
    with xero_vcr.use_cassette(cassette_name) as cass, pytest.raises(ConnectorError) as info:
        adapter.push_payments([_pay(invoice_id, "1.00", f"cx-{key}-1")], idempotency_key=key)
    _assert_all_played(cass)
    err = info.value
    assert type(err) is error
    assert err.status_code == 400
    assert err.provider_code == "ValidationException"
    assert err.provider_message is not None
    assert message in err.provider_message  # from Elements[].ValidationErrors[]
    assert "A validation exception occurred" in err.provider_message


def test_401_token_expired_refreshes_once_and_resends(
    xero_vcr: ContractVCR, adapter: XeroAdapter, sqlite_store: Store, wire: list[httpx.Request]
) -> None:
    with xero_vcr.use_cassette("error_401_token_expired.yaml") as cass:
        snap = adapter.get_document(xc.INV_0006_PAID)
    _assert_all_played(cass)  # two token calls, the 401 and the resend
    assert snap.status == "paid"
    assert [r.headers["Authorization"] for r in wire] == [
        "Bearer scrubbed-access-token-1",
        "Bearer scrubbed-access-token-2",
    ]
    with sqlite_store.session() as s:
        rec = s.get(ConnectionRecord, "xero-test")
        assert rec is not None
        assert rec.refresh_token == "scrubbed-refresh-token-2"
        assert rec.status == "active"


def test_401_problem_json_translates_to_auth_expired() -> None:
    # The boundary itself, for the case where the resend is refused again.
    response = httpx.Response(
        401,
        json={
            "Type": None,
            "Title": "Unauthorized",
            "Status": 401,
            "Detail": xc.TOKEN_EXPIRED_DETAIL,
        },
    )
    err = XeroAdapter._error_from(response, write=False)
    assert type(err) is AuthExpired
    assert err.provider_message == xc.TOKEN_EXPIRED_DETAIL


def test_429_retry_after_is_rate_limited_without_sleeping(
    xero_vcr: ContractVCR, adapter: XeroAdapter, wire: list[httpx.Request]
) -> None:
    slept: list[float] = []
    adapter.http._sleep = slept.append
    with (
        xero_vcr.use_cassette("error_429_retry_after.yaml") as cass,
        pytest.raises(RateLimited) as info,
    ):
        adapter.get_document(xc.INV_0006_PAID)
    _assert_all_played(cass)
    assert len(wire) == 1
    assert slept == []
    assert info.value.retry_after == 120
    assert info.value.provider_code == "minute"
    assert info.value.status_code == 429
    assert info.value.retriable
    assert adapter.http.rate.throttled == 1


def test_503_on_write_is_outcome_unknown(xero_vcr: ContractVCR, adapter: XeroAdapter) -> None:
    with (
        xero_vcr.use_cassette("error_503_write.yaml") as cass,
        pytest.raises(ConnectorError) as info,
    ):
        adapter.push_payments(
            [_pay(xc.INV_0004_AUTHORISED, "1.00", "cx-k6-1")], idempotency_key="k6"
        )
    _assert_all_played(cass)
    assert type(info.value) is OutcomeUnknown
    assert info.value.status_code == 503
    assert info.value.provider_message == xc.MSG_503_WRITE


def test_503_on_read_is_transient(xero_vcr: ContractVCR, adapter: XeroAdapter) -> None:
    with (
        xero_vcr.use_cassette("error_503_read.yaml") as cass,
        pytest.raises(ConnectorError) as info,
    ):
        adapter.get_document(xc.INV_0006_PAID)
    _assert_all_played(cass)
    assert type(info.value) is Transient
    assert info.value.status_code == 503


# -- 7. no repeats -------------------------------------------------------------------
def test_duplicate_send_fails_because_repeats_are_off(
    xero_vcr: ContractVCR, adapter: XeroAdapter
) -> None:
    request = _pay(xc.INV_0004_AUTHORISED, "1.00", "cx-k1-1")
    with xero_vcr.use_cassette("push_payment_ok.yaml") as cass:
        first: list[ItemResult] = adapter.push_payments([request], idempotency_key="k1")
        assert first[0].payment is not None
        with pytest.raises(CannotOverwriteExistingCassetteException):
            adapter.push_payments([request], idempotency_key="k1")
    assert cass.play_count == 2  # the token call and the one PUT


def test_changed_body_does_not_match_the_cassette(
    xero_vcr: ContractVCR, adapter: XeroAdapter
) -> None:
    # Same URL and key, one cent more: the body matchers must refuse it.
    with (
        xero_vcr.use_cassette("push_payment_ok.yaml"),
        pytest.raises(CannotOverwriteExistingCassetteException),
    ):
        adapter.push_payments(
            [_pay(xc.INV_0004_AUTHORISED, "1.01", "cx-k1-1")], idempotency_key="k1"
        )


def test_changed_idempotency_key_does_not_match_the_cassette(
    xero_vcr: ContractVCR, adapter: XeroAdapter
) -> None:
    with (
        xero_vcr.use_cassette("push_payment_ok.yaml"),
        pytest.raises(CannotOverwriteExistingCassetteException),
    ):
        adapter.push_payments(
            [_pay(xc.INV_0004_AUTHORISED, "1.00", "cx-k1-1")], idempotency_key="k1-other"
        )


# -- 8. the error decision table --------------------------------------------------------
# A message for every row, keyed by (status, Type, pattern): a new row without a
# sample here fails test_every_error_table_row_is_reachable.
ROW_SAMPLES: dict[tuple[int | None, str | None, str], str] = {
    (
        400,
        "ValidationException",
        r"not of valid status for modification|cannot be edited as it has a payment",
    ): "Invoice not of valid status for modification",
    (400, "ValidationException", r"Idempotency Key: .* is used with a different request"): (
        "Idempotency Key: k1 is used with a different request."
    ),
    (400, "ValidationException", r"Payments can only be made against Authorised documents"): (
        "A validation exception occurred; Payments can only be made against Authorised documents"
    ),
    (400, "ValidationException", r"Payment amount exceeds the amount outstanding"): (
        "A validation exception occurred; " + xc.MSG_EXCEEDS
    ),
    (400, "ValidationException", r"Account could not be found"): "Account could not be found",
    (400, "ValidationException", r"Account type is invalid for making a payment"): (
        "Account type is invalid for making a payment to/from"
    ),
    (400, "ValidationException", r"(Invoice|document).*(could not be found|does not exist)"): (
        "Invoice could not be found"
    ),
    (400, "PostDataInvalidException", r".*"): (
        "JSON for post data was invalid,Could not find member 'Foo' on object of type 'Payment'"
    ),
    (400, None, r".*"): "Something Xero has never said before",
    (401, None, r"TokenExpired"): xc.TOKEN_EXPIRED_DETAIL,
    (401, None, r".*"): "AuthenticationUnsuccessful",
    (403, None, r".*"): "AuthenticationUnsuccessful",
    (404, None, r".*"): xc.MSG_404,
    (429, None, r".*"): "",
    (503, None, r".*"): "The Organisation is offline",
    (500, None, r".*"): "An unhandled error with the Xero API",
}
CATCH_ALL = r".*"


def _first_row(status: int, error_type: str | None, message: str) -> int | None:
    for i, rule in enumerate(XERO_ERROR_TABLE):
        if rule.status is not None and rule.status != status:
            continue
        if rule.error_type is not None and rule.error_type != error_type:
            continue
        if re.search(rule.pattern, message, re.IGNORECASE):
            return i
    return None


@pytest.mark.parametrize(
    "index", range(len(XERO_ERROR_TABLE)), ids=lambda i: f"row{i}-{XERO_ERROR_TABLE[i].status}"
)
def test_every_error_table_row_is_reachable(index: int) -> None:
    rule = XERO_ERROR_TABLE[index]
    sample = ROW_SAMPLES.get((rule.status, rule.error_type, rule.pattern))
    assert sample is not None, f"add a sample message for row {index}: {rule}"
    status = rule.status if rule.status is not None else 400
    assert re.search(rule.pattern, sample, re.IGNORECASE)
    assert _first_row(status, rule.error_type, sample) == index, "row shadowed by an earlier one"

    err = translate_xero_error(status, rule.error_type, sample)
    assert type(err) is rule.error
    assert err.status_code == status
    assert err.provider_message == sample
    assert err.provider_code == (rule.error_type or str(status))

    on_write = translate_xero_error(status, rule.error_type, sample, write=True)
    assert type(on_write) is (OutcomeUnknown if rule.error is Transient else rule.error)


# Every message of the fact sheet's §3 "Messages relevant to payments" table,
# with the class it must map to (ValidationException, HTTP 400).
FACT_SHEET_MESSAGES: dict[str, type[ConnectorError]] = {
    "Payment amount exceeds the amount outstanding on this document": AmountExceedsBalance,
    "Payments can only be made against Authorised documents": DocumentNotPayable,
    (
        "A validation exception occurred; Payments can only be made against Authorised "
        "documents; Payment amount exceeds the amount outstanding on this document"
    ): DocumentNotPayable,
    "Account type is invalid for making a payment to/from": ValidationRejected,
    "Account could not be found": ValidationRejected,
    "Invoice not of valid status for modification": DocumentNotPayable,
    (
        "This document cannot be edited as it has a payment or credit note allocated to it."
    ): DocumentNotPayable,
    "Idempotency Key: KEY_VALUE is used with a different request.": ValidationRejected,
}
FACT_SHEET = Path(__file__).parents[1] / "fixtures" / "shared" / "providers" / "xero.md"


@pytest.mark.parametrize("message", list(FACT_SHEET_MESSAGES))
def test_fact_sheet_messages_map_to_specific_rows(message: str) -> None:
    row = _first_row(400, "ValidationException", message)
    assert row is not None
    assert XERO_ERROR_TABLE[row].pattern != CATCH_ALL, (
        f"{message!r} only reaches the catch-all row {row}: add a row for it"
    )
    err = translate_xero_error(400, "ValidationException", message)
    assert type(err) is FACT_SHEET_MESSAGES[message]
    assert err.provider_message == message
    # Casing differs between Xero and emulators ("AUTHORISED"): still the same row.
    assert type(translate_xero_error(400, "ValidationException", message.upper())) is type(err)


def test_fact_sheet_message_list_is_complete() -> None:
    assert FACT_SHEET.exists(), f"{FACT_SHEET} is vendored with the tests"
    text = FACT_SHEET.read_text(encoding="utf-8")
    section = text.split("**Messages relevant to payments:**", 1)[1].split("Caveats", 1)[0]
    listed: set[str] = set()
    for line in section.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = line.split("|")
            listed.update(re.findall(r"`([^`]+)`", cells[2] if len(cells) > 2 else ""))
    assert listed, "the §3 table was not found"
    assert listed <= set(FACT_SHEET_MESSAGES), sorted(listed - set(FACT_SHEET_MESSAGES))


def test_unlisted_5xx_on_a_read_is_transient() -> None:
    # 502/504 are not in the table; a read that got one was not applied.
    assert type(translate_xero_error(502, None, "Bad Gateway")) is Transient
    assert type(translate_xero_error(504, None, "Gateway Timeout", write=True)) is OutcomeUnknown


# -- cassettes: secrets and provenance ------------------------------------------------------
CASSETTE_FILES = sorted(xc.CASSETTE_DIR.glob("*.yaml"))
BEARER = re.compile(r"Bearer\s+[A-Za-z0-9\-._~+/]+=*")


def test_cassettes_exist() -> None:
    assert {p.name for p in CASSETTE_FILES} == {f"{n}.yaml" for n in xc.BUILDERS}


@pytest.mark.parametrize("path", CASSETTE_FILES, ids=lambda p: p.name)
def test_cassette_holds_no_secrets(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    for secret in (*SECRET_STRINGS, basic):
        assert secret not in text
    assert not BEARER.search(text)
    assert "authorization" not in text.lower()
    assert "refresh_token=" not in text
    assert "client_secret" not in text
    # Real hosts only.
    assert set(re.findall(r"uri: (https://[^/]+)/", text)) <= {
        "https://api.xero.com",
        "https://identity.xero.com",
    }


def test_cassettes_match_generator() -> None:
    assert xc.SAMPLES_FILE.exists(), f"{xc.SAMPLES_FILE} is vendored with the tests"
    stale = stale_cassettes(xc.build_all(), xc.CASSETTE_DIR)
    assert not stale, f"run python -m tests.contract.xero_cassettes; stale: {stale}"


# -- recording: the scrubbers on real traffic ------------------------------------------
class _StubXero(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in for identity.xero.com and api.xero.com (recording test only)."""

    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def _answer(self, status: int, payload: object) -> None:
        body = jsonutil.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path, dict(self.headers.items()), body))
        return body

    def do_POST(self) -> None:
        self._read()
        self._answer(
            200,
            {
                "access_token": "at-live-9c2e7d",
                "expires_in": 1800,
                "token_type": "Bearer",
                "refresh_token": "rt-live-rotated-41b8",
                "scope": "offline_access accounting.transactions",
            },
        )

    def do_PUT(self) -> None:
        sent = jsonutil.loads(self._read())["Payments"][0]
        item = {
            **sent,
            "PaymentID": xc.PAYMENT_OK_ID,
            "Status": "AUTHORISED",
            "StatusAttributeString": "OK",
            "HasValidationErrors": False,
        }
        self._answer(200, {"Status": "OK", "Payments": [item]})

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stub_xero() -> Iterator[str]:
    _StubXero.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubXero)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_recording_scrubs_secrets_and_replays_strictly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_xero: str
) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the stub speaks plain http
    settings = make_settings(base_url=stub_xero, token_url=f"{stub_xero}/connect/token")
    request = _pay(xc.INV_0004_AUTHORISED, "1.00", "cx-rec-1")

    def push(db: str, config: ContractVCR) -> list[ItemResult]:
        store = Store(f"sqlite:///{tmp_path}/{db}")
        store.upgrade()
        adapter = XeroAdapter(settings, store)
        try:
            with config.use_cassette("recorded.yaml"):
                return adapter.push_payments([request], idempotency_key="k-rec")
        finally:
            adapter.close()
            store.dispose()

    recorded = push("record.db", make_vcr(tmp_path, record_mode="all"))
    assert recorded[0].payment is not None
    # The secrets really went over the wire...
    (token_call, put_call) = _StubXero.seen
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert token_call[2]["Authorization"] == f"Basic {basic}"
    assert f"refresh_token={REFRESH_TOKEN}".encode() in token_call[3]
    assert put_call[2]["Authorization"] == "Bearer at-live-9c2e7d"
    # ...and none of them reached the cassette.
    text = (tmp_path / "recorded.yaml").read_text(encoding="utf-8")
    for secret in (*SECRET_STRINGS, basic, "at-live-9c2e7d", "rt-live-rotated-41b8"):
        assert secret not in text
    assert not BEARER.search(text)
    assert "authorization" not in text.lower()
    assert "idempotency-key:\n      - k-rec" in text.lower()

    # The recording replays under the strict config, with the stub gone quiet.
    _StubXero.seen = []
    replayed = push("replay.db", make_vcr(tmp_path))
    assert _StubXero.seen == []
    assert replayed[0].payment is not None
    assert replayed[0].payment.remote_id == xc.PAYMENT_OK_ID
