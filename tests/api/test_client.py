"""The Python API (``from connector import Connector``) against the real sandbox."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from connector.client import Allocation, Connector
from connector.config import ConfigError
from connector.sync.push import AllocationRequest, IntakeError, IntakeRejected
from tests.api.conftest import intents, ledger_payments, new_invoice
from tests.conftest import Env


@pytest.fixture
def connector(env: Env) -> Connector:
    """A Connector on the env's store (the env disposes of the store)."""
    c = Connector(env.settings, env.store)
    env.closers.append(c)
    return c


def test_import_is_light_and_the_names_are_exported() -> None:
    code = (
        "import sys, connector\n"
        "assert 'connector.client' not in sys.modules, 'imported eagerly'\n"
        "assert 'sqlalchemy' not in sys.modules, 'imported eagerly'\n"
        "from connector import Connector, IntakeError, IntakeRejected, Allocation\n"
        "from connector.client import Connector as C\n"
        "assert Connector is C\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_pay_applies_one_payment_in_the_ledger(env: Env, connector: Connector) -> None:
    inv = new_invoice(env, "80.00")
    allocation = connector.pay(
        env.conn_id, inv["InvoiceNumber"], "30.25", key="order-1", reference="order 1"
    )
    assert isinstance(allocation, Allocation)
    assert allocation.state == "applied" and allocation.final and allocation.settled
    assert allocation.created is True
    assert allocation.amount == Decimal("30.25") and allocation.currency == "USD"
    assert allocation.document_number == inv["InvoiceNumber"]
    assert allocation.idempotency_key == "order-1"
    assert allocation.result_balance == Decimal("49.75")
    [payment] = ledger_payments(env, inv)
    assert payment["PaymentID"] == allocation.remote_payment_id
    assert payment["Reference"] == allocation.reference
    assert allocation.reference.startswith("order 1 (")
    history = connector.history(allocation.id)
    assert [h["phase"] for h in history][:2] == ["preflight", "send"]
    assert connector.allocation(allocation.id) == Allocation.from_intent(
        next(i for i in intents(env) if i.id == allocation.id)
    )
    assert connector.find("order-1", env.conn_id) is not None
    assert connector.allocation("no-such-id") is None
    assert allocation.as_dict()["amount"] == "30.25"


def test_the_same_key_twice_pays_once(env: Env, connector: Connector) -> None:
    inv = new_invoice(env, "80.00")
    first = connector.pay(env.conn_id, inv["InvoiceNumber"], "10.00", key="order-2")
    second = connector.pay(env.conn_id, inv["InvoiceNumber"], Decimal("10"), key="order-2")
    assert first.state == second.state == "applied"
    assert second.id == first.id and second.created is False
    assert len(ledger_payments(env, inv)) == 1
    assert len(intents(env)) == 1
    with pytest.raises(IntakeError) as refused:
        connector.pay(env.conn_id, inv["InvoiceNumber"], "11.00", key="order-2")
    assert refused.value.code == "idempotency_key_reused"
    assert len(ledger_payments(env, inv)) == 1


@pytest.mark.parametrize(
    ("document", "amount", "code"),
    [
        ("INV-DOES-NOT-EXIST", "10.00", "document_not_found"),
        (None, "10.001", "invalid_amount"),
        (None, 10.5, "invalid_amount"),
        (None, "-3", "invalid_amount"),
    ],
)
def test_a_refused_allocation_raises_with_its_code_and_stores_nothing(
    env: Env, connector: Connector, document: str | None, amount: object, code: str
) -> None:
    inv = new_invoice(env)
    with pytest.raises(IntakeError) as refused:
        connector.pay(env.conn_id, document or inv["InvoiceNumber"], amount, key="k")  # type: ignore[arg-type]
    assert refused.value.code == code
    assert refused.value.message
    assert intents(env) == []
    assert ledger_payments(env, inv) == []


def test_pay_many_refuses_the_whole_batch_or_pays_each_once(env: Env, connector: Connector) -> None:
    a, b = new_invoice(env, "70.00"), new_invoice(env, "30.00")
    with pytest.raises(IntakeRejected) as refused:
        connector.pay_many(
            [
                {"connection_id": env.conn_id, "document": a["InvoiceNumber"], "amount": "5"},
                {"connection_id": env.conn_id, "document": "INV-NOPE", "amount": "5"},
            ]
        )
    assert [(i, e.code) for i, e in refused.value.errors] == [(1, "document_not_found")]
    assert intents(env) == []
    done = connector.pay_many(
        [
            {"connection_id": env.conn_id, "document": a["InvoiceNumber"], "amount": "70.00"},
            AllocationRequest(
                connection_id=env.conn_id,
                document=b["InvoiceNumber"],
                amount="30.00",
                idempotency_key="b-full",
            ),
        ]
    )
    assert [d.state for d in done] == ["applied", "applied"]
    assert [d.result_balance for d in done] == [Decimal(0), Decimal(0)]
    assert len(ledger_payments(env, a)) == 1 and len(ledger_payments(env, b)) == 1


def test_plan_is_a_dry_run(env: Env, connector: Connector) -> None:
    inv = new_invoice(env, "20.00")
    [item] = connector.plan(
        [{"connection_id": env.conn_id, "document": inv["InvoiceNumber"], "amount": "25.00"}]
    )
    assert item.outcome == "rejected" and item.code == "amount_exceeds_balance"
    [ok] = connector.plan(
        [{"connection_id": env.conn_id, "document": inv["InvoiceNumber"], "amount": "20.00"}]
    )
    assert ok.outcome == "send" and ok.balance_after == Decimal(0)
    assert intents(env) == [] and ledger_payments(env, inv) == []


def test_from_config_migrates_a_new_store_and_push_pending_finishes(
    env: Env, tmp_path: Path
) -> None:
    from connector.sandbox import write_config

    path = write_config(
        env.state,
        tmp_path / "fresh.toml",
        base_url=env.server.url,
        database_url=f"sqlite:///{tmp_path / 'fresh.db'}",
    )
    inv = new_invoice(env, "15.00")
    with Connector.from_config(path) as connector:
        assert connector.store.current_revision() == connector.store.head_revision()
        queued = connector.pay(env.conn_id, inv["InvoiceNumber"], "15", key="later", wait=False)
        assert queued.state == "pending" and not queued.final
        assert ledger_payments(env, inv) == []
        counts = connector.push_pending()
        assert counts == {"applied": 1}
        final = connector.allocation(queued.id)
        assert final is not None and final.state == "applied"
    assert len(ledger_payments(env, inv)) == 1
    connector.close()  # idempotent


def test_from_config_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[database]\nurl = "sqlite:////nonexistent-dir/x/y.db"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as bad:
        Connector.from_config(path)
    assert bad.value.key == "database.url"
    with pytest.raises(ConfigError):
        Connector.from_config(tmp_path / "missing.toml")


def test_the_readme_example_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = [line for line in done.stdout.splitlines() if not line.startswith("20")]  # no logs
    assert printed[0].split()[0] == "applied" and printed[-1] == "document_not_found", printed
