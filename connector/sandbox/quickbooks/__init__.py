"""The QuickBooks Online ledger of the sandbox (source of truth: ``providers/quickbooks.md``).

Mount :func:`create_quickbooks_app` at ``/quickbooks`` (it stands for
``https://quickbooks.api.intuit.com`` and Intuit's OAuth hosts) and
:func:`create_quickbooks_admin_routes` at ``/_sandbox/quickbooks``::

    ledger = QuickBooksLedger(seed=1, clock=clock, lock=lock, faults=faults)
    app = SandboxApp(routes=[
        Mount("/quickbooks", app=create_quickbooks_app(ledger)),
        Mount("/_sandbox/quickbooks", routes=create_quickbooks_admin_routes(ledger)),
    ])

Modules: :mod:`.ledger` (entities and API semantics, test API), :mod:`.routes` (HTTP,
pipeline, faults), :mod:`.auth` (OAuth), :mod:`.query` (query language),
:mod:`.requestids` (``requestid``), :mod:`.ratelimit`, :mod:`.webhooks`, :mod:`.admin`,
:mod:`.errors` (fault bodies and where their wording comes from), :mod:`.fmt` (wire
formats). Each module's docstring lists what it emulates and the choices it makes where
the fact sheet is silent.

Windows (token lifetimes, rate-limit minute, requestid retention, webhook retry delays)
are divided by ``getattr(clock, "time_scale", 1.0)``.
"""

from connector.sandbox.quickbooks.admin import create_quickbooks_admin_routes
from connector.sandbox.quickbooks.ledger import QuickBooksLedger
from connector.sandbox.quickbooks.ratelimit import QboRateLimits
from connector.sandbox.quickbooks.routes import create_quickbooks_app

__all__ = [
    "QboRateLimits",
    "QuickBooksLedger",
    "create_quickbooks_admin_routes",
    "create_quickbooks_app",
]
