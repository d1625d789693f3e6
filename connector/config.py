"""TOML config → typed, validated settings.

A bad file never starts anything: :class:`ConfigError` names the file, the key,
what is wrong and how to fix it. ``${ENV_VAR}`` (or ``${ENV_VAR:-default}``) in
any string value is replaced from the environment, so secrets stay out of the
file; every secret value is registered with the log redactor on load.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from connector.crypto import TokenCipher, TokenKeyError
from connector.logging import register_secret

__all__ = [
    "ApiSettings",
    "ConfigError",
    "ConnectionSettings",
    "DaemonSettings",
    "DatabaseSettings",
    "EventEndpoint",
    "EventsSettings",
    "LoggingSettings",
    "SecuritySettings",
    "Settings",
    "load_settings",
    "parse_settings",
    "token_cipher",
]

Provider = Literal["xero", "quickbooks", "netsuite"]
_TENANT_KEY: dict[str, str] = {
    "xero": "tenant_id",
    "quickbooks": "realm_id",
    "netsuite": "account_id",
}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A config problem, said so that a person can fix it."""

    def __init__(self, file: str | Path, key: str, problem: str, fix: str) -> None:
        self.file = str(file)
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.file}: {key}: {problem}. Fix: {fix}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Strict):
    """``[database]``."""

    url: str = Field(default="sqlite:///connector.db", min_length=1)


class LoggingSettings(_Strict):
    """``[logging]``."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


class DaemonSettings(_Strict):
    """``[daemon]``: intervals of the scheduler's ticks and the life cycle."""

    pull_interval_seconds: float = Field(default=300.0, gt=0)
    push_interval_seconds: float = Field(default=5.0, gt=0)
    lease_seconds: float = Field(default=120.0, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)


class ApiSettings(_Strict):
    """``[api]``: the daemon's HTTP server: provider webhooks in, the intake API (``/v1``)."""

    enabled: bool = True
    host: str = "127.0.0.1"  # loopback unless a person decides otherwise
    port: int = Field(default=8780, ge=0, le=65535)  # 0 = any free port (tests)
    # Bearer token that protects /v1 (the intake API) and the operator page;
    # put it in the environment: token = "${CONNECTOR_API_TOKEN}".
    token: SecretStr | None = None


#: Events the connector sends out (``[[events.endpoints]]`` may pick a subset).
EVENT_TYPES = (
    "allocation.applied",
    "allocation.already_settled",
    "allocation.rejected",
    "allocation.conflict",
    "connection.needs_attention",
)
EventType = Literal[
    "allocation.applied",
    "allocation.already_settled",
    "allocation.rejected",
    "allocation.conflict",
    "connection.needs_attention",
]


class EventEndpoint(_Strict):
    """One ``[[events.endpoints]]``: a URL that receives signed event webhooks."""

    url: str = Field(min_length=1, pattern=r"^https?://")
    secret: SecretStr  # HMAC-SHA256 key; put it in the environment
    events: list[EventType] = Field(default_factory=lambda: list(get_args(EventType)))
    enabled: bool = True


class EventsSettings(_Strict):
    """``[events]``: signed webhooks out, retried with backoff (at-least-once)."""

    endpoints: list[EventEndpoint] = Field(default_factory=list)
    max_attempts: int = Field(default=15, ge=1, le=100)
    timeout_seconds: float = Field(default=10.0, gt=0)
    backoff_first_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=3600.0, gt=0)
    deliver_interval_seconds: float = Field(default=2.0, gt=0)


