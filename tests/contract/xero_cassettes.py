"""Build the Xero contract cassettes from the official spec examples.

Run ``python -m tests.contract.xero_cassettes`` (from the project root) to
(re)write ``tests/contract/cassettes/xero/*.yaml``; the output is committed and
``test_cassettes_match_generator`` fails when it drifts from this script.

Sources (never edited):

* ``spec_examples_payments_invoices.json``: the request/response examples of
  XeroAPI/Xero-OpenAPI ``xero_accounting.yaml`` v16.1.0. The extraction parsed
  the YAML, so money such as ``229.00`` arrives as ``229.0``; it is written back
  as a JSON number with the two decimals Xero sends (``CurrencyRate`` with six).
* the fact sheet ``providers/xero.md`` §3 for the error bodies (400
  ValidationException with ``Elements``, 401 problem JSON, 404 plain text, 429
  with ``Retry-After``/``X-Rate-Limit-Problem``, 503 plain text).

Adjustments to the spec examples, so that request and response agree, are
marked ``# adjusted`` below. Request bodies are the exact bytes the adapter must
send, built by hand (not with the adapter's mapping) and serialized with
:func:`connector.jsonutil.dumps`, which is what the adapter uses.

Token calls are stored as they look after scrubbing (see ``conftest.py``): no
``Authorization`` header, and the form body without ``refresh_token``,
``client_id`` or ``client_secret``; token values in responses are placeholders.
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
    "API",
    "BASE_URL",
    "CASSETTE_DIR",
    "SAMPLES_FILE",
    "TENANT_ID",
    "TOKEN_URL",
    "build_all",
    "main",
]

SAMPLES_DIR = Path(
    os.environ.get(
        "XERO_SAMPLES_DIR", Path(__file__).parents[1] / "fixtures" / "shared" / "samples" / "xero"
    )
)
SAMPLES_FILE = SAMPLES_DIR / "spec_examples_payments_invoices.json"
CASSETTE_DIR = Path(__file__).resolve().parent / "cassettes" / "xero"

BASE_URL = "https://api.xero.com"
TOKEN_URL = "https://identity.xero.com/connect/token"
API = f"{BASE_URL}/api.xro/2.0"
TENANT_ID = "6f3c9a52-3b7e-4d0a-9c41-2f1e8d7b5a10"

# Invoices of the spec examples.
INV_0001_VOIDED = "d4956132-ed94-4dd7-9eaa-aa22dfdf06f2"
INV_0002_PAID = "046d8a6d-1ae1-4b4d-9340-5601bdf41b87"
INV_0003_AUTHORISED = "7ef31b20-de17-4312-8382-412f869b1510"
INV_0004_AUTHORISED = "c7c37b83-ac95-45ea-88ba-8ad83a5f22fe"
INV_0006_PAID = "a03ffcd2-5d91-4c7e-b483-318584e9e439"
INV_MISSING = "0f5e9a0c-1b2d-4e3f-8a9b-0c1d2e3f4a5b"
PAYMENT_OK_ID = "61ed71fc-01bf-4eb8-8419-8a18789ff45f"
PAYMENT_FOUND_ID = "99ea7f6b-c513-4066-bc27-b7c65dcd76c2"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
ACCOUNT_CODE = "970"  # the spec examples' payment account
FIND_REFERENCE = "cx-ref-1"

MSG_EXCEEDS = "Payment amount exceeds the amount outstanding on this document"
MSG_NOT_AUTHORISED = "Payments can only be made against Authorised documents"
MSG_ACCOUNT_NOT_FOUND = "Account could not be found"
MSG_404 = "The resource you're looking for cannot be found"
MSG_503_WRITE = "The Xero API is temporarily unavailable"
MSG_503_READ = "The Xero API is currently offline for maintenance"
TOKEN_EXPIRED_DETAIL = "TokenExpired: token expired at 04/09/2023 05:16:59"

# The scrubbed token request, byte for byte (what the scrubber leaves of Authlib's form).
TOKEN_REQUEST_BODY = "grant_type=refresh_token"
TOKEN_REQUEST_HEADERS = {
    "Accept": ["application/json"],
    "Content-Type": ["application/x-www-form-urlencoded;charset=UTF-8"],
}
RATE_HEADERS = {
    "X-MinLimit-Remaining": ["58"],
    "X-DayLimit-Remaining": ["4990"],
    "X-AppMinLimit-Remaining": ["9998"],
}

Interaction = dict[str, Any]


# -- helpers --------------------------------------------------------------------------
def _money(node: Any, key: str | None = None) -> Any:
    """Decimals back to the precision Xero writes them with (2 dp; rates 6 dp)."""
    if isinstance(node, dict):
        return {k: _money(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_money(v, key) for v in node]
    if isinstance(node, Decimal):
        places = Decimal("0.000001") if key == "CurrencyRate" else Decimal("0.01")
        return node.quantize(places)
    return node


def load_samples(path: Path = SAMPLES_FILE) -> dict[str, Any]:
    """The spec examples, money as exact Decimals with Xero's precision."""
    data = jsonutil.loads(path.read_bytes())
    assert isinstance(data, dict)
    return {k: _money(v) for k, v in data.items()}


