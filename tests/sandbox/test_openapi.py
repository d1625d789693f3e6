"""Every Xero response of a realistic session, validated against Xero's official OpenAPI.

A session drives the sandbox the way a connector (and a curious user) would: token,
connections, invoices and bills listed / paged / by id / by number / If-Modified-Since,
contacts, accounts, payments PUT / POST / GET / by id / deleted, and the errors (400,
401, 403, 404, 405, 429, 500, 503). An httpx event hook records every exchange, and each
one is checked with openapi-core against ``xero_accounting.yaml`` (``/connections``
against ``xero-identity.yaml``), the sandbox path ``/xero/api.xro/2.0/…`` mapped onto the
spec's server ``https://api.xero.com/api.xro/2.0``.

Nothing is loosened globally. Where the official spec is wrong or silent about a real
behaviour, that one case is excluded with the reason next to it and checked by hand
against what Xero is known to send (fact sheet §3, §6, §7).

Microsoft JSON dates (``/Date(1552348800000+0000)/``) need no exclusion: the spec types
them as plain strings (``type: string, x-is-msdate: true``), so they validate as they are.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.validation.response.exceptions import InvalidData
from openapi_core.validation.schemas import oas30_read_schema_validators_factory
from werkzeug.datastructures import Headers, ImmutableMultiDict

from connector.sandbox import RateLimitConfig, SandboxServer
from connector.sandbox.wire import dumps

from .conftest import ServerFactory, frozen_clock

SPEC_DIR = Path(
    os.environ.get(
        "XERO_SPEC_DIR", Path(__file__).parents[1] / "fixtures" / "shared" / "specs" / "xero"
    )
)
SANDBOX_API = "/xero/api.xro/2.0"
SPEC_HOST = "https://api.xero.com"  # + the spec's server path /api.xro/2.0
NOT_FOUND = "The resource you're looking for cannot be found"
#: Xero's limits, but room for the whole session inside the frozen clock's one minute.
RATE_LIMITS = RateLimitConfig(minute=1000)
NET_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}$")


def load_spec(name: str) -> OpenAPI:
    # The official xero_accounting.yaml fails openapi-spec-validator's check *of the
    # spec itself* ("'false' is not of type 'boolean'": e.g. Account.HasAttachments is
    # declared `type: boolean, default: 'false'`, a string). Only that check of the
    # document is turned off; every response is still validated against it in full.
    return OpenAPI.from_file_path(str(SPEC_DIR / name), config=Config(spec_validator_cls=None))


@pytest.fixture(scope="module")
def accounting() -> OpenAPI:
    return load_spec("xero_accounting.yaml")


@pytest.fixture(scope="module")
def identity() -> OpenAPI:
    return load_spec("xero-identity.yaml")


# ---------------------------------------------------------------- openapi-core adapters


@dataclass
class SpecRequest:
    """An httpx request as openapi-core's ``Request`` protocol, on the spec's host."""

    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    body: bytes | None
    content_type: str

    @classmethod
    def of(cls, request: httpx.Request) -> SpecRequest:
        path = request.url.path
        if path.startswith(SANDBOX_API):
            path = "/api.xro/2.0" + path[len(SANDBOX_API) :]
        else:
            # identity: the docs write /connections, the spec and xero-python /Connections.
            path = re.sub(r"^/xero/connections", "/Connections", path, flags=re.IGNORECASE)
        return cls(
            host_url=SPEC_HOST,
            path=path,
            method=request.method.lower(),
            parameters=RequestParameters(
                query=ImmutableMultiDict(list(request.url.params.multi_items())),
                header=Headers(list(request.headers.items())),
                cookie=ImmutableMultiDict(),
            ),
            body=request.content or None,
            content_type=request.headers.get("content-type", ""),
        )


@dataclass(frozen=True)
class SpecResponse:
    """An httpx response as openapi-core's ``Response`` protocol."""

    status_code: int
    headers: Headers
    content_type: str
    data: bytes

    @classmethod
    def of(cls, response: httpx.Response, data: bytes | None = None) -> SpecResponse:
        return cls(
            status_code=response.status_code,
            headers=Headers(list(response.headers.items())),
            content_type=response.headers.get("content-type", ""),
            data=response.content if data is None else data,
        )


# ---------------------------------------------------------------- the session


