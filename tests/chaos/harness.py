"""The push chaos harness: the sandbox ledgers, a seeded plan, faults, crashes, checks.

One :class:`World` serves a :class:`~connector.sandbox.SandboxState` with several
organisations on each of Xero, QuickBooks and NetSuite over real HTTP, one connection
per organisation. :func:`build_plan` seeds documents through the ledgers' test APIs
(invoices and bills; USD, EUR, GBP and on Xero JPY; open, partly paid, paid, draft or
void) and a shuffled list of allocations on them: full, split, overlapping (together
more than the document owes), the remainder of a partly paid one, over the balance, on
paid and on unpayable documents. :func:`run_chaos` then

1. takes the allocations in, in waves, while workers run, one by one or in bulk per
   connection (the caller re-sends some under the same key, and retries what a parked
   or rate-limited connection could not take yet),
2. runs workers, each a new :class:`PushEngine` that half the time is built to crash
   at a recovery point (``crash_at``; the point that has fired least so far): what it
   had in memory is gone, the next worker starts from the store once the clock passed
   the lease,
3. lets the sandbox fault ~29 % of writes (every kind it has, each also forced once;
   counted on the sandbox side), and plays the operator who reconnects a connection
   the ledger revoked (new grant or certificate, new config, one read),
4. at quiescence checks that nothing is silently pending, heals the faults, drives the
   rest to a final state, checks that a reused key is refused, and runs
   ``connector.sync.reconcile.reconcile()`` when that module exists,

and :func:`check_invariants` asserts RELIABILITY.md §9 against the ledgers' own state
(the sandbox's ledger objects, never our logs or tables).

Replay: both clocks are frozen at a fixed instant and move only when the harness
advances them, ids come from the seed, and in serial mode one request is in flight at
a time, so a seed replays the same run (on SQLite). In parallel mode the same plan,
fault draws and crash schedule replay, the threads' interleaving does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import itertools
import random
import re
import threading
import time
import tomllib
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from sqlmodel import col, select

from connector.adapters.base import Adapter, build_adapter
from connector.config import Settings, parse_settings
from connector.errors import ConnectorError
from connector.sandbox import SandboxServer, SandboxState, write_config
from connector.sandbox.clock import Clock as SandboxClock
from connector.sandbox.faults import FAULT_NAMES, FaultDecision
from connector.state import TERMINAL, ConnectionRecord, PaymentIntent
from connector.store import Store
from connector.sync import push as push_module
from connector.sync.push import (
    AllocationRequest,
    IntakeError,
    IntakeRejected,
    IntakeResult,
    PushEngine,
    SimulatedCrash,
)

__all__ = [
    "CHAOS_FAULTS",
    "REQUIRED_FAULTS",
    "ChaosConfig",
    "ChaosRun",
    "FrozenClock",
    "Planned",
    "Verdict",
    "World",
    "build_plan",
    "check_invariants",
    "crash_points",
    "fault_share",
    "ledger_state",
    "run_chaos",
    "summary",
]

#: Per-write probability of each fault while the chaos runs. The sandbox draws them in
#: FAULT_NAMES order, at most one per write: together they fault ~29 % of writes (so a
#: run's share stays above 20 % even with a few hundred writes). ``token_revoked`` parks
#: a whole connection until the operator reconnects it, so it is the rarest. On top of
#: these, each kind is forced once early in the run (``<fault>_next``).
CHAOS_FAULTS: dict[str, float] = {
    "token_revoked": 0.006,
    "rate_limit": 0.045,
    "error_before_commit": 0.045,
    "drop_before_commit": 0.025,
    "paid_elsewhere": 0.03,
    "concurrent_edit": 0.045,
    "ignore_idempotency": 0.05,
    "drop_after_commit": 0.06,
    "error_500_after_commit": 0.035,
}
#: The faults the issue names; the run must have injected each at least once.
REQUIRED_FAULTS = (
    "drop_after_commit",
    "error_before_commit",
    "rate_limit",
    "concurrent_edit",
    "paid_elsewhere",
    "token_revoked",
    "ignore_idempotency",
)
#: Recovery points every engine version must offer (more are picked up from the source).
BASE_CRASH_POINTS = ("after_claim", "after_store", "after_send", "after_apply")
#: Error-level events a run is expected to log: a revoked app parks its connection.
EXPECTED_ERROR_EVENTS = frozenset({"connection_parked"})
MARKER = re.compile(r"\bcx-[0-9a-f]{16}\b")
PROVIDERS = ("xero", "quickbooks", "netsuite")
KINDS = ("invoice", "bill")
CURRENCIES: dict[str, tuple[str, ...]] = {
    "xero": ("USD", "USD", "EUR", "GBP", "JPY"),
    "quickbooks": ("USD", "USD", "EUR", "GBP"),
    "netsuite": ("USD", "USD", "EUR", "GBP"),
}
ZERO = Decimal(0)
START = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)  # a Monday morning


def crash_points() -> list[str]:
    """Every recovery point ``PushEngine`` checks (read from its source, so new ones count)."""
    source = inspect.getsource(push_module)
    found = sorted(set(re.findall(r"_checkpoint\(\s*[\"'](\w+)[\"']", source)))
    missing = [p for p in BASE_CRASH_POINTS if p not in found]
    assert not missing, f"push.py no longer offers the recovery points {missing}"
    return found


def places(currency: str) -> int:
    return 0 if currency == "JPY" else 2


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-places(currency))


class FrozenClock:
    """The engine's clock: a fixed start plus what the test advanced (so runs replay)."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


