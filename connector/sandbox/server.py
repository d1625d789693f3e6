"""Running the sandbox: a background uvicorn server for tests, a blocking CLI server,
and the connector config file that points at it."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import uvicorn

from connector.sandbox.app import create_app
from connector.sandbox.state import SandboxState

__all__ = ["SandboxServer", "serve", "write_config"]

DEFAULT_DATABASE_URL = "sqlite:///connector.db"


class SandboxServer:
    """uvicorn serving a :class:`SandboxState` from a background thread.

    Use as a context manager; :meth:`start` returns once the socket accepts connections.

    Args:
        state: The state to serve.
        host: Interface to bind (keep it on loopback: the admin API has no auth).
        port: TCP port; 0 picks a free one (see :attr:`url`).
        http: uvicorn HTTP protocol: ``"auto"``, ``"h11"`` or ``"httptools"``.
        log_level: uvicorn log level.
        access_log: Whether uvicorn logs each request.
        log_config: uvicorn logging config; None leaves logging configuration alone.
    """

    def __init__(
        self,
        state: SandboxState,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        http: str = "auto",
        log_level: str = "warning",
        access_log: bool = False,
        log_config: dict[str, Any] | None = None,
    ) -> None:
        self.state = state
        self.host = host
        self.port = port
        self._http = http
        self._log_level = log_level
        self._access_log = access_log
        self._log_config = log_config
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (Xero lives under ``/xero``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> SandboxServer:
        """Bind, start serving in a daemon thread and wait until it accepts connections.

        Raises:
            RuntimeError: If the server is already running or does not start in time.
            OSError: If the address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("server already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted
        # sockets whose proto says TCP, and without it every keep-alive request
        # waits ~40 ms on Nagle + delayed ACK. Set it on the listener too (inherited).
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
            create_app(self.state),
            http=self._http,
            lifespan="off",
            log_level=self._log_level,
            access_log=self._access_log,
            log_config=self._log_config,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"sandbox-{self.port}", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to shut down and join its thread (idempotent)."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _toml_string(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value, ensure_ascii=False)


def write_config(
    state: SandboxState,
    path: str | Path,
    *,
    base_url: str,
    database_url: str = DEFAULT_DATABASE_URL,
) -> Path:
    """Write a connector config TOML with one ``[[connections]]`` table per Xero tenant.

    Args:
        state: The sandbox whose app credentials and tenants to write.
        path: Destination file (parent directories are created).
        base_url: The sandbox root URL (``SandboxServer.url``); a trailing ``/xero`` is
            tolerated.
        database_url: The connector's database URL.

    Returns:
        The path written.
    """
    root = base_url.rstrip("/")
    if root.endswith("/xero"):
        root = root[: -len("/xero")]
    xero = state.xero
    lines = [
        "# Written by `connector sandbox --write-config`; points at the sandbox on 127.0.0.1.",
        "[database]",
        f"url = {_toml_string(database_url)}",
    ]
    for tenant_id in xero.tenant_ids:
        lines += [
            "",
            "[[connections]]",
            f"id = {_toml_string('xero-' + tenant_id[:8])}",
            'provider = "xero"',
            f"base_url = {_toml_string(root + '/xero')}  # stands in for https://api.xero.com",
            f"token_url = {_toml_string(root + '/xero/connect/token')}",
            f"client_id = {_toml_string(xero.client_id)}",
            f"client_secret = {_toml_string(xero.client_secret)}",
            f"refresh_token = {_toml_string(xero.refresh_token_for(tenant_id))}",
            f"tenant_id = {_toml_string(tenant_id)}",
            'payment_account_code = "090"',
        ]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    seed: int = 1,
    tenants: int = 1,
    invoices: int = 12,
    faults: str | None = None,
    write_config_path: str | Path | None = None,
    database_url: str = DEFAULT_DATABASE_URL,
) -> None:
    """Run the sandbox until SIGINT/SIGTERM (the ``connector sandbox`` command).

    Prints the URL, the Xero app credentials and tenants, and the config path if one was
    written. Must be called from the main thread (it installs signal handlers).

    Raises:
        ValueError: On an invalid fault specification.
        OSError: If the address cannot be bound.
    """
    state = SandboxState(seed=seed, tenants=tenants, invoices=invoices, faults=faults)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with SandboxServer(
            state,
            host,
            port,
            log_level="info",
            access_log=True,
            log_config=uvicorn.config.LOGGING_CONFIG,
        ) as server:
            print(f"Sandbox listening on {server.url} (Xero under {server.url}/xero)", flush=True)
            print(f"Xero client_id={state.xero.client_id}", flush=True)
            for tenant_id in state.xero.tenant_ids:
                print(f"Xero tenant {tenant_id} ({state.xero.tenant_name(tenant_id)})", flush=True)
            if faults:
                print(f"Faults: {faults}", flush=True)
            if write_config_path is not None:
                written = write_config(
                    state, write_config_path, base_url=server.url, database_url=database_url
                )
                print(f"Config written to {written}", flush=True)
            print("Press Ctrl+C to stop.", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Sandbox stopped.", flush=True)
