"""Fixtures: the NetSuite ledger served over real HTTP, and small clients for it.

Until the shared sandbox app mounts NetSuite, the harness here serves
``SandboxApp(routes=[Mount("/netsuite", ...), Mount("/_sandbox/netsuite", ...)])`` with
uvicorn on a free loopback port, in a thread (one server per session; each test's
ledger is swapped in behind the mounts).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from authlib.oauth1 import ClientAuth
from authlib.oauth1.rfc5849.signature import generate_signature_base_string
from authlib.oauth1.rfc5849.util import escape
from starlette.routing import Mount, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from connector.sandbox.app import SandboxApp
from connector.sandbox.clock import Clock
from connector.sandbox.faults import Faults
from connector.sandbox.netsuite import (
    NetSuiteLedger,
    create_netsuite_admin_routes,
    create_netsuite_app,
)
from connector.sandbox.netsuite._jose import JsonWebToken
from connector.sandbox.wire import dumps, loads
from connector.serving import ThreadedServer

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The sandbox clock of most tests: frozen, so a test never straddles a second by accident.
FROZEN_AT = datetime(2025, 5, 27, 12, 0, 0, tzinfo=UTC)


class _Switch:
    """An ASGI app that forwards to whichever app the current test installed."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            raise RuntimeError("no NetSuite ledger is being served")
        await self.app(scope, receive, send)


class Harness:
    """uvicorn serving the NetSuite routes inside a :class:`SandboxApp`.

    The server lives for the whole session (starting one per test costs ~0.25 s); each
    test installs its own ledger's apps behind the two mounts with :meth:`serve`.
    """

    def __init__(self) -> None:
        self._netsuite = _Switch()
        self._admin = _Switch()
        app = SandboxApp(
            routes=[
                Mount("/netsuite", app=self._netsuite),
                Mount("/_sandbox/netsuite", app=self._admin),
            ]
        )
        self._runner = ThreadedServer(app, name="harness").start()
        self.port = self._runner.port

    def serve(self, ledger: NetSuiteLedger) -> None:
        """Serve ``ledger`` from now on (the previous one stops being reachable)."""
        self._netsuite.app = create_netsuite_app(ledger)
        self._admin.app = Router(routes=create_netsuite_admin_routes(ledger))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._runner.stop()


def sign_hmac_sha256(client: Any, request: Any) -> str:
    """authlib signer for NetSuite's HMAC-SHA256 (authlib ships HMAC-SHA1 only)."""
    base = generate_signature_base_string(request)
    key = f"{escape(client.client_secret or '')}&{escape(client.token_secret or '')}"
    digest = hmac.new(key.encode(), base.encode(), hashlib.sha256).digest()
    return binascii.b2a_base64(digest)[:-1].decode()


class _NetSuiteClientAuth(ClientAuth):
    SIGNATURE_METHODS = {**ClientAuth.SIGNATURE_METHODS, "HMAC-SHA256": sign_hmac_sha256}


class TBAAuth(httpx.Auth):
    """Token-Based Authentication (OAuth 1.0a, HMAC-SHA256) signed by authlib.oauth1."""

    requires_request_body = True

    def __init__(self, creds: dict[str, str], realm: str, *, secret: str | None = None) -> None:
        self.client = _NetSuiteClientAuth(
            creds["consumer_key"],
            client_secret=creds["consumer_secret"],
            token=creds["token_id"],
            token_secret=secret or creds["token_secret"],
            signature_method="HMAC-SHA256",
            realm=realm,
            force_include_body=True,
        )
        self.last_authorization = ""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        _, headers, _ = self.client.prepare(
            request.method, str(request.url), dict(request.headers), request.content
        )
        self.last_authorization = headers["Authorization"]
        request.headers["Authorization"] = headers["Authorization"]
        yield request


def make_assertion(
    ledger: NetSuiteLedger,
    account: str,
    token_url: str,
    *,
    alg: str = "ES256",
    key_pem: str | None = None,
    kid: str | None = None,
    iat: int | None = None,
    lifetime: int = 300,
    scope: Any = "rest_webservices",
    **claims: Any,
) -> str:
    """A client assertion as Oracle specifies it, signed with authlib.jose."""
    creds = ledger.credentials(account)
    now = int(time.time()) if iat is None else iat
    payload: dict[str, Any] = {
        "iss": creds["client_id"],
        "scope": scope,
        "aud": token_url,
        "iat": now,
        "exp": now + lifetime,
    }
    payload.update(claims)
    header = {"typ": "JWT", "alg": alg, "kid": kid or creds["certificate_id"]}
    token = JsonWebToken([alg]).encode(header, payload, key_pem or creds["private_key_pem"])
    return token.decode() if isinstance(token, bytes) else str(token)


