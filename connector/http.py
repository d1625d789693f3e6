"""The shared HTTP layer: OAuth bearer tokens, rate-limit handling, logging, and
the provider-independent half of error translation.

Cross-cutting behaviour lives here, not in adapters: an adapter asks
:meth:`ProviderHTTP.request` for a response and only interprets provider bodies.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import warnings
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from authlib.integrations.base_client.errors import OAuthError

with warnings.catch_warnings():
    # Authlib >= 1.7 nudges towards the httpx2 fork but fully supports httpx,
    # which the rest of the project uses; keep the nudge out of users' logs.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

from sqlmodel import select

from connector.clock import Clock, SystemClock
from connector.config import ConnectionSettings
from connector.crypto import open_value, seal_value
from connector.errors import AuthRevoked, ConnectorError, OutcomeUnknown, RateLimited, Transient
from connector.events import record_connection_needs_attention
from connector.logging import get_logger, register_secret
from connector.ratelimit import (
    DEFAULT_BACKOFF_SECONDS,
    RateLimits,
    check_time_scale,
    limiter_for,
    time_scale_from_env,
)
from connector.state import ConnectionRecord
from connector.store import Store, dialect_insert

__all__ = ["ProviderHTTP", "RateLimitState", "TokenManager", "grant_fingerprint"]

log = get_logger("connector.http")

# Refresh this long before expiry, so a token never dies in flight.
TOKEN_EXPIRY_MARGIN = timedelta(seconds=60)
# The longest Retry-After we sleep through inline; longer waits reschedule work.
DEFAULT_MAX_INLINE_WAIT = 5.0
# Retries of a request the provider provably did not process (429, connect error).
MAX_NOT_PROCESSED_RETRIES = 3
# Small requests go out at once: without TCP_NODELAY a reused keep-alive
# connection waits ~40 ms per request on Nagle + delayed ACK.
_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
# Statuses whose request was rejected before any processing.
_NOT_PROCESSED = {429}


def grant_fingerprint(refresh_token: str) -> str:
    """A non-reversible tag for a configured grant (never the token itself)."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:32]


_refresh_locks: dict[str, threading.Lock] = {}
_refresh_locks_guard = threading.Lock()


def _refresh_lock(name: str) -> threading.Lock:
    with _refresh_locks_guard:
        return _refresh_locks.setdefault(name, threading.Lock())


