"""The QuickBooks Online ledger: companies (realms), their entities, and the API semantics.

It is both the state behind the HTTP emulator (:mod:`connector.sandbox.quickbooks.routes`)
and the test-facing API: tests read it directly and change it "as a person in the
QuickBooks UI would" (pay an invoice, edit or void it) without going through HTTP.
Every read and write happens under the lock passed in (shared with the other providers).
Returned dicts are in the API's JSON shape (Decimals inside).

Semantics (fact sheet ``providers/quickbooks.md``; sandbox choices marked):

* Invoices, credit memos and bills have no status field: ``Balance`` is ``TotalAmt``
  minus what live payments apply to them, and each applying payment appears in the
  document's ``LinkedTxn`` (``Payment``; ``BillPaymentCheck`` / ``BillPaymentCreditCard``
  for bills — the credit-card type name is unconfirmed, §3).
* Creating, changing, voiding or deleting a payment bumps the ``SyncToken`` and
  ``LastUpdatedTime`` of every document whose applied amount changed.
* Payment: ``UnappliedAmt = TotalAmt - (invoice lines - credit-memo lines)``; no lines →
  all unapplied. BillPayment: the overpayment is a vendor credit (not shown).
* Business rules, 6000 (details are sandbox wording): a linked transaction that does not
  exist or was deleted; of another customer/vendor; in another currency; an amount
  above the document's open balance (fact sheet: unconfirmed whether QBO refuses it —
  the sandbox does); lines above ``TotalAmt``; the wrong account type. The fact sheet
  reports that QBO may instead record a payment for another customer as unapplied; the
  sandbox refuses it, as the brief asks.
* Void: amounts zeroed, lines cleared (payments) or zeroed (invoices), ``PrivateNote``
  prefixed "Voided" (sandbox: ``"Voided"`` or ``"Voided - <note>"``). Voiding or
  deleting an invoice/bill that payments were applied to leaves those payments as
  unapplied credit (their lines to it are removed and their SyncToken bumps).
* Full update: writable fields left out are cleared; ``TotalAmt`` left out of a payment
  update is computed from the lines (sandbox choice). Sparse update (``"sparse": true``)
  changes only what is sent; payment lines are all-or-none.
* Deleted entities disappear from reads (610) and queries but stay for CDC as
  ``{"status":"Deleted","domain":"QBO","Id":…,"MetaData":{"LastUpdatedTime":…}}``.
* Multi-currency: home currency USD; a customer/vendor has one currency; documents and
  payments must use it; ``ExchangeRate`` = USD per unit (EUR 1.08 by default).
* Tax: ``TAX``-coded sales lines carry 8 % (``TxnTaxDetail`` as in Intuit's sample).
* CDC's 30-day look-back is a range of data, not a window, so it is not divided by
  ``clock.time_scale``.
* Ids: per realm, transactions share one sequence, customers+vendors another, accounts
  a third (small integers as strings). Names are never deleted (6000; make them
  inactive), bills cannot be voided (6000), the chart of accounts is read-only (5030).
* Entities beyond the brief, so the samples can be served: CreditMemo (payment lines may
  apply one), SalesReceipt (one seeded per realm), CompanyInfo and Preferences (reads).
* The test API's listings show deleted entities (on request) in full with
  ``"status": "Deleted"`` — a form the HTTP API never uses.
"""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from connector.sandbox.clock import Clock
from connector.sandbox.faults import Faults
from connector.sandbox.quickbooks.auth import QboAuth
from connector.sandbox.quickbooks.errors import (
    QboFault,
    business,
    duplicate_name,
    invalid_property,
    not_found,
    query_invalid,
    required,
    stale,
    unsupported,
)
from connector.sandbox.quickbooks.fmt import (
    company_date,
    meta_time,
    money,
    parse_moment,
    render_numbers,
)
from connector.sandbox.quickbooks.models import (
    DOC_KINDS,
    KINDS,
    NAME_KINDS,
    PAY_KINDS,
    TXN_KINDS,
    Realm,
    Record,
)
from connector.sandbox.quickbooks.query import (
    PREFILTER_FIELDS,
    Query,
    entity_name,
    execute,
    parse_query,
    prefilter,
)
from connector.sandbox.quickbooks.ratelimit import QboRateLimiter, QboRateLimits
from connector.sandbox.quickbooks.requestids import RequestIdStore
from connector.sandbox.quickbooks.webhooks import WebhookDispatcher, WebhookEvent

__all__ = ["BATCH_LIMIT", "CDC_LIMIT", "CDC_LOOKBACK", "QuickBooksLedger", "resource_kind"]

ZERO = Decimal("0.00")
_T = TypeVar("_T")
#: Fact sheet §6: at most 30 items per batch.
BATCH_LIMIT = 30
#: Fact sheet §7: CDC looks back at most 30 days and returns at most 1000 objects.
CDC_LOOKBACK = timedelta(days=30)
CDC_LIMIT = 1000
#: Fact sheet §1/§2: PrivateNote max 4000 characters, BillPayment DocNumber max 21.
PRIVATE_NOTE_MAX = 4000
DOC_NUMBER_MAX = 21
TAX_RATE = Decimal("0.08")
TAX_PERCENT = 8
DEFAULT_RATES = {"EUR": Decimal("1.08"), "GBP": Decimal("1.27"), "CAD": Decimal("0.73")}
CURRENCY_NAMES = {
    "USD": "United States Dollar",
    "EUR": "Euro",
    "GBP": "British Pound Sterling",
    "CAD": "Canadian Dollar",
}
CUSTOMER_MEMO = "Thank you for your business and have a great day!"

_RESOURCES = {kind.lower(): kind for kind in KINDS}


def resource_kind(resource: str) -> str | None:
    """The entity for a URL path segment (``billpayment`` → ``BillPayment``)."""
    return _RESOURCES.get(resource.lower())


_ACCOUNTS: tuple[tuple[str, str, str, str, str], ...] = (
    # role, name, AccountType, AccountSubType, Classification
    ("checking", "Checking", "Bank", "Checking", "Asset"),
    ("savings", "Savings", "Bank", "Savings", "Asset"),
    ("undeposited", "Undeposited Funds", "Other Current Asset", "UndepositedFunds", "Asset"),
    ("ar", "Accounts Receivable (A/R)", "Accounts Receivable", "AccountsReceivable", "Asset"),
    ("ap", "Accounts Payable (A/P)", "Accounts Payable", "AccountsPayable", "Liability"),
    ("credit_card", "Mastercard", "Credit Card", "CreditCard", "Liability"),
    ("income", "Services", "Income", "ServiceFeeIncome", "Revenue"),
    ("product_income", "Sales of Product Income", "Income", "SalesOfProductIncome", "Revenue"),
    ("expense", "Job Materials", "Expense", "SuppliesMaterials", "Expense"),
    ("office", "Office Expenses", "Expense", "OfficeGeneralAdministrativeExpenses", "Expense"),
)
_CUSTOMERS: tuple[tuple[str, str, str, str, str], ...] = (
    # display name, given, family, city, currency
    ("Amy's Bird Sanctuary", "Amy", "Lauqhlin", "Bayshore", "USD"),
    ("Bill's Windsurf Shop", "Bill", "Lucchini", "Half Moon Bay", "USD"),
    ("Cool Cars", "Grace", "Pariente", "Half Moon Bay", "USD"),
    ("Sonnenschein Family Store", "Russ", "Sonnenschein", "Middlefield", "USD"),
    ("Rondonuwu Fruit and Vegi", "Kirby", "Rondonuwu", "Berlin", "EUR"),
)
_VENDORS: tuple[tuple[str, str], ...] = (
    ("Books by Bessie", "USD"),
    ("Norton Lumber and Building Materials", "USD"),
    ("Cal Telephone", "USD"),
    ("Hamburg Hardware GmbH", "EUR"),
)
_ITEMS: tuple[tuple[str, str, Decimal], ...] = (
    ("Design", "4", Decimal("75.00")),
    ("Rock Fountain", "5", Decimal("275.00")),
    ("Pump", "11", Decimal("12.75")),
    ("Concrete", "3", Decimal("9.50")),
    ("Gardening", "6", Decimal("25.00")),
    ("Installation", "7", Decimal("50.00")),
    ("Hours", "2", Decimal("40.00")),
)
# (state, currency, linked estimate) for invoices 1, 2, …; repeats beyond 12.
_INVOICE_PATTERN: tuple[tuple[str, str, bool], ...] = (
    ("open", "USD", False),
    ("open", "USD", True),
    ("partial", "USD", False),
    ("open", "USD", False),
    ("paid", "USD", False),
    ("open", "EUR", False),
    ("open", "USD", False),
    ("partial", "EUR", False),
    ("open", "USD", True),
    ("voided", "USD", False),
    ("paid", "USD", False),
    ("open", "USD", False),
)
_BILL_PATTERN: tuple[tuple[str, str], ...] = (
    ("open", "USD"),
    ("partial", "USD"),
    ("paid", "USD"),
    ("open", "EUR"),
)

# Writable properties kept on update (everything else sent is read-only or ignored).
_DOC_WRITABLE = {
    "Invoice": (
        "CustomerRef", "Line", "DocNumber", "TxnDate", "DueDate", "PrivateNote",
        "CustomerMemo", "BillEmail", "BillAddr", "ShipAddr", "EmailStatus", "PrintStatus",
        "SalesTermRef", "CustomField", "ApplyTaxAfterDiscount", "CurrencyRef", "ExchangeRate",
    ),
    "CreditMemo": (
        "CustomerRef", "Line", "DocNumber", "TxnDate", "PrivateNote", "CustomerMemo",
        "BillEmail", "BillAddr", "EmailStatus", "PrintStatus", "CustomField",
        "ApplyTaxAfterDiscount", "CurrencyRef", "ExchangeRate",
    ),
    "SalesReceipt": (
        "CustomerRef", "Line", "DocNumber", "TxnDate", "PrivateNote", "CustomerMemo",
        "BillEmail", "BillAddr", "ShipAddr", "EmailStatus", "PrintStatus", "CustomField",
        "ApplyTaxAfterDiscount", "CurrencyRef", "ExchangeRate", "PaymentRefNum",
        "PaymentMethodRef", "DepositToAccountRef",
    ),
    "Bill": (
        "VendorRef", "Line", "DocNumber", "TxnDate", "DueDate", "PrivateNote", "APAccountRef",
        "SalesTermRef", "CurrencyRef", "ExchangeRate",
    ),
}  # fmt: skip
_NAME_WRITABLE = (
    "DisplayName", "GivenName", "FamilyName", "CompanyName", "PrintOnCheckName",
    "PrimaryEmailAddr", "PrimaryPhone", "BillAddr", "ShipAddr", "Active", "Notes",
    "Taxable", "Vendor1099", "CurrencyRef",
)  # fmt: skip
_PAY_PASSTHROUGH = {
    "Payment": ("PaymentRefNum", "PrivateNote", "PaymentMethodRef", "ProjectRef", "ARAccountRef"),
    "BillPayment": ("PrivateNote", "DocNumber", "APAccountRef", "DepartmentRef"),
}


