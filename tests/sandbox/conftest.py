"""Fixtures: a real sandbox server per test, and a small Xero client around httpx."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connector.sandbox import Clock, SandboxServer, SandboxState
from connector.sandbox.wire import loads

API = "/xero/api.xro/2.0"


class XeroClient:
    """Talks to the sandbox's Xero like the connector would, over real HTTP."""

    def __init__(self, server: SandboxServer, tenant_index: int = 0) -> None:
        self.server = server
        self.state = server.state
        self.tenant_id = self.state.xero.tenant_ids[tenant_index]
        self.http = httpx.Client(base_url=server.url, timeout=10)
        self.access_token = self.refresh()["access_token"]

    def close(self) -> None:
        self.http.close()

    def refresh(self, refresh_token: str | None = None) -> dict[str, Any]:
        token = refresh_token or self.state.xero.refresh_token_for(self.tenant_id)
        response = self.token_request(token)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def token_request(self, refresh_token: str, **overrides: str) -> httpx.Response:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.state.xero.client_id,
            "client_secret": self.state.xero.client_secret,
        }
        form.update(overrides)
        return self.http.post("/xero/connect/token", data=form)

    def headers(self, **extra: str) -> dict[str, str]:
        out = {"Authorization": f"Bearer {self.access_token}", "xero-tenant-id": self.tenant_id}
        out.update(extra)
        return out

    def get(
        self, path: str, *, headers: dict[str, str] | None = None, **params: Any
    ) -> httpx.Response:
        return self.http.get(
            API + path, params=params, headers={**self.headers(), **(headers or {})}
        )

    def send(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else _dumps(body)
        return self.http.request(
            method,
            API + path,
            content=content,
            params=params,
            headers={**self.headers(), "Content-Type": "application/json", **(headers or {})},
        )

    def payable_invoice(self, currency: str = "USD", type: str = "ACCREC") -> dict[str, Any]:
        """A seeded AUTHORISED, unpaid sales invoice (or bill, with ``type="ACCPAY"``)."""
        return next(
            inv
            for inv in self.state.xero.invoices(self.tenant_id)
            if inv["Type"] == type
            and inv["Status"] == "AUTHORISED"
            and inv["AmountPaid"] == 0
            and inv["CurrencyCode"] == currency
        )

    def payment_body(self, invoice_id: str, amount: str = "10.00", **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Invoice": {"InvoiceID": invoice_id},
            "Account": {"Code": "090"},
            "Date": "2024-05-01",
            "Amount": Decimal(amount),
        }
        body.update(extra)
        return body


def _dumps(body: Any) -> bytes:
    from connector.sandbox.wire import dumps

    return dumps(body).encode()


def parse(response: httpx.Response) -> Any:
    """Response JSON with Decimals, as a careful client would read it."""
    return loads(response.content)


ServerFactory = Callable[..., SandboxServer]


def frozen_clock() -> Clock:
    """A clock that only moves when advanced, so a test cannot straddle a rate-limit window."""
    return Clock(frozen_at=datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC))


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """Start a server on a fresh state built from keyword arguments; stopped at teardown."""
    servers: list[SandboxServer] = []

    def factory(**state_kwargs: Any) -> SandboxServer:
        server = SandboxServer(SandboxState(**state_kwargs)).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()
        server.state.close()  # stops webhook deliveries a test left registered


@pytest.fixture
def server(make_server: ServerFactory) -> SandboxServer:
    """A default sandbox (seed 1, one tenant, twelve invoices, Xero's rate limits)."""
    return make_server(seed=1)


@pytest.fixture
def state(server: SandboxServer) -> SandboxState:
    return server.state


@pytest.fixture
def xero(server: SandboxServer) -> Iterator[XeroClient]:
    client = XeroClient(server)
    yield client
    client.close()
