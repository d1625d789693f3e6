"""Fixtures for the QuickBooks contract tests: the strict vcrpy setup of
``tests/contract/conftest.py`` (replay only, bodies byte for byte, no repeats, secrets
scrubbed) with QuickBooks' contract headers and cassette directory, and an adapter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.adapters.quickbooks import QuickBooksAdapter
from connector.config import ConnectionSettings
from connector.store import Store
from tests.contract.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    SECRET_FORM_FIELDS,
)
from tests.contract.quickbooks.qbo_cassettes import BASE_URL, CASSETTE_DIR, REALM_ID, TOKEN_URL
from tests.contract.vcrkit import ContractVCR, make_contract_vcr

# The request headers that are part of QuickBooks' contract: the live request must
# carry exactly what the cassette recorded (including their absence). The requestid
# travels in the query string, which MATCH_ON compares.
CONTRACT_HEADERS = ("Accept", "Content-Type")


def make_vcr(cassette_dir: Path = CASSETTE_DIR, record_mode: str = "none") -> ContractVCR:
    """The vcrpy configuration of every QuickBooks contract test."""
    return make_contract_vcr(
        cassette_dir,
        contract_headers=CONTRACT_HEADERS,
        secret_form_fields=SECRET_FORM_FIELDS,
        record_mode=record_mode,
    )


def make_settings(**overrides: Any) -> ConnectionSettings:
    values: dict[str, Any] = {
        "id": "qbo-test",
        "provider": "quickbooks",
        "base_url": BASE_URL,
        "token_url": TOKEN_URL,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
        "realm_id": REALM_ID,
        "payment_account_code": "4",
        "bill_payment_account_code": "35",
        "bill_payment_type": "Check",
        "max_inline_wait_seconds": 0,
        **overrides,
    }
    return ConnectionSettings(**values)


@pytest.fixture
def qbo_vcr() -> ContractVCR:
    return make_vcr()


@pytest.fixture
def qbo_adapter(sqlite_store: Store) -> Iterator[QuickBooksAdapter]:
    adapter = QuickBooksAdapter(make_settings(), sqlite_store)
    yield adapter
    adapter.close()


@pytest.fixture
def qbo_wire(qbo_adapter: QuickBooksAdapter) -> list[httpx.Request]:
    """A copy of every request the adapter's API client sends (after auth)."""
    sent: list[httpx.Request] = []

    def hook(request: httpx.Request) -> None:
        sent.append(
            httpx.Request(
                request.method, request.url, headers=request.headers.copy(), content=request.read()
            )
        )

    qbo_adapter.http.client.event_hooks["request"].append(hook)
    return sent
