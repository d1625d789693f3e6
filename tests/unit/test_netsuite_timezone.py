"""NetSuite's SuiteQL speaks the account's time zone; the store keeps UTC."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from connector.adapters.netsuite import NetSuiteAdapter, _since_clause
from connector.config import ConfigError, ConnectionSettings, parse_settings
from connector.store import Store


def settings(timezone: str) -> ConnectionSettings:
    return ConnectionSettings(
        id="ns",
        provider="netsuite",
        base_url="https://1234567.suitetalk.api.netsuite.com",
        token_url="https://1234567.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token",
        client_id="ck",
        client_secret=SecretStr("cs"),
        account_id="1234567",
        token_id="tid",
        token_secret=SecretStr("tsecret"),
        timezone=timezone,
    )


def test_local_stamps_become_utc_and_since_is_asked_in_local_time(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content)["q"])
        body = {"items": [{"id": "1", "lastmodified": "2026-01-15T09:30:00"}], "hasMore": False}
        return httpx.Response(200, json=body)

    store = Store(f"sqlite:///{tmp_path / 'tz.db'}")
    store.upgrade()
    adapter = NetSuiteAdapter(
        settings("America/Los_Angeles"), store, transport=httpx.MockTransport(handler)
    )
    try:
        data = adapter._suiteql("SELECT id FROM account")
    finally:
        adapter.close()
        store.dispose()
    # 09:30 in Los Angeles (PST, UTC-8) is 17:30 UTC.
    assert data["items"][0]["lastmodified"] == "2026-01-15T17:30:00Z"
    since = datetime(2026, 1, 15, 17, 30, tzinfo=UTC)
    assert "'2026-01-15 09:30:00'" in _since_clause("t.lastmodifieddate", since, adapter._tz)
    assert "'2026-01-15 17:30:00'" in _since_clause("t.lastmodifieddate", since)


def test_unknown_time_zone_is_a_config_error() -> None:
    raw = {
        "connections": [
            {
                **settings("UTC").model_dump(mode="json"),
                "timezone": "Mars/Olympus",
                "client_secret": "cs",
                "token_secret": "ts",
            }
        ]
    }
    raw["connections"][0].pop("refresh_token", None)
    raw["connections"][0] = {k: v for k, v in raw["connections"][0].items() if v is not None}
    with pytest.raises(ConfigError, match="IANA time zone"):
        parse_settings(raw, Path("c.toml"))
