"""Structured logging (structlog): JSON lines off a TTY, readable console on one.

Secrets never reach a log line. Two guards, both always on:

* keys that name a secret (``authorization``, ``*token*``, ``*secret*``,
  ``password``…) have their values replaced, at any depth;
* every secret value the process knows (registered from the config at load
  time, and every token we obtain) is masked wherever it appears inside any
  string, including stdlib log records from libraries (httpx, uvicorn).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "get_logger", "redact", "register_secret"]

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"(authorization|token|secret|password|passwd|api[-_]?key|cookie|assertion|signature)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]+", re.IGNORECASE)
# Secrets shorter than this are too likely to collide with ordinary words.
_MIN_SECRET_LEN = 6

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is masked in every later log line."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _secrets_lock:
            _secrets.add(value)


def _mask_text(text: str) -> str:
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(value: Any, key: str | None = None) -> Any:
    """Return ``value`` with secrets masked (keys by name, values by content)."""
    if (
        key is not None
        and _SECRET_KEY.search(key)
        and value not in (None, "")
        and not isinstance(value, Mapping | list | tuple)
    ):
        return REDACTED
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, BaseException):
        return _mask_text(repr(value))
    return value


def _redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for k in list(event_dict.keys()):
        event_dict[k] = redact(event_dict[k], k)
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger.

    Args:
        level: minimum level name.
        fmt: ``json``, ``console``, or ``auto`` (console on a TTY, JSON otherwise).
        stream: where lines go (default ``sys.stderr``).
    """
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(default=str)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_processor,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _redact_processor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_connector_handler", False):
            root.removeHandler(old)
    handler._connector_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries are chatty at INFO; their lines still pass the redaction above.
    for noisy in ("httpx", "httpcore", "uvicorn.access", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str | None = None) -> Any:
    """Return a structlog logger bound to ``name``."""
    return structlog.get_logger(name)
