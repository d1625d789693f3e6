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

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import vcr
from vcr.request import Request as VcrRequest

from connector.adapters.xero import XeroAdapter
from connector.config import ConnectionSettings
from connector.store import Store
from tests.contract.xero_cassettes import BASE_URL, CASSETTE_DIR, TENANT_ID, TOKEN_URL

CLIENT_ID = "cid-test"
CLIENT_SECRET = "csecret-test"
REFRESH_TOKEN = "rt-test-3f9d1c7a5e2b"
SECRET_STRINGS = (CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN)

# Form fields of an OAuth token request that must never reach a cassette.
SECRET_FORM_FIELDS = frozenset({"refresh_token", "client_secret", "client_id", "code"})
# Keys of a token response whose values are replaced before recording.
SECRET_JSON_FIELDS = ("access_token", "refresh_token", "id_token")
# Request headers that are part of the contract: the live request must carry
# exactly what the cassette recorded for them, including their absence.
CONTRACT_HEADERS = (
    "Accept",
    "Content-Type",
    "Idempotency-Key",
    "If-Modified-Since",
    "xero-tenant-id",
)
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
    """Drop OAuth secrets from form bodies (runs on live requests before matching too)."""
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
    """Replace token values in a token endpoint response by ``scrubbed-…`` placeholders."""
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
    # vcrpy also runs this on every interaction it loads: leave placeholders be.
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
    """``vcr.VCR`` whose cassettes never play an interaction twice.

    ``allow_playback_repeats`` is a per-cassette option in vcrpy, so it is set on
    every ``use_cassette`` here rather than on the ``VCR`` object.
    """

    def __init__(self, config: vcr.VCR) -> None:
        self.config = config

    def use_cassette(self, name: str, **options: Any) -> Any:
        """``vcr.use_cassette`` with ``allow_playback_repeats=False``."""
        return self.config.use_cassette(name, allow_playback_repeats=False, **options)


def make_vcr(cassette_dir: Path = CASSETTE_DIR, record_mode: str = "none") -> ContractVCR:
    """The vcrpy configuration every contract test uses."""
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
