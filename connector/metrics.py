"""Health and metrics of the daemon's HTTP server: ``/readyz`` and ``/metrics``.

``GET /readyz`` answers 200 ``{"status": "ready", "checks": {...}}`` when the database
answers ``SELECT 1``, its migration is this version's head, and (inside the daemon)
the scheduler is running; otherwise 503 with ``failing`` naming the failed checks and
a plain ``reason`` for each. ``/healthz`` (in :mod:`connector.api`) only says the
process is alive. Neither needs a token; neither says anything secret (no URL, no
exception text: those go to the log, which masks secrets).

``GET /metrics`` is the Prometheus text format, produced by a collector that reads
current values at scrape time (no background thread) into a registry private to the
server. With ``[api] token`` set it needs ``Authorization: Bearer <token>`` like
``/v1``; without a token it is open, the server being on loopback.

Metrics:

* ``connector_intents{connection,state}``: payment intents by state (zeros included).
* ``connector_intents_oldest_open_seconds{connection}``: age of the oldest intent not
  in a final state (0 when none is open).
* ``connector_events_deliveries{state}``: event deliveries (pending, delivered, dead).
* ``connector_provider_requests_total``, ``connector_provider_throttled_total`` (429s)
  and ``connector_rate_wait_seconds_total`` (time spent waiting for the rate windows
  and Retry-After pauses, in the limiter's clock) ``{provider,tenant}``: this process's
  tenant limiters (:func:`connector.ratelimit.stats`), since the process started.
* ``connector_sync_lag_seconds{connection,entity}``: now - ``cursor.updated_at``, the
  time since the pull last committed a page of that entity (every run commits at
  least one, even an empty one). Not now - ``cursor.position``: the position is the
  ledger's newest change seen (minus an overlap), which ages on a quiet ledger even
  when the store is fully up to date.
* ``connector_connection_up{connection,provider}``: 1 active, 0 needs_reauth (a
  configured connection without a row yet counts as active).
* ``connector_token_last_refresh_timestamp_seconds{connection}``: the last OAuth token
  refresh (the store keeps only the time of the last one, not a count).
* ``connector_metrics_database_up``: 0 if the database could not be read for this
  scrape (the database-backed metrics are then left out).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlmodel import col
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connector import ratelimit
from connector.clock import Clock, SystemClock
from connector.config import Settings
from connector.events import pending_summary
from connector.logging import get_logger
from connector.state import TERMINAL, ConnectionRecord, Cursor, IntentState, PaymentIntent
from connector.store import Store

__all__ = ["ConnectorCollector", "OpsEndpoints", "readiness"]

log = get_logger("connector.metrics")

_FINAL = sorted(s.value for s in TERMINAL)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------------- readiness


def readiness(
    store: Store, scheduler_running: Callable[[], bool] | None = None
) -> tuple[bool, dict[str, dict[str, Any]]]:
    """``(ready, checks)``: each check ``{"ok": bool, ...}`` with a ``reason`` when not ok."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        with store.session() as s:
            s.execute(sa.text("SELECT 1")).scalar_one()
        checks["database"] = {"ok": True}
    except Exception as exc:
        log.warning("readyz_database_failed", error=type(exc).__name__)
        checks["database"] = {
            "ok": False,
            "reason": f"the database does not answer ({type(exc).__name__}; see the log)",
        }
    if checks["database"]["ok"]:
        try:
            current, head = store.current_revision(), store.head_revision()
        except Exception as exc:
            log.warning("readyz_migrations_failed", error=type(exc).__name__)
            checks["migrations"] = {
                "ok": False,
                "reason": f"the migration state cannot be read ({type(exc).__name__})",
            }
        else:
            ok = current == head
            checks["migrations"] = {"ok": ok, "current": current, "head": head}
            if not ok:
                checks["migrations"]["reason"] = (
                    f"the database is at migration {current or 'none'}, this version needs "
                    f"{head}: run `connector db upgrade`"
                )
    else:
        checks["migrations"] = {"ok": False, "reason": "not checked: the database does not answer"}
    if scheduler_running is not None:
        try:
            running = bool(scheduler_running())
        except Exception as exc:  # a broken callback is a failed check, not a 500
            log.warning("readyz_scheduler_failed", error=type(exc).__name__)
            running = False
        checks["scheduler"] = (
            {"ok": True}
            if running
            else {"ok": False, "reason": "the scheduler is not running (stopping or not started)"}
        )
    return all(c["ok"] for c in checks.values()), checks


