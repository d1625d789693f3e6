"""Declarative mappings: unified records ⇄ provider payloads, as data.

A mapping file (``connector/mappings/<provider>.toml``) says, for each unified
entity, how each unified field is read from a provider payload (a JMESPath
expression, optionally with a ``type`` conversion and an ``enum`` table), and
how a provider payment payload is written from a unified payment request
(dotted provider path → JMESPath over the request). No code, no ``eval``.
Everything is compiled and checked when loaded; a mistake raises
:class:`MappingError` naming the file, the key and the problem.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import jmespath
import jmespath.exceptions
from jmespath.parser import ParsedResult
from sqlmodel import SQLModel

from connector.money import to_decimal

__all__ = ["EntityMapping", "MappingError", "Mapping_", "load_mapping", "parse_ms_date"]

_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


class MappingError(Exception):
    """A mapping file that cannot be used."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")
        self.file, self.key, self.problem = file, key, problem


def parse_ms_date(value: str) -> datetime:
    """Parse Microsoft JSON dates ``/Date(1552348800000+0000)/`` to aware UTC.

    The offset, when present, only says in which zone the value was *shown*;
    the milliseconds are since the Unix epoch in UTC.
    """
    m = _MS_DATE.match(value.strip())
    if not m:
        raise ValueError(f"not a /Date(ms)/ value: {value!r}")
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(m.group(1)))


