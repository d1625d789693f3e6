"""attempt is append-only: the database refuses UPDATE and DELETE on it

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MESSAGE = "attempt is append-only: record a new attempt instead"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION attempt_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION '{_MESSAGE}';
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER attempt_append_only BEFORE UPDATE OR DELETE ON attempt "
            "FOR EACH ROW EXECUTE FUNCTION attempt_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER attempt_no_{event.lower()} BEFORE {event} ON attempt "
                f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER attempt_append_only ON attempt")
        op.execute("DROP FUNCTION attempt_append_only()")
    else:
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER attempt_no_{event}")
