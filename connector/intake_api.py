"""The intake API: ``/v1/allocations`` on the daemon's HTTP server.

Routes (all under a bearer token, ``Authorization: Bearer <[api] token>``):

* ``POST /v1/allocations`` — one allocation object, or ``{"allocations": [...]}``;
  the ``Idempotency-Key`` header is required. Answers ``202`` with the stored
  intents (``200`` when every allocation was already stored); the daemon's push
  loop sends them.
* ``GET /v1/allocations/{id}`` — an intent's state and its ``history`` (attempts).
* ``GET /v1/allocations?idempotency_key=…[&connection_id=…]`` — find by the caller's key.

``Idempotency-Key`` (the request's key, stored in ``api_request``): the row is
inserted ``in_progress`` in its own transaction before anything else, so a second
request under the same key while the first is being stored fails that insert and
gets ``409``. Once the intake is done the row holds the status and the exact body,
and the same key with the same request (method, path and canonical body) gets them
back byte for byte with ``Idempotent-Replayed: true``; the same key with another
body gets ``422 idempotency_key_reused``. A request refused at intake (``422``
with per-row errors) or one that failed unexpectedly (``500``) stores nothing, not
even its key, so the caller may retry under the same key (Stripe's behaviour). A
row left ``in_progress`` by a crash is abandoned after :data:`ABANDONED_AFTER` and
taken over by the next request with its key and body.

Each allocation's own key (``payment_intent.idempotency_key``) is the body's
``idempotency_key`` when given, else the request's key (single object) or
``f"{key}:{index}"`` (batch), so a replay, even past the ``api_request`` row,
maps to the same intents.

Amounts are JSON strings (``"49.99"``) or integers: a JSON number with a
fraction is refused with 422, never read through a float.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector.clock import Clock, SystemClock
from connector.config import Settings
from connector.logging import get_logger, redact
from connector.state import ApiRequest, Attempt, PaymentIntent
from connector.store import Store
from connector.sync.push import (
    AllocationLine,
    AllocationRequest,
    IntakeRejected,
    IntakeResult,
    PushEngine,
    intent_as_dict,
)

__all__ = [
    "ABANDONED_AFTER",
    "MAX_BATCH",
    "AllocationIn",
    "BatchIn",
    "IntakeApi",
    "LineIn",
    "allocation_view",
    "attempt_view",
    "request_fingerprint",
]

log = get_logger("connector.intake_api")

#: An ``in_progress`` request row older than this is taken to be abandoned (a crash).
ABANDONED_AFTER = timedelta(seconds=60)
#: Most allocations in one request.
MAX_BATCH = 200
#: Longest ``Idempotency-Key`` header (the per-allocation keys append ``:index``).
MAX_KEY_LENGTH = 200
#: Largest request body accepted.
MAX_BODY_BYTES = 1_000_000
PATH = "/v1/allocations"

_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII, no spaces
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# ---------------------------------------------------------------------- the body


def _amount(value: Any) -> Any:
    """A decimal amount as a JSON string or integer; never a binary float."""
    if isinstance(value, bool):
        raise ValueError('an amount is a string such as "49.99"')
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal | float):
        raise ValueError(
            f'amounts are JSON strings such as "{value}" (or integers): a JSON number with a '
            f"fraction is read as binary floating point by most clients and may not be exact"
        )
    if isinstance(value, str):
        text = value.strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
        if not number.is_finite():
            raise ValueError(f"{value!r} is not a finite number")
        return text
    raise ValueError('an amount is a string such as "49.99"')


def _iso_date(value: Any) -> Any:
    if isinstance(value, str) and _DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError("a date is a string YYYY-MM-DD (the ledger's own calendar day)")


Amount = Annotated[str, BeforeValidator(_amount)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
_DOCUMENT = AliasChoices("document", "document_id", "invoice_number")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LineIn(_Body):
    """One document of a multi-document allocation."""

    document: str = Field(min_length=1, max_length=128, validation_alias=_DOCUMENT)
    amount: Amount


class AllocationIn(_Body):
    """One allocation, in the unified (Apideck-style) snake_case names."""

    connection_id: str = Field(min_length=1, max_length=64)
    document: str | None = Field(
        default=None, min_length=1, max_length=128, validation_alias=_DOCUMENT
    )
    document_type: Literal["invoice", "bill"] = "invoice"
    amount: Amount | None = None
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$")
    currency_rate: Amount | None = None
    transaction_date: IsoDate | None = None
    account_code: str | None = Field(default=None, min_length=1, max_length=64)
    reference: str | None = Field(default=None, max_length=200)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    allocations: list[LineIn] | None = Field(default=None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _document_and_amount(self) -> AllocationIn:
        if self.allocations is None:
            missing = [name for name in ("document", "amount") if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} required (or allocations: "
                    f"[{{document, amount}}, ...] for a payment over several documents)"
                )
        return self

    def to_request(self, default_key: str) -> AllocationRequest:
        """The engine's request; ``default_key`` when the body gives no key of its own."""
        lines = tuple(AllocationLine(line.document, line.amount) for line in self.allocations or ())
        document = self.document if self.document is not None else lines[0].document
        amount = self.amount
        if amount is None:
            amount = str(sum((Decimal(line.amount) for line in lines), Decimal(0)))
        return AllocationRequest(
            connection_id=self.connection_id,
            document=document,
            amount=amount,
            transaction_date=self.transaction_date,
            account_code=self.account_code,
            reference=self.reference,
            idempotency_key=self.idempotency_key or default_key,
            document_type=self.document_type,
            currency=self.currency,
            currency_rate=self.currency_rate,
            lines=lines,
        )