@dataclass
class Session:
    """A recording httpx client logged in to the sandbox's Xero."""

    server: SandboxServer
    recorded: list[httpx.Response] = field(default_factory=list)
    http: httpx.Client = field(init=False)
    tenant: str = field(init=False)
    token: str = ""

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.server.url, timeout=10, event_hooks={"response": [self._record]}
        )
        self.tenant = self.server.state.xero.tenant_ids[0]

    def _record(self, response: httpx.Response) -> None:
        response.read()
        if not response.request.url.path.startswith("/_sandbox"):
            self.recorded.append(response)

    def login(self) -> None:
        xero = self.server.state.xero
        response = self.http.post(
            "/xero/connect/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": xero.refresh_token_for(self.tenant),
                "client_id": xero.client_id,
                "client_secret": xero.client_secret,
            },
        )
        self.token = response.json()["access_token"]

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "xero-tenant-id": self.tenant, **extra}

    def get(self, path: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
        response = self.http.get(
            SANDBOX_API + path, params=params, headers={**self.headers(), **(headers or {})}
        )
        return response.json() if response.status_code == 200 else response

    def send(
        self,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str] | None = None,
        **params: str,
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else dumps(body).encode()
        return self.http.request(
            method,
            SANDBOX_API + path,
            content=content,
            params=params,
            headers={**self.headers(), "Content-Type": "application/json", **(headers or {})},
        )


def pay(invoice_id: str, amount: str, **extra: Any) -> dict[str, Any]:
    return {
        "Invoice": {"InvoiceID": invoice_id},
        "Account": {"Code": "090"},
        "Date": "2024-05-01",
        "Amount": Decimal(amount),
        **extra,
    }


def drive(s: Session) -> None:
    """A realistic session; every response lands in ``s.recorded``."""
    state = s.server.state
    xero = state.xero
    s.login()
    s.http.post("/xero/connect/token", data={"grant_type": "refresh_token"})  # 400
    s.http.get("/xero/connections", headers={"Authorization": f"Bearer {s.token}"})
    s.http.get("/xero/Connections", headers={"Authorization": f"Bearer {s.token}"})

    # Invoices and bills.
    everything = s.get("/Invoices")["Invoices"]
    for page in (1, 2, 9):
        s.get("/Invoices", page=page, pageSize=4)
    s.get("/Invoices", page=1, pageSize=1000, order="UpdatedDateUTC ASC", where='Type=="ACCREC"')
    s.get("/Invoices", where='Type=="ACCPAY"', page=1)
    s.get("/Invoices", Statuses="AUTHORISED,PAID", IDs=",".join(i["InvoiceID"] for i in everything))
    s.get("/Invoices", InvoiceNumbers="INV-0001,SUP-1002", order="Total DESC")
    invoice = next(i for i in everything if i["Status"] == "AUTHORISED" and i["AmountPaid"] == 0)
    eur_bill = next(i for i in everything if i["Type"] == "ACCPAY" and i["CurrencyCode"] == "EUR")
    paid = next(i for i in everything if i["Status"] == "PAID")
    for key in (invoice["InvoiceID"], eur_bill["InvoiceID"], paid["InvoiceID"], "INV-0003"):
        s.get(f"/Invoices/{key}")
    edited = xero.edit_invoice(s.tenant, "INV-0002", Reference="edited")
    stamp = int(edited["UpdatedDateUTC"][6:19]) / 1000
    since = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    s.get("/Invoices", headers={"If-Modified-Since": since})
    s.get("/Invoices", headers={"If-Modified-Since": "2020-02-06T12:17:43.202-08:00"}, page=1)

    # Contacts and accounts.
    xero.add_contact(s.tenant, "Archived Supplies", is_supplier=True, status="ARCHIVED")
    contacts = s.get("/Contacts")["Contacts"]
    s.get("/Contacts", page=1, pageSize=2)
    s.get("/Contacts", where="IsSupplier==true", includeArchived="true")
    s.get("/Contacts", searchTerm="acme")
    s.get("/Contacts", headers={"If-Modified-Since": since})
    s.get(f"/Contacts/{contacts[0]['ContactID']}")
    accounts = s.get("/Accounts")["Accounts"]
    s.get("/Accounts", where='Type=="BANK"')
    s.get(f"/Accounts/{accounts[0]['AccountID']}")

    # Payments: create (batch, single, bill, foreign), replay, read, delete.
    s.send("PUT", "/Payments", {"Payments": [pay(invoice["InvoiceID"], "10.00", Reference="a")]})
    s.send(
        "PUT",
        "/Payments",
        {
            "Payments": [
                pay(invoice["InvoiceID"], "1.00", Reference="b"),
                pay(paid["InvoiceID"], "1.00"),
                {**pay(invoice["InvoiceID"], "1.00"), "Account": {"Code": "610"}},
            ]
        },
        summarizeErrors="false",
    )
    keyed = pay(eur_bill["InvoiceID"], "5.00", Reference="bill")
    s.send("POST", "/Payments", keyed, headers={"Idempotency-Key": "k-1"})
    s.send("POST", "/Payments", keyed, headers={"Idempotency-Key": "k-1"})  # replay
    reconciled = s.send("POST", "/Payments", pay(invoice["InvoiceID"], "1.00", IsReconciled=True))
    payments = s.get("/Payments")["Payments"]
    s.get("/Payments", page=1, pageSize=2, where='Reference=="a"')
    s.get("/Payments", where=f'Invoice.InvoiceID=guid("{invoice["InvoiceID"]}")')
    s.get("/Payments", headers={"If-Modified-Since": since}, order="Amount DESC")
    s.get(f"/Payments/{payments[0]['PaymentID']}")
    mine = next(p for p in payments if p["Reference"] == "a")
    s.send("POST", f"/Payments/{mine['PaymentID']}", {"Payments": [{"Status": "DELETED"}]})
    s.send("POST", f"/Payments/{mine['PaymentID']}", {"Status": "DELETED"})  # 400: twice
    s.send("POST", f"/Payments/{payments[0]['PaymentID']}", {"Status": "AUTHORISED"})  # 400
    s.send(
        "POST", f"/Payments/{reconciled.json()['Payments'][0]['PaymentID']}", {"Status": "DELETED"}
    )

    # 400s: validation (summarized), unknown invoice, malformed JSON, key misuse, query.
    s.send("PUT", "/Payments", {"Payments": [pay(invoice["InvoiceID"], "999999.00")]})
    s.send("POST", "/Payments", pay("00000000-0000-0000-0000-000000000000", "1.00"))
    s.send("PUT", "/Payments", b'{"Payments": [')
    typed = {**pay(invoice["InvoiceID"], "1.00"), "Amount": "abc", "Invoice": "INV-0001"}
    s.send("PUT", "/Payments", {"Payments": [typed]}, summarizeErrors="false")
    draft = next(i for i in everything if i["Status"] == "DRAFT")
    strings = {**pay(draft["InvoiceID"], "1.00"), "Amount": "1.50", "IsReconciled": "true"}
    s.send("PUT", "/Payments", {"Payments": [strings, "x"]}, summarizeErrors="false")
    s.send("PUT", "/Payments", {"Payments": [strings]}, summarizeErrors="false")
    s.send("POST", "/Payments", pay(invoice["InvoiceID"], "2.00"), {"Idempotency-Key": "k-1"})
    s.send("POST", "/Payments", keyed, {"Idempotency-Key": "k" * 129})
    s.get("/Invoices", where='Colour=="red"')
    s.get("/Payments", order="Sideways ASC")

    # 404, 405, unknown resource.
    s.get("/Invoices/00000000-0000-0000-0000-000000000000")
    s.get("/Payments/00000000-0000-0000-0000-000000000000")
    s.get("/Contacts/00000000-0000-0000-0000-000000000000")
    s.get("/Accounts/00000000-0000-0000-0000-000000000000")
    s.send("DELETE", "/Invoices", {})
    s.get("/Widgets")

    # Faults: 503 before commit, 500 after commit, an injected 429.
    for fault in ("error_before_commit", "error_500_after_commit", "rate_limit"):
        state.faults.update({f"{fault}_next": 1})
        s.send("POST", "/Payments", pay(invoice["InvoiceID"], "1.00"))
    # A real minute-limit 429 (the session runs with a roomy minute limit otherwise).
    state.rate_limiter.config = RateLimitConfig(minute=1)
    s.get("/Accounts")
    state.rate_limiter.config = RATE_LIMITS

    # 401 and 403, then a disconnect (identity spec) and the 403 after it.
    s.get("/Invoices", headers={"Authorization": "Bearer nope"})
    s.get("/Invoices", headers={"xero-tenant-id": "00000000-0000-0000-0000-000000000000"})
    connection = s.http.get("/xero/connections", headers={"Authorization": f"Bearer {s.token}"})
    conn_id = connection.json()[0]["id"]
    s.http.delete(f"/xero/connections/{conn_id}", headers={"Authorization": f"Bearer {s.token}"})
    s.get("/Invoices")
    state.clock.advance(31 * 60)  # the access token expires
    s.get("/Accounts")


@pytest.fixture
def session(make_server: ServerFactory) -> Iterator[Session]:
    s = Session(make_server(seed=1, clock=frozen_clock(), rate_limits=RATE_LIMITS))
    drive(s)
    yield s
    s.http.close()


# ---------------------------------------------------------------- validation


def _template(path: str) -> str:
    parts = path.split("/")  # "/Invoices/{id}" -> ["", "Invoices", id]
    return "/".join(parts[:2]) + ("/{id}" if len(parts) > 2 else "")


def check_undeclared(response: httpx.Response, accounting: OpenAPI) -> str | None:
    """The documented exclusions for responses the spec has no entry for.

    Returns an error message, or None when the response is what Xero sends.
    """
    status = response.status_code
    ctype = response.headers.get("content-type", "")
    if status == 404:
        # Xero answers 404 in plain text, not JSON; the spec declares no 404 for these
        # operations and Xero staff declined to add it (XeroAPI/Xero-OpenAPI#163).
        ok = response.text == NOT_FOUND and ctype.startswith("text/plain")
        return None if ok else f"404 body {response.text!r} ({ctype})"
    if status in {401, 403}:
        # The spec documents OAuth2 security but no 401/403 body; Xero sends a PascalCase
        # problem document (fact sheet §3: pyxero#337, xero-php-oauth2#138, laravel-xero#40).
        body = response.json()
        title = {401: "Unauthorized", 403: "Forbidden"}[status]
        keys = {"Type", "Title", "Status", "Detail", "Instance", "Extensions"}
        ok = set(body) == keys and body["Title"] == title and body["Status"] == status
        return None if ok else f"{status} problem {body}"
    if status == 429:
        # Not in the spec; the limits page documents the headers, the body is empty.
        headers = response.headers
        problem = headers.get("X-Rate-Limit-Problem")
        ok = (
            response.content == b""
            and problem in {"minute", "day", "concurrent", "appminute"}
            and all(
                headers[h].isdigit()
                for h in ("X-DayLimit-Remaining", "X-MinLimit-Remaining", "X-AppMinLimit-Remaining")
            )
            and (problem not in {"minute", "day"} or headers["Retry-After"].isdigit())
        )
        return None if ok else f"429 headers {dict(headers)}"
    if status == 400 and response.request.method == "GET":
        # GET operations declare only 200, but a bad where/order is a 400 of the same
        # Error schema the spec's 400Error response uses: validate against that schema.
        spec = accounting.spec
        validator = oas30_read_schema_validators_factory.create(
            spec, spec / "components" / "schemas" / "Error"
        )
        body = response.json()
        try:
            validator.validate(body)
        except Exception as exc:  # the validator's errors vary by version
            return f"400 not an Error: {exc}"
        return None if body["Type"] == "QueryParseException" else f"400 type {body['Type']}"
    if status in {405, 500, 503}:
        # [DOC-RC] plain-text bodies the spec does not model (405 is ASP.NET's wording).
        texts = {
            405: "The requested resource does not support http method 'DELETE'.",
            500: "An unhandled error with the Xero API",
            503: "The Xero API is temporarily unavailable",
        }
        ok = response.text == texts[status] and ctype.startswith("text/plain")
        return None if ok else f"{status} body {response.text!r}"
    return f"undeclared status {status} without a documented exclusion"


def check_token(response: httpx.Response) -> str | None:
    # identity.xero.com/connect/token is in neither spec (xero-identity.yaml has only
    # /Connections): check RFC 6749 §5.1 / §5.2 by hand.
    body = response.json()
    if response.status_code == 200:
        types = {
            "access_token": str,
            "expires_in": int,
            "token_type": str,
            "refresh_token": str,
            "scope": str,
        }
        ok = set(body) == set(types) and all(isinstance(body[k], t) for k, t in types.items())
        return None if ok and body["token_type"] == "Bearer" else f"token body {body}"
    return None if set(body) == {"error"} else f"token error {body}"


def check_connections(
    response: httpx.Response, identity: OpenAPI, request: SpecRequest
) -> str | None:
    try:
        identity.validate_response(request, SpecResponse.of(response))
    except InvalidData as exc:
        errors = getattr(exc.__cause__, "schema_errors", ()) or ()
        # The identity spec declares createdDateUtc/updatedDateUtc `format: date-time`
        # (RFC 3339, offset required), but its own example and Xero's real answers are
        # "2019-12-07T18:46:19.5165400": .NET's 7-digit, offset-less form. Exactly those
        # errors are excluded, and the values must then have that real form.
        unexpected = [
            e
            for e in errors
            if not (
                e.validator == "format"
                and list(e.path)[-1] in {"createdDateUtc", "updatedDateUtc"}
                and NET_DATETIME.match(e.instance)
            )
        ]
        if unexpected or not errors:
            return f"connections: {exc.__cause__ or exc}"
    return None


def validate_all(
    recorded: list[httpx.Response], accounting: OpenAPI, identity: OpenAPI
) -> tuple[list[str], set[tuple[str, str, int]]]:
    failures: list[str] = []
    validated: set[tuple[str, str, int]] = set()
    for response in recorded:
        request = response.request
        path = request.url.path
        label = f"{request.method} {request.url.path}?{request.url.query.decode()} -> {response.status_code}"
        if path == "/xero/connect/token":
            problem = check_token(response)
        elif path.lower().startswith("/xero/connections"):
            problem = check_connections(response, identity, SpecRequest.of(request))
            validated.add(
                (request.method, "identity" + _template(path[5:].lower()), response.status_code)
            )
        elif response.status_code in {401, 403}:
            # Authentication fails before routing; checked whatever the path.
            problem = check_undeclared(response, accounting)
        else:
            try:
                accounting.validate_response(SpecRequest.of(request), SpecResponse.of(response))
            except (ResponseNotFound, PathNotFound, OperationNotFound):
                problem = check_undeclared(response, accounting)
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc.__cause__ or exc}"[:2000]
            else:
                problem = None
                template = _template(path[len(SANDBOX_API) :])
                validated.add((request.method, template, response.status_code))
        if problem is not None:
            failures.append(f"{label}: {problem}")
    return failures, validated


