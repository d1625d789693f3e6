"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import connector.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bill",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=128), nullable=False),
        sa.Column("row_version", sa.String(length=128), nullable=True),
        sa.Column("remote_updated_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("synced_at", connector.types.UTCDateTime(), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("currency_rate", connector.types.Money(), nullable=True),
        sa.Column("total", connector.types.Money(), nullable=False),
        sa.Column("balance", connector.types.Money(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("supplier_id", sa.String(length=128), nullable=True),
        sa.Column("supplier_name", sa.String(length=255), nullable=True),
        sa.Column("bill_date", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connection_id", "remote_id"),
    )
    with op.batch_alter_table("bill", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bill_connection_id"), ["connection_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_bill_number"), ["number"], unique=False)

    op.create_table(
        "connection",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("status_reason", sa.String(length=512), nullable=True),
        sa.Column("grant_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("refresh_token", sa.String(length=2048), nullable=True),
        sa.Column("access_token", sa.String(length=4096), nullable=True),
        sa.Column("access_token_expires_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("token_refreshed_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("updated_at", connector.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "contact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=128), nullable=False),
        sa.Column("row_version", sa.String(length=128), nullable=True),
        sa.Column("remote_updated_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("synced_at", connector.types.UTCDateTime(), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.Column("is_customer", sa.Boolean(), nullable=False),
        sa.Column("is_supplier", sa.Boolean(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connection_id", "remote_id"),
    )
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contact_connection_id"), ["connection_id"], unique=False
        )

    op.create_table(
        "cursor",
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("position", sa.String(length=128), nullable=True),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("run_started_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("updated_at", connector.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("connection_id", "entity"),
    )
    op.create_table(
        "invoice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=128), nullable=False),
        sa.Column("row_version", sa.String(length=128), nullable=True),
        sa.Column("remote_updated_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("synced_at", connector.types.UTCDateTime(), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("currency_rate", connector.types.Money(), nullable=True),
        sa.Column("total", connector.types.Money(), nullable=False),
        sa.Column("balance", connector.types.Money(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=True),
        sa.Column("customer_name", sa.String(length=255), nullable=True),
        sa.Column("invoice_date", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connection_id", "remote_id"),
    )
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invoice_connection_id"), ["connection_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_invoice_number"), ["number"], unique=False)

    op.create_table(
        "ledger_account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=128), nullable=False),
        sa.Column("row_version", sa.String(length=128), nullable=True),
        sa.Column("remote_updated_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("synced_at", connector.types.UTCDateTime(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connection_id", "remote_id"),
    )
    with op.batch_alter_table("ledger_account", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_account_connection_id"), ["connection_id"], unique=False
        )

    op.create_table(
        "payment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=128), nullable=False),
        sa.Column("row_version", sa.String(length=128), nullable=True),
        sa.Column("remote_updated_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("synced_at", connector.types.UTCDateTime(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("total_amount", connector.types.Money(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("currency_rate", connector.types.Money(), nullable=True),
        sa.Column("transaction_date", sa.Date(), nullable=True),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("account_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connection_id", "remote_id"),
    )
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_connection_id"), ["connection_id"], unique=False
        )

    op.create_table(
        "payment_intent",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("connection_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("document_type", sa.String(length=16), nullable=False),
        sa.Column("document_ref", sa.String(length=128), nullable=False),
        sa.Column("document_remote_id", sa.String(length=128), nullable=True),
        sa.Column("document_number", sa.String(length=64), nullable=True),
        sa.Column("amount", connector.types.Money(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("currency_rate", connector.types.Money(), nullable=True),
        sa.Column("transaction_date", sa.Date(), nullable=False),
        sa.Column("account_code", sa.String(length=64), nullable=True),
        sa.Column("caller_reference", sa.String(length=200), nullable=True),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("provider_key", sa.String(length=128), nullable=False),
        sa.Column("key_first_sent_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("remote_payment_id", sa.String(length=128), nullable=True),
        sa.Column("reason_code", sa.String(length=64), nullable=True),
        sa.Column("reason_message", sa.String(length=1024), nullable=True),
        sa.Column("preflight_balance", connector.types.Money(), nullable=True),
        sa.Column("preflight_row_version", sa.String(length=128), nullable=True),
        sa.Column("result_balance", connector.types.Money(), nullable=True),
        sa.Column("result_status", sa.String(length=32), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", connector.types.UTCDateTime(), nullable=True),
        sa.Column("next_attempt_at", connector.types.UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", connector.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", connector.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connection_id", "idempotency_key"),
    )
    with op.batch_alter_table("payment_intent", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_intent_connection_id"), ["connection_id"], unique=False
        )
        batch_op.create_index("ix_payment_intent_work", ["state", "next_attempt_at"], unique=False)

    op.create_table(
        "attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("intent_id", sa.String(length=36), nullable=False),
        sa.Column("at", connector.types.UTCDateTime(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=True),
        sa.Column("path", sa.String(length=512), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("provider_code", sa.String(length=64), nullable=True),
        sa.Column("message", sa.String(length=1024), nullable=True),
        sa.Column("remote_payment_id", sa.String(length=128), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["intent_id"],
            ["payment_intent.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_attempt_intent_id"), ["intent_id"], unique=False)

    op.create_table(
        "payment_allocation",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("payment_pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("amount", connector.types.Money(), nullable=False),
        sa.ForeignKeyConstraint(["payment_pk"], ["payment.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("payment_allocation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_allocation_payment_pk"), ["payment_pk"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payment_allocation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_allocation_payment_pk"))

    op.drop_table("payment_allocation")
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attempt_intent_id"))

    op.drop_table("attempt")
    with op.batch_alter_table("payment_intent", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_intent_work")
        batch_op.drop_index(batch_op.f("ix_payment_intent_connection_id"))

    op.drop_table("payment_intent")
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_connection_id"))

    op.drop_table("payment")
    with op.batch_alter_table("ledger_account", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_account_connection_id"))

    op.drop_table("ledger_account")
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoice_number"))
        batch_op.drop_index(batch_op.f("ix_invoice_connection_id"))

    op.drop_table("invoice")
    op.drop_table("cursor")
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_connection_id"))

    op.drop_table("contact")
    op.drop_table("connection")
    with op.batch_alter_table("bill", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bill_number"))
        batch_op.drop_index(batch_op.f("ix_bill_connection_id"))

    op.drop_table("bill")
