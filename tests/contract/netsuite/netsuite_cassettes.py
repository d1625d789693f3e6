"""Build the NetSuite contract cassettes from the recorded samples.

Run ``python -m tests.contract.netsuite.netsuite_cassettes`` (from the project root) to
(re)write ``tests/contract/netsuite/cassettes/*.yaml``; the output is committed and
``test_cassettes_match_generator`` fails when it drifts from this script.

Sources (never edited), in ``tests/sandbox/netsuite/samples/`` (vendored copies of the
shared ``samples/netsuite``; ``NETSUITE_SAMPLES_DIR`` overrides):

* ``hotglue_customerPayment_create.request_response.json`` and
  ``hotglue_vendorPayment_create.request_response.json``: live creates answered 204
  with the new id in ``Location`` (customer 313 / invoice 8935 → payment 19943; vendor
  718 / bill 17640 → payment 19743);
* ``hotglue_suiteql_lookups.request_response.json`` and
  ``hotglue_suiteql_existing_payment_found.json``: the SuiteQL envelope (lower-case
  aliases, strings only, NULLs left out, ``Preference-Applied: transient``);
* ``netsuite_rest_error_examples.json``: the error bodies (401 ``INVALID_LOGIN``, 400
  ``INVALID_CONTENT`` with ``o:errorPath``, the duplicate-externalId ``USER_ERROR``);
* the fact sheet §2/§3/§5 for what no sample shows (record shapes from the 2026.1 field
  extract, the negative sign of vendor payments in SuiteQL, 429, 404).

Adjustments are marked ``# adjusted``: our request bodies follow our mapping
(``tranDate`` date-only, a ``memo``, no ``currency``/``exchangeRate``), and SuiteQL
responses carry the columns our queries select. Request bodies are the exact bytes the
adapter must send, written by hand (not with the adapter's mapping or query builders)
and serialized with :func:`connector.jsonutil.dumps`, which the adapter uses.

Token calls are stored as they look after scrubbing (see ``conftest.py``): no
``Authorization`` header, the form without ``client_assertion``; token values in
responses are placeholders.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from vcr.serializers import yamlserializer

from connector import jsonutil
from tests.contract.vcrkit import generator_main

__all__ = [
    "ACCOUNT_ID",
    "BASE_URL",
    "BUILDERS",
    "CASSETTE_DIR",
    "SAMPLES_DIR",
    "TOKEN_URL",
    "build_all",
    "main",
]

SAMPLES_DIR = Path(
    os.environ.get(
        "NETSUITE_SAMPLES_DIR", Path(__file__).parents[2] / "sandbox" / "netsuite" / "samples"
    )
)
CASSETTE_DIR = Path(__file__).resolve().parent / "cassettes"

ACCOUNT_ID = "1234567"
BASE_URL = f"https://{ACCOUNT_ID}.suitetalk.api.netsuite.com"
TOKEN_URL = f"{BASE_URL}/services/rest/auth/oauth2/v1/token"
RECORD = f"{BASE_URL}/services/rest/record/v1"
SUITEQL = f"{BASE_URL}/services/rest/query/v1/suiteql"

# Ids of the samples.
CUSTOMER_ID = "313"
INVOICE_ID = "8935"
CUSTOMER_PAYMENT_ID = "19943"
CUSTOMER_PAYMENT_EID = "EXT-TEST-3200"
VENDOR_ID = "718"
BILL_ID = "17640"
VENDOR_PAYMENT_ID = "19743"
VENDOR_PAYMENT_EID = "EXT-TEST-3002"
INVOICE_NUMBER = "INV6666"  # adjusted: the sample knows the invoice by externalId TEST-INV-6666
MISSING_ID = "99999"
REFERENCE = "cx-ref-3200"
BILL_REFERENCE = "cx-ref-3002"
SINCE = "2025-05-20 00:00:00"

DUPLICATE_DETAIL = "Error while accessing a resource. This entity already exists."
UNEXPECTED_DETAIL = "An unexpected error has occurred. Error ID: m3k2j1h0g9f8e7d6c5b4"
CONCURRENCY_DETAIL = "Concurrent request limit exceeded. Request blocked."
NONEXISTENT_DETAIL = "The record instance does not exist. Provide a valid record instance ID."

# The scrubbed token request, byte for byte (Authlib's form less client_assertion).
TOKEN_REQUEST_BODY = urlencode(
    {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
)
TOKEN_REQUEST_HEADERS = {
    "Accept": ["application/json"],
    "Content-Type": ["application/x-www-form-urlencoded;charset=UTF-8"],
}
COLLECTION = "application/vnd.oracle.resource+json; type=collection; charset=UTF-8"
SINGULAR = "application/vnd.oracle.resource+json; type=singular; charset=UTF-8"
ERROR = "application/vnd.oracle.resource+json; type=error; charset=UTF-8"

# -- the SuiteQL our adapter must send (written out, not imported) ------------------------
STAMP = """TO_CHAR(t.lastmodifieddate, 'YYYY-MM-DD"T"HH24:MI:SS') lastmodified"""
Q_CURRENCIES = "SELECT c.id, c.symbol, c.isbasecurrency FROM currency c ORDER BY c.id"
Q_BY_NUMBER = (
    "SELECT t.id FROM transaction t WHERE t.type = 'CustInvc' "
    "AND (t.tranid = '{n}' OR t.transactionnumber = '{n}') ORDER BY t.id"
)
Q_BILL_OPEN = (
    "SELECT t.id, t.foreignamountunpaid, t.foreignamountremaining FROM transaction t "
    f"WHERE t.id = {BILL_ID} AND t.type = 'VendBill'"
)
Q_INVOICES = (
    "SELECT t.id, t.tranid, t.status, t.foreigntotal, t.foreignamountunpaid, "
    "t.foreignamountremaining, t.exchangerate, t.memo, t.entity, BUILTIN.DF(t.entity) "
    "entityname, c.symbol currencycode, TO_CHAR(t.trandate, 'YYYY-MM-DD') trandate, "
    f"TO_CHAR(t.duedate, 'YYYY-MM-DD') duedate, {STAMP} FROM transaction t "
    "LEFT JOIN currency c ON c.id = t.currency WHERE t.type = 'CustInvc' AND "
    f"t.lastmodifieddate >= TO_TIMESTAMP('{SINCE}', 'YYYY-MM-DD HH24:MI:SS') "
    "ORDER BY t.lastmodifieddate, t.id"
)
PAYMENT_COLUMNS = (
    "t.id, t.type, t.status, t.foreigntotal, t.exchangerate, t.memo, t.externalid, "
    f"t.account, c.symbol currencycode, TO_CHAR(t.trandate, 'YYYY-MM-DD') trandate, {STAMP}"
)
Q_PAYMENTS = (
    f"SELECT {PAYMENT_COLUMNS} FROM transaction t LEFT JOIN currency c ON c.id = t.currency "
    "WHERE t.type IN ('CustPymt', 'VendPymt') ORDER BY t.lastmodifieddate, t.id"
)
Q_LINKS = (
    "SELECT l.nextdoc, l.previousdoc, l.previoustype, l.foreignamount FROM "
    f"nexttransactionlinelink l WHERE l.nextdoc IN ({CUSTOMER_PAYMENT_ID}, {VENDOR_PAYMENT_ID}) "
    "ORDER BY l.nextdoc, l.previousdoc"
)
Q_DELETED_PAYMENTS = (
    "SELECT d.recordid, d.recordtypeid, "
    """TO_CHAR(d.deleteddate, 'YYYY-MM-DD"T"HH24:MI:SS') lastmodified """
    "FROM deletedrecord d WHERE d.recordtypeid IN ('customerpayment', 'vendorpayment') "
    "ORDER BY d.deleteddate"
)
Q_FIND = (
    f"SELECT {PAYMENT_COLUMNS}, l.previousdoc, l.foreignamount applied FROM transaction t "
    "INNER JOIN nexttransactionlinelink l ON l.nextdoc = t.id "
    "LEFT JOIN currency c ON c.id = t.currency "
    f"WHERE t.type = 'CustPymt' AND l.previousdoc = {INVOICE_ID} AND "
    f"(t.memo = '{REFERENCE}' OR t.externalid = 'cx-intent-9-v2' OR "
    "t.externalid LIKE 'cx-intent-9-v%') ORDER BY t.id"
)

Interaction = dict[str, Any]


# -- samples ---------------------------------------------------------------------------------
def load_samples(directory: Path = SAMPLES_DIR) -> dict[str, Any]:
    """Every sample file by stem, numbers as exact Decimals."""
    return {p.stem: jsonutil.loads(p.read_bytes()) for p in sorted(directory.glob("*.json"))}


# -- helpers ---------------------------------------------------------------------------------
def _request(
    method: str, uri: str, *, body: str = "", headers: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    return {"method": method, "uri": uri, "body": body, "headers": headers or {}}


def _response(
    status: int,
    message: str,
    body: str,
    *,
    content_type: str | None = "application/json",
    headers: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    all_headers: dict[str, list[str]] = {}
    if content_type:
        all_headers["Content-Type"] = [content_type]
    all_headers.update(headers or {})
    return {
        "status": {"code": status, "message": message},
        "headers": all_headers,
        "body": {"string": body},
    }


def token_interaction(n: int) -> Interaction:
    """The n-th client-credentials grant, answered with a one-hour access token."""
    payload = {
        "access_token": f"scrubbed-access-token-{n}",
        "expires_in": 3600,
        "token_type": "bearer",
    }
    return {
        "request": _request(
            "POST", TOKEN_URL, body=TOKEN_REQUEST_BODY, headers=copy.deepcopy(TOKEN_REQUEST_HEADERS)
        ),
        "response": _response(
            200,
            "OK",
            json.dumps(payload),
            content_type="application/json;charset=UTF-8",
            headers={"Cache-Control": ["no-store"], "Pragma": ["no-cache"]},
        ),
    }


def _get(path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
    uri = f"{RECORD}{path}" + (f"?{urlencode(query)}" if query else "")
    return _request("GET", uri, headers={"Accept": ["application/json"]})


def _post_json(uri: str, body: Any, **extra: str) -> dict[str, Any]:
    headers = {"Accept": ["application/json"], "Content-Type": ["application/json"]}
    headers.update({k: [v] for k, v in extra.items()})
    return _request("POST", uri, body=jsonutil.dumps(body), headers=headers)


def _suiteql(q: str, *, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
    uri = SUITEQL + (f"?{urlencode({'limit': limit, 'offset': offset})}" if limit else "")
    return _post_json(uri, {"q": q}, Prefer="transient")


def _collection(
    s: dict[str, Any], items: list[dict[str, Any]], *, has_more: bool = False, total: int = 0
) -> dict[str, Any]:
    """A SuiteQL answer in the envelope of the recorded sample."""
    envelope = copy.deepcopy(s["hotglue_suiteql_existing_payment_found"]["body"])
    envelope["items"] = [{"links": [], **item} for item in items]
    envelope["count"] = len(items)
    envelope["hasMore"] = has_more
    envelope["totalResults"] = total or len(items)
    envelope["links"] = [
        {"rel": link["rel"], "href": link["href"].replace("2945321", ACCOUNT_ID)}
        for link in envelope["links"]
    ]
    return envelope


def _rows(s: dict[str, Any], items: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return _response(
        200,
        "OK",
        jsonutil.dumps(_collection(s, items, **kw)),
        content_type=COLLECTION,
        headers={"Preference-Applied": ["transient"]},
    )


def _currencies(s: dict[str, Any]) -> Interaction:
    return {
        "request": _suiteql(Q_CURRENCIES),
        "response": _rows(
            s,
            [
                {"id": "1", "isbasecurrency": "T", "symbol": "USD"},
                {"id": "2", "isbasecurrency": "F", "symbol": "GBP"},
                {"id": "3", "isbasecurrency": "F", "symbol": "CAD"},
                {"id": "4", "isbasecurrency": "F", "symbol": "EUR"},
            ],
        ),
    }


def _ref(record_type: str, rid: str, name: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "links": [{"rel": "self", "href": f"{RECORD}/{record_type}/{rid}"}],
        "id": rid,
    }
    if name is not None:
        ref["refName"] = name
    return ref


def _error(s: dict[str, Any], status: int, code: str, detail: str, **extra: str) -> str:
    """An error body in the shape of Oracle's example (type, title, status, o:errorDetails)."""
    body = copy.deepcopy(s["netsuite_rest_error_examples"]["invalid_reference_in_body_400"]["body"])
    body["status"] = status
    body["title"] = {
        400: "Bad Request",
        401: "Unauthorized",
        404: "Not Found",
        429: "Too Many Requests",
        500: "Internal Server Error",
    }[status]
    body["o:errorDetails"] = [{"detail": detail, **extra, "o:errorCode": code}]
    return jsonutil.dumps(body)


