"""The ``connector`` command.

Exit codes: 0 done; 2 bad input (config, arguments, an allocation refused at
intake — nothing stored); 3 an allocation ended ``rejected`` or ``conflict``;
4 an allocation is not final yet (it stays queued; see ``connector status``);
1 anything else.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import col, select

from connector.config import ConfigError, Settings, load_settings, token_cipher
from connector.crypto import TokenKeyError
from connector.logging import configure_logging
from connector.money import quantize
from connector.state import TERMINAL, Attempt, ConnectionRecord, Cursor, PaymentIntent
from connector.store import Store

app = typer.Typer(
    name="connector",
    help="Keep QuickBooks Online, Xero and NetSuite in step: pull records, push payments exactly once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")

# Piped output is not cut to 80 columns: tables are read by people in logs too.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The TOML config file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

EXIT_BAD_INPUT = 2
EXIT_NOT_APPLIED = 3
EXIT_NOT_FINAL = 4


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    # The message is plain text: keys like connections[id='x'] are not markup.
    err.print("[bold red]error:[/] ", end="")
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings(config: Path) -> Settings:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        _fail(str(exc))
    configure_logging(settings.logging.level, settings.logging.format)
    return settings


def _check_mappings(settings: Settings) -> None:
    from connector.adapters.base import validate_connection_mapping
    from connector.mapping import MappingError

    for conn in settings.connections:
        try:
            validate_connection_mapping(conn)
        except MappingError as exc:
            _fail(
                f"{settings.source}: {exc.file}.{exc.key}: {exc.problem}. Fix: correct the "
                f"override (see connector/mappings/{conn.provider}.toml for the shape)"
            )


def _open(config: Path, *, migrate: bool = True) -> tuple[Settings, Store]:
    settings = _settings(config)
    _check_mappings(settings)
    try:
        cipher = token_cipher(settings)
    except ConfigError as exc:
        _fail(str(exc))
    store = Store(settings.database.url, cipher=cipher)
    if migrate:
        try:
            store.upgrade()
        except Exception as exc:  # the database is unreachable or not ours
            _fail(
                f"{config}: database.url: cannot open or migrate {settings.database.url!r} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Fix: check the URL "
                f"and that the database server is running"
            )
    if migrate:
        try:
            store.check_token_key()
        except TokenKeyError as exc:
            _fail(
                f"{config}: security.token_key_env: {exc}. Fix: export "
                f"{settings.security.token_key_env} with the key the tokens were stored with"
            )
    return settings, store


def _money(value: Decimal | None, currency: str | None) -> str:
    if value is None:
        return "-"
    return str(quantize(value, currency or "USD"))


@app.command("check-config")
def check_config(config: ConfigOpt) -> None:
    """Validate a config file and say what it holds."""
    settings = _settings(config)
    _check_mappings(settings)
    try:
        cipher = token_cipher(settings)
    except ConfigError as exc:
        _fail(str(exc))
    out.print(
        f"[green]ok[/] {config}: database {settings.database.url}, "
        f"{len(settings.connections)} connection(s)"
    )
    for conn in settings.connections:
        out.print(f"  - {conn.id}: {conn.provider} {conn.tenant} at {conn.base_url}", markup=False)
    if cipher is not None:
        out.print(f"  tokens: encrypted at rest with the key in {cipher.source}")
    else:
        out.print(
            f"  tokens: stored unencrypted (set ${settings.security.token_key_env} to encrypt them; "
            f'[security] encrypt_tokens = "required" makes it mandatory)',
            markup=False,
        )


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt) -> None:
    """Create or upgrade the schema to the newest migration."""
    settings, store = _open(config, migrate=False)
    store.upgrade()
    out.print(f"database at revision {store.current_revision()} ({settings.database.url})")


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(f"--date {value!r} is not a date; use YYYY-MM-DD (the ledger's own calendar day)")


def _intent_rows(intents: list[PaymentIntent]) -> Table:
    table = Table(title="Allocations")
    for name in (
        "document",
        "amount",
        "state",
        "reason",
        "payment id",
        "ledger balance",
        "ledger status",
    ):
        table.add_column(name)
    for i in intents:
        table.add_row(
            i.document_number or i.document_ref,
            f"{_money(i.amount, i.currency)} {i.currency}",
            i.state,
            i.reason_code or "",
            i.remote_payment_id or "",
            _money(i.result_balance, i.currency),
            i.result_status or "",
        )
    return table


def _exit_for(intents: list[PaymentIntent]) -> int:
    if any(i.state not in TERMINAL for i in intents):
        return EXIT_NOT_FINAL
    if any(i.state in ("rejected", "conflict") for i in intents):
        return EXIT_NOT_APPLIED
    return 0


@app.command()
def pay(
    config: ConfigOpt,
    connection: Annotated[str, typer.Option(help="Connection id from the config.")],
    document: Annotated[str, typer.Option(help="Invoice/bill number (INV-0001) or remote id.")],
    amount: Annotated[str, typer.Option(help="Amount in the document's currency, e.g. 49.99.")],
    on_date: Annotated[
        str | None, typer.Option("--date", help="Payment date YYYY-MM-DD (default today).")
    ] = None,
    account: Annotated[
        str | None, typer.Option(help="Bank account code (default: payment_account_code).")
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="Your reference, shown on the payment.")
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="Idempotency key (default: derived from the request).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a final state.")] = 60.0,
    document_type: Annotated[
        str,
        typer.Option(
            "--type", help="invoice (a customer payment, AR) or bill (a bill payment, AP)."
        ),
    ] = "invoice",
    currency: Annotated[
        str | None,
        typer.Option(help="The payment's currency (ISO 4217; default: the document's)."),
    ] = None,
    currency_rate: Annotated[
        str | None,
        typer.Option(
            help="Document-currency units per payment-currency unit (when --currency differs)."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Preflight only: show what would be sent and the predicted outcome; "
            "nothing is stored or sent.",
        ),
    ] = False,
    enqueue_only: Annotated[
        bool,
        typer.Option(
            "--enqueue-only",
            help="Store the allocation and exit 0; a running daemon (connector run) pushes it.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Pay one document: store the allocation, push it, wait for its final state.

    --dry-run only predicts (exit 0 would send or is settled, 3 would be rejected or
    conflict, 2 invalid); --enqueue-only stores it for the daemon and exits 0.
    """
    from connector.sync.push import AllocationRequest, IntakeError, PushEngine, intent_as_dict

    if dry_run and enqueue_only:
        _fail("--dry-run and --enqueue-only exclude each other: choose one")
    when = _parse_date(on_date)
    if document_type not in ("invoice", "bill"):
        _fail(f"--type {document_type!r} is unknown; use invoice or bill")
    settings, store = _open(config)
    engine = PushEngine(settings, store)
    request = AllocationRequest(
        connection_id=connection,
        document=document,
        amount=amount,
        transaction_date=when,
        account_code=account,
        reference=reference,
        idempotency_key=key,
        document_type=document_type,
        currency=currency,
        currency_rate=currency_rate,
    )
    if dry_run:
        try:
            items = engine.plan([request])
        except ConfigError as exc:
            _fail(str(exc))
        finally:
            engine.close()
        _show_plan(items, None, as_json=as_json)
        raise typer.Exit(_plan_exit(items))
    try:
        result = engine.intake(request, defer_unreadable=enqueue_only)
        if enqueue_only:
            intents = [result.intent]
        else:
            intents = engine.push_until_final([result.intent.id], timeout=timeout)
    except ConfigError as exc:
        _fail(str(exc))
    except IntakeError as exc:
        _fail(f"allocation refused ({exc.code}): {exc.message}")
    finally:
        engine.close()
    if not enqueue_only:
        _deliver_events(settings, store, len(intents))
    if as_json:
        print(json.dumps([intent_as_dict(i) for i in intents], indent=2))
    else:
        if not result.created:
            out.print(
                f"(key {result.intent.idempotency_key!r} seen before: showing that allocation)"
            )
        out.print(_intent_rows(intents))
        for i in intents:
            if i.reason_message:
                out.print(
                    f"{i.document_number or i.document_ref}: {i.reason_message}", markup=False
                )
        if enqueue_only:
            out.print("stored: a running daemon (connector run) pushes it", markup=False)
    raise typer.Exit(0 if enqueue_only else _exit_for(intents))


