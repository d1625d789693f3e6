"""Pull: ledger records into the unified store, incrementally and resumably.

The cursor of ``(connection, entity)`` holds the change marker a run reads from
(``position``, an ISO timestamp) and the next ``page`` of that run. Each page is
upserted by ``(connection, remote_id)`` and the cursor advanced **in the same
transaction**, so a crash never skips or double-counts: a restart resumes at the
page after the last committed one. A run that reaches the end moves the
position to the newest change seen (minus an overlap window for second-granular
markers and clock skew; the overlap is re-read and de-duplicated by upsert).

Keyset paging: when a page's newest change is later than the position, the
next request starts again from page 1 at that newer position instead of asking
for page N+1. Records edited mid-run move to the end of the provider's order,
and page numbers would then skip over a neighbour; re-reading from the newest
marker cannot skip anything.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from connector.adapters import base as adapters_base
from connector.adapters.base import Adapter, Page, build_adapter
from connector.clock import Clock, SystemClock
from connector.config import Settings
from connector.errors import RateLimited
from connector.logging import get_logger
from connector.schema import Bill, Contact, Invoice, LedgerAccount, Payment, PaymentAllocation
from connector.state import Cursor
from connector.store import Store, upsert_records

__all__ = ["ENTITY_MODELS", "PullEngine", "PullStats"]

log = get_logger("connector.pull")

ENTITY_MODELS = {
    "invoice": Invoice,
    "bill": Bill,
    "payment": Payment,
    "contact": Contact,
    "ledger_account": LedgerAccount,
}
# Re-read this much before the newest change seen: providers' markers have
# one-second granularity and ledgers' clocks drift from ours.
DEFAULT_OVERLAP = timedelta(seconds=1)
# A guard against a provider that never says "last page".
MAX_PAGES_PER_RUN = 100_000
# How long to wait on a 429 that says nothing about when to come back.
DEFAULT_RATE_WAIT_SECONDS = 5.0


@dataclass
class PullStats:
    """What one run of one entity did."""

    connection_id: str
    entity: str
    pages: int = 0
    records: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    position: str | None = None
    complete: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    requests: int = 0  # HTTP requests sent by the adapter for this entity
    throttled: int = 0  # of which answered 429 (or another "not processed")
    rate_waits: int = 0  # RateLimited raised to us and waited out
    waited_seconds: float = 0.0  # time spent waiting on those
    seconds: float = 0.0  # wall time of the run


def _rate_counters(adapter: Adapter) -> tuple[int, int]:
    rate = getattr(getattr(adapter, "http", None), "rate", None)
    if rate is None:
        return (0, 0)
    return (int(rate.requests), int(rate.throttled))


def _floor_second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


class PullEngine:
    """Reads changes page by page into the store.

    Args:
        settings: the loaded config.
        store: the database.
        clock: time source.
        overlap: how far before the newest change a finished run restarts.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Clock | None = None,
        overlap: timedelta = DEFAULT_OVERLAP,
        adapter_factory: Callable[[str], Adapter] | None = None,
        wait_on_rate_limit: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        prefetch: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or SystemClock()
        self.overlap = overlap
        self._factory = adapter_factory or (
            lambda cid: build_adapter(settings.connection(cid), store, clock=self.clock)
        )
        self._adapters: dict[str, Adapter] = {}
        self.stop_requested = False
        #: Wait out RateLimited (Retry-After, else a default) and read the page
        #: again instead of failing the run (backfill).
        self.wait_on_rate_limit = wait_on_rate_limit
        self._sleep = sleep
        #: Let adapters that can (Xero) fetch the next page while one is committed.
        self.prefetch = prefetch

    def adapter(self, connection_id: str) -> Adapter:
        """The (cached) adapter of a connection."""
        if connection_id not in self._adapters:
            adapter = self._factory(connection_id)
            if self.prefetch and hasattr(adapter, "prefetch_pages"):
                adapter.prefetch_pages = True
            self._adapters[connection_id] = adapter
        return self._adapters[connection_id]

    def close(self) -> None:
        """Close adapters."""
        for adapter in self._adapters.values():
            adapter.close()
        self._adapters.clear()

    def run_once(
        self,
        *,
        connection_ids: Iterable[str] | None = None,
        entities: Iterable[str] = ("invoice",),
        since: datetime | None = None,
        on_page: Callable[[PullStats, Page], None] | None = None,
        max_pages: int | None = None,
    ) -> list[PullStats]:
        """Pull every requested entity of every requested connection once.

        Args:
            since: start from this time instead of the cursor (a backfill).
                A run already in progress from the same ``since`` resumes.
            on_page: called after each committed page (progress bars).
            max_pages: stop after this many pages per entity (tests, throttling).
        """
        ids = (
            list(connection_ids)
            if connection_ids is not None
            else [
                c.id
                for c in self.settings.connections
                if c.enabled and c.provider in adapters_base.SUPPORTED_PROVIDERS
            ]
        )
        results: list[PullStats] = []
        for cid in ids:
            conn = self.settings.connection(cid)
            for entity in entities:
                if entity not in ENTITY_MODELS:
                    raise ValueError(f"unknown entity {entity!r}; use {sorted(ENTITY_MODELS)}")
                results.append(
                    self.pull_entity(
                        cid,
                        entity,
                        since=since,
                        page_size=conn.page_size,
                        on_page=on_page,
                        max_pages=max_pages,
                    )
                )
        return results

    def pull_entity(
        self,
        connection_id: str,
        entity: str,
        *,
        since: datetime | None = None,
        page_size: int = 100,
        on_page: Callable[[PullStats, Page], None] | None = None,
        max_pages: int | None = None,
    ) -> PullStats:
        """Pull one entity of one connection until the provider has no more."""
        adapter = self.adapter(connection_id)
        stats = PullStats(connection_id, entity)
        started = time.monotonic()
        requests0, throttled0 = _rate_counters(adapter)
        try:
            self._pull(adapter, stats, since, page_size, on_page, max_pages)
        finally:
            requests1, throttled1 = _rate_counters(adapter)
            stats.requests = requests1 - requests0
            stats.throttled = throttled1 - throttled0
            stats.seconds = time.monotonic() - started
        log.info(
            "pull_done",
            connection=connection_id,
            entity=entity,
            pages=stats.pages,
            records=stats.records,
            inserted=stats.inserted,
            updated=stats.updated,
            deleted=stats.deleted,
            requests=stats.requests,
            throttled=stats.throttled,
            complete=stats.complete,
        )
        return stats

    def _list_page(
        self, adapter: Adapter, stats: PullStats, position: datetime | None, page: int, size: int
    ) -> Page:
        while True:
            try:
                return adapter.list_changed(stats.entity, position, page, size)
            except RateLimited as exc:
                if not self.wait_on_rate_limit or self.stop_requested:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else None
                wait = DEFAULT_RATE_WAIT_SECONDS if wait is None else max(wait, 0.0)
                log.info(
                    "pull_rate_limited",
                    connection=stats.connection_id,
                    entity=stats.entity,
                    wait=wait,
                )
                stats.rate_waits += 1
                stats.waited_seconds += wait
                self._sleep(wait)

    def _pull(
        self,
        adapter: Adapter,
        stats: PullStats,
        since: datetime | None,
        page_size: int,
        on_page: Callable[[PullStats, Page], None] | None,
        max_pages: int | None,
    ) -> None:
        connection_id, entity = stats.connection_id, stats.entity
        cursor = self._cursor(connection_id, entity)
        position: datetime | None = (
            datetime.fromisoformat(cursor.position) if cursor.position else None
        )
        page = cursor.page
        if since is not None:
            since = _floor_second(since)
            if position != since or page <= 1:
                position, page = since, 1
        for _ in range(min(max_pages or MAX_PAGES_PER_RUN, MAX_PAGES_PER_RUN)):
            if self.stop_requested:
                break
            result = self._list_page(adapter, stats, position, page, page_size)
            stats.pages += 1
            newest = result.max_updated_at
            next_position: datetime | None
            if result.has_more:
                if newest is not None and (position is None or _floor_second(newest) > position):
                    next_position, next_page = _floor_second(newest), 1
                else:
                    # A full page within one second: only page numbers move on.
                    next_position, next_page = position, page + 1
            else:
                end = max(filter(None, [newest, position]), default=None)
                next_position = _floor_second(end - self.overlap) if end else None
                next_page = 1
            self._commit_page(connection_id, entity, result, next_position, next_page, stats)
            if on_page is not None:
                on_page(stats, result)
            position, page = next_position, next_page
            if not result.has_more:
                stats.complete = True
                break
        stats.position = position.isoformat() if position else None

    def _cursor(self, connection_id: str, entity: str) -> Cursor:
        with self.store.session() as s:
            cursor = s.get(Cursor, (connection_id, entity))
            return cursor or Cursor(connection_id=connection_id, entity=entity)

    def _commit_page(
        self,
        connection_id: str,
        entity: str,
        page: Page,
        position: datetime | None,
        next_page: int,
        stats: PullStats,
    ) -> None:
        model = ENTITY_MODELS[entity]
        now = self.clock.now()
        with self.store.session() as s:
            inserted, updated = upsert_records(s, model, connection_id, page.records, now)
            if entity == "payment":
                self._store_allocations(s, connection_id, page.records)
            cursor = s.get(Cursor, (connection_id, entity)) or Cursor(
                connection_id=connection_id, entity=entity
            )
            cursor.position = position.isoformat() if position else None
            cursor.page = next_page
            cursor.records += len(page.records)
            cursor.updated_at = now
            s.add(cursor)
        stats.records += len(page.records)
        stats.inserted += inserted
        stats.updated += updated
        stats.deleted += sum(
            1 for r in page.records if r.get("deleted") or r.get("status") in {"deleted", "void"}
        )

    @staticmethod
    def _store_allocations(session: Any, connection_id: str, records: list[dict[str, Any]]) -> None:
        ids = {str(r["remote_id"]): r for r in records}
        pks: dict[str, int] = dict(
            session.execute(
                select(Payment.remote_id, Payment.id).where(
                    Payment.connection_id == connection_id, col(Payment.remote_id).in_(list(ids))
                )
            ).all()
        )
        session.execute(
            sa.delete(PaymentAllocation).where(
                col(PaymentAllocation.payment_pk).in_(list(pks.values()))
            )
        )
        for remote_id, pk in pks.items():
            for alloc in ids[remote_id].get("allocations") or []:
                if alloc.get("id"):
                    session.add(
                        PaymentAllocation(
                            payment_pk=pk,
                            id=alloc["id"],
                            type=alloc["type"],
                            amount=alloc["amount"],
                        )
                    )
