"""`connector plan`, `import --dry-run` and `pay --dry-run`: predictions, and nothing written."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from tests.cli.test_import import amount_due, doc, ledger_payments, run, stored, write_csv
from tests.conftest import Env

# What a real push does with each predicted outcome.
PUSHED = {"send": "applied", "already_settled": "already_settled", "rejected": "rejected"}


def test_plan_predicts_what_the_import_then_does_and_writes_nothing(
    env: Env, tmp_path: Path
) -> None:
    open_inv = doc(env, "100.00")
    paid = doc(env, "40.00", status="PAID")
    draft = doc(env, "30.00", status="DRAFT")
    bill = doc(env, "80.00", type="ACCPAY")
    small = doc(env, "10.00")
    path = write_csv(
        tmp_path / "plan.csv",
        "document,amount,document_type",
        [
            f"{open_inv['InvoiceNumber']},60.00,invoice",
            f"{paid['InvoiceNumber']},40.00,invoice",
            f"{draft['InvoiceNumber']},5.00,invoice",
            f"{bill['InvoiceNumber']},80.00,bill",
            f"{small['InvoiceNumber']},12.00,invoice",
        ],
    )
    before = len(ledger_payments(env))
    common = ["--config", str(env.config_path), "--connection", env.conn_id, str(path), "--json"]

    planned = run("plan", *common)

    assert planned.returncode == 3, planned.stdout + planned.stderr  # some would be rejected
    report = json.loads(planned.stdout)
    rows = report["rows"]
    assert [(r["line"], r["outcome"], r["code"]) for r in rows] == [
        (2, "send", None),
        (3, "already_settled", "already_settled"),
        (4, "rejected", "document_not_payable"),
        (5, "send", None),
        (6, "rejected", "amount_exceeds_balance"),
    ]
    first = rows[0]
    assert (first["balance"], first["send_amount"], first["balance_after"]) == (
        "100.00",
        "60.00",
        "40.00",
    )
    assert first["document_status"] == "AUTHORISED" and first["currency"] == "USD"
    assert rows[2]["document_status"] == "DRAFT" and rows[2]["send_amount"] is None
    assert report["summary"] == {
        "send": 2,
        "already_settled": 1,
        "replay": 0,
        "rejected": 2,
        "conflict": 0,
        "invalid": 0,
    }
    # Nothing written: not to the ledger, not to the outbox.
    assert len(ledger_payments(env)) == before
    assert stored(env) == ([], [])
    assert amount_due(env, open_inv) == Decimal("100.00")

    # import --dry-run is the same thing.
    dry = run("import", *common, "--dry-run")
    assert dry.returncode == 3
    assert json.loads(dry.stdout) == report
    assert stored(env) == ([], []) and len(ledger_payments(env)) == before

    # The real import does what was predicted.
    imported = run("import", *common)
    assert imported.returncode == 3, imported.stderr
    done = json.loads(imported.stdout)["rows"]
    assert [r["state"] for r in done] == [PUSHED[r["outcome"]] for r in rows]
    assert [r["reason_code"] for r in done if r["state"] == "rejected"] == [
        "document_not_payable",
        "amount_exceeds_balance",
    ]
    assert len(ledger_payments(env)) == before + 2
    assert amount_due(env, open_inv) == Decimal("40.00") and amount_due(env, bill) == 0

    # Planned again: every row is already imported; nothing new would be sent.
    intents_then, attempts_then = stored(env)
    replanned = run("plan", *common)
    assert replanned.returncode == 0
    again = json.loads(replanned.stdout)["rows"]
    assert [(r["outcome"], r["code"]) for r in again] == [("replay", r["state"]) for r in done]
    intents, attempts = stored(env)
    assert len(intents) == len(intents_then) == 5
    assert len(attempts) == len(attempts_then)
    assert {i.id: i.state for i in intents} == {i.id: i.state for i in intents_then}
    assert len(ledger_payments(env)) == before + 2


def test_plan_table_and_exit_codes(env: Env, tmp_path: Path) -> None:
    a, b = doc(env, "50.00"), doc(env, "20.00", type="ACCPAY")
    ok = write_csv(
        tmp_path / "ok.csv",
        "connection_id,document,amount,document_type",
        [
            f"{env.conn_id},{a['InvoiceNumber']},50.00,",
            f"{env.conn_id},{b['InvoiceNumber']},5,bill",
        ],
    )
    result = run("plan", "--config", str(env.config_path), str(ok))
    assert result.returncode == 0, result.stdout + result.stderr
    for column in ("line", "document", "status", "balance", "would send", "balance after"):
        assert column in result.stdout
    assert "50.00 USD" in result.stdout and "15.00 USD" in result.stdout  # b's balance after
    assert "2 would send" in result.stdout and "nothing stored, nothing sent" in result.stdout

    invalid = write_csv(
        tmp_path / "invalid.csv",
        "connection_id,document,amount",
        [f"{env.conn_id},{a['InvoiceNumber']},5.00", f"{env.conn_id},INV-NOPE,1.00"],
    )
    bad = run("plan", "--config", str(env.config_path), str(invalid), "--json")
    assert bad.returncode == 2
    assert [(r["line"], r["outcome"], r["code"]) for r in json.loads(bad.stdout)["rows"]] == [
        (2, "send", None),
        (3, "invalid", "document_not_found"),
    ]
    malformed = write_csv(tmp_path / "m.csv", "document,amount", ["X,1"])
    refused = run("plan", "--config", str(env.config_path), str(malformed))
    assert refused.returncode == 2 and "line 1: missing_column:" in refused.stderr
    assert stored(env) == ([], [])
    assert env.state.xero.payments(env.tenant, invoice_id=a["InvoiceID"]) == []


def test_pay_dry_run_predicts_and_writes_nothing(env: Env) -> None:
    inv = doc(env, "80.00")
    draft = doc(env, "80.00", status="DRAFT")
    base = ["pay", "--config", str(env.config_path), "--connection", env.conn_id, "--json"]
    before = len(ledger_payments(env))

    result = run(*base, "--document", inv["InvoiceNumber"], "--amount", "30.00", "--dry-run")

    assert result.returncode == 0, result.stderr
    [item] = json.loads(result.stdout)
    assert (item["outcome"], item["balance"], item["send_amount"], item["balance_after"]) == (
        "send",
        "80.00",
        "30.00",
        "50.00",
    )
    rejected = run(*base, "--document", draft["InvoiceNumber"], "--amount", "1.00", "--dry-run")
    assert rejected.returncode == 3
    assert json.loads(rejected.stdout)[0]["code"] == "document_not_payable"
    too_precise = run(*base, "--document", inv["InvoiceNumber"], "--amount", "1.001", "--dry-run")
    assert too_precise.returncode == 2
    assert json.loads(too_precise.stdout)[0]["code"] == "invalid_amount"
    assert stored(env) == ([], [])
    assert len(ledger_payments(env)) == before
    assert amount_due(env, inv) == Decimal("80.00")
