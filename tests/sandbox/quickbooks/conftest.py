"""Fixtures: the QuickBooks ledger served over real HTTP, a small client, a webhook receiver.

Until the shared app mounts the QuickBooks ledger, these tests serve their own harness:
``SandboxApp`` with the API at ``/quickbooks`` and the admin routes at
``/_sandbox/quickbooks``, in uvicorn on a free loopback port.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Mount

from connector.sandbox.app import SandboxApp
from connector.sandbox.clock import Clock
from connector.sandbox.faults import Faults
from connector.sandbox.quickbooks import (
    QuickBooksLedger,
    create_quickbooks_admin_routes,
    create_quickbooks_app,
)
from connector.sandbox.wire import dumps, loads
from connector.serving import ThreadedServer

#: Vendored copies of ``/work/shared/samples/quickbooks`` (test_samples checks they match).
SAMPLES = Path(__file__).parent / "samples"
SHARED_SAMPLES = Path("/work/shared/samples/quickbooks")


class Server:
    """uvicorn serving a ``SandboxApp`` from a background thread, on a free loopback port."""

    def __init__(self) -> None:
        self.app = SandboxApp(routes=[])
        self._runner = ThreadedServer(self.app, name="harness").start()
        self.port = self._runner.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mount(self, ledger: QuickBooksLedger) -> None:
        """Serve ``ledger`` (replacing whatever was mounted)."""
        self.app.router.routes[:] = [
            Mount("/quickbooks", app=create_quickbooks_app(ledger)),
            Mount("/_sandbox/quickbooks", routes=create_quickbooks_admin_routes(ledger)),
        ]

    def stop(self) -> None:
        self._runner.stop()


@dataclass
class Harness:
    """One ledger served by a :class:`Server`."""

    ledger: QuickBooksLedger
    server: Server

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def shared_server() -> Iterator[Server]:
    """One uvicorn for the session (a start/stop per test would cost ~0.2 s each)."""
    server = Server()
    yield server
    server.stop()


def frozen_clock() -> Clock:
    """Only moves when advanced; starts at the real current second (id_tokens stay valid)."""
    return Clock(frozen_at=datetime.now(UTC).replace(microsecond=0))


def make_ledger(**kwargs: Any) -> QuickBooksLedger:
    clock = kwargs.pop("clock", None) or frozen_clock()
    faults = kwargs.pop("faults", None) or Faults(seed=kwargs.get("seed", 1))
    kwargs.setdefault("seed", 1)
    kwargs.setdefault("rate_limits", False)
    return QuickBooksLedger(clock=clock, lock=threading.RLock(), faults=faults, **kwargs)


HarnessFactory = Callable[..., Harness]


@pytest.fixture
def make_harness(shared_server: Server) -> Iterator[HarnessFactory]:
    """Serve a ledger built from keyword arguments (the first on the shared server)."""
    started: list[Harness] = []
    own: list[Server] = []

    def factory(**kwargs: Any) -> Harness:
        server = shared_server
        if started:
            server = Server()
            own.append(server)
        harness = Harness(make_ledger(**kwargs), server)
        server.mount(harness.ledger)
        started.append(harness)
        return harness

    yield factory
    shared_server.app.router.routes[:] = []
    for harness in started:
        harness.ledger.close()
    for server in own:
        server.stop()


@pytest.fixture
def harness(make_harness: HarnessFactory) -> Harness:
    return make_harness()


@pytest.fixture
def ledger(harness: Harness) -> QuickBooksLedger:
    return harness.ledger


def parse(response: httpx.Response) -> Any:
    """Response JSON with Decimals."""
    return loads(response.content)


class QboClient:
    """Talks to the sandbox's QuickBooks like a connector would, over real HTTP."""

    def __init__(self, harness: Harness, realm_index: int = 0) -> None:
        self.harness = harness
        self.ledger = harness.ledger
        self.realm = self.ledger.realm_ids[realm_index]
        self.http = httpx.Client(base_url=harness.url, timeout=10)
        self.access_token = self.refresh()["access_token"]

    def close(self) -> None:
        self.http.close()

    def token_request(
        self, refresh_token: str, *, secret: str | None = None, basic: bool = True
    ) -> httpx.Response:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        client_secret = secret if secret is not None else self.ledger.client_secret
        url = "/quickbooks/oauth2/v1/tokens/bearer"
        if basic:
            auth = httpx.BasicAuth(self.ledger.client_id, client_secret)
            return self.http.post(url, data=form, auth=auth)
        form.update(client_id=self.ledger.client_id, client_secret=client_secret)
        return self.http.post(url, data=form)

    def refresh(self, refresh_token: str | None = None) -> dict[str, Any]:
        response = self.token_request(refresh_token or self.ledger.refresh_token_for(self.realm))
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}", "Accept": "application/json"}

    def path(self, tail: str) -> str:
        return f"/quickbooks/v3/company/{self.realm}/{tail.lstrip('/')}"

    def get(self, tail: str, **params: Any) -> httpx.Response:
        return self.http.get(self.path(tail), params=params, headers=self.headers())

    def post(self, tail: str, body: Any, **params: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else dumps(body).encode()
        return self.http.post(
            self.path(tail),
            content=content,
            params=params,
            headers={**self.headers(), "Content-Type": "application/json"},
        )

    def query(self, statement: str, *, post: bool = False) -> httpx.Response:
        if post:
            return self.http.post(
                self.path("query"),
                content=statement.encode(),
                headers={**self.headers(), "Content-Type": "application/text"},
            )
        return self.get("query", query=statement)

    def query_items(self, statement: str, entity: str) -> list[dict[str, Any]]:
        response = self.query(statement)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = parse(response)["QueryResponse"].get(entity, [])
        return items

    # ---------------------------------------------------------------- seeded data

    def open_invoice(self, currency: str = "USD") -> dict[str, Any]:
        """A seeded invoice with Balance == TotalAmt > 0."""
        return next(
            inv
            for inv in self.ledger.invoices(self.realm)
            if inv["Balance"] == inv["TotalAmt"] > 0 and inv["CurrencyRef"]["value"] == currency
        )

    def open_bill(self, currency: str = "USD") -> dict[str, Any]:
        return next(
            bill
            for bill in self.ledger.bills(self.realm)
            if bill["Balance"] == bill["TotalAmt"] > 0 and bill["CurrencyRef"]["value"] == currency
        )

    def account(self, role: str) -> str:
        return self.ledger.realm(self.realm).accounts[role]

    def payment_body(self, invoice: dict[str, Any], amount: str, total: str | None = None) -> Any:
        return {
            "CustomerRef": {"value": invoice["CustomerRef"]["value"]},
            "TotalAmt": Decimal(total or amount),
            "Line": [
                {
                    "Amount": Decimal(amount),
                    "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
                }
            ],
        }

    def bill_payment_body(
        self, bill: dict[str, Any], amount: str, pay_type: str = "Check"
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "VendorRef": {"value": bill["VendorRef"]["value"]},
            "TotalAmt": Decimal(amount),
            "PayType": pay_type,
            "Line": [
                {"Amount": Decimal(amount), "LinkedTxn": [{"TxnId": bill["Id"], "TxnType": "Bill"}]}
            ],
        }
        if pay_type == "Check":
            body["CheckPayment"] = {"BankAccountRef": {"value": self.account("checking")}}
        else:
            body["CreditCardPayment"] = {"CCAccountRef": {"value": self.account("credit_card")}}
        return body


@pytest.fixture
def qbo(harness: Harness) -> Iterator[QboClient]:
    client = QboClient(harness)
    yield client
    client.close()


def fault_of(response: httpx.Response) -> dict[str, Any]:
    """The single error of a ``Fault`` body."""
    body = parse(response)
    errors = body["Fault"]["Error"]
    assert len(errors) == 1
    error: dict[str, Any] = errors[0]
    return error


# ---------------------------------------------------------------- webhook receiver


class Receiver:
    """A tiny HTTP server recording every POST (body bytes and headers)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self._event = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._event:
                    receiver.received.append(
                        (body, {k.lower(): v for k, v in self.headers.items()})
                    )
                    receiver._event.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[bytes, dict[str, str]]]:
        deadline = time.monotonic() + timeout
        with self._event:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._event.wait(remaining)
            return list(self.received)

    def events(self) -> list[Any]:
        return [json.loads(body) for body, _ in self.received]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


# ---------------------------------------------------------------- shapes


def json_type(value: Any) -> str:
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


def _merge(values: list[Any]) -> Any:
    """One shape for the elements of an array (object keys united)."""
    objects = [v for v in values if isinstance(v, dict)]
    if objects and len(objects) == len(values):
        keys: dict[str, list[Any]] = {}
        for obj in objects:
            for key, item in obj.items():
                keys.setdefault(key, []).append(item)
        return {key: _merge(items) for key, items in keys.items()}
    if values and all(isinstance(v, list) for v in values):
        return [x for v in values for x in v]
    types = {json_type(v) for v in values}
    if len(types) > 1:
        return "|".join(sorted(types))
    return values[0] if values else None


def shape_problems(
    sample: Any,
    ours: Any,
    path: str = "",
    *,
    extra_ok: set[str] | frozenset[str] = frozenset(),
    absent_ok: set[str] | frozenset[str] = frozenset(),
    any_extra: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """Differences in keys and JSON types between a sample and our answer (not values).

    Arrays are compared by the united shape of their elements; an empty array on either
    side is only compared by type. ``extra_ok``/``absent_ok`` list dotted paths (``[]``
    for array elements) that may exist only in ours / only in the sample; under a path
    in ``any_extra`` ours may carry any additional keys.
    """
    problems: list[str] = []
    st, ot = json_type(sample), json_type(ours)
    if st != ot:
        return [f"{path or '<root>'}: sample {st}, ours {ot}"]
    if isinstance(sample, dict):
        for key in sample:
            sub = f"{path}.{key}" if path else key
            if key not in ours:
                if sub not in absent_ok:
                    problems.append(f"{sub}: missing in ours")
                continue
            problems += shape_problems(
                sample[key],
                ours[key],
                sub,
                extra_ok=extra_ok,
                absent_ok=absent_ok,
                any_extra=any_extra,
            )
        for key in ours:
            sub = f"{path}.{key}" if path else key
            if key not in sample and sub not in extra_ok and path not in any_extra:
                problems.append(f"{sub}: only in ours")
    elif isinstance(sample, list) and sample and ours:
        problems += shape_problems(
            _merge(sample),
            _merge(ours),
            f"{path}[]",
            extra_ok=extra_ok,
            absent_ok=absent_ok,
            any_extra=any_extra,
        )
    return problems


def sample(name: str) -> Any:
    """A sample file by the start of its name."""
    matches = sorted(SAMPLES.glob(f"{name}*.json"))
    assert len(matches) == 1, (name, matches)
    return loads(matches[0].read_bytes())
