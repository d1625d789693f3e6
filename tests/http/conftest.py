"""A real, time-scaled sandbox with the providers' rate limits on, and adapters for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from connector.adapters.base import build_adapter
from connector.clock import ManualClock
from connector.config import ConnectionSettings, Settings, load_settings
from connector.ratelimit import ENV_TIME_SCALE
from connector.store import Store

#: Provider windows shrink 60 times: Xero's minute of 60 calls lasts one second.
SCALE = 60.0


@dataclass
class Scaled:
    """A sandbox (limits on, ``time_scale``), its config and store, and our clock."""

    state: Any  # connector.sandbox.SandboxState
    server: Any  # connector.sandbox.SandboxServer
    settings: Settings
    store: Store
    clock: ManualClock
    adapters: list[Any] = field(default_factory=list)

    def connection(self, provider: str) -> ConnectionSettings:
        return next(c for c in self.settings.connections if c.provider == provider)

    def adapter(self, provider: str = "xero") -> Any:
        """A fresh adapter (its own ProviderHTTP) of the provider's first connection."""
        adapter = build_adapter(self.connection(provider), self.store, clock=self.clock)
        self.adapters.append(adapter)
        return adapter


@pytest.fixture
def scaled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Scaled]]:
    """Start a sandbox with real limits at ``time_scale`` (keyword arguments go to
    ``SandboxState``); the connector's limiter gets the same scale from the environment."""
    from connector.sandbox import SandboxServer, SandboxState, write_config

    made: list[Scaled] = []
    servers: list[Any] = []

    def factory(time_scale: float = SCALE, **kwargs: Any) -> Scaled:
        monkeypatch.setenv(ENV_TIME_SCALE, str(time_scale))
        kwargs.setdefault("seed", 7)
        kwargs.setdefault("invoices", 3)
        kwargs.setdefault("providers", ("xero", "quickbooks"))
        state = SandboxState(rate_limits=True, time_scale=time_scale, **kwargs)
        servers.append(state)
        server = SandboxServer(state, host="127.0.0.1", port=0).start()
        servers.append(server)
        n = len(made)
        path = write_config(
            state,
            tmp_path / f"connector-{n}.toml",
            base_url=server.url,
            database_url=f"sqlite:///{tmp_path / f'connector-{n}.db'}",
        )
        settings = load_settings(path)
        store = Store(settings.database.url)
        store.upgrade()
        env = Scaled(state, server, settings, store, ManualClock())
        made.append(env)
        return env

    yield factory
    for env in made:
        for adapter in env.adapters:
            adapter.close()
        env.store.dispose()
    for thing in reversed(servers):
        if isinstance(thing, SandboxServer):
            thing.stop()
        else:
            thing.close()
