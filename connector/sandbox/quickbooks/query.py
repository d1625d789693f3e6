"""The QuickBooks Online query language (``GET/POST …/query``), as the fact sheet §7 states it.

Grammar (keywords case-insensitive)::

    SELECT ( * | COUNT(*) | field {, field} ) FROM Entity
      [ WHERE cond { AND cond } ]
      [ ORDERBY | ORDER BY field [ASC|DESC] {, field [ASC|DESC]} ]
      [ STARTPOSITION n ] [ MAXRESULTS n ]
    cond := field ( = | < | > | <= | >= ) value | field IN ( value {, value} )
          | field LIKE 'pattern'

* A projection list parses but every property is returned (fact sheet: "no projections
  (all properties returned)").
* ``OR`` → 4001 ``QueryValidationError`` (QuickBooks' parser knows the token — public
  parse errors list ``<OR>`` among the expected tokens — so it is refused after
  parsing; the detail text is sandbox wording). ``JOIN``, ``GROUP BY``, ``NOT``,
  parentheses and anything else outside the grammar → 4000 ``QueryParserError:
  Encountered " <IDENTIFIER> "JOIN "" at line 1, column 27.`` (the real message format).
* ``LIKE`` supports only the ``%`` wildcard; a backslash escapes the next character.
* A property that is not filterable for the entity → 4001 ``QueryValidationError:
  Property X not found for Entity Y`` (format from a live-sandbox capture).
* ``MAXRESULTS`` above 1000 → 4001; the default page is 100; ``STARTPOSITION`` is 1-based.
* Strings compare case-insensitively; ``MetaData.*`` as instants, dates as dates, amounts
  as decimals; a missing property never matches.
* No match → ``{"QueryResponse": {}}``; ``COUNT(*)`` → ``{"totalCount": n}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.sandbox.quickbooks.errors import QboFault, query_invalid, query_parse
from connector.sandbox.quickbooks.fmt import parse_moment

__all__ = [
    "DEFAULT_MAX_RESULTS",
    "MAX_RESULTS",
    "Condition",
    "Query",
    "entity_name",
    "execute",
    "parse_query",
    "prefilter",
]

#: Fact sheet §7: at most 1000 entities per response, 100 when MAXRESULTS is omitted.
MAX_RESULTS = 1000
DEFAULT_MAX_RESULTS = 100

_KEYWORDS = {
    "select",
    "from",
    "where",
    "and",
    "or",
    "in",
    "like",
    "orderby",
    "order",
    "by",
    "asc",
    "desc",
    "startposition",
    "maxresults",
    "count",
}

# field name (lower case) → (path in the rendered entity, type)
FieldSpec = tuple[str, str]
_META = {
    "metadata.createtime": ("MetaData.CreateTime", "datetime"),
    "metadata.lastupdatedtime": ("MetaData.LastUpdatedTime", "datetime"),
}
_TXN = {
    "id": ("Id", "id"),
    **_META,
    "txndate": ("TxnDate", "date"),
    "docnumber": ("DocNumber", "string"),
    "totalamt": ("TotalAmt", "money"),
    "currencyref": ("CurrencyRef", "ref"),
    "privatenote": ("PrivateNote", "string"),
}
_NAME = {
    "id": ("Id", "id"),
    **_META,
    "displayname": ("DisplayName", "string"),
    "givenname": ("GivenName", "string"),
    "familyname": ("FamilyName", "string"),
    "companyname": ("CompanyName", "string"),
    "primaryemailaddr": ("PrimaryEmailAddr.Address", "string"),
    "active": ("Active", "bool"),
    "balance": ("Balance", "money"),
    "currencyref": ("CurrencyRef", "ref"),
}
FIELDS: dict[str, dict[str, FieldSpec]] = {
    "Invoice": {
        **_TXN,
        "customerref": ("CustomerRef", "ref"),
        "balance": ("Balance", "money"),
        "duedate": ("DueDate", "date"),
    },
    "CreditMemo": {
        **_TXN,
        "customerref": ("CustomerRef", "ref"),
        "balance": ("Balance", "money"),
    },
    "SalesReceipt": {**_TXN, "customerref": ("CustomerRef", "ref")},
    "Bill": {
        **_TXN,
        "vendorref": ("VendorRef", "ref"),
        "balance": ("Balance", "money"),
        "duedate": ("DueDate", "date"),
        "apaccountref": ("APAccountRef", "ref"),
    },
    "Payment": {
        **_TXN,
        "customerref": ("CustomerRef", "ref"),
        "paymentrefnum": ("PaymentRefNum", "string"),
        "deposittoaccountref": ("DepositToAccountRef", "ref"),
        "unappliedamt": ("UnappliedAmt", "money"),
    },
    "BillPayment": {
        **_TXN,
        "vendorref": ("VendorRef", "ref"),
        "paytype": ("PayType", "string"),
    },
    "Customer": dict(_NAME),
    "Vendor": dict(_NAME),
    "Account": {
        "id": ("Id", "id"),
        **_META,
        "name": ("Name", "string"),
        "fullyqualifiedname": ("FullyQualifiedName", "string"),
        "accounttype": ("AccountType", "string"),
        "accountsubtype": ("AccountSubType", "string"),
        "classification": ("Classification", "string"),
        "active": ("Active", "bool"),
        "currentbalance": ("CurrentBalance", "money"),
        "currencyref": ("CurrencyRef", "ref"),
    },
    "CompanyInfo": {"id": ("Id", "id"), **_META},
    "Preferences": {"id": ("Id", "id"), **_META},
}
_ENTITY_NAMES = {name.lower(): name for name in FIELDS}


def entity_name(raw: str) -> str | None:
    """The canonical entity name for a (case-insensitive) name, or None if unknown."""
    return _ENTITY_NAMES.get(raw.lower())


@dataclass(frozen=True)
class _Token:
    kind: str  # ident, string, number, op, punct, eof
    text: str
    col: int
    value: Any = None

    @property
    def keyword(self) -> str | None:
        if self.kind == "ident" and self.text.lower() in _KEYWORDS:
            return self.text.lower()
        return None

    def describe(self) -> str:
        if self.kind == "eof":
            return '"<EOF>"'
        if self.keyword:
            return f'" "{self.keyword}" "{self.text} ""'
        kind = {
            "ident": "<IDENTIFIER>",
            "string": "<STRING>",
            "number": "<INTEGER>" if self.text.lstrip("-").isdigit() else "<DECIMAL>",
        }.get(self.kind)
        if kind is None:
            return f'" "{self.text}" "{self.text} ""'
        return f'" {kind} "{self.text} ""'


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_OPS = ("<=", ">=", "!=", "<>", "=", "<", ">")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        col = i + 1
        if ch.isspace():
            i += 1
            continue
        if ch == "'":
            j, out = i + 1, []
            while j < n and text[j] != "'":
                if text[j] == "\\" and j + 1 < n:
                    # \' and \\ unescape here; other escapes stay for LIKE to read.
                    nxt = text[j + 1]
                    out.append(nxt if nxt in "'\\" else "\\" + nxt)
                    j += 2
                    continue
                out.append(text[j])
                j += 1
            if j >= n:
                raise query_parse(
                    f"Invalid content. Lexical error at line 1, column {n + 1}.  "
                    'Encountered: <EOF> after : "' + text[i:n] + '"'
                )
            tokens.append(_Token("string", text[i : j + 1], col, "".join(out)))
            i = j + 1
            continue
        match = _NUMBER.match(text, i)
        if match and (ch != "-" or (tokens and tokens[-1].kind == "op")):
            tokens.append(_Token("number", match.group(), col, Decimal(match.group())))
            i = match.end()
            continue
        match = _IDENT.match(text, i)
        if match:
            tokens.append(_Token("ident", match.group(), col))
            i = match.end()
            continue
        op = next((o for o in _OPS if text.startswith(o, i)), None)
        if op:
            tokens.append(_Token("op", op, col))
            i += len(op)
            continue
        if ch in "(),*":
            tokens.append(_Token("punct", ch, col))
            i += 1
            continue
        raise query_parse(
            f"Invalid content. Lexical error at line 1, column {col}.  "
            f'Encountered: "{ch}" ({ord(ch)}), after : ""'
        )
    tokens.append(_Token("eof", "", n + 1))
    return tokens


@dataclass(frozen=True)
class Condition:
    """``field op value(s)``; ``values`` holds Decimals, strings or booleans."""

    field: str
    op: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Query:
    """A parsed statement."""

    entity: str
    count: bool
    where: tuple[Condition, ...]
    order: tuple[tuple[str, bool], ...]  # (field, descending)
    start: int
    max_results: int


_AFTER_WHERE = ['<EOF>', '<AND>', '"iterator"', '"maxresults"', '<OR>', '"order"', '"orderby"', '"startposition"']  # fmt: skip


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def fail(self, tok: _Token, expecting: Iterable[str]) -> QboFault:
        listed = "".join(f"\n    {item} ..." for item in expecting)
        return query_parse(
            f"Encountered {tok.describe()} at line 1, column {tok.col}.\n"
            f"Was expecting one of:{listed}\n    "
        )

    def keyword(self, *words: str) -> str:
        tok = self.take()
        if tok.keyword not in words:
            raise self.fail(tok, [f'"{w}"' for w in words])
        return tok.keyword

    def field(self) -> str:
        tok = self.take()
        if tok.kind != "ident" or tok.keyword or tok.text.lower() == "not":
            raise self.fail(tok, ["<IDENTIFIER>"])
        return tok.text

    def value(self) -> Any:
        tok = self.take()
        if tok.kind in {"string", "number"}:
            return tok.value
        if tok.kind == "ident" and tok.text.lower() in {"true", "false"}:
            return tok.text.lower() == "true"
        raise self.fail(tok, ["<STRING>", "<INTEGER>", "<DECIMAL>", '"true"', '"false"'])

    def integer(self) -> int:
        tok = self.take()
        if tok.kind != "number" or not tok.text.isdigit():
            raise self.fail(tok, ["<INTEGER>"])
        return int(tok.text)

    def parse(self) -> Query:
        self.keyword("select")
        count = False
        tok = self.peek()
        if tok.keyword == "count":
            self.take()
            for expected in ("(", "*", ")"):
                got = self.take()
                if got.text != expected:
                    raise self.fail(got, [f'"{expected}"'])
            count = True
        elif tok.text == "*" or tok.kind == "ident":
            self._projection()
        else:
            raise self.fail(tok, ['"*"', '"count"', "<IDENTIFIER>"])
        self.keyword("from")
        entity_tok = self.take()
        if entity_tok.kind != "ident" or entity_tok.keyword or "." in entity_tok.text:
            raise self.fail(entity_tok, ["<IDENTIFIER>"])
        where: list[Condition] = []
        order: list[tuple[str, bool]] = []
        start, max_results = 1, DEFAULT_MAX_RESULTS
        seen: set[str] = set()
        if self.peek().keyword == "where":
            self.take()
            where.append(self._condition())
            while True:
                kw = self.peek().keyword
                if kw == "and":
                    self.take()
                    where.append(self._condition())
                elif kw == "or":
                    # sandbox wording
                    raise query_invalid(
                        "OR operation is not supported; combine conditions with AND, "
                        "or use IN for several values of one property"
                    )
                else:
                    break
        while True:
            tok = self.peek()
            kw = tok.keyword
            if kw in {"orderby", "order"} and "order" not in seen:
                self.take()
                if kw == "order":
                    self.keyword("by")
                seen.add("order")
                order.append(self._order_item())
                while self.peek().text == ",":
                    self.take()
                    order.append(self._order_item())
            elif kw == "startposition" and kw not in seen:
                self.take()
                seen.add(kw)
                start = max(self.integer(), 1)
            elif kw == "maxresults" and kw not in seen:
                self.take()
                seen.add(kw)
                max_results = self.integer()
                if max_results > MAX_RESULTS:
                    raise query_invalid(
                        f"value {max_results} is too large. Max allowed value is {MAX_RESULTS}"
                    )
            elif tok.kind == "eof":
                break
            else:
                raise self.fail(tok, _AFTER_WHERE)
        return Query(entity_tok.text, count, tuple(where), tuple(order), start, max_results)

    def _projection(self) -> None:
        while True:
            tok = self.take()
            if tok.text != "*" and (tok.kind != "ident" or tok.keyword):
                raise self.fail(tok, ['"*"', "<IDENTIFIER>"])
            if self.peek().text != ",":
                return
            self.take()

    def _order_item(self) -> tuple[str, bool]:
        name = self.field()
        kw = self.peek().keyword
        if kw in {"asc", "desc"}:
            self.take()
            return name, kw == "desc"
        return name, False

    def _condition(self) -> Condition:
        name = self.field()
        tok = self.take()
        if tok.keyword == "in":
            opening = self.take()
            if opening.text != "(":
                raise self.fail(opening, ['"("'])
            values = [self.value()]
            while self.peek().text == ",":
                self.take()
                values.append(self.value())
            closing = self.take()
            if closing.text != ")":
                raise self.fail(closing, ['","', '")"'])
            return Condition(name, "IN", tuple(values))
        if tok.keyword == "like":
            pattern = self.take()
            if pattern.kind != "string":
                raise self.fail(pattern, ["<STRING>"])
            return Condition(name, "LIKE", (pattern.value,))
        if tok.kind == "op" and tok.text in {"=", "<", ">", "<=", ">="}:
            return Condition(name, tok.text, (self.value(),))
        raise self.fail(tok, ['"="', '"<"', '">"', '"<="', '">="', '"in"', '"like"'])


def parse_query(text: str) -> Query:
    """Parse a statement.

    Raises:
        QboFault: 4000 when it does not parse, 4001 for OR or MAXRESULTS over 1000.
    """
    if not text or not text.strip():
        raise query_parse(
            'Encountered "<EOF>" at line 0, column 0.\nWas expecting:\n    "select" ...\n    '
        )
    return _Parser(text).parse()


def _lookup(item: Mapping[str, Any], path: str) -> Any:
    node: Any = item
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _coerce(value: Any, ftype: str, field: str) -> Any:
    """Bring a literal or an entity value to a comparable Python value (None if absent)."""
    if value is None:
        return None
    try:
        if ftype == "ref":
            value = value.get("value") if isinstance(value, Mapping) else value
            return str(value)
        if ftype == "id":
            text = str(value)
            return (0, int(text), "") if text.isdigit() else (1, 0, text)
        if ftype == "money":
            return value if isinstance(value, Decimal) else Decimal(str(value).strip())
        if ftype == "date":
            return date.fromisoformat(str(value)[:10])
        if ftype == "datetime":
            return value if isinstance(value, datetime) else parse_moment(str(value))
        if ftype == "bool":
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() == "true"
        return str(value).casefold()
    except (InvalidOperation, ValueError) as exc:
        # sandbox wording
        raise query_invalid(f"Invalid value {value!s} for property {field}") from exc


def _like(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _predicate(cond: Condition, spec: FieldSpec) -> Callable[[Mapping[str, Any]], bool]:
    path, ftype = spec
    if cond.op == "LIKE":
        if ftype != "string":
            # sandbox wording
            raise query_invalid(f"LIKE is not supported for property {cond.field}")
        regex = _like(str(cond.values[0]))

        def like(item: Mapping[str, Any]) -> bool:
            value = _lookup(item, path)
            return value is not None and regex.fullmatch(str(value)) is not None

        return like
    wanted = [_coerce(v, ftype, cond.field) for v in cond.values]
    op = cond.op

    def compare(item: Mapping[str, Any]) -> bool:
        value = _coerce(_lookup(item, path), ftype, cond.field)
        if value is None:
            return False
        if op in {"=", "IN"}:
            return value in wanted
        target = wanted[0]
        try:
            if op == "<":
                return bool(value < target)
            if op == ">":
                return bool(value > target)
            if op == "<=":
                return bool(value <= target)
            return bool(value >= target)
        except TypeError:
            return False

    return compare


def _spec(entity: str, field: str) -> FieldSpec:
    spec = FIELDS[entity].get(field.lower())
    if spec is None:
        raise query_invalid(f"Property {field} not found for Entity {entity}")
    return spec


#: Conditions on these can be checked before an entity is rendered.
PREFILTER_FIELDS = frozenset({"id", "metadata.createtime", "metadata.lastupdatedtime"})


def prefilter(query: Query, entity: str) -> Callable[[Mapping[str, Any]], bool] | None:
    """A predicate over ``{"Id", "MetaData"}`` views for the cheap conditions, or None.

    :func:`execute` re-checks every condition, so this only saves rendering.

    Raises:
        QboFault: 4001 for a property that is not filterable.
    """
    predicates = [
        _predicate(c, _spec(entity, c.field))
        for c in query.where
        if c.field.lower() in PREFILTER_FIELDS
    ]
    if not predicates:
        return None
    return lambda item: all(p(item) for p in predicates)


def execute(query: Query, entity: str, items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Run a parsed query over rendered entities of type ``entity`` (canonical name).

    Returns:
        The ``QueryResponse`` object.

    Raises:
        QboFault: 4001 for a property that is not filterable/sortable.
    """
    predicates = [_predicate(c, _spec(entity, c.field)) for c in query.where]
    matched = [item for item in items if all(p(item) for p in predicates)]
    if query.count:
        return {"totalCount": len(matched)}
    matched.sort(key=lambda item: _coerce(item.get("Id"), "id", "Id"))
    for name, descending in reversed(query.order):
        path, ftype = _spec(entity, name)

        def key(
            item: Mapping[str, Any], path: str = path, ftype: str = ftype, name: str = name
        ) -> Any:
            value = _coerce(_lookup(item, path), ftype, name)
            # Missing values sort first ascending (and last descending).
            return (value is not None, value if value is not None else 0)

        matched.sort(key=key, reverse=descending)
    page = matched[query.start - 1 : query.start - 1 + query.max_results]
    if not page:
        return {}
    return {entity: page, "startPosition": query.start, "maxResults": len(page)}