class BatchIn(_Body):
    """Several allocations, all validated before any is stored."""

    allocations: list[AllocationIn] = Field(min_length=1, max_length=MAX_BATCH)


def request_fingerprint(method: str, path: str, body: BaseModel) -> str:
    """sha256 of method, path and the canonical body (validated: key order, spacing,
    aliases and explicit nulls do not change it)."""
    canonical = {
        "method": method,
        "path": path,
        "body": body.model_dump(mode="json", exclude_none=True),
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _field(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validation_errors(exc: ValidationError, batch: bool) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        index: int | None = 0
        if batch and len(loc) >= 2 and loc[0] == "allocations" and isinstance(loc[1], int):
            index, loc = loc[1], loc[2:]
        elif batch:
            index = None
        message = str(err["msg"]).removeprefix("Value error, ")
        errors.append(
            {"index": index, "field": _field(loc) or None, "code": err["type"], "message": message}
        )
    return errors


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# ---------------------------------------------------------------------- responses


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": code, "message": message}, headers)


def allocation_view(intent: PaymentIntent, *, created: bool | None = None) -> dict[str, Any]:
    """The API's view of an intent (``intent_as_dict`` plus links)."""
    out = intent_as_dict(intent)
    if created is not None:
        out["created"] = created
    out["links"] = {"self": f"{PATH}/{intent.id}"}
    return out


def attempt_view(attempt: Attempt) -> dict[str, Any]:
    """One row of an intent's history (what was sent or looked up, and the answer)."""
    return {
        "at": attempt.at.isoformat(),
        "phase": attempt.phase,
        "outcome": attempt.outcome,
        "status_code": attempt.status_code,
        "provider_code": attempt.provider_code,
        "message": redact(attempt.message) if attempt.message else None,
        "remote_payment_id": attempt.remote_payment_id,
    }


# ---------------------------------------------------------------------- the API


class IntakeApi:
    """The ``/v1`` routes and their idempotency store.

    Args:
        settings: The loaded config (``[api] token`` protects the routes).
        store: The database.
        engine: The push engine whose ``intake_many`` stores allocations (only intake
            runs here; the daemon's push loop sends).
        clock: Time of the ``api_request`` rows.
        wake: Called after new intents were stored (e.g. to run the push job now).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        engine: PushEngine,
        *,
        clock: Clock | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.clock = clock or SystemClock()
        self.wake = wake
        # An empty token (``token = "${CONNECTOR_API_TOKEN:-}"`` unset) is no token: /v1 is off.
        token = settings.api.token.get_secret_value() if settings.api.token is not None else ""
        self._token = token.encode("utf-8") if token else None

    def routes(self) -> list[Route]:
        """Starlette routes to mount on the daemon's app."""
        return [
            Route(PATH, self.post_allocations, methods=["POST"]),
            Route(PATH, self.find_allocations, methods=["GET"]),
            Route(PATH + "/{intent_id}", self.get_allocation, methods=["GET"]),
        ]

    # -- auth ------------------------------------------------------------------------
    def _unauthorized(self, request: Request) -> Response | None:
        """None if the request carries the configured token; else the answer to give."""
        if self._token is None:
            return _error(
                503,
                "api_token_not_configured",
                "the intake API is off until a bearer token is configured: set "
                '[api] token = "${CONNECTOR_API_TOKEN}" in the config, export '
                "CONNECTOR_API_TOKEN, and restart the daemon",
            )
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return _error(
                401,
                "unauthorized",
                "send Authorization: Bearer <the [api] token>",
                {"WWW-Authenticate": 'Bearer realm="connector"'},
            )
        if not hmac.compare_digest(presented.strip().encode("utf-8", "replace"), self._token):
            log.warning("api_unauthorized", client=request.client.host if request.client else None)
            return _error(
                401,
                "unauthorized",
                "the bearer token is not the configured [api] token",
                {"WWW-Authenticate": 'Bearer realm="connector", error="invalid_token"'},
            )
        return None

    # -- POST /v1/allocations ----------------------------------------------------------
    async def post_allocations(self, request: Request) -> Response:
        """Store one allocation or a batch, idempotently on the ``Idempotency-Key`` header."""
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        key = request.headers.get("idempotency-key", "").strip()
        if not key:
            return _error(
                400,
                "idempotency_key_required",
                "send an Idempotency-Key header (e.g. a UUID) so that a retry never pays twice",
            )
        if len(key) > MAX_KEY_LENGTH or not _KEY_CHARS.match(key):
            return _error(
                400,
                "invalid_idempotency_key",
                f"the Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters",
            )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return _error(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return _error(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        try:
            data = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, "invalid_json", f"the body is not valid JSON ({exc})")
        batch = isinstance(data, dict) and set(data) == {"allocations"}
        if not isinstance(data, dict):
            return _json(
                422,
                {
                    "error": "invalid_request",
                    "errors": [
                        {
                            "index": None,
                            "field": None,
                            "code": "invalid_body",
                            "message": 'the body is one allocation object or {"allocations": [...]}',
                        }
                    ],
                },
            )
        try:
            model: AllocationIn | BatchIn = (
                BatchIn.model_validate(data) if batch else AllocationIn.model_validate(data)
            )
        except ValidationError as exc:
            return _json(
                422, {"error": "invalid_request", "errors": _validation_errors(exc, batch)}
            )
        if isinstance(model, BatchIn):
            requests = [a.to_request(f"{key}:{i}") for i, a in enumerate(model.allocations)]
        else:
            requests = [model.to_request(key)]
        fingerprint = request_fingerprint("POST", PATH, model)
        return await run_in_threadpool(self._intake, key, fingerprint, requests, batch)

    def _intake(
        self, key: str, fingerprint: str, requests: list[AllocationRequest], batch: bool
    ) -> Response:
        claim, row = self._claim(key, fingerprint)
        if claim == "reused":
            return _error(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request; nothing stored. "
                "Use a new key for a new request",
            )
        if claim == "replay":
            assert row is not None and row.status_code is not None
            return Response(
                (row.response_body or "").encode("ascii"),
                status_code=row.status_code,
                media_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        if claim == "in_progress":
            return _error(
                409,
                "request_in_progress",
                "a request with this Idempotency-Key is still being stored; retry shortly",
                {"Retry-After": "1"},
            )
        try:
            results = self.engine.intake_many(requests)
        except IntakeRejected as exc:
            self._release(key, fingerprint)
            errors = [{"index": i, "code": e.code, "message": e.message} for i, e in exc.errors]
            log.info("api_intake_refused", key=key, refused=len(errors), of=len(requests))
            if all(e["code"] == "provider_unavailable" for e in errors):
                return _json(
                    503,
                    {"error": "provider_unavailable", "errors": errors},
                    {"Retry-After": "5"},
                )
            return _json(422, {"error": "allocations_refused", "errors": errors})
        except Exception:
            log.exception("api_intake_failed", key=key)
            self._release(key, fingerprint)
            return _error(
                500,
                "internal_error",
                "the request failed before its answer was stored; retry with the same "
                "Idempotency-Key (it never pays twice)",
            )
        created = any(r.created for r in results)
        status = 202 if created else 200
        body = _dumps(self._result_body(results, batch))
        try:
            self._complete(key, fingerprint, status, body)
        except Exception:
            log.exception("api_request_not_recorded", key=key)
        log.info(
            "api_intake",
            key=key,
            status=status,
            created=sum(r.created for r in results),
            of=len(results),
        )
        if created and self.wake is not None:
            try:
                self.wake()
            except Exception:
                log.exception("api_wake_failed")
        return Response(body, status_code=status, media_type="application/json")

    @staticmethod
    def _result_body(results: list[IntakeResult], batch: bool) -> Any:
        views = [allocation_view(r.intent, created=r.created) for r in results]
        return {"allocations": views} if batch else views[0]

    # -- the api_request rows ------------------------------------------------------------
    def _claim(self, key: str, fingerprint: str) -> tuple[str, ApiRequest | None]:
        """Take the key: ``new`` (ours now), ``replay``, ``reused`` or ``in_progress``."""
        for _ in range(3):
            now = self.clock.now()
            try:
                with self.store.session() as s:
                    s.add(
                        ApiRequest(
                            key=key,
                            fingerprint=fingerprint,
                            state="in_progress",
                            created_at=now,
                            updated_at=now,
                        )
                    )
                return "new", None
            except sa.exc.IntegrityError:
                pass
            with self.store.session() as s:
                row = s.get(ApiRequest, key)
            if row is None:
                continue  # the first request gave the key up meanwhile: try again
            if row.fingerprint != fingerprint:
                return "reused", row
            if row.state == "done":
                return "replay", row
            # In progress: abandoned (a crash mid-way) once it is old enough.
            with self.store.session() as s:
                taken = (
                    s.connection()
                    .execute(
                        sa.update(ApiRequest)
                        .where(
                            col(ApiRequest.key) == key,
                            col(ApiRequest.state) == "in_progress",
                            col(ApiRequest.fingerprint) == fingerprint,
                            col(ApiRequest.updated_at) < now - ABANDONED_AFTER,
                        )
                        .values(updated_at=now)
                    )
                    .rowcount
                )
            if taken == 1:
                log.warning("api_request_taken_over", key=key, since=row.updated_at.isoformat())
                return "new", None
            return "in_progress", row
        return "in_progress", None

    def _complete(self, key: str, fingerprint: str, status: int, body: bytes) -> None:
        with self.store.session() as s:
            s.execute(
                sa.update(ApiRequest)
                .where(col(ApiRequest.key) == key, col(ApiRequest.fingerprint) == fingerprint)
                .values(
                    state="done",
                    status_code=status,
                    response_body=body.decode("ascii"),
                    updated_at=self.clock.now(),
                )
            )

    def _release(self, key: str, fingerprint: str) -> None:
        """Give the key up (nothing was stored under it): a retry starts afresh."""
        try:
            with self.store.session() as s:
                s.execute(
                    sa.delete(ApiRequest).where(
                        col(ApiRequest.key) == key,
                        col(ApiRequest.fingerprint) == fingerprint,
                        col(ApiRequest.state) == "in_progress",
                    )
                )
        except Exception:
            log.exception("api_request_release_failed", key=key)

    # -- GET ---------------------------------------------------------------------------
    async def get_allocation(self, request: Request) -> Response:
        """An intent's state and history; 404 for an unknown id."""
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        intent_id = request.path_params["intent_id"]
        return await run_in_threadpool(self._get_allocation, intent_id)

    def _get_allocation(self, intent_id: str) -> Response:
        with self.store.session() as s:
            intent = s.get(PaymentIntent, intent_id) if len(intent_id) <= 36 else None
            attempts = (
                s.exec(
                    select(Attempt).where(Attempt.intent_id == intent_id).order_by(col(Attempt.id))
                ).all()
                if intent is not None
                else []
            )
        if intent is None:
            return _error(404, "not_found", f"no allocation with id {intent_id!r}")
        body = allocation_view(intent)
        body["history"] = [attempt_view(a) for a in attempts]
        return _json(200, body)

    async def find_allocations(self, request: Request) -> Response:
        """``?idempotency_key=…[&connection_id=…]`` → ``{"allocations": [...]}``."""
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        key = request.query_params.get("idempotency_key")
        connection_id = request.query_params.get("connection_id")
        if not key:
            return _error(
                400,
                "idempotency_key_required",
                "give ?idempotency_key=… (and optionally &connection_id=…)",
            )
        return await run_in_threadpool(self._find, key, connection_id)

    def _find(self, key: str, connection_id: str | None) -> Response:
        query = select(PaymentIntent).where(PaymentIntent.idempotency_key == key)
        if connection_id:
            query = query.where(PaymentIntent.connection_id == connection_id)
        with self.store.session() as s:
            rows = s.exec(query.order_by(col(PaymentIntent.created_at))).all()
        return _json(200, {"allocations": [allocation_view(r) for r in rows]})