def test_every_xero_response_matches_the_official_spec(
    session: Session, accounting: OpenAPI, identity: OpenAPI
) -> None:
    assert len(session.recorded) > 60
    failures, validated = validate_all(session.recorded, accounting, identity)
    assert failures == []
    # The session really exercised the operations (so a broken drive cannot pass).
    expected = {
        ("GET", "/Invoices", 200),
        ("GET", "/Invoices/{id}", 200),
        ("GET", "/Contacts", 200),
        ("GET", "/Contacts/{id}", 200),
        ("GET", "/Accounts", 200),
        ("GET", "/Accounts/{id}", 200),
        ("GET", "/Payments", 200),
        ("GET", "/Payments/{id}", 200),
        ("PUT", "/Payments", 200),
        ("PUT", "/Payments", 400),
        ("POST", "/Payments", 200),
        ("POST", "/Payments", 400),
        ("POST", "/Payments/{id}", 200),
        ("POST", "/Payments/{id}", 400),
        ("GET", "identity/connections", 200),
        ("DELETE", "identity/connections/{id}", 204),
    }
    assert expected <= validated, expected - validated
    statuses = {r.status_code for r in session.recorded}
    assert {200, 204, 400, 401, 403, 404, 405, 429, 500, 503} <= statuses


def test_the_validation_really_catches_mistakes(session: Session, accounting: OpenAPI) -> None:
    by_id = next(
        r
        for r in session.recorded
        if r.request.method == "GET"
        and r.request.url.path.startswith(SANDBOX_API + "/Invoices/")
        and r.status_code == 200
    )
    accounting.validate_response(SpecRequest.of(by_id.request), SpecResponse.of(by_id))
    for field_name, bad in (
        ("Type", "SALE"),
        ("AmountDue", "229.00"),
        ("InvoiceID", "not-a-guid"),
        ("Status", "OPEN"),
        ("Payments", {}),
    ):
        body = json.loads(by_id.content)
        body["Invoices"][0][field_name] = bad
        corrupt = SpecResponse.of(by_id, json.dumps(body).encode())
        with pytest.raises(InvalidData):
            accounting.validate_response(SpecRequest.of(by_id.request), corrupt)