class TokenManager:
    """Keeps one connection's OAuth 2.0 tokens valid, in the store.

    The refresh token rotates on every refresh. A refresh runs inside one
    database transaction that holds the connection's row lock (``SELECT … FOR
    UPDATE`` on PostgreSQL; SQLite's single writer), so refreshes are
    serialized across threads *and* processes: a second refresher waits, then
    finds the token the first one stored and uses it instead of spending the
    rotated refresh token (which would end in ``invalid_grant``). The new
    refresh token is committed before the new access token is used. Tokens are
    encrypted at rest when the store has a cipher. A valid access token is kept
    in memory, so ordinary requests do not touch the database.
    """

    def __init__(self, settings: ConnectionSettings, store: Store, clock: Clock | None = None):
        self.settings = settings
        self.store = store
        self.clock = clock or SystemClock()
        self._lock = _refresh_lock(f"{store.url}|{settings.id}")
        self._cached: tuple[str, datetime, datetime | None] | None = None

    def _open(self, value: str | None) -> str | None:
        return open_value(self.store.cipher, value)

    def _seal(self, value: str | None) -> str | None:
        return seal_value(self.store.cipher, value)

    def _ensure_record(self) -> ConnectionRecord:
        """The connection's row (created, or reset when the config names a new grant).

        Several processes may start at once: the row is created with ``ON
        CONFLICT DO NOTHING`` and then read under its row lock.
        """
        configured = self._configured_refresh_token()
        fp = grant_fingerprint(configured)
        now = self.clock.now()
        with self.store.session() as s:
            s.execute(
                dialect_insert(s, ConnectionRecord.__table__)  # type: ignore[attr-defined]
                .values(
                    id=self.settings.id,
                    provider=self.settings.provider,
                    tenant=self.settings.tenant,
                    status="active",
                    grant_fingerprint=fp,
                    refresh_token=self._seal(configured),
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["id"])
            )
            query = select(ConnectionRecord).where(ConnectionRecord.id == self.settings.id)
            if not self.store.is_sqlite:
                query = query.with_for_update()
            rec = s.exec(query).one()
            if rec.grant_fingerprint != fp:
                # A new grant in the config replaces whatever chain we had.
                rec.grant_fingerprint = fp
                rec.refresh_token = self._seal(configured)
                rec.access_token = None
                rec.access_token_expires_at = None
                rec.status, rec.status_reason = "active", None
                rec.updated_at = now
                s.add(rec)
            return rec

    def regranted(self) -> bool:
        """Whether the connection is usable again: the config now names a new grant
        (a person reconnected it), which resets a parked connection to active."""
        return self._ensure_record().status == "active"

    def _fresh(
        self,
        token: str | None,
        expires_at: datetime | None,
        refreshed_at: datetime | None = None,
    ) -> bool:
        if not (token and expires_at):
            return False
        margin = TOKEN_EXPIRY_MARGIN
        if refreshed_at is not None and expires_at > refreshed_at:
            # A short-lived token (a time-scaled sandbox: 30 s) is still used for
            # three quarters of its life instead of being refreshed on every call.
            margin = min(margin, (expires_at - refreshed_at) / 4)
        return expires_at - margin > self.clock.now()

    def access_token(self) -> str:
        """A valid access token, refreshing first when it is about to expire."""
        if self._cached and self._fresh(*self._cached):
            return self._cached[0]
        rec = self._ensure_record()
        if rec.status == "needs_reauth":
            raise AuthRevoked(rec.status_reason or "connection needs to be reauthorised")
        access = self._open(rec.access_token)
        if (
            access
            and rec.access_token_expires_at
            and self._fresh(access, rec.access_token_expires_at, rec.token_refreshed_at)
        ):
            register_secret(access)
            self._cached = (access, rec.access_token_expires_at, rec.token_refreshed_at)
            return access
        return self.refresh(rejected=access)

    def refresh(self, rejected: str | None = None) -> str:
        """Refresh the grant, unless another refresher already replaced ``rejected``."""
        with self._lock:
            self._cached = None
            self._ensure_record()
            failure: ConnectorError | None = None
            with self.store.session() as s:
                query = select(ConnectionRecord).where(ConnectionRecord.id == self.settings.id)
                if not self.store.is_sqlite:
                    query = query.with_for_update()
                rec = s.exec(query).one()
                if rec.status == "needs_reauth":
                    raise AuthRevoked(rec.status_reason or "connection needs to be reauthorised")
                current = self._open(rec.access_token)
                if (
                    current
                    and current != rejected
                    and self._fresh(current, rec.access_token_expires_at, rec.token_refreshed_at)
                ):
                    # Another thread or process refreshed while we waited for the lock.
                    assert rec.access_token_expires_at is not None
                    register_secret(current)
                    self._cached = (current, rec.access_token_expires_at, rec.token_refreshed_at)
                    return current
                refresh_token = self._open(rec.refresh_token) or self._configured_refresh_token()
                try:
                    token = self._call_token_endpoint(refresh_token)
                except AuthRevoked as exc:
                    # Park in this same transaction; raise once it is committed.
                    rec.status = "needs_reauth"
                    rec.status_reason = (
                        f"token refresh refused ({exc.provider_code}): reconnect the app to the "
                        f"ledger and put the new refresh token in the config"
                    )
                    rec.access_token = None
                    rec.updated_at = self.clock.now()
                    s.add(rec)
                    # Told out (``[events]``) in the same transaction as the parking.
                    record_connection_needs_attention(
                        s,
                        self.store,
                        connection_id=self.settings.id,
                        provider=self.settings.provider,
                        status=rec.status,
                        reason=rec.status_reason,
                    )
                    failure = exc
                else:
                    access = str(token["access_token"])
                    register_secret(access)
                    new_refresh = token.get("refresh_token")
                    if new_refresh:
                        register_secret(str(new_refresh))
                        rec.refresh_token = self._seal(str(new_refresh))
                    expires_in = float(token.get("expires_in", 1800))
                    expires_at = self.clock.now() + timedelta(seconds=expires_in)
                    rec.access_token = self._seal(access)
                    rec.access_token_expires_at = expires_at
                    refreshed_at = rec.token_refreshed_at = self.clock.now()
                    rec.updated_at = self.clock.now()
                    s.add(rec)
            if failure is not None:
                log.error("connection_parked", connection=self.settings.id, reason=failure.code)
                raise failure
            # Committed (rotated refresh token first): only now is the new token used.
            self._cached = (access, expires_at, refreshed_at)
            log.info("token_refreshed", connection=self.settings.id, expires_in=expires_in)
            return access

    def _call_token_endpoint(self, refresh_token: str) -> dict[str, Any]:
        client = OAuth2Client(
            client_id=self.settings.client_id,
            client_secret=self.settings.client_secret.get_secret_value(),
            token_endpoint_auth_method="client_secret_basic",
            timeout=self.settings.timeout_seconds,
        )
        try:
            return dict(client.refresh_token(self.settings.token_url, refresh_token=refresh_token))
        except OAuthError as exc:
            if exc.error in {"invalid_grant", "invalid_client", "unauthorized_client"}:
                raise AuthRevoked(
                    "the ledger refused the refresh token",
                    provider_code=exc.error,
                    provider_message=exc.description,
                ) from exc
            raise Transient(f"token refresh failed: {exc.error}") from exc
        except httpx.HTTPError as exc:
            raise Transient(f"token endpoint unreachable: {type(exc).__name__}") from exc
        finally:
            client.close()

    def _configured_refresh_token(self) -> str:
        assert self.settings.refresh_token is not None  # the config requires it for this flow
        return self.settings.refresh_token.get_secret_value()


