"""The Python API for embedding the connector in an application.

::

    from connector import Connector

    with Connector.from_config("connector.toml") as connector:
        allocation = connector.pay("acme-xero", "INV-0001", "49.99", key="order-42")
        print(allocation.state, allocation.remote_payment_id)

:class:`Connector` opens the store (running the migrations, as the command line
does), takes allocations in idempotently on their key and, with ``wait=True``,
pushes them until they are final. Refused allocations raise
:class:`~connector.sync.push.IntakeError` (one) or
:class:`~connector.sync.push.IntakeRejected` (a batch) and store nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlmodel import col, select

from connector.clock import Clock
from connector.config import ConfigError, Settings, load_settings, token_cipher
from connector.state import TERMINAL, Attempt, PaymentIntent
from connector.store import Store
from connector.sync.push import (
    AllocationLine,
    AllocationRequest,
    IntakeError,
    IntakeRejected,
    PlanItem,
    PushEngine,
)

__all__ = [
    "Allocation",
    "Connector",
    "IntakeError",
    "IntakeRejected",
    "open_store",
]


def open_store(settings: Settings, *, migrate: bool = True) -> Store:
    """Open the store of ``settings`` as the command line does.

    Checks the connections' mapping overrides and the token key, and (with
    ``migrate``) brings the schema to the newest migration.

    Raises:
        ConfigError: a mapping override, the token key or the database is wrong,
            said with the key and the fix.
    """
    from connector.adapters.base import validate_connection_mapping
    from connector.crypto import TokenKeyError
    from connector.mapping import MappingError

    for conn in settings.connections:
        try:
            validate_connection_mapping(conn)
        except MappingError as exc:
            raise ConfigError(
                settings.source,
                f"{exc.file}.{exc.key}",
                exc.problem,
                f"correct the override (see connector/mappings/{conn.provider}.toml)",
            ) from None
    store = Store(settings.database.url, cipher=token_cipher(settings))
    if migrate:
        try:
            store.upgrade()
        except Exception as exc:  # unreachable, or not our database
            store.dispose()
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise ConfigError(
                settings.source,
                "database.url",
                f"cannot open or migrate {settings.database.url!r} ({type(exc).__name__}: {first})",
                "check the URL and that the database server is running",
            ) from exc
        try:
            store.check_token_key()
        except TokenKeyError as exc:
            store.dispose()
            raise ConfigError(
                settings.source,
                "security.token_key_env",
                str(exc),
                f"export {settings.security.token_key_env} with the key the tokens were "
                f"stored with",
            ) from None
    return store


@dataclass(frozen=True)
class Allocation:
    """One allocation as the store knows it now (a read-only view of its intent).

    ``state`` is ``pending``, ``claimed``, ``sending``, ``unknown`` (on its way) or
    final: ``applied``, ``already_settled``, ``rejected``, ``conflict`` (see
    ``reason_code``/``reason_message``). ``created`` says whether the call that
    returned it stored it (False for a replay of its key).
    """

    id: str
    state: str
    connection_id: str
    idempotency_key: str
    document_type: str
    document: str  # as the caller named it
    document_number: str | None
    document_remote_id: str | None
    amount: Decimal
    currency: str
    transaction_date: date
    reference: str  # what travels on the payment (found by lookup)
    reason_code: str | None
    reason_message: str | None
    remote_payment_id: str | None
    result_balance: Decimal | None
    created_at: datetime
    updated_at: datetime
    created: bool = False

    @classmethod
    def from_intent(cls, intent: PaymentIntent, *, created: bool = False) -> Allocation:
        """The view of a stored intent."""
        return cls(
            id=intent.id,
            state=intent.state,
            connection_id=intent.connection_id,
            idempotency_key=intent.idempotency_key,
            document_type=intent.document_type,
            document=intent.document_ref,
            document_number=intent.document_number,
            document_remote_id=intent.document_remote_id,
            amount=intent.amount,
            currency=intent.currency,
            transaction_date=intent.transaction_date,
            reference=intent.reference,
            reason_code=intent.reason_code,
            reason_message=intent.reason_message,
            remote_payment_id=intent.remote_payment_id,
            result_balance=intent.result_balance,
            created_at=intent.created_at,
            updated_at=intent.updated_at,
            created=created,
        )

    @property
    def final(self) -> bool:
        """Whether it reached a final state (nothing more will be sent)."""
        return self.state in TERMINAL

    @property
    def settled(self) -> bool:
        """Applied by us, or the ledger already showed the document paid."""
        return self.state in ("applied", "already_settled")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: amounts as strings, dates and times ISO."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, date | datetime):
                value = value.isoformat()
            out[name] = value
        return out


AllocationLike = AllocationRequest | Mapping[str, Any]


def _as_request(item: AllocationLike) -> AllocationRequest:
    if isinstance(item, AllocationRequest):
        return item
    data = dict(item)
    if "key" in data:
        data["idempotency_key"] = data.pop("key")
    lines = data.pop("lines", None) or ()
    lines = lines or data.pop("allocations", None) or ()
    data["lines"] = tuple(
        line if isinstance(line, AllocationLine) else AllocationLine(**line) for line in lines
    )
    try:
        return AllocationRequest(**data)
    except TypeError as exc:
        raise IntakeError("invalid_request", f"{exc}") from None


class Connector:
    """The connector, embedded: store allocations, push them, read them back.

    Args:
        settings: The loaded config (see :meth:`from_config`).
        store: An open store (default: opened from ``[database]`` and migrated; closed
            by :meth:`close`).
        clock: Time source (tests).
        engine: A push engine to use (default: a new one; closed by :meth:`close`).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        *,
        clock: Clock | None = None,
        engine: PushEngine | None = None,
    ) -> None:
        self.settings = settings
        self._owns_store = store is None
        self.store = store if store is not None else open_store(settings)
        self._owns_engine = engine is None
        self.engine = engine or PushEngine(settings, self.store, clock=clock)
        self._closed = False
        # Events out (connection.needs_attention …) follow [events], as in the daemon.
        from connector.events import bind_store

        bind_store(self.store, settings)

    @classmethod
    def from_config(cls, path: str | Path, *, clock: Clock | None = None) -> Connector:
        """Load ``path`` (TOML), open and migrate its store.

        Raises:
            ConfigError: the file, a key or the database is wrong (names the fix).
        """
        return cls(load_settings(path), clock=clock)

    # -- paying ------------------------------------------------------------------------
    def pay(
        self,
        connection_id: str,
        document: str,
        amount: str | Decimal | int,
        *,
        key: str | None = None,
        document_type: str = "invoice",
        currency: str | None = None,
        currency_rate: str | Decimal | None = None,
        transaction_date: date | None = None,
        account_code: str | None = None,
        reference: str | None = None,
        wait: bool = True,
        timeout: float = 60.0,
    ) -> Allocation:
        """Pay ``amount`` of ``document`` (its number or id) on ``connection_id``.

        Idempotent on ``key``: the same key with the same allocation returns the
        first one (nothing new is sent); without a key, one is derived from the
        allocation itself. With ``wait`` it is pushed until final or ``timeout``
        seconds pass (then it is returned as it stands and stays queued for the
        daemon or :meth:`push_pending`).

        Raises:
            IntakeError: refused (``code`` says why: ``document_not_found``,
                ``invalid_amount``, ``idempotency_key_reused`` …); nothing stored.
        """
        request = AllocationRequest(
            connection_id=connection_id,
            document=document,
            amount=amount if isinstance(amount, str | Decimal) else _int_amount(amount),
            transaction_date=transaction_date,
            account_code=account_code,
            reference=reference,
            idempotency_key=key,
            document_type=document_type,
            currency=currency,
            currency_rate=currency_rate,
        )
        return self.pay_many([request], wait=wait, timeout=timeout)[0]

    def pay_many(
        self, allocations: Iterable[AllocationLike], *, wait: bool = True, timeout: float = 60.0
    ) -> list[Allocation]:
        """Store several allocations (all validated before any is stored), then push.

        ``allocations``: :class:`AllocationRequest` objects or dicts of its fields
        (``key`` is accepted for ``idempotency_key``).

        Raises:
            IntakeRejected: ``errors`` holds ``(index, IntakeError)`` of every refused
                one; nothing of the batch was stored. A single allocation's refusal
                (from :meth:`pay`) is raised as its :class:`IntakeError`.
        """
        requests = [_as_request(a) for a in allocations]
        try:
            results = self.engine.intake_many(requests)
        except IntakeRejected as exc:
            if len(requests) == 1:
                raise exc.errors[0][1] from None
            raise
        created = {r.intent.id: r.created for r in results}
        ids = [r.intent.id for r in results]
        pending = list(
            dict.fromkeys(r.intent.id for r in results if r.intent.state not in TERMINAL)
        )
        if wait and pending:
            self.engine.push_until_final(pending, timeout=timeout)
        current = {i.id: i for i in self.engine.intents(ids)}
        return [Allocation.from_intent(current[i], created=created[i]) for i in ids]

    def plan(self, allocations: Sequence[AllocationLike]) -> list[PlanItem]:
        """Dry-run: what a push of each allocation would do now (reads, never writes)."""
        return self.engine.plan([_as_request(a) for a in allocations])

    def push_pending(
        self, *, connection_ids: list[str] | None = None, limit: int = 25
    ) -> dict[str, int]:
        """One push round over due allocations (what the daemon does on each tick).

        Returns:
            How many allocations ended the round in each state.
        """
        return dict(self.engine.run_once(connection_ids=connection_ids, limit=limit))

    # -- reading -----------------------------------------------------------------------
    def allocation(self, allocation_id: str) -> Allocation | None:
        """The allocation with this id (None if there is none)."""
        found = self.engine.intents([allocation_id])
        return Allocation.from_intent(found[0]) if found else None

    def find(self, key: str, connection_id: str) -> Allocation | None:
        """The allocation stored under the caller's ``key`` on ``connection_id``."""
        with self.store.session() as s:
            intent = s.exec(
                select(PaymentIntent).where(
                    PaymentIntent.connection_id == connection_id,
                    PaymentIntent.idempotency_key == key,
                )
            ).first()
        return Allocation.from_intent(intent) if intent is not None else None

    def history(self, allocation_id: str) -> list[dict[str, Any]]:
        """What was sent or looked up for an allocation, oldest first."""
        from connector.intake_api import attempt_view

        with self.store.session() as s:
            rows = s.exec(
                select(Attempt).where(Attempt.intent_id == allocation_id).order_by(col(Attempt.id))
            ).all()
        return [attempt_view(a) for a in rows]

    # -- life cycle --------------------------------------------------------------------
    def close(self) -> None:
        """Close the provider connections and (if opened here) the store (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_engine:
            self.engine.close()
        if self._owns_store:
            self.store.dispose()

    def __enter__(self) -> Connector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _int_amount(amount: object) -> str:
    if isinstance(amount, int) and not isinstance(amount, bool):
        return str(amount)
    raise IntakeError(
        "invalid_amount",
        f"amount {amount!r} is a {type(amount).__name__}; pass a string such as "
        f'"49.99", a Decimal or an int (a float may not be exact)',
    )
