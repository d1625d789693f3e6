"""Build the QuickBooks Online contract cassettes from Intuit's own sample payloads.

Run ``python -m tests.contract.quickbooks.qbo_cassettes`` (from the project root) to
(re)write ``tests/contract/quickbooks/cassettes/*.yaml``; the output is committed and
``test_cassettes_match_generator`` fails when it drifts from this script.

Sources (never edited): the samples of ``/work/shared/samples/quickbooks`` as vendored
in ``tests/sandbox/quickbooks/samples`` (provenance in their ``README.md``), and the
fact sheet ``providers/quickbooks.md`` for what has no sample:

* the gateway's lower-case 401/403 bodies (§4 and the sandbox's capture of the live
  API in ``connector/sandbox/quickbooks/routes.py``), the XML throttle body (§4);
* the 6000 Message "A business validation error has occurred while processing your
  request" (public error reports) with a Detail in the sandbox's wording;
* ``Preferences`` (home currency), composed from the fields the fact sheet names.

Adjustments to the samples, so that request and response agree, are marked
``# adjusted``. Request bodies are the exact bytes the adapter must send, written by
hand (not with the adapter's mapping) and serialized with :func:`connector.jsonutil.dumps`.

Token calls are stored as they look after scrubbing (see ``tests/contract/conftest.py``):
no ``Authorization`` header, the form body without ``refresh_token``/``client_id``/
``client_secret``, and placeholder token values.
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

SAMPLES_DIR = Path(
    os.environ.get(
        "QBO_SAMPLES_DIR", Path(__file__).parents[2] / "sandbox" / "quickbooks" / "samples"
    )
)
CASSETTE_DIR = Path(__file__).resolve().parent / "cassettes"

BASE_URL = "https://quickbooks.api.intuit.com"
TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
REALM_ID = "9130357766900456"  # illustrative realm (company) id
API = f"{BASE_URL}/v3/company/{REALM_ID}"
MINOR_VERSION = "75"

REFERENCE = "cx-0a1b2c3d4e5f6071"  # 19 characters: fits PaymentRefNum / DocNumber
SINCE = "2014-09-19T20:00:00+00:00"

MSG_BUSINESS = "A business validation error has occurred while processing your request"
DETAIL_EXCEEDS = (
    "Business Validation Error: The amount applied to Invoice 1024 (80.00) exceeds its "
    "open balance (71.00)"
)
MSG_SYSTEM = "An application error has occurred while processing your request"
THROTTLE_XML = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" '
    'time="2015-07-28T15:16:15.435-07:00"><Fault type="SERVICE"><Error code="3001">'
    "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
    "<Detail>The request limit was reached.  Try again later</Detail>"
    "</Error></Fault></IntuitResponse>"
)
TOKEN_REQUEST_BODY = "grant_type=refresh_token"
TOKEN_REQUEST_HEADERS = {
    "Accept": ["application/json"],
    "Content-Type": ["application/x-www-form-urlencoded;charset=UTF-8"],
}
JSON_TYPE = "application/json;charset=UTF-8"
TID = "1-6aa36f3e-7c887528297dc3cd2d23dbe2"

Interaction = dict[str, Any]


# -- helpers ------------------------------------------------------------------------------
def load_samples(directory: Path = SAMPLES_DIR) -> dict[str, Any]:
    """Every sample by the start of its file name (``invoice_read_response_unpaid``…)."""
    out: dict[str, Any] = {}
    for path in sorted(directory.glob("*.json")):
        out[path.name.split("__", 1)[0]] = jsonutil.loads(path.read_bytes())
    return out


def _request(
    method: str, uri: str, *, body: str = "", headers: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    return {"method": method, "uri": uri, "body": body, "headers": headers or {}}


def _response(
    status: int,
    message: str,
    body: str,
    *,
    content_type: str | None = JSON_TYPE,
    headers: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    all_headers: dict[str, list[str]] = {"intuit_tid": [TID]}
    if content_type:
        all_headers["Content-Type"] = [content_type]
    all_headers.update(headers or {})
    return {
        "status": {"code": status, "message": message},
        "headers": all_headers,
        "body": {"string": body},
    }


def _ok(body: Any) -> dict[str, Any]:
    return _response(200, "OK", jsonutil.dumps(body))


def _uri(path: str, params: dict[str, str] | None = None) -> str:
    return f"{API}{path}?" + urlencode({**(params or {}), "minorversion": MINOR_VERSION})


def _get(path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    return _request("GET", _uri(path, params), headers={"Accept": ["application/json"]})


def _post(path: str, body: Any, params: dict[str, str]) -> dict[str, Any]:
    return _request(
        "POST",
        _uri(path, params),
        body=jsonutil.dumps(body),
        headers={"Accept": ["application/json"], "Content-Type": ["application/json"]},
    )


def _query(statement: str) -> dict[str, Any]:
    return _get("/query", {"query": statement})


def _query_response(entity: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    if not items:
        return {"QueryResponse": {}, "time": "2015-07-28T15:16:15.435-07:00"}
    return {
        "QueryResponse": {entity: items, "startPosition": 1, "maxResults": len(items)},
        "time": "2015-07-28T15:16:15.435-07:00",
    }


def _fault(code: str, message: str, detail: str, kind: str = "ValidationFault") -> dict[str, Any]:
    return {
        "Fault": {
            "Error": [{"Message": message, "Detail": detail, "code": code, "element": ""}],
            "type": kind,
        },
        "time": "2015-07-28T15:16:15.435-07:00",
    }


def _gateway(status: int, code: str, name: str, detail: str) -> dict[str, Any]:
    """The gateway's lower-case envelope for 401/403 (§4; live capture in the sandbox)."""
    return {
        "warnings": None,
        "intuitObject": None,
        "fault": {
            "error": [
                {
                    "message": f"message={name}; errorCode={int(code):06d}; statusCode={status}",
                    "detail": detail,
                    "code": code,
                    "element": None,
                }
            ],
            "type": "AUTHENTICATION" if status == 401 else "SERVICE",
        },
        "report": None,
        "queryResponse": None,
        "batchItemResponse": [],
        "attachableResponse": [],
        "syncErrorResponse": None,
        "requestId": None,
        "time": 1730024394085,
        "status": None,
        "cdcresponse": [],
    }


