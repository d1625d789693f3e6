"""Admin endpoints of the NetSuite ledger, mounted at ``/_sandbox/netsuite``.

No authentication; like the rest of ``/_sandbox`` they answer loopback clients only.

==============================================  ===============================================
``GET  /``                                      accounts, client ids, certificate ids, counts
``GET  /{acct}/credentials``                    every credential, the private key PEM included
``GET  /{acct}/invoices`` ``/bills``            documents (REST shape)
``GET  /{acct}/customer-payments``              payments, deleted ones included
``GET  /{acct}/vendor-payments``                idem
``POST /{acct}/invoices`` ``/bills``            add one: ``{"total": "120.00",
                                                "amount_remaining": "20.00", "currency": "EUR",
                                                "customer_id"|"vendor_id": "...",
                                                "external_id": "..."}``
``POST /{acct}/invoices/{id}/pay``              pay as a person in the UI: ``{"amount": "10.00",
                                                "memo": "..."}``
``POST /{acct}/bills/{id}/pay``                 idem for a bill
``POST /{acct}/invoices/{id}/edit``             REST field names: ``{"memo": "x"}``
``POST /{acct}/bills/{id}/edit``                idem
``POST /{acct}/revoke``                         revoke the M2M mapping, tokens and TBA token
``POST /{acct}/reauthorize``                    undo the revocation
==============================================  ===============================================
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from connector.sandbox.netsuite.ledger import NetSuiteLedger
from connector.sandbox.wire import dumps, loads

__all__ = ["create_netsuite_admin_routes"]

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


def create_netsuite_admin_routes(ledger: NetSuiteLedger) -> list[BaseRoute]:
    """Admin routes to mount at ``/_sandbox/netsuite``."""

    def guarded(handler: Callable[[Request], Awaitable[Any]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            if not _is_loopback(request):
                return _json({"error": "the sandbox admin API only answers loopback clients"}, 403)
            try:
                return _json(await handler(request))
            except KeyError as exc:
                return _json({"error": f"unknown account or record: {exc.args[0]}"}, 404)
            except (ValueError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)

        return endpoint

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        data = loads(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data

    def account(request: Request) -> str:
        return ledger.resolve(request.path_params["account"])

    async def overview(request: Request) -> Any:
        return ledger.overview()

    async def credentials(request: Request) -> Any:
        return ledger.credentials(account(request))

    async def invoices(request: Request) -> Any:
        if request.method == "POST":
            body = await body_of(request)
            return ledger.add_invoice(
                account(request),
                total=Decimal(str(body.get("total", "100.00"))),
                amount_remaining=_decimal(body.get("amount_remaining")),
                currency=str(body.get("currency", "USD")),
                customer_id=body.get("customer_id"),
                external_id=body.get("external_id"),
            )
        return ledger.invoices(account(request))

    async def bills(request: Request) -> Any:
        if request.method == "POST":
            body = await body_of(request)
            return ledger.add_bill(
                account(request),
                total=Decimal(str(body.get("total", "100.00"))),
                amount_remaining=_decimal(body.get("amount_remaining")),
                currency=str(body.get("currency", "USD")),
                vendor_id=body.get("vendor_id"),
                external_id=body.get("external_id"),
            )
        return ledger.bills(account(request))

    async def customer_payments(request: Request) -> Any:
        return ledger.customer_payments(account(request), include_deleted=True)

    async def vendor_payments(request: Request) -> Any:
        return ledger.vendor_payments(account(request), include_deleted=True)

    async def pay_invoice(request: Request) -> Any:
        body = await body_of(request)
        return ledger.apply_payment(
            account(request),
            request.path_params["id"],
            Decimal(str(body["amount"])),
            memo=body.get("memo"),
        )

    async def pay_bill(request: Request) -> Any:
        body = await body_of(request)
        return ledger.apply_bill_payment(
            account(request),
            request.path_params["id"],
            Decimal(str(body["amount"])),
            memo=body.get("memo"),
        )

    async def edit_invoice(request: Request) -> Any:
        return ledger.edit_invoice(
            account(request), request.path_params["id"], **(await body_of(request))
        )

    async def edit_bill(request: Request) -> Any:
        return ledger.edit_bill(
            account(request), request.path_params["id"], **(await body_of(request))
        )

    async def revoke(request: Request) -> Any:
        ledger.revoke(account(request))
        return {"revoked": True}

    async def reauthorize(request: Request) -> Any:
        ledger.reauthorize(account(request))
        return {"revoked": False}

    acct = "/{account}"
    return [
        Route("/", guarded(overview), methods=["GET"]),
        Route(acct + "/credentials", guarded(credentials), methods=["GET"]),
        Route(acct + "/invoices", guarded(invoices), methods=["GET", "POST"]),
        Route(acct + "/bills", guarded(bills), methods=["GET", "POST"]),
        Route(acct + "/customer-payments", guarded(customer_payments), methods=["GET"]),
        Route(acct + "/vendor-payments", guarded(vendor_payments), methods=["GET"]),
        Route(acct + "/invoices/{id}/pay", guarded(pay_invoice), methods=["POST"]),
        Route(acct + "/bills/{id}/pay", guarded(pay_bill), methods=["POST"]),
        Route(acct + "/invoices/{id}/edit", guarded(edit_invoice), methods=["POST"]),
        Route(acct + "/bills/{id}/edit", guarded(edit_bill), methods=["POST"]),
        Route(acct + "/revoke", guarded(revoke), methods=["POST"]),
        Route(acct + "/reauthorize", guarded(reauthorize), methods=["POST"]),
    ]


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))
