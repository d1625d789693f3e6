"""Alembic environment: runs on the connection the store hands in."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import connector.schema
import connector.state

_ = connector.schema
target_metadata = SQLModel.metadata
config = context.config


def run_migrations_online() -> None:
    """Run with the connection passed in ``config.attributes`` (or a new one)."""
    connection = config.attributes.get("connection")
    if connection is None:
        from sqlalchemy import create_engine

        engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
        with engine.begin() as conn:
            _run(conn)
        return
    _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite ALTERs go through batch mode
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