class _BearerAuth(httpx.Auth):
    """Adds the bearer token; on a 401 refreshes once and sends again.

    A 401 means the request was refused before processing, so sending the
    same request again cannot apply anything twice.
    """

    def __init__(self, tokens: TokenManager) -> None:
        self.tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.tokens.access_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            token = self.tokens.refresh(rejected=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


@dataclass
class RateLimitState:
    """This client's view of the provider's quota (per ProviderHTTP instance).

    The tenant-wide view, shared by every client of the tenant in this process, is
    :meth:`ProviderHTTP.rate_stats` (:mod:`connector.ratelimit`).

    Attributes:
        remaining: the last value of each remaining-quota header.
        throttled: 429s answered to this client.
        requests: requests this client sent (answered or not).
        waited_seconds: time this client's requests waited for the limiter.
        refused: requests not sent because the wait was longer than the inline maximum.
    """

    remaining: dict[str, int] = field(default_factory=dict)
    throttled: int = 0
    requests: int = 0
    waited_seconds: float = 0.0
    refused: int = 0


class ProviderHTTP:
    """One connection's HTTP client.

    Every request goes through :meth:`request`, which keeps the tenant under its rate
    limits before sending (:mod:`connector.ratelimit`: a concurrency cap, sliding
    per-minute/day/batch windows, the provider's remaining-quota headers, and a
    tenant-wide pause after a 429) and retries a 429 inline when the wait is short.

    Args:
        settings: the connection.
        store: where tokens live.
        clock: the time the limiter's windows are measured in (default the wall clock).
        base_headers: headers sent with every request.
        rate_limit_headers: response headers that carry remaining quotas (kept in
            :attr:`rate`).
        transport: optional httpx transport (tests, vcrpy).
        sleep: how to wait (tests inject it).
        auth: request authentication; default a bearer token from the
            refresh-token grant (:class:`TokenManager`). NetSuite passes its own
            (client credentials with a JWT assertion, or OAuth 1.0a TBA).
        limits: the tenant's limits: a :class:`~connector.ratelimit.RateLimits`, or an
            adapter's ``capabilities`` (anything with ``concurrency`` and
            ``per_minute``), completed by :data:`connector.ratelimit.PROVIDER_LIMITS`.
            None: no client-side pacing; only the provider's remaining-quota headers
            and 429s are obeyed.
        time_scale: divides every window's length, to match a sandbox started with
            ``--time-scale N``; default the ``CONNECTOR_RATE_TIME_SCALE`` environment
            variable, else 1.0.
        max_wait: the longest wait (pacing, or a 429's Retry-After) slept through
            inline; longer ones raise :class:`RateLimited` with ``retry_after``.
            Default the connection's ``max_inline_wait_seconds``.

    Raises:
        ValueError: a time scale (argument or environment) that is not a positive number.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        store: Store,
        *,
        clock: Clock | None = None,
        base_headers: Mapping[str, str] | None = None,
        rate_limit_headers: tuple[str, ...] = (),
        transport: httpx.BaseTransport | None = None,
        sleep: Any = time.sleep,
        auth: httpx.Auth | None = None,
        limits: RateLimits | Any | None = None,
        time_scale: float | None = None,
        max_wait: float | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.tokens = TokenManager(settings, store, self.clock)
        self.rate = RateLimitState()
        self._rate_headers = rate_limit_headers
        self._sleep = sleep
        if not isinstance(limits, RateLimits):
            limits = RateLimits.for_provider(settings.provider, limits)
        scale = (
            time_scale_from_env()
            if time_scale is None
            else check_time_scale(time_scale, source="time_scale")
        )
        self.limiter = limiter_for(
            (str(store.url), settings.provider, settings.base_url.rstrip("/"), settings.tenant),
            f"{settings.provider}:{settings.tenant}",
            limits,
            scale,
        )
        self.max_wait = settings.max_inline_wait_seconds if max_wait is None else max_wait
        self._headers_read = tuple(
            dict.fromkeys([*rate_limit_headers, *(w.header for w in limits.windows if w.header)])
        )
        self.client = httpx.Client(
            base_url=settings.base_url,
            auth=auth if auth is not None else _BearerAuth(self.tokens),
            headers={"Accept": "application/json", **dict(base_headers or {})},
            timeout=httpx.Timeout(settings.timeout_seconds, connect=10.0),
            transport=transport or httpx.HTTPTransport(socket_options=_SOCKET_OPTIONS),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def rate_stats(self) -> dict[str, Any]:
        """The tenant's limiter stats (shared by every client of the tenant in this
        process): requests, 429s, waits, window usage; see
        :meth:`connector.ratelimit.TenantLimiter.stats`."""
        return self.limiter.stats(self._now())

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        write: bool = False,
    ) -> httpx.Response:
        """Send one request; return the response for the adapter to interpret.

        Waits (inline, up to ``max_wait``) for the tenant's limiter first. A 429 is
        retried with the same headers and body (idempotency keys included: the
        provider refused it before processing) once the tenant's pause is over, when
        that pause is short enough to wait inline.

        Raises:
            Transient: the request provably did not take effect (connect error,
                or a read that failed).
            OutcomeUnknown: a write whose outcome cannot be known (timeout after
                sending, dropped connection, 5xx).
            RateLimited: the provider kept refusing for rate limits, or asked
                for a wait longer than we sleep inline; or our own limiter would
                have had to wait that long (then nothing was sent).
        """
        max_wait = self.max_wait
        for attempt in range(MAX_NOT_PROCESSED_RETRIES + 1):
            try:
                ticket = self.limiter.acquire(
                    path, now=self._now, sleep=self._wait, max_wait=max_wait
                )
            except RateLimited as exc:
                self.rate.refused += 1
                log.info(
                    "http_rate_refused",
                    connection=self.settings.id,
                    method=method,
                    path=path,
                    retry_after=exc.retry_after,
                )
                raise
            started = time.monotonic()
            self.rate.requests += 1  # counted when sent, answered or not
            try:
                response = self.client.request(
                    method, path, params=params, content=content, headers=headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Nothing reached the provider: safe to report as transient.
                self.limiter.release(ticket, now=self._now(), counted=False)
                log.warning(
                    "http_connect_failed",
                    connection=self.settings.id,
                    method=method,
                    path=path,
                    error=type(exc).__name__,
                )
                raise Transient(
                    f"{method} {path}: could not connect ({type(exc).__name__})"
                ) from exc
            except httpx.TransportError as exc:
                self.limiter.release(ticket, now=self._now())
                log.warning(
                    "http_transport_failed",
                    connection=self.settings.id,
                    method=method,
                    path=path,
                    error=type(exc).__name__,
                    write=write,
                )
                if write:
                    raise OutcomeUnknown(
                        f"{method} {path}: {type(exc).__name__} after the request was sent"
                    ) from exc
                raise Transient(f"{method} {path}: {type(exc).__name__}") from exc
            except ConnectorError:
                # Raised by the auth flow (token refresh refused or unreachable):
                # nothing went out, or only a request refused with a 401.
                self.limiter.release(ticket, now=self._now(), counted=False)
                raise
            except BaseException:
                self.limiter.release(ticket, now=self._now())
                raise
            elapsed_ms = round((time.monotonic() - started) * 1000, 1)
            remaining: dict[str, int] = {}
            for name in self._headers_read:
                value = response.headers.get(name)
                if value is not None and value.lstrip("-").isdigit():
                    remaining[name] = int(value)
                    if name in self._rate_headers:
                        self.rate.remaining[name] = int(value)
            throttled = response.status_code in _NOT_PROCESSED
            retry_after = _retry_after(response) if throttled else None
            self.limiter.release(
                ticket,
                now=self._now(),
                status=response.status_code,
                remaining=remaining,
                retry_after=retry_after,
            )
            fields: dict[str, Any] = {}
            if ticket.waited:
                fields["waited_ms"] = round(ticket.waited * 1000, 1)
            log.info(
                "http_request",
                connection=self.settings.id,
                method=method,
                path=path,
                status=response.status_code,
                ms=elapsed_ms,
                **fields,
            )
            if throttled:
                self.rate.throttled += 1
                problem = response.headers.get("X-Rate-Limit-Problem")
                wait = (
                    retry_after
                    if retry_after is not None
                    else DEFAULT_BACKOFF_SECONDS / self.limiter.time_scale
                )
                if attempt < MAX_NOT_PROCESSED_RETRIES and wait <= max_wait:
                    # The limiter holds every thread of the tenant until the pause is
                    # over; the next acquire() waits it out.
                    self.limiter.note_retry()
                    continue
                raise RateLimited(
                    f"rate limited ({problem or 'unspecified'})",
                    retry_after=retry_after,
                    provider_code=problem,
                    status_code=429,
                )
            if response.status_code >= 500:
                text = response.text[:300]
                if write:
                    raise OutcomeUnknown(
                        f"{method} {path}: HTTP {response.status_code}",
                        provider_message=text,
                        status_code=response.status_code,
                    )
                raise Transient(
                    f"{method} {path}: HTTP {response.status_code}",
                    provider_message=text,
                    status_code=response.status_code,
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, seconds: float) -> None:
        self.rate.waited_seconds += seconds
        self._sleep(seconds)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            when = parsedate_to_datetime(value)
            return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())
        except (TypeError, ValueError):
            return None