# ---------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Planned:
    """One allocation the caller will send, and what it is meant to exercise."""

    n: int
    connection_id: str
    provider: str
    kind: str
    document: str  # the ledger's id of the document
    currency: str
    amount: Decimal
    key: str
    category: str  # full | split | overlap | remainder | over | paid_doc | not_payable

    def request(self, amount: Decimal | None = None) -> AllocationRequest:
        return AllocationRequest(
            connection_id=self.connection_id,
            document=self.document,
            amount=self.amount if amount is None else amount,
            idempotency_key=self.key,
            document_type=self.kind,
        )


@dataclass(frozen=True)
class ChaosConfig:
    seed: int
    allocations: int = 2000
    faults: Mapping[str, float] = field(default_factory=lambda: dict(CHAOS_FAULTS))
    crash_rate: float = 0.5  # share of workers built with a crash point
    redelivery_rate: float = 0.06  # allocations the caller sends twice
    misuse_checks: int = 20  # keys re-sent with another amount (must be refused)
    waves: int = 0  # 0: one wave per 60 allocations
    lease: timedelta = timedelta(seconds=120)


# ---------------------------------------------------------------------------- the world
class World:
    """The sandbox (three ledgers on one server), the config, the store and the clocks."""

    def __init__(
        self, seed: int, db_url: str, tmp_path: Path, *, tenants: int = 3, serial: bool = True
    ) -> None:
        # A fixed instant: the ledgers' rate-limit windows are anchored to their clock, so
        # a start at "now" would move every window between two runs of the same seed.
        start = START
        self.seed = seed
        # Serial: one request in flight at a time (one connection at a time, each adapter
        # at concurrency 1), so the sandbox draws its faults in a replayable order.
        self.serial = serial
        self.tmp_path = tmp_path
        self.sandbox_clock = SandboxClock(frozen_at=start)
        self.clock = FrozenClock(start)
        # Several organisations per ledger: a sandbox ledger's reads slow down as its
        # books grow (NetSuite's SuiteQL most), and a connector serves many tenants.
        self.state = SandboxState(
            seed=seed,
            tenants=tenants,
            invoices=4,
            bills=2,
            rate_limits=False,
            clock=self.sandbox_clock,
        )
        self.server = SandboxServer(self.state, host="127.0.0.1", port=0).start()
        self.store = Store(db_url)
        self.store.upgrade()
        self.db_url = db_url
        self._tables = self._initial_tables()
        self.settings = self._settings()
        self.reconnects: Counter[str] = Counter()
        self.fault_counts: Counter[str] = Counter()
        self.writes = 0
        self.engine_errors: Counter[str] = Counter()
        self.error_samples: list[str] = []

    # -- config ------------------------------------------------------------------
    def _initial_tables(self) -> dict[str, dict[str, Any]]:
        path = write_config(self.state, self.tmp_path / "connector.toml", base_url=self.server.url)
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        tables: dict[str, dict[str, Any]] = {}
        for table in raw["connections"]:
            # Rate limits are rescheduled, never slept through (the clock is ours).
            tables[table["id"]] = {**table, "max_inline_wait_seconds": 0}
        assert {t["provider"] for t in tables.values()} == set(PROVIDERS)
        return tables

    def _settings(self) -> Settings:
        raw = {
            "database": {"url": self.db_url},
            "security": {"encrypt_tokens": "off"},
            "connections": list(self._tables.values()),
        }
        return parse_settings(raw, self.tmp_path / "connector.toml")

    @property
    def connection_ids(self) -> list[str]:
        return [c.id for c in self.settings.connections]

    def _adapter(self, connection_id: str) -> Adapter:
        adapter = build_adapter(
            self.settings.connection(connection_id), self.store, clock=self.clock
        )
        if self.serial:
            adapter.capabilities = dataclasses.replace(adapter.capabilities, concurrency=1)
        return adapter

    def engine(
        self, worker_id: str, crash_at: tuple[str, ...] = (), lease: timedelta | None = None
    ) -> PushEngine:
        """A new worker (as a new process would build it) on the current config."""
        return PushEngine(
            self.settings,
            self.store,
            clock=self.clock,
            worker_id=worker_id,
            adapter_factory=self._adapter,
            crash_at=crash_at,
            **({"lease": lease} if lease is not None else {}),
        )

    def connections_of(self, provider: str) -> list[str]:
        return [c.id for c in self.settings.connections if c.provider == provider]

    def tenant(self, connection_id: str) -> str:
        return self.settings.connection(connection_id).tenant

    def provider(self, connection_id: str) -> str:
        return self.settings.connection(connection_id).provider

    # -- time --------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Move our clock and the ledgers' clock together."""
        self.clock.advance(seconds)
        self.sandbox_clock.advance(seconds)

    # -- faults ------------------------------------------------------------------
    @contextmanager
    def counting_faults(self) -> Iterator[None]:
        """Count, on the sandbox side, every write's fault decision."""
        faults = self.state.faults
        original = faults.draw

        def draw() -> FaultDecision:
            decision = original()
            self.writes += 1
            if decision.chosen is not None:
                self.fault_counts[decision.chosen] += 1
            return decision

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(faults, "draw", draw)
            yield

    @contextmanager
    def quiet_logs(self) -> Iterator[None]:
        """Drop the engine's log lines (thousands per run); count its error-level events."""
        saved = structlog.get_config()

        lock = threading.Lock()

        def capture(logger: Any, method: str, event: Any) -> Any:
            if method in ("error", "exception", "critical"):
                name = str(event.get("event"))
                detail = event.get("error") or event.get("reason") or ""
                with lock:
                    self.engine_errors[name] += 1
                    if len(self.error_samples) < 20:
                        self.error_samples.append(f"{name}: {detail}"[:300])
            raise structlog.DropEvent

        structlog.configure(processors=[capture], cache_logger_on_first_use=False)
        try:
            yield
        finally:
            structlog.configure(**saved)

    @contextmanager
    def seeded_uuids(self) -> Iterator[None]:
        """Intent, batch and key ids from the seed: claim and batch order replay too."""
        rng = random.Random(f"uuid:{self.seed}")
        lock = threading.Lock()

        def uuid4() -> uuid.UUID:
            with lock:
                return uuid.UUID(int=rng.getrandbits(128), version=4)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(uuid, "uuid4", uuid4)
            yield

    # -- the operator ------------------------------------------------------------
    def parked(self) -> list[str]:
        with self.store.session() as s:
            rows = s.exec(
                select(ConnectionRecord.id).where(ConnectionRecord.status == "needs_reauth")
            ).all()
        return sorted(rows)

    def reconnect(self, connection_id: str, probe: tuple[str, str]) -> None:
        """What a person does after the ledger revoked the app: connect it again.

        A new grant (Xero, QuickBooks) or a new certificate mapping (NetSuite) in the
        ledger, its credentials in the config, and one read through the connector so
        the connection picks the new credentials up.
        """
        table = self._tables[connection_id]
        provider = table["provider"]
        tenant = self.settings.connection(connection_id).tenant
        n = self.reconnects[connection_id] + 1
        if provider == "xero":
            self.state.xero.auth.add_grant(f"chaos-regrant-{connection_id}-{n}", [tenant])
            table["refresh_token"] = self.state.xero.refresh_token_for(tenant)
        elif provider == "quickbooks":
            qbo = self.state.quickbooks
            assert qbo is not None
            qbo.auth.add_grant(tenant)
            table["refresh_token"] = qbo.refresh_token_for(tenant)
        else:
            ns = self.state.netsuite
            assert ns is not None
            ns.reauthorize(tenant)
            private = serialization.load_pem_private_key(
                ns.credentials(tenant)["private_key_pem"].encode("ascii"), password=None
            )
            public = private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            table["certificate_id"] = ns.register_certificate(tenant, public)
        self.settings = self._settings()
        self.reconnects[connection_id] = n
        adapter = self._adapter(connection_id)
        try:
            adapter.get_document(probe[1], probe[0])
        finally:
            adapter.close()

    def close(self) -> None:
        self.server.stop()
        self.state.close()
        self.store.dispose()


