"""Encryption at rest for the OAuth tokens the store keeps.

Tokens are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from
``cryptography``) under a key taken from the environment, never from the config
file or the database. Several comma-separated keys may be given: the first
encrypts, all decrypt, so a key can be rotated without downtime.

Stored values carry a prefix: ``fernet:`` for encrypted ones; a value without a
prefix is a plain token written before encryption was turned on, and is
re-encrypted the next time it is written.
"""

from __future__ import annotations

import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["DEFAULT_KEY_ENV", "TokenCipher", "TokenKeyError", "generate_key"]

DEFAULT_KEY_ENV = "CONNECTOR_TOKEN_KEY"
_PREFIX = "fernet:"


class TokenKeyError(Exception):
    """The token key is missing, malformed, or does not open a stored token."""


def generate_key() -> str:
    """A new random key, in the form the environment variable takes."""
    return Fernet.generate_key().decode()


class TokenCipher:
    """Encrypts and decrypts stored tokens.

    Args:
        keys: one or more Fernet keys (urlsafe base64 of 32 bytes); the first encrypts.
        source: where the keys came from, for messages (e.g. the variable's name).
    """

    def __init__(self, keys: list[str], *, source: str = "key") -> None:
        if not keys:
            raise TokenKeyError(f"{source} holds no key")
        try:
            self._fernet = MultiFernet([Fernet(k.strip().encode()) for k in keys])
        except (ValueError, TypeError):
            raise TokenKeyError(
                f"{source} is not a valid key (32 url-safe base64-encoded bytes); generate one with "
                f'python -c "from connector.crypto import generate_key; print(generate_key())"'
            ) from None
        self.source = source

    @classmethod
    def from_env(cls, name: str = DEFAULT_KEY_ENV) -> TokenCipher | None:
        """The cipher of the keys in environment variable ``name``, or None if unset."""
        value = os.environ.get(name, "").strip()
        if not value:
            return None
        return cls([k for k in value.split(",") if k.strip()], source=f"${name}")

    def encrypt(self, value: str | None) -> str | None:
        """Encrypt ``value`` for storage (None stays None)."""
        if value is None:
            return None
        return _PREFIX + self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, value: str | None) -> str | None:
        """Open a stored value; plain legacy values pass through unchanged."""
        if value is None or not value.startswith(_PREFIX):
            return value
        try:
            return self._fernet.decrypt(value[len(_PREFIX) :].encode()).decode()
        except InvalidToken:
            raise TokenKeyError(
                f"a stored token cannot be decrypted with {self.source}: the key changed; put the "
                f"old key after the new one (comma-separated) to rotate"
            ) from None


def open_value(cipher: TokenCipher | None, value: str | None) -> str | None:
    """Decrypt with ``cipher`` if there is one; refuse encrypted values without it."""
    if value is not None and value.startswith(_PREFIX):
        if cipher is None:
            raise TokenKeyError(
                f"stored tokens are encrypted but ${DEFAULT_KEY_ENV} is not set; set it to the key "
                f"they were written with"
            )
        return cipher.decrypt(value)
    return value


def seal_value(cipher: TokenCipher | None, value: str | None) -> str | None:
    """Encrypt with ``cipher`` if there is one."""
    return cipher.encrypt(value) if cipher is not None else value
