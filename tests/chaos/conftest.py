"""Fixtures of the push chaos run: its store, mode, size and seed, and its world.

Two cases:

``sqlite-serial``
    2,000 allocations; one request in flight at a time, so a seed replays exactly.
``postgres-parallel``
    500 allocations (to keep CI short); one to three workers at once, each with the
    engine's own parallelism (connections side by side, several batches in flight),
    meeting in PostgreSQL's ``SKIP LOCKED`` claims. A seed replays the same plan,
    faults and crash schedule, but not the threads' interleaving.

``--long`` (registered in tests/conftest.py: options must come from the root
conftest) runs 10,000 allocations in both; ``--chaos-seed N`` replays seed ``N``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chaos.harness import World
from tests.conftest import _reset_pg

DEFAULT_SEED = 20240611
LONG_ALLOCATIONS = 10_000


@dataclass(frozen=True)
class ChaosCase:
    name: str  # the test id, for the replay command
    store: str
    url: str
    serial: bool
    allocations: int
    seed: int
    long: bool


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos_run: the seeded push chaos run (tests/chaos)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A long run gets an hour instead of the suite's five-minute timeout."""
    if not config.getoption("--long"):
        return
    for item in items:
        if item.get_closest_marker("chaos_run") is not None:
            item.add_marker(pytest.mark.timeout(3600))


@pytest.fixture(
    params=[
        pytest.param(("sqlite", True, 2_000), id="sqlite-serial"),
        pytest.param(("postgres", False, 500), id="postgres-parallel", marks=pytest.mark.postgres),
    ]
)
def chaos_case(request: pytest.FixtureRequest, tmp_path: Path) -> ChaosCase:
    store, serial, allocations = request.param
    if store == "sqlite":
        url = f"sqlite:///{tmp_path / 'chaos.db'}"
    else:
        url = request.getfixturevalue("pg_server_url")
        _reset_pg(url)
    long = bool(request.config.getoption("--long"))
    seed = request.config.getoption("--chaos-seed")
    return ChaosCase(
        name=request.node.callspec.id,
        store=store,
        url=url,
        serial=serial,
        allocations=LONG_ALLOCATIONS if long else allocations,
        seed=DEFAULT_SEED if seed is None else int(seed),
        long=long,
    )


@pytest.fixture
def world(chaos_case: ChaosCase, tmp_path: Path) -> Iterator[World]:
    """The sandbox ledgers on one server, a connection to each, a migrated store."""
    w = World(
        chaos_case.seed,
        chaos_case.url,
        tmp_path,
        tenants=max(2, min(25, chaos_case.allocations // 400)),
        serial=chaos_case.serial,
    )
    try:
        yield w
    finally:
        w.close()
