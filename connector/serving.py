"""One way to serve an ASGI app from a background thread: uvicorn on a pre-bound socket.

Used by the daemon's API server, the sandbox, and the test harnesses. The socket
is bound here (so ``port=0`` yields the real port before serving starts) and is
created with ``proto=IPPROTO_TCP`` plus ``TCP_NODELAY``: asyncio only sets
TCP_NODELAY on accepted sockets whose proto says TCP, and without it every
keep-alive request waits ~40 ms on Nagle + delayed ACK.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

__all__ = ["ThreadedServer"]


class ThreadedServer:
    """uvicorn serving ``app`` from a daemon thread.

    Args:
        app: the ASGI application.
        host: interface to bind (keep it on loopback).
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        name: thread name prefix.
        http: uvicorn HTTP protocol (``auto``, ``h11``, ``httptools``).
        log_level, access_log, log_config: uvicorn logging; ``log_config=None``
            leaves the process's logging alone.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "server",
        http: str = "auto",
        log_level: str = "warning",
        access_log: bool = False,
        log_config: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self._config_args: dict[str, Any] = {
            "http": http,
            "log_level": log_level,
            "access_log": access_log,
            "log_config": log_config,
        }
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> ThreadedServer:
        """Bind, serve in a daemon thread, and return once connections are accepted.

        Raises:
            RuntimeError: already started, or it did not start in time.
            OSError: the address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, lifespan="off", timeout_graceful_shutdown=2, **self._config_args
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"{self.name}-{self.port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError(f"the {self.name} did not start")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask uvicorn to shut down and join its thread (idempotent); True if it ended."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout)
        clean = thread is None or not thread.is_alive()
        self._server = self._thread = None
        return clean

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