def _error_response(s: dict[str, Any], status: int, message: str, body: str) -> dict[str, Any]:
    return _response(status, message, body, content_type=ERROR)


# -- records ---------------------------------------------------------------------------------
def invoice_record() -> dict[str, Any]:
    """Invoice 8935 of the samples after its 5.00 payment (2026.1 field names, §3)."""
    return {
        "links": [{"rel": "self", "href": f"{RECORD}/invoice/{INVOICE_ID}"}],
        "amountPaid": Decimal("5.0"),
        "amountRemaining": Decimal("95.0"),  # adjusted: the sample shows no total
        "currency": _ref("currency", "1", "US Dollar"),
        "dueDate": "2025-06-25",
        "entity": _ref("customer", CUSTOMER_ID, "Hotglue Test Customer"),
        "exchangeRate": Decimal("1.0"),
        "externalId": "TEST-INV-6666",
        "id": INVOICE_ID,
        "lastModifiedDate": "2025-05-27T16:04:11Z",
        "status": {"id": "A", "refName": "Open"},
        "subsidiary": _ref("subsidiary", "1", "Parent Company"),
        "total": Decimal("100.0"),
        "tranDate": "2025-05-26",
        "tranId": INVOICE_NUMBER,
    }


def bill_record() -> dict[str, Any]:
    """Bill 17640 of the samples: no amountRemaining in REST (fact sheet §3)."""
    return {
        "links": [{"rel": "self", "href": f"{RECORD}/vendorBill/{BILL_ID}"}],
        "approvalStatus": {"id": "2", "refName": "Approved"},
        "currency": _ref("currency", "1", "US Dollar"),
        "documentStatus": "Open",
        "dueDate": "2025-06-21",
        "entity": _ref("vendor", VENDOR_ID, "Hotglue Test Vendor"),
        "exchangeRate": Decimal("1.0"),
        "id": BILL_ID,
        "lastModifiedDate": "2025-05-22T18:41:07Z",
        "paymentHold": False,
        "status": {"id": "A", "refName": "Open"},
        "total": Decimal("200.0"),
        "tranDate": "2025-05-22",
        "tranId": "VB-3002",
        "userTotal": Decimal("200.0"),
    }