class SecuritySettings(_Strict):
    """``[security]``: encryption at rest of the OAuth tokens in the database."""

    # auto: encrypt when the key variable is set; required: refuse to start
    # without it; off: store tokens as they are (tests, throw-away sandboxes).
    encrypt_tokens: Literal["auto", "required", "off"] = "auto"
    token_key_env: str = Field(default="CONNECTOR_TOKEN_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConnectionSettings(_Strict):
    """One ``[[connections]]`` table: a ledger (one tenant/realm/account) to keep in step."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    provider: Provider
    base_url: str = Field(min_length=1)
    token_url: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    # OAuth 2.0 refresh-token grant (Xero, QuickBooks). NetSuite uses client
    # credentials with a JWT assertion (certificate_id + private_key_path) or
    # Token-Based Auth (token_id + token_secret) instead.
    refresh_token: SecretStr | None = None
    tenant_id: str | None = None
    realm_id: str | None = None
    account_id: str | None = None
    certificate_id: str | None = None
    private_key_path: str | None = None
    token_id: str | None = None
    token_secret: SecretStr | None = None
    payment_account_code: str | None = None
    bill_payment_account_code: str | None = None
    bill_payment_type: Literal["Check", "CreditCard"] = "Check"
    # The ledger's own time zone (IANA name): NetSuite's SuiteQL shows and compares
    # date-times in the account's zone; the store keeps UTC.
    timezone: str = "UTC"
    # Verifies provider webhooks: Xero's webhook signing key, QuickBooks' verifier token.
    webhook_secret: SecretStr | None = None
    # Overrides of the shipped mapping, same shape as connector/mappings/<provider>.toml,
    # e.g. [connections.mapping.write.payment] Reference = "reference".
    mapping: dict[str, Any] = Field(default_factory=dict)
    reference_prefix: str = Field(default="cx", pattern=r"^[A-Za-z0-9-]{1,10}$")
    page_size: int = Field(default=100, ge=1, le=1000)
    # Push policies. overpayment: what to do when an allocation exceeds the
    # document's open balance: refuse it (reject), pay only the balance
    # (apply_up_to_balance), or send the whole amount and leave the rest as the
    # provider's unapplied credit (leave_unapplied).
    overpayment: Literal["reject", "apply_up_to_balance", "leave_unapplied"] = "reject"
    # Payments per push call; at most (and by default) the provider's own limit.
    max_batch: int | None = Field(default=None, ge=1, le=100)
    # Read the documents back after a payment to record their new balance (one read
    # per batch). Off saves that request under tight rate limits; the balances then
    # come with the next pull.
    confirm_reads: bool = True
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_inline_wait_seconds: float = Field(default=5.0, ge=0)
    enabled: bool = True

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone (e.g. America/Los_Angeles)"
            ) from None
        return value

    @model_validator(mode="after")
    def _tenant_key_present(self) -> ConnectionSettings:
        key = _TENANT_KEY[self.provider]
        if not getattr(self, key):
            raise ValueError(f"missing:{key}")
        if self.provider != "netsuite" and self.refresh_token is None:
            raise ValueError("missing:refresh_token")
        if self.provider == "netsuite" and self.refresh_token is None:
            jwt = self.certificate_id and self.private_key_path
            tba = self.token_id and self.token_secret
            if not (jwt or tba):
                raise ValueError("missing:certificate_id")
        return self

    @property
    def tenant(self) -> str:
        """The provider's tenant/realm/account id for this connection."""
        value = getattr(self, _TENANT_KEY[self.provider])
        assert isinstance(value, str)
        return value


class Settings(_Strict):
    """The whole config file."""

    database: DatabaseSettings = DatabaseSettings()
    logging: LoggingSettings = LoggingSettings()
    daemon: DaemonSettings = DaemonSettings()
    security: SecuritySettings = SecuritySettings()
    api: ApiSettings = ApiSettings()
    events: EventsSettings = EventsSettings()
    connections: list[ConnectionSettings] = Field(default_factory=list)
    source: str = "<memory>"

    def connection(self, connection_id: str) -> ConnectionSettings:
        """Return the connection called ``connection_id``.

        Raises:
            ConfigError: if there is none, listing the ones there are.
        """
        for conn in self.connections:
            if conn.id == connection_id:
                return conn
        known = ", ".join(c.id for c in self.connections) or "none"
        raise ConfigError(
            self.source,
            f"connections[id={connection_id!r}]",
            "no connection with this id",
            f"use one of: {known}",
        )


def token_cipher(settings: Settings) -> TokenCipher | None:
    """The cipher for stored tokens that ``[security]`` asks for.

    Raises:
        ConfigError: encryption is required and the key variable is unset or invalid.
    """
    sec = settings.security
    if sec.encrypt_tokens == "off":
        return None
    try:
        cipher = TokenCipher.from_env(sec.token_key_env)
    except TokenKeyError as exc:
        raise ConfigError(
            settings.source,
            "security.token_key_env",
            str(exc),
            f"export {sec.token_key_env}=<a key from connector.crypto.generate_key()>",
        ) from None
    if cipher is None and sec.encrypt_tokens == "required":
        raise ConfigError(
            settings.source,
            "security.encrypt_tokens",
            f"token encryption is required but ${sec.token_key_env} is not set",
            f'export {sec.token_key_env}="$(python -c "from connector.crypto import generate_key; '
            f'print(generate_key())")" and keep it safe: stored tokens need it',
        )
    return cipher


def _substitute_env(value: Any, path: str, file: Path) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(
                file,
                path,
                f"refers to environment variable {name}, which is not set",
                f"export {name}=… before starting, or write ${{{name}:-default}}",
            )

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute_env(v, f"{path}.{k}" if path else k, file) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, f"{path}[{i}]", file) for i, v in enumerate(value)]
    return value


