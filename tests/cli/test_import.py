"""`connector import` and `pay --enqueue-only` as a user runs them: real process, real sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from connector.state import Attempt, PaymentIntent
from connector.sync.push import PushEngine
from tests.conftest import Env

CONNECTOR = str(Path(sys.executable).parent / "connector")


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONNECTOR, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1"},
    )


def stored(env: Env) -> tuple[list[PaymentIntent], list[Attempt]]:
    with env.store.session() as s:
        return list(s.exec(select(PaymentIntent)).all()), list(s.exec(select(Attempt)).all())


def ledger_payments(env: Env) -> list[dict[str, Any]]:
    return env.state.xero.payments(env.tenant)


def doc(env: Env, total: str, **kw: Any) -> dict[str, Any]:
    found: dict[str, Any] = env.state.xero.add_invoice(env.tenant, total=Decimal(total), **kw)
    return found


def amount_due(env: Env, d: dict[str, Any]) -> Decimal:
    return Decimal(str(env.state.xero.invoice(env.tenant, d["InvoiceID"])["AmountDue"]))


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_csv_of_invoices_and_bills_is_applied_once_and_a_second_import_adds_nothing(
    env: Env, tmp_path: Path
) -> None:
    invoices = [doc(env, total) for total in ("100.00", "250.00", "75.50", "60.00", "12.34")]
    bills = [doc(env, total, type="ACCPAY") for total in ("300.00", "45.00", "80.00")]
    paid = doc(env, "20.00", status="PAID")
    rows = [
        f"{invoices[0]['InvoiceNumber']},100.00,invoice,,full",
        f"{invoices[1]['InvoiceNumber']},50.00,invoice,2026-11-20,part",
        f"{invoices[2]['InvoiceNumber']},75.5,,,",
        f"{invoices[3]['InvoiceNumber']},10.00,invoice,,first",
        f"{invoices[3]['InvoiceNumber']},10.00,invoice,,second",  # same amount, other ref
        f"{invoices[4]['InvoiceNumber']},12.34,invoice,,",
        f"{bills[0]['InvoiceNumber']},300.00,bill,,",
        f"{bills[1]['InvoiceNumber']},5.00,bill,,",
        f"{bills[2]['InvoiceNumber']},80.00,BILL,,",
        f"{paid['InvoiceNumber']},20.00,invoice,,",
    ]
    path = write_csv(
        tmp_path / "allocations.csv",
        "document,amount,document_type,transaction_date,reference",
        rows,
    )
    before = len(ledger_payments(env))

    first = run("import", "--config", str(env.config_path), "--connection", env.conn_id, str(path))

    assert first.returncode == 0, first.stdout + first.stderr
    assert (
        "10 row(s): 9 applied, 1 already_settled, 0 rejected, 0 conflict, 0 waiting; "
        "10 new, 0 already imported" in first.stdout
    )
    intents, _ = stored(env)
    assert len(intents) == 10
    applied = [i for i in intents if i.state == "applied"]
    assert len(applied) == 9
    # The ledger holds exactly one payment per applied row, with the row's amount.
    payments = ledger_payments(env)
    assert len(payments) == before + 9
    ours = {p["PaymentID"]: p for p in payments}
    for intent in applied:
        payment = ours[intent.remote_payment_id]
        assert Decimal(str(payment["Amount"])) == intent.amount
    assert sorted(Decimal(str(p["Amount"])) for p in payments[before:]) == sorted(
        i.amount for i in applied
    )
    assert amount_due(env, invoices[0]) == 0
    assert amount_due(env, invoices[1]) == Decimal("200.00")
    assert amount_due(env, invoices[3]) == Decimal("40.00")  # both 10.00 rows landed
    assert amount_due(env, bills[1]) == Decimal("40.00")
    assert {p["PaymentType"] for p in payments[before:]} == {"ACCRECPAYMENT", "ACCPAYPAYMENT"}
    assert len(env.state.xero.payments(env.tenant, invoice_id=paid["InvoiceID"])) == 1  # its own
    [settled] = [i for i in intents if i.state == "already_settled"]
    assert settled.document_ref == paid["InvoiceNumber"]
    for line in range(2, 12):
        assert str(line) in first.stdout

    again = run(
        "import",
        "--config",
        str(env.config_path),
        "--connection",
        env.conn_id,
        str(path),
        "--json",
    )

    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["summary"] == {
        "rows": 10,
        "applied": 9,
        "already_settled": 1,
        "rejected": 0,
        "conflict": 0,
        "waiting": 0,
        "new": 0,
        "already_imported": 10,
    }
    assert [r["line"] for r in report["rows"]] == list(range(2, 12))
    assert {r["id"] for r in report["rows"]} == {i.id for i in intents}
    assert all(r["new"] is False for r in report["rows"])
    assert len(ledger_payments(env)) == before + 9
    assert len(stored(env)[0]) == 10


@pytest.mark.parametrize(
    ("bad_row", "header_extra", "expected"),
    [
        ("INV-9999,5.00", "", "line 4: document_not_found: "),
        ("{good},1.234", "", "line 4: invalid_amount: amount '1.234' has more decimals than USD"),
        ("{good},5.00,blue", ",colour", "line 1: unknown_column: unknown column 'colour'"),
    ],
    ids=["unknown-document", "amount-too-precise", "unknown-column"],
)
def test_one_bad_row_refuses_the_whole_file_and_stores_nothing(
    env: Env, tmp_path: Path, bad_row: str, header_extra: str, expected: str
) -> None:
    good = [doc(env, "50.00") for _ in range(3)]
    rows = [f"{good[0]['InvoiceNumber']},5.00", f"{good[1]['InvoiceNumber']},6.00"]
    rows.append(bad_row.format(good=good[2]["InvoiceNumber"]))
    if header_extra:
        rows = [r + ("" if r.count(",") == 2 else ",") for r in rows]
    path = write_csv(tmp_path / "bad.csv", "document,amount" + header_extra, rows)
    before = len(ledger_payments(env))

    result = run("import", "--config", str(env.config_path), "--connection", env.conn_id, str(path))

    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert "nothing stored" in result.stderr
    assert stored(env) == ([], [])
    assert len(ledger_payments(env)) == before
    assert all(amount_due(env, d) == Decimal("50.00") for d in good)


def test_every_bad_row_is_listed_with_its_line_in_json(env: Env, tmp_path: Path) -> None:
    good = doc(env, "50.00")
    path = write_csv(
        tmp_path / "bad.csv",
        "connection_id,document,amount,transaction_date",
        [
            f"{env.conn_id},{good['InvoiceNumber']},5.00,",
            f"{env.conn_id},INV-NOPE,5.00,",
            f"{env.conn_id},{good['InvoiceNumber']},6.00,2026-13-01",
            f"no-such-connection,{good['InvoiceNumber']},7.00,",
        ],
    )

    result = run("import", "--config", str(env.config_path), str(path), "--json")

    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["stored"] == 0
    assert [(e["line"], e["code"]) for e in report["errors"]] == [
        (4, "invalid_date"),
        (5, "unknown_connection"),
    ]
    assert stored(env) == ([], [])
    # Once the file is well-formed, the ledger check names the next problem.
    path = write_csv(
        tmp_path / "next.csv",
        "connection_id,document,amount",
        [f"{env.conn_id},{good['InvoiceNumber']},5.00", f"{env.conn_id},INV-NOPE,5.00"],
    )
    second = run("import", "--config", str(env.config_path), str(path), "--json")
    assert second.returncode == 2
    assert [(e["line"], e["code"]) for e in json.loads(second.stdout)["errors"]] == [
        (3, "document_not_found")
    ]
    assert stored(env) == ([], [])
    assert env.state.xero.payments(env.tenant, invoice_id=good["InvoiceID"]) == []


def test_jsonl_import_reads_numbers_exactly(env: Env, tmp_path: Path) -> None:
    inv, bill = doc(env, "100.00"), doc(env, "90.00", type="ACCPAY")
    path = tmp_path / "allocations.jsonl"
    path.write_text(
        json.dumps({"document": inv["InvoiceNumber"], "amount": "0.1", "reference": "a"}).replace(
            '"0.1"', "0.1"
        )
        + "\n\n"
        + json.dumps(
            {
                "connection_id": env.conn_id,
                "document": bill["InvoiceNumber"],
                "amount": "33.30",
                "document_type": "bill",
                "transaction_date": "2026-11-02",
            }
        )
        + "\n"
    )
    assert '"amount": 0.1,' in path.read_text()  # a JSON number, not a string

    result = run(
        "import", "--config", str(env.config_path), "--connection", env.conn_id, str(path), "--json"
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(r["line"], r["state"], r["amount"]) for r in report["rows"]] == [
        (1, "applied", "0.10"),
        (3, "applied", "33.30"),
    ]
    [inv_payment] = env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"])
    assert Decimal(str(inv_payment["Amount"])) == Decimal("0.10")
    [bill_payment] = env.state.xero.payments(env.tenant, invoice_id=bill["InvoiceID"])
    assert Decimal(str(bill_payment["Amount"])) == Decimal("33.30")
    assert bill_payment["PaymentType"] == "ACCPAYPAYMENT"
    assert amount_due(env, bill) == Decimal("56.70")


def test_jsonl_row_errors_and_multi_document_refusals_name_the_file_line(
    env: Env, tmp_path: Path
) -> None:
    inv = doc(env, "100.00")
    path = tmp_path / "a.ndjson"
    path.write_text(
        json.dumps({"document": inv["InvoiceNumber"], "amount": "1.00"})
        + "\n"
        + '{"document": "X", "amount": true}\n'
        + '{"document": "X", "amount": "1", "colour": "red"}\n'
    )
    bad = run("import", "--config", str(env.config_path), "--connection", env.conn_id, str(path))
    assert bad.returncode == 2
    assert "line 2: invalid_amount: amount must be a number" in bad.stderr
    assert "line 3: unknown_key: unknown key 'colour'" in bad.stderr
    assert stored(env) == ([], [])

    # A multi-document row over a document the ledger does not have: the engine's
    # refusal (whatever its code) is reported on the file's line, nothing stored.
    path.write_text(
        json.dumps({"document": inv["InvoiceNumber"], "amount": "1.00"})
        + "\n"
        + json.dumps(
            {
                "allocations": [
                    {"document": inv["InvoiceNumber"], "amount": "2.00"},
                    {"document": "INV-NOPE", "amount": "3.00"},
                ]
            }
        )
        + "\n"
    )
    refused = run(
        "import", "--config", str(env.config_path), "--connection", env.conn_id, str(path), "--json"
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    [error] = json.loads(refused.stdout)["errors"]
    assert error["line"] == 2
    assert error["code"] in {"document_not_found", "not_supported"}
    assert stored(env) == ([], [])
    assert env.state.xero.payments(env.tenant, invoice_id=inv["InvoiceID"]) == []


def test_enqueue_only_stores_pending_intents_and_leaves_the_ledger_alone(
    env: Env, tmp_path: Path
) -> None:
    a, b, c = doc(env, "10.00"), doc(env, "20.00", type="ACCPAY"), doc(env, "5.00")
    path = write_csv(
        tmp_path / "q.csv",
        "document,amount,document_type",
        [f"{a['InvoiceNumber']},10.00,invoice", f"{b['InvoiceNumber']},20.00,bill"],
    )
    before = len(ledger_payments(env))

    result = run(
        "import",
        "--config",
        str(env.config_path),
        "--connection",
        env.conn_id,
        str(path),
        "--enqueue-only",
    )

    assert result.returncode == 0, result.stderr
    intents, attempts = stored(env)
    assert sorted(i.state for i in intents) == ["pending", "pending"]
    assert attempts == []
    assert len(ledger_payments(env)) == before
    assert "2 waiting; 2 new" in result.stdout and "daemon" in result.stdout

    single = run(
        "pay",
        "--config",
        str(env.config_path),
        "--connection",
        env.conn_id,
        "--document",
        c["InvoiceNumber"],
        "--amount",
        "1.00",
        "--key",
        "q-1",
        "--enqueue-only",
        "--json",
    )
    assert single.returncode == 0, single.stderr
    [row] = json.loads(single.stdout)
    assert row["state"] == "pending" and row["idempotency_key"] == "q-1"
    assert len(ledger_payments(env)) == before

    # What a running daemon does with them: push each once.
    engine = PushEngine(env.settings, env.store)
    env.closers.append(engine)
    ids = [i.id for i in stored(env)[0]]
    final = engine.push_until_final(ids, timeout=30)
    assert [i.state for i in final] == ["applied"] * 3
    assert len(ledger_payments(env)) == before + 3
    assert (amount_due(env, a), amount_due(env, b), amount_due(env, c)) == (0, 0, Decimal("4.00"))


def test_pay_help_documents_the_new_modes() -> None:
    result = run("pay", "--help")
    assert result.returncode == 0
    for flag in ("--dry-run", "--enqueue-only", "--currency", "--currency-rate"):
        assert flag in result.stdout
    imp = run("import", "--help")
    assert imp.returncode == 0
    for flag in ("--connection", "--format", "--timeout", "--dry-run", "--enqueue-only", "--json"):
        assert flag in imp.stdout


def test_unreadable_inputs_exit_2(env: Env, tmp_path: Path) -> None:
    odd = tmp_path / "a.txt"
    odd.write_text("document,amount\nINV-1,1\n")
    result = run("import", "--config", str(env.config_path), "--connection", env.conn_id, str(odd))
    assert result.returncode == 2 and "--format" in result.stderr
    missing = run("import", "--config", str(env.config_path), str(tmp_path / "none.csv"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    both = run("import", "--config", str(env.config_path), str(odd), "--dry-run", "--enqueue-only")
    assert both.returncode == 2 and "choose one" in both.stderr
    assert stored(env) == ([], [])


def test_synchronous_pay_and_import_deliver_their_events_before_exiting(
    env: Env, tmp_path: Path
) -> None:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = tmp_path / "events.toml"
        config.write_text(
            env.config_path.read_text()
            + f'\n[events]\n[[events.endpoints]]\nurl = "http://127.0.0.1:{server.server_port}'
            f'/hook"\nsecret = "whsec-cli-test-0123456789"\n'
        )
        a, b = doc(env, "10.00"), doc(env, "20.00")
        queued = run(
            "pay",
            "--config",
            str(config),
            "--connection",
            env.conn_id,
            "--document",
            a["InvoiceNumber"],
            "--amount",
            "1.00",
            "--enqueue-only",
        )
        assert queued.returncode == 0, queued.stderr
        assert received == []  # nothing final yet, nothing delivered
        path = write_csv(tmp_path / "e.csv", "document,amount", [f"{b['InvoiceNumber']},20.00"])
        result = run("import", "--config", str(config), "--connection", env.conn_id, str(path))
        assert result.returncode == 0, result.stderr
    finally:
        server.shutdown()
        server.server_close()
    intents, _ = stored(env)
    [imported] = [i for i in intents if i.document_ref == b["InvoiceNumber"]]
    assert imported.state == "applied"
    applied = [e for e in received if e["type"] == "allocation.applied"]
    assert [e["data"]["id"] for e in applied] == [imported.id]