def customer_payment_record(s: dict[str, Any]) -> dict[str, Any]:
    """Payment 19943 as GET …/customerPayment/eid:EXT-TEST-3200?expandSubResources=true."""
    sent = s["hotglue_customerPayment_create.request_response"]["request"]["body"]
    line = sent["apply"]["items"][0]
    return {
        "links": [{"rel": "self", "href": f"{RECORD}/customerpayment/{CUSTOMER_PAYMENT_ID}"}],
        "account": _ref("account", sent["account"]["id"], "1000 Checking"),
        "applied": Decimal("5.0"),
        "apply": {
            "links": [{"rel": "self", "href": f"{RECORD}/customerpayment/19943/apply"}],
            "count": 1,
            "hasMore": False,
            "items": [
                {
                    "links": [],
                    "amount": Decimal(line["amount"]).quantize(Decimal("0.0")),
                    "apply": line["apply"],
                    "doc": _ref("invoice", line["doc"]["id"], f"Invoice #{INVOICE_NUMBER}"),
                    "due": Decimal("100.0"),
                    "line": 0,
                    "refNum": INVOICE_NUMBER,
                    "total": Decimal("100.0"),
                    "type": "Invoice",
                }
            ],
            "offset": 0,
            "totalResults": 1,
        },
        "currency": _ref("currency", sent["currency"]["id"], "US Dollar"),
        "customer": _ref("customer", sent["customer"]["id"], "Hotglue Test Customer"),
        "exchangeRate": sent["exchangeRate"],
        "externalId": sent["externalId"],
        "id": CUSTOMER_PAYMENT_ID,
        "lastModifiedDate": "2025-05-27T16:04:11Z",
        "memo": REFERENCE,  # adjusted: our memo
        "payment": Decimal("5.0"),
        "status": {"id": "C", "refName": "Deposited"},
        "total": Decimal("5.0"),
        "tranDate": "2025-05-26",
        "tranId": "48",
        "unapplied": Decimal("0.0"),
    }


