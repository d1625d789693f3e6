"""Fixtures for the QuickBooks contract tests: the strict vcrpy setup of
``tests/contract/conftest.py`` (replay only, bodies byte for byte, no repeats, secrets
scrubbed) with QuickBooks' contract headers and cassette directory, and an adapter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import vcr
from vcr.request import Request as VcrRequest

from connector.adapters.quickbooks import QuickBooksAdapter
from connector.config import ConnectionSettings
from connector.store import Store
from tests.contract.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    MATCH_ON,
    REFRESH_TOKEN,
    ContractVCR,
    scrub_request,
    scrub_response,
)
from tests.contract.quickbooks.qbo_cassettes import BASE_URL, CASSETTE_DIR, REALM_ID, TOKEN_URL

# The request headers that are part of QuickBooks' contract: the live request must
# carry exactly what the cassette recorded (including their absence). The requestid
# travels in the query string, which MATCH_ON compares.
CONTRACT_HEADERS = ("Accept", "Content-Type")


def contract_headers(live: VcrRequest, recorded: VcrRequest) -> None:
    """The contract headers of the live request equal the recorded ones (or are absent)."""
    problems = []
    for name in CONTRACT_HEADERS:
        got, want = live.headers.get(name), recorded.headers.get(name)
        if got != want:
            problems.append(f"{name}: sent {got!r}, cassette has {want!r}")
    if problems:
        raise AssertionError("; ".join(problems))


def make_vcr(cassette_dir: Path = CASSETTE_DIR, record_mode: str = "none") -> ContractVCR:
    """The vcrpy configuration of every QuickBooks contract test."""
    config = vcr.VCR(
        cassette_library_dir=str(cassette_dir),
        serializer="yaml",
        record_mode=record_mode,
        match_on=MATCH_ON,
        filter_headers=["authorization"],
        before_record_request=scrub_request,
        before_record_response=scrub_response,
        decode_compressed_response=True,
    )
    config.register_matcher("contract_headers", contract_headers)
    return ContractVCR(config)


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
