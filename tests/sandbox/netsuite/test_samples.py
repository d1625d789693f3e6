"""Every sample in shared/samples/netsuite is served back in the same shape.

Shapes are compared recursively: the same keys and JSON types, never the values (ids,
dates and amounts differ). Where a sample is a partial body (its source abbreviated it),
the comparison checks the sample's keys are present with the same types.
"""

from __future__ import annotations

import copy
import json
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from .conftest import JWT_BEARER, Client, NetSuite, make_assertion, parse

#: Vendored copies of shared/samples/netsuite, so that any checkout runs these tests.
SAMPLES = Path(__file__).resolve().parent / "samples"
#: The shared originals: next to this checkout, or where the team keeps them.
SHARED_CANDIDATES = (
    Path(__file__).resolve().parents[3].parent / "shared" / "samples" / "netsuite",
    Path("/work/shared/samples/netsuite"),
)


def test_vendored_samples_match_the_shared_ones() -> None:
    vendored = sorted(p.name for p in SAMPLES.glob("*.json"))
    assert len(vendored) >= 7
    for name in vendored:  # every copy is whole JSON
        json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    for shared_dir in (d for d in SHARED_CANDIDATES if d.is_dir()):
        assert sorted(p.name for p in shared_dir.glob("*.json")) == vendored
        for name in vendored:
            assert (shared_dir / name).read_bytes() == (SAMPLES / name).read_bytes(), name


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise TypeError(type(value))


def assert_same_shape(
    actual: Any, expected: Any, path: str = "$", *, partial: bool = False
) -> None:
    """Same keys (a superset when ``partial``) and the same JSON types, recursively."""
    assert _kind(actual) == _kind(expected), f"{path}: {_kind(actual)} != {_kind(expected)}"
    if isinstance(expected, dict):
        wanted = {k for k in expected if not k.startswith("_")}
        if partial:
            assert wanted <= set(actual), f"{path}: missing {wanted - set(actual)}"
        else:
            assert set(actual) == wanted, f"{path}: {sorted(actual)} != {sorted(wanted)}"
        for key in wanted:
            assert_same_shape(actual[key], expected[key], f"{path}.{key}", partial=partial)
    elif isinstance(expected, list) and expected:
        assert actual, f"{path}: empty list, the sample has items"
        for index, item in enumerate(actual):
            model = expected[min(index, len(expected) - 1)]
            assert_same_shape(item, model, f"{path}[{index}]", partial=partial)


def _map_ids(body: Any, mapping: dict[str, str]) -> Any:
    """Replace ``{"id": old}`` references by sandbox ids."""
    out = copy.deepcopy(body)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("id"), str) and node["id"] in mapping:
                node["id"] = mapping[node["id"]]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def _assert_headers(response: httpx.Response, expected: dict[str, Any]) -> None:
    missing = {k for k in expected if k.lower() not in response.headers}
    assert not missing, f"headers missing: {missing}"


def _invoice_for_customer_payment(client: Client, amount: Decimal) -> dict[str, Any]:
    return next(
        inv
        for inv in client.ledger.invoices(client.account)
        if inv["status"]["id"] == "A"
        and inv["amountRemaining"] >= amount
        and inv["currency"]["id"] == "1"
    )


def _send_raw(client: Client, method: str, path: str, body: Any, **headers: str) -> httpx.Response:
    return client.http.request(
        method,
        path,
        content=json.dumps(body).encode(),
        headers=client.headers(**{"Content-Type": "application/json", **headers}),
    )


def _hotglue_customer_payment(client: Client) -> httpx.Response:
    recorded = sample("hotglue_customerPayment_create.request_response.json")
    invoice = _invoice_for_customer_payment(client, Decimal(5))
    body = _map_ids(
        recorded["request"]["body"], {"313": invoice["entity"]["id"], "8935": invoice["id"]}
    )
    return _send_raw(client, "POST", "/services/rest/record/v1/customerPayment", body)


def test_hotglue_customer_payment_create(client: Client) -> None:
    recorded = sample("hotglue_customerPayment_create.request_response.json")
    response = _hotglue_customer_payment(client)
    assert response.status_code == recorded["response"]["status"]
    assert response.content.decode() == recorded["response"]["body"]
    _assert_headers(response, recorded["response"]["headers"])
    assert re.search(r"/services/rest/record/v1/customerpayment/\d+$", response.headers["location"])