# -- request bodies (hand-written: what the mapping must produce) ------------------------------
def customer_payment_body(s: dict[str, Any], amount: str = "5.00") -> dict[str, Any]:
    sent = s["hotglue_customerPayment_create.request_response"]["request"]["body"]
    return {
        "customer": {"id": sent["customer"]["id"]},
        "payment": Decimal(amount),
        "account": {"id": sent["account"]["id"]},
        "tranDate": "2025-05-26",  # adjusted: a date, as the field is (sample: date-time)
        "memo": REFERENCE,
        "externalId": sent["externalId"],
        "apply": {
            "items": [
                {
                    "doc": {"id": sent["apply"]["items"][0]["doc"]["id"]},
                    "apply": True,
                    "amount": Decimal(amount),
                }
            ]
        },
    }


def vendor_payment_body(s: dict[str, Any]) -> dict[str, Any]:
    sent = s["hotglue_vendorPayment_create.request_response"]["request"]["body"]
    line = sent["apply"]["items"][0]
    return {
        "entity": {"id": sent["entity"]["id"]},
        "account": {"id": sent["account"]["id"]},
        "tranDate": "2025-05-22",  # adjusted: date-only
        "memo": BILL_REFERENCE,
        "externalId": sent["externalId"],
        "apply": {
            "items": [
                {
                    "doc": {"id": line["doc"]["id"]},
                    "apply": True,
                    "amount": Decimal(str(line["amount"])).quantize(Decimal("0.01")),
                }
            ]
        },
    }