def _deliver_events(settings: Settings, store: Store, allocations: int) -> None:
    """Deliver due outgoing events once, when ``[events]`` has endpoints (else the daemon does)."""
    endpoints = getattr(getattr(settings, "events", None), "endpoints", None)
    if not endpoints:
        return
    try:
        from connector import events as events_module
    except ImportError:  # pragma: no cover - events out are an optional part
        return
    dispatcher_class = getattr(events_module, "EventDispatcher", None)
    if dispatcher_class is None or not hasattr(dispatcher_class, "deliver_due"):
        return  # pragma: no cover
    dispatcher = dispatcher_class(settings, store)
    try:
        # One pass: every event of these allocations for every endpoint, at least.
        dispatcher.deliver_due(limit=max(100, allocations * len(endpoints) * 2))
    except Exception as exc:  # the allocations are done; a daemon retries the events
        err.print(
            f"events: not all delivered now ({type(exc).__name__}: {exc}); "
            f"connector run delivers them with retries",
            markup=False,
            highlight=False,
        )
    finally:
        dispatcher.close()


# -- files of allocations: import / plan ----------------------------------------------

FileArg = Annotated[
    Path,
    typer.Argument(
        help="CSV (.csv) or JSON Lines (.jsonl, .ndjson) file of allocations; - reads stdin.",
        show_default=False,
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="csv or jsonl (default: from the file's extension)."),
]
DefaultConnectionOpt = Annotated[
    str | None,
    typer.Option(
        "--connection", help="Connection id for rows whose connection_id is empty or absent."
    ),
]


