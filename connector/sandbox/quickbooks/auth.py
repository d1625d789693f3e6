"""Intuit OAuth 2.0 emulation: one app, one grant (refresh-token chain) per realm.

Rules (fact sheet §9, scaled by ``clock.time_scale`` when the clock has one):

* Access tokens live 1 hour; refresh tokens 100 days, rolling (each refresh issues a
  new one with a fresh 100 days, reported in ``x_refresh_token_expires_in``).
* The refresh token **changes on every refresh**. A superseded token keeps working
  until one of its successors has been used ("the previous one then expires"): tokens
  carry a generation number, and using a token of generation *g* retires every token of
  a lower generation. Two refreshes racing with the same token therefore both succeed;
  the loser's new token dies once the winner's has been used.
* A retired, unknown, expired or revoked refresh token →
  ``400 {"error":"invalid_grant","error_description":"Incorrect or invalid refresh token"}``
  (wording from intuit/QuickBooks-V3-PHP-SDK#308, fact sheet §9).
* Revoking the grant (``revoke_grant``, the revoke endpoint, the ``token_revoked`` fault)
  kills its refresh and access tokens.
* The token response carries an RS256 ``id_token`` signed with a per-process key
  published at the discovery document's ``jwks_uri``, so intuitlib validates it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from connector.sandbox.clock import Clock

__all__ = ["ACCESS_TTL", "REFRESH_TTL", "AuthFailure", "QboAuth", "TokenError", "basic_credentials"]

#: Fact sheet §9: access token 1 hour.
ACCESS_TTL = timedelta(hours=1)
#: Fact sheet §9: refresh token 100 days, rolling.
REFRESH_TTL = timedelta(days=100)
SCOPE = "com.intuit.quickbooks.accounting openid profile email"
INVALID_GRANT_TEXT = "Incorrect or invalid refresh token"


@dataclass
class TokenError(Exception):
    """A token-endpoint failure: HTTP ``status`` with OAuth ``error`` (and description)."""

    status: int
    error: str
    description: str | None = None

    def body(self) -> dict[str, str]:
        """The JSON body (shape of ``oauth_token_error_response__dotnet_sdk.json``)."""
        out = {"error": self.error}
        if self.description is not None:
            out["error_description"] = self.description
        return out


@dataclass
class AuthFailure(Exception):
    """A bearer token that does not authenticate; ``detail`` goes into the 401 body."""

    detail: str


@dataclass
class _Grant:
    realm_id: str
    user_id: str
    current_refresh: str = ""
    min_generation: int = 0
    revoked: bool = False


@dataclass
class _Refresh:
    token: str
    realm_id: str
    generation: int
    issued: datetime


@dataclass
class _Access:
    token: str
    realm_id: str
    expires: datetime


@dataclass
class _SigningKey:
    kid: str
    private: Any
    public_jwk: dict[str, Any] = field(default_factory=dict)


_KEY_LOCK = threading.Lock()
_KEY: _SigningKey | None = None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _signing_key() -> _SigningKey:
    """One RSA key per process (generating one costs ~50 ms, so it is shared)."""
    global _KEY
    with _KEY_LOCK:
        if _KEY is None:
            from cryptography.hazmat.primitives.asymmetric import rsa

            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            numbers = private.public_key().public_numbers()
            public = {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
            # RFC 7638 thumbprint as the key id.
            canonical = json.dumps(public, sort_keys=True, separators=(",", ":")).encode()
            kid = _b64url(hashlib.sha256(canonical).digest())[:16]
            public.update({"kid": kid, "alg": "RS256", "use": "sig"})
            _KEY = _SigningKey(kid, private, public)
        return _KEY


def _jwt_rs256(header: dict[str, Any], claims: dict[str, Any], key: _SigningKey) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = key.private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def _scale(clock: Clock) -> float:
    scale = getattr(clock, "time_scale", 1.0) or 1.0
    return float(scale)


def scaled(clock: Clock, nominal: timedelta) -> timedelta:
    """``nominal`` divided by the clock's ``time_scale`` (1.0 when it has none)."""
    return nominal / _scale(clock)


