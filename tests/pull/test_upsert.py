"""upsert_records on both databases: counts, last version wins, deletions as tombstones."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlmodel import select

from connector.schema import Invoice
from connector.store import Store, upsert_records

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def doc(rid: str, total: str, **extra: Any) -> dict[str, Any]:
    return {
        "remote_id": rid,
        "status": "authorised",
        "currency": "USD",
        "total": Decimal(total),
        "balance": Decimal(total),
        "remote_updated_at": NOW,
        **extra,
    }


def rows(store: Store) -> dict[str, Invoice]:
    with store.session() as s:
        return {i.remote_id: i for i in s.exec(select(Invoice)).all()}


def test_upsert_counts_updates_and_tombstones(store: Store) -> None:
    with store.session() as s:
        assert upsert_records(s, Invoice, "c1", [doc("a", "1.00"), doc("b", "2.00")], NOW) == (2, 0)
    deletion = {"remote_id": "a", "status": "deleted", "deleted": True, "remote_updated_at": NOW}
    unknown = {**deletion, "remote_id": "z"}
    page = [doc("b", "2.50"), doc("b", "3.00", number="B"), doc("c", "4.00"), deletion, unknown]
    with store.session() as s:
        assert upsert_records(s, Invoice, "c1", page, NOW) == (2, 2)
    got = rows(store)
    assert got["b"].total == Decimal("3.00") and got["b"].number == "B"  # last version wins
    assert got["a"].deleted and got["a"].status == "deleted"
    assert got["a"].total == Decimal("1.00")  # a deletion keeps the record's last values
    assert got["z"].deleted and got["z"].total == 0  # a tombstone of a record never seen
    assert not got["c"].deleted and len(got) == 4
    with store.session() as s:  # the same ids under another connection are other records
        assert upsert_records(s, Invoice, "c2", [doc("a", "9.00")], NOW) == (1, 0)
