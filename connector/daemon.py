"""The long-running daemon: APScheduler ticks, the database decides.

Scheduler jobs only call ``run_once()`` of the push and pull engines; every
correctness decision (what is due, who holds it) lives in the store. SIGTERM or
SIGINT stops taking new work, lets the job in hand finish within the grace
period, and exits 0; a second signal exits at once. Whatever was in flight is
left claimable: its lease expires and the next worker reconciles it first.

With ``[api] enabled`` the daemon also serves provider webhooks (:mod:`connector.api`)
and refreshes the records they name; that server stops with the daemon, within the
same grace period. A webhook is only an accelerator: if the port cannot be bound the
daemon logs it and keeps polling.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from connector.adapters import base as adapters_base
from connector.api import ApiServer
from connector.clock import Clock, SystemClock
from connector.config import Settings
from connector.errors import ConnectorError
from connector.events import EventDispatcher, bind_store
from connector.logging import get_logger
from connector.store import Store
from connector.sync.pull import PullEngine
from connector.sync.push import PushEngine

__all__ = ["Daemon"]

log = get_logger("connector.daemon")


class Daemon:
    """Runs pull and push on intervals from ``[daemon]`` until told to stop."""

    def __init__(self, settings: Settings, store: Store, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or SystemClock()
        self.push = PushEngine(settings, store, clock=self.clock)
        self.pull = PullEngine(settings, store, clock=self.clock)
        # Events out: parked connections record theirs through the store (see events.py).
        bind_store(store, settings)
        self.events = EventDispatcher(settings, store, clock=self.clock)
        self._stop = threading.Event()
        self._signals = 0
        self.api: ApiServer | None = None
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=3)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
            timezone="UTC",
        )

    def push_tick(self) -> None:
        """One push round (a scheduler job)."""
        if self._stop.is_set():
            return
        try:
            counts = self.push.run_once()
            if counts:
                log.info("push_tick", **{k: v for k, v in counts.items()})
        except Exception:
            log.exception("push_tick_failed")

    def pull_tick(self) -> None:
        """One pull round over every connection (a scheduler job)."""
        if self._stop.is_set():
            return
        for conn in self.settings.connections:
            if (
                not conn.enabled
                or conn.provider not in adapters_base.SUPPORTED_PROVIDERS
                or self._stop.is_set()
            ):
                continue
            try:
                self.pull.run_once(connection_ids=[conn.id], entities=("invoice",))
            except ConnectorError as exc:
                log.warning("pull_failed", connection=conn.id, error=exc.code, message=exc.message)
            except Exception:
                log.exception("pull_tick_failed", connection=conn.id)

    def events_tick(self) -> None:
        """Deliver due event webhooks (a scheduler job)."""
        if self._stop.is_set():
            return
        try:
            self.events.deliver_due()
        except Exception:
            log.exception("events_tick_failed")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second_signal_exiting_now", signal=signum)
            raise SystemExit(1)
        log.info("stopping", signal=signal.Signals(signum).name)
        self.request_stop()

    def request_stop(self) -> None:
        """Stop taking work; :meth:`run` returns after the grace period at most."""
        self._stop.set()
        self.push.stop()
        self.pull.stop_requested = True
        self.events.stop()

    def scheduler_running(self) -> bool:
        """Whether the scheduler runs and the daemon is not stopping (``/readyz``)."""
        return bool(self.scheduler.running) and not self._stop.is_set()

    def wake_push(self) -> None:
        """Run the push job now (new allocations came in through the API)."""
        try:
            self.scheduler.modify_job("push", next_run_time=datetime.now(UTC))
        except Exception as exc:  # the job is not scheduled (yet, or any more)
            log.debug("push_wake_skipped", error=repr(exc))

    def run(self, *, install_signals: bool = True) -> int:
        """Run until a signal (or :meth:`request_stop`); return the exit code."""
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        d = self.settings.daemon
        self.scheduler.add_job(
            self.push_tick,
            "interval",
            seconds=d.push_interval_seconds,
            id="push",
            next_run_time=self.clock.now(),
        )
        self.scheduler.add_job(
            self.pull_tick,
            "interval",
            seconds=d.pull_interval_seconds,
            id="pull",
            next_run_time=self.clock.now(),
        )
        self.scheduler.add_job(
            self.events_tick,
            "interval",
            seconds=self.settings.events.deliver_interval_seconds,
            id="events",
            next_run_time=self.clock.now(),
        )
        for conn in self.settings.connections:
            if conn.provider not in adapters_base.SUPPORTED_PROVIDERS:
                log.warning(
                    "connection_skipped",
                    connection=conn.id,
                    provider=conn.provider,
                    reason="no adapter for this provider in this version",
                )
        self.scheduler.start()
        if self.settings.api.enabled:
            self._start_api()
        log.info(
            "daemon_started",
            connections=len(self.settings.connections),
            push_every=d.push_interval_seconds,
            pull_every=d.pull_interval_seconds,
        )
        while not self._stop.wait(0.5):
            pass
        started = time.monotonic()
        api_clean = True
        if self.api is not None:
            api_clean = self.api.stop(timeout=max(d.shutdown_grace_seconds, 0.5))
            log.info("api_stopped", clean=api_clean)
        stopper = threading.Thread(
            target=self.scheduler.shutdown, kwargs={"wait": True}, daemon=True
        )
        stopper.start()
        stopper.join(timeout=max(d.shutdown_grace_seconds - (time.monotonic() - started), 0.0))
        if stopper.is_alive():
            log.warning("grace_period_over", seconds=d.shutdown_grace_seconds)
        self.push.close()
        self.pull.close()
        self.events.close()
        self.store.dispose()
        log.info("daemon_stopped", clean=api_clean and not stopper.is_alive())
        return 0

    def _start_api(self) -> None:
        """Start the webhook server and its refresher; log (not fail) if it cannot bind."""
        api = ApiServer(
            self.settings,
            self.store,
            clock=self.clock,
            wake=self.wake_push,
            scheduler_running=self.scheduler_running,
        )
        try:
            api.start()
        except (OSError, RuntimeError) as exc:
            log.error(
                "api_start_failed",
                host=self.settings.api.host,
                port=self.settings.api.port,
                error=str(exc),
                hint="webhooks are off; polling goes on. Free the port or set [api] port",
            )
            return
        self.api = api
        log.info("api_listening", url=api.url)