def _key_path(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                cid = node[item].get("id")
                if cid:
                    label = f"[{item}] (id={cid!r})"
            parts.append(label)
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(f".{item}" if parts else str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


def _fields_of(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for item in loc[:-1]:
        if isinstance(item, int):
            continue
        if item == "connections":
            model = ConnectionSettings
        elif item in Settings.model_fields and item != "connections":
            annotation = Settings.model_fields[item].annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model = annotation
    return [f for f in model.model_fields if f != "source"]


def _explain(err: Any, raw: dict[str, Any], file: Path) -> ConfigError:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    etype: str = err["type"]
    msg: str = err["msg"]
    if etype == "value_error" and "missing:" in msg:
        missing = msg.split("missing:", 1)[1].strip()
        provider = _dig(raw, loc).get("provider", "?") if isinstance(_dig(raw, loc), dict) else "?"
        return ConfigError(
            file,
            _key_path((*loc, missing), raw),
            f"required for provider {provider!r} but missing",
            f'add {missing} = "…" to this [[connections]] table',
        )
    key = _key_path(loc, raw)
    last = loc[-1] if loc else ""
    if etype == "missing":
        return ConfigError(file, key, "required key is missing", f'add {last} = "…"')
    if etype == "extra_forbidden":
        fields = _fields_of(loc)
        close = difflib.get_close_matches(str(last), fields, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(fields)}"
        return ConfigError(file, key, "unknown key", f"remove it ({hint})")
    if etype == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return ConfigError(
            file, key, f"{err.get('input')!r} is not allowed", f"use one of {expected}"
        )
    return ConfigError(file, key, msg, "correct the value (see config.example.toml)")


def _dig(raw: Any, loc: tuple[int | str, ...]) -> Any:
    node = raw
    for item in loc:
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def parse_settings(raw: dict[str, Any], file: Path) -> Settings:
    """Validate an already-parsed TOML document."""
    data = _substitute_env(raw, "", file)
    try:
        settings = Settings.model_validate({**data, "source": str(file)})
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key also shows up as the real key "missing": explain the typo.
        errors.sort(key=lambda e: e["type"] != "extra_forbidden")
        raise _explain(errors[0], data, file) from None
    seen: set[str] = set()
    for i, conn in enumerate(settings.connections):
        if conn.id in seen:
            raise ConfigError(
                file,
                f"connections[{i}].id",
                f"duplicate connection id {conn.id!r}",
                "give every [[connections]] table its own id",
            )
        seen.add(conn.id)
        register_secret(conn.client_secret.get_secret_value())
        for secret in (conn.refresh_token, conn.token_secret, conn.webhook_secret):
            if secret is not None:
                register_secret(secret.get_secret_value())
    if settings.api.token is not None:
        register_secret(settings.api.token.get_secret_value())
    for endpoint in settings.events.endpoints:
        register_secret(endpoint.secret.get_secret_value())
    return settings


def load_settings(path: str | Path) -> Settings:
    """Read, substitute and validate the TOML file at ``path``.

    Raises:
        ConfigError: for a missing file, bad TOML, or an invalid value.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            file,
            "-",
            "file not found",
            "pass --config with an existing file (start from config.example.toml)",
        ) from None
    except OSError as exc:
        raise ConfigError(
            file,
            "-",
            f"cannot read the file ({exc.strerror})",
            "check the path and its permissions",
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            file,
            "-",
            f"not valid TOML ({exc})",
            "fix the syntax at that line (strings need quotes)",
        ) from None
    return parse_settings(raw, file)
