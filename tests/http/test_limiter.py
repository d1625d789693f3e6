"""ProviderHTTP's limiter on a scripted transport, with a simulated clock.

The injected sleep moves the connector's clock, so the windows' arithmetic is exact
and nothing really waits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from connector import ratelimit
from connector.adapters.netsuite import NetSuiteAdapter
from connector.adapters.quickbooks import QuickBooksAdapter
from connector.adapters.xero import XeroAdapter
from connector.clock import ManualClock
from connector.config import ConnectionSettings
from connector.errors import RateLimited
from connector.http import ProviderHTTP
from connector.ratelimit import ENV_TIME_SCALE, RateLimits, Window
from connector.store import Store

Handler = Callable[[httpx.Request], httpx.Response]


class NoAuth(httpx.Auth):
    """The limiter is under test, not OAuth."""


def settings(tenant: str = "t-1", provider: str = "xero", **extra: object) -> ConnectionSettings:
    values: dict[str, object] = {
        "id": f"{provider}-test",
        "provider": provider,
        "base_url": "https://ledger.invalid",
        "token_url": "https://ledger.invalid/token",
        "client_id": "cid",
        "client_secret": "secret",
        "refresh_token": "rt",
        "tenant_id": tenant,
        "payment_account_code": "090",
        **extra,
    }
    return ConnectionSettings(**values)


@pytest.fixture(autouse=True)
def _real_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Time scale 1 unless a test sets one (whatever the caller's environment says)."""
    monkeypatch.delenv(ENV_TIME_SCALE, raising=False)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 't.db'}")
    yield s
    s.dispose()


