"""Batching: many allocations of a connection go out in the provider's largest safe call.

Every assertion is on the sandbox ledger's state or on the requests that reached it.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connector.adapters.base import build_adapter
from connector.state import PaymentIntent, PushBatch
from connector.sync.push import AllocationRequest, PushEngine, SimulatedCrash
from tests.conftest import Env

LEASE_PAST = 10_000


class CountingTransport(httpx.HTTPTransport):
    """Counts the requests an adapter sends, by method and last path segment."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls[f"{request.method} {request.url.path.rsplit('/', 1)[-1]}"] += 1
        if request.method == "PUT":
            self.keys.append(request.headers.get("Idempotency-Key"))
        return super().handle_request(request)


def counting_engine(env: Env, transport: CountingTransport, **kw: Any) -> PushEngine:
    def factory(connection_id: str) -> Any:
        return build_adapter(
            env.settings.connection(connection_id), env.store, clock=env.clock, transport=transport
        )

    eng = PushEngine(env.settings, env.store, clock=env.clock, adapter_factory=factory, **kw)
    env.closers.append(eng)
    return eng


def invoices(env: Env, n: int, total: str = "100.00") -> list[dict[str, Any]]:
    return [env.state.xero.add_invoice(env.tenant, total=Decimal(total)) for _ in range(n)]


def intake_all(env: Env, eng: PushEngine, docs: list[dict[str, Any]], amount: str) -> list[str]:
    results = eng.intake_many(
        [
            AllocationRequest(env.conn_id, d["InvoiceNumber"], amount, idempotency_key=f"k-{i}")
            for i, d in enumerate(docs)
        ]
    )
    return [r.intent.id for r in results]


def ours(env: Env) -> Counter[str]:
    """Live payments in the ledger per reference (ours carry the cx- marker)."""
    return Counter(
        str(p.get("Reference"))
        for p in env.state.xero.payments(env.tenant)
        if "cx-" in str(p.get("Reference"))
    )


def finish(eng: PushEngine, env: Env, ids: list[str], rounds: int = 30) -> list[PaymentIntent]:
    for _ in range(rounds):
        eng.run_once(intent_ids=ids)
        rows = eng.intents(ids)
        if all(r.state in {"applied", "already_settled", "rejected", "conflict"} for r in rows):
            return rows
        env.advance(30)
    return eng.intents(ids)


def test_120_allocations_go_out_in_three_calls_of_at_most_50(env: Env) -> None:
    docs = invoices(env, 120)
    transport = CountingTransport()
    eng = counting_engine(env, transport)
    ids = intake_all(env, eng, docs, "40.00")
    rows = finish(eng, env, ids)
    assert {r.state for r in rows} == {"applied"}
    assert transport.calls["PUT Payments"] == 3  # 50 + 50 + 20
    refs = ours(env)
    assert len(refs) == 120 and set(refs.values()) == {1}
    for doc in docs:
        assert Decimal(str(env.state.xero.invoice(env.tenant, doc["InvoiceID"])["AmountDue"])) == (
            Decimal("60.00")
        )


def test_a_batch_is_stored_with_its_members_and_key_before_it_is_sent(env: Env) -> None:
    docs = invoices(env, 10)
    eng = counting_engine(env, CountingTransport(), crash_at={"after_store"})
    ids = intake_all(env, eng, docs, "10.00")
    with pytest.raises(SimulatedCrash):
        eng.run_once(intent_ids=ids)
    assert not ours(env)  # nothing sent
    rows = eng.intents(ids)
    assert {r.state for r in rows} == {"sending"}
    [batch_id] = {r.batch_id for r in rows}
    with env.store.session() as s:
        batch = s.get(PushBatch, batch_id)
        assert batch is not None
        assert batch.size == 10 and batch.provider_key.startswith("cx-b-")
    # Past the lease, within Xero's key window: a new worker looks the members up,
    # finds none, and resends the identical batch under the identical key.
    env.advance(150)
    transport = CountingTransport()
    rows = finish(counting_engine(env, transport), env, ids)
    assert {r.state for r in rows} == {"applied"}
    assert transport.keys == [batch.provider_key]
    assert len(ours(env)) == 10 and set(ours(env).values()) == {1}


