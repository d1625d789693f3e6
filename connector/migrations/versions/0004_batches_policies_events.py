"""push batches, push policies, events out, intake API keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import connector.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payment_intent") as batch_op:
        batch_op.add_column(
            sa.Column("overpayment", sa.String(length=32), nullable=False, server_default="reject")
        )
        batch_op.add_column(sa.Column("send_amount", connector.types.Money(), nullable=True))
        batch_op.add_column(sa.Column("payment_currency", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("payment_amount", connector.types.Money(), nullable=True))
        batch_op.add_column(sa.Column("lines", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("batch_id", sa.String(length=36), nullable=True))
        batch_op.create_index("ix_payment_intent_batch_id", ["batch_id"])
    op.create_table(
        "push_batch",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("provider_key", sa.String(length=128), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("members", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("created_at", connector.types.UTCDateTime(), nullable=False),
        sa.Column("first_sent_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("updated_at", connector.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_push_batch_connection_id", "push_batch", ["connection_id"])
    op.create_table(
        "event",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=True),
        sa.Column("intent_id", sa.String(length=36), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", connector.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_event_connection_id", "event", ["connection_id"])
    op.create_index("ix_event_intent_id", "event", ["intent_id"])
    op.create_table(
        "event_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("endpoint", sa.String(length=512), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", connector.types.UTCDateTime(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=1024), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("delivered_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("updated_at", connector.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["event.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", "endpoint"),
    )
    op.create_index("ix_event_delivery_due", "event_delivery", ["state", "next_attempt_at"])
    op.create_table(
        "api_request",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", connector.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", connector.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("api_request")
    op.drop_index("ix_event_delivery_due", table_name="event_delivery")
    op.drop_table("event_delivery")
    op.drop_index("ix_event_intent_id", table_name="event")
    op.drop_index("ix_event_connection_id", table_name="event")
    op.drop_table("event")
    op.drop_index("ix_push_batch_connection_id", table_name="push_batch")
    op.drop_table("push_batch")
    with op.batch_alter_table("payment_intent") as batch_op:
        batch_op.drop_index("ix_payment_intent_batch_id")
        for name in (
            "batch_id",
            "lines",
            "payment_amount",
            "payment_currency",
            "send_amount",
            "overpayment",
        ):
            batch_op.drop_column(name)