class Sim:
    """A clock that only the injected sleep moves (from a fixed start)."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.slept: list[float] = []
        self.sent: list[tuple[float, str]] = []  # (clock seconds, path) per request sent

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)

    def now(self) -> float:
        return self.clock.now().timestamp()

    def http(
        self,
        store: Store,
        handler: Handler,
        *,
        limits: object = None,
        conn: ConnectionSettings | None = None,
        **kw: object,
    ) -> ProviderHTTP:
        def record(request: httpx.Request) -> httpx.Response:
            self.sent.append((self.now(), request.url.path))
            return handler(request)

        return ProviderHTTP(
            conn or settings(),
            store,
            clock=self.clock,
            transport=httpx.MockTransport(record),
            sleep=self.sleep,
            auth=NoAuth(),
            limits=limits,
            **kw,  # type: ignore[arg-type]
        )


def ok(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={})


def test_nine_calls_at_three_a_minute_take_two_windows_and_never_crowd_one(
    store: Store,
) -> None:
    sim = Sim()
    http = sim.http(store, ok, limits=RateLimits(windows=(Window("minute", 3, 60.0),)), max_wait=60)
    for _ in range(9):
        assert http.request("GET", "/x").status_code == 200
    times = [t for t, _ in sim.sent]
    assert sum(sim.slept) == pytest.approx(120, abs=0.5)
    assert times[-1] - times[0] == pytest.approx(120, abs=0.5)
    for i in range(len(times) - 3):
        assert times[i + 3] - times[i] >= 60  # no 4 calls inside any 60 s
    stats = http.rate_stats()
    assert stats["requests"] == 9 and stats["windows"]["minute"]["used"] == 3
    assert stats["waited_seconds"] == pytest.approx(120, abs=0.5)
    assert http.rate.waited_seconds == pytest.approx(120, abs=0.5)


def test_a_wait_longer_than_max_wait_is_refused_before_sending(store: Store) -> None:
    sim = Sim()
    http = sim.http(store, ok, limits=RateLimits(windows=(Window("minute", 2, 60.0),)), max_wait=5)
    http.request("GET", "/x")
    http.request("GET", "/x")
    with pytest.raises(RateLimited) as refused:
        http.request("GET", "/x")
    assert refused.value.retry_after == pytest.approx(60, abs=0.5)
    assert len(sim.sent) == 2 and sim.slept == []
    assert http.rate.refused == 1 and http.rate_stats()["refused"] == 1
    sim.clock.advance(60)
    assert http.request("GET", "/x").status_code == 200


def test_time_scale_shrinks_every_window(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_TIME_SCALE, "60")
    sim = Sim()
    http = sim.http(store, ok, limits=RateLimits(windows=(Window("minute", 3, 60.0),)))
    for _ in range(4):
        http.request("GET", "/x")
    assert sum(sim.slept) == pytest.approx(1.0, abs=0.05)  # one "minute" is one second
    stats = http.rate_stats()
    assert stats["time_scale"] == 60 and stats["windows"]["minute"]["seconds"] == 1.0
    # An explicit argument wins over the environment.
    other = sim.http(store, ok, conn=settings("t-2"), time_scale=2.0)
    assert other.limiter.time_scale == 2.0


@pytest.mark.parametrize("value", ["0", "-1", "fast", "nan", "inf"])
def test_a_bad_time_scale_in_the_environment_is_refused(
    store: Store, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(ENV_TIME_SCALE, value)
    with pytest.raises(ValueError, match=ENV_TIME_SCALE):
        Sim().http(store, ok)


def test_remaining_zero_from_the_provider_holds_calls_until_the_window_can_have_rolled(
    store: Store,
) -> None:
    """Another process used the quota: the header says 0 left though we sent one call."""
    sim = Sim()

    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={}, headers={"X-MinLimit-Remaining": "0"})

    http = sim.http(store, handler, limits=XeroAdapter.capabilities, max_wait=5)
    http.request("GET", "/x")
    with pytest.raises(RateLimited) as held:
        http.request("GET", "/x")
    assert held.value.retry_after == pytest.approx(60, abs=0.5)
    assert len(sim.sent) == 1
    assert http.rate_stats()["windows"]["minute"]["budget"] == 0
    sim.clock.advance(60)
    http.request("GET", "/x")
    assert len(sim.sent) == 2


def test_remaining_explained_by_our_own_calls_does_not_slow_us(store: Store) -> None:
    sim = Sim()
    left = iter(range(59, -1, -1))

    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={}, headers={"X-MinLimit-Remaining": str(next(left))})

    http = sim.http(store, handler, limits=XeroAdapter.capabilities, max_wait=120)
    for _ in range(60):
        http.request("GET", "/x")
    assert sim.slept == []  # 60 calls, 60 allowed: no wait, though the header reached 0
    assert http.rate_stats()["windows"]["minute"]["budget"] is None


def test_a_429_without_retry_after_backs_off_briefly_and_is_retried(store: Store) -> None:
    sim = Sim()
    answers = iter([httpx.Response(429), httpx.Response(200, json={})])
    http = sim.http(store, lambda _r: next(answers), limits=NetSuiteAdapter.capabilities)
    assert http.request("GET", "/x").status_code == 200
    assert sim.slept == pytest.approx([1.0], abs=0.01)
    assert len(sim.sent) == 2 and sim.sent[1][0] - sim.sent[0][0] >= 1.0
    assert http.rate.throttled == 1 and http.rate_stats()["retried"] == 1


def test_an_http_date_retry_after_is_honoured_for_the_whole_tenant(store: Store) -> None:
    sim = Sim()
    when = datetime.now(UTC) + timedelta(seconds=120)
    throttle = httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    first = sim.http(store, lambda _r: throttle, limits=XeroAdapter.capabilities)
    second = sim.http(store, ok, limits=XeroAdapter.capabilities)  # same tenant
    assert first.limiter is second.limiter
    with pytest.raises(RateLimited) as limited:
        first.request("GET", "/x")
    assert limited.value.retry_after == pytest.approx(120, abs=2)
    with pytest.raises(RateLimited) as held:
        second.request("GET", "/y")
    assert held.value.retry_after == pytest.approx(120, abs=2)
    assert [p for _, p in sim.sent] == ["/x"]
    sim.clock.advance(121)
    assert second.request("GET", "/y").status_code == 200


def test_a_failed_connect_gives_its_place_in_the_window_back(store: Store) -> None:
    sim = Sim()
    calls = iter([httpx.ConnectError("refused"), None, None])

    def handler(request: httpx.Request) -> httpx.Response:
        failure = next(calls)
        if failure is not None:
            raise failure
        return ok(request)

    http = sim.http(store, handler, limits=RateLimits(windows=(Window("minute", 2, 60.0),)))
    with pytest.raises(Exception, match="could not connect"):
        http.request("GET", "/x")
    http.request("GET", "/x")
    http.request("GET", "/x")
    assert sim.slept == []  # the failed call never counted


def test_limits_come_from_the_adapters_capabilities() -> None:
    xero = RateLimits.for_provider("xero", XeroAdapter.capabilities)
    assert xero.concurrency == 5
    assert [(w.name, w.limit, w.seconds, w.header) for w in xero.windows] == [
        ("minute", 60, 60.0, "X-MinLimit-Remaining"),
        ("day", 5000, 86_400.0, "X-DayLimit-Remaining"),
        ("appminute", None, 60.0, "X-AppMinLimit-Remaining"),
    ]
    qbo = RateLimits.for_provider("quickbooks", QuickBooksAdapter.capabilities)
    assert qbo.concurrency == 10
    assert [(w.name, w.limit, w.path_suffix) for w in qbo.windows] == [
        ("minute", 500, None),
        ("batch", 40, "/batch"),
    ]
    assert qbo.windows[1].applies("/v3/company/1/batch")
    assert not qbo.windows[1].applies("/v3/company/1/query")
    netsuite = RateLimits.for_provider("netsuite", NetSuiteAdapter.capabilities)
    assert (netsuite.concurrency, netsuite.windows) == (5, ())
    # Without capabilities only the headers are followed.
    bare = RateLimits.for_provider("xero")
    assert bare.concurrency is None and all(w.limit is None for w in bare.windows)


def test_one_limiter_per_tenant_and_store(store: Store, tmp_path: Path) -> None:
    sim = Sim()
    a = sim.http(store, ok, limits=XeroAdapter.capabilities, conn=settings("t-share"))
    b = sim.http(store, ok, limits=XeroAdapter.capabilities, conn=settings("t-share"))
    other_tenant = sim.http(store, ok, limits=XeroAdapter.capabilities, conn=settings("t-9"))
    other_store = Store(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        elsewhere = sim.http(
            other_store, ok, limits=XeroAdapter.capabilities, conn=settings("t-share")
        )
        assert a.limiter is b.limiter
        assert other_tenant.limiter is not a.limiter and elsewhere.limiter is not a.limiter
        a.request("GET", "/x")
        b.request("GET", "/x")
        assert a.rate.requests == 1 and b.rate.requests == 1  # per client
        assert a.rate_stats()["requests"] == 2  # per tenant
        rows = ratelimit.stats(provider="xero", tenant="t-share")
        assert sorted(r["requests"] for r in rows)[-1] == 2
        assert [r["windows"]["minute"]["used"] for r in rows if r["requests"] == 2] == [2]
    finally:
        other_store.dispose()