# ---------------------------------------------------------------------- the collector


class ConnectorCollector(Collector):
    """Reads the connector's state at scrape time (see the module's metric list)."""

    def __init__(self, settings: Settings, store: Store, clock: Clock | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or SystemClock()

    def collect(self) -> Iterable[Metric]:
        now = _aware(self.clock.now())
        db_up = GaugeMetricFamily(
            "connector_metrics_database_up", "1 if the database could be read for this scrape"
        )
        try:
            families = list(self._database_families(now))
        except Exception as exc:
            log.warning("metrics_database_failed", error=type(exc).__name__)
            families = []
            db_up.add_metric([], 0)
        else:
            db_up.add_metric([], 1)
        yield db_up
        yield from families
        yield from self._rate_families()

    def _database_families(self, now: datetime) -> Iterator[Metric]:
        configured = {c.id: c.provider for c in self.settings.connections}
        with self.store.session() as s:
            by_state = s.execute(
                sa.select(
                    col(PaymentIntent.connection_id), col(PaymentIntent.state), sa.func.count()
                ).group_by(col(PaymentIntent.connection_id), col(PaymentIntent.state))
            ).all()
            oldest = s.execute(
                sa.select(col(PaymentIntent.connection_id), sa.func.min(PaymentIntent.created_at))
                .where(col(PaymentIntent.state).not_in(_FINAL))
                .group_by(col(PaymentIntent.connection_id))
            ).all()
            cursors = s.execute(
                sa.select(col(Cursor.connection_id), col(Cursor.entity), col(Cursor.updated_at))
            ).all()
            conns = s.execute(
                sa.select(
                    col(ConnectionRecord.id),
                    col(ConnectionRecord.provider),
                    col(ConnectionRecord.status),
                    col(ConnectionRecord.token_refreshed_at),
                )
            ).all()
        deliveries = pending_summary(self.store)

        connections = sorted(set(configured) | {str(r[0]) for r in by_state})
        counts = {(str(c), str(st)): int(n) for c, st, n in by_state}
        states = [s.value for s in IntentState]
        states += sorted({st for _, st in counts if st not in states})
        intents = GaugeMetricFamily(
            "connector_intents",
            "Payment intents by connection and state",
            labels=["connection", "state"],
        )
        for conn in connections:
            for state in states:
                intents.add_metric([conn, state], counts.get((conn, state), 0))
        yield intents

        oldest_by_conn = {str(c): _aware(t) for c, t in oldest if t is not None}
        age = GaugeMetricFamily(
            "connector_intents_oldest_open_seconds",
            "Age of the oldest payment intent not in a final state (0 when none is open)",
            labels=["connection"],
        )
        for conn in connections:
            created = oldest_by_conn.get(conn)
            age.add_metric([conn], max((now - created).total_seconds(), 0.0) if created else 0.0)
        yield age

        events = GaugeMetricFamily(
            "connector_events_deliveries", "Event deliveries by state", labels=["state"]
        )
        for state, n in sorted(deliveries.items()):
            events.add_metric([state], n)
        yield events

        lag = GaugeMetricFamily(
            "connector_sync_lag_seconds",
            "Seconds since the pull last committed a page of this entity (now - cursor.updated_at)",
            labels=["connection", "entity"],
        )
        for conn, entity, updated in sorted(cursors, key=lambda r: (r[0], r[1])):
            lag.add_metric(
                [str(conn), str(entity)], max((now - _aware(updated)).total_seconds(), 0.0)
            )
        yield lag

        rows = {str(r[0]): r for r in conns}
        up = GaugeMetricFamily(
            "connector_connection_up",
            "1 if the connection is active, 0 if it needs re-authorisation",
            labels=["connection", "provider"],
        )
        refreshed = GaugeMetricFamily(
            "connector_token_last_refresh_timestamp_seconds",
            "Unix time of the connection's last OAuth token refresh",
            labels=["connection"],
        )
        for conn in sorted(set(configured) | set(rows)):
            row = rows.get(conn)
            provider = str(row[1]) if row is not None else configured[conn]
            status = str(row[2]) if row is not None else "active"
            up.add_metric([conn, provider], 1 if status == "active" else 0)
            if row is not None and row[3] is not None:
                refreshed.add_metric([conn], _aware(row[3]).timestamp())
        yield up
        yield refreshed

    def _rate_families(self) -> Iterator[Metric]:
        # This process's limiters of this store's connections (the key the HTTP
        # clients use), so another store's traffic in the same process never counts.
        store_url = str(self.store.url)
        wanted = {(c.provider, c.base_url.rstrip("/"), c.tenant) for c in self.settings.connections}
        totals: dict[tuple[str, str], list[float]] = {}
        for item in ratelimit.stats():
            if str(item.get("store")) != store_url:
                continue
            if (str(item["provider"]), str(item["base_url"]), str(item["tenant"])) not in wanted:
                continue
            key = (str(item["provider"]), str(item["tenant"]))
            t = totals.setdefault(key, [0, 0, 0.0])
            t[0] += int(item["requests"])
            t[1] += int(item["throttled"])
            t[2] += float(item["waited_seconds"])
        labels = ["provider", "tenant"]
        requests = CounterMetricFamily(
            "connector_provider_requests", "Requests sent to the provider", labels=labels
        )
        throttled = CounterMetricFamily(
            "connector_provider_throttled", "429 answers from the provider", labels=labels
        )
        waited = CounterMetricFamily(
            "connector_rate_wait_seconds",
            "Seconds requests waited for rate windows and Retry-After pauses",
            labels=labels,
        )
        for key in sorted(totals):
            n, t429, secs = totals[key]
            requests.add_metric(list(key), n)
            throttled.add_metric(list(key), t429)
            waited.add_metric(list(key), secs)
        yield requests
        yield throttled
        yield waited


# ---------------------------------------------------------------------- the routes


class OpsEndpoints:
    """``/readyz`` and ``/metrics`` of one server, with its own metrics registry.

    Args:
        settings: The loaded config (``[api] token`` protects ``/metrics``).
        store: The database.
        clock: Time source of ages and lags.
        scheduler_running: Inside the daemon, whether its scheduler runs (a readiness
            check); None leaves the check out.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Clock | None = None,
        scheduler_running: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.scheduler_running = scheduler_running
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ConnectorCollector(settings, store, clock))
        token = settings.api.token.get_secret_value() if settings.api.token is not None else ""
        self._token = token.encode("utf-8") if token else None

    def routes(self) -> list[Route]:
        """Starlette routes to mount on the daemon's app."""
        return [
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    # Plain (sync) endpoints: Starlette runs them in its thread pool, off the event loop.
    def readyz(self, _request: Request) -> Response:
        """200 when ready; 503 naming the failing checks."""
        ready, checks = readiness(self.store, self.scheduler_running)
        if ready:
            return JSONResponse({"status": "ready", "checks": checks})
        failing = [name for name, c in checks.items() if not c["ok"]]
        return JSONResponse(
            {"status": "not_ready", "failing": failing, "checks": checks}, status_code=503
        )

    def metrics(self, request: Request) -> Response:
        """The Prometheus text format (bearer token when ``[api] token`` is set)."""
        if self._token is not None:
            scheme, _, presented = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented.strip().encode("utf-8", "replace"), self._token
            ):
                return JSONResponse(
                    {
                        "error": "unauthorized",
                        "message": "send Authorization: Bearer <[api] token>",
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="connector"'},
                )
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
