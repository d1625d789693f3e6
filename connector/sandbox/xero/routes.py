"""HTTP emulation of Xero under the ``/xero`` prefix.

``/xero`` stands in for both ``https://identity.xero.com`` (``/connect/token``,
``/connect/revocation``) and ``https://api.xero.com`` (``/connections``,
``/api.xro/2.0/...``).

Request pipeline of an Accounting API call:

1. bearer token (401 problem JSON), 2. ``xero-tenant-id`` (403 problem JSON),
3. rate limits (429), 4. for writes: fault injection (:mod:`connector.sandbox.faults`;
the faults that stand for an earlier failure answer here), 5. for writes:
``Idempotency-Key`` (replay / conflict), 6. the operation itself, 7. for writes: the
faults after the commit (500, latency, dropped connection).

Every response that passed the rate limiter carries the ``X-*Limit-Remaining``
headers, except 401s (Xero authenticates before it counts).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from connector.sandbox.faults import FaultDecision
from connector.sandbox.idempotency import CachedResponse, Outcome, fingerprint
from connector.sandbox.ratelimit import RateDecision
from connector.sandbox.where import WhereError
from connector.sandbox.wire import dumps, loads, ms_date_plain, parse_http_datetime
from connector.sandbox.xero.auth import AuthError, TokenError, basic_credentials
from connector.sandbox.xero.ledger import (
    MSG_MODIFY,
    batch_payment_body_errors,
    payment_body_errors,
)
from connector.sandbox.xero.models import Grant, XTenant
from connector.sandbox.xero.queries import (
    ListQuery,
    Page,
    QueryCache,
    account_table,
    batch_payment_table,
    contact_table,
    invoice_table,
    payment_table,
    run_query,
)
from connector.sandbox.xero.render import (
    invoice_json,
    render_account,
    render_batch_payment,
    render_contact,
    render_payment,
)

if TYPE_CHECKING:
    from connector.sandbox.state import SandboxState

__all__ = ["DROP_SCOPE_KEY", "PROVIDER_NAME", "XeroRoutes"]

#: ASGI scope key under which the app installs an ``async () -> None`` that closes the
#: client connection (see :mod:`connector.sandbox.app`).
DROP_SCOPE_KEY = "sandbox.drop_connection"
PROVIDER_NAME = "Connector Sandbox"
API_PREFIX = "/xero/api.xro/2.0"
NOT_FOUND_TEXT = "The resource you're looking for cannot be found"
ERROR_500_TEXT = "An unhandled error with the Xero API"
ERROR_503_TEXT = "The Xero API is temporarily unavailable"
JSON = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

Handler = Callable[[Request, "ApiContext", bytes], Response]
#: The invoices a write acts on (for the ``paid_elsewhere``/``concurrent_edit`` faults).
Targets = Callable[[Request, "ApiContext", bytes], list[str]]


@dataclass(frozen=True)
class ApiContext:
    """The authenticated caller of one Accounting API request."""

    client_id: str
    grant: Grant
    tenant: XTenant


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response written with :func:`connector.sandbox.wire.dumps` (exact Decimals)."""
    return Response(dumps(body), status_code=status, headers=headers, media_type=JSON)


def _text(body: str, status: int) -> Response:
    return Response(body, status_code=status, media_type=TEXT)


def _problem(status: int, title: str, detail: str) -> Response:
    return json_response(
        {
            "Type": None,
            "Title": title,
            "Status": status,
            "Detail": detail,
            "Instance": str(uuid.uuid4()),
            "Extensions": {},
        },
        status,
    )


def _validation_error(elements: list[dict[str, Any]]) -> Response:
    return json_response(
        {
            "ErrorNumber": 10,
            "Type": "ValidationException",
            "Message": "A validation exception occurred",
            "Elements": elements,
        },
        400,
    )


def _error(number: int, type_: str, message: str) -> Response:
    return json_response({"ErrorNumber": number, "Type": type_, "Message": message}, 400)


def _params(request: Request) -> dict[str, str]:
    """Query parameters with lower-cased names (Xero matches them case-insensitively)."""
    return {key.lower(): value for key, value in request.query_params.multi_items()}


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [part.strip().strip('"').lower() for part in value.split(",")]
    return [item for item in items if item]