def _to_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value)
    if text.startswith("/Date("):
        return parse_ms_date(text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _to_date(value: Any) -> date | None:
    if value is None or value == "":
        return None
    text = str(value)
    if text.startswith("/Date("):
        # Xero renders a calendar date as UTC midnight: the UTC date is the date.
        return parse_ms_date(text).date()
    return date.fromisoformat(text[:10])


def _to_decimal(value: Any) -> Decimal | None:
    return None if value is None else to_decimal(value)


def _to_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _to_bool(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)


_READ_TYPES: dict[str, Callable[[Any], Any]] = {
    "str": _to_str,
    "decimal": _to_decimal,
    "datetime": _to_datetime,
    "date": _to_date,
    "bool": _to_bool,
    "raw": lambda v: v,
}


def _field_path(node: Any) -> tuple[str, ...] | None:
    """``("Contact", "Name")`` for a JMESPath AST of plain fields, else None."""
    if not isinstance(node, dict):
        return None
    if node.get("type") == "field":
        return (str(node["value"]),)
    if node.get("type") == "subexpression":
        parts: tuple[str, ...] = ()
        for child in node.get("children") or []:
            sub = _field_path(child)
            if sub is None:
                return None
            parts += sub
        return parts
    return None


def field_getter(expr: Any) -> Callable[[Any], Any]:
    """A plain dict lookup for a path of plain fields (``Contact.Name``), JMESPath's
    ``search`` for anything else: the same results, without the interpreter's cost."""
    path = _field_path(getattr(expr, "parsed", None))
    if path is None:
        search: Callable[[Any], Any] = expr.search
        return search
    if len(path) == 1:
        key = path[0]
        return lambda payload: payload.get(key) if isinstance(payload, dict) else None

    def lookup(payload: Any) -> Any:
        for key in path:
            if not isinstance(payload, dict):
                return None
            payload = payload.get(key)
        return payload

    return lookup


@dataclass(frozen=True)
class _Field:
    name: str
    expr: ParsedResult
    convert: Callable[[Any], Any]
    enum: Mapping[str, str] | None
    default: Any


@dataclass(frozen=True)
class EntityMapping:
    """How one unified entity is read from one provider's payload."""

    entity: str
    fields: tuple[_Field, ...]

    @functools.cached_property
    def _getters(self) -> tuple[Callable[[Any], Any], ...]:
        return tuple(field_getter(f.expr) for f in self.fields)

    def read(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Return the unified field values found in ``payload``."""
        out: dict[str, Any] = {}
        for f, get in zip(self.fields, self._getters, strict=True):
            value = get(payload)
            if f.enum is not None and value is not None:
                key = str(value).upper()
                value = f.enum.get(key, f.enum.get("*", str(value).lower()))
            value = f.convert(value)
            out[f.name] = f.default if value is None else value
        return out


@dataclass(frozen=True)
class Mapping_:
    """A provider's whole mapping: readers per entity and the payment writer."""

    provider: str
    source: str
    readers: dict[str, EntityMapping]
    payment_writer: tuple[tuple[tuple[str, ...], ParsedResult], ...]
    constants: dict[str, Any] = field(default_factory=dict)

    def reader(self, entity: str) -> EntityMapping:
        """The reader for ``entity`` (``invoice``, ``payment``…)."""
        try:
            return self.readers[entity]
        except KeyError:
            raise MappingError(self.source, entity, "no [read] table for this entity") from None

    def write_payment(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Build a provider payment payload from a unified payment request."""
        payload: dict[str, Any] = {}
        for path, expr in self.payment_writer:
            value = expr.search(request)
            if value is None:
                continue
            node = payload
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        return payload


def _compile(file: str, key: str, text: Any) -> ParsedResult:
    if not isinstance(text, str) or not text.strip():
        raise MappingError(file, key, "expected a JMESPath expression string")
    try:
        return jmespath.compile(text)
    except jmespath.exceptions.JMESPathError as exc:
        raise MappingError(file, key, f"bad JMESPath expression {text!r}: {exc}") from None


def parse_mapping(
    doc: dict[str, Any],
    *,
    source: str,
    models: Mapping[str, type[SQLModel]],
    write_fields: frozenset[str],
) -> Mapping_:
    """Compile and check a parsed mapping document.

    Args:
        doc: the TOML document.
        source: file name for messages.
        models: unified model per entity name; read targets must be its fields.
        write_fields: the names a payment writer expression may refer to.
    """
    provider = doc.get("provider")
    if not isinstance(provider, str):
        raise MappingError(source, "provider", 'missing (e.g. provider = "xero")')
    enums = doc.get("enums", {})
    if not isinstance(enums, dict):
        raise MappingError(source, "enums", "must be a table of tables")
    readers: dict[str, EntityMapping] = {}
    for entity, table in doc.get("read", {}).items():
        if entity not in models:
            raise MappingError(source, f"read.{entity}", f"unknown entity; known: {sorted(models)}")
        known = set(models[entity].model_fields)
        fields: list[_Field] = []
        for name, spec in table.items():
            key = f"read.{entity}.{name}"
            if name not in known:
                raise MappingError(source, key, f"{entity} has no field {name!r}")
            if isinstance(spec, str):
                spec = {"expr": spec}
            if not isinstance(spec, dict):
                raise MappingError(source, key, "expected an expression or a table")
            extra = set(spec) - {"expr", "type", "enum", "default"}
            if extra:
                raise MappingError(source, key, f"unknown option(s) {sorted(extra)}")
            type_name = spec.get("type", "str")
            if type_name not in _READ_TYPES:
                raise MappingError(
                    source, key, f"unknown type {type_name!r}; use {sorted(_READ_TYPES)}"
                )
            enum_name = spec.get("enum")
            enum = None
            if enum_name is not None:
                if enum_name not in enums:
                    raise MappingError(
                        source, key, f"enum {enum_name!r} is not defined under [enums]"
                    )
                enum = {str(k).upper(): str(v) for k, v in enums[enum_name].items()}
            fields.append(
                _Field(
                    name,
                    _compile(source, key, spec.get("expr")),
                    _READ_TYPES[type_name],
                    enum,
                    spec.get("default"),
                )
            )
        readers[entity] = EntityMapping(entity, tuple(fields))
    writer: list[tuple[tuple[str, ...], ParsedResult]] = []
    for path, expr_text in doc.get("write", {}).get("payment", {}).items():
        key = f"write.payment.{path}"
        expr = _compile(source, key, expr_text)
        names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(expr_text))) - {
            "null",
            "true",
            "false",
        }
        # A reference to a field the request does not have would silently
        # write nothing; catch the typo at load time instead.
        unknown = {n for n in names if n not in write_fields and not str(expr_text).startswith("`")}
        if unknown:
            raise MappingError(
                source,
                key,
                f"refers to unknown request field(s) {sorted(unknown)}; "
                f"known: {sorted(write_fields)}",
            )
        writer.append((tuple(path.split(".")), expr))
    return Mapping_(provider, source, readers, tuple(writer), dict(doc.get("constants", {})))


def _merge(
    base: dict[str, Any], override: Mapping[str, Any], path: str, source: str
) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``: tables merge, values replace."""
    out = dict(base)
    for key, value in override.items():
        here = f"{path}.{key}" if path else str(key)
        if isinstance(value, Mapping):
            current = out.get(key, {})
            if not isinstance(current, dict):
                raise MappingError(source, here, "is a value in the shipped mapping, not a table")
            out[key] = _merge(current, value, here, source)
        else:
            out[key] = value
    return out


#: Top-level tables a connection may override (the provider name may not change).
OVERRIDABLE = frozenset({"read", "write", "enums", "constants"})


def load_mapping(
    provider: str,
    *,
    models: Mapping[str, type[SQLModel]],
    write_fields: frozenset[str],
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str = "connection mapping",
) -> Mapping_:
    """Load the shipped mapping of ``provider`` (or the file at ``path``).

    Args:
        overrides: a connection's ``mapping`` table from the config, merged over
            the shipped mapping key by key (e.g. ``write.payment.Reference``) and
            validated like the file itself; a mistake names ``overrides_source``.
    """
    if path is None:
        ref = resources.files("connector") / "mappings" / f"{provider}.toml"
        source = f"connector/mappings/{provider}.toml"
        text = ref.read_text(encoding="utf-8")
    else:
        source = str(path)
        text = path.read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(source, "-", f"not valid TOML ({exc})") from None
    if overrides:
        unknown = set(overrides) - OVERRIDABLE
        if unknown:
            raise MappingError(
                overrides_source,
                sorted(unknown)[0],
                f"cannot be overridden; use one of {sorted(OVERRIDABLE)}",
            )
        doc = _merge(doc, overrides, "", overrides_source)
        source = overrides_source
    return parse_mapping(doc, source=source, models=models, write_fields=write_fields)
