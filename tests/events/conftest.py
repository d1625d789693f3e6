"""A real webhook receiver on loopback, and settings that point the connector at it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector.config import EventEndpoint, EventsSettings, EventType, Settings
from connector.serving import ThreadedServer
from connector.store import Store

SECRET = "whsec-test-0123456789"
OTHER_SECRET = "whsec-other-9876543210"


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every POST; answers from a per-path plan (default 200).

    A plan entry is a status code or ``"hang"`` (answer nothing until released or
    five seconds passed).
    """

    server: ThreadedServer
    requests: list[Received] = field(default_factory=list)
    plans: dict[str, list[int | str]] = field(default_factory=dict)
    delay: float = 0.0
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"{self.server.url}{path}"

    def plan(self, path: str, *answers: int | str) -> None:
        with self.lock:
            self.plans.setdefault(path, []).extend(answers)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.02)
        with self.lock:
            return list(self.requests)


def _app(receiver: Receiver) -> Starlette:
    async def hook(request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        with receiver.lock:
            receiver.requests.append(Received(path, dict(request.headers), body))
            plan = receiver.plans.get(path) or []
            answer: int | str = plan.pop(0) if plan else 200
        if receiver.delay:
            await asyncio.sleep(receiver.delay)
        if answer == "hang":
            deadline = time.monotonic() + 5.0
            while not receiver.released.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return Response(status_code=200)
        assert isinstance(answer, int)
        return Response(content=b"nope" if answer >= 300 else b"", status_code=answer)

    return Starlette(routes=[Route("/{name:path}", hook, methods=["POST"])])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1, stopped after the test."""
    server = ThreadedServer(None, "127.0.0.1", 0, name="event-receiver")
    rec = Receiver(server)
    server.app = _app(rec)
    server.start()
    try:
        yield rec
    finally:
        rec.released.set()
        server.stop()


def events_settings(
    *endpoints: tuple[str, list[EventType] | None] | str,
    secret: str = SECRET,
    **options: Any,
) -> Settings:
    """Settings whose ``[events]`` lists ``endpoints`` (a URL, or URL and event types)."""
    listed: list[EventEndpoint] = []
    for spec in endpoints:
        url, types = (spec, None) if isinstance(spec, str) else spec
        kwargs = {} if types is None else {"events": types}
        listed.append(EventEndpoint(url=url, secret=SecretStr(secret), **kwargs))
    return Settings(events=EventsSettings(endpoints=listed, **options))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A migrated SQLite store (for the tests that need no second database)."""
    s = Store(f"sqlite:///{tmp_path / 'events.db'}")
    s.upgrade()
    yield s
    s.dispose()
