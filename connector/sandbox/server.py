"""Running the sandbox: a background uvicorn server for tests, a blocking CLI server,
and the connector config file that points at it."""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import uvicorn

from connector.sandbox.app import create_app
from connector.sandbox.state import SandboxState
from connector.serving import ThreadedServer

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
        self._runner: ThreadedServer | None = None

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
        if self._runner is not None:
            raise RuntimeError("server already started")
        runner = ThreadedServer(
            create_app(self.state),
            self.host,
            self.port,
            name="sandbox",
            http=self._http,
            log_level=self._log_level,
            access_log=self._access_log,
            log_config=self._log_config,
        )
        runner.start(timeout)
        self._runner, self.port = runner, runner.port
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to shut down and join its thread (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.stop(timeout)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
# TOML basic strings must escape ", \ and every control character but tab (incl. DEL).
_TOML_MUST_ESCAPE = re.compile(r'["\\\x00-\x08\x0a-\x1f\x7f]')
_TOML_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_escape_char(match: re.Match[str]) -> str:
    char = match.group(0)
    return _TOML_ESCAPES.get(char) or f"\\u{ord(char):04X}"


def _toml_string(value: str) -> str:
    """A TOML basic string holding exactly ``value``."""
    return '"' + _TOML_MUST_ESCAPE.sub(_toml_escape_char, value) + '"'


def _toml_key(key: str) -> str:
    """A TOML key: bare when it can be, quoted otherwise."""
    return key if _TOML_BARE_KEY.match(key) else _toml_string(key)


def write_config(
    state: SandboxState,
    path: str | Path,
    *,
    base_url: str,
    database_url: str = DEFAULT_DATABASE_URL,
    extra_connections: Sequence[Mapping[str, str]] = (),
) -> Path:
    """Write a connector config TOML with one ``[[connections]]`` table per tenant.

    Xero tenants first, then QuickBooks realms and NetSuite accounts (each ledger the
    state serves); NetSuite's private keys go to ``netsuite-keys/`` beside the file.

    Args:
        state: The sandbox whose app credentials and tenants to write.
        path: Destination file (parent directories are created).
        base_url: The sandbox root URL (``SandboxServer.url``); a trailing ``/xero`` is
            tolerated.
        database_url: The connector's database URL.
        extra_connections: More ``[[connections]]`` tables, appended after the Xero ones
            in order (e.g. the QuickBooks and NetSuite sandboxes'); every value is
            written as a TOML string.

    Returns:
        The path written.

    Raises:
        TypeError: If an extra connection has a key or value that is not a string.
        ValueError: If an extra connection is empty.
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
    generated: list[Mapping[str, str]] = []
    if state.quickbooks is not None and "quickbooks" in state.providers:
        generated += state.quickbooks.connection_tables(root)
    if state.netsuite is not None and "netsuite" in state.providers:
        # NetSuite authenticates with a private key (JWT assertion): written beside the config.
        generated += state.netsuite.connection_tables(root, Path(path).parent / "netsuite-keys")
    if "xero" not in state.providers:
        lines = lines[:3]
    for extra in [*generated, *extra_connections]:
        if not extra:
            raise ValueError("an extra connection needs at least one key")
        lines += ["", "[[connections]]"]
        for key, value in extra.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(
                    f"extra connection keys and values must be strings, got {key!r}: {value!r}"
                )
            lines.append(f"{_toml_key(key)} = {_toml_string(value)}")
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
    *,
    bills: int = 3,
    time_scale: float = 1.0,
    rate_limits: bool = True,
    access_log: bool = True,
) -> None:
    """Run the sandbox until SIGINT/SIGTERM (the ``connector sandbox`` command).

    Prints the URL, the Xero app credentials and tenants, and the config path if one was
    written. Must be called from the main thread (it installs signal handlers).

    Args:
        host: Interface to bind (keep it on loopback).
        port: TCP port; 0 picks a free one (printed).
        seed: Seed of the ledger data.
        tenants: Xero organisations.
        invoices: Sales invoices per organisation.
        faults: Initial faults, e.g. ``"drop_after_commit=0.2"``.
        write_config_path: Where to write a connector config, if anywhere.
        database_url: ``database.url`` of that config.
        bills: Bills per organisation.
        time_scale: Divides every window the sandbox keeps (see :class:`Clock`).
        rate_limits: False turns Xero's rate limits off (headers are still sent).
        access_log: Whether uvicorn logs every request (off for benchmarks).

    Raises:
        ValueError: On an invalid fault specification, count or time scale.
        OSError: If the address cannot be bound.
    """
    state = SandboxState(
        seed=seed,
        tenants=tenants,
        invoices=invoices,
        faults=faults,
        bills=bills,
        time_scale=time_scale,
        rate_limits=rate_limits,
    )
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
            access_log=access_log,
            log_config=uvicorn.config.LOGGING_CONFIG,
        ) as server:
            print(f"Sandbox listening on {server.url} (Xero under {server.url}/xero)", flush=True)
            print(f"Xero client_id={state.xero.client_id}", flush=True)
            for tenant_id in state.xero.tenant_ids:
                print(f"Xero tenant {tenant_id} ({state.xero.tenant_name(tenant_id)})", flush=True)
            if state.quickbooks is not None:
                print(
                    f"QuickBooks under {server.url}/quickbooks, realms "
                    f"{', '.join(state.quickbooks.realm_ids)}",
                    flush=True,
                )
            if state.netsuite is not None:
                print(
                    f"NetSuite under {server.url}/netsuite, accounts "
                    f"{', '.join(state.netsuite.account_ids)}",
                    flush=True,
                )
            if faults:
                print(f"Faults: {faults}", flush=True)
            if time_scale != 1.0:
                print(f"Time scale: {time_scale:g} (windows last 1/{time_scale:g})", flush=True)
            if write_config_path is not None:
                written = write_config(
                    state, write_config_path, base_url=server.url, database_url=database_url
                )
                print(f"Config written to {written}", flush=True)
            print("Press Ctrl+C to stop.", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        state.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Sandbox stopped.", flush=True)
