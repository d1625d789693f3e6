"""Shared fixtures: real databases (SQLite file, local PostgreSQL) and a real sandbox."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connector.clock import ManualClock
from connector.config import Settings, load_settings
from connector.store import Store

PG_ADMIN = os.environ.get("CONNECTOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options of the push chaos run (tests/chaos); here because options need the root conftest."""
    group = parser.getgroup("chaos")
    group.addoption(
        "--long", action="store_true", default=False, help="chaos: 10,000 allocations per run"
    )
    group.addoption(
        "--chaos-seed", type=int, default=None, help="chaos: replay this seed (as printed)"
    )


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"connector_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _reset_pg(url: str) -> None:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on both databases, each time on an empty schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("pg_server_url")
    _reset_pg(url)
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store on the database of ``db_url``."""
    s = Store(db_url)
    s.upgrade()
    yield s
    s.dispose()


@dataclass
class Env:
    """A sandbox, a config pointing at it, and the connector's store."""

    state: Any  # connector.sandbox.SandboxState
    server: Any  # connector.sandbox.SandboxServer
    config_path: Path
    settings: Settings
    store: Store
    clock: ManualClock
    closers: list[Any]

    @property
    def xero(self) -> Any:
        """The Xero connection of the config (the sandbox writes one per ledger tenant)."""
        return next(c for c in self.settings.connections if c.provider == "xero")

    @property
    def conn_id(self) -> str:
        return str(self.xero.id)

    @property
    def tenant(self) -> str:
        return str(self.xero.tenant)

    def advance(self, seconds: float) -> None:
        """Move both clocks (ours and the ledger's) forward."""
        self.clock.advance(seconds)
        self.state.clock.advance(seconds)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """A seeded Xero sandbox on a free loopback port and a SQLite store."""
    from connector.sandbox import SandboxServer, SandboxState, write_config

    state = SandboxState(seed=7, tenants=1, invoices=12, rate_limits=False)
    with SandboxServer(state, host="127.0.0.1", port=0) as server:
        db = f"sqlite:///{tmp_path / 'connector.db'}"
        path = write_config(
            state, tmp_path / "connector.toml", base_url=server.url, database_url=db
        )
        settings = load_settings(path)
        store = Store(settings.database.url)
        store.upgrade()
        environment = Env(state, server, path, settings, store, ManualClock(), [])
        yield environment
        for closer in environment.closers:
            closer.close()
        store.dispose()
