"""NetSuite authentication: OAuth 2.0 client credentials (JWT assertion) and TBA.

Rules (fact sheet §8, Oracle's "The Request Token Structure" and "POST Request to the
Token Endpoint" pages):

* ``POST .../auth/oauth2/v1/token`` with ``grant_type=client_credentials``,
  ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and a
  JWT whose header carries ``kid`` = a certificate id mapped to the integration and
  ``alg`` in PS256/384/512 or ES256/384/512 (RS256 is not in the list, so it is refused),
  and whose claims carry ``iss`` = client id, ``scope`` (a comma-separated string or a
  JSON list of ``restlets``/``rest_webservices``/``suite_analytics``), ``aud`` = the
  token URL, ``iat`` and ``exp`` at most 60 minutes after ``iat``.
* Answer: ``{"access_token": <JWT-shaped>, "expires_in": 3600, "token_type": "bearer"}``;
  the token lives 60 minutes (divided by the clock's ``time_scale``, and ``expires_in``
  says how long it really lives).
* Token errors are ``{"error": "<code>"}``: ``invalid_request`` (missing or malformed
  parameters), ``unsupported_grant_type``, ``invalid_client`` (HTTP 401: unknown client
  id or kid, disallowed algorithm, bad signature), ``invalid_grant`` (expired or
  overlong assertion, wrong ``aud``, revoked mapping), ``invalid_scope``.
* TBA (OAuth 1.0a): ``Authorization: OAuth realm="<account id>", ...`` signed with
  HMAC-SHA256 (HMAC-SHA1 ended in 2023.1); the consumer key/secret are the integration's
  client id/secret (one integration record serves both flows), the token id/secret are
  the access token's. ``realm`` must be the account id exactly as written
  (``1234567_SB1``). ``oauth_timestamp`` must be within :data:`TBA_TIMESTAMP_TOLERANCE`
  of the sandbox clock (or of the wall clock, so that a client signing with its own
  clock still works after a test advanced the sandbox clock), and a nonce can be used
  once per token.
* Every failure on an API call is 401 ``INVALID_LOGIN``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlsplit
from urllib.request import parse_http_list, parse_keqv_list

from authlib.oauth1.rfc5849.signature import construct_base_string
from authlib.oauth1.rfc5849.util import escape, unescape
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connector.sandbox.clock import Clock
from connector.sandbox.netsuite._jose import JoseError, JsonWebToken
from connector.sandbox.netsuite.errors import invalid_login

__all__ = [
    "ACCESS_TOKEN_TTL",
    "ALLOWED_ALGORITHMS",
    "JWT_BEARER",
    "AccessToken",
    "AccountAuth",
    "NetSuiteAuth",
    "TokenError",
    "scaled",
]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALLOWED_ALGORITHMS = ("PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
KNOWN_SCOPES = frozenset({"restlets", "rest_webservices", "suite_analytics"})
#: Oracle: "The access token is valid for 60 minutes."
ACCESS_TOKEN_TTL = 3600.0
#: Oracle: ``exp`` "must be less than 60 minutes greater than the value of the iat".
MAX_ASSERTION_LIFETIME = 3600
#: Leeway for an ``iat`` slightly in the future (client clock ahead): not documented.
IAT_LEEWAY = 300
#: TBA timestamp tolerance either way; NetSuite does not publish its value. Not scaled
#: by ``time_scale``: it absorbs clock skew, it is not a behaviour window.
TBA_TIMESTAMP_TOLERANCE = 300
#: Oracle, OAuth 2.0 token structure: ``iss`` of NetSuite-issued tokens.
TOKEN_ISSUER = "https://system.netsuite.com"
#: Key sizes Oracle accepts for M2M certificates (sim.ai guide, fact sheet §8).
_RSA_SIZES = (3072, 4096)
_EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")
# Order of the P-256 group: a derived private scalar must be in [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def scaled(clock: Clock, nominal_seconds: float) -> float:
    """``nominal_seconds`` divided by the clock's ``time_scale`` (1.0 when it has none)."""
    scale = getattr(clock, "time_scale", 1.0)
    try:
        factor = float(scale)
    except (TypeError, ValueError):
        factor = 1.0
    return nominal_seconds / factor if factor > 0 else nominal_seconds


