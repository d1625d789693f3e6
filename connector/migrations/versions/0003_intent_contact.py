"""payment_intent.contact_remote_id: the customer or supplier a payment goes to

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payment_intent") as batch_op:
        batch_op.add_column(sa.Column("contact_remote_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payment_intent") as batch_op:
        batch_op.drop_column("contact_remote_id")