def token_interaction(s: dict[str, Any], n: int) -> Interaction:
    """The n-th refresh: Intuit's token response sample with placeholder tokens."""
    payload = dict(s["oauth_token_response"])
    payload.update(
        access_token=f"scrubbed-access-token-{n}",
        refresh_token=f"scrubbed-refresh-token-{n}",
        id_token=f"scrubbed-id-token-{n}",
        x_refresh_token_expires_in=8640000,  # adjusted: 100 days (§9), not the stale 180
    )
    return {
        "request": _request(
            "POST", TOKEN_URL, body=TOKEN_REQUEST_BODY, headers=copy.deepcopy(TOKEN_REQUEST_HEADERS)
        ),
        "response": _response(200, "OK", json.dumps(payload), content_type="application/json"),
    }


def preferences_interaction() -> Interaction:
    """Home currency, read once when a document carries no CurrencyRef (composed)."""
    prefs = {
        "Preferences": {
            "CurrencyPrefs": {"MultiCurrencyEnabled": False, "HomeCurrency": {"value": "USD"}},
            "domain": "QBO",
            "sparse": False,
            "Id": "1",
            "SyncToken": "0",
        },
        "time": "2015-07-24T10:48:27.082-07:00",
    }
    return {"request": _get("/preferences"), "response": _ok(prefs)}


def invoice(s: dict[str, Any]) -> dict[str, Any]:
    """Intuit's unpaid invoice 130 (DocNumber 1037, customer 24, 362.07, no CurrencyRef)."""
    return copy.deepcopy(s["invoice_read_response_unpaid"]["Invoice"])


def voided_invoice(s: dict[str, Any]) -> dict[str, Any]:
    """Invoice 130 as voided (§0: amounts zeroed, PrivateNote "Voided")."""
    inv = invoice(s)  # adjusted: Intuit has no voided-invoice sample
    inv.update(Id="131", DocNumber="1038", TotalAmt=0, Balance=0, PrivateNote="Voided")
    inv["SyncToken"] = "1"
    inv["MetaData"] = {
        "CreateTime": "2014-09-19T13:20:00-07:00",
        "LastUpdatedTime": "2014-09-20T09:00:00-07:00",
    }
    return inv


