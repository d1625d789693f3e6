"""Xero identity emulation: one app, one OAuth grant per tenant, rotating refresh tokens.

Rules (fact sheet §7):

* Access tokens live 30 minutes of the sandbox clock.
* Each refresh returns a new refresh token; a superseded one keeps working for a
  30-minute grace period after it was superseded, then gives ``invalid_grant``.
  Refreshing with a token in its grace period supersedes the newest token too, so every
  token a client might still hold stays valid for 30 minutes after it lost out.
* An unused refresh token expires 60 days after it was issued.
* Revoking a grant kills its refresh and access tokens.

All three lifetimes are divided by the clock's ``time_scale``
(:class:`~connector.sandbox.clock.Clock`), and ``expires_in`` reports the scaled access
token lifetime, so a client that refreshes on ``expires_in`` keeps working.
"""

from __future__ import annotations

import base64
import random
import threading
from dataclasses import dataclass
from datetime import timedelta

from connector.sandbox.clock import Clock
from connector.sandbox.xero.models import AccessToken, Grant, RefreshToken

__all__ = ["DEFAULT_SCOPE", "AuthError", "TokenError", "XeroAuth"]

DEFAULT_SCOPE = (
    "openid profile email accounting.transactions accounting.contacts "
    "accounting.settings offline_access"
)


@dataclass
class TokenError(Exception):
    """A token-endpoint failure: HTTP ``status`` with OAuth ``error`` code."""

    status: int
    error: str


@dataclass
class AuthError(Exception):
    """A bearer-token failure; ``detail`` goes into the 401 problem JSON."""

    detail: str


class XeroAuth:
    """Token issuance and validation for the sandbox's single Xero app.

    Args:
        clock: The sandbox clock.
        lock: The ledger lock (shared so that token and data changes are serialised).
        rng: Seeded generator for the app credentials and the initial refresh tokens.
        runtime_rng: Generator for tokens issued while serving.
    """

    #: Nominal lifetimes (Xero's); the effective ones are divided by the time scale.
    ACCESS_TTL = timedelta(minutes=30)
    GRACE = timedelta(minutes=30)
    REFRESH_TTL = timedelta(days=60)

    def __init__(
        self,
        clock: Clock,
        lock: threading.RLock,
        rng: random.Random,
        runtime_rng: random.Random,
    ) -> None:
        self._clock = clock
        self._lock = lock
        self._rng = runtime_rng
        self.client_id = f"{rng.getrandbits(128):032X}"
        self.client_secret = _token(rng, 36)
        self.grants: dict[str, Grant] = {}
        self._refresh: dict[str, RefreshToken] = {}
        self._access: dict[str, AccessToken] = {}
        self._tenant_grant: dict[str, str] = {}
        self._seed_rng = rng

    def add_grant(self, grant_id: str, tenant_ids: list[str], scope: str = DEFAULT_SCOPE) -> Grant:
        """Create a grant with an initial refresh token drawn from the seed generator."""
        with self._lock:
            grant = Grant(grant_id=grant_id, tenant_ids=list(tenant_ids), scope=scope)
            self.grants[grant_id] = grant
            self._tenant_grant.update(dict.fromkeys(tenant_ids, grant_id))
            self._issue_refresh(grant, _token(self._seed_rng, 32, hexa=True))
            return grant

    def _issue_refresh(self, grant: Grant, token: str) -> None:
        self._refresh[token] = RefreshToken(token, grant.grant_id, self._clock.now())
        grant.current_refresh = token

    def check_client(self, client_id: str | None, client_secret: str | None) -> bool:
        """Whether the client credentials are the app's."""
        return client_id == self.client_id and client_secret == self.client_secret

    def refresh(self, refresh_token: str) -> dict[str, object]:
        """Exchange a refresh token (client already authenticated) for a new token set.

        Raises:
            TokenError: ``invalid_grant`` for unknown, expired, revoked or stale tokens.
        """
        with self._lock:
            now = self._clock.now()
            record = self._refresh.get(refresh_token)
            if record is None:
                raise TokenError(400, "invalid_grant")
            grant = self.grants[record.grant_id]
            if grant.revoked:
                raise TokenError(400, "invalid_grant")
            grace = self._clock.scaled(self.GRACE)
            if record.superseded is not None and now - record.superseded > grace:
                raise TokenError(400, "invalid_grant")
            if record.superseded is None and now - record.issued > self._clock.scaled(
                self.REFRESH_TTL
            ):
                raise TokenError(400, "invalid_grant")
            newest = self._refresh[grant.current_refresh]
            if newest.superseded is None:
                newest.superseded = now
            if record.superseded is None:
                record.superseded = now
            self._issue_refresh(grant, _token(self._rng, 32, hexa=True))
            ttl = self._clock.scaled(self.ACCESS_TTL)
            access = AccessToken(
                token=_token(self._rng, 48),
                grant_id=grant.grant_id,
                client_id=self.client_id,
                expires=now + ttl,
            )
            self._access[access.token] = access
            return {
                "access_token": access.token,
                "expires_in": max(int(ttl.total_seconds()), 1),
                "token_type": "Bearer",
                "refresh_token": grant.current_refresh,
                "scope": grant.scope,
            }

    def authenticate(self, bearer: str) -> tuple[AccessToken, Grant]:
        """Validate an access token.

        Raises:
            AuthError: Unknown or revoked (``AuthenticationUnsuccessful``) or expired
                (``TokenExpired: token expired at MM/DD/YYYY HH:MM:SS``).
        """
        with self._lock:
            access = self._access.get(bearer)
            if access is None:
                raise AuthError("AuthenticationUnsuccessful")
            grant = self.grants[access.grant_id]
            if grant.revoked:
                raise AuthError("AuthenticationUnsuccessful")
            if self._clock.now() >= access.expires:
                stamp = access.expires.strftime("%m/%d/%Y %H:%M:%S")
                raise AuthError(f"TokenExpired: token expired at {stamp}")
            return access, grant

    def revoke_grant(self, grant_id: str) -> None:
        """Revoke a grant: its refresh tokens give invalid_grant, its access tokens 401."""
        with self._lock:
            self.grants[grant_id].revoked = True

    def revoke_refresh_token(self, token: str) -> bool:
        """``/connect/revocation``: revoke the grant a refresh token belongs to."""
        with self._lock:
            record = self._refresh.get(token)
            if record is None:
                return False
            self.revoke_grant(record.grant_id)
            return True

    def grant_of_tenant(self, tenant_id: str) -> Grant:
        """The grant created for ``tenant_id`` (even if the tenant was disconnected since).

        Raises:
            KeyError: If no grant was created for the tenant.
        """
        with self._lock:
            return self.grants[self._tenant_grant[tenant_id]]


def _token(rng: random.Random, nbytes: int, *, hexa: bool = False) -> str:
    raw = rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big")
    if hexa:
        return raw.hex()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """Decode ``Authorization: Basic base64(id:secret)``; None if absent or malformed."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None
