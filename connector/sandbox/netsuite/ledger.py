"""The NetSuite ledger: accounts (companies), their entities, documents and payments.

It is the state behind the HTTP emulator (:mod:`connector.sandbox.netsuite.routes`) and
the test-facing API: tests read the ledger directly and change it "as a person in the
NetSuite UI would" (pay an invoice, edit it) without going through HTTP.

Everything happens under one re-entrant lock shared with the server thread. Returned
dicts are REST record shapes (Decimals inside) whose links point at the account's real
host (``https://1234567.suitetalk.api.netsuite.com``); the HTTP API renders the same
records with links to wherever it is served.

Payment rules (fact sheet §1, §2, §4; the wording of the messages NetSuite's sources do
not quote is the sandbox's own):

* ``apply.items[]`` lines are keyed by ``doc``; ``apply: false`` drops a line; a missing
  ``amount`` applies what is due (capped by an explicit payment amount).
* A document the payment cannot list in its apply sublist (unknown, another entity's,
  not open, another currency, the wrong kind) gives 400 ``INVALID_CONTENT`` "Invalid
  Field Value <id> for the following field: doc" with ``o:errorPath``
  ``apply.items[i].doc``, which is how REST reports a reference it cannot resolve.
* Applying more than is due gives 400 ``USER_ERROR``; so does applying more than the
  payment amount. A zero payment gives ``INVALID_FLD_VALUE``
  ("Value 0.0 outside of valid min/max range for field payment").
* A payment larger than what it applies keeps the rest ``unapplied``.
* ``externalId`` is unique per record type among live records; a duplicate create is
  400 ``USER_ERROR`` "Error while accessing a resource. This entity already exists."
* Paying a document lowers ``amountRemaining``, sets status B (Paid In Full) at zero and
  moves its ``lastModifiedDate``; deleting the payment restores both.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from connector.sandbox.clock import Clock
from connector.sandbox.faults import Faults
from connector.sandbox.netsuite.auth import AccountAuth, NetSuiteAuth
from connector.sandbox.netsuite.errors import (
    DETAIL_DUPLICATE,
    NetSuiteError,
    invalid_field_value,
    not_found,
    user_error,
)
from connector.sandbox.netsuite.models import (
    BILL,
    CUSTOMER_PAYMENT,
    INVOICE,
    PAYMENT_KINDS,
    VENDOR_PAYMENT,
    ApplyLine,
    Company,
    Currency,
    Entity,
    GLAccount,
    Transaction,
)
from connector.sandbox.netsuite.render import (
    public_base,
    render_currency,
    render_entity,
    render_gl_account,
    render_transaction,
)
from connector.sandbox.wire import to_decimal

__all__ = ["NetSuiteLedger", "canonical_account_id"]

ZERO = Decimal("0.00")
CENT = Decimal("0.01")
#: Record kinds of the payment for each document kind, and back.
PAYMENT_FOR = {INVOICE: CUSTOMER_PAYMENT, BILL: VENDOR_PAYMENT}
DOC_FOR = {CUSTOMER_PAYMENT: INVOICE, VENDOR_PAYMENT: BILL}
#: Body field naming the entity, and the one carrying the payment amount.
ENTITY_FIELD = {CUSTOMER_PAYMENT: "customer", VENDOR_PAYMENT: "entity"}
AMOUNT_FIELD = {CUSTOMER_PAYMENT: "payment", VENDOR_PAYMENT: "total"}
_ENTITY_LABEL = {CUSTOMER_PAYMENT: "Customer", VENDOR_PAYMENT: "Payee"}
UI_MEMO = "Paid in the NetSuite UI"

_COMPANY_NAMES = (
    "Honeycomb Manufacturing",
    "Wolfe Electronics",
    "Cabot Outdoor Gear",
    "Lindqvist Design",
)
# (code, name, symbol, base units per unit); ids 1.. in this order (NetSuite's defaults).
_CURRENCIES = (
    ("USD", "US Dollar", "$", Decimal("1.0")),
    ("GBP", "British pound", "£", Decimal("1.2650")),
    ("CAD", "Canadian Dollar", "$", Decimal("0.7310")),
    ("EUR", "Euro", "€", Decimal("1.0850")),
)
# (id, number, name, type id, type name, currency id or None, description)
_GL_ACCOUNTS = (
    (1, "1000", "Checking", "Bank", "Bank", 1, "Operating bank account"),
    (2, "1010", "Savings", "Bank", "Bank", 1, ""),
    (3, "1099", "Undeposited Funds", "OthCurrAsset", "Other Current Asset", None, ""),
    (4, "1100", "Accounts Receivable", "AcctRec", "Accounts Receivable", None, ""),
    (5, "2000", "Accounts Payable", "AcctPay", "Accounts Payable", None, ""),
    (6, "4000", "Sales", "Income", "Income", None, ""),
    (7, "6100", "Office Expenses", "Expense", "Expense", None, ""),
)
_CUSTOMERS = (
    ("Acme Hardware", "USD"),
    ("Bayside Club", "USD"),
    ("City Limousines", "USD"),
    ("Riverside Dental", "USD"),
    ("Europa Handels GmbH", "EUR"),
)
_VENDORS = (
    ("Dunmore Office Supplies", "USD"),
    ("Evergreen Catering", "USD"),
    ("Northwind Logistics", "USD"),
    ("Lyon Composants SARL", "EUR"),
)
# (status letter, currency, seeded payment) for invoice 1, 2, ...; repeats beyond 12.
_INVOICE_PATTERN: tuple[tuple[str, str, str | None], ...] = (
    ("A", "USD", None),
    ("A", "USD", None),
    ("A", "USD", "partial"),
    ("A", "USD", None),
    ("B", "USD", "full"),
    ("A", "EUR", None),
    ("A", "USD", None),
    ("A", "USD", None),
    ("D", "USD", None),
    ("B", "USD", "full"),
    ("A", "EUR", "partial"),
    ("A", "USD", None),
)
_BILL_PATTERN: tuple[tuple[str, str, str | None], ...] = (
    ("A", "USD", None),
    ("A", "USD", "partial"),
    ("B", "USD", "full"),
    ("A", "EUR", None),
)
_DESCRIPTIONS = (
    "Consulting services",
    "Annual support plan",
    "Hardware supplies",
    "Installation",
    "Training workshop",
)
_TX_PREFIX = {
    INVOICE: "INV",
    BILL: "VENDBILL",
    CUSTOMER_PAYMENT: "CUSTPYMT",
    VENDOR_PAYMENT: "VENDPYMT",
}


def canonical_account_id(value: str) -> str:
    """Normalise an account id as written in a URL (``1234567-sb1`` → ``1234567_SB1``)."""
    return value.strip().upper().replace("-", "_")


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class _Plan:
    """A validated payment create or update, ready to commit."""

    kind: str
    entity_id: int
    currency_id: int
    exchange_rate: Decimal
    account_id: int
    tran_date: date
    total: Decimal
    lines: dict[int, Decimal]
    external_id: str | None
    memo: str | None


class NetSuiteLedger:
    """All NetSuite accounts of one sandbox, seeded deterministically.

    Args:
        seed: Seed of every generated id, key, name and amount.
        accounts: Number of NetSuite accounts. Even positions get a production id
            (``4823911``), odd ones the sandbox of the previous one (``4823911_SB1``).
        invoices: Sales invoices per account.
        bills: Vendor bills per account.
        clock: The sandbox clock.
        lock: The lock guarding the ledger (shared with the other providers).
        faults: Fault injection for write calls.
        concurrency: The account concurrency limit (requests in flight).
    """

    def __init__(
        self,
        *,
        seed: int,
        accounts: int = 1,
        invoices: int = 12,
        bills: int = 4,
        clock: Clock,
        lock: threading.RLock,
        faults: Faults,
        concurrency: int = 5,
    ) -> None:
        if accounts < 1:
            raise ValueError("at least one account is needed")
        if invoices < 0 or bills < 0:
            raise ValueError("invoices and bills must not be negative")
        if concurrency < 1:
            raise ValueError("the concurrency limit must be at least 1")
        self.seed = seed
        self.clock = clock
        self.lock = lock
        self.faults = faults
        self.concurrency = concurrency
        rng = random.Random(f"netsuite:{seed}")
        self._runtime_rng = random.Random(f"netsuite-runtime:{seed}")
        self.auth = NetSuiteAuth(clock, lock, random.Random(f"netsuite-tokens:{seed}"))
        self._companies: dict[str, Company] = {}
        self._flight_lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        with self.lock:
            production = ""
            for index in range(accounts):
                if index % 2 == 0:
                    production = str(rng.randint(1_000_000, 9_999_999))
                    account_id = production
                else:
                    account_id = f"{production}_SB1"
                self._seed_company(rng, index, account_id, invoices, bills)

    # ------------------------------------------------------------------ identity

    @property
    def account_ids(self) -> list[str]:
        """Account ids in seed order, as written (``4823911``, ``4823911_SB1``)."""
        with self.lock:
            return list(self._companies)

    def resolve(self, account_id: str) -> str:
        """The canonical id of an account named in any case or with ``-`` for ``_``.

        Raises:
            KeyError: Unknown account.
        """
        wanted = canonical_account_id(account_id)
        with self.lock:
            if wanted not in self._companies:
                raise KeyError(account_id)
            return wanted

    def company(self, account_id: str) -> Company:
        """The account's internal state (tests and the HTTP layer).

        Raises:
            KeyError: Unknown account.
        """
        with self.lock:
            return self._companies[self.resolve(account_id)]

    def credentials(self, account_id: str) -> dict[str, str]:
        """Everything a client needs for either authentication method.

        ``consumer_key``/``consumer_secret`` are the integration's client id/secret (one
        integration record in NetSuite serves OAuth 2.0 and TBA).
        """
        auth = self._auth(account_id)
        return {
            "client_id": auth.client_id,
            "client_secret": auth.client_secret,
            "certificate_id": auth.certificate_id,
            "private_key_pem": auth.private_key_pem,
            "consumer_key": auth.client_id,
            "consumer_secret": auth.client_secret,
            "token_id": auth.token_id,
            "token_secret": auth.token_secret,
        }

    def _auth(self, account_id: str) -> AccountAuth:
        return self.auth.account(self.resolve(account_id))

    def register_certificate(
        self, account_id: str, public_key_pem: str | bytes, certificate_id: str | None = None
    ) -> str:
        """Map another certificate (e.g. an RSA key for PS256) to the account; returns its id."""
        return self.auth.register_certificate(
            self.resolve(account_id), public_key_pem, certificate_id
        )

    def revoke(self, account_id: str) -> None:
        """Revoke the account's M2M mapping, access tokens and TBA token (calls get 401)."""
        self.auth.revoke(self.resolve(account_id))

    def reauthorize(self, account_id: str) -> None:
        """Undo :meth:`revoke` (same credentials; new access tokens must be requested)."""
        self.auth.reauthorize(self.resolve(account_id))

    # ------------------------------------------------------------------ concurrency

    def acquire_slot(self, account_id: str) -> bool:
        """Take one of the account's concurrent-request slots; False when all are taken.

        Every REST call counts (records, SuiteQL, async job polls), as the account limit
        covers REST, SOAP and RESTlets together (fact sheet §7).
        """
        with self._flight_lock:
            current = self._in_flight.get(account_id, 0)
            if current >= self.concurrency:
                return False
            self._in_flight[account_id] = current + 1
            return True

    def release_slot(self, account_id: str) -> None:
        """Give a slot back."""
        with self._flight_lock:
            self._in_flight[account_id] = max(0, self._in_flight.get(account_id, 0) - 1)

    def in_flight(self, account_id: str) -> int:
        """Requests of the account being processed now."""
        with self._flight_lock:
            return self._in_flight.get(account_id, 0)

    def connection_tables(self, base_url: str, key_dir: Path) -> list[dict[str, str]]:
        """Write each account's private key and return its ``[[connections]]`` table.

        Args:
            base_url: The sandbox root URL (``SandboxServer.url``).
            key_dir: Directory for the PEM files (created; files are mode 0600).
        """
        root = base_url.rstrip("/")
        key_dir = Path(key_dir)
        key_dir.mkdir(parents=True, exist_ok=True)
        tables = []
        for account_id in self.account_ids:
            auth = self._auth(account_id)
            company = self.company(account_id)
            path = key_dir / f"netsuite-{account_id.lower()}.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(auth.private_key_pem)
            path.chmod(0o600)
            base = f"{root}/netsuite/{account_id}"
            tables.append(
                {
                    "id": f"netsuite-{account_id.lower()}",
                    "provider": "netsuite",
                    "base_url": base,
                    "token_url": f"{base}/services/rest/auth/oauth2/v1/token",
                    "client_id": auth.client_id,
                    "client_secret": auth.client_secret,
                    "account_id": account_id,
                    "certificate_id": auth.certificate_id,
                    "private_key_path": str(path),
                    "payment_account_code": str(company.bank_account_id),
                    "bill_payment_account_code": str(company.bank_account_id),
                }
            )
        return tables

    # ------------------------------------------------------------------ reads

    def _render(self, company: Company, tx: Transaction) -> dict[str, Any]:
        out = render_transaction(company, tx, public_base(company.account_id), expand=True)
        if tx.deleted is not None:
            out["sandboxDeletedDate"] = tx.deleted.strftime("%Y-%m-%dT%H:%M:%SZ")
        return out

    def _list(self, account_id: str, kind: str, include_deleted: bool) -> list[dict[str, Any]]:
        with self.lock:
            company = self.company(account_id)
            items = [tx for tx in company.transactions.values() if tx.kind == kind]
            if include_deleted:
                items += [tx for tx in company.deleted if tx.kind == kind]
                items.sort(key=lambda tx: tx.id)
            return [self._render(company, tx) for tx in items]

    def invoices(self, account_id: str) -> list[dict[str, Any]]:
        """All invoices, in id order."""
        return self._list(account_id, INVOICE, False)

    def bills(self, account_id: str) -> list[dict[str, Any]]:
        """All vendor bills, in id order (REST shape: no ``amountRemaining``)."""
        return self._list(account_id, BILL, False)

    def customer_payments(
        self, account_id: str, include_deleted: bool = False
    ) -> list[dict[str, Any]]:
        """Customer payments with their apply sublist expanded.

        Deleted ones (``include_deleted``) carry a sandbox-only ``sandboxDeletedDate``.
        """
        return self._list(account_id, CUSTOMER_PAYMENT, include_deleted)

    def vendor_payments(
        self, account_id: str, include_deleted: bool = False
    ) -> list[dict[str, Any]]:
        """Vendor payments, as :meth:`customer_payments`."""
        return self._list(account_id, VENDOR_PAYMENT, include_deleted)

    def _document(self, company: Company, kind: str, doc_id: int | str) -> Transaction:
        tx = company.transactions.get(_as_int(doc_id))
        if tx is None or tx.kind != kind:
            raise KeyError(doc_id)
        return tx

    def invoice(self, account_id: str, invoice_id: int | str) -> dict[str, Any]:
        """One invoice.

        Raises:
            KeyError: Unknown account or invoice.
        """
        with self.lock:
            company = self.company(account_id)
            return self._render(company, self._document(company, INVOICE, invoice_id))

    def bill(self, account_id: str, bill_id: int | str) -> dict[str, Any]:
        """One vendor bill.

        Raises:
            KeyError: Unknown account or bill.
        """
        with self.lock:
            company = self.company(account_id)
            return self._render(company, self._document(company, BILL, bill_id))

    def payment(self, account_id: str, payment_id: int | str) -> dict[str, Any]:
        """One customer or vendor payment (live or deleted).

        Raises:
            KeyError: Unknown account or payment.
        """
        with self.lock:
            company = self.company(account_id)
            wanted = _as_int(payment_id)
            for tx in [*company.transactions.values(), *company.deleted]:
                if tx.id == wanted and tx.kind in PAYMENT_KINDS:
                    return self._render(company, tx)
            raise KeyError(payment_id)

    def open_amount(self, account_id: str, document_id: int | str) -> Decimal:
        """``amountRemaining`` of an invoice or bill (bills do not show it in REST).

        Raises:
            KeyError: Unknown account or document.
        """
        with self.lock:
            tx = self.company(account_id).transactions.get(_as_int(document_id))
            if tx is None or not tx.is_document:
                raise KeyError(document_id)
            return tx.amount_remaining

    def customers(self, account_id: str) -> list[dict[str, Any]]:
        """Customer records."""
        return self._entities(account_id, "customer")

    def vendors(self, account_id: str) -> list[dict[str, Any]]:
        """Vendor records."""
        return self._entities(account_id, "vendor")

    def _entities(self, account_id: str, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            company = self.company(account_id)
            base = public_base(company.account_id)
            return [
                render_entity(company, e, base) for e in company.entities.values() if e.kind == kind
            ]

    def gl_accounts(self, account_id: str) -> list[dict[str, Any]]:
        """The chart of accounts."""
        with self.lock:
            company = self.company(account_id)
            base = public_base(company.account_id)
            return [render_gl_account(company, a, base) for a in company.gl_accounts.values()]

    def currencies(self, account_id: str) -> list[dict[str, Any]]:
        """Currency records."""
        with self.lock:
            company = self.company(account_id)
            base = public_base(company.account_id)
            return [render_currency(company, c, base) for c in company.currencies.values()]

    def overview(self) -> dict[str, Any]:
        """Accounts, credentials and counts for ``GET /_sandbox``."""
        with self.lock:
            accounts = []
            for account_id, company in self._companies.items():
                auth = self.auth.account(account_id)
                txs = list(company.transactions.values())
                accounts.append(
                    {
                        "account_id": account_id,
                        "name": company.name,
                        "client_id": auth.client_id,
                        "certificate_id": auth.certificate_id,
                        "token_id": auth.token_id,
                        "revoked": auth.revoked,
                        "in_flight": self.in_flight(account_id),
                        "bank_account_id": str(company.bank_account_id),
                        "invoices": sum(tx.kind == INVOICE for tx in txs),
                        "bills": sum(tx.kind == BILL for tx in txs),
                        "customer_payments": sum(tx.kind == CUSTOMER_PAYMENT for tx in txs),
                        "vendor_payments": sum(tx.kind == VENDOR_PAYMENT for tx in txs),
                    }
                )
            return {"concurrency": self.concurrency, "accounts": accounts}

    # ------------------------------------------------------------------ test-side writes

    def add_invoice(
        self,
        account_id: str,
        *,
        total: Decimal = Decimal("100.00"),
        amount_remaining: Decimal | None = None,
        currency: str = "USD",
        customer_id: int | str | None = None,
        external_id: str | None = None,
        status: str = "A",
        tran_date: date | None = None,
    ) -> dict[str, Any]:
        """Create an invoice; ``amount_remaining`` below ``total`` records a real payment.

        Raises:
            ValueError: Bad amounts, currency, customer or status.
        """
        return self._add_document(
            account_id,
            INVOICE,
            total=total,
            amount_remaining=amount_remaining,
            currency=currency,
            entity_id=customer_id,
            external_id=external_id,
            status=status,
            tran_date=tran_date,
        )

    def add_bill(
        self,
        account_id: str,
        *,
        total: Decimal = Decimal("100.00"),
        amount_remaining: Decimal | None = None,
        currency: str = "USD",
        vendor_id: int | str | None = None,
        external_id: str | None = None,
        status: str = "A",
        tran_date: date | None = None,
    ) -> dict[str, Any]:
        """Create a vendor bill, as :meth:`add_invoice`."""
        return self._add_document(
            account_id,
            BILL,
            total=total,
            amount_remaining=amount_remaining,
            currency=currency,
            entity_id=vendor_id,
            external_id=external_id,
            status=status,
            tran_date=tran_date,
        )

    def _add_document(
        self,
        account_id: str,
        kind: str,
        *,
        total: Decimal,
        amount_remaining: Decimal | None,
        currency: str,
        entity_id: int | str | None,
        external_id: str | None,
        status: str,
        tran_date: date | None,
    ) -> dict[str, Any]:
        total = _money(to_decimal(total))
        remaining = total if amount_remaining is None else _money(to_decimal(amount_remaining))
        if total <= 0 or not ZERO <= remaining <= total:
            raise ValueError("total must be positive and amount_remaining within 0..total")
        if status not in {"A", "D"}:
            raise ValueError("status must be 'A' (open) or 'D' (pending approval)")
        if status == "D" and remaining != total:
            raise ValueError("a pending-approval document cannot have payments")
        with self.lock:
            company = self.company(account_id)
            currency_obj = _currency_by_code(company, currency)
            entity_kind = "customer" if kind == INVOICE else "vendor"
            if entity_id is None:
                entity = next(
                    (
                        e
                        for e in company.entities.values()
                        if e.kind == entity_kind and e.currency_id == currency_obj.id
                    ),
                    None,
                )
                if entity is None:
                    raise ValueError(f"no {entity_kind} in {currency}")
            else:
                entity = company.entities.get(_as_int(entity_id))
                if entity is None or entity.kind != entity_kind:
                    raise ValueError(f"unknown {entity_kind} {entity_id}")
            if external_id is not None and self._external_taken(company, kind, external_id, None):
                raise ValueError(f"externalId {external_id!r} is taken")
            stamp = self._stamp()
            day = tran_date or stamp.date()
            doc = self._new_document(
                company,
                kind,
                entity=entity,
                currency=currency_obj,
                total=total,
                tran_date=day,
                stamp=stamp,
                status=status,
                rng=self._runtime_rng,
            )
            doc.external_id = external_id
            if remaining < total:
                self._ui_payment(company, doc, total - remaining, None, stamp)
            return self._render(company, doc)

    def apply_payment(
        self,
        account_id: str,
        invoice_id: int | str,
        amount: Decimal,
        *,
        memo: str | None = None,
    ) -> dict[str, Any]:
        """Record a customer payment as a person in the NetSuite UI would (no HTTP, no faults).

        Raises:
            KeyError: Unknown account or invoice.
            ValueError: The invoice is not open or the amount is not within 0..due.
        """
        return self._apply_ui(account_id, INVOICE, invoice_id, amount, memo)

    def apply_bill_payment(
        self, account_id: str, bill_id: int | str, amount: Decimal, *, memo: str | None = None
    ) -> dict[str, Any]:
        """Record a vendor (bill) payment as a person in the UI would."""
        return self._apply_ui(account_id, BILL, bill_id, amount, memo)

    def _apply_ui(
        self, account_id: str, kind: str, doc_id: int | str, amount: Decimal, memo: str | None
    ) -> dict[str, Any]:
        with self.lock:
            company = self.company(account_id)
            doc = self._document(company, kind, doc_id)
            value = _money(to_decimal(amount))
            if doc.status != "A":
                raise ValueError(f"{kind} {doc.id} is not open (status {doc.status})")
            if not ZERO < value <= doc.amount_remaining:
                raise ValueError(f"amount must be within 0..{doc.amount_remaining}")
            payment = self._ui_payment(company, doc, value, memo, self._stamp())
            return self._render(company, payment)

    def edit_invoice(self, account_id: str, invoice_id: int | str, **fields: Any) -> dict[str, Any]:
        """Edit an invoice as a person would; always moves ``lastModifiedDate``.

        Keyword names are REST field names: ``memo``, ``externalId``, ``dueDate``,
        ``tranDate``, ``status`` (``"A"``/``"D"`` while unpaid), ``total`` (not below
        ``amountPaid``), ``exchangeRate``.

        Raises:
            KeyError: Unknown account or invoice.
            ValueError: Unknown field or bad value.
        """
        return self._edit(account_id, INVOICE, invoice_id, fields)

    def edit_bill(self, account_id: str, bill_id: int | str, **fields: Any) -> dict[str, Any]:
        """Edit a vendor bill, as :meth:`edit_invoice`."""
        return self._edit(account_id, BILL, bill_id, fields)

    def _edit(
        self, account_id: str, kind: str, doc_id: int | str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        with self.lock:
            company = self.company(account_id)
            doc = self._document(company, kind, doc_id)
            for name, value in fields.items():
                if name == "memo":
                    doc.memo = None if value is None else str(value)
                elif name == "externalId":
                    if value is not None and self._external_taken(company, kind, str(value), doc):
                        raise ValueError(f"externalId {value!r} is taken")
                    doc.external_id = None if value is None else str(value)
                elif name in {"dueDate", "tranDate"}:
                    parsed = value if isinstance(value, date) else _parse_date(value)
                    if parsed is None:
                        raise ValueError(f"{name} is not a date")
                    if name == "dueDate":
                        doc.due_date = parsed
                    else:
                        doc.tran_date = parsed
                elif name == "status":
                    if value not in {"A", "D"} or doc.amount_paid > 0:
                        raise ValueError("status can only switch between A and D while unpaid")
                    doc.status = str(value)
                elif name == "total":
                    total = _money(to_decimal(value))
                    if total <= 0 or total < doc.amount_paid:
                        raise ValueError("total cannot be below the amount paid")
                    doc.total = total
                    self._settle(doc)
                elif name == "exchangeRate":
                    rate = to_decimal(value)
                    if rate <= 0:
                        raise ValueError("exchangeRate must be positive")
                    doc.exchange_rate = rate
                else:
                    raise ValueError(f"edit does not support field {name!r}")
            self._touch(doc, self._stamp())
            return self._render(company, doc)

    # ------------------------------------------------------------------ API operations

    def create_payment(
        self, account_id: str, kind: str, body: Any, *, external_id: str | None = None
    ) -> Transaction:
        """``POST record/v1/customerPayment|vendorPayment`` (or a PUT upsert that creates).

        Raises:
            NetSuiteError: Validation failures (400).
        """
        with self.lock:
            company = self.company(account_id)
            plan = self._plan(company, kind, body, None, replace=True, forced_eid=external_id)
            return self._commit_new(company, plan)

    def transform(
        self, account_id: str, doc_kind: str, doc_id: str, target: str, body: Any
    ) -> Transaction:
        """``POST record/v1/invoice/{id}/!transform/customerPayment`` (or bill → vendorPayment).

        The new payment belongs to the document's entity and applies the document: the
        amount given for it in ``apply.items``, else the ``payment``/``total`` amount
        (capped at what is due), else everything that is due.

        Raises:
            NetSuiteError: 404 for an unknown document, 400 for an invalid transform.
        """
        with self.lock:
            company = self.company(account_id)
            doc = self.find(company, doc_kind, doc_id)
            kind = PAYMENT_FOR[doc_kind]
            if target.lower() != kind.lower():
                raise user_error(
                    f"The transformation from {doc_kind} to {target} is not supported."
                )
            if not isinstance(body, dict):
                body = {}
            if doc.locked_by_workflow:
                raise locked_by_workflow()
            if doc.status != "A" or doc.amount_remaining <= 0:
                raise user_error(
                    f"You cannot create a payment from {doc.kind} {doc.tran_id}: it is not open."
                )
            merged = dict(body)
            merged[ENTITY_FIELD[kind]] = {"id": str(doc.entity_id)}
            merged.setdefault("currency", {"id": str(doc.currency_id)})
            apply = body.get("apply") if isinstance(body.get("apply"), dict) else None
            items = apply.get("items") if apply else None
            if not isinstance(items, list) or not items:
                line: dict[str, Any] = {"doc": {"id": str(doc.id)}, "apply": True}
                raw_amount = body.get(AMOUNT_FIELD[kind])
                if raw_amount is not None:
                    with contextlib.suppress(ValueError):
                        line["amount"] = min(to_decimal(raw_amount), doc.amount_remaining)
                merged["apply"] = {"items": [line]}
            if kind == VENDOR_PAYMENT:
                merged.setdefault("account", {"id": str(company.bank_account_id)})
            plan = self._plan(company, kind, merged, None, replace=True, forced_eid=None)
            return self._commit_new(company, plan)

    def update_payment(
        self, account_id: str, payment: Transaction, body: Any, *, replace_apply: bool
    ) -> Transaction:
        """``PATCH`` (or PUT upsert) of an existing payment; sublists merge by ``doc``.

        Raises:
            NetSuiteError: Validation failures (400).
        """
        with self.lock:
            company = self.company(account_id)
            plan = self._plan(
                company, payment.kind, body, payment, replace=replace_apply, forced_eid=None
            )
            stamp = self._stamp()
            touched = {line.doc_id for line in payment.apply} | set(plan.lines)
            old = {line.doc_id: line.amount for line in payment.apply}
            self._unapply(company, payment)
            payment.entity_id = plan.entity_id
            payment.currency_id = plan.currency_id
            payment.exchange_rate = plan.exchange_rate
            payment.account_id = plan.account_id
            payment.tran_date = plan.tran_date
            payment.total = plan.total
            payment.external_id = plan.external_id
            payment.memo = plan.memo
            payment.apply = [
                ApplyLine(doc_id, amount, plan.tran_date) for doc_id, amount in plan.lines.items()
            ]
            if payment.kind == CUSTOMER_PAYMENT:
                payment.status = "B" if plan.account_id == company.undeposited_account_id else "C"
            self._reapply(company, payment)
            self._touch(payment, stamp)
            for doc_id in touched:
                if old.get(doc_id) != plan.lines.get(doc_id):
                    self._touch(company.transactions[doc_id], stamp)
            return payment

    def delete_payment(self, account_id: str, payment: Transaction) -> None:
        """``DELETE`` a payment: its documents get their open amounts back."""
        with self.lock:
            company = self.company(account_id)
            stamp = self._stamp()
            docs = [company.transactions[line.doc_id] for line in payment.apply]
            self._unapply(company, payment)
            for doc in docs:
                self._touch(doc, stamp)
            payment.deleted = stamp
            del company.transactions[payment.id]
            company.deleted.append(payment)

    def patch_document(self, account_id: str, doc: Transaction, body: Any) -> Transaction:
        """``PATCH`` of an invoice/bill: ``memo``, ``externalId``, ``dueDate``.

        Raises:
            NetSuiteError: Other fields or bad values (400).
        """
        if not isinstance(body, dict):
            raise _bad_body()
        with self.lock:
            company = self.company(account_id)
            if doc.locked_by_workflow:
                raise locked_by_workflow()
            changes: dict[str, Any] = {}
            for name, value in body.items():
                if name == "memo":
                    changes["memo"] = None if value is None else str(value)
                elif name == "externalId":
                    if value is not None and not isinstance(value, str):
                        raise invalid_field_value(value, "externalId", "externalId")
                    if value is not None and self._external_taken(company, doc.kind, value, doc):
                        raise NetSuiteError(400, "USER_ERROR", DETAIL_DUPLICATE)
                    changes["externalId"] = value
                elif name == "dueDate":
                    parsed = _parse_date(value)
                    if parsed is None:
                        raise invalid_field_value(value, "dueDate", "dueDate")
                    changes["dueDate"] = parsed
                else:
                    raise user_error(
                        f"The sandbox cannot change the field {name} of a {doc.kind}.", name
                    )
            doc.memo = changes.get("memo", doc.memo)
            doc.external_id = changes.get("externalId", doc.external_id)
            doc.due_date = changes.get("dueDate", doc.due_date)
            self._touch(doc, self._stamp())
            return doc

    def lock_document(self, account_id: str, doc_id: int | str, locked: bool = True) -> None:
        """Lock (or unlock) an invoice/bill by a workflow: writes touching it fail with
        ``USER_ERROR`` "This record has been locked by a user defined workflow."

        Raises:
            KeyError: Unknown account or document.
        """
        with self.lock:
            tx = self.company(account_id).transactions.get(_as_int(doc_id))
            if tx is None or not tx.is_document:
                raise KeyError(doc_id)
            tx.locked_by_workflow = locked

    def upsert_entity(
        self, account_id: str, kind: str, external_id: str, body: Any
    ) -> tuple[Entity, bool]:
        """``PUT record/v1/customer|vendor/eid:{id}``: create or update; True if created.

        Fields: ``companyName``, ``firstName``, ``lastName``, ``email``, ``isPerson``,
        ``entityId``, ``currency``.

        Raises:
            NetSuiteError: 400 for an invalid value.
        """
        if not isinstance(body, dict):
            raise _bad_body()
        with self.lock:
            company = self.company(account_id)
            entity = next(
                (
                    e
                    for e in company.entities.values()
                    if e.kind == kind and e.external_id == external_id
                ),
                None,
            )
            currency_id = entity.currency_id if entity else company.base_currency_id
            if "currency" in body:
                ref = _ref_id(body["currency"])
                if ref is None or ref not in company.currencies:
                    raise invalid_field_value(_shown(body["currency"]), "currency", "currency")
                currency_id = ref
            texts = {}
            for name in ("companyName", "firstName", "lastName", "email", "entityId"):
                if name in body:
                    value = body[name]
                    if value is not None and not isinstance(value, str):
                        raise invalid_field_value(value, name, name)
                    texts[name] = value
            stamp = self._stamp()
            created = entity is None
            if entity is None:
                entity = Entity(
                    id=company.next_entity_id,
                    kind=kind,
                    entity_id="",
                    company_name="",
                    email="",
                    currency_id=currency_id,
                    created=stamp,
                    modified=stamp,
                    external_id=external_id,
                )
                company.next_entity_id += 1
                company.entities[entity.id] = entity
            entity.currency_id = currency_id
            entity.first_name = texts.get("firstName", entity.first_name)
            entity.last_name = texts.get("lastName", entity.last_name)
            entity.email = texts.get("email", entity.email) or ""
            person = " ".join(p for p in (entity.first_name, entity.last_name) if p)
            entity.is_person = bool(body.get("isPerson", entity.is_person or bool(person)))
            entity.company_name = texts.get("companyName") or entity.company_name or person
            entity.entity_id = (
                texts.get("entityId") or entity.entity_id or (entity.company_name or str(entity.id))
            )
            entity.modified = stamp
            return entity, created

    def find(self, company: Company, kind: str, key: str) -> Transaction:
        """A live transaction of ``kind`` by internal id or ``eid:<externalId>``.

        Raises:
            NetSuiteError: 404 if there is none.
        """
        with self.lock:
            if key.lower().startswith("eid:"):
                eid = key[4:]
                for tx in company.transactions.values():
                    if tx.kind == kind and tx.external_id == eid:
                        return tx
                raise not_found()
            found = company.transactions.get(_as_int(key)) if key.isdigit() else None
            if found is None or found.kind != kind:
                raise not_found()
            return found

    def targets(self, company: Company, tx: Transaction | None, body: Any) -> list[Transaction]:
        """The documents a write touches: its own (if a payment), the body's ``apply`` docs.

        Used by the faults ``paid_elsewhere`` and ``concurrent_edit``.
        """
        with self.lock:
            ids: list[int] = []
            if tx is not None:
                if tx.is_document:
                    ids.append(tx.id)
                ids += [line.doc_id for line in tx.apply]
            for item in _apply_items(body):
                doc = item.get("doc") if isinstance(item, dict) else None
                raw = doc.get("id") if isinstance(doc, dict) else None
                if isinstance(raw, str | int) and str(raw).isdigit():
                    ids.append(int(raw))
            out: list[Transaction] = []
            for doc_id in dict.fromkeys(ids):
                found = company.transactions.get(doc_id)
                if found is not None and found.is_document:
                    out.append(found)
            return out

    def pay_elsewhere(self, company: Company, docs: Iterable[Transaction]) -> None:
        """Fault ``paid_elsewhere``: someone pays the open documents in full in the UI."""
        with self.lock:
            stamp = self._stamp()
            for doc in docs:
                if doc.status == "A" and doc.amount_remaining > 0:
                    self._ui_payment(company, doc, doc.amount_remaining, UI_MEMO, stamp)

    def bump(self, records: Iterable[Transaction]) -> None:
        """Fault ``concurrent_edit``: someone saves the records (``lastModifiedDate`` moves)."""
        with self.lock:
            stamp = self._stamp()
            for tx in records:
                self._touch(tx, stamp)

    # ------------------------------------------------------------------ internals

    def _stamp(self) -> datetime:
        """Now, in whole seconds (REST ``lastModifiedDate`` has second precision)."""
        return self.clock.now().astimezone(UTC).replace(microsecond=0)

    @staticmethod
    def _touch(tx: Transaction, stamp: datetime) -> None:
        tx.modified = max(stamp, tx.modified)
        tx.version += 1

    @staticmethod
    def _settle(doc: Transaction) -> None:
        """Open ↔ Paid In Full from the open amount (other statuses stay)."""
        if doc.status in {"A", "B"}:
            doc.status = "B" if doc.amount_remaining <= 0 else "A"

    def _external_taken(
        self, company: Company, kind: str, external_id: str, other_than: Transaction | None
    ) -> bool:
        return any(
            tx.kind == kind and tx.external_id == external_id and tx is not other_than
            for tx in company.transactions.values()
        )

    def _unapply(self, company: Company, payment: Transaction) -> None:
        for line in payment.apply:
            doc = company.transactions[line.doc_id]
            doc.amount_paid -= line.amount
            self._settle(doc)

    def _reapply(self, company: Company, payment: Transaction) -> None:
        for line in payment.apply:
            doc = company.transactions[line.doc_id]
            doc.amount_paid += line.amount
            self._settle(doc)

    def _next_number(self, company: Company, kind: str) -> int:
        company.counters[kind] = company.counters.get(kind, 0) + 1
        return company.counters[kind]

    def _new_transaction_id(self, company: Company) -> int:
        tx_id = company.next_transaction_id
        company.next_transaction_id += 1
        return tx_id

    def _commit_new(
        self, company: Company, plan: _Plan, stamp: datetime | None = None
    ) -> Transaction:
        stamp = stamp or self._stamp()
        number = self._next_number(company, plan.kind)
        status: str | None = None
        if plan.kind == CUSTOMER_PAYMENT:
            status = "B" if plan.account_id == company.undeposited_account_id else "C"
        payment = Transaction(
            id=self._new_transaction_id(company),
            kind=plan.kind,
            tran_id=str(number),
            number=f"{_TX_PREFIX[plan.kind]}{number}",
            entity_id=plan.entity_id,
            currency_id=plan.currency_id,
            exchange_rate=plan.exchange_rate,
            tran_date=plan.tran_date,
            created=stamp,
            modified=stamp,
            total=plan.total,
            status=status,
            account_id=plan.account_id,
            external_id=plan.external_id,
            memo=plan.memo,
            apply=[ApplyLine(d, a, plan.tran_date) for d, a in plan.lines.items()],
        )
        company.transactions[payment.id] = payment
        self._reapply(company, payment)
        for line in payment.apply:
            self._touch(company.transactions[line.doc_id], stamp)
        return payment

    def _ui_payment(
        self,
        company: Company,
        doc: Transaction,
        amount: Decimal,
        memo: str | None,
        stamp: datetime,
        tran_date: date | None = None,
    ) -> Transaction:
        kind = PAYMENT_FOR[doc.kind]
        plan = _Plan(
            kind=kind,
            entity_id=doc.entity_id,
            currency_id=doc.currency_id,
            exchange_rate=doc.exchange_rate,
            account_id=company.bank_account_id,
            tran_date=tran_date or stamp.date(),
            total=amount,
            lines={doc.id: amount},
            external_id=None,
            memo=memo,
        )
        return self._commit_new(company, plan, stamp)

    # The payment validator: one pass over the body, first error wins.
    def _plan(
        self,
        company: Company,
        kind: str,
        body: Any,
        existing: Transaction | None,
        *,
        replace: bool,
        forced_eid: str | None,
    ) -> _Plan:
        if not isinstance(body, dict):
            raise _bad_body()
        entity_field = ENTITY_FIELD[kind]
        entity_id = existing.entity_id if existing else None
        if entity_field in body:
            entity = self._entity_ref(company, body[entity_field], entity_field, kind)
            if existing is not None and entity.id != existing.entity_id:
                raise user_error(
                    f"You cannot change the {entity_field} of a payment.", entity_field
                )
            entity_id = entity.id
        if entity_id is None:
            raise user_error(f"Please enter value(s) for: {_ENTITY_LABEL[kind]}")

        currency_id: int | None = existing.currency_id if existing else None
        if "currency" in body:
            ref = _ref_id(body["currency"])
            if ref is None or ref not in company.currencies:
                raise invalid_field_value(_shown(body["currency"]), "currency", "currency")
            currency_id = ref

        account_id = existing.account_id if existing else None
        if body.get("undepFunds") is True and kind == CUSTOMER_PAYMENT:
            account_id = company.undeposited_account_id
        if "account" in body:
            ref = _ref_id(body["account"])
            account = company.gl_accounts.get(ref) if ref is not None else None
            allowed = {"Bank"} | ({"OthCurrAsset"} if kind == CUSTOMER_PAYMENT else set())
            if account is None or account.type not in allowed or account.inactive:
                raise invalid_field_value(_shown(body["account"]), "account", "account")
            account_id = account.id
        if account_id is None:
            account_id = (
                company.undeposited_account_id
                if kind == CUSTOMER_PAYMENT
                else company.bank_account_id
            )

        tran_date = existing.tran_date if existing else self._stamp().date()
        if "tranDate" in body:
            parsed = _parse_date(body["tranDate"])
            if parsed is None:
                raise invalid_field_value(_shown(body["tranDate"]), "tranDate", "tranDate")
            tran_date = parsed

        memo = existing.memo if existing else None
        if "memo" in body:
            memo = None if body["memo"] is None else str(body["memo"])

        external_id = existing.external_id if existing else None
        if "externalId" in body:
            raw_eid = body["externalId"]
            if raw_eid is not None and not isinstance(raw_eid, str):
                raise invalid_field_value(raw_eid, "externalId", "externalId")
            external_id = raw_eid
        if forced_eid is not None:
            external_id = forced_eid
        if external_id is not None and self._external_taken(company, kind, external_id, existing):
            raise NetSuiteError(400, "USER_ERROR", DETAIL_DUPLICATE)

        amount_field = AMOUNT_FIELD[kind]
        payment_amount: Decimal | None = None
        if body.get(amount_field) is not None:
            try:
                payment_amount = _money(to_decimal(body[amount_field]))
            except ValueError:
                raise invalid_field_value(body[amount_field], amount_field, amount_field) from None
            if payment_amount <= 0:
                raise NetSuiteError(
                    400,
                    "INVALID_FLD_VALUE",
                    f"Value {_ns_number(payment_amount)} outside of valid min/max range for field "
                    f"{amount_field}",
                    extra={"o:errorPath": amount_field},
                )

        previous = {line.doc_id: line.amount for line in existing.apply} if existing else {}
        lines: dict[int, Decimal] = {} if replace else dict(previous)
        budget = payment_amount
        for index, item in enumerate(_apply_items(body, strict=True)):
            path = f"apply.items[{index}]"
            if not isinstance(item, dict):
                raise invalid_field_value(_shown(item), "apply", path)
            doc_ref = item.get("doc")
            doc_key = _ref_id(doc_ref)
            doc = company.transactions.get(doc_key) if doc_key is not None else None
            applied_here = previous.get(doc.id, ZERO) if doc is not None else ZERO
            if (
                doc is None
                or doc.kind != DOC_FOR[kind]
                or doc.entity_id != entity_id
                or (doc.status != "A" and applied_here == 0)
                or (currency_id is not None and doc.currency_id != currency_id)
            ):
                raise invalid_field_value(_shown(doc_ref), "doc", f"{path}.doc")
            if doc.locked_by_workflow:
                raise locked_by_workflow()
            if currency_id is None:
                currency_id = doc.currency_id
            if item.get("apply", True) is False:
                lines.pop(doc.id, None)
                continue
            due = doc.amount_remaining + applied_here
            if item.get("amount") is None:
                amount = due
                if budget is not None:
                    amount = min(due, max(ZERO, budget - sum(lines.values(), ZERO)))
            else:
                try:
                    amount = _money(to_decimal(item["amount"]))
                except ValueError:
                    raise invalid_field_value(item["amount"], "amount", f"{path}.amount") from None
            if amount <= 0:
                raise NetSuiteError(
                    400,
                    "INVALID_FLD_VALUE",
                    f"Value {_ns_number(amount)} outside of valid min/max range for field amount",
                    extra={"o:errorPath": f"{path}.amount"},
                )
            if amount > due:
                raise user_error(
                    f"You cannot apply {amount} to {doc.tran_id}: the amount due is {due}.",
                    f"{path}.amount",
                )
            lines[doc.id] = amount

        if currency_id is None:
            currency_id = company.entities[entity_id].currency_id
        applied = sum(lines.values(), ZERO)
        if payment_amount is None:
            payment_amount = (
                applied if (existing is None or applied > existing.total) else existing.total
            )
        if payment_amount <= 0:
            raise NetSuiteError(
                400,
                "INVALID_FLD_VALUE",
                f"Value 0.0 outside of valid min/max range for field {amount_field}",
                extra={"o:errorPath": amount_field},
            )
        if applied > payment_amount:
            raise user_error(
                f"The total applied ({applied}) exceeds the payment amount ({payment_amount}).",
                amount_field,
            )

        rate = existing.exchange_rate if existing and existing.currency_id == currency_id else None
        if body.get("exchangeRate") is not None:
            try:
                rate = to_decimal(body["exchangeRate"])
            except ValueError:
                rate = Decimal(0)
            if rate <= 0:
                raise invalid_field_value(body["exchangeRate"], "exchangeRate", "exchangeRate")
        if rate is None:
            rate = company.currencies[currency_id].rate
        return _Plan(
            kind=kind,
            entity_id=entity_id,
            currency_id=currency_id,
            exchange_rate=rate,
            account_id=account_id,
            tran_date=tran_date,
            total=payment_amount,
            lines=lines,
            external_id=external_id,
            memo=memo,
        )

    def _entity_ref(self, company: Company, value: Any, field: str, kind: str) -> Entity:
        ref = _ref_id(value)
        entity = company.entities.get(ref) if ref is not None else None
        wanted = "customer" if kind == CUSTOMER_PAYMENT else "vendor"
        if entity is None or entity.kind != wanted:
            raise invalid_field_value(_shown(value), field, field)
        return entity

    # ------------------------------------------------------------------ seeding

    def _new_document(
        self,
        company: Company,
        kind: str,
        *,
        entity: Entity,
        currency: Currency,
        total: Decimal,
        tran_date: date,
        stamp: datetime,
        status: str,
        rng: random.Random,
    ) -> Transaction:
        number = self._next_number(company, kind)
        if kind == INVOICE:
            tran_id = f"{1000 + number}"
            tx_number = f"INV{1000 + number}"
            account_id, item_account = company.ar_account_id, company.income_account_id
        else:
            tran_id = f"VB-{rng.randint(10000, 99999)}"
            tx_number = f"VENDBILL{number}"
            account_id, item_account = company.ap_account_id, company.expense_account_id
        doc = Transaction(
            id=self._new_transaction_id(company),
            kind=kind,
            tran_id=tran_id,
            number=tx_number,
            entity_id=entity.id,
            currency_id=currency.id,
            exchange_rate=currency.rate,
            tran_date=tran_date,
            due_date=tran_date + timedelta(days=30),
            created=stamp,
            modified=stamp,
            total=total,
            status=status,
            account_id=account_id,
            item_account_id=item_account,
            item_description=rng.choice(_DESCRIPTIONS),
        )
        company.transactions[doc.id] = doc
        return doc

    def _seed_company(
        self, rng: random.Random, index: int, account_id: str, n_invoices: int, n_bills: int
    ) -> None:
        now = self._stamp()
        name = _COMPANY_NAMES[(index // 2) % len(_COMPANY_NAMES)]
        if index % 2:
            name += " (Sandbox)"
        currencies = {
            i + 1: Currency(i + 1, code, cname, symbol, rate)
            for i, (code, cname, symbol, rate) in enumerate(_CURRENCIES)
        }
        gl = {
            gid: GLAccount(gid, number, gname, type_id, type_name, cur, desc)
            for gid, number, gname, type_id, type_name, cur, desc in _GL_ACCOUNTS
        }
        company = Company(
            account_id=account_id,
            name=name,
            subsidiary_id=1,
            subsidiary_name=name,
            base_currency_id=1,
            currencies=currencies,
            gl_accounts=gl,
            bank_account_id=1,
            undeposited_account_id=3,
            ar_account_id=4,
            ap_account_id=5,
            income_account_id=6,
            expense_account_id=7,
            next_entity_id=rng.randint(300, 900),
            next_transaction_id=rng.randint(8000, 9500),
        )
        self._companies[account_id] = company
        self.auth.add_account(account_id, rng)

        setup = now - timedelta(days=60)
        for kind, rows, prefix in (("customer", _CUSTOMERS, "CUST"), ("vendor", _VENDORS, "VEND")):
            for offset, (ename, code) in enumerate(rows):
                entity = Entity(
                    id=company.next_entity_id,
                    kind=kind,
                    entity_id=f"{prefix}{offset + 1:03d}",
                    company_name=ename,
                    email=f"ap@{ename.split()[0].lower()}.example.com",
                    currency_id=_currency_by_code(company, code).id,
                    created=setup,
                    modified=setup + timedelta(minutes=offset),
                )
                company.entities[entity.id] = entity
                company.next_entity_id += 1

        specs = [(INVOICE, *_INVOICE_PATTERN[i % len(_INVOICE_PATTERN)]) for i in range(n_invoices)]
        specs += [(BILL, *_BILL_PATTERN[i % len(_BILL_PATTERN)]) for i in range(n_bills)]
        # Last changes spread over the past ten days in an order unrelated to the ids.
        window = 10 * 86_400
        offsets = sorted(rng.sample(range(3_600, window), len(specs)), reverse=True)
        order = list(range(len(specs)))
        rng.shuffle(order)
        stamps = {spec: now - timedelta(seconds=offsets[pos]) for pos, spec in enumerate(order)}
        for spec_index, (kind, status, code, paid) in enumerate(specs):
            stamp = stamps[spec_index]
            currency = _currency_by_code(company, code)
            entity_kind = "customer" if kind == INVOICE else "vendor"
            candidates = [
                e
                for e in company.entities.values()
                if e.kind == entity_kind and e.currency_id == currency.id
            ]
            total = Decimal(rng.randint(10_000, 500_000)) / 100
            created = stamp - timedelta(days=rng.randint(3, 20))
            doc = self._new_document(
                company,
                kind,
                entity=rng.choice(candidates),
                currency=currency,
                total=total,
                tran_date=created.date(),
                stamp=created,
                status="D" if status == "D" else "A",
                rng=rng,
            )
            if paid is not None:
                amount = total if paid == "full" else _money(total * Decimal("0.4"))
                pay_day = min(created.date() + timedelta(days=rng.randint(1, 3)), stamp.date())
                self._ui_payment(company, doc, amount, "Seed payment", stamp, pay_day)
            doc.modified = stamp


def _currency_by_code(company: Company, code: str) -> Currency:
    for currency in company.currencies.values():
        if currency.code == code.upper():
            return currency
    raise ValueError(f"unknown currency {code!r}")


def _as_int(value: int | str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _ref_id(value: Any) -> int | None:
    """The internal id of a ``{"id": "313"}`` reference (also ``{"id": 313}``)."""
    if not isinstance(value, dict):
        return None
    raw = value.get("id")
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    return None


def _shown(value: Any) -> str:
    """How NetSuite echoes a bad reference in "Invalid Field Value X"."""
    if isinstance(value, dict):
        raw = value.get("id")
        return "" if raw is None else str(raw)
    return "" if value is None else str(value)


def _apply_items(body: Any, *, strict: bool = False) -> list[Any]:
    if not isinstance(body, dict) or "apply" not in body:
        return []
    apply = body["apply"]
    items = apply.get("items") if isinstance(apply, dict) else None
    if items is None:
        if strict and apply is not None:
            raise invalid_field_value(_shown(apply), "apply", "apply")
        return []
    if not isinstance(items, list):
        if strict:
            raise invalid_field_value(_shown(items), "apply", "apply.items")
        return []
    return items


def _parse_date(value: Any) -> date | None:
    """A REST date (``2025-05-26``) or date-time (``2025-05-26T00:00:00``, as hotglue sends)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.date()


def locked_by_workflow() -> NetSuiteError:
    """The record is locked by a workflow (samples: workflow_locked_record)."""
    return user_error("This record has been locked by a user defined workflow.")


def _bad_body() -> NetSuiteError:
    return NetSuiteError(
        400,
        "INVALID_CONTENT",
        "The request could not be understood by the server due to malformed syntax.",
    )


def _ns_number(value: Decimal) -> str:
    """A number as NetSuite prints it in messages (``-5.0``, ``0.0``): one decimal at least."""
    text = format(value.normalize(), "f")
    return text if "." in text else f"{text}.0"