def our_payment(s: dict[str, Any]) -> dict[str, Any]:
    """Intuit's Payment 163 (customer 20, 55.0 on invoice 70), as we would create it."""
    pay = copy.deepcopy(s["payment_read_response_linked_invoice_overpaid"]["Payment"])
    pay["TotalAmt"] = Decimal("55.0")  # adjusted: our payments are fully applied
    pay["UnappliedAmt"] = Decimal("0")
    pay["PaymentRefNum"] = REFERENCE  # adjusted: we always send our reference
    pay["PrivateNote"] = REFERENCE
    pay["CurrencyRef"] = {"name": "United States Dollar", "value": "USD"}
    return pay


def payment_body() -> dict[str, Any]:
    """The exact Payment we must POST for the request of ``our_payment`` (mapping order)."""
    return {
        "CustomerRef": {"value": "20"},
        "TotalAmt": Decimal("55.00"),
        "TxnDate": "2015-01-16",
        "PaymentRefNum": REFERENCE,
        "PrivateNote": REFERENCE,
        "DepositToAccountRef": {"value": "4"},
        "CurrencyRef": {"value": "USD"},
        "Line": [
            {"Amount": Decimal("55.00"), "LinkedTxn": [{"TxnId": "70", "TxnType": "Invoice"}]}
        ],
    }


def our_bill_payment(s: dict[str, Any]) -> dict[str, Any]:
    """Intuit's BillPayment 236 (vendor 56, 200.0 on bill 234 by check from 35)."""
    bp = copy.deepcopy(s["billpayment_create_response_check"]["BillPayment"])
    bp["DocNumber"] = REFERENCE  # adjusted: our reference instead of "Acct. 1JK90"
    bp["PrivateNote"] = REFERENCE
    bp["CurrencyRef"] = {"name": "United States Dollar", "value": "USD"}
    return bp


def bill_payment_body(s: dict[str, Any]) -> dict[str, Any]:
    """Intuit's check BillPayment request, with our date, reference and currency."""
    sample = s["billpayment_create_request_check"]
    line = sample["Line"][0]
    return {
        "VendorRef": {"value": sample["VendorRef"]["value"]},
        "TotalAmt": Decimal("200.00"),
        "TxnDate": "2015-07-14",
        "PayType": sample["PayType"],
        "CheckPayment": {
            "BankAccountRef": {"value": sample["CheckPayment"]["BankAccountRef"]["value"]}
        },
        "DocNumber": REFERENCE,
        "PrivateNote": REFERENCE,
        "CurrencyRef": {"value": "USD"},
        "Line": [{"Amount": Decimal("200.00"), "LinkedTxn": line["LinkedTxn"]}],
    }


def card_bill_payment(s: dict[str, Any]) -> dict[str, Any]:
    """Intuit's credit-card BillPayment 165 (vendor 48, 86.44 on bill 78, card 41)."""
    bp = copy.deepcopy(s["billpayment_creditcard_queryresult_item"])
    bp["DocNumber"] = REFERENCE  # adjusted: our reference
    bp["PrivateNote"] = REFERENCE
    return bp


def card_bill_payment_body() -> dict[str, Any]:
    return {
        "VendorRef": {"value": "48"},
        "TotalAmt": Decimal("86.44"),
        "TxnDate": "2015-01-16",
        "PayType": "CreditCard",
        "CreditCardPayment": {"CCAccountRef": {"value": "41"}},
        "DocNumber": REFERENCE,
        "PrivateNote": REFERENCE,
        "CurrencyRef": {"value": "USD"},
        "Line": [{"Amount": Decimal("86.44"), "LinkedTxn": [{"TxnId": "78", "TxnType": "Bill"}]}],
    }


def _verify(entity: str, ids: list[str], items: list[dict[str, Any]]) -> Interaction:
    listed = ", ".join(f"'{i}'" for i in ids)
    return {
        "request": _query(f"SELECT * FROM {entity} WHERE Id IN ({listed})"),
        "response": _ok(_query_response(entity, items)),
    }