def test_hotglue_vendor_payment_create(client: Client) -> None:
    recorded = sample("hotglue_vendorPayment_create.request_response.json")
    bill = client.open_bill()
    body = _map_ids(recorded["request"]["body"], {"718": bill["entity"]["id"], "17640": bill["id"]})
    response = _send_raw(client, "POST", "/services/rest/record/v1/vendorPayment", body)
    assert response.status_code == recorded["response"]["status"]
    assert response.content.decode() == recorded["response"]["body"]
    _assert_headers(response, recorded["response"]["headers"])
    assert re.search(r"/services/rest/record/v1/vendorpayment/\d+$", response.headers["location"])
    duplicate_check = client.suiteql(recorded["preceding_duplicate_check_suiteql"])
    assert duplicate_check.status_code == 200 and duplicate_check.json()["count"] == 1


def test_hotglue_suiteql_duplicate_check_then_found(client: Client) -> None:
    lookups = sample("hotglue_suiteql_lookups.request_response.json")
    exchange = lookups["duplicate_check_before_create"]
    q = exchange["request"]["body"]["q"]
    before = client.suiteql(q, prefer=exchange["request"]["headers"]["Prefer"])
    assert before.status_code == exchange["response"]["status"]
    assert_same_shape(before.json(), exchange["response"]["body"])
    _assert_headers(before, exchange["response"]["headers"])
    assert before.headers["content-type"].startswith(
        exchange["response"]["headers"]["Content-Type"].split(";")[0]
    )
    assert before.headers["preference-applied"] == "transient"
    # After the recorded create, the same query finds the payment (the second sample).
    assert _hotglue_customer_payment(client).status_code == 204
    found = sample("hotglue_suiteql_existing_payment_found.json")
    after = client.suiteql(q)
    assert after.status_code == found["status"]
    assert_same_shape(after.json(), found["body"])
    item = after.json()["items"][0]
    assert item["status"] == "Payment : Deposited" and item["type"] == "CustPymt"
    assert re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}", item["trandate"])
    assert item["externalid"] == "EXT-TEST-3200" and item["amount"] == "5"


def test_hotglue_suiteql_invoice_lookup_by_external_id(client: Client, ns: NetSuite) -> None:
    exchange = sample("hotglue_suiteql_lookups.request_response.json")[
        "invoice_lookup_by_externalId"
    ]
    ns.ledger.add_invoice(ns.account, total=Decimal("30.00"), external_id="TEST-INV-6666")
    query = exchange["request"]["uri"].split("?", 1)[1]
    params = dict(part.split("=") for part in query.split("&"))
    response = client.suiteql(exchange["request"]["body"]["q"], params=params)
    assert response.status_code == exchange["response"]["status"]
    assert_same_shape(response.json(), exchange["response"]["body"])
    self_href = response.json()["links"][0]["href"]
    assert self_href.endswith(
        exchange["response"]["body"]["links"][0]["href"].split("/services")[1]
    )


