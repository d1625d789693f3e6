"""Push throughput: the engine against the sandbox's three ledgers, beside the official SDKs.

    python benchmarks/push.py [--providers xero quickbooks netsuite] [--n 2000] [--m N]
                              [--time-scale 60] [--skip-sdk] [--db sqlite|postgres]
                              [--pg postgresql://postgres@127.0.0.1:5432/test]

The sandbox (all three ledgers, two tenants each) runs in its own subprocess, so its
CPU is not ours; this script drives it through a few benchmark-only admin routes
under ``/_bench/`` (fresh invoices, limits on/off, request counters by status, a
request-quota sampler, a per-document check of the ledger). Tenant 0 of each ledger
is the engine's, tenant 1 the SDK's: separate OAuth grants and separate quotas.

Per provider, four phases, each on its own fresh invoices (total 100.00, each
allocation pays 40.00 of one, so a duplicate payment shows as a second payment
and a lower balance rather than being refused):

1. **limits off** (the sandbox never refuses, and the connector's own limiter is
   scaled to nothing with ``CONNECTOR_RATE_TIME_SCALE``): intake ``--n`` allocations
   (``intake_many`` when the engine has it), then ``push_until_final``. Timed apart:
   intake seconds, and the push phase's wall clock and CPU (``time.process_time``,
   every thread of this process; the sandbox's and PostgreSQL's CPU are not ours).
2. **SDK, limits off**: as many allocations, one ``PUT``/``POST`` per payment in a
   plain loop with ``xero-python`` (``AccountingApi.create_payment``) or
   ``python-quickbooks`` (``Payment.save``). NetSuite ships no official Python SDK
   (only its REST/SOAP APIs and SuiteScript), so n/a.
3. **limits on**, time-scaled (``--time-scale``; the connector gets the same scale
   through ``CONNECTOR_RATE_TIME_SCALE``): intake ``--m`` allocations with limits
   still off (intake reads each document; it is reported, not measured against the
   ceiling), then turn the real limits on with fresh counters and push.
4. **SDK, limits on**: ``min(--m, --n)`` allocations, one call each; a 429 is
   waited out (urllib3 under xero-python honours ``Retry-After`` itself; for
   python-quickbooks the loop sleeps and resends under the same ``requestid``).

Every phase is checked from the sandbox side: per document, the payments the ledger
holds. ``failed`` = allocations not ``applied`` (or not final in time) plus documents
left unpaid or paid a wrong amount; ``dups`` = payments beyond one per document.

Ceilings (allocations per provider-minute; at ``--time-scale 60`` a provider-minute
is one real second):

* Xero: 60 calls per tenant-minute x 50 payments per ``PUT Payments`` = 3,000.
* QuickBooks: 40 ``batch`` calls per realm-minute x 30 items = 1,200 (batch calls
  also count against the 500 calls/minute; single ``POST``s in the remaining 460
  calls could add at most 460 more, which this ceiling leaves out).
* NetSuite publishes no per-minute limit; its limit is the account concurrency (5
  requests in flight) and REST creates one payment per request. With limits on the
  sandbox answers every write after ``--netsuite-latency-ms`` (nominal, default
  1,000 ms, divided by the time scale), so the ceiling is
  ``5 x 60,000 / latency_ms`` = 300 per provider-minute. Reads are not charged
  latency but do take a concurrency slot.

``share`` is counted in the provider's own fixed windows (Xero's per-tenant window
offsets included), because an end-to-end rate over a short run can read above 100 %:
a fresh window's whole quota is there at once, so a run can burst up to two windows'
worth across a boundary. The push starts at the top of a fresh window and is charged
every window from that one up to the one it ended in, whole, except the last, which
is charged by the share of its request quota used (the binding limit: Xero's 60 calls; QuickBooks' 40 batch
calls or 500 calls). ``reached`` = allocations / windows charged: exactly the
ceiling for a client that fills every window it touches, never above it. NetSuite
has no windows to burst across, so it is measured end to end. ``--m`` defaults to
two windows at the ceiling, at least ``--n`` (Xero 6,000, QuickBooks 2,400, NetSuite
2,000): enough for a steady figure, few enough to keep the run short, since every
allocation is taken in (one document read each) before it is pushed.

Columns: ``allocs`` allocations pushed; ``intake s`` / ``push s`` wall clock;
``alloc/s`` push-phase throughput (allocations / push seconds); ``CPU ms/alloc``
our process's CPU over the push phase per allocation; ``req/alloc`` provider API
calls the sandbox answered per allocation (token calls included); ``429s`` counted
by the sandbox; ``ceiling/min`` and ``reached/min`` allocations per provider-minute
(``reached`` as above; ``windows`` the windows charged); ``share`` = reached / ceiling; ``SDK alloc/s`` the
one-call-per-payment loop (limits on: per window charged, like ours); ``x SDK`` ours
/ SDK on the same basis.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SEED = 7
TOTAL = Decimal("100.00")
AMOUNT = Decimal("40.00")
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
PROVIDERS = ("xero", "quickbooks", "netsuite")
#: Allocations per provider-minute a provider allows (NetSuite: computed from latency).
WINDOW_CEILING = {"xero": 60 * 50, "quickbooks": 40 * 30}
NETSUITE_CONCURRENCY = 5
#: CONNECTOR_RATE_TIME_SCALE while the sandbox's limits are off: windows of nothing.
LIMITS_OFF_SCALE = "1000000000"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ================================================================ the sandbox subprocess


class _Relay:
    """Wraps uvicorn's ``send`` to see the status; keeps the sandbox's connection drop
    working (it reaches the transport through ``send.__self__``)."""

    def __init__(self, send: Any) -> None:
        self._send = send
        self._cycle = getattr(send, "__self__", None)
        self.status = 0

    @property
    def transport(self) -> Any:
        return getattr(self._cycle, "transport", None)

    @property
    def disconnected(self) -> bool:
        return bool(getattr(self._cycle, "disconnected", True))

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


class _Recorder:
    """Samples a tenant's rate-limit window every ~0.5 ms: the most of its request
    quota (0..1, the binding limit) seen used in each window."""

    def __init__(
        self, usage: Callable[[], tuple[int, float] | None], window: Callable[[], int]
    ) -> None:
        self._usage, self._window = usage, window
        self.first_window = window()
        self.used: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-recorder", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        seen = self._usage()
        if seen is not None and seen[1] > self.used.get(seen[0], 0.0):
            self.used[seen[0]] = seen[1]

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.0005)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self._sample()
        return {"first": self.first_window, "used": sorted(self.used.items())}


class _Bench:
    """The sandbox app plus request counters and the ``/_bench/`` routes."""

    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state
        self.counts: Counter[tuple[str, int]] = Counter()
        self.recorder: _Recorder | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/_bench/"):
            await self._admin(scope, receive, send)
            return
        relay = _Relay(send)
        try:
            await self.app(scope, receive, relay.send)
        finally:
            self.counts[(path.split("/", 2)[1], relay.status)] += 1

    async def _admin(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.requests import Request
        from starlette.responses import Response

        request = Request(scope, receive)
        raw = await request.body()
        body = json.loads(raw) if raw.strip() else {}
        name = scope["path"].removeprefix("/_bench/")
        handler = getattr(self, f"do_{name}", None)
        if handler is None:
            result, status = {"error": f"no bench route {name!r}"}, 404
        else:
            try:
                result, status = await asyncio.to_thread(handler, **body), 200
            except Exception as exc:  # report it to the client, keep serving
                result, status = {"error": f"{type(exc).__name__}: {exc}"}, 500
        response = Response(
            json.dumps(result, default=str), status_code=status, media_type="application/json"
        )
        await response(scope, receive, send)

    # -- helpers --------------------------------------------------------------------
    def _key(self, provider: str, tenant: int) -> str:
        st = self.state
        ids = {
            "xero": lambda: st.xero.tenant_ids,
            "quickbooks": lambda: st.quickbooks.realm_ids,
            "netsuite": lambda: st.netsuite.account_ids,
        }[provider]()
        return str(ids[tenant])

    # -- routes ---------------------------------------------------------------------
    def do_tenant(self, provider: str, tenant: int) -> Any:
        """The tenant's id (Xero tenant, QuickBooks realm, NetSuite account)."""
        return self._key(provider, tenant)

    def do_setup(self, limits: bool, time_scale: float, netsuite_latency_ms: float = 0) -> Any:
        """Limits on/off with fresh counters, the time scale, NetSuite's write latency."""
        from connector.sandbox.quickbooks.ratelimit import QboRateLimiter, QboRateLimits
        from connector.sandbox.ratelimit import RateLimitConfig, RateLimiter

        st = self.state
        st.clock.time_scale = float(time_scale)
        st.rate_limiter = RateLimiter(RateLimitConfig(enabled=limits), st.clock)
        st.quickbooks.rate_limiter = QboRateLimiter(QboRateLimits(enabled=limits), st.clock)
        st.netsuite.concurrency = NETSUITE_CONCURRENCY if limits else 10_000
        st.faults.reset()
        if netsuite_latency_ms:
            st.faults.update({"latency_ms": float(netsuite_latency_ms)})
        return {"ok": True}

    def do_invoices(self, provider: str, tenant: int, count: int) -> Any:
        """``count`` fresh open invoices of ``TOTAL``: their ids and contacts."""
        st, key, out = self.state, self._key(provider, tenant), []
        for _ in range(count):
            if provider == "xero":
                inv = st.xero.add_invoice(key, total=TOTAL)
                out.append({"id": inv["InvoiceID"], "contact": inv["Contact"]["ContactID"]})
            elif provider == "quickbooks":
                inv = st.quickbooks.add_invoice(key, total=TOTAL)
                out.append({"id": inv["Id"], "contact": inv["CustomerRef"]["value"]})
            else:
                inv = st.netsuite.add_invoice(key, total=TOTAL)
                out.append({"id": inv["id"], "contact": inv["entity"]["id"]})
        return out

    def do_credentials(self, provider: str, tenant: int) -> Any:
        """What an SDK needs to log in as ``tenant``, with its current refresh token."""
        st, key = self.state, self._key(provider, tenant)
        ledger = st.xero if provider == "xero" else st.quickbooks
        return {
            "client_id": ledger.client_id,
            "client_secret": ledger.client_secret,
            "tenant": key,
            "refresh_token": ledger.refresh_token_for(key),
        }

    def do_stats(self, reset: bool = False) -> Any:
        """Requests answered per provider and status since the last reset."""
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for (provider, status), n in self.counts.items():
            out[provider][str(status)] = n
        if reset:
            self.counts.clear()
        return out

    def do_record(self, provider: str, tenant: int, on: bool) -> Any:
        """Start / stop sampling a tenant's request quota per rate-limit window."""
        if not on:
            recorder, self.recorder = self.recorder, None
            return recorder.stop() if recorder else {}
        st, key = self.state, self._key(provider, tenant)
        if provider == "xero":
            limiter = st.rate_limiter

            def usage() -> tuple[int, float] | None:
                w = limiter._minute.get(key)
                return None if w is None else (w.index, w.count / limiter.config.minute)

            def window() -> int:
                return int(limiter._frame(key).m_index)

        elif provider == "quickbooks":
            qbo = st.quickbooks.rate_limiter
            length = 60.0 / st.clock.time_scale

            def usage() -> tuple[int, float] | None:
                c = qbo._realms.get(key)
                if c is None:
                    return None
                limits = qbo.limits
                return c.minute.index, max(
                    c.minute.count / limits.minute, c.batch.count / limits.batch_minute
                )

            def window() -> int:
                return math.floor((st.clock.now() - _EPOCH).total_seconds() / length)

        else:  # NetSuite: a concurrency limit, no windows (measured end to end)
            return {"ok": True, "window_seconds": 60.0 / st.clock.time_scale}
        self.recorder = _Recorder(usage, window)
        return {"ok": True, "window_seconds": 60.0 / st.clock.time_scale}

    def do_until_window(self, provider: str, tenant: int) -> Any:
        """Seconds until the tenant's next rate-limit window starts (0 for NetSuite)."""
        st, key = self.state, self._key(provider, tenant)
        if provider == "xero":
            f = st.rate_limiter._frame(key)
            return (f.m_index + 1) * f.minute_len + f.m_off - f.seconds
        if provider == "quickbooks":
            length = 60.0 / st.clock.time_scale
            return length - (st.clock.now() - _EPOCH).total_seconds() % length
        return 0.0

    def do_check(self, provider: str, tenant: int, documents: list[str], amount: str) -> Any:
        """Per document: how many live payments the ledger holds, and their amounts."""
        st, key = self.state, self._key(provider, tenant)
        paid: dict[str, list[Decimal]] = defaultdict(list)
        with st.lock:
            if provider == "xero":
                for p in st.xero.tenant(key).payments.values():
                    if p.status != "DELETED":
                        paid[str(p.invoice_id)].append(Decimal(p.amount))
            elif provider == "quickbooks":
                realm = st.quickbooks._realm(key)
                for doc in documents:
                    paid[doc] = [Decimal(a) for a in realm.applications.get(doc, {}).values()]
            else:
                from connector.sandbox.netsuite.models import CUSTOMER_PAYMENT

                for tx in st.netsuite.company(key).transactions.values():
                    if tx.kind == CUSTOMER_PAYMENT:
                        for line in tx.apply:
                            paid[str(line.doc_id)].append(Decimal(line.amount))
        want = Decimal(amount)
        out = Counter(documents=len(documents))
        for doc in documents:
            amounts = paid.get(str(doc), [])
            out["payments"] += len(amounts)
            if not amounts:
                out["unpaid"] += 1
                continue
            out["duplicates"] += len(amounts) - 1
            if amounts[0] != want:
                out["wrong_amount"] += 1
        return dict(out)


