"""Backfill throughput and memory: records/s into SQLite and PostgreSQL, peak RSS per size.

    python benchmarks/backfill.py [--sizes 10000 100000] [--pg postgresql://postgres@127.0.0.1:5432/test]

The Xero sandbox (limits off) runs in its own subprocess (its own GIL), seeded
with N sales invoices. Each (size, database) pull runs in a fresh child process
(page size 1000) that reports records, seconds and its peak RSS
(``ru_maxrss``). PostgreSQL gets a scratch database, dropped at the end.
Targets: >= 5,000 records/s into SQLite; peak RSS flat (within 20 %) across sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SEED = 5
PAGE_SIZE = 1000
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"

_SERVE = """
import signal, sys, threading
from pathlib import Path
from connector.sandbox import SandboxServer, SandboxState, write_config
state = SandboxState(seed={seed}, invoices={n}, rate_limits=False, providers=("xero",))
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
with SandboxServer(state, host="127.0.0.1", port=0) as server:
    write_config(state, Path({config!r}), base_url=server.url, database_url="sqlite://")
    print("READY", flush=True)
    stop.wait()
"""


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


@contextmanager
def sandbox(n: int, tmp: Path) -> Iterator[tuple[Path, float]]:
    """A seeded Xero sandbox in a subprocess; yields its config and the seconds to seed."""
    config = tmp / f"sandbox-{n}.toml"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE.format(seed=SEED, n=n, config=str(config))],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "READY" not in line:
            raise RuntimeError("the sandbox subprocess did not start")
        yield config, time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def child(config: Path, db_url: str) -> None:
    """One backfill of invoices into ``db_url``; print its figures as JSON."""
    from connector.config import load_settings
    from connector.logging import configure_logging
    from connector.store import Store
    from connector.sync.pull import PullEngine

    configure_logging("WARNING")
    settings = load_settings(config)
    conn = settings.connections[0].model_copy(update={"page_size": PAGE_SIZE})
    settings = settings.model_copy(update={"connections": [conn]})
    store = Store(db_url)
    store.upgrade()
    engine = PullEngine(settings, store, prefetch=True)  # as `connector backfill` does
    started = time.perf_counter()
    [stats] = engine.run_once(entities=["invoice"])
    seconds = time.perf_counter() - started
    engine.close()
    store.dispose()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "records": stats.records,
                "inserted": stats.inserted,
                "pages": stats.pages,
                "requests": stats.requests,
                "seconds": seconds,
                "rss_mb": rss_kb / 1024,
                "complete": stats.complete,
            }
        )
    )


def measure(config: Path, db_url: str) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(config), db_url],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


@contextmanager
def scratch_pg(admin: str) -> Iterator[str]:
    """A scratch PostgreSQL database, dropped afterwards."""
    import psycopg

    name = f"connector_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def main(argv: list[str] | None = None) -> None:
    """Run every size against every database and print the table."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--child":
        child(Path(args[1]), args[2])
        return
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--pg", default=DEFAULT_PG, help="admin URL; '' skips PostgreSQL")
    opts = parser.parse_args(args)
    table = Table(title=f"Backfill: Xero invoices, page size {PAGE_SIZE}, sandbox limits off")
    for name in ("invoices", "seed s", "store", "records", "seconds", "records/s", "peak RSS MB"):
        table.add_column(name, justify="left" if name == "store" else "right")
    rss: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for n in opts.sizes:
            with sandbox(n, tmp) as (config, seeded):
                targets = [("sqlite", f"sqlite:///{tmp / f'bench-{n}.db'}")]
                for store_name, url in targets + ([("postgresql", "")] if opts.pg else []):
                    if store_name == "postgresql":
                        with scratch_pg(opts.pg) as pg_url:
                            figures = measure(config, pg_url)
                    else:
                        figures = measure(config, url)
                    if not figures["complete"] or figures["records"] < n:
                        raise RuntimeError(f"incomplete backfill: {figures}")
                    rss[n] = max(rss.get(n, 0.0), figures["rss_mb"])
                    table.add_row(
                        f"{n:,}",
                        f"{seeded:.1f}",
                        store_name,
                        f"{figures['records']:,}",
                        f"{figures['seconds']:.1f}",
                        f"{figures['records'] / figures['seconds']:,.0f}",
                        f"{figures['rss_mb']:.0f}",
                    )
    console = Console()
    console.print(table)
    if len(rss) > 1:
        low, high = rss[min(rss)], rss[max(rss)]
        console.print(
            f"peak RSS {min(rss):,} → {max(rss):,} invoices: {100 * (high / low - 1):+.0f} %"
        )


if __name__ == "__main__":
    main()
