"""A faithful local emulator of the accounting APIs the connector talks to.

First version: Xero (source of truth: the fact sheet ``providers/xero.md``). The sandbox
is a Starlette app served by uvicorn on loopback; tests drive it over real HTTP and read
or change its ledger directly through :class:`SandboxState`.

Layout:
    ``/xero/connect/token``, ``/xero/connect/revocation``
        identity.xero.com: refresh-token grant with rotation and a 30-minute grace.
    ``/xero/connections``
        api.xero.com/connections.
    ``/xero/api.xro/2.0/{Invoices,Payments,Accounts,Contacts}[/{id}]``
        the Accounting API (bearer token + ``xero-tenant-id``, rate limits with the
        minute and day windows, ``Idempotency-Key``, fault injection on writes).
        Invoices include bills (``Type: ACCPAY``); payments on bills go through the
        same Payments endpoints and come back ``PaymentType: ACCPAYPAYMENT``.
    Webhooks
        a registered receiver gets the intent-to-receive handshake, then signed,
        batched INVOICE/CONTACT events (:mod:`connector.sandbox.xero.webhooks`).
    ``/_sandbox/...``
        admin API without authentication, answering loopback clients only (see
        :mod:`connector.sandbox.app`).

Faults: :mod:`connector.sandbox.faults` documents every one. Time:
:class:`Clock` can be advanced instead of sleeping, and its ``time_scale`` shrinks every
window the sandbox keeps (rate-limit minute and day, the 6-minute idempotency
retention, token lifetimes) to ``nominal / time_scale``.

Behaviour the fact sheet leaves open, and what the sandbox does:
    * Unknown invoice in a payment: ``Invoice could not be found``; other sandbox-worded
      messages are listed in :mod:`connector.sandbox.xero.ledger`.
    * A bad ``where``/``order``: 400 ``{"ErrorNumber":16,"Type":"QueryParseException",
      "Message":"No property or field 'X' exists in type 'Invoice'"}``.
    * Idempotency-Key reuse with another request and an over-long key: 400
      ``{"ErrorNumber":10,"Type":"ValidationException","Message":...}``. Replays carry
      ``X-Sandbox-Idempotent-Replay: true``. A 500 injected after commit is cached like
      any answer; a drop before commit leaves the key unused.
    * 429 bodies are empty; rejected calls do not use up quota.
    * ``CurrencyRate`` is invoice-currency units per base unit, and
      ``BankAmount = Amount / CurrencyRate`` for foreign invoices (bank accounts are in
      the base currency, USD).
    * JSON is compact (``"AmountDue":229.00``), money has the currency's decimals,
      rates six, quantities four.

Example:
    >>> state = SandboxState(seed=1)
    >>> with SandboxServer(state) as srv:  # doctest: +SKIP
    ...     tenant = state.xero.tenant_ids[0]
    ...     httpx.post(srv.url + "/xero/connect/token", data={
    ...         "grant_type": "refresh_token",
    ...         "refresh_token": state.xero.refresh_token_for(tenant),
    ...         "client_id": state.xero.client_id,
    ...         "client_secret": state.xero.client_secret,
    ...     })
"""

from connector.sandbox.app import create_app
from connector.sandbox.clock import Clock
from connector.sandbox.faults import Faults
from connector.sandbox.ratelimit import RateLimitConfig
from connector.sandbox.server import SandboxServer, serve, write_config
from connector.sandbox.state import SandboxState
from connector.sandbox.xero.ledger import XeroLedger

__all__ = [
    "Clock",
    "Faults",
    "RateLimitConfig",
    "SandboxServer",
    "SandboxState",
    "XeroLedger",
    "create_app",
    "serve",
    "write_config",
]