# ---------------------------------------------------------------------------- documents
def _random_total(rng: random.Random, currency: str) -> Decimal:
    if currency == "JPY":
        return Decimal(rng.randint(50, 20_000) * 10)
    return Decimal(rng.randint(5_000, 250_000)).scaleb(-2)


def _split(rng: random.Random, total: Decimal, parts: int, currency: str) -> list[Decimal]:
    """``parts`` positive amounts that add up to ``total`` exactly."""
    q = quantum(currency)
    units = int(total / q)
    cuts = sorted(rng.sample(range(1, units), parts - 1))
    bounds = [0, *cuts, units]
    return [Decimal(b - a) * q for a, b in itertools.pairwise(bounds)]


def _share(total: Decimal, percent: int, currency: str) -> Decimal:
    return max(quantum(currency), (total * percent / 100).quantize(quantum(currency)))


class DocumentMaker:
    """Creates documents in the three ledgers through their test APIs."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        state = world.state
        assert state.quickbooks is not None and state.netsuite is not None
        # QuickBooks and NetSuite seed customers/vendors in USD and EUR only: add GBP ones.
        for connection_id in world.connections_of("quickbooks"):
            for entity in ("Customer", "Vendor"):
                state.quickbooks.write(
                    world.tenant(connection_id),
                    entity,
                    "create",
                    {"DisplayName": f"Chaos {entity} GBP", "CurrencyRef": {"value": "GBP"}},
                )
        for connection_id in world.connections_of("netsuite"):
            account = world.tenant(connection_id)
            currencies = state.netsuite.currencies(account)
            gbp = next(c["id"] for c in currencies if c["symbol"] == "GBP")
            for entity in ("customer", "vendor"):
                state.netsuite.upsert_entity(
                    account,
                    entity,
                    f"chaos-{entity}-gbp",
                    {"companyName": f"Chaos {entity} GBP", "currency": {"id": gbp}},
                )

    def make(
        self,
        connection_id: str,
        kind: str,
        currency: str,
        total: Decimal,
        paid: Decimal,
        payable: bool,
    ) -> str | None:
        """A new document; its id, or None if the ledger cannot have such a document."""
        world, state = self.world, self.world.state
        tenant = world.tenant(connection_id)
        provider = world.provider(connection_id)
        if provider == "xero":
            status = "AUTHORISED" if payable else self.rng.choice(["DRAFT", "SUBMITTED", "VOIDED"])
            doc = state.xero.add_invoice(
                tenant,
                status=status,
                total=total,
                amount_paid=paid,
                currency=currency,
                type="ACCPAY" if kind == "bill" else "ACCREC",
            )
            return str(doc["InvoiceID"])
        if provider == "quickbooks":
            qbo = state.quickbooks
            assert qbo is not None
            if not payable and kind == "bill":
                return None  # QuickBooks bills have no draft or void state
            add = qbo.add_bill if kind == "bill" else qbo.add_invoice
            doc = add(tenant, total=total, balance=total - paid, currency=currency)
            if not payable:
                qbo.void_invoice(tenant, doc["Id"])
            return str(doc["Id"])
        ns = state.netsuite
        assert ns is not None
        add_ns = ns.add_bill if kind == "bill" else ns.add_invoice
        doc = add_ns(
            tenant,
            total=total,
            amount_remaining=total - paid,
            currency=currency,
            status="A" if payable else "D",
        )
        return str(doc["id"])


#: (category, weight): how documents (and the allocations on them) are drawn.
_GROUPS = (
    ("full", 24),
    ("split", 30),
    ("overlap", 14),
    ("remainder", 10),
    ("over", 8),
    ("paid_doc", 7),
    ("not_payable", 7),
)


def build_plan(world: World, cfg: ChaosConfig) -> list[Planned]:
    """Seed documents in every ledger and plan ``cfg.allocations`` allocations on them."""
    rng = random.Random(f"plan:{cfg.seed}")
    maker = DocumentMaker(world, rng)
    buckets = [(c, k) for p in PROVIDERS for c in world.connections_of(p) for k in KINDS]
    per_bucket = [cfg.allocations // len(buckets)] * len(buckets)
    for i in range(cfg.allocations - sum(per_bucket)):
        per_bucket[i] += 1
    plan: list[Planned] = []
    categories, weights = zip(*_GROUPS, strict=True)
    for (conn, kind), budget in zip(buckets, per_bucket, strict=True):
        provider = world.provider(conn)
        made = 0
        while made < budget:
            category = rng.choices(categories, weights)[0]
            currency = rng.choice(CURRENCIES[provider])
            total = _random_total(rng, currency)
            paid = ZERO
            payable = True
            if category == "full":
                amounts = [total]
            elif category == "split":
                amounts = _split(rng, total, rng.randint(2, 4), currency)
            elif category == "overlap":
                # Together more than the document owes: the ledger must refuse the excess.
                amounts = [_share(total, rng.randint(35, 75), currency) for _ in range(3)]
            elif category == "remainder":
                paid = _share(total, rng.randint(10, 80), currency)
                amounts = [total - paid]
            elif category == "over":
                amounts = [total + _share(total, rng.randint(1, 50), currency)]
            elif category == "paid_doc":
                paid = total
                amounts = [_share(total, rng.randint(10, 100), currency)]
            else:
                payable = False
                amounts = [_share(total, rng.randint(10, 100), currency)]
            amounts = amounts[: budget - made]
            doc = maker.make(conn, kind, currency, total, paid, payable)
            if doc is None:
                continue
            for amount in amounts:
                n = len(plan)
                plan.append(
                    Planned(
                        n=n,
                        connection_id=conn,
                        provider=provider,
                        kind=kind,
                        document=doc,
                        currency=currency,
                        amount=amount,
                        key=f"chaos-{cfg.seed}-{n}",
                        category=category,
                    )
                )
                made += 1
    rng.shuffle(plan)
    return plan


# ---------------------------------------------------------------------------- the run
@dataclass
class ChaosRun:
    """What happened, for the summary line and the checks."""

    seed: int
    plan: list[Planned]
    intent_of: dict[str, str] = field(default_factory=dict)  # caller key → intent id
    redeliveries: int = 0
    redelivery_mismatches: list[str] = field(default_factory=list)
    misuse_refused: int = 0
    misuse_problems: list[str] = field(default_factory=list)
    intake_refusals: Counter[str] = field(default_factory=Counter)
    intake_problems: list[str] = field(default_factory=list)
    crashes: Counter[str] = field(default_factory=Counter)
    workers: int = 0
    rounds: int = 0
    heal_rounds: int = 0
    silently_pending: list[str] = field(default_factory=list)
    reconcile_summary: str = "n/a"
    reconcile_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.phase_seconds[phase] += time.monotonic() - started


def _intake(
    world: World, run: ChaosRun, items: list[Planned], redelivered: set[int], rng: random.Random
) -> list[Planned]:
    """Send allocations to intake, one by one or in bulk per connection (as callers do).

    Returns those the connector could not take yet (its connection is parked: the
    caller retries later).
    """
    engine = world.engine("intake")
    left: list[Planned] = []
    try:
        by_conn: dict[str, list[Planned]] = defaultdict(list)
        for item in items:
            by_conn[item.connection_id].append(item)
        for connection_id in sorted(by_conn):
            queue = by_conn[connection_id]
            while queue:
                size = 1 if rng.random() < 0.3 else rng.randint(2, 60)
                chunk, queue = queue[:size], queue[size:]
                world.advance(0.001)  # distinct created_at per call: claim order replays
                left += _intake_chunk(engine, run, chunk, redelivered)
    finally:
        engine.close()
    return left


def _intake_chunk(
    engine: PushEngine, run: ChaosRun, chunk: list[Planned], redelivered: set[int]
) -> list[Planned]:
    try:
        if len(chunk) == 1:
            results = [engine.intake(chunk[0].request())]
        else:
            results = engine.intake_many([item.request() for item in chunk])
    except IntakeError as exc:
        refused: list[tuple[int, IntakeError]] = [(0, exc)]
    except IntakeRejected as exc:
        refused = exc.errors
    else:
        for item, result in zip(chunk, results, strict=True):
            _record_intake(run, item, result, redelivered)
        return []
    # Nothing of the call was stored: retry it later, less what cannot ever be taken.
    bad = set()
    for index, error in refused:
        run.intake_refusals[error.code] += 1
        if error.code != "provider_unavailable":
            item = chunk[index]
            run.intake_problems.append(f"#{item.n} {item.category}: {error.code} {error}")
            bad.add(index)
    return [item for i, item in enumerate(chunk) if i not in bad]


def _record_intake(
    run: ChaosRun, item: Planned, result: IntakeResult, redelivered: set[int]
) -> None:
    known = run.intent_of.get(item.key)
    if known is None:
        run.intent_of[item.key] = result.intent.id
        return
    run.redeliveries += item.n in redelivered
    if result.created or result.intent.id != known:
        run.redelivery_mismatches.append(
            f"key {item.key}: re-delivery made intent {result.intent.id} "
            f"(created={result.created}), first was {known}"
        )


def _worker(
    world: World, run: ChaosRun, cfg: ChaosConfig, rng: random.Random, points: list[str]
) -> int:
    """One round of workers; how many intents they claimed, or -1 if one crashed.

    Serial: one worker, one connection after another. Otherwise one to three workers
    at once (as overlapping scheduler runs or daemons would be), each running the
    engine with its own parallelism; they meet only in the store's claims.
    """
    count = 1 if world.serial else rng.randint(1, 3)
    jobs: list[tuple[tuple[str, ...], list[tuple[list[str] | None, int]]]] = []
    for _ in range(count):
        crash: tuple[str, ...] = ()
        if rng.random() < cfg.crash_rate:
            # The point that has killed fewest workers so far: every point gets its turn.
            fewest = min(run.crashes[p] for p in points)
            crash = (rng.choice([p for p in points if run.crashes[p] == fewest]),)
        if world.serial:
            order = list(world.connection_ids)
            rng.shuffle(order)
            steps: list[tuple[list[str] | None, int]] = [
                ([cid], rng.randint(5, 50)) for cid in order
            ]
        else:
            steps = [(None, rng.randint(15, 240))]
        jobs.append((crash, steps))
    engines = [
        world.engine(f"w{run.workers + i}", crash, cfg.lease) for i, (crash, _) in enumerate(jobs)
    ]
    run.workers += len(engines)
    with run.timed("workers"):
        if len(engines) == 1:
            results = [_drive(engines[0], jobs[0][1])]
        else:
            with ThreadPoolExecutor(max_workers=len(engines)) as pool:
                futures = [
                    pool.submit(_drive, e, job[1]) for e, job in zip(engines, jobs, strict=True)
                ]
                results = [f.result() for f in futures]
    crashed = [name for _, name in results if name is not None]
    for name in crashed:
        run.crashes[name] += 1
    return -1 if crashed else sum(touched for touched, _ in results)


def _drive(engine: PushEngine, steps: list[tuple[list[str] | None, int]]) -> tuple[int, str | None]:
    """Run one worker's steps; (intents claimed, the recovery point it died at or None)."""
    touched = 0
    try:
        for connection_ids, limit in steps:
            touched += sum(engine.run_once(connection_ids=connection_ids, limit=limit).values())
    except SimulatedCrash as exc:
        # The process died here: nothing in memory survives. Closing the sockets is
        # what the OS does for a dead process; the store is left exactly as it was.
        return touched, str(exc)
    finally:
        engine.close()
    return touched, None


