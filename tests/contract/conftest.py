"""Fixtures for the Xero contract tests: vcrpy config, scrubbers, a fresh adapter.

vcrpy runs with ``record_mode="none"`` (cassettes are replayed, never written),
matches on everything that makes a request what it is (method, URL parts, the
body parsed *and* byte for byte, and the contract headers), and never plays an
interaction twice, so a duplicate send fails the test.

Secrets are scrubbed by ``filter_headers=["authorization"]`` plus our own
``before_record_request`` for form bodies. vcrpy's ``filter_post_data_parameters``
is deliberately not used: for a JSON request it re-serializes the body through
``json.loads``/``json.dumps`` (floats), which would hide exactly the byte-level
differences (``1.00`` vs ``1.0``) the write tests exist to catch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.adapters.xero import XeroAdapter
from connector.config import ConnectionSettings
from connector.store import Store
from tests.contract.vcrkit import (
    ContractVCR,
    header_matcher,
    make_contract_vcr,
    request_scrubber,
)
from tests.contract.xero_cassettes import BASE_URL, CASSETTE_DIR, TENANT_ID, TOKEN_URL

CLIENT_ID = "cid-test"
CLIENT_SECRET = "csecret-test"
REFRESH_TOKEN = "rt-test-3f9d1c7a5e2b"
SECRET_STRINGS = (CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN)

# Form fields of an OAuth token request that must never reach a cassette.
SECRET_FORM_FIELDS = frozenset({"refresh_token", "client_secret", "client_id", "code"})
# Request headers that are part of the contract: the live request must carry
# exactly what the cassette recorded for them, including their absence.
CONTRACT_HEADERS = (
    "Accept",
    "Content-Type",
    "Idempotency-Key",
    "If-Modified-Since",
    "xero-tenant-id",
)
scrub_request = request_scrubber(SECRET_FORM_FIELDS)
contract_headers = header_matcher(CONTRACT_HEADERS)


def make_vcr(cassette_dir: Path = CASSETTE_DIR, record_mode: str = "none") -> ContractVCR:
    """The vcrpy configuration every Xero contract test uses."""
    return make_contract_vcr(
        cassette_dir,
        contract_headers=CONTRACT_HEADERS,
        secret_form_fields=SECRET_FORM_FIELDS,
        record_mode=record_mode,
    )


def make_settings(
    base_url: str = BASE_URL, token_url: str = TOKEN_URL, **overrides: Any
) -> ConnectionSettings:
    """The connection every contract test talks through."""
    values: dict[str, Any] = {
        "id": "xero-test",
        "provider": "xero",
        "base_url": base_url,
        "token_url": token_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
        "tenant_id": TENANT_ID,
        "payment_account_code": "090",
        "max_inline_wait_seconds": 0,
        **overrides,
    }
    return ConnectionSettings(**values)


@pytest.fixture
def xero_vcr() -> ContractVCR:
    """Replay-only vcrpy, matching on method, URL, body (parsed and raw) and contract headers."""
    return make_vcr()


@pytest.fixture
def xero_settings() -> ConnectionSettings:
    return make_settings()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A fresh, migrated SQLite store for one test."""
    store = Store(f"sqlite:///{tmp_path}/t.db")
    store.upgrade()
    yield store
    store.dispose()


@pytest.fixture
def adapter(xero_settings: ConnectionSettings, sqlite_store: Store) -> Iterator[XeroAdapter]:
    a = XeroAdapter(xero_settings, sqlite_store)
    yield a
    a.close()


@pytest.fixture
def wire(adapter: XeroAdapter) -> list[httpx.Request]:
    """A copy of every request the adapter's client sends (after auth), as httpx saw it.

    Copies, because the auth flow resends the same request object after a 401
    with a new ``Authorization`` header.
    """
    sent: list[httpx.Request] = []

    def hook(request: httpx.Request) -> None:
        sent.append(
            httpx.Request(
                request.method, request.url, headers=request.headers.copy(), content=request.read()
            )
        )

    adapter.http.client.event_hooks["request"].append(hook)
    return sent
