"""A small SuiteQL (Oracle SQL dialect) engine over the ledger's tables.

Supported (what the samples and a sync connector need):

* ``SELECT [DISTINCT] <items> FROM <table> [[AS] alias]
  {[INNER | LEFT [OUTER]] JOIN <table> [[AS] alias] ON <cond>}
  [WHERE <cond>] [GROUP BY <exprs> [HAVING <cond>]] [ORDER BY <expr> [ASC|DESC]
  [NULLS FIRST|LAST], ...]``;
* items: ``*``, ``alias.*``, expressions with ``[AS] alias`` (no alias: ``exprN``);
* conditions: ``= <> != < > <= >=``, ``AND``/``OR``/``NOT``, ``[NOT] IN (...)``,
  ``IS [NOT] NULL``, ``[NOT] BETWEEN``, ``[NOT] LIKE``; ``+ - * / ||``;
* functions: ``BUILTIN.DF``, ``TO_DATE``, ``TO_TIMESTAMP``, ``TO_CHAR``, ``TO_NUMBER``,
  ``UPPER``, ``LOWER``, ``NVL``, ``COALESCE``, ``ABS``, ``ROUND``, ``TRUNC``,
  ``SYSDATE``/``CURRENT_DATE``/``CURRENT_TIMESTAMP``, aggregates ``COUNT SUM MIN MAX
  AVG``; Oracle date format models (``YYYY MM DD HH24 HH12 MI SS FF AM MON "text"``).

Results follow the recorded responses: column names lower-cased, NULL columns left out,
every value a string (numbers Oracle-style without trailing zeros, ``.5`` for 0.5,
booleans ``T``/``F``, dates and date-times in the account's date format ``M/D/YYYY``),
keys in alphabetical order after ``links``.

Anything else raises :class:`QueryError`, rendered by the routes as NetSuite's 400
``INVALID_PARAMETER`` "Invalid search query. Detailed unprocessed description
follows. ..." on ``q``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

__all__ = ["QueryError", "Result", "Table", "format_value", "run_query"]

UNSUPPORTED = "Search error occurred: Invalid or unsupported search."


class QueryError(Exception):
    """SuiteQL the engine cannot run; ``message`` follows NetSuite's prefix."""

    def __init__(self, message: str = UNSUPPORTED) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Table:
    """One queryable table.

    Attributes:
        name: Lower-cased table name.
        columns: Column names (lower case).
        rows: Column → value (None, str, int, Decimal, bool, date, aware datetime).
        display: Per row, column → ``BUILTIN.DF`` text where it differs from the value.
    """

    name: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    display: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Result:
    """Rows of strings (NULLs dropped), in result order."""

    rows: list[dict[str, str]]