def test_past_the_key_window_a_stored_batch_is_looked_up_and_sent_under_new_keys(
    env: Env,
) -> None:
    docs = invoices(env, 6)
    eng = counting_engine(env, CountingTransport(), crash_at={"after_store"})
    ids = intake_all(env, eng, docs, "10.00")
    with pytest.raises(SimulatedCrash):
        eng.run_once(intent_ids=ids)
    [old_batch] = {r.batch_id for r in eng.intents(ids)}
    env.advance(LEASE_PAST)
    transport = CountingTransport()
    rows = finish(counting_engine(env, transport), env, ids)
    assert {r.state for r in rows} == {"applied"}
    assert transport.calls["GET Payments"] >= 1  # looked up before anything was resent
    assert len(transport.keys) == 1 and transport.keys[0] != old_batch
    assert {r.key_version for r in rows} == {2}
    assert len(ours(env)) == 6 and set(ours(env).values()) == {1}


def test_a_lost_answer_is_settled_by_lookup_without_duplicates(env: Env) -> None:
    docs = invoices(env, 30)
    eng = counting_engine(env, CountingTransport())
    ids = intake_all(env, eng, docs, "25.00")
    env.state.faults.update({"drop_after_commit_next": 1})
    eng.run_once(intent_ids=ids)
    assert {r.state for r in eng.intents(ids)} == {"unknown"}
    assert len(ours(env)) == 30  # the ledger applied it; we did not hear
    rows = finish(eng, env, ids)
    assert {r.state for r in rows} == {"applied"}
    assert set(ours(env).values()) == {1} and len(ours(env)) == 30


def test_a_crash_after_the_send_is_settled_by_lookup(env: Env) -> None:
    docs = invoices(env, 12)
    eng = counting_engine(env, CountingTransport(), crash_at={"after_send"})
    ids = intake_all(env, eng, docs, "5.00")
    with pytest.raises(SimulatedCrash):
        eng.run_once(intent_ids=ids)
    env.advance(LEASE_PAST)
    rows = finish(counting_engine(env, CountingTransport()), env, ids)
    assert {r.state for r in rows} == {"applied"}
    assert len(ours(env)) == 12 and set(ours(env).values()) == {1}


def test_a_rate_limited_batch_is_resent_as_it_was_without_a_lookup(env: Env) -> None:
    docs = invoices(env, 8)
    transport = CountingTransport()
    eng = counting_engine(env, transport)
    ids = intake_all(env, eng, docs, "7.00")
    env.state.faults.update({"rate_limit_next": 1})
    rows = finish(eng, env, ids)
    assert {r.state for r in rows} == {"applied"}
    assert len(set(transport.keys)) == 1 and len(transport.keys) >= 2  # same key, resent
    assert transport.calls["GET Payments"] == 0  # no lookup was needed
    assert len(ours(env)) == 8 and set(ours(env).values()) == {1}


def test_two_allocations_of_one_invoice_in_one_round_never_overpay_it(env: Env) -> None:
    [doc] = invoices(env, 1, total="100.00")
    eng = counting_engine(env, CountingTransport())
    results = eng.intake_many(
        [
            AllocationRequest(env.conn_id, doc["InvoiceNumber"], "70.00", idempotency_key="a"),
            AllocationRequest(env.conn_id, doc["InvoiceNumber"], "70.00", idempotency_key="b"),
        ]
    )
    ids = [r.intent.id for r in results]
    rows = finish(eng, env, ids)
    states = sorted(r.state for r in rows)
    # The second fitted when it was accepted; the first then took part of the balance:
    # a conflict with both amounts for a person, never a second payment.
    assert states == ["applied", "conflict"]
    second = next(r for r in rows if r.state == "conflict")
    assert second.reason_code == "balance_moved"
    assert "30.00" in (second.reason_message or "") and "70.00" in (second.reason_message or "")
    inv = env.state.xero.invoice(env.tenant, doc["InvoiceID"])
    assert Decimal(str(inv["AmountDue"])) == Decimal("30.00")
    assert len(ours(env)) == 1


def test_one_refused_item_does_not_hold_back_the_others(env: Env) -> None:
    docs = invoices(env, 5)
    eng = counting_engine(env, CountingTransport())
    ids = intake_all(env, eng, docs, "10.00")
    # Someone voids one invoice after intake: its item is refused, the rest land.
    env.state.xero.edit_invoice(env.tenant, docs[2]["InvoiceID"], Status="VOIDED")
    rows = finish(eng, env, ids)
    by_doc = {r.document_remote_id: r for r in rows}
    assert by_doc[docs[2]["InvoiceID"]].state == "rejected"
    assert sum(r.state == "applied" for r in rows) == 4
    assert len(ours(env)) == 4