def _intents(world: World) -> list[PaymentIntent]:
    with world.store.session() as s:
        return list(s.exec(select(PaymentIntent).order_by(col(PaymentIntent.created_at))).all())


def _probe_of(plan: list[Planned]) -> dict[str, tuple[str, str]]:
    probe: dict[str, tuple[str, str]] = {}
    for item in plan:
        probe.setdefault(item.connection_id, (item.kind, item.document))
    return probe


def _operator(
    world: World, rng: random.Random, probe: dict[str, tuple[str, str]], eager: bool
) -> None:
    """A person notices a parked connection (not always at once) and reconnects it."""
    for connection_id in world.parked():
        if eager or rng.random() < 0.5:
            # A failed probe read leaves the connection to the next round.
            with contextlib.suppress(ConnectorError):
                world.reconnect(connection_id, probe[connection_id])


def run_chaos(world: World, cfg: ChaosConfig, plan: list[Planned]) -> ChaosRun:
    """Drive the plan through faults and crashes to quiescence, then heal and reconcile."""
    started = time.monotonic()
    rng = random.Random(f"run:{cfg.seed}")
    run = ChaosRun(seed=cfg.seed, plan=plan)
    try:
        with world.quiet_logs(), world.seeded_uuids():
            _run(world, cfg, plan, run, rng)
    finally:
        run.seconds = time.monotonic() - started
    return run


