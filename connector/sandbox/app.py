"""The sandbox ASGI application: provider emulators plus the ``/_sandbox`` admin API.

Admin endpoints (no authentication; they answer loopback clients only, since the
sandbox is meant to listen on 127.0.0.1):

=======================================  ====================================================
``GET /_sandbox``                        overview: clock, faults, rate limits, Xero app/tenants
``GET/POST /_sandbox/clock``             read / ``{"advance_seconds": 420}`` and/or
                                         ``{"time_scale": 60}``
``GET/POST /_sandbox/faults``            read / update (``{"drop_after_commit_next": 1}``,
                                         ``{"spec": "a=0.2,b=1"}``, ``{"reset": true}``)
``GET /_sandbox/xero``                   client id/secret, tenants, current refresh tokens
``GET /_sandbox/xero/{tenant}/invoices`` all invoices and bills, full form
``GET /_sandbox/xero/{tenant}/payments`` all payments, deleted ones included
``GET /_sandbox/xero/{tenant}/contacts`` all contacts, archived ones included
``POST /_sandbox/xero/{tenant}/revoke``  revoke the tenant's OAuth grant
``GET /_sandbox/xero/webhooks``          the webhook: intent-to-receive result, deliveries
``POST /_sandbox/xero/webhooks``         register ``{"url": …, "key": …}`` (optional
                                         ``"categories": ["INVOICE", "CONTACT"]``); runs
                                         intent to receive before answering
``DELETE /_sandbox/xero/webhooks``       unregister
=======================================  ====================================================
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Message, Receive, Scope, Send

from connector.sandbox.netsuite import create_netsuite_admin_routes, create_netsuite_app
from connector.sandbox.quickbooks import create_quickbooks_admin_routes, create_quickbooks_app
from connector.sandbox.state import SandboxState
from connector.sandbox.wire import loads
from connector.sandbox.xero.routes import API_PREFIX, DROP_SCOPE_KEY, XeroRoutes, json_response
from connector.sandbox.xero.webhooks import CATEGORIES as WEBHOOK_CATEGORIES

__all__ = ["SandboxApp", "create_app"]


class SandboxApp(Starlette):
    """Starlette app that can drop a client connection without answering.

    For every HTTP request it puts an ``async () -> None`` under
    :data:`~connector.sandbox.xero.routes.DROP_SCOPE_KEY` in the scope. Calling it closes
    the TCP connection underneath the request; everything the app sends afterwards is
    discarded, so the client sees the connection end with no response at all.

    It reaches the socket through the server's own ``send`` callable: with uvicorn (both
    the h11 and the httptools protocol) that is a bound method of the connection's
    ``RequestResponseCycle``, which holds the asyncio ``transport``. This has to happen
    here, outside Starlette's middleware, because the middleware wraps ``send``.
    """

    #: The state this app serves (set by :func:`create_app`).
    sandbox_state: SandboxState

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        dropped = False

        async def drop() -> None:
            nonlocal dropped
            dropped = True
            await _close_connection(send)

        async def guarded_send(message: Message) -> None:
            if not dropped:
                await send(message)

        scope[DROP_SCOPE_KEY] = drop
        await super().__call__(scope, receive, guarded_send)


async def _close_connection(send: Send) -> None:
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("cannot reach the connection's transport to drop it (not uvicorn?)")
    transport.close()
    # uvicorn's connection_lost callback marks the cycle disconnected one loop turn
    # later; returning before that would make uvicorn log "ASGI callable returned
    # without starting response" and try to send a 500 on the dead connection.
    for _ in range(200):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0.001)


def _is_loopback(request: Request) -> bool:
    if request.client is None:
        return True  # in-process transport (e.g. httpx.ASGITransport)
    host = request.client.host
    if host in {"localhost", "testclient"}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Endpoint = Callable[[Request], Awaitable[Response]]


def _admin(endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        if not _is_loopback(request):
            return json_response(
                {"error": "the sandbox admin API only answers loopback clients"}, 403
            )
        return await endpoint(request)

    return guarded


async def _json_body(request: Request) -> Any:
    body = await request.body()
    return loads(body) if body.strip() else {}


def create_app(state: SandboxState) -> SandboxApp:
    """Build the ASGI app serving ``state``.

    Args:
        state: The sandbox state; tests may keep mutating it while the app serves.

    Returns:
        A Starlette application (a :class:`SandboxApp`).
    """
    xero = XeroRoutes(state)

    def overview() -> dict[str, Any]:
        cfg = state.rate_limiter.config
        return {
            "clock": state.clock.as_dict(),
            "faults": state.faults.as_dict(),
            "rate_limits": {
                "enabled": cfg.enabled,
                "minute": cfg.minute,
                "day": cfg.day,
                "concurrent": cfg.concurrent,
                "app_minute": cfg.app_minute,
            },
            "xero": xero_info(),
            "quickbooks": state.quickbooks.overview() if state.quickbooks else None,
            "netsuite": state.netsuite.overview() if state.netsuite else None,
            "xero_webhooks": {
                key: value
                for key, value in state.xero.webhooks.status().items()
                if key != "deliveries"  # the full list is on /_sandbox/xero/webhooks
            },
        }

    def xero_info() -> dict[str, Any]:
        ledger = state.xero
        return {
            "client_id": ledger.client_id,
            "client_secret": ledger.client_secret,
            "tenants": [
                {
                    "tenant_id": tid,
                    "name": ledger.tenant_name(tid),
                    "refresh_token": ledger.refresh_token_for(tid),
                }
                for tid in ledger.tenant_ids
            ],
        }

    async def root(request: Request) -> Response:
        return json_response(overview())

    async def clock(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await _json_body(request)
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object")
                unknown = set(body) - {"advance_seconds", "time_scale"}
                if unknown:
                    raise ValueError(f"unknown clock setting(s): {', '.join(sorted(unknown))}")
                seconds = float(body.get("advance_seconds", 0))
                if seconds < 0:
                    raise ValueError("the sandbox clock only moves forward")
                if "time_scale" in body:
                    scale = body["time_scale"]
                    if isinstance(scale, Decimal):
                        scale = float(scale)
                    state.clock.time_scale = scale
                state.clock.advance(seconds)
            except (ValueError, TypeError) as exc:
                return json_response({"error": str(exc)}, 400)
        return json_response(state.clock.as_dict())

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await _json_body(request)
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object")
                body = dict(body)
                if body.pop("reset", False):
                    state.faults.reset()
                spec = body.pop("spec", None)
                if spec is not None:
                    state.faults.parse(str(spec))
                state.faults.update(body)
            except ValueError as exc:
                return json_response({"error": str(exc)}, 400)
        return json_response(state.faults.as_dict())

    async def xero_overview(request: Request) -> Response:
        return json_response(xero_info())

    async def xero_payments(request: Request) -> Response:
        try:
            return json_response(
                state.xero.payments(request.path_params["tenant_id"], include_deleted=True)
            )
        except KeyError:
            return json_response({"error": "unknown tenant"}, 404)

    async def xero_invoices(request: Request) -> Response:
        try:
            return json_response(state.xero.invoices(request.path_params["tenant_id"]))
        except KeyError:
            return json_response({"error": "unknown tenant"}, 404)

    async def xero_contacts(request: Request) -> Response:
        try:
            return json_response(state.xero.contacts(request.path_params["tenant_id"]))
        except KeyError:
            return json_response({"error": "unknown tenant"}, 404)

    async def xero_webhooks(request: Request) -> Response:
        hooks = state.xero.webhooks
        if request.method == "DELETE":
            await asyncio.to_thread(hooks.unregister)
        elif request.method == "POST":
            try:
                body = await _json_body(request)
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object")
                url, key = body.get("url"), body.get("key")
                if not isinstance(url, str) or not isinstance(key, str):
                    raise ValueError('expected {"url": "...", "key": "..."}')
                categories = body.get("categories", list(WEBHOOK_CATEGORIES))
                if not isinstance(categories, list) or not all(
                    isinstance(c, str) for c in categories
                ):
                    raise ValueError("categories must be a list of strings")
                resource_base = str(request.base_url).rstrip("/") + API_PREFIX
                # The handshake POSTs to the receiver and waits for its answers: off the
                # event loop, so a receiver served by this very process still answers.
                status = await asyncio.to_thread(
                    hooks.register,
                    url,
                    key,
                    resource_base_url=resource_base,
                    categories=categories,
                )
            except ValueError as exc:
                return json_response({"error": str(exc)}, 400)
            return json_response(status)
        return json_response(hooks.status())

    async def xero_revoke(request: Request) -> Response:
        try:
            state.xero.revoke_grant(request.path_params["tenant_id"])
        except KeyError:
            return json_response({"error": "unknown tenant"}, 404)
        return json_response({"revoked": True})

    routes: list[BaseRoute] = [
        Route("/_sandbox", _admin(root), methods=["GET"]),
        Route("/_sandbox/clock", _admin(clock), methods=["GET", "POST"]),
        Route("/_sandbox/faults", _admin(faults), methods=["GET", "POST"]),
        Route("/_sandbox/xero", _admin(xero_overview), methods=["GET"]),
        Route("/_sandbox/xero/{tenant_id}/invoices", _admin(xero_invoices), methods=["GET"]),
        Route("/_sandbox/xero/{tenant_id}/payments", _admin(xero_payments), methods=["GET"]),
        Route("/_sandbox/xero/{tenant_id}/contacts", _admin(xero_contacts), methods=["GET"]),
        Route("/_sandbox/xero/{tenant_id}/revoke", _admin(xero_revoke), methods=["POST"]),
        Route(
            "/_sandbox/xero/webhooks",
            _admin(xero_webhooks),
            methods=["GET", "POST", "DELETE"],
        ),
        *xero.routes(),
    ]
    if state.quickbooks is not None:
        routes += [
            Mount("/quickbooks", app=create_quickbooks_app(state.quickbooks)),
            Mount("/_sandbox/quickbooks", routes=create_quickbooks_admin_routes(state.quickbooks)),
        ]
    if state.netsuite is not None:
        routes += [
            Mount("/netsuite", app=create_netsuite_app(state.netsuite)),
            Mount("/_sandbox/netsuite", routes=create_netsuite_admin_routes(state.netsuite)),
        ]
    app = SandboxApp(routes=routes)
    app.sandbox_state = state
    return app
