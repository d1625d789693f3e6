"""The unified schema: what every ledger's records become in our store.

Field names follow the unified accounting spec (Apideck): ``total``, ``balance``,
``currency``, ``currency_rate``, ``row_version``, payments' ``total_amount`` and
``allocations[].{id,type,amount}``. Every record carries its connection, the
provider's remote id, the remote row version and the remote updated time, and
is unique per ``(connection_id, remote_id)``.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from connector.types import Money, UTCDateTime, utcnow

__all__ = ["Bill", "Contact", "Invoice", "LedgerAccount", "Payment", "PaymentAllocation"]


class _Remote(SQLModel):
    """Columns every mirrored record has."""

    id: int | None = Field(default=None, primary_key=True)
    connection_id: str = Field(max_length=64, index=True)
    remote_id: str = Field(max_length=128)
    row_version: str | None = Field(default=None, max_length=128)
    remote_updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    deleted: bool = Field(default=False)
    synced_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Contact(_Remote, table=True):
    """A customer or supplier."""

    __tablename__ = "contact"
    __table_args__ = (sa.UniqueConstraint("connection_id", "remote_id"),)

    display_name: str | None = Field(default=None, max_length=255)
    is_customer: bool = False
    is_supplier: bool = False
    currency: str | None = Field(default=None, max_length=3)
    status: str | None = Field(default=None, max_length=32)


class LedgerAccount(_Remote, table=True):
    """A chart-of-accounts entry (bank, AR, AP, revenue…)."""

    __tablename__ = "ledger_account"
    __table_args__ = (sa.UniqueConstraint("connection_id", "remote_id"),)

    code: str | None = Field(default=None, max_length=32)
    name: str | None = Field(default=None, max_length=255)
    type: str | None = Field(default=None, max_length=32)
    status: str | None = Field(default=None, max_length=32)
    currency: str | None = Field(default=None, max_length=3)


class _Document(_Remote):
    number: str | None = Field(default=None, max_length=64, index=True)
    status: str = Field(
        max_length=32
    )  # unified: draft, submitted, authorised, partially_paid, paid, void, deleted
    currency: str = Field(max_length=3)
    currency_rate: Decimal | None = Field(default=None, sa_type=Money)
    total: Decimal = Field(sa_type=Money)
    balance: Decimal = Field(sa_type=Money)
    due_date: date | None = None
    reference: str | None = Field(default=None, max_length=255)


class Invoice(_Document, table=True):
    """An accounts-receivable document (a sales invoice)."""

    __tablename__ = "invoice"
    __table_args__ = (sa.UniqueConstraint("connection_id", "remote_id"),)

    customer_id: str | None = Field(default=None, max_length=128)
    customer_name: str | None = Field(default=None, max_length=255)
    invoice_date: date | None = None


class Bill(_Document, table=True):
    """An accounts-payable document (a supplier bill)."""

    __tablename__ = "bill"
    __table_args__ = (sa.UniqueConstraint("connection_id", "remote_id"),)

    supplier_id: str | None = Field(default=None, max_length=128)
    supplier_name: str | None = Field(default=None, max_length=255)
    bill_date: date | None = None


class Payment(_Remote, table=True):
    """A payment in the ledger, with what it settles in ``allocations``."""

    __tablename__ = "payment"
    __table_args__ = (sa.UniqueConstraint("connection_id", "remote_id"),)

    type: str = Field(max_length=32)  # accounts_receivable | accounts_payable
    status: str = Field(max_length=32)  # authorised | deleted | void
    total_amount: Decimal = Field(sa_type=Money)
    currency: str | None = Field(default=None, max_length=3)
    currency_rate: Decimal | None = Field(default=None, sa_type=Money)
    transaction_date: date | None = None
    reference: str | None = Field(default=None, max_length=255)
    account_id: str | None = Field(default=None, max_length=128)


class PaymentAllocation(SQLModel, table=True):
    """One document a payment settles: ``allocations[].{id, type, amount}``."""

    __tablename__ = "payment_allocation"

    pk: int | None = Field(default=None, primary_key=True)
    payment_pk: int = Field(foreign_key="payment.id", index=True, ondelete="CASCADE")
    id: str = Field(max_length=128)  # the document's remote id, as in the unified spec
    type: str = Field(max_length=32)  # invoice | bill
    amount: Decimal = Field(sa_type=Money)