@dataclass(frozen=True)
class _PayPlan:
    body: dict[str, Any]
    applications: dict[str, Decimal]


def _ref(value: str, name: str | None = None) -> dict[str, str]:
    return {"value": value, "name": name} if name is not None else {"value": value}


def _clean_ref(raw: Any, element: str) -> dict[str, str]:
    """A ``*Ref`` as sent (``{"value", "name"?}``; python-quickbooks adds empty name/type)."""
    if isinstance(raw, str | int):
        return {"value": str(raw)}
    if not isinstance(raw, Mapping) or raw.get("value") in (None, ""):
        raise invalid_property(f"{element} must be an object with a value", element)
    out = {"value": str(raw["value"])}
    if raw.get("name"):
        out["name"] = str(raw["name"])
    return out


def _amount(raw: Any, element: str) -> Decimal:
    if raw is None or raw == "":
        raise required(element)
    if isinstance(raw, bool):
        raise invalid_property(f"{element} is not a number", element)
    try:
        value = Decimal(str(raw).strip()) if not isinstance(raw, Decimal) else raw
    except InvalidOperation:
        raise QboFault(
            "2140", "Invalid Amount", f"{element}: {raw!r} is not a valid amount", element=element
        ) from None
    if not value.is_finite():
        raise QboFault("2140", "Invalid Amount", f"{element} is not finite", element=element)
    return money(value)


def _text(raw: Any, element: str, limit: int) -> str:
    text = str(raw)
    if len(text) > limit:
        raise QboFault(
            "2050",
            "String length is either shorter or longer than supported by specification",
            f"String length specified does not match the supported length. Min:0 Max:{limit} "
            f"supplied length:{len(text)}",
            element=element,
        )
    return text


def _date(raw: Any, element: str) -> str:
    try:
        return date.fromisoformat(str(raw)[:10]).isoformat()
    except ValueError:
        raise invalid_property(f"{element}: {raw!r} is not a date (YYYY-MM-DD)", element) from None