def serve(config: Path) -> None:
    """The sandbox subprocess: serve until SIGTERM; print ``READY <url>`` once up."""
    from connector.sandbox import SandboxState, write_config
    from connector.sandbox.app import create_app
    from connector.serving import ThreadedServer

    state = SandboxState(seed=SEED, tenants=2, invoices=12, bills=3, rate_limits=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = ThreadedServer(_Bench(create_app(state), state), name="sandbox").start()
    try:
        write_config(state, config, base_url=server.url, database_url="sqlite://")
        print(f"READY {server.url}", flush=True)
        stop.wait()
    finally:
        server.stop()
        state.close()


# ================================================================ this process


class Sandbox:
    """The sandbox subprocess and a client for its ``/_bench/`` routes."""

    def __init__(self, tmp: Path) -> None:
        import httpx

        self.config = tmp / "sandbox.toml"
        self.log = tmp / "sandbox.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(self.config)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=_env(),
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.close()
            raise RuntimeError(f"the sandbox did not start:\n{self.log.read_text()[-3000:]}")
        self.url = line.split()[1]
        self.http = httpx.Client(base_url=self.url, timeout=600)

    def call(self, name: str, **body: Any) -> Any:
        response = self.http.post(f"/_bench/{name}", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"/_bench/{name}: {response.text}")
        return response.json()

    def close(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


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


@dataclass
class Phase:
    """The figures of one timed run (engine or SDK)."""

    allocations: int
    seconds: float
    cpu: float = 0.0
    intake_seconds: float = 0.0
    requests: int = 0
    throttled: int = 0
    failed: int = 0
    duplicates: int = 0
    windows_charged: float | None = None  # limits on, Xero/QuickBooks: see _charged
    window_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.allocations / self.seconds if self.seconds else 0.0

    def per_window(self) -> float:
        """Allocations per provider-minute: per window charged, else end to end."""
        if self.windows_charged:
            return self.allocations / self.windows_charged
        return self.rate * self.window_seconds


def _charged(record: dict[str, Any]) -> float | None:
    """Provider windows the run occupied: whole ones from the window it started in up
    to its last, and the last by the share of its request quota used."""
    used = {int(w): float(q) for w, q in record.get("used", [])}
    if not used:
        return None
    last = max(used)
    return (last - int(record["first"])) + used[last]


def _stats_for(sb: Sandbox, provider: str) -> tuple[int, int]:
    counts = sb.call("stats", reset=True).get(provider, {})
    return sum(counts.values()), int(counts.get("429", 0))


def _align(sb: Sandbox, provider: str, tenant: int, limits: bool) -> None:
    """With limits on, start at the top of a fresh provider window (its quota and its
    whole length ahead), so the first window charged is a whole one."""
    if limits:
        time.sleep(float(sb.call("until_window", provider=provider, tenant=tenant)) + 0.002)


@contextmanager
def _rate_scale(value: str) -> Iterator[None]:
    """Set ``CONNECTOR_RATE_TIME_SCALE`` for the connector's own limiter."""
    before = os.environ.get("CONNECTOR_RATE_TIME_SCALE")
    os.environ["CONNECTOR_RATE_TIME_SCALE"] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CONNECTOR_RATE_TIME_SCALE", None)
        else:
            os.environ["CONNECTOR_RATE_TIME_SCALE"] = before


def engine_phase(
    sb: Sandbox,
    settings: Any,
    store: Any,
    provider: str,
    count: int,
    *,
    limits: bool,
    scale: float,
    latency_ms: float,
    timeout: float,
) -> Phase:
    """Intake ``count`` allocations, then push them to final; check the ledger."""
    from connector.state import TERMINAL
    from connector.sync.push import AllocationRequest, PushEngine

    key = sb.call("tenant", provider=provider, tenant=0)
    conn = next(c for c in settings.connections if c.provider == provider and c.tenant == key)
    one = settings.model_copy(update={"connections": [conn]})
    docs = sb.call("invoices", provider=provider, tenant=0, count=count)
    sb.call("setup", limits=False, time_scale=scale if limits else 1.0)
    tag = f"{provider}-{'on' if limits else 'off'}-{uuid.uuid4().hex[:6]}"
    requests = [
        AllocationRequest(
            connection_id=conn.id,
            document=str(d["id"]),
            amount=str(AMOUNT),
            idempotency_key=f"{tag}-{i}",
        )
        for i, d in enumerate(docs)
    ]
    with _rate_scale(LIMITS_OFF_SCALE):  # intake: the sandbox's limits are off too
        engine = PushEngine(one, store, worker_id=f"bench-intake-{tag}")
        try:
            started = time.perf_counter()
            if hasattr(engine, "intake_many"):
                results = []
                for at in range(0, len(requests), 1000):
                    results += engine.intake_many(requests[at : at + 1000])
            else:
                results = [engine.intake(r) for r in requests]
            intake_seconds = time.perf_counter() - started
        finally:
            engine.close()
    ids = [r.intent.id for r in results]
    sb.call(
        "setup",
        limits=limits,
        time_scale=scale if limits else 1.0,
        netsuite_latency_ms=latency_ms / scale if limits and provider == "netsuite" else 0,
    )
    with _rate_scale(str(scale) if limits else LIMITS_OFF_SCALE):
        engine = PushEngine(one, store, worker_id=f"bench-{tag}")
        try:
            _align(sb, provider, 0, limits)
            sb.call("stats", reset=True)
            recording = sb.call("record", provider=provider, tenant=0, on=True)
            kwargs: dict[str, Any] = {"timeout": timeout}
            if "poll" in inspect.signature(engine.push_until_final).parameters:
                kwargs["poll"] = 0.01
            cpu0, started = time.process_time(), time.perf_counter()
            finals = engine.push_until_final(ids, **kwargs)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
            record = sb.call("record", provider=provider, tenant=0, on=False)
            requests_seen, throttled = _stats_for(sb, provider)
        finally:
            engine.close()
    sb.call("setup", limits=False, time_scale=1.0)
    check = sb.call(
        "check", provider=provider, tenant=0, documents=[d["id"] for d in docs], amount=str(AMOUNT)
    )
    states = Counter(f.state for f in finals)
    not_applied = count - states.get("applied", 0)
    failed = max(not_applied, check.get("unpaid", 0) + check.get("wrong_amount", 0))
    phase = Phase(
        allocations=count,
        seconds=seconds,
        cpu=cpu,
        intake_seconds=intake_seconds,
        requests=requests_seen,
        throttled=throttled,
        failed=failed,
        duplicates=check.get("duplicates", 0),
        windows_charged=_charged(record) if limits else None,
        window_seconds=recording.get("window_seconds", 60.0 / scale),
    )
    odd = {s: n for s, n in states.items() if s != "applied"}
    not_final = sum(n for s, n in states.items() if s not in TERMINAL)
    if odd:
        phase.notes.append(f"{provider} limits {'on' if limits else 'off'}: final states {odd}")
    if not_final:
        phase.notes.append(f"{provider}: {not_final} not final after {timeout:.0f} s")
    return phase


def sdk_phase(sb: Sandbox, provider: str, count: int, *, limits: bool, scale: float) -> Phase:
    """``count`` payments, one official-SDK call each, in a plain loop."""
    docs = sb.call("invoices", provider=provider, tenant=1, count=count)
    sb.call("setup", limits=False, time_scale=scale if limits else 1.0)
    creds = sb.call("credentials", provider=provider, tenant=1)
    tag = uuid.uuid4().hex[:8]
    if provider == "xero":
        pay, close = _xero_sdk(sb.url, creds)
    else:
        pay, close = _quickbooks_sdk(sb.url, creds, window=60.0 / (scale if limits else 1.0))
    try:
        sb.call("setup", limits=limits, time_scale=scale if limits else 1.0)
        _align(sb, provider, 1, limits)
        sb.call("stats", reset=True)
        recording = sb.call("record", provider=provider, tenant=1, on=True)
        failures: Counter[str] = Counter()
        cpu0, started = time.process_time(), time.perf_counter()
        for i, doc in enumerate(docs):
            try:
                pay(doc, f"sdk-{tag}-{i}")
            except Exception as exc:  # a naive loop: count it and go on
                failures[type(exc).__name__] += 1
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
        record = sb.call("record", provider=provider, tenant=1, on=False)
        requests_seen, throttled = _stats_for(sb, provider)
    finally:
        close()
    sb.call("setup", limits=False, time_scale=1.0)
    check = sb.call(
        "check", provider=provider, tenant=1, documents=[d["id"] for d in docs], amount=str(AMOUNT)
    )
    phase = Phase(
        allocations=count,
        seconds=seconds,
        cpu=cpu,
        requests=requests_seen,
        throttled=throttled,
        failed=check.get("unpaid", 0) + check.get("wrong_amount", 0),
        duplicates=check.get("duplicates", 0),
        windows_charged=_charged(record) if limits else None,
        window_seconds=recording.get("window_seconds", 60.0),
    )
    if failures:
        phase.notes.append(f"{provider} SDK limits {'on' if limits else 'off'}: {dict(failures)}")
    return phase


PayFn = Callable[[dict[str, Any], str], None]


def _xero_sdk(url: str, creds: dict[str, Any]) -> tuple[PayFn, Callable[[], None]]:
    """xero-python, unmodified, pointed at the sandbox (as tests/sandbox does)."""
    from xero_python.accounting import Account, AccountingApi, Invoice, Payment
    from xero_python.api_client import ApiClient, Configuration
    from xero_python.api_client.oauth2 import OAuth2Token, TokenApi
    from xero_python.exceptions import RateLimitException

    TokenApi.refresh_token_url = url + "/xero/connect/token"
    Configuration._default = None  # its metaclass would hand back the first instance's copy
    client = ApiClient(
        Configuration(
            oauth2_token=OAuth2Token(
                client_id=creds["client_id"], client_secret=creds["client_secret"]
            )
        ),
        pool_threads=1,
    )
    holder: dict[str, Any] = {
        "token": {
            "access_token": "none",
            "refresh_token": creds["refresh_token"],
            "scope": ["offline_access", "accounting.transactions"],
            "expires_at": time.time() - 60,  # expired: the SDK refreshes first
            "expires_in": 1800,
            "token_type": "Bearer",
        }
    }
    client.oauth2_token_getter(lambda: holder["token"])
    client.oauth2_token_saver(lambda token: holder.update(token=token))
    client.refresh_oauth2_token()  # log in before the clock starts
    api = AccountingApi(client, base_url=url + "/xero/api.xro/2.0")
    tenant, today = creds["tenant"], date.today()

    def pay(doc: dict[str, Any], key: str) -> None:
        payment = Payment(
            invoice=Invoice(invoice_id=doc["id"]),
            account=Account(code="090"),
            amount=AMOUNT,
            date=today,
            reference=key,
        )
        for _ in range(100):
            try:
                api.create_payment(tenant, payment, idempotency_key=key)
                return
            except RateLimitException as exc:  # urllib3 already waits out Retry-After ones
                time.sleep(float((exc.headers or {}).get("Retry-After", 1)))
        raise RuntimeError("still rate limited after 100 tries")

    return pay, client.rest_client.pool_manager.clear


def _quickbooks_sdk(
    url: str, creds: dict[str, Any], *, window: float
) -> tuple[PayFn, Callable[[], None]]:
    """python-quickbooks + intuitlib, unmodified (see tests/sandbox/quickbooks)."""
    from intuitlib.client import AuthClient
    from quickbooks import QuickBooks
    from quickbooks.exceptions import AuthorizationException, ValidationException
    from quickbooks.objects.base import LinkedTxn, Ref
    from quickbooks.objects.payment import Payment, PaymentLine

    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"  # the sandbox speaks plain http
    base = url + "/quickbooks"
    auth = AuthClient(
        creds["client_id"],
        creds["client_secret"],
        "http://localhost/callback",
        base + "/.well-known/openid_configuration",
    )
    qb = QuickBooks(
        auth_client=auth,
        refresh_token=creds["refresh_token"],
        company_id=creds["tenant"],
        minorversion=75,
        use_decimal=True,
    )
    qb.api_url_v3 = base + "/v3"

    def pay(doc: dict[str, Any], key: str) -> None:
        payment = Payment()
        payment.TotalAmt = AMOUNT
        customer = Ref()
        customer.value = doc["contact"]
        payment.CustomerRef = customer
        line = PaymentLine()
        line.Amount = AMOUNT
        link = LinkedTxn()
        link.TxnId = doc["id"]
        link.TxnType = "Invoice"
        line.LinkedTxn.append(link)
        payment.Line.append(line)
        for _ in range(100):
            try:
                payment.save(qb=qb, request_id=key)
                return
            except ValidationException as exc:
                if exc.error_code != 3001:  # ThrottleExceeded (429)
                    raise
                time.sleep(window / 4)
            except AuthorizationException:  # the access token ran out (time-scaled)
                auth.refresh(refresh_token=qb.refresh_token)
                qb.refresh_token = auth.refresh_token
                qb._start_session()
        raise RuntimeError("still refused after 100 tries")

    return pay, lambda: None


# ================================================================ the report


def ceiling_per_window(provider: str, latency_ms: float, scale: float) -> float:
    """Allocations per provider-minute the provider allows."""
    if provider == "netsuite":
        real_latency = latency_ms / scale
        return NETSUITE_CONCURRENCY * (60.0 / scale) / (real_latency / 1000.0)
    return float(WINDOW_CEILING[provider])


def _f(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    """Run every phase for every provider and print the table and the verdicts."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--serve":
        serve(Path(args[1]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    parser.add_argument("--n", type=int, default=2000, help="allocations, limits off")
    parser.add_argument(
        "--m", type=int, default=None, help="allocations, limits on (default: 2 windows)"
    )
    parser.add_argument("--time-scale", type=float, default=60.0)
    parser.add_argument("--netsuite-latency-ms", type=float, default=1000.0, help="nominal")
    parser.add_argument("--skip-sdk", action="store_true")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL admin URL (--db postgres)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per push, seconds")
    parser.add_argument("--log-level", default="WARNING")
    opts = parser.parse_args(args)

    from rich.console import Console
    from rich.table import Table

    from connector.config import load_settings
    from connector.logging import configure_logging
    from connector.store import Store

    configure_logging(opts.log_level, "console")
    console = Console(width=220)
    scale, latency = opts.time_scale, opts.netsuite_latency_ms
    results: dict[str, dict[str, Phase | None]] = {}
    notes: list[str] = []
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sb = Sandbox(tmp)
        try:
            with (
                scratch_pg(opts.pg)
                if opts.db == "postgres"
                else nullcontext(f"sqlite:///{tmp / 'bench.db'}")
            ) as db_url:
                settings = load_settings(sb.config)
                store = Store(db_url)
                store.upgrade()
                try:
                    for provider in opts.providers:
                        ceiling = ceiling_per_window(provider, latency, scale)
                        m = opts.m if opts.m is not None else max(opts.n, math.ceil(2 * ceiling))
                        console.print(f"[dim]{provider}: limits off, {opts.n} allocations…[/]")
                        row: dict[str, Phase | None] = {}
                        row["off"] = engine_phase(
                            sb, settings, store, provider, opts.n,
                            limits=False, scale=scale, latency_ms=latency, timeout=opts.timeout,
                        )  # fmt: skip
                        sdk = provider != "netsuite" and not opts.skip_sdk
                        row["sdk_off"] = (
                            sdk_phase(sb, provider, opts.n, limits=False, scale=scale)
                            if sdk
                            else None
                        )
                        console.print(f"[dim]{provider}: limits on x{scale:g}, {m} allocations…[/]")
                        row["on"] = engine_phase(
                            sb, settings, store, provider, m,
                            limits=True, scale=scale, latency_ms=latency, timeout=opts.timeout,
                        )  # fmt: skip
                        row["sdk_on"] = (
                            sdk_phase(sb, provider, min(m, opts.n), limits=True, scale=scale)
                            if sdk
                            else None
                        )
                        for phase in row.values():
                            if phase is not None:
                                notes += phase.notes
                        results[provider] = row
                finally:
                    store.dispose()
        finally:
            sb.close()
    wall = time.perf_counter() - wall

    table = Table(
        title=(
            f"Push: engine vs one-call-per-payment SDK loop ({opts.db}; limits on = real "
            f"limits x{scale:g}; NetSuite write latency {latency:g} ms nominal)"
        )
    )
    headers = [
        "provider", "limits", "allocs", "intake s", "push s", "alloc/s", "CPU ms/alloc",
        "req/alloc", "429s", "failed", "dups", "ceiling/min", "windows", "reached/min", "share",
        "SDK alloc/s", "SDK 429s", "x SDK",
    ]  # fmt: skip
    for name in headers:
        table.add_column(name, justify="left" if name in {"provider", "limits"} else "right")
    verdicts: dict[str, list[tuple[str, bool, str]]] = defaultdict(list)
    for provider, row in results.items():
        ceiling = ceiling_per_window(provider, latency, scale)
        for mode in ("off", "on"):
            ours = row[mode]
            assert ours is not None
            sdk = row[f"sdk_{mode}"]
            reached = ours.per_window()
            fallback = provider != "netsuite" and ours.windows_charged is None
            if mode == "on":
                share = reached / ceiling
                ceiling_cells = [
                    _f(ceiling),
                    f"{ours.windows_charged:.2f}" if ours.windows_charged else "-",
                    _f(reached) + ("*" if fallback else ""),
                    f"{100 * share:.1f} %" + ("*" if fallback else ""),
                ]
            else:
                ceiling_cells = ["-", "-", "-", "-"]
            if sdk is None:
                sdk_cells = ["n/a", "n/a", "n/a"]
                ratio = None
            else:
                if mode == "on":  # per provider window charged, like for like
                    sdk_rate = sdk.per_window() / sdk.window_seconds
                    ratio = reached / sdk.per_window() if sdk.per_window() else math.inf
                else:
                    sdk_rate = sdk.rate
                    ratio = ours.rate / sdk_rate if sdk_rate else math.inf
                bad = sdk.failed + sdk.duplicates
                sdk_cells = [
                    _f(sdk_rate, 1) + (f" ({bad} bad)" if bad else ""),
                    str(sdk.throttled),
                    f"{ratio:,.1f}x",
                ]
            table.add_row(
                provider,
                mode,
                _f(ours.allocations),
                f"{ours.intake_seconds:.2f}",
                f"{ours.seconds:.2f}",
                _f(ours.rate),
                f"{1000 * ours.cpu / ours.allocations:.3f}",
                f"{ours.requests / ours.allocations:.3f}",
                str(ours.throttled),
                str(ours.failed),
                str(ours.duplicates),
                *ceiling_cells,
                *sdk_cells,
            )
            clean = ours.failed == 0 and ours.duplicates == 0
            if mode == "off":
                cpu_ms = 1000 * ours.cpu / ours.allocations
                verdicts["≥ 1,000 allocations/s, limits off"].append(
                    (provider, ours.rate >= 1000, f"{ours.rate:,.0f}/s")
                )
                verdicts["≤ 1 ms CPU per allocation, limits off"].append(
                    (provider, cpu_ms <= 1.0, f"{cpu_ms:.2f} ms")
                )
                verdicts["0 failed, 0 duplicates, limits off"].append(
                    (provider, clean, f"{ours.failed} failed, {ours.duplicates} dups")
                )
            else:
                share = reached / ceiling
                verdicts["≥ 95 % of the ceiling and 0 failed, limits on"].append(
                    (
                        provider,
                        share >= 0.95 and clean,
                        f"{100 * share:.1f} %{'*' if fallback else ''}, "
                        f"{ours.failed} failed, {ours.duplicates} dups, {ours.throttled} 429s",
                    )
                )
            if ratio is not None:
                verdicts[f"≥ 20x the SDK loop, limits {mode}"].append(
                    (provider, ratio >= 20, f"{ratio:,.1f}x")
                )
    console.print(table)
    console.print(
        "reached/min: allocations per provider window charged (whole windows from the push's"
        " first to its last, the last by the share of its request quota used; NetSuite: end"
        " to end; * = no quota seen, end to end). x SDK: ours / SDK in alloc/s (limits on:"
        " per window charged). NetSuite SDK n/a: Oracle ships no official Python SDK for"
        f" NetSuite. Wall clock {wall:.0f} s."
    )
    for note in notes:
        console.print(f"note: {note}")
    for target, items in verdicts.items():
        met = all(ok for _, ok, _ in items)
        figures = ", ".join(f"{p} {text}{'' if ok else ' ✗'}" for p, ok, text in items)
        console.print(f"{'MET    ' if met else 'NOT MET'}  {target}: {figures}")


if __name__ == "__main__":
    main()
