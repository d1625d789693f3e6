"""Fixtures for the NetSuite contract tests: strict vcrpy, scrubbers, a fresh adapter.

The same strictness as the Xero contract tests (``tests/contract/conftest.py``):
``record_mode="none"``, request bodies matched parsed *and* byte for byte, the contract
headers matched (including their absence), no interaction played twice. Secrets never
reach a cassette: the ``Authorization`` header (bearer token or TBA signature) is
filtered, the token request's form loses ``client_assertion`` (the signed JWT) and any
client secret, and token values in responses become ``scrubbed-…`` placeholders.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import vcr
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from vcr.request import Request as VcrRequest

from connector.adapters.netsuite import NetSuiteAdapter
from connector.config import ConnectionSettings
from connector.store import Store
from tests.contract.netsuite.netsuite_cassettes import (
    ACCOUNT_ID,
    BASE_URL,
    CASSETTE_DIR,
    TOKEN_URL,
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
# Keys of a token response whose values are replaced before recording.
SECRET_JSON_FIELDS = ("access_token", "refresh_token", "id_token")
# Request headers that are part of the contract: the live request must carry exactly
# what the cassette recorded for them, including their absence.
CONTRACT_HEADERS = ("Accept", "Content-Type", "Prefer", "X-NetSuite-Idempotency-Key")
MATCH_ON = (
    "method",
    "scheme",
    "host",
    "port",
    "path",
    "query",
    "body",
    "raw_body",
    "contract_headers",
)


def scrub_request(request: VcrRequest) -> VcrRequest:
    """Drop the client assertion and any secret from form bodies (live requests too)."""
    content_type = str(request.headers.get("Content-Type", ""))
    body = request.body
    if body and "application/x-www-form-urlencoded" in content_type.lower():
        text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
        kept = [
            (k, v)
            for k, v in parse_qsl(text, keep_blank_values=True)
            if k not in SECRET_FORM_FIELDS
        ]
        request.body = urlencode(kept)
    return request


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    """Replace token values of a token response by ``scrubbed-…`` placeholders."""
    response = copy.deepcopy(response)
    raw = response.get("body", {}).get("string")
    if not raw:
        return response
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return response
    if not isinstance(data, dict):
        return response
    secret_keys = [
        k for k in SECRET_JSON_FIELDS if k in data and not str(data[k]).startswith("scrubbed-")
    ]
    if secret_keys:
        for key in secret_keys:
            data[key] = f"scrubbed-{key.replace('_', '-')}"
        text = json.dumps(data)
        response["body"]["string"] = text.encode() if isinstance(raw, bytes) else text
        for name in list(response.get("headers", {})):
            if name.lower() == "content-length":
                response["headers"][name] = [str(len(text.encode()))]
    return response


def contract_headers(live: VcrRequest, recorded: VcrRequest) -> None:
    """The contract headers of the live request equal the recorded ones (or are absent)."""
    problems = []
    for name in CONTRACT_HEADERS:
        got, want = live.headers.get(name), recorded.headers.get(name)
        if got != want:
            problems.append(f"{name}: sent {got!r}, cassette has {want!r}")
    if problems:
        raise AssertionError("; ".join(problems))


class ContractVCR:
    """``vcr.VCR`` whose cassettes never play an interaction twice."""

    def __init__(self, config: vcr.VCR) -> None:
        self.config = config

    def use_cassette(self, name: str, **options: Any) -> Any:
        """``vcr.use_cassette`` with ``allow_playback_repeats=False``."""
        return self.config.use_cassette(name, allow_playback_repeats=False, **options)


def make_vcr(cassette_dir: Path = CASSETTE_DIR, record_mode: str = "none") -> ContractVCR:
    """The vcrpy configuration every NetSuite contract test uses."""
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