@dataclass
class NetSuite:
    """A served ledger."""

    ledger: NetSuiteLedger
    harness: Harness
    faults: Faults
    clock: Clock

    @property
    def url(self) -> str:
        return self.harness.url

    @property
    def account(self) -> str:
        return self.ledger.account_ids[0]

    def base(self, account: str | None = None) -> str:
        return f"{self.url}/netsuite/{account or self.account}"

    def token_url(self, account: str | None = None) -> str:
        return f"{self.base(account)}/services/rest/auth/oauth2/v1/token"


class Client:
    """Talks to the sandbox's NetSuite over real HTTP with an OAuth 2.0 (M2M) token."""

    def __init__(self, env: NetSuite, account: str | None = None) -> None:
        self.env = env
        self.ledger = env.ledger
        self.account = account or env.account
        self.http = httpx.Client(base_url=env.base(self.account), timeout=10)
        self.access_token = self.fetch_token()

    def close(self) -> None:
        self.http.close()

    def token_request(self, **form: str) -> httpx.Response:
        body = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": make_assertion(
                self.ledger, self.account, self.env.token_url(self.account)
            ),
        }
        body.update(form)
        return self.http.post("/services/rest/auth/oauth2/v1/token", data=body)

    def fetch_token(self) -> str:
        response = self.token_request()
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}", **extra}

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(
            "/services/rest/record/v1" + path, params=params or None, headers=self.headers()
        )

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        content = b"" if body is None else dumps(body).encode()
        return self.http.request(
            method,
            "/services/rest/record/v1" + path,
            content=content,
            params=params,
            headers=self.headers(**{"Content-Type": "application/json", **(headers or {})}),
        )

    def suiteql(
        self,
        q: str,
        *,
        prefer: str | None = "transient",
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        headers = self.headers(**{"Content-Type": "application/json"})
        if prefer is not None:
            headers["Prefer"] = prefer
        return self.http.post(
            "/services/rest/query/v1/suiteql",
            content=dumps({"q": q}).encode(),
            params=params,
            headers=headers,
        )

    def rows(self, q: str) -> list[dict[str, Any]]:
        response = self.suiteql(q)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    # ------------------------------------------------------------ test data

    def open_invoice(self, currency: str = "USD") -> dict[str, Any]:
        """A seeded open, unpaid invoice."""
        return next(
            inv
            for inv in self.ledger.invoices(self.account)
            if inv["status"]["id"] == "A"
            and inv["amountPaid"] == 0
            and inv["currency"]["refName"] == {"USD": "US Dollar", "EUR": "Euro"}[currency]
        )

    def open_bill(self) -> dict[str, Any]:
        """A seeded open, unpaid USD bill."""
        return next(
            bill
            for bill in self.ledger.bills(self.account)
            if bill["status"]["id"] == "A"
            and self.ledger.open_amount(self.account, bill["id"]) == bill["total"]
            and bill["currency"]["id"] == "1"
        )

    def payment_body(
        self, invoice: dict[str, Any], amount: str = "10.00", **extra: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "customer": {"id": invoice["entity"]["id"]},
            "account": {"id": "1"},
            "tranDate": "2025-05-26",
            "apply": {
                "items": [{"doc": {"id": invoice["id"]}, "apply": True, "amount": Decimal(amount)}]
            },
        }
        body.update(extra)
        return body


def parse(response: httpx.Response) -> Any:
    """Response JSON with Decimals."""
    return loads(response.content)


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["o:errorDetails"][0]["o:errorCode"]
    return code


Factory = Callable[..., NetSuite]


@pytest.fixture(scope="session")
def harness() -> Iterator[Harness]:
    """The session's server (see :class:`Harness`)."""
    server = Harness()
    yield server
    server.stop()


@pytest.fixture
def make_netsuite(harness: Harness) -> Factory:
    """Build a ledger from keyword arguments and serve it (the latest one built is served)."""

    def factory(
        *,
        seed: int = 11,
        clock: Clock | None = None,
        faults: Faults | None = None,
        **kwargs: Any,
    ) -> NetSuite:
        clock = clock or Clock(frozen_at=FROZEN_AT)
        faults = faults or Faults(seed=seed)
        ledger = NetSuiteLedger(
            seed=seed, clock=clock, lock=threading.RLock(), faults=faults, **kwargs
        )
        harness.serve(ledger)
        return NetSuite(ledger, harness, faults, clock)

    return factory


@pytest.fixture
def ns(make_netsuite: Factory) -> NetSuite:
    """Seed 11, one account, 12 invoices, 4 bills, a frozen clock."""
    return make_netsuite()


@pytest.fixture
def client(ns: NetSuite) -> Iterator[Client]:
    c = Client(ns)
    yield c
    c.close()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
