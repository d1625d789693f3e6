"""ProviderHTTP against the real sandbox with the providers' limits on, time-scaled 60x.

At ``time_scale=60`` Xero allows 60 calls per tenant per one-second window (and 5 in
flight), QuickBooks 40 ``/batch`` calls per one-second window; the connector's limiter
reads the same scale from ``CONNECTOR_RATE_TIME_SCALE``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connector import jsonutil, ratelimit
from connector.errors import RateLimited

from .conftest import SCALE, Scaled

XERO_API = "/api.xro/2.0"
WINDOW = 60 / SCALE  # one provider minute, in seconds


def _statuses(adapter: Any) -> list[int]:
    """Record the status of every response the adapter's client receives."""
    seen: list[int] = []
    adapter.http.client.event_hooks["response"].append(lambda r: seen.append(r.status_code))
    return seen


def test_200_sequential_gets_stay_under_xeros_minute_limit(
    scaled: Callable[..., Scaled],
) -> None:
    sandbox = scaled()
    xero = sandbox.adapter("xero")
    seen = _statuses(xero)
    xero.http.tokens.access_token()  # the token is fetched outside the timing
    started = time.monotonic()
    for _ in range(200):
        xero.http.request("GET", f"{XERO_API}/Accounts")
    elapsed = time.monotonic() - started
    stats = xero.http.rate_stats()
    assert seen == [200] * 200  # not a single 429 reached us
    assert stats["requests"] == 200 and stats["throttled"] == 0 and stats["refused"] == 0
    assert stats["waited_seconds"] > 0
    assert stats["windows"]["minute"]["used"] <= 60
    # 200 calls at 60 per window: the last 20 cannot leave before three windows passed.
    assert 3 * WINDOW - 0.3 <= elapsed < 3 * WINDOW + 6


def test_200_concurrent_gets_from_8_threads_share_one_tenant_limit(
    scaled: Callable[..., Scaled],
) -> None:
    sandbox = scaled()
    # Eight clients of the same connection (as eight workers would have): one limiter.
    adapters = [sandbox.adapter("xero") for _ in range(8)]
    assert len({id(a.http.limiter) for a in adapters}) == 1
    seen: list[int] = []
    for adapter in adapters:
        adapter.http.client.event_hooks["response"].append(lambda r: seen.append(r.status_code))
        adapter.http.tokens.access_token()  # tokens outside the timing
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(adapters))

    def run(adapter: Any) -> None:
        barrier.wait()
        try:
            for _ in range(25):
                adapter.http.request("GET", f"{XERO_API}/Accounts")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,)) for a in adapters]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    elapsed = time.monotonic() - started
    assert errors == []
    assert sorted(seen) == [200] * 200  # no 429: not the minute limit, nor the 5 in flight
    stats = adapters[0].http.rate_stats()
    assert stats["requests"] == 200 and stats["throttled"] == 0
    assert 1 <= stats["max_in_flight"] <= 5
    assert sum(a.http.rate.requests for a in adapters) == 200
    assert 3 * WINDOW - 0.3 <= elapsed < 3 * WINDOW + 8


def _xero_payment_body(sandbox: Scaled) -> bytes:
    tenant = sandbox.connection("xero").tenant
    invoice = sandbox.state.xero.add_invoice(tenant, total=Decimal("50.00"))
    body = {
        "Invoice": {"InvoiceID": invoice["InvoiceID"]},
        "Account": {"Code": "090"},
        "Date": "2024-05-01",
        "Amount": Decimal("10.00"),
        "Reference": "cx-ratelimit-1",
    }
    return jsonutil.dumps(body).encode()


def _ours(sandbox: Scaled) -> list[dict[str, Any]]:
    tenant = sandbox.connection("xero").tenant
    return [
        p for p in sandbox.state.xero.payments(tenant) if p.get("Reference") == "cx-ratelimit-1"
    ]


def test_an_injected_429_with_a_short_retry_after_is_retried_with_the_same_key(
    scaled: Callable[..., Scaled],
) -> None:
    sandbox = scaled()
    xero = sandbox.adapter("xero")
    body = _xero_payment_body(sandbox)
    sent: list[tuple[str | None, bytes]] = []
    xero.http.client.event_hooks["request"].append(
        lambda r: sent.append((r.headers.get("Idempotency-Key"), r.read()))
    )
    sandbox.state.faults.update({"rate_limit_next": 1})
    response = xero.http.request(
        "PUT",
        f"{XERO_API}/Payments",
        content=body,
        headers={"Idempotency-Key": "k-rl-1", "Content-Type": "application/json"},
        write=True,
    )
    assert response.status_code == 200
    # The 429 (Retry-After: 1 s at this scale) was waited out and the same request sent again.
    assert sent == [("k-rl-1", body), ("k-rl-1", body)]
    assert len(_ours(sandbox)) == 1
    stats = xero.http.rate_stats()
    assert (stats["throttled"], stats["retried"], stats["refused"]) == (1, 1, 0)
    assert xero.http.rate.throttled == 1
    assert 0.5 <= stats["waited_seconds"] <= 1.5