# -- the cassettes --------------------------------------------------------------------------
def c_get_invoice_by_id(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(s, 1),
        {"request": _get("/invoice/130"), "response": _ok(s["invoice_read_response_unpaid"])},
        preferences_interaction(),
    ]


def c_get_bill_paid(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(s, 1),
        {"request": _get("/bill/25"), "response": _ok(s["bill_read_response_paid_balance0"])},
    ]


def c_get_invoice_by_number(s: dict[str, Any]) -> list[Interaction]:
    not_found = {"Fault": s["batch_response_with_faults"]["BatchItemResponse"][1]["Fault"]}
    not_found["time"] = "2015-07-24T10:48:27.082-07:00"
    return [
        token_interaction(s, 1),
        # "1037" is numeric: first tried as an Id (no invoice 1037: 610), then as a DocNumber.
        {
            "request": _get("/invoice/1037"),
            "response": _response(400, "Bad Request", jsonutil.dumps(not_found)),
        },
        {
            "request": _query("SELECT * FROM Invoice WHERE DocNumber = '1037'"),
            "response": _ok(_query_response("Invoice", [invoice(s)])),
        },
        preferences_interaction(),
    ]


def c_get_invoice_missing(s: dict[str, Any]) -> list[Interaction]:
    not_found = {"Fault": s["batch_response_with_faults"]["BatchItemResponse"][1]["Fault"]}
    return [
        token_interaction(s, 1),
        {
            "request": _get("/invoice/999"),
            "response": _response(400, "Bad Request", jsonutil.dumps(not_found)),
        },
        {
            "request": _query("SELECT * FROM Invoice WHERE DocNumber = '999'"),
            "response": _ok(_query_response("Invoice", [])),
        },
    ]


def c_push_payment_ok(s: dict[str, Any]) -> list[Interaction]:
    created = our_payment(s)
    return [
        token_interaction(s, 1),
        {
            "request": _post("/payment", payment_body(), {"requestid": "k1"}),
            "response": _ok({"Payment": created, "time": "2015-01-16T15:08:12.435-08:00"}),
        },
        _verify("Payment", ["163"], [created]),
    ]


def c_push_bill_payment_check(s: dict[str, Any]) -> list[Interaction]:
    created = our_bill_payment(s)
    return [
        token_interaction(s, 1),
        {
            "request": _post("/billpayment", bill_payment_body(s), {"requestid": "k2"}),
            "response": _ok(
                {"BillPayment": created, "time": s["billpayment_create_response_check"]["time"]}
            ),
        },
        _verify("BillPayment", ["236"], [created]),
    ]


def c_push_bill_payment_card(s: dict[str, Any]) -> list[Interaction]:
    created = card_bill_payment(s)
    return [
        token_interaction(s, 1),
        {
            "request": _post("/billpayment", card_bill_payment_body(), {"requestid": "k3"}),
            "response": _ok({"BillPayment": created, "time": "2015-01-16T15:36:20.964-08:00"}),
        },
        _verify("BillPayment", ["165"], [created]),
    ]


def c_push_payment_stale(s: dict[str, Any]) -> list[Interaction]:
    stale = dict(s["fault_stale_object_5010"])
    stale["time"] = "2015-07-28T15:16:15.435-07:00"
    return [
        token_interaction(s, 1),
        {
            "request": _post("/payment", payment_body(), {"requestid": "k4"}),
            "response": _response(400, "Bad Request", jsonutil.dumps(stale)),
        },
    ]


def c_push_payment_exceeds(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(s, 1),
        {
            "request": _post("/payment", payment_body(), {"requestid": "k5"}),
            "response": _response(
                400, "Bad Request", jsonutil.dumps(_fault("6000", MSG_BUSINESS, DETAIL_EXCEEDS))
            ),
        },
    ]