def _body(obj: Any) -> str:
    return jsonutil.dumps(obj)


def _request(
    method: str,
    uri: str,
    *,
    body: str = "",
    headers: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    return {"method": method, "uri": uri, "body": body, "headers": headers or {}}


def _api_headers(extra: dict[str, str] | None = None) -> dict[str, list[str]]:
    headers = {"Accept": ["application/json"], "xero-tenant-id": [TENANT_ID]}
    for name, value in (extra or {}).items():
        headers[name] = [value]
    return headers


def _response(
    status: int,
    message: str,
    body: str,
    *,
    content_type: str | None = "application/json; charset=utf-8",
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
    """The n-th refresh: POST to the identity server, answered with a rotated grant."""
    payload = {
        "access_token": f"scrubbed-access-token-{n}",
        "expires_in": 1800,
        "token_type": "Bearer",
        "refresh_token": f"scrubbed-refresh-token-{n}",
        "scope": "offline_access accounting.transactions",
    }
    return {
        "request": _request(
            "POST", TOKEN_URL, body=TOKEN_REQUEST_BODY, headers=copy.deepcopy(TOKEN_REQUEST_HEADERS)
        ),
        "response": _response(200, "OK", json.dumps(payload)),
    }


def _get(path: str, query: dict[str, str] | None = None, **headers: str) -> dict[str, Any]:
    uri = f"{API}{path}" + (f"?{urlencode(query)}" if query else "")
    return _request("GET", uri, headers=_api_headers(headers))


def _put_payments(payments: list[dict[str, Any]], idempotency_key: str) -> dict[str, Any]:
    return _request(
        "PUT",
        f"{API}/Payments?summarizeErrors=false",
        body=_body({"Payments": payments}),
        headers=_api_headers(
            {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        ),
    )


def _envelope(sample: dict[str, Any], key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: v for k, v in sample.items() if k != key}
    out[key] = items
    return out


def _payment_out(
    invoice_id: str, amount: str, reference: str, date: str = "2019-03-12"
) -> dict[str, Any]:
    """One payment as the mapping must write it (field order = mapping order)."""
    return {
        "Invoice": {"InvoiceID": invoice_id},
        "Account": {"Code": ACCOUNT_CODE},
        "Date": date,
        "Amount": Decimal(amount),
        "Reference": reference,
    }


def _ok_payment_item(s: dict[str, Any], reference: str) -> dict[str, Any]:
    """The spec's PUT /Payments item, as the success it is meant to show."""
    item = copy.deepcopy(s["PUT /Payments response"]["Payments"][0])
    # adjusted: the spec example mixes the success with a validation error.
    item.pop("ValidationErrors", None)
    item["HasValidationErrors"] = False
    item["StatusAttributeString"] = "OK"
    item["Reference"] = reference  # adjusted: we always send our reference
    return item


def _error_item(
    invoice: dict[str, Any], amount: str, reference: str, message: str
) -> dict[str, Any]:
    """A per-item failure under summarizeErrors=false (Xero echoes the element)."""
    return {
        "PaymentID": ZERO_GUID,
        "Date": "/Date(1552348800000+0000)/",
        "Amount": Decimal(amount),
        "Reference": reference,
        "Account": {"Code": ACCOUNT_CODE},
        "Invoice": {k: invoice[k] for k in ("Type", "InvoiceID", "InvoiceNumber", "Status")},
        "HasAccount": False,
        "StatusAttributeString": "ERROR",
        "HasValidationErrors": True,
        "ValidationErrors": [{"Message": message}],
    }


def _validation_exception(element: dict[str, Any], message: str) -> str:
    """A 400 ValidationException whose Elements echo ``element`` (fact sheet §3)."""
    echoed = {**element, "ValidationErrors": [{"Message": message}]}
    return _body(
        {
            "ErrorNumber": 10,
            "Type": "ValidationException",
            "Message": "A validation exception occurred",
            "Elements": [echoed],
        }
    )


def _json_ok(body: Any, headers: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return _response(200, "OK", _body(body), headers=headers)


# -- the cassettes ------------------------------------------------------------------
def c_get_invoice_by_number(s: dict[str, Any]) -> list[Interaction]:
    invoice = s["GET /Invoices/{InvoiceID} response"]["Invoices"][0]
    # adjusted: GET /Invoices?InvoiceNumbers= answers with the list envelope
    # (pagination and all) holding the one INV-0006 of the /Invoices/{id} example.
    envelope = _envelope(s["GET /Invoices response"], "Invoices", [invoice])
    envelope["pagination"] = {"page": 1, "pageSize": 100, "pageCount": 1, "itemCount": 1}
    return [
        token_interaction(1),
        {
            "request": _get("/Invoices", {"InvoiceNumbers": "INV-0006"}),
            "response": _json_ok(envelope),
        },
    ]


def c_get_invoice_by_number_missing(s: dict[str, Any]) -> list[Interaction]:
    envelope = _envelope(s["GET /Invoices response"], "Invoices", [])
    envelope["pagination"] = {"page": 1, "pageSize": 100, "pageCount": 0, "itemCount": 0}
    return [
        token_interaction(1),
        {
            "request": _get("/Invoices", {"InvoiceNumbers": "INV-9999"}),
            "response": _json_ok(envelope),
        },
    ]


def c_get_invoice_by_id(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(1),
        {
            "request": _get(f"/Invoices/{INV_0006_PAID}"),
            "response": _json_ok(s["GET /Invoices/{InvoiceID} response"]),
        },
    ]


def c_push_payment_ok(s: dict[str, Any]) -> list[Interaction]:
    spec_request = s["PUT /Payments request"]["Payments"][0]
    # adjusted: the spec request pays the zero GUID; the response is for INV-0004.
    out = _payment_out(INV_0004_AUTHORISED, "1.00", "cx-k1-1", date=spec_request["Date"])
    assert out["Account"] == spec_request["Account"]
    response = _envelope(s["PUT /Payments response"], "Payments", [_ok_payment_item(s, "cx-k1-1")])
    return [
        token_interaction(1),
        {
            "request": _put_payments([out], "k1"),
            "response": _json_ok(response, RATE_HEADERS),
        },
    ]


def c_push_payments_mixed(s: dict[str, Any]) -> list[Interaction]:
    invoices = {i["InvoiceID"]: i for i in s["GET /Invoices response"]["Invoices"]}
    sent = [
        _payment_out(INV_0004_AUTHORISED, "1.00", "cx-k2-1"),
        _payment_out(INV_0003_AUTHORISED, "500.00", "cx-k2-2"),
        _payment_out(INV_0001_VOIDED, "40.00", "cx-k2-3"),
    ]
    items = [
        _ok_payment_item(s, "cx-k2-1"),
        _error_item(invoices[INV_0003_AUTHORISED], "500.00", "cx-k2-2", MSG_EXCEEDS),
        _error_item(invoices[INV_0001_VOIDED], "40.00", "cx-k2-3", MSG_NOT_AUTHORISED),
    ]
    return [
        token_interaction(1),
        {
            "request": _put_payments(sent, "k2"),
            "response": _json_ok(_envelope(s["PUT /Payments response"], "Payments", items)),
        },
    ]


def c_push_payment_without_id(s: dict[str, Any]) -> list[Interaction]:
    # XeroAPI/Xero-NetStandard#324: an OK item with no PaymentID, nothing created.
    item = _ok_payment_item(s, "cx-k3-1")
    item.pop("PaymentID")
    return [
        token_interaction(1),
        {
            "request": _put_payments([_payment_out(INV_0004_AUTHORISED, "1.00", "cx-k3-1")], "k3"),
            "response": _json_ok(_envelope(s["PUT /Payments response"], "Payments", [item])),
        },
    ]


def c_find_payment(s: dict[str, Any]) -> list[Interaction]:
    sample = s["GET /Payments response"]
    mine = copy.deepcopy(sample["Payments"][0])  # 99ea7f6b… on INV-0002
    mine["Reference"] = FIND_REFERENCE  # adjusted
    other_doc = copy.deepcopy(sample["Payments"][1])  # 6b037c9b… on CN-0005
    other_doc["Reference"] = FIND_REFERENCE  # adjusted: same reference, other document
    other_case = copy.deepcopy(sample["Payments"][0])
    other_case["PaymentID"] = "5a0c1d2e-3f4a-4b5c-8d6e-7f8a9b0c1d2e"  # adjusted
    other_case["Reference"] = FIND_REFERENCE.upper()  # Xero's == ignores case
    payments = [other_doc, mine, other_case]
    envelope = _envelope(sample, "Payments", payments)
    envelope["pagination"] = {"page": 1, "pageSize": 100, "pageCount": 1, "itemCount": 3}
    return [
        token_interaction(1),
        {
            "request": _get("/Payments", {"where": f'Reference=="{FIND_REFERENCE}"'}),
            "response": _json_ok(envelope),
        },
    ]


def c_list_changed_invoices(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(1),
        {
            "request": _get(
                "/Invoices",
                {
                    "order": "UpdatedDateUTC ASC",
                    "where": 'Type=="ACCREC"',
                    "page": "1",
                    "pageSize": "100",
                },
                **{"If-Modified-Since": "2018-11-01T12:00:00"},
            ),
            "response": _json_ok(s["GET /Invoices response"], RATE_HEADERS),
        },
    ]


def c_list_changed_payments(s: dict[str, Any]) -> list[Interaction]:
    envelope = copy.deepcopy(s["GET /Payments response"])
    # adjusted: page 1 of 2 at pageSize 2.
    envelope["pagination"] = {"page": 1, "pageSize": 2, "pageCount": 2, "itemCount": 3}
    return [
        token_interaction(1),
        {
            "request": _get(
                "/Payments", {"order": "UpdatedDateUTC ASC", "page": "1", "pageSize": "2"}
            ),
            "response": _json_ok(envelope),
        },
    ]


def c_error_404_plain_text(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(1),
        {
            "request": _get(f"/Invoices/{INV_MISSING}"),
            "response": _response(404, "Not Found", MSG_404, content_type="text/plain"),
        },
    ]


def _put_rejected(s: dict[str, Any], key: str, invoice_id: str, message: str) -> list[Interaction]:
    out = _payment_out(invoice_id, "1.00", f"cx-{key}-1")
    return [
        token_interaction(1),
        {
            "request": _put_payments([out], key),
            "response": _response(400, "Bad Request", _validation_exception(out, message)),
        },
    ]


def c_error_400_account_not_found(s: dict[str, Any]) -> list[Interaction]:
    return _put_rejected(s, "k4", INV_0004_AUTHORISED, MSG_ACCOUNT_NOT_FOUND)


def c_error_400_not_authorised(s: dict[str, Any]) -> list[Interaction]:
    return _put_rejected(s, "k5", INV_0001_VOIDED, MSG_NOT_AUTHORISED)


def c_error_401_token_expired(s: dict[str, Any]) -> list[Interaction]:
    problem: dict[str, Any] = {
        "Type": None,
        "Title": "Unauthorized",
        "Status": 401,
        "Detail": TOKEN_EXPIRED_DETAIL,
        "Instance": "6489df60-8f6d-4e1b-9a3c-2d5e7f8a9b0c",
        "Extensions": {},
    }
    request = _get(f"/Invoices/{INV_0006_PAID}")
    return [
        token_interaction(1),
        {
            "request": request,
            "response": _response(401, "Unauthorized", json.dumps(problem)),
        },
        token_interaction(2),
        {
            "request": copy.deepcopy(request),
            "response": _json_ok(s["GET /Invoices/{InvoiceID} response"]),
        },
    ]


def c_error_429_retry_after(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(1),
        {
            "request": _get(f"/Invoices/{INV_0006_PAID}"),
            "response": _response(
                429,
                "Too Many Requests",
                "",
                content_type=None,
                headers={
                    "Retry-After": ["120"],
                    "X-Rate-Limit-Problem": ["minute"],
                    "X-MinLimit-Remaining": ["0"],
                },
            ),
        },
    ]


def c_error_503_write(s: dict[str, Any]) -> list[Interaction]:
    out = _payment_out(INV_0004_AUTHORISED, "1.00", "cx-k6-1")
    return [
        token_interaction(1),
        {
            "request": _put_payments([out], "k6"),
            "response": _response(
                503, "Service Unavailable", MSG_503_WRITE, content_type="text/plain"
            ),
        },
    ]


def c_error_503_read(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(1),
        {
            "request": _get(f"/Invoices/{INV_0006_PAID}"),
            "response": _response(
                503, "Service Unavailable", MSG_503_READ, content_type="text/plain"
            ),
        },
    ]


BUILDERS: dict[str, Callable[[dict[str, Any]], list[Interaction]]] = {
    "get_invoice_by_number": c_get_invoice_by_number,
    "get_invoice_by_number_missing": c_get_invoice_by_number_missing,
    "get_invoice_by_id": c_get_invoice_by_id,
    "push_payment_ok": c_push_payment_ok,
    "push_payments_mixed": c_push_payments_mixed,
    "push_payment_without_id": c_push_payment_without_id,
    "find_payment": c_find_payment,
    "list_changed_invoices": c_list_changed_invoices,
    "list_changed_payments": c_list_changed_payments,
    "error_404_plain_text": c_error_404_plain_text,
    "error_400_account_not_found": c_error_400_account_not_found,
    "error_400_not_authorised": c_error_400_not_authorised,
    "error_401_token_expired": c_error_401_token_expired,
    "error_429_retry_after": c_error_429_retry_after,
    "error_503_write": c_error_503_write,
    "error_503_read": c_error_503_read,
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
