"""Admin routes of the QuickBooks ledger, mounted at ``/_sandbox/quickbooks`` (loopback only).

=============================================  ==========================================
``GET /``                                      app credentials, realms, refresh tokens,
                                               verifier token, rate limits
``GET/POST /webhooks``                         list (with recent deliveries) / register
                                               ``{"url", "format": "legacy"|"cloudevents",
                                               "realm_ids": [...]}`` → 201 + verifier token
``DELETE /webhooks/{id}``                      unregister
``POST /webhooks/flush``                       wait until queued events are delivered
``GET/POST /rate_limits``                      read / change (``{"minute": 3}``,
                                               ``{"enabled": false}``)
``GET /{realm}/{invoices|bills|customers|      entity lists; payments and bill payments
vendors|accounts|payments|billpayments}``      include deleted ones (``"status":"Deleted"``)
``POST /{realm}/invoices``, ``/{realm}/bills`` add one (``{"total", "balance", "currency",
                                               "customer_id"|"vendor_id", "doc_number"}``)
``POST /{realm}/invoices/{id}/payments``       pay it as a person in the UI would
                                               (``{"amount", "private_note"}``)
``POST /{realm}/bills/{id}/payments``          pay a bill by check (``{"amount"}``)
``POST /{realm}/invoices/{id}/edit``           sparse edit ``{"PrivateNote": …}`` (bumps
                                               SyncToken; ``{}`` just re-saves)
``POST /{realm}/invoices/{id}/void|delete``    void / delete it
``POST /{realm}/revoke``                       revoke the realm's OAuth grant
=============================================  ==========================================
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from connector.sandbox.quickbooks.ratelimit import QboRateLimits
from connector.sandbox.wire import dumps, loads

if TYPE_CHECKING:
    from connector.sandbox.quickbooks.ledger import QuickBooksLedger

__all__ = ["create_quickbooks_admin_routes"]

Endpoint = Callable[[Request], Awaitable[Response]]


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


def _is_loopback(request: Request) -> bool:
    if request.client is None:
        return True
    host = request.client.host
    if host in {"localhost", "testclient"}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded(endpoint: Endpoint) -> Endpoint:
    async def handler(request: Request) -> Response:
        if not _is_loopback(request):
            return _json({"error": "the sandbox admin API only answers loopback clients"}, 403)
        try:
            return await endpoint(request)
        except KeyError as exc:
            return _json({"error": f"not found: {exc.args[0] if exc.args else ''}"}, 404)
        except (ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, 400)

    return handler


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    data = loads(raw) if raw.strip() else {}
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def create_quickbooks_admin_routes(ledger: QuickBooksLedger) -> list[BaseRoute]:
    """The admin routes (relative to ``/_sandbox/quickbooks``)."""

    async def overview(request: Request) -> Response:
        return _json(ledger.overview())

    async def webhooks(request: Request) -> Response:
        if request.method == "POST":
            body = await _body(request)
            url = body.get("url")
            if not isinstance(url, str):
                raise ValueError("url is required")
            realm_ids = body.get("realm_ids")
            reg = ledger.register_webhook(
                url, str(body.get("format", "legacy")), list(realm_ids) if realm_ids else None
            )
            return _json(reg, 201)
        return _json(
            {
                "verifier_token": ledger.webhook_verifier_token,
                "registrations": [r.as_dict() for r in ledger.webhooks.registrations()],
                "deliveries": ledger.webhooks.deliveries(),
            }
        )

    async def webhook_delete(request: Request) -> Response:
        if not ledger.webhooks.unregister(request.path_params["registration_id"]):
            raise KeyError(request.path_params["registration_id"])
        return _json({"deleted": True})

    async def webhook_flush(request: Request) -> Response:
        body = await _body(request)
        timeout = float(body.get("timeout", 5.0))
        flushed = await asyncio.to_thread(ledger.webhooks.flush, timeout)
        return _json({"flushed": flushed})

    async def rate_limits(request: Request) -> Response:
        if request.method == "POST":
            body = await _body(request)
            current = _limits_dict(ledger.rate_limiter.limits)
            ledger.rate_limiter.limits = QboRateLimits.coerce({**current, **body})
        return _json(_limits_dict(ledger.rate_limiter.limits))

    async def listing(request: Request) -> Response:
        realm_id = request.path_params["realm"]
        what = request.path_params["what"]
        ledger.realm(realm_id)
        lists: dict[str, Callable[[], list[dict[str, Any]]]] = {
            "invoices": lambda: ledger.invoices(realm_id),
            "bills": lambda: ledger.bills(realm_id),
            "payments": lambda: ledger.payments(realm_id, include_deleted=True),
            "billpayments": lambda: ledger.bill_payments(realm_id, include_deleted=True),
            "customers": lambda: ledger.customers(realm_id),
            "vendors": lambda: ledger.vendors(realm_id),
            "accounts": lambda: ledger.accounts(realm_id),
        }
        if what not in lists:
            raise KeyError(what)
        return _json(lists[what]())

    async def add(request: Request) -> Response:
        realm_id = request.path_params["realm"]
        what = request.path_params["what"]
        body = await _body(request)
        total = _decimal(body.get("total")) or Decimal("100.00")
        if what == "invoices":
            created = ledger.add_invoice(
                realm_id,
                total=total,
                balance=_decimal(body.get("balance")),
                currency=str(body.get("currency", "USD")),
                customer_id=body.get("customer_id"),
                doc_number=body.get("doc_number"),
            )
        elif what == "bills":
            created = ledger.add_bill(
                realm_id,
                total=total,
                balance=_decimal(body.get("balance")),
                currency=str(body.get("currency", "USD")),
                vendor_id=body.get("vendor_id"),
            )
        else:
            raise KeyError(what)
        return _json(created, 201)

    async def pay(request: Request) -> Response:
        realm_id = request.path_params["realm"]
        what, doc_id = request.path_params["what"], request.path_params["doc_id"]
        body = await _body(request)
        amount = _decimal(body.get("amount"))
        if amount is None:
            raise ValueError("amount is required")
        if what == "invoices":
            note = body.get("private_note")
            paid = ledger.apply_payment(realm_id, doc_id, amount, private_note=note)
        elif what == "bills":
            paid = ledger.apply_bill_payment(realm_id, doc_id, amount)
        else:
            raise KeyError(what)
        return _json(paid, 201)

    async def invoice_action(request: Request) -> Response:
        realm_id = request.path_params["realm"]
        doc_id, action = request.path_params["doc_id"], request.path_params["action"]
        if action == "edit":
            return _json(ledger.edit_invoice(realm_id, doc_id, **(await _body(request))))
        if action == "void":
            return _json(ledger.void_invoice(realm_id, doc_id))
        if action == "delete":
            ledger.delete_invoice(realm_id, doc_id)
            return _json({"deleted": True})
        raise KeyError(action)

    async def revoke(request: Request) -> Response:
        ledger.revoke_grant(request.path_params["realm"])
        return _json({"revoked": True})

    def route(path: str, endpoint: Endpoint, methods: list[str]) -> Route:
        return Route(path, _guarded(endpoint), methods=methods)

    return [
        route("/", overview, ["GET"]),
        route("/webhooks", webhooks, ["GET", "POST"]),
        route("/webhooks/flush", webhook_flush, ["POST"]),
        route("/webhooks/{registration_id}", webhook_delete, ["DELETE"]),
        route("/rate_limits", rate_limits, ["GET", "POST"]),
        route("/{realm}/revoke", revoke, ["POST"]),
        route("/{realm}/{what}", listing, ["GET"]),
        route("/{realm}/{what}", add, ["POST"]),
        route("/{realm}/{what}/{doc_id}/payments", pay, ["POST"]),
        route("/{realm}/invoices/{doc_id}/{action}", invoice_action, ["POST"]),
    ]


def _limits_dict(limits: QboRateLimits) -> dict[str, Any]:
    return {
        "minute": limits.minute,
        "concurrent": limits.concurrent,
        "batch_minute": limits.batch_minute,
        "second": limits.second,
        "enabled": limits.enabled,
    }
