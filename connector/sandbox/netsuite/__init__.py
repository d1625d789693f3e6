"""NetSuite SuiteTalk REST emulator of the sandbox (source of truth: ``providers/netsuite.md``).

``/netsuite/{accountId}`` stands for ``https://{accountId}.suitetalk.api.netsuite.com``;
the admin API lives under ``/_sandbox/netsuite``. See :mod:`.routes` for the endpoints,
:mod:`.auth` for OAuth 2.0 client credentials (JWT) and TBA, :mod:`.ledger` for the
payment rules, :mod:`.suiteql` for the SuiteQL subset and :mod:`.admin` for the admin
endpoints.

Behaviour the fact sheet leaves open, and what the sandbox does:

* Account ids: seven digits; the second account of a seed is the first one's sandbox
  (``4823911_SB1``). URLs accept any case and ``-`` for ``_``.
* One integration per account: the TBA consumer key/secret are its client id/secret.
  Its certificate is an EC P-256 key derived from the seed (``ES256``); more
  certificates (RSA 3072/4096 for PS256...) can be mapped with
  :meth:`NetSuiteLedger.register_certificate`.
* Token endpoint errors: ``invalid_client`` (401) when the client cannot be
  authenticated (unknown ``iss``/``kid``, disallowed ``alg`` such as RS256, bad
  signature), ``invalid_grant`` (400) for expired, overlong or mis-addressed assertions
  and revoked mappings, ``invalid_scope``, ``invalid_request``,
  ``unsupported_grant_type``.
* 404 for a missing record: ``NONEXISTENT_ID`` "The record instance does not exist.
  Provide a valid record instance ID."
* 429 for the concurrency limit: ``CONCURRENCY_LIMIT_EXCEEDED`` "Concurrent request
  limit exceeded. Request blocked." (the code is unconfirmed); no ``Retry-After``.
* Missing ``Prefer: transient`` on SuiteQL: 400 ``INVALID_HEADER`` with
  ``o:errorHeader: Prefer``.
* 500s (faults): ``UNEXPECTED_ERROR`` "An unexpected error has occurred. Error ID: ...".
* ``RCRD_HAS_BEEN_CHANGED`` is HTTP 400.
* The account's time zone is UTC and its date format ``M/D/YYYY``; SuiteQL renders
  date-time columns as dates (use ``TO_CHAR``), as the fact sheet warns.
* ``exchangeRate`` is base-currency (USD) units per unit of the transaction currency.

Test-side API beyond reads and "a person in the UI" writes: ``register_certificate``
(map an RSA/EC public key, e.g. for PS256), ``reauthorize`` (undo ``revoke``),
``lock_document`` (a workflow lock), ``open_amount`` (a bill's open amount, which REST
does not show), ``payment``, ``customers``/``vendors``/``gl_accounts``/``currencies``,
``edit_bill``, ``in_flight``.

Example:
    >>> import threading
    >>> from connector.sandbox import Clock, Faults
    >>> ledger = NetSuiteLedger(seed=1, clock=Clock(), lock=threading.RLock(), faults=Faults())
    >>> ledger.account_ids
    ['2889443']
"""

from connector.sandbox.netsuite.admin import create_netsuite_admin_routes
from connector.sandbox.netsuite.ledger import NetSuiteLedger
from connector.sandbox.netsuite.routes import create_netsuite_app

__all__ = ["NetSuiteLedger", "create_netsuite_admin_routes", "create_netsuite_app"]