def _created(s: dict[str, Any], sample: str) -> dict[str, Any]:
    response = s[sample]["response"]
    headers = {k: [v] for k, v in response["headers"].items()}
    headers["Location"] = [headers["Location"][0].replace("2945321", ACCOUNT_ID)]
    return _response(204, "No Content", "", content_type=None, headers=headers)


# -- the cassettes ---------------------------------------------------------------------------
def c_get_invoice_by_id(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(1),
        {
            "request": _get(f"/invoice/{INVOICE_ID}"),
            "response": _response(
                200, "OK", jsonutil.dumps(invoice_record()), content_type=SINGULAR
            ),
        },
        _currencies(s),
    ]


def c_get_invoice_by_number(s: dict[str, Any]) -> list[Interaction]:
    lookup = s["hotglue_suiteql_lookups.request_response"]["invoice_lookup_by_externalId"]
    found = lookup["response"]["body"]["items"][0]
    return [
        token_interaction(1),
        {
            "request": _suiteql(Q_BY_NUMBER.format(n=INVOICE_NUMBER)),
            "response": _rows(s, [{"id": found["internalid"]}]),
        },
        {
            "request": _get(f"/invoice/{INVOICE_ID}"),
            "response": _response(
                200, "OK", jsonutil.dumps(invoice_record()), content_type=SINGULAR
            ),
        },
        _currencies(s),
    ]


def c_get_invoice_missing(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(1),
        {
            "request": _get(f"/invoice/{MISSING_ID}"),
            "response": _error_response(
                s, 404, "Not Found", _error(s, 404, "NONEXISTENT_ID", NONEXISTENT_DETAIL)
            ),
        },
        {"request": _suiteql(Q_BY_NUMBER.format(n=MISSING_ID)), "response": _rows(s, [])},
    ]


def c_get_bill(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(1),
        {
            "request": _get(f"/vendorBill/{BILL_ID}"),
            "response": _response(200, "OK", jsonutil.dumps(bill_record()), content_type=SINGULAR),
        },
        {
            "request": _suiteql(Q_BILL_OPEN),
            "response": _rows(
                s,
                [
                    {
                        "id": BILL_ID,
                        "foreignamountremaining": "150",
                        "foreignamountunpaid": "150",
                    }
                ],
            ),
        },
        _currencies(s),
    ]


def c_push_customer_payment(s: dict[str, Any]) -> list[Interaction]:
    body = customer_payment_body(s)
    return [
        token_interaction(1),
        {
            "request": _post_json(f"{RECORD}/customerPayment", body),
            "response": _created(s, "hotglue_customerPayment_create.request_response"),
        },
    ]


def c_push_vendor_payment(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(1),
        {
            "request": _post_json(f"{RECORD}/vendorPayment", vendor_payment_body(s)),
            "response": _created(s, "hotglue_vendorPayment_create.request_response"),
        },
    ]


