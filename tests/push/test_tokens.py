"""Token refresh inside one process: serialized, rotated, committed before use."""

from __future__ import annotations

import threading

from connector.adapters.base import build_adapter
from connector.state import ConnectionRecord
from tests.conftest import Env


def issued_refresh_tokens(env: Env) -> int:
    return len(env.state.xero.auth._refresh)


def test_concurrent_managers_refresh_once(env: Env) -> None:
    conn = env.xero
    # Two adapters of one connection, as the daemon's push and pull have: two token managers.
    adapters = [build_adapter(conn, env.store, clock=env.clock) for _ in range(2)]
    env.closers.extend(adapters)
    invoice = env.state.xero.invoices(env.tenant)[0]["InvoiceID"]
    before = issued_refresh_tokens(env)
    errors: list[BaseException] = []

    def read(n: int) -> None:
        try:
            for _ in range(5):
                adapters[n % 2].get_document(invoice)
        except BaseException as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert issued_refresh_tokens(env) == before + 1  # one refresh, not one per thread
    with env.store.session() as s:
        rec = s.get(ConnectionRecord, env.conn_id)
    assert rec is not None
    assert rec.refresh_token == env.state.xero.refresh_token_for(env.tenant)
