"""HTTP emulation of NetSuite SuiteTalk REST, mounted at ``/netsuite``.

``/netsuite/{accountId}`` stands for ``https://{accountId}.suitetalk.api.netsuite.com``
(the id in any case, ``-`` or ``_``):

``POST /{acct}/services/rest/auth/oauth2/v1/token``
    client credentials with a JWT assertion (:mod:`connector.sandbox.netsuite.auth`).
``/{acct}/services/rest/record/v1/{type}[/{id}[/!transform/{target} | /{sublist}]]``
    records: ``invoice``, ``vendorBill``, ``customerPayment``, ``vendorPayment``,
    ``customer``, ``vendor``, ``account``, ``currency`` (type names case-insensitive).
``POST /{acct}/services/rest/query/v1/suiteql``
    SuiteQL (``Prefer: transient`` required).
``GET /{acct}/services/rest/async/v1/job/{id}[/task[/{id}[/result]]]``
    asynchronous requests (``Prefer: respond-async``).
``GET /{acct}/services/rest/system/v1/serverTime``
    server time.

Pipeline of an API call: authentication (bearer token, else TBA; 401 ``INVALID_LOGIN``),
the account concurrency limit (429, every REST call in flight counts), then for writes
the fault injection, then the operation.

Writes and idempotency: synchronous writes have no idempotency key, as in NetSuite
(``X-NetSuite-Idempotency-Key`` is ignored on them; fault ``ignore_idempotency`` is
then a no-op). With ``Prefer: respond-async`` a write becomes a job (202, ``Location:
/services/rest/async/v1/job/{id}`` relative to the account host) and the optional
``X-NetSuite-Idempotency-Key`` (a UUID) deduplicates submissions for
:data:`IDEMPOTENCY_RETENTION` (Oracle does not publish the retention): a repeat gets
Oracle's 400 "Conflict" ``IDEMPOTENCY_ERROR`` with the first job's ``Location``;
fault ``ignore_idempotency`` skips that check. Batch (collection) requests are not
emulated.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from connector.sandbox.netsuite.auth import TokenError, scaled
from connector.sandbox.netsuite.errors import (
    CONTENT_TYPE_ERROR,
    NetSuiteError,
    concurrency_limit,
    invalid_login,
    invalid_query,
    not_found,
    record_changed,
    unexpected_error,
    user_error,
)
from connector.sandbox.netsuite.ledger import NetSuiteLedger
from connector.sandbox.netsuite.models import (
    BILL,
    CUSTOMER_PAYMENT,
    INVOICE,
    PAYMENT_KINDS,
    VENDOR_PAYMENT,
    Company,
    Entity,
    Transaction,
)
from connector.sandbox.netsuite.recordq import compile_filter
from connector.sandbox.netsuite.render import (
    collection,
    public_base,
    record_path,
    render_currency,
    render_entity,
    render_gl_account,
    render_transaction,
)
from connector.sandbox.netsuite.suiteql import QueryError, run_query
from connector.sandbox.netsuite.tables import catalog
from connector.sandbox.wire import dumps, loads
from connector.sandbox.xero.routes import DROP_SCOPE_KEY

__all__ = ["IDEMPOTENCY_RETENTION", "NetSuiteRoutes", "create_netsuite_app"]

JSON_SINGULAR = "application/vnd.oracle.resource+json; type=singular; charset=UTF-8"
JSON_COLLECTION = "application/vnd.oracle.resource+json; type=collection; charset=UTF-8"
JSON_TOKEN = "application/json;charset=UTF-8"
#: Async idempotency keys are kept this long (nominal; divided by ``time_scale``).
IDEMPOTENCY_RETENTION = 24 * 3600.0
#: Page size limits of collections and SuiteQL (fact sheet §3).
MAX_LIMIT = 1000
#: Collections and SuiteQL stop at 100,000 results without SuiteAnalytics Connect.
MAX_RESULTS = 100_000

RECORD_TYPES = {
    "invoice": INVOICE,
    "vendorbill": BILL,
    "customerpayment": CUSTOMER_PAYMENT,
    "vendorpayment": VENDOR_PAYMENT,
    "customer": "customer",
    "vendor": "vendor",
    "account": "account",
    "currency": "currency",
}
_TRANSACTION_FILTER_FIELDS = {
    name: name
    for name in (
        "id",
        "externalid",
        "tranid",
        "entity",
        "status",
        "lastmodifieddate",
        "createddate",
        "trandate",
        "duedate",
        "total",
        "currency",
        "memo",
    )
}
_ENTITY_FILTER_FIELDS = {
    name: name
    for name in (
        "id",
        "entityid",
        "companyname",
        "email",
        "externalid",
        "currency",
        "lastmodifieddate",
        "datecreated",
    )
}
_DATE_FIELDS = {"lastmodifieddate", "createddate", "trandate", "duedate", "datecreated"}


def _json(
    body: Any, status: int = 200, media: str = JSON_SINGULAR, headers: dict[str, str] | None = None
) -> Response:
    return Response(dumps(body), status_code=status, headers=headers, media_type=media)


def _error(exc: NetSuiteError) -> Response:
    return Response(
        dumps(exc.body()),
        status_code=exc.status,
        headers=exc.headers or None,
        media_type=CONTENT_TYPE_ERROR,
    )


async def _drop(request: Request) -> Response:
    dropper: Callable[[], Awaitable[None]] | None = request.scope.get(DROP_SCOPE_KEY)
    if dropper is None:
        raise RuntimeError("this server cannot drop connections (not run by the sandbox app)")
    await dropper()
    # Nothing reaches the client any more; the app's send guard discards this.
    return Response(status_code=204)


def _operation_headers() -> dict[str, str]:
    return {"X-N-OperationId": str(uuid.uuid4())}


@dataclass
class _Call:
    """An authenticated API call."""

    request: Request
    account: str
    company: Company
    base: str  # stands for https://{account}.suitetalk.api.netsuite.com
    body: bytes


@dataclass
class _WriteOp:
    """A write, described before it runs so that faults can act on its targets."""

    run: Callable[[], Response]
    targets: list[Transaction]
    edited: list[Transaction]
    is_update: bool


@dataclass
class _Job:
    """An asynchronous request."""

    id: int
    key: str | None
    submitted: datetime
    started: datetime | None = None
    finished: datetime | None = None
    result: tuple[int, dict[str, str], bytes, str | None] | None = None

    @property
    def progress(self) -> str:
        if self.result is None:
            return "pending"
        return "failed" if self.result[0] >= 400 else "succeeded"


@dataclass
class _JobStore:
    jobs: dict[str, dict[int, _Job]] = field(default_factory=dict)
    keys: dict[tuple[str, str], int] = field(default_factory=dict)
    next_id: int = 1


class NetSuiteRoutes:
    """The routes of the NetSuite emulator (mounted at ``/netsuite``).

    Args:
        ledger: The NetSuite ledger (with its clock, lock, faults and concurrency limit).
    """

    def __init__(self, ledger: NetSuiteLedger) -> None:
        self.ledger = ledger
        self._jobs = _JobStore()
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> list[BaseRoute]:
        """Routes relative to the mount point."""
        rest = "/{account}/services/rest"
        record = rest + "/record/v1/{rtype}"
        any_method = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return [
            Route(rest + "/auth/oauth2/v1/token", self.token, methods=["POST"]),
            Route(record + "/{rid}/!transform/{target}", self.transform, methods=["POST"]),
            Route(record + "/{rid}/{sublist}", self.sublist, methods=["GET"]),
            Route(record + "/{rid}", self.record_item, methods=any_method),
            Route(record, self.record_collection, methods=any_method),
            Route(rest + "/query/v1/suiteql", self.suiteql, methods=["POST"]),
            Route(rest + "/async/v1/job/{job}", self.job, methods=["GET"]),
            Route(rest + "/async/v1/job/{job}/task", self.job_tasks, methods=["GET"]),
            Route(rest + "/async/v1/job/{job}/task/{task}", self.job_task, methods=["GET"]),
            Route(
                rest + "/async/v1/job/{job}/task/{task}/result", self.job_result, methods=["GET"]
            ),
            Route(rest + "/system/v1/serverTime", self.server_time, methods=["GET"]),
            Route("/{path:path}", self.not_found, methods=any_method),
        ]

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _base(request: Request) -> str:
        root = request.scope.get("root_path", "")
        account = request.path_params["account"]
        return f"{request.url.scheme}://{request.url.netloc}{root}/{account}"

    async def _authenticate(self, request: Request) -> _Call:
        try:
            account = self.ledger.resolve(request.path_params["account"])
        except KeyError:
            raise invalid_login() from None
        body = await request.body()
        form: list[tuple[str, str]] = []
        if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
            form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        url = str(request.url)
        self.ledger.auth.authenticate(
            account,
            authorization=request.headers.get("authorization", ""),
            method=request.method,
            url=url,
            host=request.headers.get("host"),
            form_params=form,
        )
        return _Call(request, account, self.ledger.company(account), self._base(request), body)

    async def _api(
        self, request: Request, handler: Callable[[_Call], Awaitable[Response]]
    ) -> Response:
        try:
            call = await self._authenticate(request)
        except NetSuiteError as exc:
            return _error(exc)
        if not self.ledger.acquire_slot(call.account):
            return _error(concurrency_limit())
        try:
            response = await handler(call)
        except NetSuiteError as exc:
            response = _error(exc)
        finally:
            self.ledger.release_slot(call.account)
        for name, value in _operation_headers().items():
            response.headers.setdefault(name, value)
        return response

    @staticmethod
    def _record_type(request: Request) -> str:
        raw = request.path_params["rtype"]
        kind = RECORD_TYPES.get(raw.lower())
        if kind is None:
            raise NetSuiteError(404, "INVALID_RCRD_TYPE", f"The record type [{raw}] is invalid.")
        return kind

    @staticmethod
    def _parse_json(body: bytes) -> Any:
        if not body.strip():
            return {}
        try:
            return loads(body)
        except (ValueError, UnicodeDecodeError):
            raise NetSuiteError(
                400,
                "INVALID_CONTENT",
                "The request could not be understood by the server due to malformed syntax.",
            ) from None

    @staticmethod
    def _lenient_json(body: bytes) -> Any:
        try:
            return loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return None

    @staticmethod
    def _paging(request: Request) -> tuple[int, int]:
        def number(name: str, default: int) -> int:
            raw = request.query_params.get(name)
            if raw is None:
                return default
            if not raw.strip().isdigit():
                raise NetSuiteError(
                    400,
                    "INVALID_PARAMETER",
                    f"Invalid value for the query parameter {name}: {raw}.",
                    extra={"o:errorQueryParam": name},
                )
            return int(raw)

        limit = number("limit", MAX_LIMIT)
        offset = number("offset", 0)
        if not 1 <= limit <= MAX_LIMIT:
            raise NetSuiteError(
                400,
                "INVALID_PARAMETER",
                f"Invalid value for the query parameter limit: {limit}. The value must be "
                f"between 1 and {MAX_LIMIT}.",
                extra={"o:errorQueryParam": "limit"},
            )
        if offset % limit:
            raise NetSuiteError(
                400,
                "INVALID_PARAMETER",
                f"Invalid value for the query parameter offset: {offset}. The offset must be a "
                "multiple of the limit.",
                extra={"o:errorQueryParam": "offset"},
            )
        return limit, offset

    def _created(self, call: _Call, tx: Transaction) -> Response:
        headers = {
            "Location": record_path(call.base, tx.kind, tx.id),
            "X-NetSuite-JobId": str(uuid.uuid4()),
            "Cache-Control": "No-Cache",
            "Content-Type": "application/json",
        }
        return Response(status_code=204, headers=headers)

    @staticmethod
    def _no_content() -> Response:
        return Response(status_code=204, headers={"Cache-Control": "No-Cache"})

    # ------------------------------------------------------------------ writes

    def _execute(self, op: _WriteOp) -> Response:
        try:
            with self.ledger.lock:
                return op.run()
        except NetSuiteError as exc:
            return _error(exc)

    def _before_commit(self, call: _Call, op: _WriteOp, chosen: str | None) -> Response | None:
        """Faults that act before the write; a Response means "answer this, do not run"."""
        if chosen == "token_revoked":
            self.ledger.revoke(call.account)
            return _error(invalid_login())
        if chosen == "rate_limit":
            return _error(concurrency_limit())
        if chosen == "error_before_commit":
            return _error(unexpected_error(_error_id()))
        return None

    def _interference(self, call: _Call, op: _WriteOp, chosen: str | None) -> Response | None:
        """``paid_elsewhere``/``concurrent_edit``: someone else acts just before the write."""
        if chosen == "paid_elsewhere":
            self.ledger.pay_elsewhere(call.company, op.targets)
        elif chosen == "concurrent_edit":
            self.ledger.bump([*op.edited, *op.targets])
            if op.is_update:
                return _error(record_changed())
        return None

    async def _write(self, call: _Call, op: _WriteOp) -> Response:
        request = call.request
        prefer = {p.strip().lower() for p in request.headers.get("prefer", "").split(",")}
        if "respond-async" in prefer:
            return await self._submit_async(call, op)
        decision = self.ledger.faults.draw()
        chosen = decision.chosen
        if chosen == "drop_before_commit":
            return await _drop(request)
        answer = self._before_commit(call, op, chosen) or self._interference(call, op, chosen)
        if answer is not None:
            return answer
        response = self._execute(op)
        if decision.latency_ms > 0:
            await asyncio.sleep(decision.latency_ms / 1000)
        if chosen == "drop_after_commit":
            return await _drop(request)
        if chosen == "error_500_after_commit":
            return _error(unexpected_error(_error_id()))
        return response

    async def _submit_async(self, call: _Call, op: _WriteOp) -> Response:
        request = call.request
        key = request.headers.get("x-netsuite-idempotency-key")
        if key is not None:
            try:
                uuid.UUID(key)
            except ValueError:
                raise NetSuiteError(
                    400,
                    "INVALID_HEADER",
                    "The X-NetSuite-Idempotency-Key header must be a UUID (RFC 4122).",
                    extra={"o:errorHeader": "X-NetSuite-Idempotency-Key"},
                ) from None
        decision = self.ledger.faults.draw()
        chosen = decision.chosen
        if chosen == "drop_before_commit":
            return await _drop(request)
        answer = self._before_commit(call, op, chosen)
        if answer is not None:
            return answer
        root = request.scope.get("root_path", "")
        job_base = f"{root}/{request.path_params['account']}/services/rest/async/v1/job"
        with self.ledger.lock:
            if key is not None and chosen != "ignore_idempotency":
                previous = self._job_for_key(call.account, key)
                if previous is not None:
                    raise NetSuiteError(
                        400,
                        "IDEMPOTENCY_ERROR",
                        'A request with the same idempotency key is already submitted. See the "Location" header for a link to the previously submitted job',
                        title="Conflict",
                        type_="https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.10",
                        headers={
                            "Preference-Applied": "respond-async",
                            "Location": f"{job_base}/{previous.id}",
                        },
                    )
            job = _Job(self._jobs.next_id, key, self.ledger.clock.now())
            self._jobs.next_id += 1
            self._jobs.jobs.setdefault(call.account, {})[job.id] = job
            if key is not None and (call.account, key) not in self._jobs.keys:
                self._jobs.keys[(call.account, key)] = job.id

        async def work() -> None:
            if decision.latency_ms > 0:
                await asyncio.sleep(decision.latency_ms / 1000)
            job.started = self.ledger.clock.now()
            response = self._interference(call, op, chosen) or self._execute(op)
            headers = {
                k: v
                for k, v in response.headers.items()
                if k.lower() not in {"content-length", "content-type"}
            }
            job.result = (response.status_code, headers, bytes(response.body), response.media_type)
            job.finished = self.ledger.clock.now()

        task = asyncio.get_running_loop().create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        accepted = Response(
            status_code=202,
            headers={
                "Preference-Applied": "respond-async",
                "Location": f"{job_base}/{job.id}",
                "Content-Type": "application/json",
            },
        )
        if chosen == "drop_after_commit":
            return await _drop(request)
        if chosen == "error_500_after_commit":
            return _error(unexpected_error(_error_id()))
        return accepted

    def _job_for_key(self, account: str, key: str) -> _Job | None:
        job_id = self._jobs.keys.get((account, key))
        if job_id is None:
            return None
        job = self._jobs.jobs[account][job_id]
        retention = timedelta(seconds=scaled(self.ledger.clock, IDEMPOTENCY_RETENTION))
        if self.ledger.clock.now() - job.submitted > retention:
            del self._jobs.keys[(account, key)]
            return None
        return job

    # ------------------------------------------------------------------ token endpoint

    async def token(self, request: Request) -> Response:
        """``POST /services/rest/auth/oauth2/v1/token``: client credentials with a JWT."""
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        try:
            account = self.ledger.resolve(request.path_params["account"])
        except KeyError:
            return _json({"error": "invalid_client"}, 401, JSON_TOKEN, no_store)
        body = await request.body()
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        here = str(request.url).split("?", 1)[0]
        real = f"{public_base(account)}/services/rest/auth/oauth2/v1/token"
        try:
            answer = self.ledger.auth.issue_token(account, form, [here, real])
        except TokenError as exc:
            return _json({"error": exc.error}, exc.status, JSON_TOKEN, no_store)
        return _json(answer, 200, JSON_TOKEN, no_store)

    # ------------------------------------------------------------------ records

    async def record_collection(self, request: Request) -> Response:
        """``GET`` (list) or ``POST`` (create) ``record/v1/{type}``."""
        return await self._api(request, self._collection)

    async def _collection(self, call: _Call) -> Response:
        request = call.request
        kind = self._record_type(request)
        if request.method == "GET":
            return self._list(call, kind)
        if request.method != "POST":
            raise _method_not_allowed(request)
        if kind not in PAYMENT_KINDS:
            raise user_error(f"The sandbox does not create {kind} records.")
        body = self._lenient_json(call.body)
        op = _WriteOp(
            run=lambda: self._created(
                call,
                self.ledger.create_payment(call.account, kind, self._parse_json(call.body)),
            ),
            targets=self.ledger.targets(call.company, None, body),
            edited=[],
            is_update=False,
        )
        return await self._write(call, op)

    def _list(self, call: _Call, kind: str) -> Response:
        request = call.request
        limit, offset = self._paging(request)
        q = request.query_params.get("q")
        company = call.company
        with self.ledger.lock:
            records: list[tuple[int, dict[str, Any]]] = []
            if kind in (INVOICE, BILL, CUSTOMER_PAYMENT, VENDOR_PAYMENT):
                for tx in company.transactions.values():
                    if tx.kind == kind:
                        records.append((tx.id, _transaction_filter_row(tx)))
                fields = _TRANSACTION_FILTER_FIELDS
            elif kind in ("customer", "vendor"):
                for entity in company.entities.values():
                    if entity.kind == kind:
                        records.append(
                            (
                                entity.id,
                                {
                                    "id": entity.id,
                                    "entityid": entity.entity_id,
                                    "companyname": entity.company_name,
                                    "email": entity.email,
                                    "externalid": entity.external_id,
                                    "currency": entity.currency_id,
                                    "lastmodifieddate": entity.modified,
                                    "datecreated": entity.created,
                                },
                            )
                        )
                fields = _ENTITY_FILTER_FIELDS
            elif kind == "account":
                records = [(a.id, {"id": a.id}) for a in company.gl_accounts.values()]
                fields = {"id": "id"}
            else:
                records = [(c.id, {"id": c.id}) for c in company.currencies.values()]
                fields = {"id": "id"}
        if q:
            predicate = compile_filter(q, fields, _DATE_FIELDS)
            records = [r for r in records if predicate(r[1])]
        records.sort(key=lambda r: r[0])
        total = min(len(records), MAX_RESULTS)
        page_href = f"{call.base}/services/rest/record/v1/{request.path_params['rtype']}"
        rtype = kind.lower()
        items = [
            {"links": [{"rel": "self", "href": record_path(call.base, rtype, rid)}], "id": str(rid)}
            for rid, _ in records[offset : offset + limit]
        ]
        body = collection(
            f"{page_href}?limit={limit}&offset={offset}",
            items,
            total=total,
            offset=offset,
            limit=limit,
            page_href=page_href,
        )
        return _json(body, media=JSON_COLLECTION)

    async def record_item(self, request: Request) -> Response:
        """``GET``/``PUT``/``PATCH``/``DELETE record/v1/{type}/{id}``."""
        return await self._api(request, self._item)

    async def _item(self, call: _Call) -> Response:
        request = call.request
        kind = self._record_type(request)
        rid = request.path_params["rid"]
        if request.method == "GET":
            return self._get(call, kind, rid)
        changeable = (*PAYMENT_KINDS, INVOICE, BILL)
        entity_upsert = request.method == "PUT" and kind in ("customer", "vendor")
        if kind not in changeable and not entity_upsert:
            raise user_error(f"The sandbox does not change {kind} records.")
        if request.method == "POST":
            raise _method_not_allowed(request)
        body = self._lenient_json(call.body)
        replace = "apply" in {
            part.strip().lower() for part in request.query_params.get("replace", "").split(",")
        }
        if request.method == "PUT":
            return await self._upsert(call, kind, rid, body, replace)
        record = self.ledger.find(call.company, kind, rid)
        if request.method == "DELETE":
            if kind not in PAYMENT_KINDS:
                raise user_error(f"The sandbox does not delete {kind} records.")
            op = _WriteOp(
                run=lambda: self._deleted(call, record),
                targets=self.ledger.targets(call.company, record, None),
                edited=[record],
                is_update=True,
            )
            return await self._write(call, op)
        if kind in PAYMENT_KINDS:

            def run_update() -> Response:
                current = self.ledger.find(call.company, kind, rid)
                self.ledger.update_payment(
                    call.account, current, self._parse_json(call.body), replace_apply=replace
                )
                return self._no_content()

            op = _WriteOp(
                run=run_update,
                targets=self.ledger.targets(call.company, record, body),
                edited=[record],
                is_update=True,
            )
        else:

            def run_patch() -> Response:
                current = self.ledger.find(call.company, kind, rid)
                self.ledger.patch_document(call.account, current, self._parse_json(call.body))
                return self._no_content()

            op = _WriteOp(run=run_patch, targets=[record], edited=[record], is_update=True)
        return await self._write(call, op)

    def _deleted(self, call: _Call, record: Transaction) -> Response:
        current = self.ledger.find(call.company, record.kind, str(record.id))
        self.ledger.delete_payment(call.account, current)
        return self._no_content()

    async def _upsert(self, call: _Call, kind: str, rid: str, body: Any, replace: bool) -> Response:
        if rid.lower().startswith("eid:") and kind in ("customer", "vendor"):
            return await self._upsert_entity(call, kind, rid[4:])
        if not rid.lower().startswith("eid:") or kind not in PAYMENT_KINDS:
            raise user_error(
                "Upsert (PUT) needs an external ID in the URL: record/v1/{type}/eid:{externalId}."
            )
        eid = rid[4:]
        if not eid or not all(ch.isalnum() or ch in "_-" for ch in eid):
            raise user_error(f"Invalid external ID: {eid}.")
        try:
            existing: Transaction | None = self.ledger.find(call.company, kind, rid)
        except NetSuiteError:
            existing = None

        def run() -> Response:
            try:
                current: Transaction | None = self.ledger.find(call.company, kind, rid)
            except NetSuiteError:
                current = None
            parsed = self._parse_json(call.body)
            if current is None:
                tx = self.ledger.create_payment(call.account, kind, parsed, external_id=eid)
                return self._created(call, tx)
            if isinstance(parsed, dict):
                parsed = {k: v for k, v in parsed.items() if k != "externalId"}
            self.ledger.update_payment(call.account, current, parsed, replace_apply=replace)
            return self._no_content()

        op = _WriteOp(
            run=run,
            targets=self.ledger.targets(call.company, existing, body),
            edited=[existing] if existing else [],
            is_update=existing is not None,
        )
        return await self._write(call, op)

    async def _upsert_entity(self, call: _Call, kind: str, eid: str) -> Response:
        if not eid or not all(ch.isalnum() or ch in "_-" for ch in eid):
            raise user_error(f"Invalid external ID: {eid}.")

        def run() -> Response:
            entity, created = self.ledger.upsert_entity(
                call.account, kind, eid, self._parse_json(call.body)
            )
            if not created:
                return self._no_content()
            headers = {
                "Location": record_path(call.base, kind, entity.id),
                "Content-Type": "application/json",
            }
            return Response(status_code=204, headers=headers)

        op = _WriteOp(run=run, targets=[], edited=[], is_update=False)
        return await self._write(call, op)

    def _get(self, call: _Call, kind: str, rid: str) -> Response:
        request = call.request
        company = call.company
        expand = request.query_params.get("expandSubResources", "").lower() == "true"
        with self.ledger.lock:
            if kind in (INVOICE, BILL, CUSTOMER_PAYMENT, VENDOR_PAYMENT):
                tx = self.ledger.find(company, kind, rid)
                body = render_transaction(company, tx, call.base, expand=expand)
            elif kind in ("customer", "vendor"):
                entity = _find_entity(company, kind, rid)
                body = render_entity(company, entity, call.base)
            elif kind == "account":
                account = company.gl_accounts.get(_int(rid))
                if account is None:
                    raise _not_found()
                body = render_gl_account(company, account, call.base)
            else:
                currency = company.currencies.get(_int(rid))
                if currency is None:
                    raise _not_found()
                body = render_currency(company, currency, call.base)
        wanted = request.query_params.get("fields")
        if wanted:
            keep = {f.strip() for f in wanted.split(",") if f.strip()} | {"links", "id"}
            body = {k: v for k, v in body.items() if k in keep}
        return _json(body)

    async def sublist(self, request: Request) -> Response:
        """``GET record/v1/{payment type}/{id}/apply``."""
        return await self._api(request, self._sublist)

    async def _sublist(self, call: _Call) -> Response:
        request = call.request
        kind = self._record_type(request)
        if kind not in PAYMENT_KINDS or request.path_params["sublist"].lower() != "apply":
            raise _not_found()
        with self.ledger.lock:
            tx = self.ledger.find(call.company, kind, request.path_params["rid"])
            body = render_transaction(call.company, tx, call.base, expand=True)["apply"]
        return _json(body, media=JSON_COLLECTION)

    async def transform(self, request: Request) -> Response:
        """``POST record/v1/{invoice|vendorBill}/{id}/!transform/{payment type}``."""
        return await self._api(request, self._transform)

    async def _transform(self, call: _Call) -> Response:
        request = call.request
        kind = self._record_type(request)
        if kind not in (INVOICE, BILL):
            raise user_error(f"The sandbox does not transform {kind} records.")
        rid = request.path_params["rid"]
        doc = self.ledger.find(call.company, kind, rid)
        target = request.path_params["target"]
        op = _WriteOp(
            run=lambda: self._created(
                call,
                self.ledger.transform(call.account, kind, rid, target, self._parse_json(call.body)),
            ),
            targets=[doc],
            edited=[],
            is_update=False,
        )
        return await self._write(call, op)

    # ------------------------------------------------------------------ SuiteQL

    async def suiteql(self, request: Request) -> Response:
        """``POST query/v1/suiteql``."""
        return await self._api(request, self._suiteql)

    async def _suiteql(self, call: _Call) -> Response:
        request = call.request
        prefer = {p.strip().lower() for p in request.headers.get("prefer", "").split(",")}
        if "transient" not in prefer:
            # Sandbox wording: the fact sheet documents the header as required, not the text.
            raise NetSuiteError(
                400,
                "INVALID_HEADER",
                "Invalid value for the request header Prefer. SuiteQL queries require the "
                "header 'Prefer: transient'.",
                extra={"o:errorHeader": "Prefer"},
            )
        limit, offset = self._paging(request)
        body = self._parse_json(call.body)
        q = body.get("q") if isinstance(body, dict) else None
        if not isinstance(q, str) or not q.strip():
            raise invalid_query("Search error occurred: The q property is missing.")
        with self.ledger.lock:
            tables = catalog(call.company)
            try:
                result = run_query(q, tables, self.ledger.clock.now())
            except QueryError as exc:
                raise invalid_query(exc.message) from None
        rows = result.rows[:MAX_RESULTS]
        items = [{"links": [], **row} for row in rows[offset : offset + limit]]
        page_href = f"{call.base}/services/rest/query/v1/suiteql"
        paged = "limit" in request.query_params or "offset" in request.query_params
        self_href = f"{page_href}?limit={limit}&offset={offset}" if paged else page_href
        envelope = collection(
            self_href, items, total=len(rows), offset=offset, limit=limit, page_href=page_href
        )
        return _json(envelope, media=JSON_COLLECTION, headers={"Preference-Applied": "transient"})

    # ------------------------------------------------------------------ async jobs

    async def job(self, request: Request) -> Response:
        """``GET async/v1/job/{id}``."""
        return await self._api(request, self._job)

    def _find_job(self, call: _Call) -> _Job:
        job_id = _int(call.request.path_params["job"])
        job = self._jobs.jobs.get(call.account, {}).get(job_id)
        if job is None:
            raise _not_found()
        return job

    def _job_href(self, call: _Call, job: _Job) -> str:
        return f"{call.base}/services/rest/async/v1/job/{job.id}"

    async def _job(self, call: _Call) -> Response:
        job = self._find_job(call)
        href = self._job_href(call, job)
        body = {
            "links": [{"rel": "self", "href": href}],
            "completed": job.result is not None,
            "id": str(job.id),
            "progress": job.progress,
            "task": {"links": [{"rel": "self", "href": f"{href}/task"}]},
        }
        return _json(body)

    async def job_tasks(self, request: Request) -> Response:
        """``GET async/v1/job/{id}/task``."""
        return await self._api(request, self._job_tasks)

    async def _job_tasks(self, call: _Call) -> Response:
        job = self._find_job(call)
        href = f"{self._job_href(call, job)}/task"
        items = [{"links": [{"rel": "self", "href": f"{href}/1"}]}]
        return _json(collection(href, items, total=1, offset=0, limit=1), media=JSON_COLLECTION)

    async def job_task(self, request: Request) -> Response:
        """``GET async/v1/job/{id}/task/{id}``."""
        return await self._api(request, self._job_task)

    async def _job_task(self, call: _Call) -> Response:
        job = self._find_job(call)
        if call.request.path_params["task"] != "1":
            raise _not_found()
        href = f"{self._job_href(call, job)}/task/1"
        body: dict[str, Any] = {
            "links": [
                {"rel": "related", "href": f"{href}/result"},
                {"rel": "self", "href": href},
            ],
            "completed": job.result is not None,
            "id": "1",
            "progress": job.progress,
        }
        if job.finished is not None:
            body["endTime"] = _iso(job.finished)
        if job.started is not None:
            body["startTime"] = _iso(job.started)
        return _json({k: body[k] for k in sorted(body, key=lambda k: (k != "links", k))})

    async def job_result(self, request: Request) -> Response:
        """``GET async/v1/job/{id}/task/{id}/result``: what the request answered."""
        return await self._api(request, self._job_result)

    async def _job_result(self, call: _Call) -> Response:
        job = self._find_job(call)
        if call.request.path_params["task"] != "1" or job.result is None:
            raise _not_found()
        status, headers, body, media = job.result
        return Response(body, status_code=status, headers=headers, media_type=media)

    # ------------------------------------------------------------------ misc

    async def server_time(self, request: Request) -> Response:
        """``GET system/v1/serverTime``."""

        async def answer(call: _Call) -> Response:
            now = self.ledger.clock.now()
            return _json(
                {
                    "serverTime": now.strftime("%Y-%m-%dT%H:%M:%S.")
                    + f"{now.microsecond // 1000:03d}Z"
                }
            )

        return await self._api(request, answer)

    async def not_found(self, request: Request) -> Response:
        """Any other path under an account."""
        return _error(
            NetSuiteError(404, "INVALID_URL", f"The URL {request.url.path} is not valid.")
        )


def _transaction_filter_row(tx: Transaction) -> dict[str, Any]:
    return {
        "id": tx.id,
        "externalid": tx.external_id,
        "tranid": tx.tran_id,
        "entity": tx.entity_id,
        "status": tx.status,
        "lastmodifieddate": tx.modified,
        "createddate": tx.created,
        "trandate": tx.tran_date,
        "duedate": tx.due_date,
        "total": tx.total,
        "currency": tx.currency_id,
        "memo": tx.memo,
    }


def _find_entity(company: Company, kind: str, rid: str) -> Entity:
    if rid.lower().startswith("eid:"):
        for entity in company.entities.values():
            if entity.kind == kind and entity.external_id == rid[4:]:
                return entity
        raise _not_found()
    found = company.entities.get(_int(rid))
    if found is None or found.kind != kind:
        raise _not_found()
    return found


def _int(value: str) -> int:
    return int(value) if value.isdigit() else -1


def _not_found() -> NetSuiteError:
    return not_found()


def _method_not_allowed(request: Request) -> NetSuiteError:
    return NetSuiteError(
        405,
        "INVALID_METHOD",
        f"The HTTP method {request.method} is not allowed for {request.url.path}.",
    )


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _error_id() -> str:
    return uuid.uuid4().hex[:20]


def create_netsuite_app(ledger: NetSuiteLedger) -> Starlette:
    """The NetSuite emulator as an ASGI app, to mount at ``/netsuite``.

    Connection drops (faults) need the enclosing :class:`connector.sandbox.app.SandboxApp`.
    """
    app = Starlette(routes=NetSuiteRoutes(ledger).routes())
    return app