def _report_row_errors(errors: list[Any], *, as_json: bool, stage: str) -> NoReturn:
    """Print every row's problem (``line N: code: message``), exit 2: nothing stored."""
    if as_json:
        print(json.dumps({"errors": [e.as_dict() for e in errors], "stored": 0}, indent=2))
    rows = len({e.line for e in errors})
    err.print(
        f"error: {len(errors)} problem(s) in {rows} row(s) ({stage}); nothing stored",
        markup=False,
        highlight=False,
    )
    if not as_json:
        for e in errors:
            err.print(str(e), markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def _read_rows(
    settings: Settings, file: Path, fmt: str | None, connection: str | None, *, as_json: bool
) -> list[Any]:
    """Parse and check the file; on any problem print them all and exit 2."""
    from connector.importer import detect_format, parse_bytes

    stdin = str(file) == "-"
    if stdin and fmt is None:
        _fail("reading the allocations from stdin (-) needs --format csv or jsonl")
    try:
        kind = detect_format(file, fmt)
    except ValueError as exc:
        _fail(str(exc))
    try:
        data = sys.stdin.buffer.read() if stdin else file.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {str(file)!r}: {exc.strerror or exc}")
    known = [c.id for c in settings.connections]
    if connection is not None and connection not in known:
        _fail(
            f"--connection {connection!r} is not in the config; known: {', '.join(known) or 'none'}"
        )
    parsed = parse_bytes(data, kind, default_connection=connection, known_connections=known)
    if parsed.errors:
        _report_row_errors(parsed.errors, as_json=as_json, stage="file check")
    return parsed.rows


def _money_cell(value: Decimal | None, currency: str | None) -> str:
    return "-" if value is None else f"{_money(value, currency)} {currency}"


def _plan_table(items: list[Any], lines: list[int] | None) -> Table:
    table = Table(title="Dry run: nothing stored, nothing sent")
    names = [
        "document",
        "status",
        "balance",
        "would send",
        "unapplied",
        "balance after",
        "outcome",
        "reason",
    ]
    for name in (["line"] if lines is not None else []) + names:
        table.add_column(name, justify="right" if name == "line" else "left")
    for n, item in enumerate(items):
        cur = item.currency
        row = [
            item.document_number or item.request.document,
            item.document_status or "-",
            _money_cell(item.balance, cur),
            _money_cell(item.send_amount, cur),
            _money_cell(item.unapplied, cur),
            _money_cell(item.balance_after, cur),
            item.outcome,
            item.code or "",
        ]
        table.add_row(*([str(lines[n])] if lines is not None else []), *row)
    return table


def _plan_counts(items: list[Any]) -> dict[str, int]:
    counts = {k: 0 for k in ("send", "already_settled", "replay", "rejected", "conflict")}
    counts["invalid"] = 0
    for item in items:
        counts[item.outcome] = counts.get(item.outcome, 0) + 1
    return counts


def _show_plan(items: list[Any], lines: list[int] | None, *, as_json: bool) -> None:
    if as_json:
        rows = [
            {**({"line": lines[n]} if lines is not None else {}), **item.as_dict()}
            for n, item in enumerate(items)
        ]
        if lines is None:
            print(json.dumps(rows, indent=2))
        else:
            print(json.dumps({"rows": rows, "summary": _plan_counts(items)}, indent=2))
        return
    out.print(_plan_table(items, lines))
    for n, item in enumerate(items):
        if item.outcome != "send" or item.code:
            where = f"line {lines[n]}" if lines is not None else item.request.document
            out.print(f"{where}: {item.message}", markup=False, highlight=False, soft_wrap=True)
    counts = _plan_counts(items)
    out.print(
        f"{len(items)} allocation(s): {counts['send']} would send, "
        f"{counts['already_settled']} already_settled, {counts['replay']} already imported, "
        f"{counts['rejected']} rejected, {counts['conflict']} conflict, "
        f"{counts['invalid']} invalid; nothing stored, nothing sent",
        markup=False,
        highlight=False,
    )


def _plan_exit(items: list[Any]) -> int:
    if any(i.outcome == "invalid" for i in items):
        return EXIT_BAD_INPUT
    if any(i.outcome in ("rejected", "conflict") for i in items):
        return EXIT_NOT_APPLIED
    return 0


def _plan_file(
    config: Path, file: Path, fmt: str | None, connection: str | None, *, as_json: bool
) -> NoReturn:
    from connector.sync.push import PushEngine

    settings, store = _open(config)
    rows = _read_rows(settings, file, fmt, connection, as_json=as_json)
    engine = PushEngine(settings, store)
    try:
        items = engine.plan([r.request for r in rows])
    except ConfigError as exc:
        _fail(str(exc))
    finally:
        engine.close()
    _show_plan(items, [r.line for r in rows], as_json=as_json)
    raise typer.Exit(_plan_exit(items))


@app.command("import")
def import_file(
    config: ConfigOpt,
    file: FileArg,
    connection: DefaultConnectionOpt = None,
    fmt: FormatOpt = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every allocation's final state.")
    ] = 300.0,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Same as connector plan: predict, store nothing, send nothing."
        ),
    ] = False,
    enqueue_only: Annotated[
        bool,
        typer.Option(
            "--enqueue-only",
            help="Store the allocations and exit 0; a running daemon (connector run) pushes them.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a file of allocations: check every row, store them all or none, push, wait.

    Columns: connection_id, document, amount, document_type, transaction_date, currency,
    currency_rate, account_code, reference, idempotency_key (see the README). Importing
    the same file again adds nothing. Exit codes as for pay; 2 lists every bad row.
    """
    from connector.importer import RowError
    from connector.sync.push import IntakeRejected, PushEngine, intent_as_dict

    if dry_run and enqueue_only:
        _fail("--dry-run and --enqueue-only exclude each other: choose one")
    if dry_run:
        _plan_file(config, file, fmt, connection, as_json=as_json)
    settings, store = _open(config)
    rows = _read_rows(settings, file, fmt, connection, as_json=as_json)
    engine = PushEngine(settings, store)
    try:
        try:
            results = engine.intake_many([r.request for r in rows], defer_unreadable=enqueue_only)
        except IntakeRejected as exc:
            errors = [RowError(rows[i].line, e.code, e.message) for i, e in exc.errors]
            _report_row_errors(errors, as_json=as_json, stage="checked against the ledger")
        ids = list(dict.fromkeys(r.intent.id for r in results))
        if enqueue_only:
            final = {r.intent.id: r.intent for r in results}
        else:
            try:
                final = {i.id: i for i in engine.push_until_final(ids, timeout=timeout)}
            except KeyboardInterrupt:
                err.print(
                    f"interrupted: {len(ids)} allocation(s) are stored; connector run (or "
                    f"importing the same file again) finishes them",
                    markup=False,
                )
                raise typer.Exit(130) from None
    except ConfigError as exc:
        _fail(str(exc))
    finally:
        engine.close()
    if not enqueue_only:
        _deliver_events(settings, store, len(ids))
    intents = [final[r.intent.id] for r in results]
    created = [r.created for r in results]
    summary = _import_summary(intents, created)
    if as_json:
        print(
            json.dumps(
                {
                    "rows": [
                        {"line": row.line, "new": new, **intent_as_dict(intent)}
                        for row, intent, new in zip(rows, intents, created, strict=True)
                    ],
                    "summary": summary,
                },
                indent=2,
            )
        )
    else:
        table = Table(title="Import" + (" (stored for the daemon)" if enqueue_only else ""))
        for name in ("line", "document", "amount", "state", "reason", "payment id", "import"):
            table.add_column(name, justify="right" if name == "line" else "left")
        for row, intent, new in zip(rows, intents, created, strict=True):
            table.add_row(
                str(row.line),
                intent.document_number or intent.document_ref,
                f"{_money(intent.amount, intent.currency)} {intent.currency}",
                intent.state,
                intent.reason_code or "",
                intent.remote_payment_id or "",
                "new" if new else "seen before",
            )
        out.print(table)
        for row, intent in zip(rows, intents, strict=True):
            if intent.reason_message and intent.state in TERMINAL:
                out.print(
                    f"line {row.line}: {intent.reason_message}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
        out.print(
            f"{summary['rows']} row(s): {summary['applied']} applied, "
            f"{summary['already_settled']} already_settled, {summary['rejected']} rejected, "
            f"{summary['conflict']} conflict, {summary['waiting']} waiting; "
            f"{summary['new']} new, {summary['already_imported']} already imported",
            markup=False,
            highlight=False,
        )
        if enqueue_only:
            out.print("stored: a running daemon (connector run) pushes them", markup=False)
    raise typer.Exit(0 if enqueue_only else _exit_for(intents))


def _import_summary(intents: list[PaymentIntent], created: list[bool]) -> dict[str, int]:
    summary = {"rows": len(intents)}
    for state in ("applied", "already_settled", "rejected", "conflict"):
        summary[state] = sum(1 for i in intents if i.state == state)
    summary["waiting"] = sum(1 for i in intents if i.state not in TERMINAL)
    summary["new"] = sum(created)
    summary["already_imported"] = len(created) - summary["new"]
    return summary


@app.command()
def plan(
    config: ConfigOpt,
    file: FileArg,
    connection: DefaultConnectionOpt = None,
    fmt: FormatOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Dry-run a file of allocations (= import --dry-run): per row, what would be sent and
    the predicted outcome; nothing is stored or sent.

    Exit 0 every row would send or is settled/already imported; 3 some would be rejected
    or conflict; 2 some row is invalid.
    """
    _plan_file(config, file, fmt, connection, as_json=as_json)


@app.command()
def backfill(
    config: ConfigOpt,
    connection: Annotated[
        list[str] | None, typer.Option(help="Only this connection (repeatable).")
    ] = None,
    entity: Annotated[
        list[str] | None, typer.Option(help="Entity: invoice, payment, contact, ledger_account.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Read changes from this date (YYYY-MM-DD).")
    ] = None,
) -> None:
    """Pull history into the store, page by page, resumable after a crash or Ctrl-C."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from connector.sync.pull import ENTITY_MODELS, PullEngine

    entities = entity or ["invoice"]
    for e in entities:
        if e not in ENTITY_MODELS:
            _fail(f"--entity {e!r} is unknown; use one of {', '.join(ENTITY_MODELS)}")
    start = None
    if since is not None:
        day = _parse_date(since)
        assert day is not None
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    settings, store = _open(config)
    ids = list(connection or [c.id for c in settings.connections if c.enabled])
    try:
        for cid in ids:
            settings.connection(cid)
    except ConfigError as exc:
        _fail(str(exc))
    from connector.adapters.base import SUPPORTED_PROVIDERS

    for cid in [c for c in ids if settings.connection(c).provider not in SUPPORTED_PROVIDERS]:
        err.print(
            f"skipped {cid}: provider {settings.connection(cid).provider!r} has no adapter "
            f"in this version"
        )
        ids.remove(cid)
    # A backfill waits out rate limits (Retry-After) and goes on, page by page.
    engine = PullEngine(settings, store, wait_on_rate_limit=True, prefetch=True)
    summary = Table(title="Backfill")
    for name in (
        "connection",
        "entity",
        "pages",
        "records",
        "new",
        "updated",
        "deleted/void",
        "time",
        "requests",
        "429s",
        "rate wait",
        "complete",
    ):
        summary.add_column(name, justify="left" if name in {"connection", "entity"} else "right")
    per_entity: dict[str, list[Any]] = {}

    def add_row(stats: Any) -> None:
        summary.add_row(
            stats.connection_id,
            stats.entity,
            str(stats.pages),
            str(stats.records),
            str(stats.inserted),
            str(stats.updated),
            str(stats.deleted),
            f"{stats.seconds:.1f}s",
            str(stats.requests),
            str(stats.throttled),
            f"{stats.waited_seconds:.1f}s",
            "yes" if stats.complete else "no",
        )
        per_entity.setdefault(stats.entity, []).append(stats)

    def add_totals() -> None:
        if len(ids) < 2:
            return
        summary.add_section()
        for ent, rows in per_entity.items():
            summary.add_row(
                "all",
                ent,
                str(sum(r.pages for r in rows)),
                str(sum(r.records for r in rows)),
                str(sum(r.inserted for r in rows)),
                str(sum(r.updated for r in rows)),
                str(sum(r.deleted for r in rows)),
                f"{sum(r.seconds for r in rows):.1f}s",
                str(sum(r.requests for r in rows)),
                str(sum(r.throttled for r in rows)),
                f"{sum(r.waited_seconds for r in rows):.1f}s",
                "yes" if all(r.complete for r in rows) else "no",
            )

    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            for cid in ids:
                for ent in entities:
                    task = progress.add_task(f"{cid} {ent}: 0 records", total=None)

                    def on_page(stats: Any, _page: Any, task: Any = task) -> None:
                        progress.update(
                            task,
                            description=f"{stats.connection_id} {stats.entity}: "
                            f"{stats.records} records, {stats.pages} pages",
                        )

                    [stats] = engine.run_once(
                        connection_ids=[cid], entities=[ent], since=start, on_page=on_page
                    )
                    progress.update(task, total=1, completed=1)
                    add_row(stats)
    except KeyboardInterrupt:
        add_totals()
        out.print(summary)
        err.print("interrupted: every committed page is kept; run the same command to resume")
        raise typer.Exit(130) from None
    finally:
        engine.close()
    add_totals()
    out.print(summary)


@app.command()
def status(
    config: ConfigOpt,
    intent: Annotated[
        str | None, typer.Option(help="Show one intent and its attempt history.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Intents by state per connection, connection health and cursors."""
    from sqlalchemy import func

    from connector.sync.push import intent_as_dict

    settings, store = _open(config)
    with store.session() as s:
        if intent is not None:
            found = s.get(PaymentIntent, intent)
            if found is None:
                _fail(f"no intent with id {intent!r}")
            attempts = s.exec(
                select(Attempt).where(Attempt.intent_id == intent).order_by(col(Attempt.id))
            ).all()
            if as_json:
                print(
                    json.dumps(
                        {
                            "intent": intent_as_dict(found),
                            "attempts": [{**a.model_dump(mode="json")} for a in attempts],
                        },
                        indent=2,
                        default=str,
                    )
                )
                return
            out.print(_intent_rows([found]))
            if found.reason_message:
                out.print(f"reason: {found.reason_message}", markup=False)
            history = Table(title=f"Attempts of {intent}")
            for name in ("at", "phase", "key", "status", "outcome", "payment id", "message"):
                history.add_column(name)
            for a in attempts:
                history.add_row(
                    a.at.strftime("%Y-%m-%d %H:%M:%S"),
                    a.phase,
                    a.idempotency_key or "",
                    str(a.status_code or ""),
                    a.outcome,
                    a.remote_payment_id or "",
                    a.message or "",
                )
            out.print(history)
            return
        counts = s.exec(
            select(PaymentIntent.connection_id, PaymentIntent.state, func.count()).group_by(
                PaymentIntent.connection_id, PaymentIntent.state
            )
        ).all()
        records = {r.id: r for r in s.exec(select(ConnectionRecord)).all()}
        cursors = s.exec(select(Cursor)).all()
    by_conn: dict[str, dict[str, int]] = {}
    for cid, state, n in counts:
        by_conn.setdefault(cid, {})[state] = n
    data: list[dict[str, Any]] = []
    for conn in settings.connections:
        rec = records.get(conn.id)
        data.append(
            {
                "connection": conn.id,
                "provider": conn.provider,
                "tenant": conn.tenant,
                "health": rec.status if rec else "not yet used",
                "health_reason": rec.status_reason if rec else None,
                "intents": by_conn.get(conn.id, {}),
                "cursors": {
                    c.entity: {"position": c.position, "page": c.page, "records": c.records}
                    for c in cursors
                    if c.connection_id == conn.id
                },
            }
        )
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(title="Connections")
    for name in ("connection", "provider", "health", "intents by state", "cursors"):
        table.add_column(name)
    for row in data:
        intents = ", ".join(f"{k} {v}" for k, v in sorted(row["intents"].items())) or "none"
        curs = (
            ", ".join(f"{e} @ {c['position'] or 'start'}" for e, c in row["cursors"].items()) or "-"
        )
        health = row["health"] + (f" ({row['health_reason']})" if row["health_reason"] else "")
        table.add_row(row["connection"], row["provider"], health, intents, curs)
    out.print(table)


@app.command()
def reconcile(
    config: ConfigOpt,
    connection: Annotated[
        list[str] | None, typer.Option(help="Only this connection (repeatable).")
    ] = None,
    sample: Annotated[
        int, typer.Option(min=0, help="Final intents per connection to look up in the ledger.")
    ] = 50,
    seed: Annotated[int | None, typer.Option(help="Seed of the sample (default: random).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Settle open intents, check a sample of final ones against the ledger, report
    orphan and double payments, and end with a clearing line per connection.

    Exit codes: 0 the books clear and nothing was found; 1 a finding, or a clearing
    line that is not zero; 4 intents are still open (or a lookup could not be made).
    """
    from connector.sync.reconcile import reconcile as run_reconcile

    settings, store = _open(config)
    ids = list(connection or [c.id for c in settings.connections if c.enabled])
    try:
        report = run_reconcile(settings, store, connection_ids=ids, sample=sample, seed=seed)
    except ConfigError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.lines():
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(report.exit_code)


@app.command()
def run(config: ConfigOpt) -> None:
    """Run the daemon: pull and push on the intervals of [daemon] until SIGTERM."""
    from connector.daemon import Daemon

    settings, store = _open(config)
    raise typer.Exit(Daemon(settings, store).run())


@app.command()
def sandbox(
    host: Annotated[
        str, typer.Option(help="Interface to listen on (keep it loopback).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free port).")] = 8765,
    seed: Annotated[int, typer.Option(help="Seed of the deterministic ledger data.")] = 1,
    tenants: Annotated[int, typer.Option(help="Xero tenants to seed.")] = 1,
    invoices: Annotated[int, typer.Option(help="Invoices per tenant.")] = 12,
    faults: Annotated[
        str | None, typer.Option(help="e.g. drop_after_commit=0.2,latency_ms=50")
    ] = None,
    write_config: Annotated[
        Path | None, typer.Option(help="Write a connector config for the sandbox here.")
    ] = None,
    database_url: Annotated[
        str, typer.Option(help="database.url for the written config.")
    ] = "sqlite:///connector.db",
    bills: Annotated[int, typer.Option(help="Bills per tenant.")] = 3,
    time_scale: Annotated[
        float, typer.Option(help="Shrink every rate-limit and key-retention window by this factor.")
    ] = 1.0,
    rate_limits: Annotated[bool, typer.Option(help="Enforce the providers' rate limits.")] = True,
) -> None:
    """Serve the built-in ledger sandbox until Ctrl-C: Xero under /xero, QuickBooks Online
    under /quickbooks, NetSuite under /netsuite/{account}; admin under /_sandbox."""
    from connector.sandbox import serve

    configure_logging("INFO", "auto")
    serve(
        host=host,
        port=port,
        seed=seed,
        tenants=tenants,
        invoices=invoices,
        faults=faults,
        write_config_path=write_config,
        database_url=database_url,
        bills=bills,
        time_scale=time_scale,
        rate_limits=rate_limits,
    )


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Seed of the sandbox's ledger data.")] = 1,
    workdir: Annotated[Path | None, typer.Option(help="Keep the config and database here.")] = None,
) -> None:
    """Start the sandbox, pay four invoices, and show what the ledger says."""
    from connector.demo import run_demo

    raise typer.Exit(run_demo(seed=seed, workdir=workdir, console=out))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