# ---------------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|--[^\n]*)
  | (?P<str>'(?:[^']|'')*')
  | (?P<qid>"[^"]*")
  | (?P<num>\d+(?:\.\d*)?|\.\d+)
  | (?P<id>[A-Za-z_][A-Za-z0-9_$#]*)
  | (?P<op><>|!=|<=|>=|\|\||[=<>(),.*+\-/])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise QueryError()
        pos = match.end()
        kind = match.lastgroup or ""
        if kind == "ws":
            continue
        value = match.group(kind)
        if kind == "str":
            value = value[1:-1].replace("''", "'")
        elif kind == "qid":
            kind, value = "id", value[1:-1]
        out.append(_Tok(kind, value))
    out.append(_Tok("eof", ""))
    return out


# ---------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Lit:
    value: Any


@dataclass(frozen=True)
class Col:
    qualifier: str | None
    name: str


@dataclass(frozen=True)
class Func:
    name: str
    args: tuple[Any, ...]
    star: bool = False
    distinct: bool = False


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Any


@dataclass(frozen=True)
class Binary:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class InList:
    operand: Any
    items: tuple[Any, ...]
    negated: bool


@dataclass(frozen=True)
class IsNull:
    operand: Any
    negated: bool


@dataclass(frozen=True)
class Between:
    operand: Any
    low: Any
    high: Any
    negated: bool


@dataclass(frozen=True)
class Like:
    operand: Any
    pattern: Any
    negated: bool


@dataclass(frozen=True)
class Star:
    qualifier: str | None


@dataclass(frozen=True)
class TableRef:
    name: str
    alias: str


@dataclass(frozen=True)
class Join:
    kind: str  # "inner" | "left"
    table: TableRef
    on: Any


@dataclass(frozen=True)
class OrderItem:
    expr: Any
    desc: bool
    nulls_first: bool


@dataclass
class Select:
    distinct: bool
    items: list[tuple[Any, str | None]]
    table: TableRef
    joins: list[Join]
    where: Any
    group_by: list[Any]
    having: Any
    order_by: list[OrderItem]


_AGGREGATES = {"COUNT", "SUM", "MIN", "MAX", "AVG"}
_NOW_FUNCS = {"SYSDATE", "CURRENT_DATE", "CURRENT_TIMESTAMP", "SYSTIMESTAMP"}
_RESERVED = {
    "SELECT", "DISTINCT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "IS", "NULL", "AS",
    "ON", "JOIN", "INNER", "LEFT", "OUTER", "RIGHT", "FULL", "CROSS", "ORDER", "BY",
    "GROUP", "HAVING", "ASC", "DESC", "NULLS", "FIRST", "LAST", "BETWEEN", "LIKE",
    "UNION", "FETCH", "OFFSET", "LIMIT", "CASE", "WHEN", "THEN", "ELSE", "END",
}  # fmt: skip


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.pos = 0

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.pos + ahead, len(self.toks) - 1)]

    def kw(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "id" and tok.text.upper() in words

    def take_kw(self, *words: str) -> bool:
        if self.kw(*words):
            self.pos += 1
            return True
        return False

    def expect_kw(self, word: str) -> None:
        if not self.take_kw(word):
            raise QueryError()

    def op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.text in ops

    def take_op(self, *ops: str) -> str | None:
        if self.op(*ops):
            self.pos += 1
            return self.toks[self.pos - 1].text
        return None

    def expect_op(self, op: str) -> None:
        if self.take_op(op) is None:
            raise QueryError()

    def _alias_follows(self) -> bool:
        tok = self.peek()
        return tok.kind == "id" and tok.text.upper() not in _RESERVED

    def ident(self) -> str:
        tok = self.peek()
        if tok.kind != "id" or tok.text.upper() in _RESERVED:
            raise QueryError()
        self.pos += 1
        return tok.text

    # -------------------------------------------------------------- statement

    def parse(self) -> Select:
        self.expect_kw("SELECT")
        distinct = self.take_kw("DISTINCT")
        if not distinct:
            self.take_kw("ALL")
        items = [self.select_item()]
        while self.take_op(","):
            items.append(self.select_item())
        self.expect_kw("FROM")
        table = self.table_ref()
        joins: list[Join] = []
        while True:
            if self.take_kw("INNER"):
                self.expect_kw("JOIN")
                kind = "inner"
            elif self.take_kw("LEFT"):
                self.take_kw("OUTER")
                self.expect_kw("JOIN")
                kind = "left"
            elif self.take_kw("JOIN"):
                kind = "inner"
            else:
                break
            ref = self.table_ref()
            self.expect_kw("ON")
            joins.append(Join(kind, ref, self.expr()))
        where = self.expr() if self.take_kw("WHERE") else None
        group_by: list[Any] = []
        having = None
        if self.take_kw("GROUP"):
            self.expect_kw("BY")
            group_by.append(self.expr())
            while self.take_op(","):
                group_by.append(self.expr())
            if self.take_kw("HAVING"):
                having = self.expr()
        order_by: list[OrderItem] = []
        if self.take_kw("ORDER"):
            self.expect_kw("BY")
            order_by.append(self.order_item())
            while self.take_op(","):
                order_by.append(self.order_item())
        if self.peek().kind != "eof":
            raise QueryError()
        return Select(distinct, items, table, joins, where, group_by, having, order_by)

    def select_item(self) -> tuple[Any, str | None]:
        if self.take_op("*"):
            return Star(None), None
        tok, nxt, after = self.peek(), self.peek(1), self.peek(2)
        if tok.kind == "id" and nxt.text == "." and after.text == "*" and after.kind == "op":
            self.pos += 3
            return Star(tok.text.lower()), None
        expr = self.expr()
        alias: str | None = None
        if self.take_kw("AS") or self._alias_follows():
            alias = self.ident()
        return expr, alias

    def table_ref(self) -> TableRef:
        name = self.ident()
        alias = name
        if self.take_kw("AS") or self._alias_follows():
            alias = self.ident()
        return TableRef(name.lower(), alias.lower())

    def order_item(self) -> OrderItem:
        expr = self.expr()
        desc = False
        if self.take_kw("DESC"):
            desc = True
        else:
            self.take_kw("ASC")
        nulls_first = desc
        if self.take_kw("NULLS"):
            if self.take_kw("FIRST"):
                nulls_first = True
            else:
                self.expect_kw("LAST")
                nulls_first = False
        return OrderItem(expr, desc, nulls_first)

    # -------------------------------------------------------------- expressions

    def expr(self) -> Any:
        left = self.and_expr()
        while self.take_kw("OR"):
            left = Binary("OR", left, self.and_expr())
        return left

    def and_expr(self) -> Any:
        left = self.not_expr()
        while self.take_kw("AND"):
            left = Binary("AND", left, self.not_expr())
        return left

    def not_expr(self) -> Any:
        if self.take_kw("NOT"):
            return Unary("NOT", self.not_expr())
        return self.predicate()

    def predicate(self) -> Any:
        left = self.additive()
        op = self.take_op("=", "<>", "!=", "<", ">", "<=", ">=")
        if op is not None:
            return Binary("<>" if op == "!=" else op, left, self.additive())
        if self.take_kw("IS"):
            negated = self.take_kw("NOT")
            self.expect_kw("NULL")
            return IsNull(left, negated)
        negated = self.take_kw("NOT")
        if self.take_kw("IN"):
            self.expect_op("(")
            items = [self.additive()]
            while self.take_op(","):
                items.append(self.additive())
            self.expect_op(")")
            return InList(left, tuple(items), negated)
        if self.take_kw("BETWEEN"):
            low = self.additive()
            self.expect_kw("AND")
            return Between(left, low, self.additive(), negated)
        if self.take_kw("LIKE"):
            return Like(left, self.additive(), negated)
        if negated:
            raise QueryError()
        return left

    def additive(self) -> Any:
        left = self.term()
        while True:
            op = self.take_op("+", "-", "||")
            if op is None:
                return left
            left = Binary(op, left, self.term())

    def term(self) -> Any:
        left = self.unary()
        while True:
            op = self.take_op("*", "/")
            if op is None:
                return left
            left = Binary(op, left, self.unary())

    def unary(self) -> Any:
        if self.take_op("-"):
            return Unary("-", self.unary())
        if self.take_op("+"):
            return self.unary()
        return self.primary()

    def primary(self) -> Any:
        tok = self.peek()
        if tok.kind == "num":
            self.pos += 1
            return Lit(Decimal(tok.text))
        if tok.kind == "str":
            self.pos += 1
            return Lit(tok.text)
        if self.take_op("("):
            inner = self.expr()
            self.expect_op(")")
            return inner
        if tok.kind != "id":
            raise QueryError()
        upper = tok.text.upper()
        if upper == "NULL":
            self.pos += 1
            return Lit(None)
        if upper in _NOW_FUNCS and not (self.peek(1).kind == "op" and self.peek(1).text == "("):
            self.pos += 1
            return Func(upper, ())
        if upper in _RESERVED:
            raise QueryError()
        self.pos += 1
        parts = [tok.text]
        while self.op(".") and self.peek(1).kind == "id":
            parts.append(self.peek(1).text)
            self.pos += 2
        if self.take_op("("):
            name = ".".join(p.upper() for p in parts)
            if self.take_op("*"):
                self.expect_op(")")
                return Func(name, (), star=True)
            distinct = self.take_kw("DISTINCT")
            args: list[Any] = []
            if not self.op(")"):
                args.append(self.expr())
                while self.take_op(","):
                    args.append(self.expr())
            self.expect_op(")")
            return Func(name, tuple(args), distinct=distinct)
        if len(parts) == 1:
            return Col(None, parts[0].lower())
        if len(parts) == 2:
            return Col(parts[0].lower(), parts[1].lower())
        raise QueryError()


# ---------------------------------------------------------------------- values

#: The account's date format preference (the samples show ``5/27/2025``).
DATE_FORMAT = "M/D/YYYY"


def _fmt_date(value: date) -> str:
    return f"{value.month}/{value.day}/{value.year}"


def format_value(value: Any) -> str | None:
    """Render a value as SuiteQL returns it (None stays None: the column is omitted)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return _fmt_number(value)
    if isinstance(value, datetime):
        return _fmt_date(value.astimezone(UTC).date())
    if isinstance(value, date):
        return _fmt_date(value)
    return str(value)


def _fmt_number(value: Decimal) -> str:
    """Oracle's number-to-text: no trailing zeros, no leading zero (``.5``, ``-.25``)."""
    if value == value.to_integral_value():
        return str(int(value))
    text = format(value.normalize(), "f")
    if text.startswith("0."):
        return text[1:]
    if text.startswith("-0."):
        return "-" + text[2:]
    return text


def _to_number(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return Decimal(1 if value else 0)
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            raise QueryError("Search error occurred: Invalid number.") from None
    raise QueryError("Search error occurred: Invalid number.")


def _as_moment(value: date) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _default_date(text: str) -> datetime:
    """A string compared with a date: the account format (``5/27/2025``) or ISO."""
    text = text.strip()
    match = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", text)
    try:
        if match:
            month, day, year = (int(g) for g in match.groups())
            return datetime(year, month, day, tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"Search error occurred: Unparseable date: {text!r}.") from None
    return _as_moment(moment)


def _comparable(left: Any, right: Any) -> tuple[Any, Any]:
    if isinstance(left, bool) or isinstance(right, bool):
        # SuiteQL check boxes are the strings 'T' and 'F'.
        return format_value(left), format_value(right)
    if isinstance(left, date) or isinstance(right, date):
        if isinstance(left, str):
            left = _default_date(left)
        if isinstance(right, str):
            right = _default_date(right)
        if not (isinstance(left, date) and isinstance(right, date)):
            raise QueryError("Search error occurred: Invalid date comparison.")
        return _as_moment(left), _as_moment(right)
    numeric = (int, Decimal, bool)
    if isinstance(left, numeric) or isinstance(right, numeric):
        return _to_number(left), _to_number(right)
    return str(left), str(right)


def _compare(op: str, left: Any, right: Any) -> bool | None:
    if left is None or right is None:
        return None
    a, b = _comparable(left, right)
    if op == "=":
        return bool(a == b)
    if op == "<>":
        return bool(a != b)
    if op == "<":
        return bool(a < b)
    if op == ">":
        return bool(a > b)
    if op == "<=":
        return bool(a <= b)
    return bool(a >= b)


# Oracle datetime format models.
_FMT_TOKEN = re.compile(
    r'"[^"]*"|YYYY|YY|MONTH|MON|MM|DDD|DD|DY|DAY|HH24|HH12|HH|MI|SS|FF[1-9]?|AM|PM|A\.M\.|P\.M\.'
    r"|[-/,.;: ]",
    re.IGNORECASE,
)
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _format_tokens(fmt: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(fmt):
        match = _FMT_TOKEN.match(fmt, pos)
        if match is None:
            raise QueryError(f"Search error occurred: Invalid date format {fmt!r}.")
        tokens.append(match.group(0))
        pos = match.end()
    return tokens


def _parse_with_format(text: str, fmt: str) -> datetime:
    pattern = ""
    for tok in _format_tokens(fmt):
        up = tok.upper()
        if tok.startswith('"'):
            pattern += re.escape(tok[1:-1])
        elif up == "YYYY":
            pattern += r"(?P<Y>\d{4})"
        elif up == "YY":
            pattern += r"(?P<y>\d{2})"
        elif up in {"MM"}:
            pattern += r"(?P<M>\d{1,2})"
        elif up in {"MON", "MONTH"}:
            pattern += r"(?P<b>[A-Za-z]+)"
        elif up == "DD":
            pattern += r"(?P<D>\d{1,2})"
        elif up in {"HH24"}:
            pattern += r"(?P<H>\d{1,2})"
        elif up in {"HH", "HH12"}:
            pattern += r"(?P<I>\d{1,2})"
        elif up == "MI":
            pattern += r"(?P<m>\d{1,2})"
        elif up == "SS":
            pattern += r"(?P<S>\d{1,2})"
        elif up.startswith("FF"):
            pattern += r"(?P<F>\d{1,9})"
        elif up in {"AM", "PM", "A.M.", "P.M."}:
            pattern += r"(?P<p>[AaPp]\.?[Mm]\.?)"
        elif up in {"DY", "DAY", "DDD"}:
            raise QueryError(f"Search error occurred: Invalid date format {fmt!r}.")
        else:
            pattern += re.escape(tok)
    match = re.fullmatch(pattern, text.strip())
    if match is None:
        raise QueryError(f"Search error occurred: Unparseable date: {text!r}.")
    g = match.groupdict()
    try:
        year = int(g["Y"]) if g.get("Y") else 2000 + int(g["y"]) if g.get("y") else 1
        if g.get("b"):
            month = _MONTHS.index(g["b"][:3].upper()) + 1
        else:
            month = int(g["M"]) if g.get("M") else 1
        day = int(g["D"]) if g.get("D") else 1
        hour = int(g["H"]) if g.get("H") else 0
        if g.get("I"):
            hour = int(g["I"]) % 12 + (12 if (g.get("p") or "a")[0].lower() == "p" else 0)
        minute = int(g["m"]) if g.get("m") else 0
        second = int(g["S"]) if g.get("S") else 0
        micro = int((g["F"] + "000000")[:6]) if g.get("F") else 0
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:
        raise QueryError(f"Search error occurred: Unparseable date: {text!r}.") from None


def _format_with(moment: datetime, fmt: str) -> str:
    moment = moment.astimezone(UTC)
    out = []
    for tok in _format_tokens(fmt):
        up = tok.upper()
        if tok.startswith('"'):
            out.append(tok[1:-1])
        elif up == "YYYY":
            out.append(f"{moment.year:04d}")
        elif up == "YY":
            out.append(f"{moment.year % 100:02d}")
        elif up == "MM":
            out.append(f"{moment.month:02d}")
        elif up == "MON":
            out.append(_MONTHS[moment.month - 1])
        elif up == "MONTH":
            out.append(moment.strftime("%B").upper())
        elif up == "DD":
            out.append(f"{moment.day:02d}")
        elif up == "DY":
            out.append(moment.strftime("%a").upper())
        elif up == "DAY":
            out.append(moment.strftime("%A").upper())
        elif up == "DDD":
            out.append(f"{moment.timetuple().tm_yday:03d}")
        elif up == "HH24":
            out.append(f"{moment.hour:02d}")
        elif up in {"HH", "HH12"}:
            out.append(f"{(moment.hour % 12) or 12:02d}")
        elif up == "MI":
            out.append(f"{moment.minute:02d}")
        elif up == "SS":
            out.append(f"{moment.second:02d}")
        elif up.startswith("FF"):
            digits = int(up[2:]) if len(up) > 2 else 6
            out.append(f"{moment.microsecond:06d}"[:digits].ljust(digits, "0"))
        elif up in {"AM", "PM"}:
            out.append("AM" if moment.hour < 12 else "PM")
        elif up in {"A.M.", "P.M."}:
            out.append("A.M." if moment.hour < 12 else "P.M.")
        else:
            out.append(tok)
    return "".join(out)


# ---------------------------------------------------------------------- execution

_Ctx = Mapping[str, tuple[dict[str, Any], dict[str, str]] | None]


class _Engine:
    def __init__(self, catalog: Mapping[str, Table], now: datetime) -> None:
        self.catalog = catalog
        self.now = now
        self.aliases: dict[str, Table] = {}

    # -------------------------------------------------------------- validation

    def bind(self, select: Select) -> None:
        for ref in [select.table, *(j.table for j in select.joins)]:
            table = self.catalog.get(ref.name)
            if table is None:
                raise QueryError(f"Invalid search type: {ref.name}.")
            if ref.alias in self.aliases:
                raise QueryError()
            self.aliases[ref.alias] = table
        select_aliases = {alias.lower() for _, alias in select.items if alias}
        for expr, _ in select.items:
            self.check(expr)
        for join in select.joins:
            self.check(join.on)
        for expr in (select.where, select.having, *select.group_by):
            self.check(expr)
        for item in select.order_by:
            if (
                isinstance(item.expr, Col)
                and item.expr.qualifier is None
                and item.expr.name in select_aliases
            ):
                continue
            if isinstance(item.expr, Lit) and isinstance(item.expr.value, Decimal):
                continue
            self.check(item.expr)

    def _identifiers(self) -> str:
        return ", ".join(f"{alias}={table.name}" for alias, table in self.aliases.items())

    def resolve(self, col: Col) -> str:
        """The alias a column belongs to."""
        if col.qualifier is not None:
            alias = col.qualifier
            if alias not in self.aliases:
                # A table's own name works as a qualifier even when it has an alias.
                matches = [a for a, t in self.aliases.items() if t.name == alias]
                if len(matches) != 1:
                    raise self.unknown(f"{col.qualifier}.{col.name}")
                alias = matches[0]
            if col.name not in self.aliases[alias].columns:
                raise self.unknown(f"{col.qualifier}.{col.name}")
            return alias
        owners = [a for a, t in self.aliases.items() if col.name in t.columns]
        if not owners:
            raise self.unknown(col.name)
        if len(owners) > 1:
            raise QueryError(f"Search error occurred: Column '{col.name}' is ambiguous.")
        return owners[0]

    def unknown(self, name: str) -> QueryError:
        return QueryError(
            f"Search error occurred: Unknown identifier '{name}'. Available identifiers are: "
            f"{{{self._identifiers()}}}."
        )

    def check(self, expr: Any) -> None:
        if expr is None or isinstance(expr, Lit | Star):
            return
        if isinstance(expr, Col):
            self.resolve(expr)
        elif isinstance(expr, Func):
            known = _FUNCTIONS.keys() | _AGGREGATES | _NOW_FUNCS
            if expr.name not in known:
                raise QueryError(f"Search error occurred: Unknown function {expr.name}.")
            if expr.name == "BUILTIN.DF" and len(expr.args) != 1:
                raise QueryError()
            for arg in expr.args:
                self.check(arg)
        elif isinstance(expr, Unary):
            self.check(expr.operand)
        elif isinstance(expr, Binary):
            self.check(expr.left)
            self.check(expr.right)
        elif isinstance(expr, InList):
            self.check(expr.operand)
            for item in expr.items:
                self.check(item)
        elif isinstance(expr, IsNull):
            self.check(expr.operand)
        elif isinstance(expr, Between):
            self.check(expr.operand)
            self.check(expr.low)
            self.check(expr.high)
        elif isinstance(expr, Like):
            self.check(expr.operand)
            self.check(expr.pattern)
        else:  # pragma: no cover - the parser builds nothing else
            raise QueryError()

    # -------------------------------------------------------------- evaluation

    def value(self, expr: Any, ctx: _Ctx, group: Sequence[_Ctx] | None = None) -> Any:
        if isinstance(expr, Lit):
            return expr.value
        if isinstance(expr, Col):
            row = ctx.get(self.resolve(expr))
            return None if row is None else row[0].get(expr.name)
        if isinstance(expr, Func):
            return self.call(expr, ctx, group)
        if isinstance(expr, Unary):
            inner = self.value(expr.operand, ctx, group)
            if expr.op == "NOT":
                return None if inner is None else not _truth(inner)
            number = _to_number(inner)
            return None if number is None else -number
        if isinstance(expr, Binary):
            return self.binary(expr, ctx, group)
        if isinstance(expr, InList):
            left = self.value(expr.operand, ctx, group)
            if left is None:
                return None
            results = [_compare("=", left, self.value(i, ctx, group)) for i in expr.items]
            found = any(r is True for r in results)
            if not found and any(r is None for r in results):
                return None
            return found != expr.negated
        if isinstance(expr, IsNull):
            is_null = self.value(expr.operand, ctx, group) is None
            return is_null != expr.negated
        if isinstance(expr, Between):
            v = self.value(expr.operand, ctx, group)
            low = _compare(">=", v, self.value(expr.low, ctx, group))
            high = _compare("<=", v, self.value(expr.high, ctx, group))
            if low is None or high is None:
                return None
            return (low and high) != expr.negated
        if isinstance(expr, Like):
            v = self.value(expr.operand, ctx, group)
            p = self.value(expr.pattern, ctx, group)
            if v is None or p is None:
                return None
            regex = "".join(
                ".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in str(p)
            )
            return (
                re.fullmatch(regex, format_value(v) or "", re.DOTALL) is not None
            ) != expr.negated
        raise QueryError()

    def binary(self, expr: Binary, ctx: _Ctx, group: Sequence[_Ctx] | None) -> Any:
        if expr.op in {"AND", "OR"}:
            left = self.value(expr.left, ctx, group)
            right = self.value(expr.right, ctx, group)
            lt = None if left is None else _truth(left)
            rt = None if right is None else _truth(right)
            if expr.op == "AND":
                if lt is False or rt is False:
                    return False
                return None if lt is None or rt is None else True
            if lt is True or rt is True:
                return True
            return None if lt is None or rt is None else False
        left = self.value(expr.left, ctx, group)
        right = self.value(expr.right, ctx, group)
        if expr.op in {"=", "<>", "<", ">", "<=", ">="}:
            return _compare(expr.op, left, right)
        if expr.op == "||":
            return (format_value(left) or "") + (format_value(right) or "")
        if left is None or right is None:
            return None
        if isinstance(left, date) and expr.op in {"+", "-"}:
            days = _to_number(right) or Decimal(0)
            delta = timedelta(days=float(days))
            return _as_moment(left) + delta if expr.op == "+" else _as_moment(left) - delta
        a, b = _to_number(left), _to_number(right)
        assert a is not None and b is not None
        if expr.op == "+":
            return a + b
        if expr.op == "-":
            return a - b
        if expr.op == "*":
            return a * b
        if b == 0:
            raise QueryError("Search error occurred: Division by zero.")
        return a / b

    def call(self, expr: Func, ctx: _Ctx, group: Sequence[_Ctx] | None) -> Any:
        if expr.name in _AGGREGATES:
            if group is None:
                raise QueryError()
            if expr.star:
                return len(group)
            values = [self.value(expr.args[0], c) for c in group] if expr.args else []
            values = [v for v in values if v is not None]
            if expr.distinct:
                values = list({format_value(v): v for v in values}.values())
            if expr.name == "COUNT":
                return len(values)
            if not values:
                return None
            if expr.name in {"MIN", "MAX"}:
                pick = min if expr.name == "MIN" else max
                return pick(values, key=functools.cmp_to_key(_order_cmp))
            numbers = [n for n in (_to_number(v) for v in values) if n is not None]
            total = sum(numbers, Decimal(0))
            return total if expr.name == "SUM" else total / len(numbers)
        if expr.name in _NOW_FUNCS:
            return self.now
        if expr.name == "BUILTIN.DF":
            arg = expr.args[0]
            if isinstance(arg, Col):
                row = ctx.get(self.resolve(arg))
                if row is None:
                    return None
                shown = row[1].get(arg.name)
                if shown is not None:
                    return shown
                return format_value(row[0].get(arg.name))
            return format_value(self.value(arg, ctx, group))
        args = [self.value(a, ctx, group) for a in expr.args]
        return _FUNCTIONS[expr.name](args, self.now)


def _truth(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.upper() in {"T", "TRUE", "Y"}
    return bool(value)


def _arity(args: list[Any], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        raise QueryError()


def _fn_to_date(args: list[Any], now: datetime) -> Any:
    _arity(args, 1, 3)
    if args[0] is None:
        return None
    if isinstance(args[0], date):
        return _as_moment(args[0])
    if len(args) == 1 or args[1] is None:
        return _default_date(str(args[0]))
    return _parse_with_format(str(args[0]), str(args[1]))


def _fn_to_char(args: list[Any], now: datetime) -> Any:
    _arity(args, 1, 2)
    value = args[0]
    if value is None:
        return None
    if len(args) == 2 and isinstance(value, date):
        return _format_with(_as_moment(value), str(args[1]))
    return format_value(value)


def _fn_to_number(args: list[Any], now: datetime) -> Any:
    _arity(args, 1, 2)
    return _to_number(args[0])


def _fn_nvl(args: list[Any], now: datetime) -> Any:
    if len(args) < 2:
        raise QueryError()
    return next((a for a in args if a is not None), None)


def _fn_round(args: list[Any], now: datetime) -> Any:
    _arity(args, 1, 2)
    number = _to_number(args[0])
    if number is None:
        return None
    places = int(_to_number(args[1]) or 0) if len(args) == 2 else 0
    return number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _fn_trunc(args: list[Any], now: datetime) -> Any:
    _arity(args, 1, 2)
    value = args[0]
    if value is None:
        return None
    if isinstance(value, date):
        moment = _as_moment(value)
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    number = _to_number(value)
    assert number is not None
    places = int(_to_number(args[1]) or 0) if len(args) == 2 else 0
    return number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)


def _fn_text(transform: Callable[[str], str]) -> Callable[[list[Any], datetime], Any]:
    def run(args: list[Any], now: datetime) -> Any:
        _arity(args, 1, 1)
        return None if args[0] is None else transform(format_value(args[0]) or "")

    return run


def _fn_abs(args: list[Any], now: datetime) -> Any:
    _arity(args, 1, 1)
    number = _to_number(args[0])
    return None if number is None else abs(number)


_FUNCTIONS: dict[str, Callable[[list[Any], datetime], Any]] = {
    "TO_DATE": _fn_to_date,
    "TO_TIMESTAMP": _fn_to_date,
    "TO_CHAR": _fn_to_char,
    "TO_NUMBER": _fn_to_number,
    "NVL": _fn_nvl,
    "COALESCE": _fn_nvl,
    "ROUND": _fn_round,
    "TRUNC": _fn_trunc,
    "UPPER": _fn_text(str.upper),
    "LOWER": _fn_text(str.lower),
    "ABS": _fn_abs,
    "BUILTIN.DF": lambda args, now: None,  # handled by the engine (needs the column)
}


def _order_cmp(a: Any, b: Any) -> int:
    x, y = _comparable(a, b)
    return -1 if x < y else 1 if x > y else 0


def _pair_cmp(cmp: Callable[[Any, Any], int]) -> Callable[[Any, Any], int]:
    def pair(a: Any, b: Any) -> int:
        return cmp(a[0], b[0])

    return pair


def _sort_key(desc: bool, nulls_first: bool) -> Callable[[Any, Any], int]:
    def cmp(a: Any, b: Any) -> int:
        if a is None or b is None:
            if a is None and b is None:
                return 0
            return (-1 if nulls_first else 1) * (1 if a is None else -1)
        result = _order_cmp(a, b)
        return -result if desc else result

    return cmp


def _has_aggregate(expr: Any) -> bool:
    if isinstance(expr, Func):
        return expr.name in _AGGREGATES or any(_has_aggregate(a) for a in expr.args)
    if isinstance(expr, Unary):
        return _has_aggregate(expr.operand)
    if isinstance(expr, Binary):
        return _has_aggregate(expr.left) or _has_aggregate(expr.right)
    return False


def run_query(text: str, catalog: Mapping[str, Table], now: datetime) -> Result:
    """Parse and run one SuiteQL statement.

    Args:
        text: The ``q`` of the request.
        catalog: Tables by lower-cased name.
        now: What ``SYSDATE`` returns.

    Raises:
        QueryError: Unsupported or invalid SQL, unknown tables or columns.
    """
    if not isinstance(text, str) or not text.strip():
        raise QueryError()
    select = _Parser(text).parse()
    engine = _Engine(catalog, now)
    engine.bind(select)

    contexts: list[dict[str, tuple[dict[str, Any], dict[str, str]] | None]] = []
    base = engine.aliases[select.table.alias]
    for i, row in enumerate(base.rows):
        contexts.append({select.table.alias: (row, base.display[i] if base.display else {})})
    for join in select.joins:
        table = engine.aliases[join.table.alias]
        joined = []
        for ctx in contexts:
            hit = False
            for i, row in enumerate(table.rows):
                candidate = {
                    **ctx,
                    join.table.alias: (row, table.display[i] if table.display else {}),
                }
                if engine.value(join.on, candidate) is True:
                    joined.append(candidate)
                    hit = True
            if not hit and join.kind == "left":
                joined.append({**ctx, join.table.alias: None})
        contexts = joined
    if select.where is not None:
        contexts = [c for c in contexts if engine.value(select.where, c) is True]

    grouped = bool(select.group_by) or any(_has_aggregate(e) for e, _ in select.items)
    units: list[tuple[_Ctx, Sequence[_Ctx] | None]]
    if grouped:
        groups: dict[tuple[str | None, ...], list[_Ctx]] = {}
        for ctx in contexts:
            key = tuple(format_value(engine.value(g, ctx)) for g in select.group_by)
            groups.setdefault(key, []).append(ctx)
        if not select.group_by and not groups:
            groups[()] = []
        units = [(members[0] if members else {}, members) for members in groups.values()]
        if select.having is not None:
            units = [u for u in units if engine.value(select.having, u[0], u[1]) is True]
    else:
        units = [(ctx, None) for ctx in contexts]

    names: list[str] = []
    expr_counter = 0
    for expr, alias in select.items:
        if isinstance(expr, Star):
            continue
        if alias:
            names.append(alias.lower())
        elif isinstance(expr, Col):
            names.append(expr.name)
        else:
            expr_counter += 1
            names.append(f"expr{expr_counter}")

    projected: list[tuple[dict[str, Any], _Ctx, Sequence[_Ctx] | None]] = []
    for unit_ctx, group in units:
        out: dict[str, Any] = {}
        position = 0
        for expr, _ in select.items:
            if isinstance(expr, Star):
                for alias, table in engine.aliases.items():
                    if expr.qualifier not in (None, alias, table.name):
                        continue
                    found = unit_ctx.get(alias) if unit_ctx else None
                    for column in table.columns:
                        out.setdefault(column, None if found is None else found[0].get(column))
                continue
            out[names[position]] = (
                engine.value(expr, unit_ctx, group) if unit_ctx or group is not None else None
            )
            position += 1
        projected.append((out, unit_ctx, group))

    if select.distinct:
        seen: set[tuple[tuple[str, str | None], ...]] = set()
        unique = []
        for item in projected:
            dedupe_key = tuple(sorted((k, format_value(v)) for k, v in item[0].items()))
            if dedupe_key not in seen:
                seen.add(dedupe_key)
                unique.append(item)
        projected = unique

    if select.order_by:

        def sort_value(
            order: OrderItem, item: tuple[dict[str, Any], _Ctx, Sequence[_Ctx] | None]
        ) -> Any:
            expr = order.expr
            if isinstance(expr, Lit) and isinstance(expr.value, Decimal):
                index = int(expr.value) - 1
                if not 0 <= index < len(names):
                    raise QueryError()
                return item[0][names[index]]
            if isinstance(expr, Col) and expr.qualifier is None and expr.name in names:
                return item[0][expr.name]
            return engine.value(expr, item[1], item[2])

        for order in reversed(select.order_by):
            keyed = [(sort_value(order, item), item) for item in projected]
            keyed.sort(
                key=functools.cmp_to_key(_pair_cmp(_sort_key(order.desc, order.nulls_first)))
            )
            projected = [item for _, item in keyed]

    rows = []
    for out, _, _ in projected:
        rendered = {k: format_value(v) for k, v in out.items()}
        rows.append({k: v for k, v in sorted(rendered.items()) if v is not None})
    return Result(rows)