def _is_true(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    # xero-python sends Python's "True"/"False".
    return value.strip().lower() == "true"


class XeroRoutes:
    """The Starlette routes of the Xero emulator.

    Args:
        state: The sandbox state (ledger, clock, limits, idempotency, faults).
    """

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.ledger = state.xero
        self._queries = QueryCache()
        self._handlers: dict[tuple[str, bool, str], tuple[Handler, Targets | None]] = {
            ("invoices", False, "GET"): (self._get_invoices, None),
            ("invoices", True, "GET"): (self._get_invoice, None),
            ("payments", False, "GET"): (self._get_payments, None),
            ("payments", True, "GET"): (self._get_payment, None),
            ("payments", False, "PUT"): (self._create_payments, self._payment_targets),
            ("payments", False, "POST"): (self._create_payments, self._payment_targets),
            ("payments", True, "POST"): (self._delete_payment, self._deletion_targets),
            ("batchpayments", False, "GET"): (self._get_batch_payments, None),
            ("batchpayments", True, "GET"): (self._get_batch_payment, None),
            ("batchpayments", False, "PUT"): (
                self._create_batch_payments,
                self._batch_payment_targets,
            ),
            # The spec's deleteBatchPayment: POST a BatchPaymentDelete body, or the status
            # alone to /BatchPayments/{id} (deleteBatchPaymentByUrlParam).
            ("batchpayments", False, "POST"): (
                self._delete_batch_payment,
                self._batch_deletion_targets,
            ),
            ("batchpayments", True, "POST"): (
                self._delete_batch_payment,
                self._batch_deletion_targets,
            ),
            ("accounts", False, "GET"): (self._get_accounts, None),
            ("accounts", True, "GET"): (self._get_account, None),
            ("contacts", False, "GET"): (self._get_contacts, None),
            ("contacts", True, "GET"): (self._get_contact, None),
        }

    def routes(self) -> list[BaseRoute]:
        """Routes to mount at the application root."""
        methods = ["GET", "PUT", "POST", "DELETE", "PATCH"]
        return [
            Route("/xero/connect/token", self.token, methods=["POST"]),
            Route("/xero/connect/revocation", self.revocation, methods=["POST"]),
            Route("/xero/connections", self.connections, methods=["GET"]),
            Route("/xero/Connections", self.connections, methods=["GET"]),
            Route("/xero/connections/{connection_id}", self.delete_connection, methods=["DELETE"]),
            Route("/xero/Connections/{connection_id}", self.delete_connection, methods=["DELETE"]),
            Route(API_PREFIX + "/{resource}", self.api, methods=methods),
            Route(API_PREFIX + "/{resource}/{item_id}", self.api, methods=methods),
        ]

    # ------------------------------------------------------------------ identity

    async def token(self, request: Request) -> Response:
        """``POST /connect/token``: the refresh-token grant with rotation."""
        form = dict(
            parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        )
        basic = basic_credentials(request.headers.get("authorization"))
        client_id, secret = basic if basic else (form.get("client_id"), form.get("client_secret"))
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if not self.ledger.auth.check_client(client_id, secret):
            # RFC 6749 §5.2: 401 when the client tried HTTP Basic, 400 otherwise.
            return json_response({"error": "invalid_client"}, 401 if basic else 400, no_store)
        if form.get("grant_type") != "refresh_token":
            return json_response({"error": "unsupported_grant_type"}, 400, no_store)
        refresh_token = form.get("refresh_token")
        if not refresh_token:
            return json_response({"error": "invalid_request"}, 400, no_store)
        try:
            tokens = self.ledger.auth.refresh(refresh_token)
        except TokenError as exc:
            return json_response({"error": exc.error}, exc.status, no_store)
        return json_response(tokens, 200, no_store)

    async def revocation(self, request: Request) -> Response:
        """``POST /connect/revocation``: revoke the grant of a refresh token."""
        form = dict(
            parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        )
        basic = basic_credentials(request.headers.get("authorization"))
        client_id, secret = basic if basic else (form.get("client_id"), form.get("client_secret"))
        if not self.ledger.auth.check_client(client_id, secret):
            return json_response({"error": "invalid_client"}, 401 if basic else 400)
        # RFC 7009 §2.2: unknown tokens are not an error.
        self.ledger.auth.revoke_refresh_token(form.get("token", ""))
        return Response(status_code=200)

    def _bearer(self, request: Request) -> tuple[str, Grant] | Response:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _problem(401, "Unauthorized", "AuthenticationUnsuccessful")
        try:
            access, grant = self.ledger.auth.authenticate(token.strip())
        except AuthError as exc:
            return _problem(401, "Unauthorized", exc.detail)
        return access.client_id, grant

    async def connections(self, request: Request) -> Response:
        """``GET /connections``: the tenants of the bearer's grant."""
        auth = self._bearer(request)
        if isinstance(auth, Response):
            return auth
        _, grant = auth
        out = []
        with self.ledger.lock:
            for tenant_id in grant.tenant_ids:
                tenant = self.ledger.tenant(tenant_id)
                out.append(
                    {
                        "id": tenant.connection_id,
                        "authEventId": grant.grant_id,
                        "tenantId": tenant.tenant_id,
                        "tenantType": "ORGANISATION",
                        "tenantName": tenant.name,
                        "createdDateUtc": _net_datetime(tenant.created),
                        "updatedDateUtc": _net_datetime(tenant.created),
                    }
                )
        return json_response(out)

    async def delete_connection(self, request: Request) -> Response:
        """``DELETE /connections/{id}``: disconnect a tenant from the grant."""
        auth = self._bearer(request)
        if isinstance(auth, Response):
            return auth
        _, grant = auth
        wanted = request.path_params["connection_id"].lower()
        with self.ledger.lock:
            for tenant_id in list(grant.tenant_ids):
                if self.ledger.tenant(tenant_id).connection_id == wanted:
                    self.ledger.disconnect(tenant_id)
                    return Response(status_code=204)
        return _text(NOT_FOUND_TEXT, 404)

    # ------------------------------------------------------------------ pipeline

    async def api(self, request: Request) -> Response:
        """Every ``/api.xro/2.0/{resource}[/{id}]`` call."""
        resource = request.path_params["resource"].lower()
        has_id = "item_id" in request.path_params
        entry = self._handlers.get((resource, has_id, request.method))
        if entry is None:
            if any(key[0] == resource and key[1] == has_id for key in self._handlers):
                return _text(
                    f"The requested resource does not support http method '{request.method}'.", 405
                )
            return _text(NOT_FOUND_TEXT, 404)
        handler, targets = entry

        auth = self._bearer(request)
        if isinstance(auth, Response):
            return auth
        client_id, grant = auth
        tenant_header = request.headers.get("xero-tenant-id", "").strip().lower()
        if not tenant_header or tenant_header not in grant.tenant_ids:
            return _problem(403, "Forbidden", "AuthenticationUnsuccessful")
        ctx = ApiContext(client_id, grant, self.ledger.tenant(tenant_header))

        decision = self.state.rate_limiter.acquire(client_id, ctx.tenant.tenant_id)
        if not decision.allowed:
            headers = dict(decision.headers)
            headers["X-Rate-Limit-Problem"] = decision.problem or ""
            if decision.retry_after is not None:
                headers["Retry-After"] = str(decision.retry_after)
            return Response(b"", status_code=429, headers=headers)
        try:
            if targets is not None:
                response = await self._write(request, ctx, handler, targets, decision)
            else:
                response = handler(request, ctx, b"")
        finally:
            self.state.rate_limiter.release(ctx.tenant.tenant_id)
        if response.status_code != 401:
            for name, value in decision.headers.items():
                response.headers.setdefault(name, value)
        return response

    async def _write(
        self,
        request: Request,
        ctx: ApiContext,
        handler: Handler,
        targets: Targets,
        decision: RateDecision,
    ) -> Response:
        body = await request.body()
        key = request.headers.get("idempotency-key", "")
        if len(key) > self.state.idempotency.MAX_KEY_LENGTH:
            return _error(
                10,
                "ValidationException",
                f"Idempotency Key: {key} is {len(key)} characters long; the maximum "
                f"length is {self.state.idempotency.MAX_KEY_LENGTH}.",
            )
        faults = self.state.faults.draw()
        refused = await self._refuse(request, ctx, faults, decision)
        if refused is not None:
            return refused
        tenant_id = ctx.tenant.tenant_id
        if faults.paid_elsewhere:
            self.ledger.pay_elsewhere(tenant_id, targets(request, ctx, body))
        if faults.concurrent_edit:
            self.ledger.touch_invoices(tenant_id, targets(request, ctx, body))

        scope: tuple[str, str, str] | None = None
        response: Response | None = None
        if key and not faults.ignore_idempotency:
            scope = (ctx.client_id, tenant_id, key)
            outcome, cached = await self.state.idempotency.claim(
                scope, fingerprint(request.method, request.url.path, request.url.query, body)
            )
            if outcome is Outcome.CONFLICT:
                scope = None
                # Xero's documented message; the JSON shape around it is the sandbox's.
                response = _error(
                    10,
                    "ValidationException",
                    f"Idempotency Key: {key} is used with a different request.",
                )
            elif outcome is Outcome.REPLAY and cached is not None:
                scope = None
                response = _replay(cached)
        try:
            if response is None:
                response = handler(request, ctx, body)
            if faults.error_500_after_commit:
                response = _text(ERROR_500_TEXT, 500)
            if faults.latency_ms > 0:
                await asyncio.sleep(faults.latency_ms / 1000)
            if scope is not None:
                # Cache what "Xero" answered (a 500 included, as Xero caches internal
                # errors); a dropped connection loses only the delivery, not the cache.
                self.state.idempotency.complete(scope, _to_cached(response))
                scope = None
            if faults.drop_after_commit:
                return await _drop(request)
            return response
        finally:
            if scope is not None:
                # The request died before producing a response; let a retry run it.
                self.state.idempotency.abandon(scope)

    async def _refuse(
        self, request: Request, ctx: ApiContext, faults: FaultDecision, decision: RateDecision
    ) -> Response | None:
        """The faults that stand for a failure before Xero processed anything."""
        tenant_id = ctx.tenant.tenant_id
        limiter = self.state.rate_limiter
        if faults.token_revoked:
            # The user disconnected the app: every token of the grant dies, and this call
            # fails authentication (before the rate limiter, so it uses no quota).
            self.ledger.revoke_grant(tenant_id)
            limiter.refund(ctx.client_id, tenant_id, decision)
            return _problem(401, "Unauthorized", "AuthenticationUnsuccessful")
        if faults.rate_limit:
            headers = limiter.refund(ctx.client_id, tenant_id, decision)
            headers["X-MinLimit-Remaining"] = "0"
            headers["X-Rate-Limit-Problem"] = "minute"
            headers["Retry-After"] = str(limiter.retry_after(tenant_id, "minute") or 1)
            return Response(b"", status_code=429, headers=headers)
        if faults.error_before_commit:
            return _text(ERROR_503_TEXT, 503)
        if faults.drop_before_commit:
            return await _drop(request)
        return None

    def _payment_targets(self, request: Request, ctx: ApiContext, body: bytes) -> list[str]:
        parsed = _parse_body(body)
        items = None if isinstance(parsed, Response) else _unwrap(parsed, "Payments")
        return self.ledger.invoice_ids_for_payments(ctx.tenant.tenant_id, items or [])

    def _batch_payment_targets(self, request: Request, ctx: ApiContext, body: bytes) -> list[str]:
        parsed = _parse_body(body)
        items = None if isinstance(parsed, Response) else _unwrap(parsed, "BatchPayments")
        return self.ledger.invoice_ids_for_batch_payments(ctx.tenant.tenant_id, items or [])

    def _batch_deletion_targets(self, request: Request, ctx: ApiContext, body: bytes) -> list[str]:
        batch_id = _batch_id_of(request, body)
        if not batch_id:
            return []
        return self.ledger.invoice_ids_of_batch_payment(ctx.tenant.tenant_id, batch_id)

    def _deletion_targets(self, request: Request, ctx: ApiContext, body: bytes) -> list[str]:
        found = self.ledger.invoice_id_of_payment(
            ctx.tenant.tenant_id, request.path_params["item_id"]
        )
        return [found] if found else []

    # ------------------------------------------------------------------ helpers

    def _envelope(
        self, key: str, items: list[Any], pagination: dict[str, int] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Id": str(uuid.uuid4()),
            "Status": "OK",
            "ProviderName": PROVIDER_NAME,
            "DateTimeUTC": ms_date_plain(self.state.clock.now()),
        }
        if pagination is not None:
            out["pagination"] = pagination
        out[key] = items
        return out

    def _envelope_response(
        self, key: str, fragments: list[str], pagination: dict[str, int] | None = None
    ) -> Response:
        """The envelope around items that are JSON text already (cached renderings)."""
        head = dumps(self._envelope(key, [], pagination))
        empty = f'"{key}":[]}}'
        text = head[: -len(empty)] + f'"{key}":[' + ",".join(fragments) + "]}"
        return Response(text, media_type=JSON)

    @staticmethod
    def _list_query(request: Request, params: dict[str, str], *, paged: bool) -> ListQuery:
        page: int | None = None
        raw_page = params.get("page")
        if paged and raw_page is not None:
            page = int(raw_page) if raw_page.strip().isdigit() else 1
        # RFC 9110 §13.1.3: an invalid If-Modified-Since is ignored.
        ims = request.headers.get("if-modified-since")
        return ListQuery(
            where=params.get("where"),
            order=params.get("order"),
            page=page,
            page_size=ListQuery.clamp_page_size(params.get("pagesize")),
            modified_since=parse_http_datetime(ims) if ims else None,
        )

    # ------------------------------------------------------------------ invoices

    def _get_invoices(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        params = _params(request)
        tenant = ctx.tenant
        query = self._list_query(request, params, paged=True)
        extra = []
        ids, numbers = _csv(params.get("ids")), _csv(params.get("invoicenumbers"))
        contacts, statuses = _csv(params.get("contactids")), _csv(params.get("statuses"))
        if ids is not None:
            extra.append(lambda inv: inv.invoice_id in ids)
        if numbers is not None:
            extra.append(lambda inv: inv.number.lower() in numbers)
        if contacts is not None:
            extra.append(lambda inv: inv.contact_id in contacts)
        if statuses is not None:
            extra.append(lambda inv: inv.status.lower() in statuses)
        cache_key = (
            tenant.tenant_id,
            "invoices",
            *(tuple(v) if v is not None else None for v in (ids, numbers, contacts, statuses)),
        )
        with self.ledger.lock:
            try:
                page = run_query(
                    tenant.invoices.values(),
                    invoice_table(tenant),
                    query,
                    id_of=lambda inv: inv.invoice_id,
                    updated_of=lambda inv: inv.updated,
                    extra=extra,
                    cache=self._queries,
                    cache_key=cache_key,
                    version=tenant.version,
                )
            except WhereError as exc:
                return _error(16, "QueryParseException", str(exc))
            # Without paging Xero leaves out line items to keep the response small.
            lines = query.page is not None
            items = [invoice_json(tenant, inv, line_items=lines) for inv in page.items]
        return self._envelope_response("Invoices", items, page.pagination)

    def _get_invoice(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        tenant = ctx.tenant
        with self.ledger.lock:
            try:
                invoice = self.ledger.find_invoice(tenant, request.path_params["item_id"])
            except KeyError:
                return _text(NOT_FOUND_TEXT, 404)
            return self._envelope_response("Invoices", [invoice_json(tenant, invoice)])

    # ------------------------------------------------------------------ payments

    def _get_payments(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        tenant = ctx.tenant
        query = self._list_query(request, _params(request), paged=True)
        with self.ledger.lock:
            try:
                page: Page = run_query(
                    tenant.payments.values(),
                    payment_table(tenant),
                    query,
                    id_of=lambda p: p.payment_id,
                    updated_of=lambda p: p.updated,
                    cache=self._queries,
                    cache_key=(tenant.tenant_id, "payments"),
                    version=tenant.version,
                )
            except WhereError as exc:
                return _error(16, "QueryParseException", str(exc))
            items = [render_payment(tenant, p) for p in page.items]
        return json_response(self._envelope("Payments", items, page.pagination))

    def _get_payment(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        try:
            payment = self.ledger.find_payment(ctx.tenant.tenant_id, request.path_params["item_id"])
        except KeyError:
            return _text(NOT_FOUND_TEXT, 404)
        return json_response(self._envelope("Payments", [payment]))

    def _create_payments(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        parsed = _parse_body(body)
        if isinstance(parsed, Response):
            return parsed
        items = _unwrap(parsed, "Payments")
        if items is None:
            return _post_data_invalid('expected a Payment object or {"Payments": [...]}')
        problem = payment_body_errors(items)
        if problem is not None:
            return _post_data_invalid(problem)
        summarize = _is_true(_params(request).get("summarizeerrors"), True)
        batch = self.ledger.create_payments(ctx.tenant.tenant_id, items, summarize_errors=summarize)
        if not batch.ok:
            return _validation_error(batch.elements)
        return json_response(self._envelope("Payments", batch.elements))

    def _delete_payment(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        payment_id = request.path_params["item_id"]
        try:
            current = self.ledger.find_payment(ctx.tenant.tenant_id, payment_id)
        except KeyError:
            return _text(NOT_FOUND_TEXT, 404)
        parsed = _parse_body(body)
        if isinstance(parsed, Response):
            return parsed
        items = _unwrap(parsed, "Payments")
        if not items or not isinstance(items[0], dict):
            return _post_data_invalid('expected {"Status": "DELETED"}')
        status = next((v for k, v in items[0].items() if k.lower() == "status"), None)
        if not isinstance(status, str) or status.upper() != "DELETED":
            current["HasValidationErrors"] = True
            current["ValidationErrors"] = [{"Message": MSG_MODIFY}]
            return _validation_error([current])
        ok, element = self.ledger.delete_payment(ctx.tenant.tenant_id, payment_id)
        if not ok:
            return _validation_error([element])
        return json_response(self._envelope("Payments", [element]))

    # ------------------------------------------------------------------ batch payments

    def _get_batch_payments(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        tenant = ctx.tenant
        # The spec gives GET /BatchPayments where, order and If-Modified-Since, no paging.
        query = self._list_query(request, _params(request), paged=False)
        with self.ledger.lock:
            try:
                page = run_query(
                    tenant.batch_payments.values(),
                    batch_payment_table(tenant),
                    query,
                    id_of=lambda b: b.batch_payment_id,
                    updated_of=lambda b: b.updated,
                )
            except WhereError as exc:
                return _error(16, "QueryParseException", str(exc))
            items = [render_batch_payment(tenant, b) for b in page.items]
        return json_response(self._envelope("BatchPayments", items))

    def _get_batch_payment(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        try:
            batch = self.ledger.find_batch_payment(
                ctx.tenant.tenant_id, request.path_params["item_id"]
            )
        except KeyError:
            return _text(NOT_FOUND_TEXT, 404)
        return json_response(self._envelope("BatchPayments", [batch]))

    def _create_batch_payments(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        parsed = _parse_body(body)
        if isinstance(parsed, Response):
            return parsed
        items = _unwrap(parsed, "BatchPayments")
        if items is None:
            return _post_data_invalid('expected a BatchPayment object or {"BatchPayments": [...]}')
        problem = batch_payment_body_errors(items)
        if problem is not None:
            return _post_data_invalid(problem)
        summarize = _is_true(_params(request).get("summarizeerrors"), True)
        batch = self.ledger.create_batch_payments(
            ctx.tenant.tenant_id, items, summarize_errors=summarize
        )
        if not batch.ok:
            return _validation_error(batch.elements)
        return json_response(self._envelope("BatchPayments", batch.elements))

    def _delete_batch_payment(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        parsed = _parse_body(body)
        if isinstance(parsed, Response):
            return parsed
        batch_id = _batch_id_of(request, body)
        if not batch_id:
            return _post_data_invalid('expected {"BatchPaymentID": "…", "Status": "DELETED"}')
        tenant_id = ctx.tenant.tenant_id
        try:
            current = self.ledger.find_batch_payment(tenant_id, batch_id)
        except KeyError:
            return _text(NOT_FOUND_TEXT, 404)
        items = _unwrap(parsed, "BatchPayments")
        fields = items[0] if items and isinstance(items[0], dict) else {}
        status = next((v for k, v in fields.items() if k.lower() == "status"), None)
        if not isinstance(status, str) or status.upper() != "DELETED":
            # Batch payments cannot be edited, only deleted (sandbox wording).
            current["ValidationErrors"] = [{"Message": MSG_MODIFY}]
            return _validation_error([current])
        ok, element = self.ledger.delete_batch_payment(tenant_id, batch_id)
        if not ok:
            return _validation_error([element])
        return json_response(self._envelope("BatchPayments", [element]))

    # ------------------------------------------------------------------ accounts, contacts

    def _get_accounts(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        tenant = ctx.tenant
        params = _params(request)
        query = self._list_query(request, params, paged=False)
        if not query.order:
            query = ListQuery(query.where, "Code ASC", None, query.page_size, query.modified_since)
        with self.ledger.lock:
            try:
                page = run_query(
                    tenant.accounts.values(),
                    account_table(),
                    query,
                    id_of=lambda a: a.account_id,
                    updated_of=lambda a: a.updated,
                    cache=self._queries,
                    cache_key=(tenant.tenant_id, "accounts"),
                    version=tenant.version,
                )
            except WhereError as exc:
                return _error(16, "QueryParseException", str(exc))
            items = [render_account(a) for a in page.items]
        return json_response(self._envelope("Accounts", items))

    def _get_account(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        wanted = request.path_params["item_id"].lower()
        with self.ledger.lock:
            account = ctx.tenant.accounts.get(wanted)
            if account is None:
                return _text(NOT_FOUND_TEXT, 404)
            return json_response(self._envelope("Accounts", [render_account(account)]))

    def _get_contacts(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        tenant = ctx.tenant
        params = _params(request)
        query = self._list_query(request, params, paged=True)
        extra = []
        ids = _csv(params.get("ids"))
        if ids is not None:
            extra.append(lambda c: c.contact_id in ids)
        archived = _is_true(params.get("includearchived"), False)
        if not archived:
            extra.append(lambda c: c.status != "ARCHIVED")
        term = (params.get("searchterm") or "").strip().casefold()
        if term:
            extra.append(
                lambda c: any(
                    term in field.casefold()
                    for field in (c.name, c.first_name, c.last_name, c.email, c.contact_number)
                )
            )
        cache_key = (
            tenant.tenant_id,
            "contacts",
            None if ids is None else tuple(ids),
            archived,
            term,
        )
        with self.ledger.lock:
            try:
                page = run_query(
                    tenant.contacts.values(),
                    contact_table(),
                    query,
                    id_of=lambda c: c.contact_id,
                    updated_of=lambda c: c.updated,
                    extra=extra,
                    cache=self._queries,
                    cache_key=cache_key,
                    version=tenant.version,
                )
            except WhereError as exc:
                return _error(16, "QueryParseException", str(exc))
            items = [render_contact(c) for c in page.items]
        return json_response(self._envelope("Contacts", items, page.pagination))

    def _get_contact(self, request: Request, ctx: ApiContext, body: bytes) -> Response:
        wanted = request.path_params["item_id"].lower()
        with self.ledger.lock:
            contact = ctx.tenant.contacts.get(wanted)
            if contact is None:
                return _text(NOT_FOUND_TEXT, 404)
            return json_response(self._envelope("Contacts", [render_contact(contact)]))


def _net_datetime(moment: datetime) -> str:
    """``2019-12-07T18:46:19.5165400``: the identity API's 7-digit, offset-less form."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0"


def _post_data_invalid(detail: str) -> Response:
    return _error(14, "PostDataInvalidException", f"JSON for post data was invalid, {detail}")


def _parse_body(body: bytes) -> Any:
    try:
        return loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return _post_data_invalid(f"Error parsing JSON: {exc}")


def _unwrap(parsed: Any, key: str) -> list[Any] | None:
    """Accept ``{"Payments": [...]}``, a single unwrapped object, or a bare list."""
    if isinstance(parsed, list):
        return parsed
    if not isinstance(parsed, dict):
        return None
    for name, value in parsed.items():
        if name.lower() == key.lower():
            return value if isinstance(value, list) else None
    return [parsed]


def _batch_id_of(request: Request, body: bytes) -> str | None:
    """The batch payment a delete names: in the URL, else ``BatchPaymentID`` in the body."""
    in_url = request.path_params.get("item_id")
    if in_url:
        return str(in_url)
    parsed = _parse_body(body)
    items = None if isinstance(parsed, Response) else _unwrap(parsed, "BatchPayments")
    first = items[0] if items and isinstance(items[0], dict) else {}
    found = next((v for k, v in first.items() if k.lower() == "batchpaymentid"), None)
    return found if isinstance(found, str) and found else None


def _to_cached(response: Response) -> CachedResponse:
    skip = {"content-length", "content-type"}
    headers = {k: v for k, v in response.headers.items() if k.lower() not in skip}
    return CachedResponse(response.status_code, bytes(response.body), response.media_type, headers)


def _replay(cached: CachedResponse) -> Response:
    headers = dict(cached.headers)
    headers["X-Sandbox-Idempotent-Replay"] = "true"
    return Response(
        cached.body, status_code=cached.status, headers=headers, media_type=cached.media_type
    )


async def _drop(request: Request) -> Response:
    dropper: Callable[[], Awaitable[None]] | None = request.scope.get(DROP_SCOPE_KEY)
    if dropper is None:
        raise RuntimeError("this server cannot drop connections (not run by the sandbox app)")
    await dropper()
    # Nothing reaches the client any more; the app's send guard discards this.
    return Response(status_code=204)
