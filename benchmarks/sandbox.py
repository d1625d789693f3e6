"""Throughput of the built-in Xero sandbox itself (rate limits off, faults off).

    python benchmarks/sandbox.py [--invoices 6000] [--requests 1500] [--threads 8]
                                 [--where both|inprocess|subprocess]

Measures requests/second and p50/p95 latency, from a pool of keep-alive httpx clients
driven by several threads, for:

* ``GET /Invoices?page=N&pageSize=100``: every page once (what a backfill does, nothing
  rendered yet), then pages read again (rendered JSON cached until an invoice changes),
* ``GET /Invoices/{id}`` (random invoices),
* ``PUT /Payments`` with one payment per call, each on a different fresh invoice.

Honesty about the client: in-process, the client threads and the server's event loop
share one interpreter and its GIL, so they slow each other down. The same benchmark is
therefore also run against ``connector.sandbox.serve`` in a subprocess (its own GIL),
which is how the connector's own benchmarks should see it. Both are printed.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from connector.sandbox import SandboxServer, SandboxState

API = "/xero/api.xro/2.0"
SEED = 5
PAGE_SIZE = 100


@dataclass(frozen=True)
class Target:
    """A running sandbox and what a client needs to call its Xero."""

    label: str
    base_url: str
    client_id: str
    client_secret: str
    refresh_token: str
    tenant_id: str


@dataclass(frozen=True)
class Result:
    """One measured operation."""

    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rate(self) -> float:
        """Requests per second of wall time."""
        return self.requests / self.seconds

    def percentile(self, q: int) -> float:
        """The ``q``-th percentile latency in milliseconds."""
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


@contextmanager
def in_process(invoices: int) -> Iterator[Target]:
    """A SandboxServer on a thread of this process."""
    state = SandboxState(seed=SEED, invoices=invoices, rate_limits=False)
    tenant = state.xero.tenant_ids[0]
    with SandboxServer(state, port=0) as server:
        yield Target(
            "in-process",
            server.url,
            state.xero.client_id,
            state.xero.client_secret,
            state.xero.refresh_token_for(tenant),
            tenant,
        )
    state.close()


@contextmanager
def in_subprocess(invoices: int) -> Iterator[Target]:
    """``connector.sandbox.serve`` in a child interpreter (its own GIL)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sandbox.toml"
        log = Path(tmp) / "serve.log"
        code = (
            "from connector.sandbox import serve; "
            f"serve(port=0, seed={SEED}, invoices={invoices}, write_config_path={str(config)!r}, "
            "rate_limits=False, access_log=False)"
        )
        root = Path(__file__).resolve().parents[1]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
        }
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        try:
            deadline = time.monotonic() + 60
            while "Press Ctrl+C" not in log.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the sandbox subprocess did not start:\n{log.read_text()}")
                time.sleep(0.05)
            conn = tomllib.loads(config.read_text())["connections"][0]
            yield Target(
                "subprocess",
                conn["base_url"].removesuffix("/xero"),
                conn["client_id"],
                conn["client_secret"],
                conn["refresh_token"],
                conn["tenant_id"],
            )
        finally:
            proc.terminate()
            proc.wait(15)


def access_token(target: Target) -> str:
    """Refresh once and return the access token every client thread shares."""
    response = httpx.post(
        target.base_url + "/xero/connect/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": target.refresh_token,
            "client_id": target.client_id,
            "client_secret": target.client_secret,
        },
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


Call = Callable[[httpx.Client, int], httpx.Response]


def measure(target: Target, headers: dict[str, str], call: Call, n: int, threads: int) -> Result:
    """Run ``call(client, i)`` for i in 0..n-1 from ``threads`` threads, one client each."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        nonlocal errors
        mine: list[float] = []
        failed = 0
        with httpx.Client(base_url=target.base_url, headers=headers, timeout=30) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    break
                started = time.perf_counter()
                response = call(client, i)
                mine.append((time.perf_counter() - started) * 1000)
                failed += response.status_code != 200
        with lock:
            latencies.extend(mine)
            errors += failed

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result()
    return Result(n, time.perf_counter() - started, latencies, errors)


def run(target: Target, requests: int, threads: int) -> dict[str, Result]:
    """Measure the three operations against one running sandbox."""
    headers = {
        "Authorization": f"Bearer {access_token(target)}",
        "xero-tenant-id": target.tenant_id,
    }
    with httpx.Client(base_url=target.base_url, headers=headers, timeout=60) as http:
        listing = http.get(API + "/Invoices").json()["Invoices"]
    ids = [i["InvoiceID"] for i in listing]
    fresh = [
        i["InvoiceID"]
        for i in listing
        if i["Type"] == "ACCREC" and i["Status"] == "AUTHORISED" and i["AmountPaid"] == 0
    ]
    if len(fresh) < requests:
        raise SystemExit(
            f"only {len(fresh)} unpaid invoices for {requests} payments: raise --invoices"
        )
    pages = max(len(ids) // PAGE_SIZE, 1)
    rng = random.Random(SEED)
    picks = [rng.choice(ids) for _ in range(requests)]

    def page(client: httpx.Client, i: int) -> httpx.Response:
        return client.get(API + "/Invoices", params={"page": i % pages + 1, "pageSize": PAGE_SIZE})

    def by_id(client: httpx.Client, i: int) -> httpx.Response:
        return client.get(f"{API}/Invoices/{picks[i]}")

    def payment(client: httpx.Client, i: int) -> httpx.Response:
        body = (
            f'{{"Payments":[{{"Invoice":{{"InvoiceID":"{fresh[i]}"}},"Account":{{"Code":"090"}},'
            f'"Date":"2024-05-01","Amount":1.00,"Reference":"bench-{i}"}}]}}'
        )
        return client.put(
            API + "/Payments",
            content=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": f"bench-{i}"},
        )

    return {
        # Each page read once, as a backfill reads them: nothing rendered yet.
        f"GET Invoices page ({PAGE_SIZE}), first reads": measure(
            target, headers, page, pages, threads
        ),
        # Pages read again (a second puller, a re-run): rendered JSON is cached.
        f"GET Invoices page ({PAGE_SIZE}), re-reads": measure(
            target, headers, page, requests, threads
        ),
        "GET Invoices/{id}": measure(target, headers, by_id, requests, threads),
        "PUT Payments (1 per call)": measure(target, headers, payment, requests, threads),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run the benchmark on each server, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=6000, help="sales invoices seeded")
    parser.add_argument("--requests", type=int, default=1500, help="requests per operation")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--where", choices=["both", "inprocess", "subprocess"], default="both")
    args = parser.parse_args(argv)
    servers = {"inprocess": [in_process], "subprocess": [in_subprocess]}.get(
        args.where, [in_process, in_subprocess]
    )
    table = Table(
        title=(
            f"Xero sandbox throughput: {args.invoices:,} invoices, {args.threads} client threads, "
            f"{args.requests:,} requests per row (rate limits and faults off)"
        )
    )
    for name in ("server", "operation", "req/s", "items/s", "p50 ms", "p95 ms", "errors"):
        table.add_column(name, justify="left" if name in {"server", "operation"} else "right")
    for start in servers:
        with start(args.invoices) as target:
            results: dict[str, Any] = run(target, args.requests, args.threads)
        for operation, result in results.items():
            per_call = PAGE_SIZE if "page" in operation else 1
            table.add_row(
                target.label,
                operation,
                f"{result.rate:,.0f}",
                f"{result.rate * per_call:,.0f}",
                f"{result.percentile(50):.1f}",
                f"{result.percentile(95):.1f}",
                str(result.errors),
            )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
