"""``connector demo``: the whole path on the built-in sandbox, in a few seconds.

Starts the Xero sandbox on a free loopback port, writes a throw-away config,
pulls the seeded invoices into SQLite, pays four of them (one in full, one in
part, one the ledger already shows PAID, one DRAFT), sends the same four again
to show that nothing is paid twice, and prints what the ledger says.
"""

from __future__ import annotations

import tempfile
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlmodel import select

from connector.config import load_settings
from connector.logging import configure_logging
from connector.money import minor_units, quantize
from connector.schema import Invoice
from connector.store import Store
from connector.sync.pull import PullEngine
from connector.sync.push import AllocationRequest, PushEngine

__all__ = ["run_demo"]

EXPECTED = {"full": "applied", "partial": "applied", "paid": "already_settled", "draft": "rejected"}


def _pick(invoices: list[Invoice]) -> dict[str, tuple[Invoice, Decimal]]:
    open_usd = [
        i
        for i in invoices
        if i.status == "authorised" and i.balance == i.total and i.currency == "USD"
    ]
    paid = [i for i in invoices if i.status == "paid"]
    draft = [i for i in invoices if i.status == "draft"]
    if len(open_usd) < 2 or not paid or not draft:
        raise RuntimeError("the sandbox seed lacks the invoices the demo needs")
    full, partial = open_usd[0], open_usd[1]
    step = Decimal(1).scaleb(-minor_units(partial.currency))
    half = (partial.balance / 2).quantize(step, rounding=ROUND_DOWN)
    return {
        "full": (full, full.balance),
        "partial": (partial, half),
        "paid": (paid[0], paid[0].total),
        "draft": (draft[0], draft[0].total),
    }


def run_demo(*, seed: int = 1, workdir: Path | None = None, console: Console | None = None) -> int:
    """Run the demo; return 0 when every allocation ended as expected."""
    from connector.sandbox import SandboxServer, SandboxState, write_config

    console = console or Console()
    configure_logging("WARNING", "auto")
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="connector-demo-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        state = SandboxState(seed=seed, tenants=1, invoices=12)
        with SandboxServer(state, host="127.0.0.1", port=0) as server:
            config = write_config(
                state,
                workdir / "connector.toml",
                base_url=server.url,
                database_url=f"sqlite:///{workdir / 'connector.db'}",
            )
            console.print(f"sandbox: Xero at {server.url}/xero   config: {config}")
            settings = load_settings(config)
            conn = next(c for c in settings.connections if c.provider == "xero")
            store = Store(settings.database.url)
            store.upgrade()
            pull = PullEngine(settings, store)
            [stats] = pull.run_once(connection_ids=[conn.id], entities=("invoice",))
            pull.close()
            console.print(
                f"pulled {stats.records} invoices from tenant {conn.tenant} "
                f"in {stats.pages} page(s)"
            )
            with store.session() as s:
                invoices = list(
                    s.exec(
                        select(Invoice)
                        .where(Invoice.connection_id == conn.id)
                        .order_by(Invoice.number)
                    ).all()
                )
            picks = _pick(invoices)
            engine = PushEngine(settings, store)
            intent_ids: dict[str, str] = {}
            for case, (inv, amount) in picks.items():
                result = engine.intake(
                    AllocationRequest(
                        connection_id=conn.id,
                        document=inv.number or inv.remote_id,
                        amount=amount,
                        idempotency_key=f"demo-{seed}-{case}",
                        reference=f"demo {case}",
                    )
                )
                intent_ids[case] = result.intent.id
            finals = engine.push_until_final(list(intent_ids.values()), timeout=45)
            # The same four allocations again, same keys: nothing new may happen.
            again = [
                engine.intake(
                    AllocationRequest(
                        connection_id=conn.id,
                        document=inv.number or inv.remote_id,
                        amount=amount,
                        idempotency_key=f"demo-{seed}-{case}",
                        reference=f"demo {case}",
                    )
                )
                for case, (inv, amount) in picks.items()
            ]
            engine.push_until_final([r.intent.id for r in again], timeout=10)
            adapter = engine.adapter(conn.id)
            table = Table(title="Allocations pushed to the Xero sandbox")
            for name in (
                "case",
                "invoice",
                "paid",
                "state",
                "reason",
                "ledger AmountDue",
                "ledger Status",
                "payments in ledger",
            ):
                table.add_column(name)
            ok = True
            for (case, (inv, amount)), intent in zip(picks.items(), finals, strict=True):
                doc = adapter.get_document(inv.remote_id)
                ours = [
                    p
                    for p in state.xero.payments(conn.tenant, invoice_id=inv.remote_id)
                    if intent.reference == p.get("Reference")
                ]
                table.add_row(
                    case,
                    inv.number or "",
                    f"{quantize(amount, inv.currency)} {inv.currency}",
                    intent.state,
                    intent.reason_code or "",
                    str(doc.balance),
                    doc.provider_status,
                    str(len(ours)),
                )
                ok = (
                    ok
                    and intent.state == EXPECTED[case]
                    and len(ours) == (1 if EXPECTED[case] == "applied" else 0)
                )
            engine.close()
            console.print(table)
            console.print(
                "sent again with the same keys: "
                + ("no new payments" if all(not r.created for r in again) else "NEW INTENTS (bug)")
            )
            store.dispose()
            console.print("[green]demo ok[/]" if ok else "[red]demo: unexpected outcome[/]")
            return 0 if ok else 1
    finally:
        if tmp is not None:
            tmp.cleanup()