def _public(value: Any) -> Any:
    """Deep copy without the internal ``_`` keys."""
    if isinstance(value, Mapping):
        return {k: _public(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def _prune(value: Any) -> Any:
    """Deep copy without empty strings and nulls (clients such as python-quickbooks send
    every attribute, e.g. ``{"name": "", "type": "", "value": "3"}``)."""
    if isinstance(value, Mapping):
        return {k: _prune(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _sync_token(data: Mapping[str, Any]) -> str:
    raw = data.get("SyncToken")
    if raw is None or raw == "":
        raise required("SyncToken")
    return str(raw).strip()


def _fault_text(fault: QboFault) -> str:
    return f"{fault.code} {fault.message}: {fault.detail}"


class QuickBooksLedger:
    """Every QuickBooks company of one sandbox, seeded deterministically.

    Args:
        seed: Seed of every generated id, token, name and amount.
        realms: Number of companies; each gets its own OAuth grant.
        invoices: Invoices per company (open, partly paid, paid, voided, some in EUR).
        bills: Bills per company (open, partly paid, paid, one in EUR).
        clock: The sandbox clock.
        lock: The lock guarding the ledger (shared with the other providers).
        faults: Fault injection for write calls.
        rate_limits: ``True`` for Intuit's limits, ``False`` for none, or a
            :class:`QboRateLimits` / mapping such as ``{"minute": 3}``.
    """

    def __init__(
        self,
        *,
        seed: int,
        realms: int = 1,
        invoices: int = 12,
        bills: int = 4,
        clock: Clock,
        lock: threading.RLock,
        faults: Faults,
        rate_limits: bool | QboRateLimits | Mapping[str, object] = True,
    ) -> None:
        if realms < 1:
            raise ValueError("at least one realm is needed")
        if invoices < 0 or bills < 0:
            raise ValueError("invoices and bills must not be negative")
        self.seed = seed
        self.clock = clock
        self.lock = lock
        self.faults = faults
        rng = random.Random(f"quickbooks:{seed}")
        self._runtime_rng = random.Random(f"quickbooks-runtime:{seed}")
        #: Picks 500 or 503 for ``error_before_commit`` (reproducible from the seed).
        self.fault_rng = random.Random(f"quickbooks-faults:{seed}")
        self.auth = QboAuth(clock, lock, rng, random.Random(f"quickbooks-tokens:{seed}"))
        self.webhook_verifier_token = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.webhooks = WebhookDispatcher(self.webhook_verifier_token, self.auth.client_id, clock)
        self.rate_limiter = QboRateLimiter(QboRateLimits.coerce(rate_limits), clock)
        self.request_ids = RequestIdStore(clock)
        #: ``"json"`` or ``"xml"``: the body of a 429 (QuickBooks sometimes answers XML
        #: even to JSON requests, fact sheet §4).
        self.throttle_format = "json"
        self._realms: dict[str, Realm] = {}
        with self.lock:
            for index in range(realms):
                self._seed_realm(rng, index, invoices, bills)

    # ------------------------------------------------------------------ identity

    @property
    def client_id(self) -> str:
        """The OAuth client id of the sandbox's QuickBooks app."""
        return self.auth.client_id

    @property
    def client_secret(self) -> str:
        """The OAuth client secret of the sandbox's QuickBooks app."""
        return self.auth.client_secret

    @property
    def realm_ids(self) -> list[str]:
        """Realm (company) ids in seed order."""
        with self.lock:
            return list(self._realms)

    def realm(self, realm_id: str) -> Realm:
        """The company's internal record.

        Raises:
            KeyError: Unknown realm.
        """
        with self.lock:
            return self._realms[str(realm_id)]

    def refresh_token_for(self, realm_id: str) -> str:
        """The newest refresh token of the realm's grant (the seeded one until rotated)."""
        with self.lock:
            return self.auth.current_refresh(self.realm(realm_id).realm_id)

    def revoke_grant(self, realm_id: str) -> None:
        """Revoke the realm's grant: refresh gives ``invalid_grant``, API calls 401."""
        with self.lock:
            self.auth.revoke(self.realm(realm_id).realm_id)

    def connection_tables(self, base_url: str) -> list[dict[str, str]]:
        """One connector ``[[connections]]`` table per realm.

        Args:
            base_url: The sandbox root URL (``SandboxServer.url``).
        """
        root = base_url.rstrip("/")
        with self.lock:
            return [
                {
                    "id": f"qbo-{realm.realm_id[-6:]}",
                    "provider": "quickbooks",
                    "base_url": f"{root}/quickbooks",
                    "token_url": f"{root}/quickbooks/oauth2/v1/tokens/bearer",
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                    "refresh_token": self.auth.current_refresh(realm.realm_id),
                    "realm_id": realm.realm_id,
                    "payment_account_code": realm.accounts["checking"],
                    "bill_payment_account_code": realm.accounts["checking"],
                    "bill_payment_type": "Check",
                }
                for realm in self._realms.values()
            ]

    def overview(self) -> dict[str, Any]:
        """Client credentials, realms and their current refresh tokens (``GET /_sandbox``)."""
        with self.lock:
            limits = self.rate_limiter.limits
            return {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "webhook_verifier_token": self.webhook_verifier_token,
                "rate_limits": {
                    "enabled": limits.enabled,
                    "minute": limits.minute,
                    "concurrent": limits.concurrent,
                    "batch_minute": limits.batch_minute,
                    "second": limits.second,
                },
                "realms": [
                    {
                        "realm_id": realm.realm_id,
                        "company_name": realm.company_name,
                        "home_currency": realm.home_currency,
                        "refresh_token": self.auth.current_refresh(realm.realm_id),
                        "accounts": dict(realm.accounts),
                    }
                    for realm in self._realms.values()
                ],
            }

    def register_webhook(
        self, url: str, fmt: str = "legacy", realm_ids: list[str] | None = None
    ) -> dict[str, Any]:
        """Register a webhook receiver; returns it with the verifier token.

        Raises:
            ValueError: Unknown format or not an http(s) URL.
        """
        reg = self.webhooks.register(url, fmt, realm_ids)
        return {**reg.as_dict(), "verifier_token": self.webhook_verifier_token}

    def close(self) -> None:
        """Stop the webhook delivery thread."""
        self.webhooks.close()

    # ------------------------------------------------------------------ seeding

    def _seed_realm(self, rng: random.Random, index: int, invoices: int, bills: int) -> None:
        while True:
            realm_id = f"9341{rng.randrange(10**11, 10**12)}"
            if realm_id not in self._realms:
                break
        now = self.clock.now().replace(microsecond=0)
        realm = Realm(realm_id, f"Sandbox Company_US_{index + 1}", now - timedelta(days=30))
        realm.rates = dict(DEFAULT_RATES)
        self._realms[realm_id] = realm
        self.auth.add_grant(realm_id)
        seeded = len(_ACCOUNTS) + len(_CUSTOMERS) + len(_VENDORS) + 1 + 2 * (invoices + bills)
        step = min(timedelta(minutes=37), timedelta(days=19) / seeded)
        clock = [now - timedelta(days=20)]

        def tick() -> datetime:
            clock[0] += step
            return clock[0]

        for role, name, type_, sub, cls in _ACCOUNTS:
            account_body: dict[str, Any] = {
                "Name": name,
                "SubAccount": False,
                "FullyQualifiedName": name,
                "Active": True,
                "Classification": cls,
                "AccountType": type_,
                "AccountSubType": sub,
                "CurrentBalance": ZERO,
                "CurrentBalanceWithSubAccounts": ZERO,
                "CurrencyRef": self._currency_ref("USD"),
            }
            realm.accounts[role] = self._add(realm, "Account", account_body, tick()).id
        customers = [
            self._add(realm, "Customer", self._customer_body(realm, *spec), tick())
            for spec in _CUSTOMERS
        ]
        vendors = [
            self._add(realm, "Vendor", self._vendor_body(realm, name, cur), tick())
            for name, cur in _VENDORS
        ]
        usd_customers = [c for c in customers if self._currency(realm, c) == "USD"]
        eur_customers = [c for c in customers if self._currency(realm, c) == "EUR"]
        for i in range(invoices):
            state, currency, estimate = _INVOICE_PATTERN[i % len(_INVOICE_PATTERN)]
            pool = usd_customers if currency == "USD" else eur_customers
            customer = pool[i % len(pool)]
            lines = []
            for n in range(1 + rng.randrange(3)):
                item = _ITEMS[rng.randrange(len(_ITEMS))]
                qty = 1 + rng.randrange(5)
                lines.append((item, Decimal(qty), currency == "USD" and n == 0))
            when = tick()
            body = self._invoice_body(realm, customer, lines, currency, when)
            if estimate:
                body["_links"] = [{"TxnId": str(100 + i), "TxnType": "Estimate"}]
            inv = self._add(realm, "Invoice", body, when)
            total: Decimal = body["TotalAmt"]
            if state in {"partial", "paid"}:
                amount = total if state == "paid" else money(total * Decimal("0.4"))
                self._seed_payment(realm, inv, amount, tick(), ref=str(2000 + i))
            elif state == "voided":
                self._void_document(realm, inv, tick())
        receipt_customer = usd_customers[0]
        self._add(realm, "SalesReceipt", self._sales_receipt_body(realm, receipt_customer), tick())
        for i in range(bills):
            state, currency = _BILL_PATTERN[i % len(_BILL_PATTERN)]
            pool = [v for v in vendors if self._currency(realm, v) == currency]
            vendor = pool[i % len(pool)]
            amount = money(Decimal(40 + rng.randrange(900)) + Decimal(rng.randrange(100)) / 100)
            when = tick()
            bill = self._add(
                realm,
                "Bill",
                self._bill_body(realm, vendor, amount, currency, when, billable=customers[0]),
                when,
            )
            if state in {"partial", "paid"}:
                paid = amount if state == "paid" else money(amount / 2)
                self._seed_bill_payment(realm, bill, paid, tick())

    def _customer_body(
        self, realm: Realm, display: str, given: str, family: str, city: str, currency: str
    ) -> dict[str, Any]:
        slug = "".join(ch for ch in display.lower() if ch.isalnum())[:16]
        return {
            "GivenName": given,
            "FamilyName": family,
            "CompanyName": display,
            "DisplayName": display,
            "PrintOnCheckName": display,
            "FullyQualifiedName": display,
            "Active": True,
            "Taxable": currency == "USD",
            "Job": False,
            "BillWithParent": False,
            "PreferredDeliveryMethod": "Print",
            "PrimaryEmailAddr": {"Address": f"{slug}@example.com"},
            "BillAddr": self._address(realm, display, city),
            "ShipAddr": self._address(realm, display, city),
            "CurrencyRef": self._currency_ref(currency),
        }

    def _vendor_body(self, realm: Realm, display: str, currency: str) -> dict[str, Any]:
        slug = "".join(ch for ch in display.lower() if ch.isalnum())[:16]
        return {
            "CompanyName": display,
            "DisplayName": display,
            "PrintOnCheckName": display,
            "Active": True,
            "Vendor1099": False,
            "PrimaryEmailAddr": {"Address": f"billing@{slug}.example.com"},
            "BillAddr": self._address(realm, display, "San Mateo"),
            "CurrencyRef": self._currency_ref(currency),
        }

    def _address(self, realm: Realm, name: str, city: str) -> dict[str, Any]:
        realm.counters["addr"] += 1
        return {
            "Id": str(realm.counters["addr"]),
            "Line1": f"{100 + realm.counters['addr']} Main Street",
            "City": city,
            "CountrySubDivisionCode": "CA",
            "PostalCode": "94303",
            "Lat": "37.4238562",
            "Long": "-122.1141681",
        }

    def _free_form_address(self, realm: Realm, customer: Mapping[str, Any]) -> dict[str, Any]:
        """A billing address as QuickBooks prints it on a form (``Line1``..``Line4``)."""
        addr = customer.get("BillAddr") or {}
        realm.counters["addr"] += 1
        return {
            "Id": str(realm.counters["addr"]),
            "Line1": " ".join(
                p for p in (customer.get("GivenName"), customer.get("FamilyName")) if p
            )
            or customer["DisplayName"],
            "Line2": customer["DisplayName"],
            "Line3": addr.get("Line1", ""),
            "Line4": f"{addr.get('City', '')}, {addr.get('CountrySubDivisionCode', '')}  "
            f"{addr.get('PostalCode', '')}",
            "Lat": addr.get("Lat", "INVALID"),
            "Long": addr.get("Long", "INVALID"),
        }

    def _invoice_body(
        self,
        realm: Realm,
        customer: Record,
        lines: list[tuple[tuple[str, str, Decimal], Decimal, bool]],
        currency: str,
        when: datetime,
        *,
        doc_number: str | None = None,
    ) -> dict[str, Any]:
        out_lines = []
        for n, ((name, item_id, unit), qty, taxable) in enumerate(lines, start=1):
            out_lines.append(
                {
                    "Id": str(n),
                    "LineNum": n,
                    "Description": name,
                    "Amount": money(unit * qty),
                    "DetailType": "SalesItemLineDetail",
                    "SalesItemLineDetail": {
                        "ItemRef": _ref(item_id, name),
                        "UnitPrice": unit,
                        "Qty": int(qty) if qty == qty.to_integral_value() else qty,
                        "TaxCodeRef": {"value": "TAX" if taxable else "NON"},
                    },
                }
            )
        txn_date = company_date(when)
        cust = customer.body
        body: dict[str, Any] = {
            "TxnDate": txn_date.isoformat(),
            "DueDate": (txn_date + timedelta(days=30)).isoformat(),
            "DocNumber": doc_number or self._next_doc_number(realm),
            "CustomerRef": _ref(customer.id, cust["DisplayName"]),
            "CurrencyRef": self._currency_ref(currency),
            "Line": out_lines,
            "ApplyTaxAfterDiscount": False,
            "PrintStatus": "NeedToPrint",
            "EmailStatus": "NotSet",
            "SalesTermRef": {"value": "3"},
            "CustomerMemo": {"value": CUSTOMER_MEMO},
            "BillEmail": dict(cust.get("PrimaryEmailAddr") or {"Address": "billing@example.com"}),
            "BillAddr": self._free_form_address(realm, cust),
            "ShipAddr": copy.deepcopy(cust.get("ShipAddr") or {}),
            "CustomField": [
                {
                    "DefinitionId": "1",
                    "StringValue": str(100 + realm.counters["txn"] % 50),
                    "Type": "StringType",
                    "Name": "Crew #",
                }
            ],
            "Deposit": ZERO,
        }
        if currency != realm.home_currency:
            body["ExchangeRate"] = realm.rates.get(currency, Decimal(1))
        self._recompute_sales_totals(body)
        return body

    def _sales_receipt_body(self, realm: Realm, customer: Record) -> dict[str, Any]:
        cust = customer.body
        checking = realm.accounts["checking"]
        body: dict[str, Any] = {
            "TxnDate": company_date(self.clock.now() - timedelta(days=10)).isoformat(),
            "DocNumber": self._next_doc_number(realm),
            "CustomerRef": _ref(customer.id, cust["DisplayName"]),
            "CurrencyRef": self._currency_ref(self._currency(realm, customer)),
            "PrintStatus": "NotSet",
            "EmailStatus": "NotSet",
            "PaymentRefNum": "10264",
            "PaymentMethodRef": _ref("2", "Check"),
            "DepositToAccountRef": _ref(checking, "Checking"),
            "Line": [
                {
                    "Id": "1",
                    "LineNum": 1,
                    "Description": "Custom Design",
                    "Amount": Decimal("337.50"),
                    "DetailType": "SalesItemLineDetail",
                    "SalesItemLineDetail": {
                        "ItemRef": _ref("4", "Design"),
                        "UnitPrice": Decimal(75),
                        "Qty": Decimal("4.5"),
                        "TaxCodeRef": {"value": "NON"},
                    },
                }
            ],
            "ApplyTaxAfterDiscount": False,
            "PrivateNote": "A private note.",
            "CustomerMemo": {"value": CUSTOMER_MEMO},
            "BillAddr": {
                "Id": str(realm.counters["addr"] + 1),
                "Line1": cust["DisplayName"],
                "Lat": "INVALID",
                "Long": "INVALID",
            },
            "CustomField": [{"DefinitionId": "1", "Type": "StringType", "Name": "Crew #"}],
        }
        realm.counters["addr"] += 1
        self._recompute_sales_totals(body)
        return body

    def _bill_body(
        self,
        realm: Realm,
        vendor: Record,
        amount: Decimal,
        currency: str,
        when: datetime,
        *,
        billable: Record | None = None,
        doc_number: str | None = None,
    ) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "AccountRef": _ref(realm.accounts["expense"], "Job Materials"),
            "BillableStatus": "Billable" if billable is not None else "NotBillable",
            "TaxCodeRef": {"value": "NON"},
        }
        if billable is not None:
            detail["CustomerRef"] = _ref(billable.id, billable.body["DisplayName"])
        txn_date = company_date(when)
        body: dict[str, Any] = {
            "TxnDate": txn_date.isoformat(),
            "DueDate": (txn_date + timedelta(days=30)).isoformat(),
            "DocNumber": doc_number or f"B-{self._next_doc_number(realm)}",
            "VendorRef": _ref(vendor.id, vendor.body["DisplayName"]),
            "APAccountRef": _ref(realm.accounts["ap"], "Accounts Payable (A/P)"),
            "CurrencyRef": self._currency_ref(currency),
            "SalesTermRef": {"value": "3"},
            "Line": [
                {
                    "Id": "1",
                    "Description": "Materials",
                    "Amount": amount,
                    "DetailType": "AccountBasedExpenseLineDetail",
                    "AccountBasedExpenseLineDetail": detail,
                }
            ],
            "TotalAmt": amount,
        }
        if currency != realm.home_currency:
            body["ExchangeRate"] = realm.rates.get(currency, Decimal(1))
        return body

    def _seed_payment(
        self, realm: Realm, invoice: Record, amount: Decimal, when: datetime, *, ref: str
    ) -> Record:
        plan = self._plan_pay(
            realm,
            "Payment",
            {
                "CustomerRef": invoice.body["CustomerRef"],
                "TotalAmt": amount,
                "TxnDate": company_date(when).isoformat(),
                "PaymentRefNum": ref,
                "DepositToAccountRef": {"value": realm.accounts["undeposited"]},
                "Line": [
                    {"Amount": amount, "LinkedTxn": [{"TxnId": invoice.id, "TxnType": "Invoice"}]}
                ],
            },
            None,
            full=True,
        )
        return self._commit_pay(realm, "Payment", plan, None, when)

    def _seed_bill_payment(
        self, realm: Realm, bill: Record, amount: Decimal, when: datetime
    ) -> Record:
        plan = self._plan_pay(
            realm,
            "BillPayment",
            {
                "VendorRef": bill.body["VendorRef"],
                "TotalAmt": amount,
                "TxnDate": company_date(when).isoformat(),
                "PayType": "Check",
                "CheckPayment": {"BankAccountRef": {"value": realm.accounts["checking"]}},
                "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": bill.id, "TxnType": "Bill"}]}],
            },
            None,
            full=True,
        )
        return self._commit_pay(realm, "BillPayment", plan, None, when)

    # ------------------------------------------------------------------ internals

    def _realm(self, realm_id: str) -> Realm:
        realm = self._realms.get(str(realm_id))
        if realm is None:
            raise KeyError(realm_id)
        return realm

    def _stamp(self) -> datetime:
        return self.clock.now().astimezone(UTC).replace(microsecond=0)

    def _next_doc_number(self, realm: Realm) -> str:
        realm.counters["doc"] += 1
        return str(realm.counters["doc"])

    def _currency_ref(self, code: str) -> dict[str, str]:
        return _ref(code, CURRENCY_NAMES.get(code, code))

    def _currency(self, realm: Realm, rec: Record) -> str:
        ref = rec.body.get("CurrencyRef")
        return str(ref["value"]) if isinstance(ref, Mapping) else realm.home_currency

    def _add(self, realm: Realm, kind: str, body: dict[str, Any], when: datetime) -> Record:
        counter = "txn" if kind in TXN_KINDS else "name" if kind in NAME_KINDS else "account"
        realm.counters[counter] += 1
        rec = Record(kind, str(realm.counters[counter]), body, when, when)
        realm.records[kind][rec.id] = rec
        if kind in TXN_KINDS:
            realm.txns[rec.id] = rec
        self._event(realm, rec, "Create")
        return rec

    def _touch(self, realm: Realm, rec: Record, when: datetime, operation: str = "Update") -> None:
        rec.sync_token += 1
        rec.updated = max(when, rec.updated)
        self._event(realm, rec, operation)

    def _event(self, realm: Realm, rec: Record, operation: str) -> None:
        self.webhooks.publish(
            WebhookEvent(realm.realm_id, rec.kind, rec.id, operation, rec.updated)
        )

    def _find(self, realm: Realm, kind: str, entity_id: Any, element: str = "Id") -> Record:
        rec = realm.records[kind].get(str(entity_id).strip())
        if rec is None or rec.deleted:
            raise not_found(element)
        return rec

    def _party(self, realm: Realm, kind: str, raw: Any, element: str) -> Record:
        if raw is None:
            raise required(element)
        ref = _clean_ref(raw, element)
        rec = self._find(realm, kind, ref["value"], element)
        if rec.body.get("Active") is False:
            raise not_found(element)  # fact sheet §4: 610 also for inactive name-list objects
        return rec

    def _account(self, realm: Realm, raw: Any, element: str, types: Iterable[str]) -> Record:
        ref = _clean_ref(raw, element)
        account = self._find(realm, "Account", ref["value"], element)
        allowed = tuple(types)
        if account.body["AccountType"] not in allowed:
            raise business(
                f"{element} must be an account of type {' or '.join(allowed)}; "
                f"{account.body['Name']} is {account.body['AccountType']}",
                element,
            )
        return account

    def _rate(self, realm: Realm, currency: str, raw: Any) -> Decimal | None:
        if currency == realm.home_currency:
            return None
        if raw is None or raw == "":
            return realm.rates.get(currency, Decimal(1))
        try:
            rate = Decimal(str(raw))
        except InvalidOperation:
            raise invalid_property("ExchangeRate is not a number", "ExchangeRate") from None
        if rate <= 0:
            raise business("ExchangeRate must be greater than zero", "ExchangeRate")
        return rate

    def _check_currency(self, realm: Realm, party: Record, raw: Any) -> str:
        currency = self._currency(realm, party)
        if raw is not None:
            code = _clean_ref(raw, "CurrencyRef")["value"].upper()
            if code != currency:
                raise business(
                    f"The currency {code} does not match the currency {currency} of "
                    f"{party.body['DisplayName']}",
                    "CurrencyRef",
                )
        return currency

    def _applied(self, realm: Realm, doc_id: str) -> Decimal:
        return sum(realm.applications.get(doc_id, {}).values(), ZERO)

    def _balance(self, realm: Realm, doc: Record) -> Decimal:
        return money(Decimal(doc.body.get("TotalAmt", ZERO)) - self._applied(realm, doc.id))

    def _link_type(self, pay: Record) -> str:
        if pay.kind == "Payment":
            return "Payment"
        return (
            "BillPaymentCreditCard"
            if pay.body.get("PayType") == "CreditCard"
            else "BillPaymentCheck"
        )

    def _unapplied(self, pay: Record) -> Decimal:
        net = ZERO
        for line in pay.body.get("Line", []):
            link = line["LinkedTxn"][0]
            sign = -1 if link["TxnType"] == "CreditMemo" else 1
            net += sign * line["Amount"]
        return money(pay.body["TotalAmt"] - net)

    # ------------------------------------------------------------------ rendering

    def render(self, realm: Realm, rec: Record) -> dict[str, Any]:
        """The API JSON of a record (a deleted one in its CDC form)."""
        if rec.deleted:
            return {
                "status": "Deleted",
                "domain": "QBO",
                "Id": rec.id,
                "MetaData": {"LastUpdatedTime": meta_time(rec.updated)},
            }
        out: dict[str, Any] = _public(rec.body)
        if rec.kind in DOC_KINDS:
            balance = self._balance(realm, rec)
            out["Balance"] = balance
            out["LinkedTxn"] = [dict(link) for link in rec.body.get("_links", [])] + [
                {"TxnId": tid, "TxnType": tt} for tid, tt in self._back_refs(realm, rec)
            ]
            rate = rec.body.get("ExchangeRate")
            if rate is not None:
                out["HomeBalance"] = money(balance * rate)
                out["HomeTotalAmt"] = money(Decimal(rec.body["TotalAmt"]) * rate)
            if rec.kind == "CreditMemo":
                out["RemainingCredit"] = balance
        elif rec.kind == "SalesReceipt":
            out["Balance"] = ZERO
        elif rec.kind == "Payment":
            out["UnappliedAmt"] = self._unapplied(rec)
            for line, raw in zip(out.get("Line", []), rec.body.get("Line", []), strict=True):
                line["LineEx"] = self._line_ex(raw)
        elif rec.kind in NAME_KINDS:
            out["Balance"] = out["BalanceWithJobs"] = self._name_balance(realm, rec)
            if rec.kind == "Vendor":
                out.pop("BalanceWithJobs")
        out["domain"] = "QBO"
        out["sparse"] = False
        out["Id"] = rec.id
        out["SyncToken"] = str(rec.sync_token)
        out["MetaData"] = {
            "CreateTime": meta_time(rec.created),
            "LastUpdatedTime": meta_time(rec.updated),
        }
        rendered: dict[str, Any] = render_numbers(out)
        return rendered

    def _back_refs(self, realm: Realm, doc: Record) -> list[tuple[str, str]]:
        return [
            (pid, self._link_type(realm.txns[pid]))
            for pid in realm.applications.get(doc.id, {})
            if pid in realm.txns
        ]

    @staticmethod
    def _line_ex(line: Mapping[str, Any]) -> dict[str, Any]:
        def nv(name: str, value: str) -> dict[str, Any]:
            return {
                "name": "{http://schema.intuit.com/finance/v3}NameValue",
                "nil": False,
                "value": {"Name": name, "Value": value},
                "declaredType": "com.intuit.schema.finance.v3.NameValue",
                "scope": "javax.xml.bind.JAXBElement$GlobalScope",
                "globalScope": True,
                "typeSubstituted": False,
            }

        link = line["LinkedTxn"][0]
        items = [nv("txnId", str(link["TxnId"]))]
        if "_open_balance" in line:
            items.append(nv("txnOpenBalance", format(line["_open_balance"], "f")))
        if line.get("_doc_number"):
            items.append(nv("txnReferenceNumber", str(line["_doc_number"])))
        return {"any": items}

    def _name_balance(self, realm: Realm, name: Record) -> Decimal:
        total = ZERO
        key = "CustomerRef" if name.kind == "Customer" else "VendorRef"
        for rec in realm.txns.values():
            if rec.deleted or rec.body.get(key, {}).get("value") != name.id:
                continue
            if rec.kind in {"Invoice", "Bill"}:
                total += self._balance(realm, rec)
            elif rec.kind == "CreditMemo":
                total -= self._balance(realm, rec)
            elif rec.kind in PAY_KINDS:
                if rec.kind == "Payment":
                    total -= self._unapplied(rec)
                else:
                    lines = sum((ln["Amount"] for ln in rec.body.get("Line", [])), ZERO)
                    total -= money(rec.body["TotalAmt"] - lines)
        return money(total)

    # ------------------------------------------------------------------ reads (API)

    def read(self, realm_id: str, kind: str, entity_id: str) -> dict[str, Any]:
        """``GET …/{entity}/{id}``: ``{"Invoice": {...}}``.

        Raises:
            QboFault: 610 for an unknown or deleted entity.
        """
        with self.lock:
            realm = self._realm(realm_id)
            if kind == "CompanyInfo":
                return {"CompanyInfo": self._company_info(realm)}
            return {kind: self.render(realm, self._find(realm, kind, entity_id))}

    def preferences(self, realm_id: str) -> dict[str, Any]:
        """``GET …/preferences``."""
        with self.lock:
            return {"Preferences": self._preferences(self._realm(realm_id))}

    def _company_info(self, realm: Realm) -> dict[str, Any]:
        return {
            "CompanyName": realm.company_name,
            "LegalName": realm.company_name,
            "CompanyAddr": {
                "Id": "1",
                "Line1": "123 Sierra Way",
                "City": "San Pablo",
                "CountrySubDivisionCode": "CA",
                "PostalCode": "87999",
            },
            "Country": "US",
            "Email": {"Address": "noreply@quickbooks.com"},
            "FiscalYearStartMonth": "January",
            "SupportedLanguages": "en",
            "domain": "QBO",
            "sparse": False,
            "Id": "1",
            "SyncToken": "0",
            "MetaData": {
                "CreateTime": meta_time(realm.created),
                "LastUpdatedTime": meta_time(realm.created),
            },
        }

    def _preferences(self, realm: Realm) -> dict[str, Any]:
        return {
            "CurrencyPrefs": {
                "MultiCurrencyEnabled": True,
                "HomeCurrency": {"value": realm.home_currency},
            },
            "SalesFormsPrefs": {"AutoApplyPayments": False, "CustomTxnNumbers": True},
            "domain": "QBO",
            "sparse": False,
            "Id": "1",
            "SyncToken": "0",
            "MetaData": {
                "CreateTime": meta_time(realm.created),
                "LastUpdatedTime": meta_time(realm.created),
            },
        }

    def query(self, realm_id: str, statement: str) -> dict[str, Any]:
        """Run a query statement; returns the ``QueryResponse`` object.

        Raises:
            QboFault: 4000/4001 for statements that do not parse or are not allowed.
        """
        parsed = parse_query(statement)
        entity = entity_name(parsed.entity)
        if entity is None:
            # sandbox wording
            raise query_invalid(f"Entity {parsed.entity} is not supported")
        with self.lock:
            realm = self._realm(realm_id)
            if entity == "CompanyInfo":
                items = [self._company_info(realm)]
            elif entity == "Preferences":
                items = [self._preferences(realm)]
            else:
                return self._query_records(realm, parsed, entity)
            return execute(parsed, entity, items)

    def _query_records(self, realm: Realm, parsed: Query, entity: str) -> dict[str, Any]:
        live = [rec for rec in realm.records[entity].values() if not rec.deleted]
        views = {
            rec.id: {
                "Id": rec.id,
                "MetaData": {
                    "CreateTime": meta_time(rec.created),
                    "LastUpdatedTime": meta_time(rec.updated),
                },
            }
            for rec in live
        }
        if all(c.field.lower() in PREFILTER_FIELDS for c in parsed.where) and all(
            name.lower() in PREFILTER_FIELDS for name, _ in parsed.order
        ):
            # Everything is decidable on Id/MetaData: page first, render only the page.
            result = execute(parsed, entity, views.values())
            if entity in result:
                by_id = realm.records[entity]
                result[entity] = [self.render(realm, by_id[v["Id"]]) for v in result[entity]]
            return result
        cheap = prefilter(parsed, entity)
        items = [self.render(realm, rec) for rec in live if cheap is None or cheap(views[rec.id])]
        return execute(parsed, entity, items)

    def cdc(self, realm_id: str, entities: str, changed_since: str) -> dict[str, Any]:
        """``GET …/cdc``: the ``CDCResponse`` list.

        Raises:
            QboFault: For missing/unknown entities, a bad ``changedSince``, or one older
                than 30 days (sandbox wording).
        """
        names: list[str] = []
        for raw in (entities or "").split(","):
            if not raw.strip():
                continue
            name = entity_name(raw.strip())
            if name is None or name not in KINDS:
                raise query_invalid(f"Entity {raw.strip()} is not supported for CDC")
            if name not in names:
                names.append(name)
        if not names:
            raise required("entities")
        if not changed_since:
            raise required("changedSince")
        try:
            since = parse_moment(changed_since)
        except ValueError:
            raise invalid_property(
                f"changedSince: {changed_since!r} is not a date-time", "changedSince"
            ) from None
        with self.lock:
            realm = self._realm(realm_id)
            now = self.clock.now()
            if now - since > CDC_LOOKBACK:
                # sandbox wording
                raise query_invalid("changedSince must be within the last 30 days")
            changed = [
                rec
                for name in names
                for rec in realm.records[name].values()
                if rec.updated >= since
            ]
            changed.sort(key=lambda r: r.updated)
            kept = changed[:CDC_LIMIT]
            groups: list[dict[str, Any]] = []
            for name in names:
                mine = [r for r in kept if r.kind == name]
                ordered = [r for r in mine if not r.deleted] + [r for r in mine if r.deleted]
                if not ordered:
                    groups.append({})
                    continue
                groups.append(
                    {
                        name: [self.render(realm, r) for r in ordered],
                        "startPosition": 1,
                        "maxResults": len(ordered),
                        "totalCount": len(ordered),
                    }
                )
            return {"CDCResponse": [{"QueryResponse": groups}]}

    # ------------------------------------------------------------------ writes (API)

    @staticmethod
    def operation_of(operation: str | None, include: str | None, data: Any) -> str:
        """``create``, ``update``, ``sparse``, ``void`` or ``delete`` for a POST."""
        op = (operation or "").lower()
        if op == "delete":
            return "delete"
        if op == "void" or (op == "update" and (include or "").lower() == "void"):
            return "void"
        if isinstance(data, Mapping) and data.get("Id") not in (None, ""):
            return "sparse" if data.get("sparse") in (True, "true") else "update"
        return "create"

    def write(self, realm_id: str, kind: str, op: str, data: Any) -> dict[str, Any]:
        """Perform one write; returns ``{kind: entity}``.

        Args:
            realm_id: The company.
            kind: Entity name.
            op: From :meth:`operation_of`.
            data: The parsed JSON body.

        Raises:
            QboFault: Validation and business-rule faults.
        """
        if not isinstance(data, Mapping):
            raise invalid_property(f"The request body must be a {kind} object")
        with self.lock:
            realm = self._realm(realm_id)
            now = self._stamp()
            if kind in PAY_KINDS:
                return self._write_pay(realm, kind, op, data, now)
            if kind in DOC_KINDS or kind == "SalesReceipt":
                return self._write_document(realm, kind, op, data, now)
            if kind in NAME_KINDS:
                return self._write_name(realm, kind, op, data, now)
            # sandbox wording
            raise unsupported(f"The sandbox does not support writing {kind} entities")

    def batch(self, realm_id: str, items: list[Any]) -> list[dict[str, Any]]:
        """Run batch items independently; each answer carries its ``bId``.

        The caller has validated the envelope (list, size, bIds).
        """
        out: list[dict[str, Any]] = []
        with self.lock:
            for item in items:
                bid = str(item.get("bId"))
                try:
                    out.append({"bId": bid, **self._batch_item(realm_id, item)})
                except QboFault as fault:
                    out.append({"bId": bid, "Fault": fault.fault()})
        return out

    def _batch_item(self, realm_id: str, item: Mapping[str, Any]) -> dict[str, Any]:
        if "Query" in item:
            return {"QueryResponse": self.query(realm_id, str(item["Query"]))}
        kind, data = self.batch_entity(item)
        operation = str(item.get("operation") or "").lower()
        if operation not in {"create", "update", "delete"}:
            raise invalid_property(f"Unsupported batch operation {item.get('operation')!r}")
        options = str(item.get("optionsData") or "").lower()
        if operation == "delete":
            op = "delete"
        elif operation == "update" and options == "void":
            op = "void"
        elif operation == "update":
            if not isinstance(data, Mapping) or data.get("Id") in (None, ""):
                raise required("Id")
            op = "sparse" if data.get("sparse") in (True, "true") else "update"
        else:
            op = "create"
        return self.write(realm_id, kind, op, data)

    @staticmethod
    def batch_entity(item: Mapping[str, Any]) -> tuple[str, Any]:
        """The (entity name, body) of a batch item.

        Raises:
            QboFault: When the item names no entity, several, or one not emulated.
        """
        keys = [k for k in item if k not in {"bId", "operation", "optionsData"}]
        if len(keys) != 1:
            raise invalid_property("A batch item must carry exactly one entity or a Query")
        kind = resource_kind(keys[0])
        if kind is None or kind != keys[0]:
            # sandbox wording
            raise unsupported(f"The sandbox does not emulate {keys[0]}")
        return kind, item[keys[0]]

    # ------------------------------------------------------------------ payments

    def _write_pay(
        self, realm: Realm, kind: str, op: str, data: Mapping[str, Any], now: datetime
    ) -> dict[str, Any]:
        if op == "create":
            plan = self._plan_pay(realm, kind, data, None, full=True)
            rec = self._commit_pay(realm, kind, plan, None, now)
            return {kind: self.render(realm, rec)}
        rec = self._find(realm, kind, data.get("Id"))
        if _sync_token(data) != str(rec.sync_token):
            raise stale()
        if op == "delete":
            self._unapply(realm, rec, now)
            rec.deleted = True
            self._touch(realm, rec, now, "Delete")
            return {kind: {"status": "Deleted", "domain": "QBO", "Id": rec.id}}
        if op == "void":
            if not rec.voided:
                self._void_pay(realm, rec, now)
            return {kind: self.render(realm, rec)}
        if rec.voided:
            raise business(f"This {kind} has been voided and can't be changed")
        plan = self._plan_pay(realm, kind, data, rec, full=op == "update")
        self._commit_pay(realm, kind, plan, rec, now)
        return {kind: self.render(realm, rec)}

    def _plan_pay(
        self,
        realm: Realm,
        kind: str,
        data: Mapping[str, Any],
        existing: Record | None,
        *,
        full: bool,
    ) -> _PayPlan:
        is_ar = kind == "Payment"
        party_key, party_kind = ("CustomerRef", "Customer") if is_ar else ("VendorRef", "Vendor")
        src: dict[str, Any] = dict(data)
        if existing is not None and not full:
            src = {**_public(existing.body), **dict(data)}
        party = self._party(realm, party_kind, src.get(party_key), party_key)
        currency = self._check_currency(realm, party, src.get("CurrencyRef"))
        rate = self._rate(realm, currency, src.get("ExchangeRate"))
        raw_lines = src.get("Line") or []
        if not isinstance(raw_lines, list):
            raise invalid_property("Line must be a list", "Line")
        if not is_ar and "Line" not in src:
            raise required("Line")
        previous = {} if existing is None else self._applications_of(realm, existing)
        allowed = ("Invoice", "CreditMemo") if is_ar else ("Bill",)
        documented = (
            ("JournalEntry", "Expense", "Check", "CreditCardCredit")
            if is_ar
            else ("VendorCredit", "JournalEntry")
        )
        lines: list[dict[str, Any]] = []
        applications: dict[str, Decimal] = {}
        docs: dict[str, Record] = {}
        net = ZERO
        for raw in raw_lines:
            if not isinstance(raw, Mapping):
                raise invalid_property("Each Line must be an object", "Line")
            amount = _amount(raw.get("Amount"), "Line.Amount")
            if amount < 0:
                raise QboFault("2290", "Negative Amount", "Line amounts can't be negative", element="Line.Amount")  # fmt: skip
            links = raw.get("LinkedTxn")
            if not isinstance(links, list) or not links:
                raise required("Line.LinkedTxn")
            if len(links) > 1:
                raise unsupported("The sandbox supports one LinkedTxn per payment line")
            link = links[0] if isinstance(links[0], Mapping) else {}
            txn_id = str(link.get("TxnId") or "").strip()
            txn_type = str(link.get("TxnType") or "").strip()
            if not txn_id:
                raise required("LinkedTxn.TxnId")
            if not txn_type:
                raise required("LinkedTxn.TxnType")
            if txn_type not in allowed:
                if txn_type in documented:
                    raise unsupported(f"The sandbox does not emulate {txn_type} transactions")
                raise business(f"A {kind} can't be linked to a transaction of type {txn_type}")
            doc = realm.records[txn_type].get(txn_id)
            if doc is None or doc.deleted:
                raise business(
                    f"The {txn_type} with Id {txn_id} you're linking to doesn't exist "
                    "or has been deleted",
                    "LinkedTxn",
                )
            if doc.body.get(party_key, {}).get("value") != party.id:
                raise business(
                    f"{txn_type} {doc.body.get('DocNumber', txn_id)} belongs to another "
                    f"{party_kind.lower()}; a {kind} can only be applied to transactions "
                    f"of {party.body['DisplayName']}",
                    "LinkedTxn",
                )
            if self._currency(realm, doc) != currency:
                raise business(
                    f"{txn_type} {doc.body.get('DocNumber', txn_id)} is in "
                    f"{self._currency(realm, doc)}, the {kind} in {currency}",
                    "CurrencyRef",
                )
            open_balance = self._balance(realm, doc) + previous.get(doc.id, ZERO)
            docs[doc.id] = doc
            applications[doc.id] = applications.get(doc.id, ZERO) + amount
            line: dict[str, Any] = {
                "Amount": amount,
                "LinkedTxn": [{"TxnId": doc.id, "TxnType": txn_type}],
            }
            if is_ar:
                line["_open_balance"] = open_balance
                line["_doc_number"] = doc.body.get("DocNumber")
            lines.append(line)
            net += -amount if txn_type == "CreditMemo" else amount
        for doc_id, amount in applications.items():
            doc = docs[doc_id]
            available = self._balance(realm, doc) + previous.get(doc_id, ZERO)
            if amount > available:
                raise business(
                    f"The amount applied to {doc.kind} {doc.body.get('DocNumber', doc_id)} "
                    f"({amount}) exceeds its open balance ({available})",
                    "Line.Amount",
                )
        if src.get("TotalAmt") in (None, "") and existing is not None:
            total = net
        else:
            total = _amount(src.get("TotalAmt"), "TotalAmt")
        if total < 0:
            raise business("TotalAmt can't be negative", "TotalAmt")
        if net < 0:
            raise business("The credits applied exceed the invoices paid", "Line")
        if net > total:
            raise business(
                f"The amount applied to transactions ({net}) exceeds the payment total ({total})",
                "TotalAmt",
            )
        body: dict[str, Any] = {
            "TxnDate": _date(src["TxnDate"], "TxnDate")
            if src.get("TxnDate")
            else company_date(self.clock.now()).isoformat(),
            "CurrencyRef": self._currency_ref(currency),
            "TotalAmt": total,
            party_key: _ref(party.id, party.body["DisplayName"]),
            "Line": lines,
        }
        if rate is not None:
            body["ExchangeRate"] = rate
        if is_ar:
            dep = src.get("DepositToAccountRef") or {"value": realm.accounts["undeposited"]}
            account = self._account(
                realm, dep, "DepositToAccountRef", ("Bank", "Other Current Asset")
            )
            body["DepositToAccountRef"] = {"value": account.id}
            body["ProcessPayment"] = False
        else:
            self._plan_pay_type(realm, src, body)
        for key in _PAY_PASSTHROUGH[kind]:
            value = src.get(key)
            if value in (None, ""):
                continue
            if key.endswith("Ref"):
                body[key] = _clean_ref(value, key)
            elif key == "PrivateNote":
                body[key] = _text(value, key, PRIVATE_NOTE_MAX)
            elif key == "DocNumber":
                body[key] = _text(value, key, DOC_NUMBER_MAX)
            else:
                body[key] = str(value)
        return _PayPlan(body, applications)

    def _plan_pay_type(self, realm: Realm, src: Mapping[str, Any], body: dict[str, Any]) -> None:
        pay_type = src.get("PayType")
        if pay_type in (None, ""):
            raise required("PayType")
        if pay_type == "Check":
            check = src.get("CheckPayment")
            if not isinstance(check, Mapping) or check.get("BankAccountRef") is None:
                raise required("CheckPayment.BankAccountRef")
            account = self._account(
                realm, check["BankAccountRef"], "CheckPayment.BankAccountRef", ("Bank",)
            )
            status = str(check.get("PrintStatus") or "NeedToPrint")
            if status not in {"NotSet", "NeedToPrint", "PrintComplete"}:
                raise invalid_property(f"Invalid PrintStatus {status}", "PrintStatus")
            body["PayType"] = "Check"
            body["CheckPayment"] = {
                "BankAccountRef": _ref(account.id, account.body["Name"]),
                "PrintStatus": status,
            }
        elif pay_type == "CreditCard":
            card = src.get("CreditCardPayment")
            if not isinstance(card, Mapping) or card.get("CCAccountRef") is None:
                raise required("CreditCardPayment.CCAccountRef")
            account = self._account(
                realm, card["CCAccountRef"], "CreditCardPayment.CCAccountRef", ("Credit Card",)
            )
            body["PayType"] = "CreditCard"
            body["CreditCardPayment"] = {"CCAccountRef": _ref(account.id, account.body["Name"])}
        else:
            raise invalid_property(
                f"PayType must be Check or CreditCard, not {pay_type}", "PayType"
            )

    def _applications_of(self, realm: Realm, pay: Record) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for doc_id, by_payment in realm.applications.items():
            if pay.id in by_payment:
                out[doc_id] = by_payment[pay.id]
        return out

    def _commit_pay(
        self,
        realm: Realm,
        kind: str,
        plan: _PayPlan,
        existing: Record | None,
        now: datetime,
    ) -> Record:
        if existing is None:
            rec = self._add(realm, kind, plan.body, now)
            old: dict[str, Decimal] = {}
        else:
            rec = existing
            old = self._applications_of(realm, rec)
            rec.body = plan.body
            self._touch(realm, rec, now)
        for doc_id in old:
            realm.applications[doc_id].pop(rec.id, None)
        for doc_id, amount in plan.applications.items():
            if amount:
                realm.applications.setdefault(doc_id, {})[rec.id] = amount
        for doc_id in sorted(set(old) | set(plan.applications), key=int):
            if old.get(doc_id) != (plan.applications.get(doc_id) or None):
                self._touch(realm, realm.txns[doc_id], now)
        return rec

    def _unapply(self, realm: Realm, pay: Record, now: datetime) -> None:
        for doc_id in self._applications_of(realm, pay):
            realm.applications[doc_id].pop(pay.id, None)
            self._touch(realm, realm.txns[doc_id], now)

    def _void_pay(self, realm: Realm, pay: Record, now: datetime) -> None:
        self._unapply(realm, pay, now)
        pay.body["TotalAmt"] = ZERO
        pay.body["Line"] = []
        note = pay.body.get("PrivateNote")
        pay.body["PrivateNote"] = f"Voided - {note}" if note else "Voided"
        pay.voided = True
        self._touch(realm, pay, now, "Void")

    # ------------------------------------------------------------------ documents

    def _write_document(
        self, realm: Realm, kind: str, op: str, data: Mapping[str, Any], now: datetime
    ) -> dict[str, Any]:
        if op == "create":
            body = self._plan_document(realm, kind, dict(data), None, now)
            return {kind: self.render(realm, self._add(realm, kind, body, now))}
        rec = self._find(realm, kind, data.get("Id"))
        if _sync_token(data) != str(rec.sync_token):
            raise stale()
        if op == "delete":
            self._delete_document(realm, rec, now)
            return {kind: {"status": "Deleted", "domain": "QBO", "Id": rec.id}}
        if op == "void":
            if kind not in {"Invoice", "SalesReceipt", "CreditMemo"}:
                raise business(f"A {kind} can't be voided; delete it instead")
            if not rec.voided:
                self._void_document(realm, rec, now)
            return {kind: self.render(realm, rec)}
        if rec.voided:
            raise business(f"This {kind} has been voided and can't be changed")
        if op == "sparse":
            merged = {**_public(rec.body), **{k: v for k, v in data.items()}}
        else:
            merged = dict(data)
        rec.body = self._plan_document(realm, kind, merged, rec, now)
        self._touch(realm, rec, now)
        return {kind: self.render(realm, rec)}

    def _plan_document(
        self,
        realm: Realm,
        kind: str,
        src: dict[str, Any],
        existing: Record | None,
        now: datetime,
    ) -> dict[str, Any]:
        is_ap = kind == "Bill"
        party_key, party_kind = ("VendorRef", "Vendor") if is_ap else ("CustomerRef", "Customer")
        party = self._party(realm, party_kind, src.get(party_key), party_key)
        if (
            existing is not None
            and self._applied(realm, existing.id) > 0
            and party.id != existing.body[party_key]["value"]
        ):
            raise business(
                f"The {party_kind.lower()} of a {kind} with payments applied can't be changed",
                party_key,
            )
        currency = self._check_currency(realm, party, src.get("CurrencyRef"))
        rate = self._rate(realm, currency, src.get("ExchangeRate"))
        lines = src.get("Line")
        if not isinstance(lines, list) or not lines:
            raise required("Line")
        body: dict[str, Any] = {}
        for key in _DOC_WRITABLE[kind]:
            if src.get(key) not in (None, "", []):
                body[key] = _prune(src[key])
        body[party_key] = _ref(party.id, party.body["DisplayName"])
        body["CurrencyRef"] = self._currency_ref(currency)
        body.pop("ExchangeRate", None)
        if rate is not None:
            body["ExchangeRate"] = rate
        today = company_date(self.clock.now())
        body["TxnDate"] = (
            _date(body["TxnDate"], "TxnDate") if "TxnDate" in body else today.isoformat()
        )
        if "DueDate" in body:
            body["DueDate"] = _date(body["DueDate"], "DueDate")
        elif kind in {"Invoice", "Bill"}:
            body["DueDate"] = (date.fromisoformat(body["TxnDate"]) + timedelta(days=30)).isoformat()
        if "PrivateNote" in body:
            body["PrivateNote"] = _text(body["PrivateNote"], "PrivateNote", PRIVATE_NOTE_MAX)
        if not body.get("DocNumber") and kind != "Bill":
            body["DocNumber"] = (
                existing.body.get("DocNumber") if existing else None
            ) or self._next_doc_number(realm)
        if is_ap:
            body["Line"] = self._expense_lines(realm, lines)
            body["TotalAmt"] = sum((ln["Amount"] for ln in body["Line"]), ZERO)
            body.setdefault("APAccountRef", _ref(realm.accounts["ap"], "Accounts Payable (A/P)"))
        else:
            body["Line"] = self._sales_lines(lines)
            body.setdefault("ApplyTaxAfterDiscount", False)
            body.setdefault("PrintStatus", "NotSet")
            body.setdefault("EmailStatus", "NotSet")
            if kind == "Invoice":
                body.setdefault("Deposit", ZERO)
            if kind == "SalesReceipt":
                dep = body.get("DepositToAccountRef") or {"value": realm.accounts["undeposited"]}
                account = self._account(
                    realm, dep, "DepositToAccountRef", ("Bank", "Other Current Asset")
                )
                body["DepositToAccountRef"] = _ref(account.id, account.body["Name"])
            self._recompute_sales_totals(body)
        if existing is not None:
            if "_links" in existing.body:
                body["_links"] = existing.body["_links"]
            applied = self._applied(realm, existing.id)
            if body["TotalAmt"] < applied:
                raise business(
                    f"The new total ({body['TotalAmt']}) is less than the payments applied "
                    f"to this {kind} ({applied})",
                    "Line",
                )
        return body

    @staticmethod
    def _sales_lines(raw_lines: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for raw in raw_lines:
            if not isinstance(raw, Mapping):
                raise invalid_property("Each Line must be an object", "Line")
            detail_type = raw.get("DetailType") or "SalesItemLineDetail"
            if detail_type == "SubTotalLineDetail":
                continue  # recomputed
            if detail_type not in {"SalesItemLineDetail", "DescriptionOnly"}:
                raise unsupported(f"The sandbox does not support {detail_type} lines")
            detail = _prune(raw.get(detail_type) or {}) if detail_type != "DescriptionOnly" else {}
            amount_raw = raw.get("Amount")
            if amount_raw in (None, "") and detail.get("Qty") is not None:
                amount_raw = Decimal(str(detail["Qty"])) * Decimal(str(detail.get("UnitPrice", 0)))
            amount = _amount(amount_raw, "Line.Amount")
            n = len(out) + 1
            line: dict[str, Any] = {"Id": str(n), "LineNum": n, "Amount": amount}
            if raw.get("Description"):
                line["Description"] = str(raw["Description"])
            line["DetailType"] = detail_type
            if detail_type == "SalesItemLineDetail":
                detail.setdefault("TaxCodeRef", {"value": "NON"})
                line["SalesItemLineDetail"] = detail
            else:
                line["DescriptionLineDetail"] = {}
            out.append(line)
        if not out:
            raise required("Line")
        return out

    def _expense_lines(self, realm: Realm, raw_lines: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for raw in raw_lines:
            if not isinstance(raw, Mapping):
                raise invalid_property("Each Line must be an object", "Line")
            detail_type = raw.get("DetailType") or "AccountBasedExpenseLineDetail"
            if detail_type not in {"AccountBasedExpenseLineDetail", "ItemBasedExpenseLineDetail"}:
                raise unsupported(f"The sandbox does not support {detail_type} lines")
            detail = _prune(raw.get(detail_type) or {})
            if detail_type == "AccountBasedExpenseLineDetail":
                if detail.get("AccountRef") is None:
                    raise required("AccountBasedExpenseLineDetail.AccountRef")
                account = self._find(realm, "Account", _clean_ref(detail["AccountRef"], "AccountRef")["value"], "AccountRef")  # fmt: skip
                detail["AccountRef"] = _ref(account.id, account.body["Name"])
                detail.setdefault("BillableStatus", "NotBillable")
                detail.setdefault("TaxCodeRef", {"value": "NON"})
            line: dict[str, Any] = {
                "Id": str(len(out) + 1),
                "Amount": _amount(raw.get("Amount"), "Line.Amount"),
                "DetailType": detail_type,
                detail_type: detail,
            }
            if raw.get("Description"):
                line["Description"] = str(raw["Description"])
            out.append(line)
        return out

    @staticmethod
    def _recompute_sales_totals(body: dict[str, Any]) -> None:
        """Subtotal line, 8 % tax on ``TAX`` lines, ``TotalAmt``."""
        lines = [ln for ln in body["Line"] if ln.get("DetailType") != "SubTotalLineDetail"]
        subtotal = sum((ln["Amount"] for ln in lines), ZERO)
        taxable = sum(
            (
                ln["Amount"]
                for ln in lines
                if ln.get("SalesItemLineDetail", {}).get("TaxCodeRef", {}).get("value") == "TAX"
            ),
            ZERO,
        )
        lines.append(
            {"Amount": subtotal, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}
        )
        body["Line"] = lines
        if taxable > 0:
            tax = money(taxable * TAX_RATE)
            body["TxnTaxDetail"] = {
                "TxnTaxCodeRef": {"value": "2"},
                "TotalTax": tax,
                "TaxLine": [
                    {
                        "Amount": tax,
                        "DetailType": "TaxLineDetail",
                        "TaxLineDetail": {
                            "TaxRateRef": {"value": "3"},
                            "PercentBased": True,
                            "TaxPercent": TAX_PERCENT,
                            "NetAmountTaxable": taxable,
                        },
                    }
                ],
            }
        else:
            tax = ZERO
            body["TxnTaxDetail"] = {"TotalTax": ZERO}
        body["TotalAmt"] = money(subtotal + tax)

    def _unlink_payments(self, realm: Realm, doc: Record, now: datetime) -> None:
        """Payments applied to ``doc`` lose their lines to it (they become unapplied credit)."""
        for pid in list(realm.applications.pop(doc.id, {})):
            pay = realm.txns[pid]
            pay.body["Line"] = [
                ln for ln in pay.body.get("Line", []) if ln["LinkedTxn"][0]["TxnId"] != doc.id
            ]
            self._touch(realm, pay, now)

    def _void_document(self, realm: Realm, doc: Record, now: datetime) -> None:
        self._unlink_payments(realm, doc, now)
        for line in doc.body.get("Line", []):
            line["Amount"] = ZERO
            detail = line.get("SalesItemLineDetail")
            if detail is not None:
                detail["Qty"] = 0
        tax = doc.body.get("TxnTaxDetail")
        if tax is not None:
            tax["TotalTax"] = ZERO
            for tax_line in tax.get("TaxLine", []):
                tax_line["Amount"] = ZERO
                tax_line.get("TaxLineDetail", {})["NetAmountTaxable"] = ZERO
        doc.body["TotalAmt"] = ZERO
        note = doc.body.get("PrivateNote")
        doc.body["PrivateNote"] = f"Voided - {note}" if note else "Voided"
        doc.voided = True
        self._touch(realm, doc, now, "Void")

    def _delete_document(self, realm: Realm, doc: Record, now: datetime) -> None:
        self._unlink_payments(realm, doc, now)
        doc.deleted = True
        self._touch(realm, doc, now, "Delete")

    # ------------------------------------------------------------------ names

    def _write_name(
        self, realm: Realm, kind: str, op: str, data: Mapping[str, Any], now: datetime
    ) -> dict[str, Any]:
        if op in {"delete", "void"}:
            # sandbox wording; QuickBooks names are made inactive, never deleted
            raise business(f"A {kind} can't be deleted; make it inactive (Active = false)")
        existing = None
        if op != "create":
            existing = self._find(realm, kind, data.get("Id"))
            if _sync_token(data) != str(existing.sync_token):
                raise stale()
        src = dict(data)
        if existing is not None and op == "sparse":
            src = {**_public(existing.body), **src}
        body: dict[str, Any] = {
            k: _prune(src[k]) for k in _NAME_WRITABLE if src.get(k) not in (None, "")
        }
        display = str(
            body.get("DisplayName")
            or " ".join(p for p in (body.get("GivenName"), body.get("FamilyName")) if p)
            or body.get("CompanyName")
            or ""
        ).strip()
        if not display:
            raise required("DisplayName")
        for other_kind in NAME_KINDS:
            for other in realm.records[other_kind].values():
                if other is not existing and other.body["DisplayName"].lower() == display.lower():
                    raise duplicate_name()
        body["DisplayName"] = display
        body.setdefault("PrintOnCheckName", display)
        body.setdefault("Active", True)
        if kind == "Customer":
            body["FullyQualifiedName"] = display
        currency = realm.home_currency
        if body.get("CurrencyRef") is not None:
            currency = _clean_ref(body["CurrencyRef"], "CurrencyRef")["value"].upper()
        if currency not in CURRENCY_NAMES:
            raise business(f"Currency {currency} is not enabled for this company", "CurrencyRef")
        if existing is not None and currency != self._currency(realm, existing):
            raise business(f"The currency of a {kind} can't be changed", "CurrencyRef")
        body["CurrencyRef"] = self._currency_ref(currency)
        if existing is None:
            return {kind: self.render(realm, self._add(realm, kind, body, now))}
        existing.body = body
        self._touch(realm, existing, now)
        return {kind: self.render(realm, existing)}

    # ------------------------------------------------------------------ faults

    def interfere(self, realm_id: str, fault: str, writes: list[tuple[str, str, Any]]) -> None:
        """Apply ``paid_elsewhere`` or ``concurrent_edit`` before a write is processed.

        Args:
            realm_id: The company.
            fault: ``paid_elsewhere`` (pay the target documents in full, as a person in
                the UI would: no reference, no requestid) or ``concurrent_edit`` (bump
                the target's SyncToken and LastUpdatedTime, as a person editing it).
            writes: (entity, operation, body) of each write in the call.
        """
        with self.lock:
            realm = self._realm(realm_id)
            now = self._stamp()
            for kind, op, data in writes:
                if not isinstance(data, Mapping):
                    continue
                own = None
                if op != "create" and data.get("Id") not in (None, ""):
                    own = realm.records.get(kind, {}).get(str(data["Id"]).strip())
                    if own is not None and own.deleted:
                        own = None
                linked = self._linked_documents(realm, kind, data)
                if fault == "paid_elsewhere":
                    targets = linked or ([own] if own is not None and own.kind in {"Invoice", "Bill"} else [])  # fmt: skip
                    for doc in targets:
                        balance = self._balance(realm, doc)
                        if balance > 0 and not doc.voided:
                            self._pay_in_full(realm, doc, balance, now)
                elif fault == "concurrent_edit":
                    for rec in [own] if own is not None else linked:
                        self._touch(realm, rec, now)

    def _linked_documents(self, realm: Realm, kind: str, data: Mapping[str, Any]) -> list[Record]:
        if kind not in PAY_KINDS:
            return []
        out: list[Record] = []
        for line in data.get("Line") or []:
            if not isinstance(line, Mapping):
                continue
            for link in line.get("LinkedTxn") or []:
                if not isinstance(link, Mapping) or link.get("TxnType") not in {"Invoice", "Bill"}:
                    continue
                doc = realm.records[str(link["TxnType"])].get(str(link.get("TxnId", "")).strip())
                if doc is not None and not doc.deleted and doc not in out:
                    out.append(doc)
        return out

    def _pay_in_full(self, realm: Realm, doc: Record, amount: Decimal, now: datetime) -> Record:
        link_type = doc.kind
        if doc.kind == "Invoice":
            data: dict[str, Any] = {
                "CustomerRef": doc.body["CustomerRef"],
                "TotalAmt": amount,
                "DepositToAccountRef": {"value": realm.accounts["undeposited"]},
                "Line": [
                    {"Amount": amount, "LinkedTxn": [{"TxnId": doc.id, "TxnType": link_type}]}
                ],
            }
            kind = "Payment"
        else:
            data = {
                "VendorRef": doc.body["VendorRef"],
                "TotalAmt": amount,
                "PayType": "Check",
                "CheckPayment": {"BankAccountRef": {"value": realm.accounts["checking"]}},
                "Line": [
                    {"Amount": amount, "LinkedTxn": [{"TxnId": doc.id, "TxnType": link_type}]}
                ],
            }
            kind = "BillPayment"
        plan = self._plan_pay(realm, kind, data, None, full=True)
        return self._commit_pay(realm, kind, plan, None, now)

    # ------------------------------------------------------------------ test API: reads

    def _listing(self, realm_id: str, kind: str, include_deleted: bool) -> list[dict[str, Any]]:
        with self.lock:
            realm = self._realm(realm_id)
            out = []
            for rec in realm.records[kind].values():
                if rec.deleted and not include_deleted:
                    continue
                out.append(self._full(realm, rec))
            return out

    def _full(self, realm: Realm, rec: Record) -> dict[str, Any]:
        """Like :meth:`render`, but a deleted record keeps its body (``status: Deleted``)."""
        if not rec.deleted:
            return self.render(realm, rec)
        rec.deleted = False
        try:
            out = self.render(realm, rec)
        finally:
            rec.deleted = True
        out["status"] = "Deleted"
        return out

    def invoices(self, realm_id: str) -> list[dict[str, Any]]:
        """All live invoices (voided included), in creation order."""
        return self._listing(realm_id, "Invoice", False)

    def bills(self, realm_id: str) -> list[dict[str, Any]]:
        """All live bills, in creation order."""
        return self._listing(realm_id, "Bill", False)

    def payments(self, realm_id: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Payments, in creation order; deleted ones (full body, ``"status": "Deleted"``) on request."""
        return self._listing(realm_id, "Payment", include_deleted)

    def bill_payments(self, realm_id: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Bill payments, in creation order; deleted ones on request."""
        return self._listing(realm_id, "BillPayment", include_deleted)

    def customers(self, realm_id: str) -> list[dict[str, Any]]:
        """All customers."""
        return self._listing(realm_id, "Customer", False)

    def vendors(self, realm_id: str) -> list[dict[str, Any]]:
        """All vendors."""
        return self._listing(realm_id, "Vendor", False)

    def accounts(self, realm_id: str) -> list[dict[str, Any]]:
        """The chart of accounts."""
        return self._listing(realm_id, "Account", False)

    def entity(self, realm_id: str, kind: str, entity_id: str) -> dict[str, Any]:
        """Any entity by kind and id (a deleted one with ``"status": "Deleted"``).

        Raises:
            KeyError: Unknown realm, kind or id.
        """
        with self.lock:
            realm = self._realm(realm_id)
            return self._full(realm, realm.records[kind][str(entity_id)])

    def invoice(self, realm_id: str, invoice_id: str) -> dict[str, Any]:
        """One invoice by id (a deleted one with ``"status": "Deleted"``).

        Raises:
            KeyError: Unknown realm or invoice.
        """
        return self.entity(realm_id, "Invoice", invoice_id)

    def bill(self, realm_id: str, bill_id: str) -> dict[str, Any]:
        """One bill by id.

        Raises:
            KeyError: Unknown realm or bill.
        """
        return self.entity(realm_id, "Bill", bill_id)

    # ------------------------------------------------------------------ test API: writes

    @staticmethod
    def _run(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        try:
            return fn(*args, **kwargs)
        except QboFault as fault:
            raise ValueError(_fault_text(fault)) from fault

    @staticmethod
    def _lookup(realm: Realm, kind: str, entity_id: str) -> Record:
        rec = realm.records[kind].get(str(entity_id))
        if rec is None or rec.deleted:
            raise KeyError(f"{kind} {entity_id}")
        return rec

    def _default_party(self, realm: Realm, kind: str, currency: str) -> Record:
        for rec in realm.records[kind].values():
            if not rec.deleted and self._currency(realm, rec) == currency:
                return rec
        raise ValueError(f"no {kind.lower()} in {currency}")

    def add_invoice(
        self,
        realm_id: str,
        *,
        total: Decimal = Decimal("100.00"),
        balance: Decimal | None = None,
        currency: str = "USD",
        customer_id: str | None = None,
        doc_number: str | None = None,
    ) -> dict[str, Any]:
        """Create an invoice with one untaxed line of ``total``.

        ``balance`` below ``total`` records a payment (as a person in the UI) of the
        difference, so ``Payment`` and ``LinkedTxn`` agree.

        Raises:
            KeyError: Unknown realm.
            ValueError: Bad amounts, or an unknown customer / one in another currency.
        """
        total = money(Decimal(str(total)))
        with self.lock:
            realm = self._realm(realm_id)
            currency = currency.upper()
            if customer_id is None:
                customer = self._default_party(realm, "Customer", currency)
            else:
                customer = self._run(self._find, realm, "Customer", customer_id)
                if self._currency(realm, customer) != currency:
                    raise ValueError(f"customer {customer_id} is not in {currency}")
            if balance is not None and not ZERO <= money(Decimal(str(balance))) <= total:
                raise ValueError("balance must be within 0..total")
            now = self._stamp()
            body = self._invoice_body(
                realm,
                customer,
                [(("Services", "1", total), Decimal(1), False)],
                currency,
                now,
                doc_number=doc_number,
            )
            inv = self._add(realm, "Invoice", body, now)
            if balance is not None and money(Decimal(str(balance))) < total:
                paid = total - money(Decimal(str(balance)))
                self._run(self._pay_in_full, realm, inv, paid, now)
            return self.render(realm, inv)

    def add_bill(
        self,
        realm_id: str,
        *,
        total: Decimal = Decimal("100.00"),
        balance: Decimal | None = None,
        currency: str = "USD",
        vendor_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a bill with one expense line of ``total`` (``balance`` as for invoices).

        Raises:
            KeyError: Unknown realm.
            ValueError: Bad amounts, or an unknown vendor / one in another currency.
        """
        total = money(Decimal(str(total)))
        with self.lock:
            realm = self._realm(realm_id)
            currency = currency.upper()
            if vendor_id is None:
                vendor = self._default_party(realm, "Vendor", currency)
            else:
                vendor = self._run(self._find, realm, "Vendor", vendor_id)
                if self._currency(realm, vendor) != currency:
                    raise ValueError(f"vendor {vendor_id} is not in {currency}")
            if balance is not None and not ZERO <= money(Decimal(str(balance))) <= total:
                raise ValueError("balance must be within 0..total")
            now = self._stamp()
            bill = self._add(
                realm, "Bill", self._bill_body(realm, vendor, total, currency, now), now
            )
            if balance is not None and money(Decimal(str(balance))) < total:
                paid = total - money(Decimal(str(balance)))
                self._run(self._pay_in_full, realm, bill, paid, now)
            return self.render(realm, bill)

    def add_credit_memo(
        self,
        realm_id: str,
        *,
        total: Decimal = Decimal("100.00"),
        currency: str = "USD",
        customer_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a credit memo (a customer credit that payments can apply).

        Raises:
            KeyError: Unknown realm.
            ValueError: Unknown customer.
        """
        total = money(Decimal(str(total)))
        with self.lock:
            realm = self._realm(realm_id)
            if customer_id is None:
                customer = self._default_party(realm, "Customer", currency.upper())
            else:
                customer = self._run(self._find, realm, "Customer", customer_id)
            now = self._stamp()
            body = self._invoice_body(
                realm,
                customer,
                [(("Services", "1", total), Decimal(1), False)],
                self._currency(realm, customer),
                now,
            )
            for key in ("DueDate", "SalesTermRef", "Deposit", "ShipAddr"):
                body.pop(key, None)
            rec = self._add(realm, "CreditMemo", body, now)
            return self.render(realm, rec)

    def apply_payment(
        self,
        realm_id: str,
        invoice_id: str,
        amount: Decimal,
        *,
        private_note: str | None = None,
    ) -> dict[str, Any]:
        """Record a payment of one invoice as a person in the UI would (no requestid).

        Raises:
            KeyError: Unknown realm.
            ValueError: With the QuickBooks fault text if the payment is refused.
        """
        with self.lock:
            realm = self._realm(realm_id)
            inv = self._lookup(realm, "Invoice", invoice_id)
            data: dict[str, Any] = {
                "CustomerRef": inv.body["CustomerRef"],
                "TotalAmt": Decimal(str(amount)),
                "DepositToAccountRef": {"value": realm.accounts["undeposited"]},
                "Line": [
                    {
                        "Amount": Decimal(str(amount)),
                        "LinkedTxn": [{"TxnId": inv.id, "TxnType": "Invoice"}],
                    }
                ],
            }
            if private_note:
                data["PrivateNote"] = private_note
            plan = self._run(self._plan_pay, realm, "Payment", data, None, full=True)
            rec = self._commit_pay(realm, "Payment", plan, None, self._stamp())
            return self.render(realm, rec)

    def apply_bill_payment(self, realm_id: str, bill_id: str, amount: Decimal) -> dict[str, Any]:
        """Pay one bill by check from Checking, as a person in the UI would.

        Raises:
            KeyError: Unknown realm.
            ValueError: With the QuickBooks fault text if the payment is refused.
        """
        with self.lock:
            realm = self._realm(realm_id)
            bill = self._lookup(realm, "Bill", bill_id)
            data = {
                "VendorRef": bill.body["VendorRef"],
                "TotalAmt": Decimal(str(amount)),
                "PayType": "Check",
                "CheckPayment": {"BankAccountRef": {"value": realm.accounts["checking"]}},
                "Line": [
                    {
                        "Amount": Decimal(str(amount)),
                        "LinkedTxn": [{"TxnId": bill.id, "TxnType": "Bill"}],
                    }
                ],
            }
            plan = self._run(self._plan_pay, realm, "BillPayment", data, None, full=True)
            rec = self._commit_pay(realm, "BillPayment", plan, None, self._stamp())
            return self.render(realm, rec)

    def edit_invoice(self, realm_id: str, invoice_id: str, **fields: Any) -> dict[str, Any]:
        """Edit an invoice as a person would (a sparse update); always bumps ``SyncToken``.

        Keyword names are QuickBooks property names (``PrivateNote``, ``DocNumber``,
        ``DueDate``, ``TxnDate``, ``CustomerMemo``, ``Line``…). With no fields the
        invoice is just saved again (SyncToken and LastUpdatedTime move).

        Raises:
            KeyError: Unknown realm or invoice.
            ValueError: With the fault text if the edit is refused.
        """
        with self.lock:
            realm = self._realm(realm_id)
            inv = self._lookup(realm, "Invoice", invoice_id)
            data = {**fields, "Id": inv.id, "SyncToken": str(inv.sync_token), "sparse": True}
            if not fields:
                self._touch(realm, inv, self._stamp())
                return self.render(realm, inv)
            result = self._run(self.write, realm.realm_id, "Invoice", "sparse", data)
            out: dict[str, Any] = result["Invoice"]
            return out

    def void_invoice(self, realm_id: str, invoice_id: str) -> dict[str, Any]:
        """Void an invoice (payments applied to it become unapplied credit).

        Raises:
            KeyError: Unknown realm or invoice.
        """
        with self.lock:
            realm = self._realm(realm_id)
            inv = self._lookup(realm, "Invoice", invoice_id)
            if not inv.voided:
                self._void_document(realm, inv, self._stamp())
            return self.render(realm, inv)

    def delete_invoice(self, realm_id: str, invoice_id: str) -> None:
        """Delete an invoice (payments applied to it become unapplied credit).

        Raises:
            KeyError: Unknown realm or invoice.
        """
        with self.lock:
            realm = self._realm(realm_id)
            inv = self._lookup(realm, "Invoice", invoice_id)
            self._delete_document(realm, inv, self._stamp())

    def touch(self, realm_id: str, kind: str, entity_id: str) -> dict[str, Any]:
        """Save any entity again unchanged (SyncToken and LastUpdatedTime move).

        Raises:
            KeyError: Unknown realm, kind or id.
        """
        with self.lock:
            realm = self._realm(realm_id)
            rec = realm.records[kind][str(entity_id)]
            self._touch(realm, rec, self._stamp())
            return self.render(realm, rec)