def c_push_duplicate_external_id(s: dict[str, Any]) -> list[Interaction]:
    body = customer_payment_body(s)
    duplicate = s["netsuite_rest_error_examples"][
        "duplicate_externalId_on_create_400_UNVERIFIED_SOURCE"
    ]["body"]
    detail = duplicate["o:errorDetails"][0]
    assert detail["detail"] == DUPLICATE_DETAIL
    return [
        token_interaction(1),
        {
            "request": _post_json(f"{RECORD}/customerPayment", body),
            "response": _error_response(
                s, 400, "Bad Request", _error(s, 400, detail["o:errorCode"], detail["detail"])
            ),
        },
        {
            "request": _get(
                f"/customerPayment/eid:{CUSTOMER_PAYMENT_EID}", {"expandSubResources": "true"}
            ),
            "response": _response(
                200, "OK", jsonutil.dumps(customer_payment_record(s)), content_type=SINGULAR
            ),
        },
        _currencies(s),
    ]


def c_push_invalid_account(s: dict[str, Any]) -> list[Interaction]:
    body = customer_payment_body(s)
    body["account"] = {"id": "9999"}  # adjusted: the sample's invalid id, on account
    example = s["netsuite_rest_error_examples"]["invalid_reference_in_body_400"]["body"]
    detail = example["o:errorDetails"][0]["detail"].replace("field: item", "field: account")
    return [
        token_interaction(1),
        {
            "request": _post_json(f"{RECORD}/customerPayment", body),
            "response": _error_response(
                s,
                400,
                "Bad Request",
                _error(s, 400, "INVALID_CONTENT", detail, **{"o:errorPath": "account"}),
            ),
        },
    ]


def c_push_500_unexpected(s: dict[str, Any]) -> list[Interaction]:
    body = customer_payment_body(s)
    return [
        token_interaction(1),
        {
            "request": _post_json(f"{RECORD}/customerPayment", body),
            "response": _error_response(
                s,
                500,
                "Internal Server Error",
                _error(s, 500, "UNEXPECTED_ERROR", UNEXPECTED_DETAIL),
            ),
        },
    ]


def c_find_payment(s: dict[str, Any]) -> list[Interaction]:
    found = s["hotglue_suiteql_existing_payment_found"]["body"]["items"][0]
    ours = {
        "account": found["account"],
        "applied": found["amount"],
        "currencycode": "USD",  # adjusted: our join on currency
        "exchangerate": found["exchangerate"],
        "externalid": found["externalid"],  # an earlier key version's, or another's
        "foreigntotal": found["amount"],
        "id": found["id"],
        "lastmodified": "2025-05-27T16:04:11",  # adjusted: TO_CHAR'd
        "memo": REFERENCE,  # adjusted: our memo
        "previousdoc": found["transaction"],
        "status": "C",  # adjusted: the letter (the sample selected BUILTIN.DF(status))
        "trandate": "2025-05-27",  # adjusted: TO_CHAR'd (sample: 5/27/2025)
        "type": found["type"],
    }
    return [token_interaction(1), {"request": _suiteql(Q_FIND), "response": _rows(s, [ours])}]


def c_list_changed_invoices(s: dict[str, Any]) -> list[Interaction]:
    rows = [
        {
            "currencycode": "USD",
            "duedate": "2025-06-25",
            "entity": CUSTOMER_ID,
            "entityname": "Hotglue Test Customer",
            "exchangerate": "1",
            "foreignamountremaining": "95",
            "foreignamountunpaid": "95",
            "foreigntotal": "100",
            "id": INVOICE_ID,
            "lastmodified": "2025-05-27T16:04:11",
            "status": "A",
            "trandate": "2025-05-26",
            "tranid": INVOICE_NUMBER,
        },
        {
            "currencycode": "USD",
            "duedate": "2025-06-27",
            "entity": CUSTOMER_ID,
            "entityname": "Hotglue Test Customer",
            "exchangerate": "1",
            "foreignamountremaining": "0",
            "foreignamountunpaid": "0",
            "foreigntotal": "42.5",
            "id": "8936",
            "lastmodified": "2025-05-27T17:30:00",
            "memo": "Paid by card",
            "status": "B",
            "trandate": "2025-05-27",
            "tranid": "INV6667",
        },
    ]
    return [
        token_interaction(1),
        {
            "request": _suiteql(Q_INVOICES, limit=2, offset=0),
            "response": _rows(s, rows, has_more=True, total=3),
        },
    ]