def _random_text(rng: random.Random, length: int, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


_ALNUM = string.ascii_letters + string.digits


class QboAuth:
    """Token issuance and validation for the sandbox's single QuickBooks app.

    Args:
        clock: The sandbox clock.
        lock: The ledger lock.
        rng: Seeded generator for the app credentials and initial refresh tokens.
        runtime_rng: Generator for tokens issued while serving.
    """

    def __init__(
        self, clock: Clock, lock: threading.RLock, rng: random.Random, runtime_rng: random.Random
    ) -> None:
        self._clock = clock
        self._lock = lock
        self._seed_rng = rng
        self._rng = runtime_rng
        # Intuit client ids are 50 characters starting "AB"; secrets 40.
        self.client_id = "AB" + _random_text(rng, 48, _ALNUM)
        self.client_secret = _random_text(rng, 40, _ALNUM)
        self._grants: dict[str, _Grant] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._access: dict[str, _Access] = {}

    # ------------------------------------------------------------------ grants

    def add_grant(self, realm_id: str) -> None:
        """Create the realm's grant with an initial refresh token from the seed."""
        with self._lock:
            user = str(uuid.UUID(int=self._seed_rng.getrandbits(128), version=4))
            grant = _Grant(realm_id=realm_id, user_id=user)
            self._grants[realm_id] = grant
            self._issue_refresh(grant, 1, self._seed_rng)

    def _issue_refresh(self, grant: _Grant, generation: int, rng: random.Random) -> str:
        # Intuit refresh tokens look like "AB11" + 46 characters.
        token = "AB11" + _random_text(rng, 46, _ALNUM)
        self._refresh[token] = _Refresh(token, grant.realm_id, generation, self._clock.now())
        grant.current_refresh = token
        return token

    def current_refresh(self, realm_id: str) -> str:
        """The newest refresh token of the realm's grant."""
        with self._lock:
            return self._grants[realm_id].current_refresh

    def revoke(self, realm_id: str) -> None:
        """Revoke the realm's grant."""
        with self._lock:
            self._grants[realm_id].revoked = True

    def revoke_token(self, token: str) -> bool:
        """The revoke endpoint: revoke the grant a refresh or access token belongs to."""
        with self._lock:
            record = self._refresh.get(token)
            realm = record.realm_id if record else None
            if realm is None and token in self._access:
                realm = self._access[token].realm_id
            if realm is None:
                return False
            self._grants[realm].revoked = True
            return True

    def check_client(self, client_id: str | None, client_secret: str | None) -> bool:
        """Whether the client credentials are the app's."""
        return client_id == self.client_id and client_secret == self.client_secret

    # ------------------------------------------------------------------ tokens

    def refresh(self, refresh_token: str, issuer: str) -> dict[str, Any]:
        """Exchange a refresh token (client already authenticated) for a new token set.

        Args:
            refresh_token: The presented token.
            issuer: The ``iss`` of the id_token (the discovery document's ``issuer``).

        Raises:
            TokenError: ``invalid_grant`` for unknown, retired, expired or revoked tokens.
        """
        with self._lock:
            now = self._clock.now()
            record = self._refresh.get(refresh_token)
            if record is None:
                raise TokenError(400, "invalid_grant", INVALID_GRANT_TEXT)
            grant = self._grants[record.realm_id]
            refresh_ttl = scaled(self._clock, REFRESH_TTL)
            if (
                grant.revoked
                or record.generation < grant.min_generation
                or now - record.issued >= refresh_ttl
            ):
                raise TokenError(400, "invalid_grant", INVALID_GRANT_TEXT)
            grant.min_generation = max(grant.min_generation, record.generation)
            new_refresh = self._issue_refresh(grant, record.generation + 1, self._rng)
            access_ttl = scaled(self._clock, ACCESS_TTL)
            access = _Access(
                token="eyJ" + _random_text(self._rng, 61, _ALNUM),
                realm_id=grant.realm_id,
                expires=now + access_ttl,
            )
            self._access[access.token] = access
            return {
                "token_type": "bearer",
                "expires_in": max(int(access_ttl.total_seconds()), 1),
                "refresh_token": new_refresh,
                "x_refresh_token_expires_in": max(int(refresh_ttl.total_seconds()), 1),
                "access_token": access.token,
                "id_token": self._id_token(grant, issuer, now, access_ttl),
            }

    def _id_token(self, grant: _Grant, issuer: str, now: datetime, lifetime: timedelta) -> str:
        key = _signing_key()
        issued = int(now.timestamp())
        claims = {
            "sub": grant.user_id,
            "aud": [self.client_id],
            "realmid": grant.realm_id,
            "auth_time": issued,
            "iss": issuer,
            "exp": issued + max(int(lifetime.total_seconds()), 1),
            "iat": issued,
        }
        return _jwt_rs256({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)

    def authenticate(self, bearer: str) -> str:
        """Validate an access token; returns its realm id.

        Raises:
            AuthFailure: Unknown, expired or revoked token.
        """
        with self._lock:
            access = self._access.get(bearer)
            if access is None:
                raise AuthFailure("Token invalid")
            if self._grants[access.realm_id].revoked:
                raise AuthFailure("Token revoked")
            if self._clock.now() >= access.expires:
                # Real: "Token expired: AB0173…" (an id of the token, not the token itself).
                token_id = hashlib.sha256(bearer.encode()).hexdigest()[:47].upper()
                raise AuthFailure(f"Token expired: AB0{token_id}")
            return access.realm_id

    @staticmethod
    def jwks() -> dict[str, Any]:
        """The JWK set for the id_token signatures."""
        return {"keys": [dict(_signing_key().public_jwk)]}

    def user_id(self, realm_id: str) -> str:
        """The id (``sub``) of the user who connected the realm."""
        with self._lock:
            return self._grants[realm_id].user_id


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