@pytest.mark.parametrize("name", ["invalid_login_401", "invalid_login_401_client_report"])
def test_error_invalid_login(ns: NetSuite, name: str) -> None:
    example = sample("netsuite_rest_error_examples.json")[name]
    response = httpx.get(
        f"{ns.base()}/services/rest/record/v1/invoice",
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert response.status_code == example["http_status"]
    assert_same_shape(response.json(), example["body"])
    assert response.json()["o:errorDetails"][0] == example["body"]["o:errorDetails"][0]


def test_error_invalid_reference_in_body(client: Client) -> None:
    example = sample("netsuite_rest_error_examples.json")["invalid_reference_in_body_400"]
    invoice = client.open_invoice()
    body = client.payment_body(invoice)
    body["apply"]["items"][0]["doc"] = {"id": "9999"}
    response = client.send("POST", "/customerPayment", body)
    assert response.status_code == example["http_status"]
    assert_same_shape(response.json(), example["body"])
    detail = response.json()["o:errorDetails"][0]
    assert detail["detail"] == (
        "Error while accessing resource: You have entered an Invalid Field Value 9999 for the "
        "following field: doc"
    )


def test_error_duplicate_idempotency_key_async(client: Client) -> None:
    example = sample("netsuite_rest_error_examples.json")["duplicate_idempotency_key_async"]
    invoice = client.open_invoice()
    headers = {
        "Prefer": "respond-async",
        "X-NetSuite-Idempotency-Key": "a1b2c3d4-0000-4000-8000-000000000001",
    }
    assert (
        client.send(
            "POST", "/customerPayment", client.payment_body(invoice), headers=headers
        ).status_code
        == 202
    )
    response = client.send(
        "POST", "/customerPayment", client.payment_body(invoice), headers=headers
    )
    assert response.status_code == example["http_status"]
    assert_same_shape(response.json(), example["body"])
    assert response.json()["o:errorDetails"] == example["body"]["o:errorDetails"]
    _assert_headers(response, example["headers"])


def test_error_nonexistent_field_in_q(client: Client) -> None:
    example = sample("netsuite_rest_error_examples.json")["nonexistent_field_in_q_filter_400"]
    # The recorded call filtered employees; here a record type whose lastModifiedDate is
    # not filterable in the sandbox (accounts) gives the same answer.
    q = 'lastModifiedDate AFTER "2023-08-13" AND lastModifiedDate BEFORE "2023-09-12"'
    response = client.get("/account", q=q)
    assert response.status_code == example["http_status"]
    assert_same_shape(response.json(), example["body"])
    assert response.json()["o:errorDetails"] == example["body"]["o:errorDetails"]


def test_error_duplicate_external_id(client: Client) -> None:
    example = sample("netsuite_rest_error_examples.json")[
        "duplicate_externalId_on_create_400_UNVERIFIED_SOURCE"
    ]
    invoice = client.open_invoice()
    body = client.payment_body(invoice, "1.00", externalId="DUP-1")
    assert client.send("POST", "/customerPayment", body).status_code == 204
    response = client.send("POST", "/customerPayment", body)
    assert response.status_code == example["http_status"]
    assert_same_shape(response.json(), example["body"], partial=True)  # the sample is abbreviated
    assert response.json()["o:errorDetails"] == example["body"]["o:errorDetails"]


def test_error_workflow_locked_record(client: Client, ns: NetSuite) -> None:
    example = sample("netsuite_rest_error_examples.json")[
        "workflow_locked_record_UNVERIFIED_SOURCE"
    ]
    invoice = client.open_invoice()
    ns.ledger.lock_document(ns.account, invoice["id"])
    response = client.send("PATCH", f"/invoice/{invoice['id']}", {"memo": "x"})
    assert_same_shape(response.json(), example["body"], partial=True)
    assert response.json()["o:errorDetails"] == example["body"]["o:errorDetails"]


def test_oracle_customer_payment_body(client: Client) -> None:
    example = sample("oracle_doc_examples.json")["customerPayment_create_body"]
    invoice = _invoice_for_customer_payment(client, Decimal(250))
    body = _map_ids(example["body"], {"4": invoice["entity"]["id"], "104": invoice["id"]})
    response = _send_raw(client, example["method"], example["path"], body)
    assert response.status_code == 204
    payment = parse(client.http.get(response.headers["location"], headers=client.headers()))
    assert (payment["payment"], payment["applied"], payment["unapplied"]) == (250, 200, 50)
    assert payment["memo"] == "10"


def test_oracle_vendor_payment_body(client: Client) -> None:
    example = sample("oracle_doc_examples.json")["vendorPayment_create_body"]
    bill = client.open_bill()
    text = (
        example["body_template"]
        .replace("${entity-id}", bill["entity"]["id"])
        .replace("${bill-id}", bill["id"])
        .replace("${amount}", "12.5")
    )
    response = client.http.post(
        example["path"],
        content=text.encode(),
        headers=client.headers(**{"Content-Type": "application/json"}),
    )
    assert response.status_code == 204
    assert client.ledger.open_amount(client.account, bill["id"]) == bill["total"] - Decimal("12.5")


def test_oracle_create_record_response_headers(client: Client) -> None:
    example = sample("oracle_doc_examples.json")["create_record_response"]
    response = _hotglue_customer_payment(client)
    assert response.status_code == example["status"]
    _assert_headers(response, example["headers"])


def test_oracle_upsert_by_external_id(client: Client) -> None:
    example = sample("oracle_doc_examples.json")["upsert_by_external_id"]
    created = _send_raw(client, example["method"], example["path"], example["body"])
    assert created.status_code == 204 and "/record/v1/customer/" in created.headers["location"]
    again = _send_raw(client, example["method"], example["path"], {"lastName": "Smyth"})
    assert again.status_code == 204
    customer = client.get("/customer/eid:CID002").json()
    assert (customer["firstName"], customer["lastName"]) == ("John", "Smyth")
    assert customer["isPerson"] is True and customer["externalId"] == "CID002"


def test_oracle_async_request(client: Client, ns: NetSuite) -> None:
    example = sample("oracle_doc_examples.json")["async_request"]
    invoice = client.open_invoice()
    ns.faults.update({"latency_ms": 300})  # keeps the job pending for a moment
    submitted = client.send(
        "POST",
        "/customerPayment",
        client.payment_body(invoice),
        headers={"Prefer": "respond-async"},
    )
    assert submitted.status_code == example["submit_response"]["status"]
    _assert_headers(submitted, example["submit_response"]["headers"])
    job_url = client.env.url + submitted.headers["location"]
    pending = client.http.get(job_url, headers=client.headers()).json()
    assert_same_shape(pending, example["job_status_pending"])
    assert pending["progress"] == "pending" and pending["completed"] is False
    for _ in range(200):
        if client.http.get(job_url, headers=client.headers()).json()["completed"]:
            break
        time.sleep(0.01)
    task = client.http.get(job_url + "/task/1", headers=client.headers()).json()
    assert_same_shape(task, example["task_status_done"])
    assert [link["rel"] for link in task["links"]] == ["related", "self"]


def test_oracle_suiteql_request(client: Client) -> None:
    example = sample("oracle_doc_examples.json")["suiteql_request"]
    response = client.http.post(
        "/services/rest/query/v1/suiteql",
        content=json.dumps(example["body"]).encode(),
        headers=client.headers(**example["headers"]),
    )
    assert response.status_code == 200, response.text
    rows = response.json()["items"]
    assert rows and all(set(r) <= {"links", "email", "count"} for r in rows)
    transactions = client.rows("SELECT id FROM transaction")
    assert sum(int(r["count"]) for r in rows) == len(transactions)


def test_oracle_collection_paging_links(client: Client) -> None:
    example = sample("oracle_doc_examples.json")["collection_paging_links"]
    body = client.get("/customer", limit=2).json()
    assert_same_shape(body["links"], example["links"])
    assert [link["rel"] for link in body["links"]] == [link["rel"] for link in example["links"]]
    assert body["links"][-1]["href"].endswith("/record/v1/customer?limit=2&offset=0")


def test_oracle_client_credentials_jwt(ns: NetSuite) -> None:
    example = sample("oracle_doc_examples.json")["client_credentials_jwt"]
    assertion = make_assertion(
        ns.ledger, ns.account, ns.token_url(), scope="rest_webservices,restlets"
    )
    header_b64, payload_b64, _ = assertion.split(".")
    header = json.loads(_unb64(header_b64))
    payload = json.loads(_unb64(payload_b64))
    assert set(header) == set(example["jwt_header"]) and set(payload) == set(example["jwt_payload"])
    form = example["form_body"].replace("<signed JWT>", quote(assertion, safe=""))
    assert JWT_BEARER in form.replace("%3A", ":")
    response = httpx.post(
        ns.token_url(),
        content=form.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---------------------------------------------------------------------- the schema extract

_ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: Extract fields the sandbox leaves out, and why.
_NOT_RENDERED = {
    "customerPayment": {
        "balance",  # the customer's balance: its exact meaning on the record is unconfirmed
        "checkNumber",  # never set by the sandbox (NetSuite omits empty fields)
        "credit.items[]",  # no credit memos in the sandbox
    },
    "vendorBill": {"balance", "availableVendorCredit"},
    "vendorPayment": {"status"},  # no status letter on bill payments (see render.py)
}


def _check_type(value: Any, spec: Any, where: str) -> None:
    if isinstance(spec, dict):
        assert isinstance(value, dict) and value["id"] in spec["id_enum"], where
        if "refName" in spec:
            assert isinstance(value.get("refName"), str), where
        return
    text = str(spec)
    if text.startswith("number"):
        assert _kind(value) == "number", where
    elif text.startswith("integer"):
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif text.startswith("boolean"):
        assert isinstance(value, bool), where
    elif "date-time" in text:
        assert isinstance(value, str) and _ISO_Z.match(value), where
    elif text.startswith(("string/date", "date")):
        assert isinstance(value, str) and _DATE.match(value), where
    elif text.startswith("string"):
        assert isinstance(value, str), where
    elif "ref" in text:
        assert isinstance(value, dict) and {"id", "refName", "links"} <= set(value), where
    elif text.startswith("object"):
        assert isinstance(value, dict), where
    else:  # pragma: no cover - a new kind of description
        raise AssertionError(f"{where}: unknown type description {text!r}")


@pytest.mark.parametrize("record", ["invoice", "customerPayment", "vendorBill", "vendorPayment"])
def test_rest_record_field_extract(client: Client, ns: NetSuite, record: str) -> None:
    extract = sample("rest_record_field_extract_2026_1.json")[record]
    if record == "invoice":
        doc = client.open_invoice()
        ns.ledger.edit_invoice(ns.account, doc["id"], externalId="X-1", memo="m")
        body = parse(client.get(f"/invoice/{doc['id']}"))
    elif record == "vendorBill":
        doc = client.open_bill()
        ns.ledger.edit_bill(ns.account, doc["id"], externalId="X-1")
        body = parse(client.get(f"/vendorBill/{doc['id']}"))
    else:
        kind = "customerpayment" if record == "customerPayment" else "vendorpayment"
        invoice = client.open_invoice() if record == "customerPayment" else client.open_bill()
        entity_field = "customer" if record == "customerPayment" else "entity"
        create = {
            entity_field: {"id": invoice["entity"]["id"]},
            "account": {"id": "1"},
            "externalId": "X-1",
            "memo": "m",
            "apply": {"items": [{"doc": {"id": invoice["id"]}, "amount": 1}]},
        }
        location = client.send("POST", f"/{kind}", create).headers["location"]
        body = parse(
            client.http.get(
                location, headers=client.headers(), params={"expandSubResources": "true"}
            )
        )
    skipped = _NOT_RENDERED.get(record, set())
    for field, spec in extract.items():
        if field.startswith("_") or field == "transforms" or field in skipped:
            continue
        if field.endswith(".items[]"):
            sublist = body[field.split(".")[0]]
            assert sublist["items"], field
            if isinstance(spec, dict):
                for sub_field, sub_spec in spec.items():
                    _check_type(sublist["items"][0][sub_field], sub_spec, f"{field}.{sub_field}")
            continue
        assert field in body, f"{record}.{field} missing"
        _check_type(body[field], spec, f"{record}.{field}")
    if record == "vendorBill":
        assert "amountRemaining" not in body  # as the 2026.1 schema says
    # The payment transforms the extract lists are served (the others are not emulated).
    for transform in extract.get("transforms", []):
        target = transform.rsplit("/", 1)[1]
        if target in {"customerPayment", "vendorPayment"}:
            path = transform.replace("{id}", body["id"])
            assert client.send("POST", path, {}).status_code == 204, path


def test_rest_record_extract_error_and_paging_conventions(client: Client) -> None:
    extract = sample("rest_record_field_extract_2026_1.json")
    allowed = {field.replace("o:errorDetails[].", "") for field in extract["nsError"]}
    missing = client.get("/invoice/1").json()
    assert {k for k in missing if k != "o:errorDetails"} <= allowed
    assert set(missing["o:errorDetails"][0]) <= allowed
    assert extract["shared_query_params"]["limit"] == "default 1000"
    listing = client.get("/invoice").json()
    assert listing["links"][-1]["href"].endswith("?limit=1000&offset=0")