def c_list_changed_payments(s: dict[str, Any]) -> list[Interaction]:
    rows = [
        {
            "account": "1",
            "currencycode": "USD",
            "exchangerate": "1",
            "externalid": CUSTOMER_PAYMENT_EID,
            "foreigntotal": "5",
            "id": CUSTOMER_PAYMENT_ID,
            "lastmodified": "2025-05-27T16:04:11",
            "memo": REFERENCE,
            "status": "C",
            "trandate": "2025-05-26",
            "type": "CustPymt",
        },
        {
            "account": "1",
            "currencycode": "USD",
            "exchangerate": "1",
            "externalid": VENDOR_PAYMENT_EID,
            "foreigntotal": "-50",  # vendor payments are negative in SuiteQL (§2)
            "id": VENDOR_PAYMENT_ID,
            "lastmodified": "2025-05-27T18:00:00",
            "trandate": "2025-05-22",
            "type": "VendPymt",
        },
    ]
    links = [
        {
            "foreignamount": "50",
            "nextdoc": VENDOR_PAYMENT_ID,
            "previousdoc": BILL_ID,
            "previoustype": "VendBill",
        },
        {
            "foreignamount": "5",
            "nextdoc": CUSTOMER_PAYMENT_ID,
            "previousdoc": INVOICE_ID,
            "previoustype": "CustInvc",
        },
    ]
    return [
        token_interaction(1),
        {"request": _suiteql(Q_PAYMENTS, limit=100, offset=0), "response": _rows(s, rows)},
        {"request": _suiteql(Q_LINKS), "response": _rows(s, links)},
        # The run's last page also asks DeletedRecord for deletions since the cursor.
        {
            "request": _suiteql(Q_DELETED_PAYMENTS),
            "response": _rows(
                s,
                [
                    {
                        "recordid": "9001",
                        "recordtypeid": "customerpayment",
                        "lastmodified": "2025-05-27T19:00:00",
                    }
                ],
            ),
        },
    ]


def c_error_401_invalid_login(s: dict[str, Any]) -> list[Interaction]:
    example = s["netsuite_rest_error_examples"]["invalid_login_401"]["body"]
    refused = _error_response(s, 401, "Unauthorized", jsonutil.dumps(example))
    return [
        token_interaction(1),
        {"request": _get(f"/invoice/{INVOICE_ID}"), "response": refused},
        token_interaction(2),
        {"request": _get(f"/invoice/{INVOICE_ID}"), "response": copy.deepcopy(refused)},
    ]


def c_error_429_concurrency(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(1),
        {
            "request": _get(f"/invoice/{INVOICE_ID}"),
            "response": _error_response(
                s,
                429,
                "Too Many Requests",
                _error(s, 429, "CONCURRENCY_LIMIT_EXCEEDED", CONCURRENCY_DETAIL),
            ),
        },
    ]


def c_tba_get_invoice(s: dict[str, Any]) -> list[Interaction]:
    # Token-Based Authentication: no token call, every request signed (header filtered).
    return [
        {
            "request": _get(f"/invoice/{INVOICE_ID}"),
            "response": _response(
                200, "OK", jsonutil.dumps(invoice_record()), content_type=SINGULAR
            ),
        },
        _currencies(s),
    ]


BUILDERS: dict[str, Callable[[dict[str, Any]], list[Interaction]]] = {
    "get_invoice_by_id": c_get_invoice_by_id,
    "get_invoice_by_number": c_get_invoice_by_number,
    "get_invoice_missing": c_get_invoice_missing,
    "get_bill": c_get_bill,
    "push_customer_payment": c_push_customer_payment,
    "push_vendor_payment": c_push_vendor_payment,
    "push_duplicate_external_id": c_push_duplicate_external_id,
    "push_invalid_account": c_push_invalid_account,
    "push_500_unexpected": c_push_500_unexpected,
    "find_payment": c_find_payment,
    "list_changed_invoices": c_list_changed_invoices,
    "list_changed_payments": c_list_changed_payments,
    "error_401_invalid_login": c_error_401_invalid_login,
    "error_429_concurrency": c_error_429_concurrency,
    "tba_get_invoice": c_tba_get_invoice,
}


def build_all(samples: dict[str, Any] | None = None) -> dict[str, str]:
    """Every cassette as the YAML text vcrpy reads, keyed by file name."""
    s = samples if samples is not None else load_samples()
    return {
        f"{name}.yaml": yamlserializer.serialize({"interactions": build(s), "version": 1})
        for name, build in BUILDERS.items()
    }


def main(argv: list[str] | None = None) -> int:
    """Write the cassettes (``--check``: only report whether they are up to date)."""
    return generator_main(build_all(), CASSETTE_DIR, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
