"""Walking-skeleton throughput against the built-in Xero sandbox (limits off).

    python benchmarks/skeleton.py [--invoices 2000] [--allocations 200] [--db sqlite|postgresql://…]

Prints one table: pull records/s into the store, push allocations/s (one
payment per call, the skeleton's shape), HTTP requests per allocation, and the
same push with 20 % of responses dropped after commit, with the duplicate count
read from the sandbox ledger.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.table import Table

from connector.config import load_settings
from connector.logging import configure_logging
from connector.sandbox import SandboxServer, SandboxState, write_config
from connector.store import Store
from connector.sync.pull import PullEngine
from connector.sync.push import AllocationRequest, PushEngine


def _push(
    state: SandboxState, settings: object, store: Store, count: int, tag: str
) -> tuple[float, int, int, int]:
    conn = next(c for c in settings.connections if c.provider == "xero")  # type: ignore[attr-defined]
    invoices = [state.xero.add_invoice(conn.tenant, total=Decimal("100.00")) for _ in range(count)]
    engine = PushEngine(settings, store)  # type: ignore[arg-type]
    ids = [
        engine.intake(
            AllocationRequest(
                connection_id=conn.id,
                document=i["InvoiceID"],
                amount="100.00",
                idempotency_key=f"{tag}-{n}",
            )
        ).intent.id
        for n, i in enumerate(invoices)
    ]
    requests_before = engine.adapter(conn.id).http.rate.requests  # type: ignore[attr-defined]
    started = time.perf_counter()
    finals = engine.push_until_final(ids, timeout=600, poll=0.05)
    elapsed = time.perf_counter() - started
    requests = engine.adapter(conn.id).http.rate.requests - requests_before  # type: ignore[attr-defined]
    engine.close()
    refs = {f.reference for f in finals}
    duplicates = 0
    for inv in invoices:
        mine = [
            p
            for p in state.xero.payments(conn.tenant, invoice_id=inv["InvoiceID"])
            if p.get("Reference") in refs
        ]
        duplicates += max(0, len(mine) - 1)
    applied = sum(1 for f in finals if f.state == "applied")
    return elapsed, requests, applied, duplicates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--allocations", type=int, default=200)
    parser.add_argument("--db", default="sqlite")
    args = parser.parse_args()
    configure_logging("ERROR", "console")  # the faulty run warns on every drop, by design
    table = Table(title="Walking skeleton against the Xero sandbox (rate limits off)")
    for name in ("step", "items", "seconds", "items/s", "requests/item", "applied", "duplicates"):
        table.add_column(name, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        state = SandboxState(
            seed=5, tenants=1, invoices=args.invoices, rate_limits=False, providers=("xero",)
        )
        with SandboxServer(state, port=0) as server:
            db = f"sqlite:///{Path(tmp) / 'bench.db'}" if args.db == "sqlite" else args.db
            config = write_config(
                state, Path(tmp) / "bench.toml", base_url=server.url, database_url=db
            )
            settings = load_settings(config)
            xero = next(c for c in settings.connections if c.provider == "xero")
            conn = xero.model_copy(update={"page_size": 1000})
            settings = settings.model_copy(update={"connections": [conn]})
            store = Store(db)
            store.upgrade()
            pull = PullEngine(settings, store)
            started = time.perf_counter()
            [stats] = pull.run_once(entities=["invoice"])
            elapsed = time.perf_counter() - started
            pull.close()
            table.add_row(
                "pull invoices",
                str(stats.records),
                f"{elapsed:.2f}",
                f"{stats.records / elapsed:,.0f}",
                f"{stats.pages / max(stats.records, 1):.3f}",
                "-",
                "-",
            )
            elapsed, requests, applied, dups = _push(
                state, settings, store, args.allocations, "clean"
            )
            table.add_row(
                "push (no faults)",
                str(args.allocations),
                f"{elapsed:.2f}",
                f"{args.allocations / elapsed:,.1f}",
                f"{requests / args.allocations:.2f}",
                str(applied),
                str(dups),
            )
            state.faults.update({"drop_after_commit": 0.2})
            elapsed, requests, applied, dups = _push(
                state, settings, store, args.allocations, "faulty"
            )
            table.add_row(
                "push (20 % dropped after commit)",
                str(args.allocations),
                f"{elapsed:.2f}",
                f"{args.allocations / elapsed:,.1f}",
                f"{requests / args.allocations:.2f}",
                str(applied),
                str(dups),
            )
            store.dispose()
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
