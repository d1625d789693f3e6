"""A small interpreter for Xero's ``where`` and ``order`` query parameters.

Supported grammar (keywords case-insensitive)::

    expr       := and_expr (("OR" | "||") and_expr)*
    and_expr   := unary (("AND" | "&&") unary)*
    unary      := ("NOT" | "!") unary | "(" expr ")" | comparison
    comparison := FIELD op value | FIELD "." method "(" value ")" | FIELD
    op         := "==" | "=" | "!=" | "<>" | ">" | ">=" | "<" | "<="
    method     := Contains | StartsWith | EndsWith
    value      := "string" | number | guid("...") | DateTime(y, m, d[, h, mi, s])
                | true | false | null

A bare ``FIELD`` is a boolean test (``IsReconciled``). String comparisons ignore case
(Xero's store compares strings case-insensitively). Fields are resolved through a
per-entity table; an unknown field raises :class:`WhereError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

__all__ = ["FieldTable", "WhereError", "compile_where", "sort_key_for_order"]

T = TypeVar("T")
Predicate = Callable[[T], bool]


class WhereError(ValueError):
    """The ``where``/``order`` expression cannot be parsed or names an unknown field."""


@dataclass(frozen=True)
class FieldTable(Generic[T]):
    """How to read the filterable fields of one entity type.

    Attributes:
        type_name: Entity name used in error messages (``Invoice``).
        fields: Field path (``Contact.ContactID``) → getter; matched case-insensitively.
    """

    type_name: str
    fields: Mapping[str, Callable[[T], Any]]

    def getter(self, name: str) -> Callable[[T], Any]:
        """Return the getter for ``name`` (case-insensitive).

        Raises:
            WhereError: If the entity has no such field.
        """
        wanted = name.lower()
        for key, getter in self.fields.items():
            if key.lower() == wanted:
                return getter
        raise WhereError(f"No property or field '{name}' exists in type '{self.type_name}'")


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<>|>=|<=|&&|\|\||[=<>!(),])
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)

_METHODS = {"contains", "startswith", "endswith"}


@dataclass
class _Tok:
    kind: str
    text: str


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise WhereError(f"Syntax error at position {pos} in '{text}'")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "ident" and value.lower() in {"and", "or", "not"}:
            kind = "op"
            value = {"and": "&&", "or": "||", "not": "!"}[value.lower()]
        tokens.append(_Tok(kind, value))
        pos = match.end()
    return tokens


class _Parser(Generic[T]):
    def __init__(self, text: str, table: FieldTable[T]) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.table = table

    def _peek(self) -> _Tok | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, text: str | None = None) -> _Tok:
        tok = self._peek()
        if tok is None or (text is not None and tok.text != text):
            expected = f"'{text}'" if text else "more input"
            raise WhereError(f"Syntax error: expected {expected} in '{self.text}'")
        self.pos += 1
        return tok

    def _accept(self, text: str) -> bool:
        tok = self._peek()
        if tok is not None and tok.kind == "op" and tok.text == text:
            self.pos += 1
            return True
        return False

    def parse(self) -> Predicate[T]:
        pred = self._expr()
        if self._peek() is not None:
            raise WhereError(f"Syntax error near '{self._peek().text}' in '{self.text}'")  # type: ignore[union-attr]
        return pred

    def _expr(self) -> Predicate[T]:
        terms = [self._and()]
        while self._accept("||"):
            terms.append(self._and())
        if len(terms) == 1:
            return terms[0]
        return lambda item: any(term(item) for term in terms)

    def _and(self) -> Predicate[T]:
        terms = [self._unary()]
        while self._accept("&&"):
            terms.append(self._unary())
        if len(terms) == 1:
            return terms[0]
        return lambda item: all(term(item) for term in terms)

    def _unary(self) -> Predicate[T]:
        if self._accept("!"):
            inner = self._unary()
            return lambda item: not inner(item)
        if self._accept("("):
            inner = self._expr()
            self._take(")")
            return inner
        return self._comparison()

    def _comparison(self) -> Predicate[T]:
        tok = self._take()
        if tok.kind != "ident":
            raise WhereError(f"Syntax error: expected a field name, got '{tok.text}'")
        path = tok.text
        head, _, method = path.rpartition(".")
        if head and method.lower() in _METHODS and self._accept("("):
            needle = self._value()
            self._take(")")
            getter = self.table.getter(head)
            return _method_predicate(getter, method.lower(), needle)
        getter = self.table.getter(path)
        nxt = self._peek()
        if (
            nxt is None
            or nxt.kind != "op"
            or nxt.text not in {"==", "=", "!=", "<>", ">", ">=", "<", "<="}
        ):
            return lambda item: getter(item) is True
        op = self._take().text
        literal = self._value()
        return _compare_predicate(getter, op, literal)

    def _value(self) -> Any:
        tok = self._take()
        if tok.kind == "string":
            return re.sub(r"\\(.)", r"\1", tok.text[1:-1])
        if tok.kind == "number":
            return Decimal(tok.text)
        if tok.kind == "ident":
            name = tok.text.lower()
            if name in {"true", "false"}:
                return name == "true"
            if name == "null":
                return None
            if name == "guid":
                self._take("(")
                value = self._value()
                self._take(")")
                return str(value).lower()
            if name == "datetime":
                self._take("(")
                parts = [int(self._value())]
                while self._accept(","):
                    parts.append(int(self._value()))
                self._take(")")
                if not 3 <= len(parts) <= 6:
                    raise WhereError(f"DateTime needs 3 to 6 parts, got {len(parts)}")
                y, mo, d, h, mi, sec = (*parts, 0, 0, 0)[:6]
                try:
                    return datetime(y, mo, d, h, mi, sec, tzinfo=UTC)
                except ValueError as exc:
                    raise WhereError(f"Invalid DateTime{tuple(parts)}: {exc}") from None
        raise WhereError(f"Syntax error: unexpected '{tok.text}' in '{self.text}'")


def _normalise(field_value: Any, literal: Any) -> tuple[Any, Any]:
    """Bring a field value and a literal to comparable types."""
    if field_value is None or literal is None:
        return field_value, literal
    if isinstance(field_value, bool) or isinstance(literal, bool):
        return field_value, literal
    if isinstance(field_value, Decimal | int):
        try:
            return Decimal(field_value), Decimal(str(literal))
        except ArithmeticError:
            raise WhereError(f"'{literal}' is not a number") from None
    if isinstance(field_value, datetime):
        if isinstance(literal, datetime):
            return field_value, literal
        if isinstance(literal, str):
            try:
                parsed = datetime.fromisoformat(literal)
            except ValueError:
                raise WhereError(f"'{literal}' is not a date") from None
            return field_value, parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(field_value, date):
        if isinstance(literal, datetime):
            return field_value, literal.date()
        if isinstance(literal, str):
            try:
                return field_value, date.fromisoformat(literal[:10])
            except ValueError:
                raise WhereError(f"'{literal}' is not a date") from None
    return str(field_value).casefold(), str(literal).casefold()


def _compare_predicate(getter: Callable[[T], Any], op: str, literal: Any) -> Predicate[T]:
    if isinstance(literal, str) and op in {"==", "=", "!=", "<>"}:
        # The common case (Reference=="…", Type=="ACCREC") without the general
        # normalisation per item: the connector's lookups scan every payment.
        wanted = literal.casefold()
        equal = op in {"==", "="}
        general = _general_predicate(getter, op, literal)

        def string_predicate(item: T) -> bool:
            value = getter(item)
            if type(value) is str:
                return (value.casefold() == wanted) is equal
            return general(item)

        return string_predicate
    return _general_predicate(getter, op, literal)


def _general_predicate(getter: Callable[[T], Any], op: str, literal: Any) -> Predicate[T]:
    def predicate(item: T) -> bool:
        left, right = _normalise(getter(item), literal)
        if op in {"==", "="}:
            return bool(left == right)
        if op in {"!=", "<>"}:
            return bool(left != right)
        if left is None or right is None:
            return False
        try:
            if op == ">":
                return bool(left > right)
            if op == ">=":
                return bool(left >= right)
            if op == "<":
                return bool(left < right)
            return bool(left <= right)
        except TypeError:
            raise WhereError(f"Operator '{op}' is not compatible with '{literal}'") from None

    return predicate


def _method_predicate(getter: Callable[[T], Any], method: str, needle: Any) -> Predicate[T]:
    wanted = str(needle).casefold()

    def predicate(item: T) -> bool:
        value = getter(item)
        if value is None:
            return False
        text = str(value).casefold()
        if method == "contains":
            return wanted in text
        if method == "startswith":
            return text.startswith(wanted)
        return text.endswith(wanted)

    return predicate


def compile_where(text: str, table: FieldTable[T]) -> Predicate[T]:
    """Compile a ``where`` expression into a predicate over entities of ``table``.

    Raises:
        WhereError: On a syntax error or an unknown field. Field errors are raised at
            compile time, so a bad field fails even when nothing would match.
    """
    return _Parser(text, table).parse()


class _Reversed:
    """Wraps a sort key so that it sorts in descending order."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and bool(self.value == other.value)

    def __hash__(self) -> int:
        return hash(self.value)


def sort_key_for_order(order: str, table: FieldTable[T]) -> Callable[[T], list[Any]]:
    """Build a sort key from an ``order`` parameter such as ``"Date DESC, InvoiceNumber"``.

    ``None`` values sort first; the caller appends the entity ID as a tie-breaker.

    Raises:
        WhereError: On an unknown field or direction.
    """
    specs: list[tuple[Callable[[T], Any], bool]] = []
    for raw in order.split(","):
        words = raw.split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and words[1].upper() not in {"ASC", "DESC"}):
            raise WhereError(f"Invalid order clause '{raw.strip()}'")
        descending = len(words) == 2 and words[1].upper() == "DESC"
        specs.append((table.getter(words[0]), descending))

    def key(item: T) -> list[Any]:
        parts: list[Any] = []
        for getter, descending in specs:
            value = getter(item)
            if isinstance(value, str):
                value = value.casefold()
            part = (value is not None, value)
            parts.append(_Reversed(part) if descending else part)
        return parts

    return key
