"""HTTP emulation of QuickBooks Online, mounted at ``/quickbooks``.

``/quickbooks`` stands for ``https://quickbooks.api.intuit.com`` (the data API,
``/v3/company/{realmId}/…``) and, for simplicity, for Intuit's OAuth hosts too:

====================================================  ===========================================
``POST /oauth2/v1/tokens/bearer``                     refresh-token grant (HTTP Basic or
                                                      client_secret_post)
``POST /v2/oauth2/tokens/revoke``                     revoke a grant (also ``/oauth2/v1/…``)
``GET /.well-known/openid_configuration``             discovery (also ``openid_sandbox_…``),
                                                      URLs pointing at the sandbox
``GET /op/v1/jwks``                                   keys of the ``id_token`` signatures
``GET /v1/openid_connect/userinfo``                   the connecting user
``GET /v3/company/{realm}/{entity}/{id}``             read
``POST /v3/company/{realm}/{entity}``                 create / update / ``?operation=delete`` /
                                                      ``?operation=void`` or
                                                      ``?operation=update&include=void``
``GET|POST /v3/company/{realm}/query``                query (``?query=`` or an
                                                      ``application/text`` body)
``POST /v3/company/{realm}/batch``                    batch, ≤ 30 items
``GET /v3/company/{realm}/cdc``                       change data capture
``GET /v3/company/{realm}/companyinfo/{realm}``       company info; ``/preferences`` too
====================================================  ===========================================

Pipeline of a data call: bearer token (401, or 403 for another realm's token) → rate
limits (429) → for writes (POSTs other than query): ``requestid`` length check, fault
injection, ``requestid`` replay, the write. Every answer carries an ``intuit_tid``.

Bodies that are not the ``Fault`` envelope (sources in the fact sheet and public reports):

* 401/403 come from Intuit's gateway in its lower-case envelope, as captured from the
  live API (public client code): ``{"warnings":null,"intuitObject":null,"fault":{"error":
  [{"message":"message=AuthenticationFailed; errorCode=003200; statusCode=401","detail":
  "Token expired: AB0…","code":"3200","element":null}],"type":"AUTHENTICATION"},"report":
  null,…,"time":1730024394085,"status":null,"cdcresponse":[]}``; a token for another
  realm gets 403 ``ApplicationAuthorizationFailed`` 3100, type ``SERVICE``. Details other
  than "Token expired" are sandbox wording; ``WWW-Authenticate: Bearer realm="Intuit",
  error="invalid_token"`` on 401 is a sandbox choice.
* 429: ``Fault`` code 3001 type ``SERVICE`` (fact sheet §4), as JSON — or as the XML
  QuickBooks sometimes sends, when ``ledger.throttle_format == "xml"`` — with
  ``Retry-After`` (the fact sheet documents no throttle headers; ``Retry-After`` is only
  reported by a user, §8).

Faults (:mod:`connector.sandbox.faults`), drawn once per write call (a batch is one call;
replays included), and what QuickBooks does here:

``token_revoked``
    The realm's grant is revoked; 401 (gateway body, 3200). No quota used.
``rate_limit``
    429 / 3001 as above, ``Retry-After: 60``. Not processed, no quota used.
``error_before_commit``
    500 or 503 (from the seed) with a ``SystemFault`` 10000 body; nothing committed.
``drop_before_commit``
    The connection closes without an answer; nothing committed, requestid unused.
``paid_elsewhere``
    Before processing, each invoice/bill the write links to (or the invoice/bill being
    updated) is paid in full by a Payment/BillPayment without reference or requestid, as
    a person in the UI would; the write then typically fails 6000 (exceeds balance).
``concurrent_edit``
    Before processing, the entity being updated/voided/deleted (or, for a create, each
    linked invoice/bill) is saved again by "someone": SyncToken and LastUpdatedTime
    move, so a write carrying the old SyncToken fails 5010.
``ignore_idempotency``
    Processed as new even if the requestid was seen; the requestid store is untouched.
``drop_after_commit`` / ``error_500_after_commit``
    Committed, the 200 answer stored under the requestid, then the connection is dropped
    / answered 500 (SystemFault 10000). A retry with the same requestid replays the 200
    (sandbox choice: the fact sheet does not say what QuickBooks stores; the Xero
    emulator keeps the 500 instead).
``latency_ms``
    Writes that get past the refusals (processed or replayed) wait before answering.

Replays carry ``X-Sandbox-Idempotent-Replay: true`` (a sandbox header, as for Xero).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from connector.sandbox.quickbooks.auth import AuthFailure, TokenError, basic_credentials
from connector.sandbox.quickbooks.errors import (
    QboFault,
    invalid_property,
    required,
    system_error,
    unsupported,
)
from connector.sandbox.quickbooks.fmt import envelope_time
from connector.sandbox.quickbooks.ledger import BATCH_LIMIT, resource_kind
from connector.sandbox.quickbooks.requestids import StoredResponse
from connector.sandbox.wire import dumps, loads
from connector.sandbox.xero.routes import DROP_SCOPE_KEY

if TYPE_CHECKING:
    from connector.sandbox.quickbooks.ledger import QuickBooksLedger

__all__ = ["JSON", "QuickBooksRoutes", "create_quickbooks_app"]

JSON = "application/json;charset=UTF-8"
#: Fact sheet §5: requestid max 50 characters; in a batch max 36 with bIds of max 10.
REQUEST_ID_MAX = 50
BATCH_REQUEST_ID_MAX = 36
BATCH_BID_MAX = 10
THROTTLE_MESSAGE = "message=ThrottleExceeded; errorCode=003001; statusCode=429"
THROTTLE_DETAIL = "The request limit was reached.  Try again later"
REPLAY_HEADER = "X-Sandbox-Idempotent-Replay"

Write = tuple[str, str, Any]


def _tid() -> str:
    """An ``intuit_tid`` like ``1-6aa36f3e-7c887528297dc3cd2d23dbe2``."""
    raw = uuid.uuid4().hex
    return f"1-{raw[:8]}-{raw[8:32]}"


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, headers=dict(headers or {}), media_type=JSON)


def _request_id_fault(value: str, limit: int) -> QboFault:
    # sandbox wording; code 2130 from the fact sheet's error-code table
    return QboFault(
        "2130",
        "Invalid Request Id Format",
        f"The requestid {value!r} is {len(value)} characters long; it must be 1 to {limit} "
        "characters",
        element="requestid",
    )


class QuickBooksRoutes:
    """The Starlette routes of the QuickBooks emulator (relative to ``/quickbooks``)."""

    def __init__(self, ledger: QuickBooksLedger) -> None:
        self.ledger = ledger

    def routes(self) -> list[BaseRoute]:
        """Routes relative to the mount point."""
        api = "/v3/company/{realm}"
        return [
            Route("/oauth2/v1/tokens/bearer", self.token, methods=["POST"]),
            Route("/oauth2/v1/tokens/revoke", self.revoke, methods=["POST"]),
            Route("/v2/oauth2/tokens/revoke", self.revoke, methods=["POST"]),
            Route("/.well-known/openid_configuration", self.discovery, methods=["GET"]),
            Route("/.well-known/openid_configuration/", self.discovery, methods=["GET"]),
            Route("/.well-known/openid_sandbox_configuration", self.discovery, methods=["GET"]),
            Route("/.well-known/openid_sandbox_configuration/", self.discovery, methods=["GET"]),
            Route("/op/v1/jwks", self.jwks, methods=["GET"]),
            Route("/v1/openid_connect/userinfo", self.userinfo, methods=["GET"]),
            Route(api + "/{resource}", self.api, methods=["GET", "POST"]),
            Route(api + "/{resource}/{item}", self.api, methods=["GET", "POST"]),
        ]

    # ------------------------------------------------------------------ OAuth

    @staticmethod
    def base_url(request: Request) -> str:
        """``http://host:port/quickbooks`` as the client reached it."""
        return str(request.base_url).rstrip("/") + request.scope.get("root_path", "")

    def _now(self) -> str:
        return envelope_time(self.ledger.clock.now())

    async def _form(self, request: Request) -> dict[str, str]:
        body = (await request.body()).decode("utf-8", "replace")
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                parsed = loads(body) if body.strip() else {}
            except ValueError:
                return {}
            return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
        return dict(parse_qsl(body, keep_blank_values=True))

    def _client(self, request: Request, form: Mapping[str, str]) -> Response | None:
        basic = basic_credentials(request.headers.get("authorization"))
        client_id, secret = basic if basic else (form.get("client_id"), form.get("client_secret"))
        if self.ledger.auth.check_client(client_id, secret):
            return None
        return _json({"error": "invalid_client"}, 401, self._no_store())

    @staticmethod
    def _no_store() -> dict[str, str]:
        return {"Cache-Control": "no-store", "Pragma": "no-cache", "intuit_tid": _tid()}

    async def token(self, request: Request) -> Response:
        """``POST /oauth2/v1/tokens/bearer``: the refresh-token grant with rotation."""
        form = await self._form(request)
        refused = self._client(request, form)
        if refused is not None:
            return refused
        if form.get("grant_type") != "refresh_token":
            # The authorization-code flow needs a browser; the sandbox seeds grants instead.
            return _json({"error": "unsupported_grant_type"}, 400, self._no_store())
        refresh_token = form.get("refresh_token")
        if not refresh_token:
            return _json({"error": "invalid_request"}, 400, self._no_store())
        try:
            tokens = self.ledger.auth.refresh(refresh_token, self.base_url(request) + "/op/v1")
        except TokenError as exc:
            return _json(exc.body(), exc.status, self._no_store())
        return _json(tokens, 200, self._no_store())

    async def revoke(self, request: Request) -> Response:
        """``POST /v2/oauth2/tokens/revoke`` with ``{"token": …}``: revoke its grant."""
        form = await self._form(request)
        refused = self._client(request, form)
        if refused is not None:
            return refused
        token = form.get("token", "")
        if not token:
            return _json({"error": "invalid_request"}, 400, self._no_store())
        self.ledger.auth.revoke_token(token)
        return Response(status_code=200, headers=self._no_store())

    async def discovery(self, request: Request) -> Response:
        """The OpenID discovery document (shape of ``oauth_openid_discovery__dotnet_sdk.json``)."""
        base = self.base_url(request)
        return _json(
            {
                "issuer": base + "/op/v1",
                "authorization_endpoint": base + "/connect/oauth2",
                "token_endpoint": base + "/oauth2/v1/tokens/bearer",
                "userinfo_endpoint": base + "/v1/openid_connect/userinfo",
                "revocation_endpoint": base + "/v2/oauth2/tokens/revoke",
                "jwks_uri": base + "/op/v1/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile", "address", "phone"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "client_secret_basic",
                ],
                "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
            }
        )

    async def jwks(self, request: Request) -> Response:
        """The JWK set."""
        return _json(self.ledger.auth.jwks())

    async def userinfo(self, request: Request) -> Response:
        """``GET /v1/openid_connect/userinfo`` for a bearer token."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise AuthFailure("Authorization header missing")
            realm_id = self.ledger.auth.authenticate(token.strip())
        except AuthFailure as exc:
            return self._gateway_fault(401, "3200", "AuthenticationFailed", exc.detail)
        return _json(
            {
                "sub": self.ledger.auth.user_id(realm_id),
                "email": "sandbox.user@example.com",
                "emailVerified": True,
                "givenName": "Sandbox",
                "familyName": "User",
            }
        )

    # ------------------------------------------------------------------ data API

    def _gateway_fault(self, status: int, code: str, name: str, detail: str) -> Response:
        body: dict[str, Any] = {
            "warnings": None,
            "intuitObject": None,
            "fault": {
                "error": [
                    {
                        "message": f"message={name}; errorCode={int(code):06d}; statusCode={status}",
                        "detail": detail,
                        "code": code,
                        "element": None,
                    }
                ],
                "type": "AUTHENTICATION" if status == 401 else "SERVICE",
            },
            "report": None,
            "queryResponse": None,
            "batchItemResponse": [],
            "attachableResponse": [],
            "syncErrorResponse": None,
            "requestId": None,
            "time": int(self.ledger.clock.now().timestamp() * 1000),
            "status": None,
            "cdcresponse": [],
        }
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="Intuit", error="invalid_token"'
        return _json(body, status, headers)

    def _unauthorized(self, detail: str) -> Response:
        return self._gateway_fault(401, "3200", "AuthenticationFailed", detail)

    def _throttled(self, retry_after: int | None) -> Response:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        now = self._now()
        if self.ledger.throttle_format == "xml":
            xml = (
                '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{now}">'
                '<Fault type="SERVICE"><Error code="3001">'
                f"<Message>{escape(THROTTLE_MESSAGE)}</Message>"
                f"<Detail>{escape(THROTTLE_DETAIL)}</Detail>"
                "</Error></Fault></IntuitResponse>"
            )
            return Response(xml, 429, headers=headers, media_type="application/xml")
        fault = QboFault(
            "3001", THROTTLE_MESSAGE, THROTTLE_DETAIL, fault_type="SERVICE", status=429
        )
        return _json({"Fault": fault.fault(), "time": now}, 429, headers)

    def _fault(self, fault: QboFault) -> Response:
        return _json({"Fault": fault.fault(), "time": self._now()}, fault.status)

    def _ok(self, body: Mapping[str, Any]) -> Response:
        return _json({**body, "time": self._now()})

    async def api(self, request: Request) -> Response:
        """Every ``/v3/company/{realm}/…`` call."""
        realm_id = request.path_params["realm"]
        tid = _tid()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthFailure("Authorization header missing or not a bearer token")
            token_realm = self.ledger.auth.authenticate(token.strip())
        except AuthFailure as exc:
            response = self._unauthorized(exc.detail)
            response.headers["intuit_tid"] = tid
            return response
        if token_realm != realm_id:
            response = self._gateway_fault(403, "3100", "ApplicationAuthorizationFailed", "")
            response.headers["intuit_tid"] = tid
            return response
        resource = request.path_params["resource"].lower()
        decision = self.ledger.rate_limiter.acquire(realm_id, batch=resource == "batch")
        if not decision.allowed:
            response = self._throttled(decision.retry_after)
        else:
            try:
                response = await self._dispatch(request, realm_id, resource)
            finally:
                self.ledger.rate_limiter.release(realm_id)
        response.headers["intuit_tid"] = tid
        return response

    async def _dispatch(self, request: Request, realm_id: str, resource: str) -> Response:
        item = request.path_params.get("item")
        method = request.method
        try:
            if resource == "query":
                statement = request.query_params.get("query")
                if method == "POST":
                    body = (await request.body()).decode("utf-8", "replace")
                    statement = body if body.strip() else statement
                return self._ok({"QueryResponse": self.ledger.query(realm_id, statement or "")})
            if resource == "cdc":
                if method != "GET":
                    return _method_not_allowed(method)
                params = request.query_params
                return self._ok(
                    self.ledger.cdc(
                        realm_id, params.get("entities", ""), params.get("changedSince", "")
                    )
                )
            if resource == "batch":
                if method != "POST" or item is not None:
                    return _method_not_allowed(method)
                return await self._write(request, realm_id, None)
            if resource == "companyinfo":
                if method != "GET" or item is None:
                    return _method_not_allowed(method)
                return self._ok(self.ledger.read(realm_id, "CompanyInfo", item))
            if resource == "preferences":
                if method != "GET":
                    return _method_not_allowed(method)
                return self._ok(self.ledger.preferences(realm_id))
            kind = resource_kind(resource)
            if kind is None:
                # sandbox wording
                raise unsupported(f"The sandbox does not emulate the {resource} entity")
            if method == "GET":
                if item is None:
                    return _method_not_allowed(method)
                return self._ok(self.ledger.read(realm_id, kind, item))
            if item is not None:
                return _method_not_allowed(method)
            return await self._write(request, realm_id, kind)
        except QboFault as fault:
            return self._fault(fault)

    # ------------------------------------------------------------------ writes

    def _batch_items(self, data: Any, request_id: str | None) -> list[Mapping[str, Any]]:
        if not isinstance(data, Mapping) or not isinstance(data.get("BatchItemRequest"), list):
            raise required("BatchItemRequest")
        items = data["BatchItemRequest"]
        if len(items) > BATCH_LIMIT:
            # code from the fact sheet's error-code table; detail is sandbox wording
            raise QboFault(
                "1040",
                "Batch size exceeds allowed limit",
                f"The batch has {len(items)} items; the maximum is {BATCH_LIMIT}",
                element="BatchItemRequest",
            )
        seen: set[str] = set()
        for item in items:
            if not isinstance(item, Mapping):
                raise invalid_property("Each BatchItemRequest must be an object")
            bid = item.get("bId")
            if bid in (None, ""):
                raise required("bId")
            bid = str(bid)
            if bid in seen:
                raise invalid_property(f"Duplicate bId {bid}", "bId")  # sandbox wording
            seen.add(bid)
            if request_id is not None and len(bid) > BATCH_BID_MAX:
                raise QboFault(
                    "2130",
                    "Invalid Request Id Format",
                    f"bId {bid!r} is {len(bid)} characters long; with a requestid each bId "
                    f"must be at most {BATCH_BID_MAX} characters",
                    element="bId",
                )
        return list(items)

    def _batch_writes(self, items: list[Mapping[str, Any]]) -> list[Write]:
        out: list[Write] = []
        for item in items:
            if "Query" in item:
                continue
            try:
                kind, body = self.ledger.batch_entity(item)
            except QboFault:
                continue
            operation = str(item.get("operation") or "").lower()
            op = operation if operation in {"create", "delete"} else "update"
            if str(item.get("optionsData") or "").lower() == "void":
                op = "void"
            out.append((kind, op, body))
        return out

    async def _write(self, request: Request, realm_id: str, kind: str | None) -> Response:
        raw = await request.body()
        params = {k.lower(): v for k, v in request.query_params.multi_items()}
        request_id = params.get("requestid")
        limit = BATCH_REQUEST_ID_MAX if kind is None else REQUEST_ID_MAX
        if request_id is not None and not 0 < len(request_id) <= limit:
            return self._fault(_request_id_fault(request_id, limit))
        try:
            data = loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return self._fault(invalid_property("The request body is not valid JSON"))
        ledger = self.ledger
        if kind is None:
            try:
                items = self._batch_items(data, request_id)
            except QboFault as fault:
                return self._fault(fault)
            writes = self._batch_writes(items)
            op = "batch"
        else:
            items = []
            op = ledger.operation_of(params.get("operation"), params.get("include"), data)
            writes = [(kind, op, data)]

        decision = ledger.faults.draw()
        chosen = decision.chosen

        async def pause() -> None:
            if decision.latency_ms > 0:
                await asyncio.sleep(decision.latency_ms / 1000)

        # Refusals: nothing processed, no quota used, no latency (see connector.sandbox.faults).
        if chosen == "token_revoked":
            ledger.revoke_grant(realm_id)
            ledger.rate_limiter.refund(realm_id, batch=kind is None)
            return self._unauthorized("Token revoked")
        if chosen == "rate_limit":
            ledger.rate_limiter.refund(realm_id, batch=kind is None)
            return self._throttled(60)
        if chosen == "error_before_commit":
            return self._fault(system_error(ledger.fault_rng.choice((500, 503))))
        if chosen == "drop_before_commit":
            return await _drop(request)
        if chosen in {"paid_elsewhere", "concurrent_edit"}:
            ledger.interfere(realm_id, chosen, writes)

        owned = False
        if request_id is not None and chosen != "ignore_idempotency":
            cached = await ledger.request_ids.claim(realm_id, request_id)
            if cached is not None:
                await pause()
                return Response(
                    cached.body,
                    status_code=cached.status,
                    headers={**cached.headers, REPLAY_HEADER: "true"},
                    media_type=JSON,
                )
            owned = True
        try:
            try:
                if kind is None:
                    result: dict[str, Any] = {"BatchItemResponse": ledger.batch(realm_id, items)}
                else:
                    result = ledger.write(realm_id, kind, op, data)
                status, body = 200, {**result, "time": self._now()}
            except QboFault as fault:
                status, body = fault.status, {"Fault": fault.fault(), "time": self._now()}
            content = dumps(body).encode("utf-8")
            if owned and request_id is not None and status == 200:
                # With ignore_idempotency nothing is owned: the store is left as it was.
                ledger.request_ids.complete(realm_id, request_id, StoredResponse(status, content))
                owned = False
            await pause()
            if chosen == "drop_after_commit":
                return await _drop(request)
            if chosen == "error_500_after_commit":
                return self._fault(system_error(500))
            return Response(content, status_code=status, media_type=JSON)
        finally:
            if owned and request_id is not None:
                ledger.request_ids.abandon(realm_id, request_id)


def _method_not_allowed(method: str) -> Response:
    return Response(
        f"No resource method found for {method}", status_code=405, media_type="text/plain"
    )


async def _drop(request: Request) -> Response:
    dropper: Callable[[], Awaitable[None]] | None = request.scope.get(DROP_SCOPE_KEY)
    if dropper is None:
        raise RuntimeError("this server cannot drop connections (not run by the sandbox app)")
    await dropper()
    # Nothing reaches the client any more; the app's send guard discards this.
    return Response(status_code=204)


def create_quickbooks_app(ledger: QuickBooksLedger) -> Starlette:
    """The QuickBooks emulator as an ASGI app, to mount at ``/quickbooks``."""
    return Starlette(routes=QuickBooksRoutes(ledger).routes())
