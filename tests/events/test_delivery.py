"""Delivering signed event webhooks: retries, dead letters, leases, subscriptions."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import socket
import threading
from collections import Counter
from typing import Any

from sqlmodel import select
from structlog.testing import capture_logs

from connector.clock import ManualClock
from connector.config import Settings
from connector.events import (
    ENDPOINT_GONE,
    EventDispatcher,
    pending_summary,
    record_event,
    verify_signature,
)
from connector.state import Event, EventDelivery
from connector.store import Store
from tests.events.conftest import OTHER_SECRET, SECRET, Receiver, events_settings

INTENT = {
    "id": "3f1c2d4e-0000-4000-8000-000000000001",
    "connection_id": "acme-xero",
    "idempotency_key": "order-42",
    "state": "applied",
    "reason_code": None,
    "document": "INV-0001",
    "amount": "49.99",
    "currency": "USD",
    "remote_payment_id": "pay-1",
}


def record(store: Store, settings: Settings, type_: str = "allocation.applied", **data: Any) -> str:
    with store.session() as s:
        event = record_event(s, settings, type_, data={**INTENT, **data}, intent_id=INTENT["id"])
    assert event is not None
    return event.id


def deliveries(store: Store) -> list[EventDelivery]:
    with store.session() as s:
        return list(s.exec(select(EventDelivery).order_by(EventDelivery.id)).all())


def dispatcher(settings: Settings, store: Store, clock: ManualClock, **kw: Any) -> EventDispatcher:
    return EventDispatcher(settings, store, clock=clock, rng=random.Random(3), **kw)


class _Top(random.Random):
    """Jitter that always picks the cap (so backoff delays are exact)."""

    def uniform(self, a: float, b: float) -> float:
        return b


# -- the request on the wire ------------------------------------------------------


def test_delivered_request_is_signed_and_verifies_only_with_the_secret(
    sqlite_store: Store, receiver: Receiver
) -> None:
    settings = events_settings(receiver.url("/hook"))
    clock = ManualClock()
    event_id = record(sqlite_store, settings)
    d = dispatcher(settings, sqlite_store, clock)
    report = d.deliver_due()
    d.close()
    assert (report.claimed, report.delivered) == (1, 1)
    [req] = receiver.requests
    sent_at = int(clock.now().timestamp())
    assert req.headers["content-type"] == "application/json"
    assert req.headers["connector-event-id"] == event_id
    assert req.headers["connector-event-type"] == "allocation.applied"
    assert req.headers["connector-delivery-attempt"] == "1"
    assert re.fullmatch(r"connector/\d+\.\d+\.\d+.*", req.headers["user-agent"])
    header = req.headers["connector-signature"]
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header)
    assert match is not None
    t = int(match.group(1))
    assert abs(t - sent_at) <= 2
    # The documented scheme, computed independently: HMAC-SHA256(secret, "<t>.<body>").
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + req.body, hashlib.sha256).hexdigest()
    assert match.group(2) == expected
    body = json.loads(req.body)
    assert body["id"] == event_id and body["type"] == "allocation.applied"
    assert body["data"] == INTENT and body["data"]["amount"] == "49.99"
    assert body["created_at"].endswith("Z")
    now = clock.now()
    assert verify_signature(SECRET, header, req.body, now=now)
    assert not verify_signature(OTHER_SECRET, header, req.body, now=now)
    tampered = req.body.replace(b"49.99", b"94.99")
    assert tampered != req.body
    assert not verify_signature(SECRET, header, tampered, now=now)
    # Replay protection: a signature older (or newer) than the tolerance is refused.
    assert not verify_signature(SECRET, header, req.body, now=t + 301)
    assert not verify_signature(SECRET, header, req.body, now=t - 301)
    assert verify_signature(SECRET, header, req.body, now=t + 299)
    assert not verify_signature(SECRET, header, req.body, now=t + 61, tolerance_seconds=60)
    [row] = deliveries(sqlite_store)
    assert (row.state, row.attempts, row.last_status) == ("delivered", 1, 200)
    assert row.delivered_at is not None and row.lease_owner is None


def test_malformed_signature_headers_are_refused() -> None:
    body = b'{"id":"x"}'
    good = f"t=1000,v1={hmac.new(b'k-secret', b'1000.' + body, hashlib.sha256).hexdigest()}"
    assert verify_signature("k-secret", good, body, now=1000)
    assert verify_signature("k-secret", good, body.decode(), now=1000)
    # A rotated secret: the receiver may be sent several v1 values; one matching is enough.
    assert verify_signature("k-secret", good.replace("t=1000,", "t=1000,v1=00ff,"), body, now=1000)
    for header in ["", "v1=abc", "t=1000", "t=abc,v1=00", "t=-5,v1=00", "garbage", good[:-1]]:
        assert not verify_signature("k-secret", header, body, now=1000), header


# -- retries ------------------------------------------------------------------------


def test_backoff_doubles_from_first_up_to_max() -> None:
    settings = events_settings(
        "http://127.0.0.1:9/x", backoff_first_seconds=10, backoff_max_seconds=45
    )
    store = Store("sqlite://")
    d = EventDispatcher(settings, store, rng=_Top())
    assert [d.backoff(n) for n in range(1, 7)] == [10, 20, 40, 45, 45, 45]
    jittered = EventDispatcher(settings, store, rng=random.Random(11))
    delays = [jittered.backoff(3) for _ in range(200)]
    assert all(0 <= x <= 40 for x in delays) and len(set(delays)) > 100  # full jitter
    d.close()
    jittered.close()
    store.dispose()


def test_failures_are_retried_with_backoff_until_delivered_with_the_same_event_id(
    sqlite_store: Store, receiver: Receiver
) -> None:
    settings = events_settings(
        receiver.url("/hook"), backoff_first_seconds=10, backoff_max_seconds=60, max_attempts=5
    )
    clock = ManualClock()
    event_id = record(sqlite_store, settings)
    receiver.plan("/hook", 500, 503, 429)
    seed = 5
    d = dispatcher(settings, sqlite_store, clock)
    d.rng = random.Random(seed)
    mirror = random.Random(seed)
    expected = [mirror.uniform(0, 10), mirror.uniform(0, 20), mirror.uniform(0, 40)]
    assert min(expected) > 1.0  # the seed gives delays the clock can step inside
    with capture_logs() as logs:
        for attempt, delay in enumerate(expected, start=1):
            report = d.deliver_due()
            assert (report.claimed, report.retrying, report.delivered) == (1, 1, 0)
            [row] = deliveries(sqlite_store)
            assert (row.state, row.attempts) == ("pending", attempt)
            assert row.last_status in {500, 503, 429} and row.last_error
            waited = (row.next_attempt_at - row.updated_at).total_seconds()
            assert abs(waited - delay) < 0.01
            # Not due before its time …
            clock.advance(delay - 0.5)
            assert d.deliver_due().claimed == 0
            # … due after it.
            clock.advance(0.6)
        report = d.deliver_due()
    d.close()
    assert report.delivered == 1
    [row] = deliveries(sqlite_store)
    assert (row.state, row.attempts, row.last_status, row.last_error) == ("delivered", 4, 200, None)
    got = receiver.at("/hook")
    assert len(got) == 4
    assert {r.headers["connector-event-id"] for r in got} == {event_id}
    assert len({r.body for r in got}) == 1  # the same bytes every time; only `t` moves
    assert [r.headers["connector-delivery-attempt"] for r in got] == ["1", "2", "3", "4"]
    failed = [e for e in logs if e["event"] == "event_delivery_failed"]
    delivered = [e for e in logs if e["event"] == "event_delivered"]
    assert [e["attempt"] for e in failed] == [1, 2, 3]
    assert [e["status"] for e in failed] == [500, 503, 429]
    assert all(e["event_id"] == event_id and e["next_retry"] for e in failed)
    assert all(e["endpoint"] == receiver.url("/hook") and not e["dead"] for e in failed)
    assert [(e["attempt"], e["status"]) for e in delivered] == [(4, 200)]
    assert SECRET not in repr(logs)


def test_out_of_attempts_is_dead(sqlite_store: Store, receiver: Receiver) -> None:
    settings = events_settings(
        receiver.url("/hook"), backoff_first_seconds=1, backoff_max_seconds=5, max_attempts=3
    )
    clock = ManualClock()
    record(sqlite_store, settings)
    receiver.plan("/hook", *([500] * 10))
    d = dispatcher(settings, sqlite_store, clock)
    with capture_logs() as logs:
        reports = []
        for _ in range(5):
            reports.append(d.deliver_due())
            clock.advance(5.1)
    d.close()
    assert [r.retrying for r in reports] == [1, 1, 0, 0, 0]
    assert [r.dead for r in reports] == [0, 0, 1, 0, 0]
    [row] = deliveries(sqlite_store)
    assert (row.state, row.attempts, row.last_status) == ("dead", 3, 500)
    assert row.last_error == "HTTP 500: nope"
    assert len(receiver.requests) == 3
    last = [e for e in logs if e["event"] == "event_delivery_failed"][-1]
    assert last["dead"] is True and last["next_retry"] is None and last["attempt"] == 3
    assert pending_summary(sqlite_store) == {"pending": 0, "delivered": 0, "dead": 1}


def test_gone_410_is_dead_at_once(sqlite_store: Store, receiver: Receiver) -> None:
    settings = events_settings(receiver.url("/hook"), max_attempts=10)
    clock = ManualClock()
    record(sqlite_store, settings)
    receiver.plan("/hook", 410)
    d = dispatcher(settings, sqlite_store, clock)
    report = d.deliver_due()
    clock.advance(7200)
    again = d.deliver_due()
    d.close()
    assert (report.dead, report.retrying, again.claimed) == (1, 0, 0)
    [row] = deliveries(sqlite_store)
    assert (row.state, row.attempts, row.last_status) == ("dead", 1, 410)
    assert len(receiver.requests) == 1


def test_a_receiver_that_hangs_times_out_and_is_retried(
    sqlite_store: Store, receiver: Receiver
) -> None:
    settings = events_settings(
        receiver.url("/hook"), timeout_seconds=0.3, backoff_first_seconds=1, backoff_max_seconds=1
    )
    clock = ManualClock()
    event_id = record(sqlite_store, settings)
    second = record(sqlite_store, settings)
    receiver.plan("/hook", "hang")
    d = dispatcher(settings, sqlite_store, clock)
    report = d.deliver_due()
    # The endpoint did not answer: its other delivery waits for the next run, untouched.
    assert (report.claimed, report.retrying, report.deferred, report.delivered) == (2, 1, 1, 0)
    rows = {r.event_id: r for r in deliveries(sqlite_store)}
    assert rows[event_id].last_error is not None and "timeout" in rows[event_id].last_error
    assert rows[event_id].attempts == 1 and rows[event_id].last_status is None
    assert rows[second].attempts == 0 and rows[second].lease_owner is None
    receiver.released.set()
    clock.advance(1.1)
    report = d.deliver_due()
    d.close()
    assert report.delivered == 2
    ids = Counter(r.headers["connector-event-id"] for r in receiver.requests)
    assert ids == {event_id: 2, second: 1}  # at least once: the receiver dedupes on the id


def test_a_refused_connection_is_retried(sqlite_store: Store) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = events_settings(f"http://127.0.0.1:{port}/hook", backoff_first_seconds=2)
    clock = ManualClock()
    record(sqlite_store, settings)
    d = dispatcher(settings, sqlite_store, clock)
    report = d.deliver_due()
    d.close()
    assert report.retrying == 1
    [row] = deliveries(sqlite_store)
    assert row.state == "pending" and row.attempts == 1
    assert row.last_error is not None and "ConnectError" in row.last_error


# -- what gets recorded, and where it goes ----------------------------------------------


def test_event_and_deliveries_commit_together_on_both_databases(
    store: Store, receiver: Receiver
) -> None:
    settings = events_settings(receiver.url("/a"), receiver.url("/b"))
    event_id = record(store, settings)
    with store.session() as s:
        event = s.get(Event, event_id)
        rows = s.exec(select(EventDelivery).where(EventDelivery.event_id == event_id)).all()
    assert event is not None and json.loads(event.payload) == INTENT
    assert event.intent_id == INTENT["id"]
    assert sorted(r.endpoint for r in rows) == [receiver.url("/a"), receiver.url("/b")]
    assert all(r.state == "pending" and r.attempts == 0 for r in rows)
    # Rolled back with the caller's transaction: neither the event nor its deliveries stay.
    try:
        with store.session() as s:
            rolled = record_event(s, settings, "allocation.rejected", data={"id": "x"})
            assert rolled is not None
            s.flush()
            raise RuntimeError("the caller's change failed")
    except RuntimeError:
        pass
    with store.session() as s:
        assert s.get(Event, rolled.id) is None
    assert pending_summary(store) == {"pending": 2, "delivered": 0, "dead": 0}


def test_no_subscribed_endpoint_writes_nothing(store: Store, receiver: Receiver) -> None:
    only_health = events_settings((receiver.url("/a"), ["connection.needs_attention"]))
    with store.session() as s:
        assert record_event(s, only_health, "allocation.applied", data=INTENT) is None
        assert record_event(s, Settings(), "allocation.applied", data=INTENT) is None
    with store.session() as s:
        assert s.exec(select(Event)).all() == []
        assert s.exec(select(EventDelivery)).all() == []


def test_an_endpoint_gets_only_the_types_it_subscribes_to(store: Store, receiver: Receiver) -> None:
    settings = events_settings(
        receiver.url("/all"),
        (receiver.url("/health"), ["connection.needs_attention"]),
        (receiver.url("/outcomes"), ["allocation.rejected", "allocation.conflict"]),
    )
    for type_ in ("allocation.applied", "allocation.rejected", "connection.needs_attention"):
        record(store, settings, type_)
    d = dispatcher(settings, store, ManualClock())
    report = d.deliver_due()
    d.close()
    assert report.delivered == 5
    types = {
        path: sorted(r.headers["connector-event-type"] for r in receiver.at(path))
        for path in ("/all", "/health", "/outcomes")
    }
    assert types == {
        "/all": ["allocation.applied", "allocation.rejected", "connection.needs_attention"],
        "/health": ["connection.needs_attention"],
        "/outcomes": ["allocation.rejected"],
    }


def test_deliveries_to_a_removed_endpoint_are_dead_and_never_sent(
    store: Store, receiver: Receiver
) -> None:
    before = events_settings(receiver.url("/kept"), receiver.url("/removed"), receiver.url("/off"))
    record(store, before)
    after = events_settings(receiver.url("/kept"))
    disabled = after.events.model_copy(
        update={
            "endpoints": [
                *after.events.endpoints,
                before.events.endpoints[2].model_copy(update={"enabled": False}),
            ]
        }
    )
    d = EventDispatcher(disabled, store, clock=ManualClock())
    report = d.deliver_due()
    d.close()
    assert (report.orphaned, report.delivered) == (2, 1)
    assert [r.path for r in receiver.requests] == ["/kept"]
    rows = {r.endpoint: r for r in deliveries(store)}
    for path in ("/removed", "/off"):
        row = rows[receiver.url(path)]
        assert (row.state, row.last_error, row.attempts) == ("dead", ENDPOINT_GONE, 0)
    assert rows[receiver.url("/kept")].state == "delivered"


# -- several workers ------------------------------------------------------------------


def test_two_workers_never_deliver_the_same_row(store: Store, receiver: Receiver) -> None:
    settings = events_settings(receiver.url("/hook"))
    ids = [record(store, settings, id=f"intent-{i}") for i in range(30)]
    receiver.delay = 0.01
    other = Store(store.url)
    clock = ManualClock()
    workers = [
        EventDispatcher(settings, store, clock=clock, worker_id="w1"),
        EventDispatcher(settings, other, clock=clock, worker_id="w2"),
    ]
    start = threading.Barrier(2)
    reports: dict[str, Any] = {}

    def run(d: EventDispatcher) -> None:
        start.wait()
        reports[d.worker_id] = d.deliver_due()

    threads = [threading.Thread(target=run, args=(d,)) for d in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for d in workers:
        d.close()
    other.dispose()
    assert sum(r.delivered for r in reports.values()) == 30
    assert sum(r.claimed for r in reports.values()) == 30
    assert Counter(r.headers["connector-event-id"] for r in receiver.requests) == Counter(ids)
    assert pending_summary(store) == {"pending": 0, "delivered": 30, "dead": 0}


def test_a_leased_row_waits_for_its_lease_and_a_late_outcome_is_not_recorded(
    store: Store, receiver: Receiver
) -> None:
    settings = events_settings(receiver.url("/hook"), timeout_seconds=1)
    ids = [record(store, settings) for _ in range(3)]
    clock = ManualClock()
    crashed = EventDispatcher(settings, store, clock=clock, worker_id="crashed")
    survivor = EventDispatcher(settings, store, clock=clock, worker_id="survivor")
    claimed = crashed.claim(10)
    assert sorted(e.id for _, e in claimed) == sorted(ids)
    assert all(row.lease_owner == "crashed" for row in deliveries(store))
    assert survivor.deliver_due().claimed == 0  # leased: not delivered twice at once
    assert receiver.requests == []
    clock.advance(10 * 6 + 31)  # the lease ran out: the worker is presumed dead
    report = survivor.deliver_due()
    assert report.delivered == 3
    assert all(r.state == "delivered" for r in deliveries(store))
    # The crashed worker wakes up: its outcome is not recorded over the survivor's.
    row, _ = claimed[0]
    assert not crashed._record(row, clock.now(), state="dead", last_error="late")
    assert {r.state for r in deliveries(store)} == {"delivered"}
    crashed.close()
    survivor.close()
    assert sorted(r.headers["connector-event-id"] for r in receiver.requests) == sorted(ids)


def test_pending_summary_counts_by_state(store: Store, receiver: Receiver) -> None:
    assert pending_summary(store) == {"pending": 0, "delivered": 0, "dead": 0}
    settings = events_settings(receiver.url("/ok"), receiver.url("/gone"))
    record(store, settings)
    record(store, settings)
    receiver.plan("/gone", 410, 410)
    assert pending_summary(store) == {"pending": 4, "delivered": 0, "dead": 0}
    d = EventDispatcher(settings, store, clock=ManualClock())
    d.deliver_due()
    d.close()
    assert pending_summary(store) == {"pending": 0, "delivered": 2, "dead": 2}