def _run(
    world: World, cfg: ChaosConfig, plan: list[Planned], run: ChaosRun, rng: random.Random
) -> None:
    points = crash_points()
    probe = _probe_of(plan)
    n_waves = cfg.waves or max(1, len(plan) // 60)
    waves: list[list[Planned]] = [plan[i::n_waves] for i in range(n_waves)]
    # Some allocations are sent again later under the same key (a caller's retry).
    again = rng.sample(plan, int(len(plan) * cfg.redelivery_rate))
    redelivered = {item.n for item in again}
    for item in again:
        waves[min(n_waves - 1, rng.randint(0, n_waves - 1) + rng.randint(0, 2))].append(item)
    outstanding: list[Planned] = []
    faults = dict(cfg.faults)
    # Every kind at least once, whatever the seed: one forced per round, early on.
    forced = [name for name in FAULT_NAMES if faults.get(name)]
    rng.shuffle(forced)
    max_rounds = 60 + len(plan) // 4
    with world.counting_faults():
        world.state.faults.update(faults)
        # -- phase 1: chaos --------------------------------------------------------------
        for round_no in range(max_rounds):
            run.rounds = round_no + 1
            if forced:
                world.state.faults.update({f"{forced.pop()}_next": 1})
            if round_no < n_waves:
                outstanding += waves[round_no]
            if outstanding:
                with run.timed("intake"):
                    outstanding = _intake(world, run, outstanding, redelivered, rng)
            touched = _worker(world, run, cfg, rng, points)
            _operator(world, rng, probe, eager=False)
            if touched < 0:
                world.advance(cfg.lease.total_seconds() + rng.randint(1, 30))  # lease runs out
            elif touched == 0:
                world.advance(rng.choice([60, 120, 301]))  # nothing due: let backoffs end
            else:
                world.advance(rng.choice([0.5, 2, 5, 15, 30]))
            if rng.random() < 0.04:
                world.advance(7 * 60)  # past Xero's idempotency-key window
            if round_no >= n_waves and not outstanding and _all_final(world):
                break
        # -- quiescence: one clean pass over everything due; then nothing may be silent ---
        world.advance(cfg.lease.total_seconds() + 1)
        with run.timed("workers"):
            _clean_pass(world, run)
        for intent in _intents(world):
            if intent.state not in TERMINAL and not intent.reason_code:
                run.silently_pending.append(f"{intent.id} {intent.state} (no reason)")
        # -- phase 2: heal ---------------------------------------------------------------
        world.state.faults.reset()
        for _ in range(40):
            _operator(world, rng, probe, eager=True)
            if outstanding:
                outstanding = _intake(world, run, outstanding, redelivered, rng)
            if not outstanding and _all_final(world):
                break
            run.heal_rounds += 1
            world.advance(301)  # past every backoff, lease and parked-connection wait
            with run.timed("heal"):
                _clean_pass(world, run)
        for item in outstanding:
            run.intake_problems.append(f"#{item.n}: never taken in ({item.key})")
        _misuse(world, run, rng, cfg)
        with run.timed("reconcile"):
            _reconcile(world, run)


def _all_final(world: World) -> bool:
    return all(i.state in TERMINAL for i in _intents(world))


def _clean_pass(world: World, run: ChaosRun) -> None:
    engine = world.engine(f"w{run.workers}")
    run.workers += 1
    try:
        if world.serial:
            for connection_id in world.connection_ids:
                engine.run_once(connection_ids=[connection_id], limit=len(run.plan) + 10)
        else:
            engine.run_once(limit=len(run.plan) + 10)
    finally:
        engine.close()


def _misuse(world: World, run: ChaosRun, rng: random.Random, cfg: ChaosConfig) -> None:
    """The same caller key with another amount is refused, and nothing is stored."""
    taken = [item for item in run.plan if item.key in run.intent_of]
    before = len(_intents(world))
    engine = world.engine("misuse")
    try:
        for item in rng.sample(taken, min(cfg.misuse_checks, len(taken))):
            try:
                engine.intake(item.request(item.amount + quantum(item.currency)))
            except IntakeError as exc:
                if exc.code == "idempotency_key_reused":
                    run.misuse_refused += 1
                    continue
                run.misuse_problems.append(f"key {item.key}: refused as {exc.code}")
                continue
            run.misuse_problems.append(f"key {item.key}: another amount was accepted")
    finally:
        engine.close()
    if len(_intents(world)) != before:
        run.misuse_problems.append("a misused key stored a new intent")


def _reconcile(world: World, run: ChaosRun) -> None:
    """``connector.sync.reconcile.reconcile()`` when it exists (it may not yet)."""
    if importlib.util.find_spec("connector.sync.reconcile") is None:
        return
    module = importlib.import_module("connector.sync.reconcile")
    report = module.reconcile(world.settings, world.store, clock=world.clock, seed=world.seed)
    lines = getattr(report, "connections", [])
    zero = sum(1 for c in lines if getattr(c.clearing, "is_zero", False))
    run.reconcile_summary = (
        f"ok={report.ok} complete={getattr(report, 'complete', '?')} "
        f"clearing zero on {zero}/{len(lines)} connections"
    )
    if not report.ok or not getattr(report, "complete", True):
        # After healing nothing may be found, still open, or left unchecked.
        run.reconcile_problems.append(f"reconcile not ok/complete: {report!r}"[:2000])


# ---------------------------------------------------------------------------- the ledgers
@dataclass(frozen=True)
class LedgerPayment:
    connection_id: str
    payment_id: str
    reference: str
    live: bool
    applied: tuple[tuple[str, Decimal], ...]  # (document id, amount)

    @property
    def amount(self) -> Decimal:
        return sum((a for _, a in self.applied), ZERO)

    @property
    def markers(self) -> list[str]:
        return MARKER.findall(self.reference)


@dataclass(frozen=True)
class LedgerDocument:
    connection_id: str
    doc_id: str
    total: Decimal
    balance: Decimal


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


def ledger_state(world: World) -> tuple[list[LedgerDocument], list[LedgerPayment]]:
    """Every document and payment, read straight from the sandbox ledgers' own state."""
    docs: list[LedgerDocument] = []
    pays: list[LedgerPayment] = []
    for connection_id in world.connection_ids:
        reader = {"xero": _xero_state, "quickbooks": _qbo_state, "netsuite": _netsuite_state}
        reader[world.provider(connection_id)](world, connection_id, docs, pays)
    return docs, pays


def _xero_state(
    world: World, cid: str, docs: list[LedgerDocument], pays: list[LedgerPayment]
) -> None:
    xero, tenant = world.state.xero, world.tenant(cid)
    for inv in xero.invoices(tenant):
        if inv["Status"] not in ("VOIDED", "DELETED"):
            doc_id = str(inv["InvoiceID"]).lower()
            docs.append(LedgerDocument(cid, doc_id, _dec(inv["Total"]), _dec(inv["AmountDue"])))
    for p in xero.payments(tenant, include_deleted=True):
        applied = ((str(p["Invoice"]["InvoiceID"]).lower(), _dec(p["Amount"])),)
        live = p["Status"] != "DELETED"
        pays.append(
            LedgerPayment(cid, str(p["PaymentID"]), str(p.get("Reference") or ""), live, applied)
        )


def _qbo_state(
    world: World, cid: str, docs: list[LedgerDocument], pays: list[LedgerPayment]
) -> None:
    qbo, realm = world.state.quickbooks, world.tenant(cid)
    assert qbo is not None
    for rec in [*qbo.invoices(realm), *qbo.bills(realm)]:
        docs.append(
            LedgerDocument(cid, str(rec["Id"]), _dec(rec["TotalAmt"]), _dec(rec["Balance"]))
        )
    for rec in [
        *qbo.payments(realm, include_deleted=True),
        *qbo.bill_payments(realm, include_deleted=True),
    ]:
        note = str(rec.get("PrivateNote") or "")
        applied = tuple(
            (str(link["TxnId"]), _dec(line["Amount"]))
            for line in rec.get("Line", [])
            for link in line.get("LinkedTxn", [])
            if link.get("TxnType") in ("Invoice", "Bill")
        )
        live = rec.get("status") != "Deleted" and not note.startswith("Voided")
        pays.append(LedgerPayment(cid, str(rec["Id"]), note, live, applied))


def _netsuite_state(
    world: World, cid: str, docs: list[LedgerDocument], pays: list[LedgerPayment]
) -> None:
    ns, account = world.state.netsuite, world.tenant(cid)
    assert ns is not None
    for rec in [*ns.invoices(account), *ns.bills(account)]:
        remaining = ns.open_amount(account, rec["id"])
        docs.append(LedgerDocument(cid, str(rec["id"]), _dec(rec["total"]), remaining))
    for rec in [
        *ns.customer_payments(account, include_deleted=True),
        *ns.vendor_payments(account, include_deleted=True),
    ]:
        applied = tuple(
            (str(item["doc"]["id"]), _dec(item["amount"]))
            for item in rec["apply"]["items"]
            if item.get("apply", True)
        )
        live = "sandboxDeletedDate" not in rec
        pays.append(LedgerPayment(cid, str(rec["id"]), str(rec.get("memo") or ""), live, applied))


# ---------------------------------------------------------------------------- invariants
@dataclass
class Verdict:
    """The invariants' outcome: counts for the summary and the violations found."""

    duplicates: int = 0
    lost: int = 0
    orphans: int = 0
    overpaid: int = 0
    inconsistent: int = 0
    clearing_off: int = 0
    states: Counter[str] = field(default_factory=Counter)
    categories: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    problems: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.problems.append(message)


def check_invariants(world: World, run: ChaosRun) -> Verdict:
    """RELIABILITY.md §9 against the ledgers' own state."""
    v = Verdict()
    intents = {i.id: i for i in _intents(world)}
    by_key = {item.key: item for item in run.plan}
    by_marker: dict[str, PaymentIntent] = {}
    for intent in intents.values():
        v.states[intent.state] += 1
        found = MARKER.findall(intent.reference or "")
        assert len(found) == 1, intent.reference
        by_marker[found[0]] = intent
    docs, payments = ledger_state(world)
    live = [p for p in payments if p.live]

    # The run itself: everything taken in once, nothing stuck, nothing silent.
    if len(intents) != len(run.intent_of) or set(intents) != set(run.intent_of.values()):
        v.fail(f"{len(intents)} intents stored for {len(run.intent_of)} caller keys")
    if len(run.intent_of) != len(run.plan):
        v.fail(f"{len(run.plan) - len(run.intent_of)} planned allocations never taken in")
    for message in (
        run.intake_problems
        + run.redelivery_mismatches
        + run.misuse_problems
        + run.silently_pending
        + run.reconcile_problems
    ):
        v.fail(message)
    # The engine met no exception it did not expect (it parks those intents as
    # internal_error and goes on, so the ledgers alone would not show it).
    for name, count in sorted(world.engine_errors.items()):
        if name not in EXPECTED_ERROR_EVENTS:
            samples = [e for e in world.error_samples if e.startswith(name)][:3]
            v.fail(f"the engine logged {count} x {name}: {samples}")
    # 2. Nothing silently pending: after healing, every intent is final.
    for intent in intents.values():
        if intent.state not in TERMINAL:
            v.fail(f"intent {intent.id} still {intent.state} ({intent.reason_code})")

    # 1. No double application: at most one live payment per allocation's reference.
    ours: dict[str, list[LedgerPayment]] = defaultdict(list)
    for pay in live:
        markers = pay.markers
        if len(markers) > 1:
            v.fail(f"payment {pay.payment_id} carries {len(markers)} references: {pay.reference}")
        for marker in markers:
            ours[marker].append(pay)
    for marker, found in ours.items():
        if len(found) > 1:
            v.duplicates += len(found) - 1
            v.fail(
                f"allocation {marker} has {len(found)} live payments: {[p.payment_id for p in found]}"
            )
        owner = by_marker.get(marker)
        if owner is None:
            v.orphans += len(found)
            v.fail(
                f"live payment(s) {[p.payment_id for p in found]} carry unknown reference {marker}"
            )
        elif owner.state != "applied":
            v.orphans += len(found)
            v.fail(
                f"intent {owner.id} is {owner.state} ({owner.reason_code}) but the ledger "
                f"holds its payment(s) {[p.payment_id for p in found]}"
            )

    # 3/4. Applied ⇔ exactly one live payment: ours, the one we recorded, as asked.
    for intent in intents.values():
        item = by_key[intent.idempotency_key]
        v.categories[item.category][intent.state] += 1
        if intent.state != "applied":
            continue
        (marker,) = MARKER.findall(intent.reference)
        landed = ours.get(marker, [])
        if not landed:
            v.lost += 1
            v.fail(f"intent {intent.id} is applied but the ledger has no live payment {marker}")
            continue
        if landed[0].payment_id != intent.remote_payment_id:
            v.fail(
                f"intent {intent.id} recorded payment {intent.remote_payment_id}, "
                f"the ledger has {landed[0].payment_id}"
            )
        wanted = (str(intent.document_remote_id).lower(), intent.amount)
        if landed[0].applied != (wanted,):
            v.fail(f"intent {intent.id} asked {wanted}, its payment applied {landed[0].applied}")

    # 10. Clearing, per connection and currency: what we consider applied minus what
    # the ledger holds under our references is zero.
    currency_of = {(i.connection_id, i.document.lower()): i.currency for i in run.plan}
    clearing: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for intent in intents.values():
        if intent.state == "applied":
            clearing[(intent.connection_id, intent.currency)] += intent.amount
    for pay in live:
        if pay.markers:
            for doc_id, amount in pay.applied:
                currency = currency_of.get((pay.connection_id, doc_id), "?")
                clearing[(pay.connection_id, currency)] -= amount
    for (connection_id, currency), rest in sorted(clearing.items()):
        if rest != 0:
            v.clearing_off += 1
            v.fail(f"clearing {connection_id} {currency}: applied - ledger = {rest}")

    # 1. No document paid beyond its total; its balance is its total less live payments.
    paid_on: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for pay in live:
        for doc_id, amount in pay.applied:
            paid_on[(pay.connection_id, doc_id)] += amount
    for doc in docs:
        paid = paid_on.get((doc.connection_id, doc.doc_id), ZERO)
        if paid > doc.total or doc.balance < 0:
            v.overpaid += 1
            v.fail(
                f"{doc.connection_id} document {doc.doc_id}: total {doc.total}, paid {paid}, balance {doc.balance}"
            )
        elif doc.balance != doc.total - paid:
            v.inconsistent += 1
            v.fail(
                f"{doc.connection_id} document {doc.doc_id}: total {doc.total} - payments {paid} ≠ balance {doc.balance}"
            )

    # What each kind of allocation may end as.
    allowed = {
        "over": {"rejected", "already_settled"},
        "paid_doc": {"already_settled"},
        "not_payable": {"rejected"},
    }
    for category, states in allowed.items():
        wrong = {s: n for s, n in v.categories.get(category, Counter()).items() if s not in states}
        if wrong:
            v.fail(f"{category} allocations ended {wrong}; expected only {sorted(states)}")
    applied_per_doc: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    totals = {(d.connection_id, d.doc_id): d.total for d in docs}
    for intent in intents.values():
        if intent.state == "applied":
            item = by_key[intent.idempotency_key]
            doc_key = (item.connection_id, item.document.lower())
            applied_per_doc[doc_key] += intent.amount
    for doc_key, amount in applied_per_doc.items():
        if amount > totals.get(doc_key, ZERO):
            v.fail(
                f"document {doc_key} took {amount} from us, more than its total {totals.get(doc_key)}"
            )
    return v


def summary(world: World, run: ChaosRun, v: Verdict, store: str) -> str:
    faulted = sum(world.fault_counts.values())
    share = faulted / world.writes if world.writes else 0.0
    kinds = ", ".join(f"{k}={world.fault_counts[k]}" for k in FAULT_NAMES if world.fault_counts[k])
    crashes = ", ".join(f"{k}={n}" for k, n in sorted(run.crashes.items()))
    states = ", ".join(f"{k}={n}" for k, n in sorted(v.states.items()))
    reconnects = sum(world.reconnects.values())
    phases = ", ".join(f"{k} {t:.1f}s" for k, t in sorted(run.phase_seconds.items()))
    return (
        f"chaos seed={run.seed} store={store} allocations={len(run.plan)} "
        f"intents={len(run.intent_of)} redeliveries={run.redeliveries} "
        f"misuse_refused={run.misuse_refused} | writes={world.writes} faulted={faulted} "
        f"({share:.1%}): {kinds} | crashes={sum(run.crashes.values())} ({crashes}) "
        f"workers={run.workers} rounds={run.rounds}+{run.heal_rounds} reconnects={reconnects} "
        f"intake_refused={sum(run.intake_refusals.values())} | duplicates={v.duplicates} "
        f"lost={v.lost} orphans={v.orphans} overpaid={v.overpaid} clearing_off={v.clearing_off} "
        f"| states: {states} | engine errors: {dict(world.engine_errors)} "
        f"| reconcile: {run.reconcile_summary} | {run.seconds:.1f}s ({phases})"
    )


def fault_share(world: World) -> float:
    return sum(world.fault_counts.values()) / world.writes if world.writes else 0.0
