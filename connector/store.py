"""The store: engine and sessions, Alembic migrations, and the queries that claim work.

SQLite (the embedded default) is one process's store: WAL mode, a busy timeout,
foreign keys on. PostgreSQL is the store for several replicas: work is claimed
with ``FOR UPDATE SKIP LOCKED``. Both are created and upgraded by the same
Alembic migrations (``connector db upgrade``, also run on start).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from connector.crypto import TokenCipher
from connector.state import ConnectionRecord, IntentState, PaymentIntent
from connector.types import Money

__all__ = ["Store", "dialect_insert", "normalize_url", "upsert_records"]

# How long SQLite waits for a lock held by another connection before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def normalize_url(url: str) -> str:
    """Pick our drivers: ``postgresql://`` → psycopg 3; SQLite as given."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class Store:
    """Owns the engine; hands out sessions; claims work.

    Args:
        url: SQLAlchemy URL (``sqlite:///connector.db``, ``postgresql://…``).
        cipher: encrypts the OAuth tokens kept in the ``connection`` table.
    """

    def __init__(self, url: str, *, echo: bool = False, cipher: TokenCipher | None = None) -> None:
        self.url = normalize_url(url)
        #: Encrypts OAuth tokens at rest; None stores them as they are.
        self.cipher = cipher
        kwargs: dict[str, Any] = {"echo": echo}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = sa.create_engine(self.url, **kwargs)
        if self.is_sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            # pysqlite's own transaction handling defers BEGIN; take it over so
            # a write transaction starts with BEGIN IMMEDIATE (one writer at a time).
            sa.event.listen(self.engine, "connect", _disable_pysqlite_begin)
            sa.event.listen(self.engine, "begin", _begin_immediate)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded single-process store."""
        return self.engine.dialect.name == "sqlite"

    # -- migrations ---------------------------------------------------------------
    def _alembic_config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("connector") / "migrations"))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        cfg = self._alembic_config()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def current_revision(self) -> str | None:
        """The migration the database is at (None if never migrated)."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        """The newest migration shipped with this version."""
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def check_token_key(self) -> None:
        """Fail early if stored tokens cannot be opened with this store's cipher.

        Raises:
            TokenKeyError: tokens are encrypted and there is no key, or the wrong one.
        """
        from connector.crypto import open_value

        with self.session() as s:
            rows = s.exec(select(ConnectionRecord)).all()
        for row in rows:
            for value in (row.refresh_token, row.access_token):
                open_value(self.cipher, value)

    # -- sessions -----------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # -- claiming work ------------------------------------------------------------
    def claim_intents(
        self,
        *,
        worker: str,
        now: datetime,
        lease: timedelta,
        limit: int = 10,
        connection_ids: list[str] | None = None,
        intent_ids: list[str] | None = None,
    ) -> list[PaymentIntent]:
        """Lease up to ``limit`` intents that are due.

        Due means: ``pending`` or ``unknown`` whose ``next_attempt_at`` has come,
        or ``claimed``/``sending`` whose lease expired (a crashed worker's). A
        claimed ``pending`` intent becomes ``claimed``; the others keep their
        state so the worker knows it must reconcile before anything else.
        """
        open_states = [IntentState.PENDING.value, IntentState.UNKNOWN.value]
        leased_states = [IntentState.CLAIMED.value, IntentState.SENDING.value]
        due = sa.or_(
            sa.and_(
                col(PaymentIntent.state).in_(open_states),
                col(PaymentIntent.next_attempt_at) <= now,
                sa.or_(
                    col(PaymentIntent.lease_expires_at).is_(None),
                    col(PaymentIntent.lease_expires_at) <= now,
                ),
            ),
            sa.and_(
                col(PaymentIntent.state).in_(leased_states),
                sa.or_(
                    col(PaymentIntent.lease_expires_at).is_(None),
                    col(PaymentIntent.lease_expires_at) <= now,
                ),
            ),
        )
        query = select(PaymentIntent).where(due)
        if connection_ids is not None:
            query = query.where(col(PaymentIntent.connection_id).in_(connection_ids))
        if intent_ids is not None:
            query = query.where(col(PaymentIntent.id).in_(intent_ids))
        query = query.order_by(col(PaymentIntent.created_at)).limit(limit)
        if not self.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        claimed: list[PaymentIntent] = []
        with self.session() as session:
            for intent in session.exec(query).all():
                if intent.state == IntentState.PENDING.value:
                    intent.state = IntentState.CLAIMED.value
                intent.lease_owner = worker
                intent.lease_expires_at = now + lease
                intent.updated_at = now
                session.add(intent)
                claimed.append(intent)
        return claimed


def _disable_pysqlite_begin(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None


def _begin_immediate(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def dialect_insert(session: Session, table: Any) -> Any:
    """An INSERT that knows ``ON CONFLICT`` on this session's database."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


_PLACEHOLDERS: dict[type[Any], Any] = {str: "", bool: False, int: 0}
_COLUMN_CACHE: dict[type[Any], tuple[frozenset[str], dict[str, Any]]] = {}


def _columns(model: type[Any]) -> tuple[frozenset[str], dict[str, Any]]:
    """The upsertable columns of ``model`` and a placeholder for each required one.

    A tombstone (a deletion the provider reports with little more than an id) of a
    record this store never held still needs values for the NOT NULL columns.
    """
    cached = _COLUMN_CACHE.get(model)
    if cached is not None:
        return cached
    names: set[str] = set()
    required: dict[str, Any] = {}
    for column in model.__table__.columns:
        if column.name == "id":
            continue
        names.add(column.name)
        if not column.nullable and column.default is None and column.server_default is None:
            if isinstance(column.type, Money):
                required[column.name] = Decimal(0)
                continue
            try:
                python_type = column.type.python_type
            except NotImplementedError:  # pragma: no cover - every column type here has one
                python_type = str
            required[column.name] = _PLACEHOLDERS.get(python_type, "")
    result = (frozenset(names), required)
    _COLUMN_CACHE[model] = result
    return result


def upsert_records(
    session: Session,
    model: type[Any],
    connection_id: str,
    records: list[dict[str, Any]],
    now: datetime,
) -> tuple[int, int]:
    """Insert or update mirrored records by ``(connection_id, remote_id)``.

    Records of one page are written with one ``INSERT … ON CONFLICT DO UPDATE``
    executed for many parameter sets (compiled once, cached). A partial record —
    a deletion reported as ``{remote_id, status, deleted, remote_updated_at}`` —
    updates only the columns it carries; if the record is unknown it is inserted as
    a tombstone (``deleted`` true, placeholders in the required columns).

    Returns:
        ``(inserted, updated)`` counts.
    """
    if not records:
        return (0, 0)
    columns, required = _columns(model)
    rows: dict[str, dict[str, Any]] = {}
    for rec in records:
        row = {k: v for k, v in rec.items() if k in columns}
        row["connection_id"] = connection_id
        row["synced_at"] = now
        if "deleted" not in row:
            row["deleted"] = rec.get("status") == "deleted"
        rows[str(row["remote_id"])] = row  # the last version of a record in a page wins
    ids = list(rows)
    if session.get_bind().dialect.name == "postgresql":
        # psycopg prepares a statement after a few executions, and PostgreSQL then
        # may settle on a generic plan made while the table was still empty: every
        # page would scan all the connection's rows (seen: 2 s a page at 60k rows
        # instead of 0.1 s). Plan each page's statements for their values; this
        # transaction only.
        session.connection().exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        from sqlalchemy.dialects.postgresql import ARRAY

        # One array parameter rather than a thousand.
        wanted: Any = col(model.remote_id) == sa.any_(
            sa.bindparam("remote_ids", ids, type_=ARRAY(sa.String))
        )
    else:
        wanted = col(model.remote_id).in_(ids)
    existing = set(
        session.exec(
            select(model.remote_id).where(model.connection_id == connection_id, wanted)
        ).all()
    )
    # Rows of one shape share a statement (executemany needs the same keys).
    shapes: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows.values():
        shapes.setdefault(frozenset(row), []).append(row)
    for keys, group in shapes.items():
        missing = {k: v for k, v in required.items() if k not in keys}
        if missing:
            group = [{**missing, **row} for row in group]
        stmt = dialect_insert(session, model.__table__)
        update_cols = {
            name: getattr(stmt.excluded, name)
            for name in sorted(keys)
            if name not in {"connection_id", "remote_id"}
        }
        stmt = stmt.on_conflict_do_update(
            index_elements=["connection_id", "remote_id"], set_=update_cols
        )
        session.connection().execute(stmt, group)
    inserted = len(rows) - len(existing)
    return (inserted, len(existing))