def c_push_payment_replayed_dead(s: dict[str, Any]) -> list[Interaction]:
    # The requestid was used for payment 163, which was deleted since: QuickBooks
    # replays the old answer (§5), and the read-back finds nothing.
    return [
        token_interaction(s, 1),
        {
            "request": _post("/payment", payment_body(), {"requestid": "k6"}),
            "response": _ok({"Payment": our_payment(s), "time": "2015-01-16T15:08:12.435-08:00"}),
        },
        _verify("Payment", ["163"], []),
    ]


def c_push_payment_500(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(s, 1),
        {
            "request": _post("/payment", payment_body(), {"requestid": "k7"}),
            "response": _response(
                500,
                "Internal Server Error",
                jsonutil.dumps(_fault("10000", MSG_SYSTEM, "System Failure Error", "SystemFault")),
            ),
        },
    ]


def c_push_batch(s: dict[str, Any]) -> list[Interaction]:
    stale = s["fault_stale_object_5010"]["Fault"]
    created = our_payment(s)
    body = {
        "BatchItemRequest": [
            {"bId": "b1", "operation": "create", "Payment": payment_body()},
            {"bId": "b2", "operation": "create", "BillPayment": bill_payment_body(s)},
        ]
    }
    answer = {
        "BatchItemResponse": [  # adjusted: Intuit's batch sample answers in its own order
            {"bId": "b2", "Fault": stale},
            {"bId": "b1", "Payment": created},
        ],
        "time": s["batch_response_with_faults"]["time"],
    }
    return [
        token_interaction(s, 1),
        {"request": _post("/batch", body, {"requestid": "k8"}), "response": _ok(answer)},
        _verify("Payment", ["163"], [created]),
    ]


def c_find_payment(s: dict[str, Any]) -> list[Interaction]:
    mine = our_payment(s)
    other_doc = our_payment(s)  # adjusted: same reference, on another invoice
    other_doc.update(Id="164")
    other_doc["Line"][0]["LinkedTxn"] = [{"TxnId": "71", "TxnType": "Invoice"}]
    other_ref = our_payment(s)  # adjusted: another reference, on our invoice
    other_ref.update(Id="165", PaymentRefNum="10264", PrivateNote="paid by check 10264")
    voided = copy.deepcopy(s["payment_void_response"]["Payment"])
    voided.update(
        Id="166",  # adjusted: ours, voided in QuickBooks
        CustomerRef={"name": "Red Rock Diner", "value": "20"},
        TxnDate="2015-01-16",
        PrivateNote=f"Voided - {REFERENCE}",
    )
    items = [other_doc, mine, other_ref, voided]
    return [
        token_interaction(s, 1),
        {
            "request": _query(
                "SELECT * FROM Payment WHERE CustomerRef = '20' AND TxnDate = '2015-01-16' "
                "STARTPOSITION 1 MAXRESULTS 1000"
            ),
            "response": _ok(_query_response("Payment", items)),
        },
    ]


def c_list_changed_invoices(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(s, 1),
        {
            "request": _query(
                f"SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '{SINCE}' "
                "ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 2"
            ),
            "response": _ok(_query_response("Invoice", [invoice(s), voided_invoice(s)])),
        },
        preferences_interaction(),
    ]


def c_list_changed_payments(s: dict[str, Any]) -> list[Interaction]:
    overpaid = s["payment_read_response_linked_invoice_overpaid"]["Payment"]
    check = s["billpayment_create_response_check"]["BillPayment"]
    card = s["billpayment_creditcard_queryresult_item"]
    return [
        token_interaction(s, 1),
        {
            "request": _query(
                f"SELECT * FROM Payment WHERE MetaData.LastUpdatedTime >= '{SINCE}' "
                "ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 2"
            ),
            "response": _ok(_query_response("Payment", [overpaid])),
        },
        {
            "request": _query(
                f"SELECT * FROM BillPayment WHERE MetaData.LastUpdatedTime >= '{SINCE}' "
                "ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 2"
            ),
            "response": _ok(_query_response("BillPayment", [card, check])),
        },
    ]


