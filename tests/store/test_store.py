"""The store on both databases: migrations, exact money, upserts, claiming work."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlmodel import select

from connector.schema import Invoice
from connector.state import Attempt, IntentState, PaymentIntent
from connector.store import Store, upsert_records

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def make_intent(connection: str = "c1", key: str | None = None, **kw: object) -> PaymentIntent:
    iid = str(uuid.uuid4())
    fields: dict[str, object] = dict(
        id=iid,
        connection_id=connection,
        idempotency_key=key or iid,
        fingerprint="f" * 64,
        document_ref="INV-1",
        document_remote_id="d1",
        amount=Decimal("49.99"),
        currency="USD",
        transaction_date=date(2026, 11, 21),
        reference=f"cx-{iid[:8]}",
        provider_key=f"cx-{iid}-v1",
        next_attempt_at=NOW - timedelta(seconds=1),
        created_at=NOW,
    )
    fields.update(kw)
    return PaymentIntent(**fields)  # type: ignore[arg-type]


def test_migrations_are_idempotent_and_current(store: Store) -> None:
    assert store.current_revision() == store.head_revision() == "0004"
    store.upgrade()
    assert store.current_revision() == "0004"
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {
        "invoice",
        "bill",
        "contact",
        "ledger_account",
        "payment",
        "payment_allocation",
        "connection",
        "cursor",
        "payment_intent",
        "attempt",
        "push_batch",
        "event",
        "event_delivery",
        "api_request",
        "alembic_version",
    } <= tables


@pytest.mark.parametrize("amount", ["0.01", "49.99", "123456789012.34", "1.234", "1000"])
def test_money_round_trips_exactly(store: Store, amount: str) -> None:
    with store.session() as s:
        s.add(
            Invoice(
                connection_id="c1",
                remote_id=amount,
                status="authorised",
                currency="USD",
                total=Decimal(amount),
                balance=Decimal(amount),
            )
        )
    with store.session() as s:
        inv = s.exec(select(Invoice).where(Invoice.remote_id == amount)).one()
    assert inv.total == Decimal(amount)
    assert isinstance(inv.total, Decimal)


def test_float_is_refused_by_money_columns(store: Store) -> None:
    with pytest.raises(sa.exc.StatementError, match="Decimal"), store.session() as s:
        s.add(
            Invoice(
                connection_id="c1",
                remote_id="x",
                status="authorised",
                currency="USD",
                total=1.5,
                balance=Decimal("1"),
            )
        )  # type: ignore[arg-type]
        s.flush()


def test_upsert_inserts_then_updates_by_connection_and_remote_id(store: Store) -> None:
    rec = {
        "remote_id": "r1",
        "number": "INV-1",
        "status": "authorised",
        "currency": "USD",
        "total": Decimal("10.00"),
        "balance": Decimal("10.00"),
        "row_version": "v1",
    }
    with store.session() as s:
        assert upsert_records(s, Invoice, "c1", [rec], NOW) == (1, 0)
        assert upsert_records(s, Invoice, "c2", [rec], NOW) == (1, 0)
    with store.session() as s:
        changed = {**rec, "balance": Decimal("0.00"), "status": "paid", "row_version": "v2"}
        assert upsert_records(s, Invoice, "c1", [changed, changed], NOW) == (0, 1)
    with store.session() as s:
        rows = s.exec(select(Invoice).order_by(Invoice.connection_id)).all()
    assert [(r.connection_id, r.status, r.balance, r.row_version) for r in rows] == [
        ("c1", "paid", Decimal("0"), "v2"),
        ("c2", "authorised", Decimal("10"), "v1"),
    ]


def test_caller_key_is_unique_per_connection(store: Store) -> None:
    with store.session() as s:
        s.add(make_intent(key="k1"))
    with pytest.raises(sa.exc.IntegrityError), store.session() as s:
        s.add(make_intent(key="k1"))
    with store.session() as s:
        s.add(make_intent(connection="c2", key="k1"))
        assert len(s.exec(select(PaymentIntent)).all()) == 2


def test_claim_takes_due_work_once_and_takes_over_expired_leases(store: Store) -> None:
    due = make_intent()
    later = make_intent(next_attempt_at=NOW + timedelta(minutes=5))
    crashed = make_intent(
        state=IntentState.SENDING.value,
        lease_owner="dead",
        lease_expires_at=NOW - timedelta(seconds=1),
    )
    busy = make_intent(
        state=IntentState.SENDING.value,
        lease_owner="alive",
        lease_expires_at=NOW + timedelta(seconds=60),
    )
    final = make_intent(state=IntentState.APPLIED.value)
    with store.session() as s:
        for i in (due, later, crashed, busy, final):
            s.add(i)
    got = store.claim_intents(worker="w1", now=NOW, lease=timedelta(seconds=30))
    assert {i.id for i in got} == {due.id, crashed.id}
    states = {i.id: i.state for i in got}
    assert states[due.id] == "claimed"  # pending → claimed
    assert states[crashed.id] == "sending"  # keeps its state: the worker must reconcile
    assert store.claim_intents(worker="w2", now=NOW, lease=timedelta(seconds=30)) == []
    # After the lease runs out, another worker takes them over.
    again = store.claim_intents(
        worker="w2", now=NOW + timedelta(seconds=31), lease=timedelta(seconds=30)
    )
    assert {i.id for i in again} == {due.id, crashed.id}
    assert all(i.lease_owner == "w2" for i in again)


def test_concurrent_claimers_never_share_an_intent(store: Store) -> None:
    with store.session() as s:
        for _ in range(40):
            s.add(make_intent())
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def claim(worker: str) -> None:
        try:
            mine: list[str] = []
            while True:
                got = store.claim_intents(
                    worker=worker, now=NOW, lease=timedelta(minutes=5), limit=3
                )
                if not got:
                    break
                mine.extend(i.id for i in got)
            results[worker] = mine
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    claimed = [i for ids in results.values() for i in ids]
    assert len(claimed) == 40
    assert len(set(claimed)) == 40


def test_attempt_log_is_append_only(store: Store) -> None:
    intent = make_intent()
    with store.session() as s:
        s.add(intent)
        s.flush()
        s.add(Attempt(intent_id=intent.id, phase="send", outcome="ok", idempotency_key="k"))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.session() as s:
        s.execute(sa.update(Attempt).values(outcome="rewritten"))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.session() as s:
        s.execute(sa.delete(Attempt))
    with store.session() as s:
        [row] = s.exec(select(Attempt)).all()
    assert row.outcome == "ok"