def test_a_long_retry_after_raises_and_holds_the_whole_realm_until_it_passes(
    scaled: Callable[..., Scaled],
) -> None:
    sandbox = scaled()
    qbo = sandbox.adapter("quickbooks")
    reader = sandbox.adapter("quickbooks")  # another client of the same realm
    sent: list[str] = []
    for adapter in (qbo, reader):
        adapter.http.client.event_hooks["request"].append(lambda r: sent.append(r.url.path))
    realm = sandbox.connection("quickbooks").tenant
    sandbox.state.faults.update({"rate_limit_next": 1})  # QuickBooks: 429, Retry-After: 60
    with pytest.raises(RateLimited) as first:
        qbo.http.request(
            "POST",
            f"/v3/company/{realm}/payment",
            params={"requestid": "rl-long-1"},
            content=b'{"TotalAmt": 1}',
            headers={"Content-Type": "application/json"},
            write=True,
        )
    assert first.value.retry_after == 60 and first.value.status_code == 429
    assert len(sent) == 1  # 60 s is above max_inline_wait_seconds: not retried inline
    # Every client of the realm now waits: nothing is sent, the wait is what is left.
    with pytest.raises(RateLimited) as held:
        reader.http.request("GET", f"/v3/company/{realm}/companyinfo/{realm}")
    assert held.value.retry_after is not None and 55 < held.value.retry_after <= 60
    assert held.value.status_code is None  # our refusal, not the provider's
    assert len(sent) == 1
    assert reader.http.rate.refused == 1 and reader.http.rate_stats()["refused"] == 1
    sandbox.clock.advance(60)  # our clock passes the Retry-After
    assert reader.http.request("GET", f"/v3/company/{realm}/companyinfo/{realm}").status_code == 200
    assert len(sent) == 2


def test_every_thread_waits_out_a_429_of_one_of_them(scaled: Callable[..., Scaled]) -> None:
    sandbox = scaled()
    writer = sandbox.adapter("xero")
    readers = [sandbox.adapter("xero") for _ in range(2)]
    body = _xero_payment_body(sandbox)
    for adapter in (writer, *readers):
        adapter.http.tokens.access_token()
    reads: list[float] = []  # when each reader request left
    throttled_at: list[float] = []
    for reader in readers:
        reader.http.client.event_hooks["request"].append(lambda _r: reads.append(time.monotonic()))
    writer.http.client.event_hooks["response"].append(
        lambda r: throttled_at.append(time.monotonic()) if r.status_code == 429 else None
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def read(adapter: Any) -> None:
        # 2 readers x 20 a second: well under the 60 a window, so only a 429 holds them.
        try:
            while not stop.is_set():
                adapter.http.request("GET", f"{XERO_API}/Accounts")
                stop.wait(0.05)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(r,)) for r in readers]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        sandbox.state.faults.update({"rate_limit_next": 1})
        response = writer.http.request(
            "PUT",
            f"{XERO_API}/Payments",
            content=body,
            headers={"Idempotency-Key": "k-rl-threads", "Content-Type": "application/json"},
            write=True,
        )
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert errors == []
    assert response.status_code == 200 and len(_ours(sandbox)) == 1
    [t429] = throttled_at
    pause = 1.0  # Retry-After at this scale (whole seconds, at least 1)
    during = [t for t in reads if t429 + 0.05 < t < t429 + pause - 0.02]
    assert during == []  # no reader sent anything while the tenant was paused
    assert any(t < t429 for t in reads) and any(t >= t429 + pause - 0.02 for t in reads)
    stats = writer.http.rate_stats()
    assert stats["throttled"] == 1 and stats["retried"] == 1
    assert sum(r.http.rate.waited_seconds for r in readers) > 0.5


def test_quickbooks_batch_calls_are_paced_at_40_a_window_other_calls_are_not(
    scaled: Callable[..., Scaled],
) -> None:
    sandbox = scaled()
    qbo = sandbox.adapter("quickbooks")
    seen = _statuses(qbo)
    realm = sandbox.connection("quickbooks").tenant
    qbo.http.tokens.access_token()
    batch = jsonutil.dumps(
        {"BatchItemRequest": [{"bId": "q1", "Query": "SELECT * FROM Invoice MAXRESULTS 1"}]}
    ).encode()

    def send_batch() -> httpx.Response:
        return qbo.http.request(
            "POST",
            f"/v3/company/{realm}/batch",
            content=batch,
            headers={"Content-Type": "application/json"},
        )

    started = time.monotonic()
    for _ in range(40):
        send_batch()
    assert qbo.http.rate_stats()["windows"]["batch"]["used"] == 40
    # The batch window is full; an ordinary call still leaves at once.
    before = time.monotonic()
    qbo.http.request("GET", f"/v3/company/{realm}/companyinfo/{realm}")
    assert time.monotonic() - before < 0.5 * WINDOW
    for _ in range(60):
        send_batch()
    elapsed = time.monotonic() - started
    assert seen == [200] * 101  # 100 batch calls, no 429 (Intuit: 40 a minute)
    stats = qbo.http.rate_stats()
    assert stats["throttled"] == 0 and stats["requests"] == 101
    assert stats["windows"]["batch"]["used"] <= 40
    assert stats["windows"]["minute"]["limit"] == 500
    # 100 batch calls at 40 a window: the last 20 leave after two windows.
    assert 2 * WINDOW - 0.3 <= elapsed < 2 * WINDOW + 6
    base_url = sandbox.connection("quickbooks").base_url
    [tenant_stats] = [
        s for s in ratelimit.stats(provider="quickbooks", tenant=realm) if s["base_url"] == base_url
    ]
    assert tenant_stats["requests"] == 101 and tenant_stats["throttled"] == 0
