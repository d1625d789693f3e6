"""Fixtures for the NetSuite contract tests: strict vcrpy, scrubbers, a fresh adapter.

The same strictness as the Xero contract tests (``tests/contract/conftest.py``):
``record_mode="none"``, request bodies matched parsed *and* byte for byte, the contract
headers matched (including their absence), no interaction played twice. Secrets never
reach a cassette: the ``Authorization`` header (bearer token or TBA signature) is
filtered, the token request's form loses ``client_assertion`` (the signed JWT) and any
client secret, and token values in responses become ``scrubbed-…`` placeholders.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connector.adapters.netsuite import NetSuiteAdapter
from connector.config import ConnectionSettings
from connector.store import Store
from tests.contract.netsuite.netsuite_cassettes import (
    ACCOUNT_ID,
    BASE_URL,
    CASSETTE_DIR,
    TOKEN_URL,
)
from tests.contract.vcrkit import (
    ContractVCR,
    make_contract_vcr,
    request_scrubber,
)

CLIENT_ID = "3f1c0d9e7b2a4c58a6e0f1d2c3b4a596"
CLIENT_SECRET = "9a8b7c6d5e4f30211f2e3d4c5b6a7980"
CERTIFICATE_ID = "kq3VtYp0bXc2Zr8nWm1LsAe4Hd7Gf6Ju"
TOKEN_ID = "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
TOKEN_SECRET = "c0ffee00deadbeef0badf00d12345678"
SECRET_STRINGS = (CLIENT_SECRET, TOKEN_SECRET)

# Form fields of an OAuth token request that must never reach a cassette.
SECRET_FORM_FIELDS = frozenset(
    {"client_assertion", "client_secret", "client_id", "refresh_token", "code"}
)
# Request headers that are part of the contract: the live request must carry exactly
# what the cassette recorded for them, including their absence.
CONTRACT_HEADERS = ("Accept", "Content-Type", "Prefer", "X-NetSuite-Idempotency-Key")
scrub_request = request_scrubber(SECRET_FORM_FIELDS)


def make_vcr(cassette_dir: Path = CASSETTE_DIR, record_mode: str = "none") -> ContractVCR:
    """The vcrpy configuration of every NetSuite contract test."""
    return make_contract_vcr(
        cassette_dir,
        contract_headers=CONTRACT_HEADERS,
        secret_form_fields=SECRET_FORM_FIELDS,
        record_mode=record_mode,
    )


def write_key(path: Path, key: Any) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def make_settings(
    key_path: Path,
    *,
    mode: str = "jwt",
    base_url: str = BASE_URL,
    token_url: str = TOKEN_URL,
    **overrides: Any,
) -> ConnectionSettings:
    """The connection every contract test talks through (JWT, or TBA with ``mode="tba"``)."""
    values: dict[str, Any] = {
        "id": "netsuite-test",
        "provider": "netsuite",
        "base_url": base_url,
        "token_url": token_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "account_id": ACCOUNT_ID,
        "payment_account_code": "1",
        "max_inline_wait_seconds": 0,
    }
    if mode == "jwt":
        values.update(certificate_id=CERTIFICATE_ID, private_key_path=str(key_path))
    else:
        values.update(token_id=TOKEN_ID, token_secret=TOKEN_SECRET)
    values.update(overrides)
    return ConnectionSettings(**values)


@pytest.fixture
def ns_vcr() -> ContractVCR:
    """Replay-only vcrpy for the NetSuite cassettes."""
    return make_vcr()


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    """A fresh EC P-256 private key: the certificate's key (its assertions are scrubbed)."""
    return write_key(tmp_path / "netsuite.pem", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def ns_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/contract.db")
    store.upgrade()
    yield store
    store.dispose()


@pytest.fixture
def ns_settings(key_path: Path) -> ConnectionSettings:
    return make_settings(key_path)


@pytest.fixture
def ns_adapter(ns_settings: ConnectionSettings, ns_store: Store) -> Iterator[NetSuiteAdapter]:
    adapter = NetSuiteAdapter(ns_settings, ns_store)
    yield adapter
    adapter.close()


@pytest.fixture
def tba_adapter(key_path: Path, ns_store: Store) -> Iterator[NetSuiteAdapter]:
    adapter = NetSuiteAdapter(make_settings(key_path, mode="tba"), ns_store)
    yield adapter
    adapter.close()


def _tap(adapter: NetSuiteAdapter) -> list[httpx.Request]:
    sent: list[httpx.Request] = []

    def hook(request: httpx.Request) -> None:
        sent.append(
            httpx.Request(
                request.method, request.url, headers=request.headers.copy(), content=request.read()
            )
        )

    adapter.http.client.event_hooks["request"].append(hook)
    return sent


@pytest.fixture
def ns_wire(ns_adapter: NetSuiteAdapter) -> list[httpx.Request]:
    """A copy of every API request the adapter sends (after auth), as httpx saw it."""
    return _tap(ns_adapter)


@pytest.fixture
def tba_wire(tba_adapter: NetSuiteAdapter) -> list[httpx.Request]:
    return _tap(tba_adapter)
