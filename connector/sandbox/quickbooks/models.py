"""In-memory QuickBooks Online records: the API JSON, minus what QuickBooks computes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["DOC_KINDS", "KINDS", "NAME_KINDS", "PAY_KINDS", "TXN_KINDS", "Realm", "Record"]

#: Transactions share one Id sequence per realm (as QuickBooks' txn ids do).
TXN_KINDS = ("Invoice", "CreditMemo", "SalesReceipt", "Bill", "Payment", "BillPayment")
#: Documents whose ``Balance`` is computed from the payments applied to them.
DOC_KINDS = ("Invoice", "CreditMemo", "Bill")
PAY_KINDS = ("Payment", "BillPayment")
#: Name-list entities share another Id sequence.
NAME_KINDS = ("Customer", "Vendor")
KINDS = (*TXN_KINDS, *NAME_KINDS, "Account")


@dataclass
class Record:
    """One entity.

    Attributes:
        kind: Entity name (``Invoice``).
        id: QuickBooks ``Id`` (a small integer as a string).
        body: The writable/stored properties in API shape; keys starting with ``_`` are
            internal (never rendered). ``Id``, ``SyncToken``, ``MetaData``, ``domain``,
            ``sparse`` and the computed fields (``Balance``, ``UnappliedAmt``,
            back-references in ``LinkedTxn``) are added when rendering.
        created: ``MetaData.CreateTime``.
        updated: ``MetaData.LastUpdatedTime``.
        sync_token: ``SyncToken``.
        deleted: Deleted (kept for CDC; invisible to reads and queries).
        voided: Voided (amounts zeroed, still readable).
    """

    kind: str
    id: str
    body: dict[str, Any]
    created: dt.datetime
    updated: dt.datetime
    sync_token: int = 0
    deleted: bool = False
    voided: bool = False


@dataclass
class Realm:
    """One QuickBooks company.

    Attributes:
        applications: Document txn id → payment txn id → amount applied (the index
            behind ``Balance`` and the ``LinkedTxn`` back-references).
        txns: Every transaction by id (ids are unique across transaction kinds).
        accounts: Role (``checking``, ``undeposited``…) → account id.
    """

    realm_id: str
    company_name: str
    created: dt.datetime
    home_currency: str = "USD"
    rates: dict[str, Decimal] = field(default_factory=dict)
    records: dict[str, dict[str, Record]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    txns: dict[str, Record] = field(default_factory=dict)
    applications: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    counters: dict[str, int] = field(
        default_factory=lambda: {"txn": 0, "name": 0, "account": 0, "addr": 100, "doc": 1000}
    )
    accounts: dict[str, str] = field(default_factory=dict)