@dataclass
class TokenError(Exception):
    """A token-endpoint failure: HTTP ``status`` with OAuth ``error`` code."""

    status: int
    error: str


@dataclass
class AccessToken:
    """A bearer token issued by the client-credentials flow."""

    token: str
    account_id: str
    scopes: frozenset[str]
    expires: datetime
    revoked: bool = False


@dataclass
class AccountAuth:
    """Credentials of one NetSuite account's integration (one per account).

    Attributes:
        certificates: Certificate id → public key PEM of every mapped certificate.
        revoked: The client-credentials mapping and the TBA token were revoked; token
            requests give ``invalid_grant`` and API calls 401 until re-authorized.
    """

    account_id: str
    client_id: str
    client_secret: str
    certificate_id: str
    private_key_pem: str
    token_id: str
    token_secret: str
    certificates: dict[str, bytes] = field(default_factory=dict)
    revoked: bool = False


class NetSuiteAuth:
    """Credential store, token issuance and request authentication for all accounts.

    Args:
        clock: The sandbox clock.
        lock: The ledger lock.
        runtime_rng: Generator for tokens issued while serving.
    """

    def __init__(self, clock: Clock, lock: threading.RLock, runtime_rng: random.Random) -> None:
        self._clock = clock
        self._lock = lock
        self._rng = runtime_rng
        self._accounts: dict[str, AccountAuth] = {}
        self._tokens: dict[str, AccessToken] = {}
        self._nonces: dict[tuple[str, str, str], float] = {}

    # ------------------------------------------------------------------ set-up

    def add_account(self, account_id: str, rng: random.Random) -> AccountAuth:
        """Create the account's integration, certificate (EC P-256) and TBA token."""
        scalar = rng.randrange(1, _P256_ORDER)
        key = ec.derive_private_key(scalar, ec.SECP256R1())
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        auth = AccountAuth(
            account_id=account_id,
            client_id=_hex(rng, 32),
            client_secret=_hex(rng, 32),
            certificate_id=_b64(rng, 32),
            private_key_pem=private_pem,
            token_id=_hex(rng, 32),
            token_secret=_hex(rng, 32),
        )
        auth.certificates[auth.certificate_id] = public_pem
        with self._lock:
            self._accounts[account_id] = auth
        return auth

    def account(self, account_id: str) -> AccountAuth:
        """The account's credentials.

        Raises:
            KeyError: Unknown account.
        """
        with self._lock:
            return self._accounts[account_id]

    def register_certificate(
        self, account_id: str, public_key_pem: str | bytes, certificate_id: str | None = None
    ) -> str:
        """Map another certificate (public key PEM) to the account's integration.

        Raises:
            KeyError: Unknown account.
            ValueError: Not a public key of a kind Oracle accepts (RSA 3072/4096 bits or
                EC P-256/384/521).
        """
        data = public_key_pem.encode("ascii") if isinstance(public_key_pem, str) else public_key_pem
        key = serialization.load_pem_public_key(data)
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size not in _RSA_SIZES:
                raise ValueError("RSA certificates must have 3072 or 4096 bit keys")
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in _EC_CURVES:
                raise ValueError("EC certificates must use P-256, P-384 or P-521")
        else:
            raise ValueError("only RSA and EC keys can be mapped")
        with self._lock:
            auth = self._accounts[account_id]
            cert_id = certificate_id or _b64(self._rng, 32)
            auth.certificates[cert_id] = data
            return cert_id

    def revoke(self, account_id: str) -> None:
        """Revoke the account's mapping, access tokens and TBA token."""
        with self._lock:
            self._accounts[account_id].revoked = True
            for token in self._tokens.values():
                if token.account_id == account_id:
                    token.revoked = True

    def reauthorize(self, account_id: str) -> None:
        """Undo :meth:`revoke` with the same credentials (revoked access tokens stay dead)."""
        with self._lock:
            self._accounts[account_id].revoked = False

    # ------------------------------------------------------------------ client credentials

    def issue_token(
        self, account_id: str, form: Mapping[str, str], audiences: Iterable[str]
    ) -> dict[str, object]:
        """Run the client-credentials grant.

        Args:
            account_id: The account whose token endpoint was called.
            form: The form-encoded request body.
            audiences: Token URLs an ``aud`` may name (the sandbox URL and the real one).

        Raises:
            TokenError: See the module docstring.
        """
        if form.get("grant_type") != "client_credentials":
            if not form.get("grant_type"):
                raise TokenError(400, "invalid_request")
            raise TokenError(400, "unsupported_grant_type")
        if form.get("client_assertion_type") != JWT_BEARER or not form.get("client_assertion"):
            raise TokenError(400, "invalid_request")
        assertion = form["client_assertion"]
        header = _unverified_header(assertion)
        if header is None:
            raise TokenError(400, "invalid_request")
        alg, kid = header.get("alg"), header.get("kid")
        with self._lock:
            auth = self._accounts[account_id]
            key = auth.certificates.get(kid) if isinstance(kid, str) else None
            revoked = auth.revoked
        if alg not in ALLOWED_ALGORITHMS or key is None:
            raise TokenError(401, "invalid_client")
        try:
            claims = dict(JsonWebToken([alg]).decode(assertion, key))
        except (JoseError, ValueError, TypeError):
            raise TokenError(401, "invalid_client") from None
        if claims.get("iss") != auth.client_id:
            raise TokenError(401, "invalid_client")
        if revoked:
            raise TokenError(400, "invalid_grant")
        if not _audience_ok(claims.get("aud"), audiences):
            raise TokenError(400, "invalid_grant")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not _is_int(iat) or not _is_int(exp):
            raise TokenError(400, "invalid_grant")
        assert isinstance(iat, int) and isinstance(exp, int)
        if exp - iat > MAX_ASSERTION_LIFETIME or exp <= iat:
            raise TokenError(400, "invalid_grant")
        if not any(exp > now and iat <= now + IAT_LEEWAY for now in self._now_candidates()):
            raise TokenError(400, "invalid_grant")
        scopes = _scopes(claims.get("scope"))
        if not scopes or not scopes <= KNOWN_SCOPES:
            raise TokenError(400, "invalid_scope")
        ttl = scaled(self._clock, ACCESS_TOKEN_TTL)
        now_dt = self._clock.now()
        token = self._mint(auth, scopes, now_dt, ttl)
        with self._lock:
            self._tokens[token] = AccessToken(
                token, account_id, scopes, now_dt + timedelta(seconds=ttl)
            )
        return {
            "access_token": token,
            "expires_in": max(1, round(ttl)),
            "token_type": "bearer",
        }

    def _mint(self, auth: AccountAuth, scopes: frozenset[str], now: datetime, ttl: float) -> str:
        """An access token shaped like NetSuite's (an RS256 JWT; the signature is opaque)."""
        header = {"kid": "s.SYSTEM.SANDBOX_1", "typ": "JWT", "alg": "RS256"}
        iat = int(now.timestamp())
        payload = {
            "sub": f"3;{auth.account_id}",
            "aud": [f"{_uuid(self._rng)};{auth.account_id}", auth.client_id],
            "scope": sorted(scopes),
            "iss": TOKEN_ISSUER,
            "exp": iat + max(1, round(ttl)),
            "iat": iat,
            "jti": _uuid(self._rng),
        }
        signature = self._rng.getrandbits(2048).to_bytes(256, "big")
        return ".".join(
            [
                _b64url(json.dumps(header, separators=(",", ":")).encode()),
                _b64url(json.dumps(payload, separators=(",", ":")).encode()),
                _b64url(signature),
            ]
        )

    # ------------------------------------------------------------------ API calls

    def authenticate(
        self,
        account_id: str,
        *,
        authorization: str,
        method: str,
        url: str,
        host: str | None,
        form_params: list[tuple[str, str]],
    ) -> None:
        """Authenticate one REST call (bearer token, else TBA).

        Raises:
            NetSuiteError: 401 ``INVALID_LOGIN``.
        """
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and rest.strip():
            self._bearer(account_id, rest.strip())
        elif scheme.lower() == "oauth" and rest.strip():
            self._tba(account_id, rest, method, url, host, form_params)
        else:
            raise invalid_login()

    def _bearer(self, account_id: str, token: str) -> None:
        with self._lock:
            access = self._tokens.get(token)
            if (
                access is None
                or access.revoked
                or access.account_id != account_id
                or self._accounts[account_id].revoked
                or self._clock.now() >= access.expires
                or "rest_webservices" not in access.scopes
            ):
                raise invalid_login()

    def _tba(
        self,
        account_id: str,
        header: str,
        method: str,
        url: str,
        host: str | None,
        form_params: list[tuple[str, str]],
    ) -> None:
        try:
            items = parse_keqv_list(parse_http_list(header))
        except (IndexError, ValueError):
            raise invalid_login() from None
        params = {unescape(k.strip()): unescape(v) for k, v in items.items()}
        required = (
            "oauth_consumer_key",
            "oauth_token",
            "oauth_nonce",
            "oauth_timestamp",
            "oauth_signature_method",
            "oauth_signature",
        )
        if any(not params.get(name) for name in required):
            raise invalid_login()
        if params.get("realm") != account_id:
            raise invalid_login()
        if params["oauth_signature_method"] != "HMAC-SHA256":
            raise invalid_login()
        if params.get("oauth_version", "1.0") != "1.0":
            raise invalid_login()
        with self._lock:
            auth = self._accounts[account_id]
            if auth.revoked:
                raise invalid_login()
            if not hmac.compare_digest(params["oauth_consumer_key"], auth.client_id):
                raise invalid_login()
            if not hmac.compare_digest(params["oauth_token"], auth.token_id):
                raise invalid_login()
            consumer_secret, token_secret = auth.client_secret, auth.token_secret
        try:
            stamp = int(params["oauth_timestamp"])
        except ValueError:
            raise invalid_login() from None
        if not any(abs(stamp - now) <= TBA_TIMESTAMP_TOLERANCE for now in self._now_candidates()):
            raise invalid_login()
        query = _query_params(url)
        signed = [(k, v) for k, v in items.items() if k.strip() != "realm"]
        try:
            base = construct_base_string(method, url, [*query, *form_params, *signed], host)
        except ValueError:
            raise invalid_login() from None
        key = f"{escape(consumer_secret)}&{escape(token_secret)}"
        digest = hmac.new(key.encode(), base.encode(), hashlib.sha256).digest()
        expected = binascii.b2a_base64(digest)[:-1].decode("ascii")
        if not hmac.compare_digest(expected, params["oauth_signature"]):
            raise invalid_login()
        nonce_key = (params["oauth_token"], params["oauth_nonce"], params["oauth_timestamp"])
        with self._lock:
            self._purge_nonces()
            if nonce_key in self._nonces:
                raise invalid_login()
            self._nonces[nonce_key] = float(stamp)

    def _purge_nonces(self) -> None:
        oldest = min(self._now_candidates()) - 2 * TBA_TIMESTAMP_TOLERANCE
        stale = [key for key, stamp in self._nonces.items() if stamp < oldest]
        for key in stale:
            del self._nonces[key]

    def _now_candidates(self) -> tuple[int, ...]:
        """Sandbox time and wall time (they differ once tests advance the sandbox clock)."""
        return (int(self._clock.now().timestamp()), int(time.time()))

    def tokens(self, account_id: str) -> list[AccessToken]:
        """Access tokens issued for the account (for the admin overview)."""
        with self._lock:
            return [t for t in self._tokens.values() if t.account_id == account_id]


def _hex(rng: random.Random, nbytes: int) -> str:
    return rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()


def _b64(rng: random.Random, nbytes: int) -> str:
    return _b64url(rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big"))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unverified_header(token: str) -> dict[str, object] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        raw = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
        header = json.loads(raw)
    except (ValueError, binascii.Error):
        return None
    return header if isinstance(header, dict) else None


def _scopes(value: object) -> frozenset[str]:
    if isinstance(value, str):
        parts = value.replace(",", " ").split()
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = [p.strip() for v in value for p in v.split(",")]
    else:
        return frozenset()
    return frozenset(p for p in parts if p)


def _normalise_url(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def _audience_ok(aud: object, audiences: Iterable[str]) -> bool:
    wanted = {_normalise_url(a) for a in audiences}
    values = aud if isinstance(aud, list) else [aud]
    return any(isinstance(v, str) and _normalise_url(v) in wanted for v in values)


def _query_params(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)