def c_cdc(s: dict[str, Any]) -> list[Interaction]:
    deleted = s["cdc_response"]["CDCResponse"][0]["QueryResponse"][1]["Estimate"][2]
    answer = {
        "CDCResponse": [
            {
                "QueryResponse": [  # adjusted: the sample's groups, for our three entities
                    {"Invoice": [invoice(s), deleted], "startPosition": 1, "maxResults": 2},
                    {},
                    {},
                ]
            }
        ],
        "time": s["cdc_response"]["time"],
    }
    return [
        token_interaction(s, 1),
        {
            "request": _get(
                "/cdc", {"entities": "Invoice,Payment,BillPayment", "changedSince": SINCE}
            ),
            "response": _ok(answer),
        },
        preferences_interaction(),
    ]


def c_fault_in_200(s: dict[str, Any]) -> list[Interaction]:
    # §4: "HTTP 200 responses may still contain a Fault".
    fault = _fault("4001", "Invalid query", "QueryValidationError: Property Foo not found")
    return [
        token_interaction(s, 1),
        {
            "request": _query(
                "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 "
                "MAXRESULTS 10"
            ),
            "response": _ok(fault),
        },
    ]


def c_error_401_token_expired(s: dict[str, Any]) -> list[Interaction]:
    expired = _gateway(401, "3200", "AuthenticationFailed", "Token expired: AB0...")
    request = _get("/bill/25")
    return [
        token_interaction(s, 1),
        {
            "request": request,
            "response": _response(
                401,
                "Unauthorized",
                json.dumps(expired),
                headers={"WWW-Authenticate": ['Bearer realm="Intuit", error="invalid_token"']},
            ),
        },
        token_interaction(s, 2),
        {"request": copy.deepcopy(request), "response": _ok(s["bill_read_response_paid_balance0"])},
    ]


def c_error_401_twice(s: dict[str, Any]) -> list[Interaction]:
    refused = _gateway(401, "3200", "AuthenticationFailed", "Token revoked")
    request = _get("/bill/25")
    answer = _response(401, "Unauthorized", json.dumps(refused))
    return [
        token_interaction(s, 1),
        {"request": request, "response": answer},
        token_interaction(s, 2),
        {"request": copy.deepcopy(request), "response": copy.deepcopy(answer)},
    ]


def c_error_403_other_realm(s: dict[str, Any]) -> list[Interaction]:
    refused = _gateway(403, "3100", "ApplicationAuthorizationFailed", "")
    return [
        token_interaction(s, 1),
        {"request": _get("/bill/25"), "response": _response(403, "Forbidden", json.dumps(refused))},
    ]


def c_error_429_throttle_xml(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(s, 1),
        {
            "request": _get("/bill/25"),
            "response": _response(
                429,
                "Too Many Requests",
                THROTTLE_XML,
                content_type="application/xml",
                headers={"Retry-After": ["60"]},
            ),
        },
    ]


def c_error_503_read(s: dict[str, Any]) -> list[Interaction]:
    return [
        token_interaction(s, 1),
        {
            "request": _get("/bill/25"),
            "response": _response(
                503, "Service Unavailable", "Service Unavailable", content_type="text/plain"
            ),
        },
    ]


BUILDERS: dict[str, Callable[[dict[str, Any]], list[Interaction]]] = {
    "get_invoice_by_id": c_get_invoice_by_id,
    "get_bill_paid": c_get_bill_paid,
    "get_invoice_by_number": c_get_invoice_by_number,
    "get_invoice_missing": c_get_invoice_missing,
    "push_payment_ok": c_push_payment_ok,
    "push_bill_payment_check": c_push_bill_payment_check,
    "push_bill_payment_card": c_push_bill_payment_card,
    "push_payment_stale": c_push_payment_stale,
    "push_payment_exceeds": c_push_payment_exceeds,
    "push_payment_replayed_dead": c_push_payment_replayed_dead,
    "push_payment_500": c_push_payment_500,
    "push_batch": c_push_batch,
    "find_payment": c_find_payment,
    "list_changed_invoices": c_list_changed_invoices,
    "list_changed_payments": c_list_changed_payments,
    "cdc": c_cdc,
    "fault_in_200": c_fault_in_200,
    "error_401_token_expired": c_error_401_token_expired,
    "error_401_twice": c_error_401_twice,
    "error_403_other_realm": c_error_403_other_realm,
    "error_429_throttle_xml": c_error_429_throttle_xml,
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
