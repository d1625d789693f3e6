"""Xero adapter: invoices and payments through the Accounting API 2.0.

Idempotency: every payment write carries ``Idempotency-Key`` (Xero keeps it 6
minutes) and our reference in ``Payment.Reference``, which ``find_payment``
looks up with ``where=Reference=="…"`` before any resend.

A Xero payment pays one invoice. A payment of several invoices (``PaymentRequest.lines``)
is a batch payment (``PUT /BatchPayments``, fact sheet §1: "To pay many invoices in one
bank transaction, use /BatchPayments"): one payment per invoice inside one batch, each
carrying our reference, the batch's id being the payment's remote id. Xero payments
cannot exceed the invoice's ``AmountDue`` (§1), so nothing can be left unapplied
(``capabilities.unapplied_credit`` is False).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlmodel import SQLModel

from connector import jsonutil
from connector.adapters.base import (
    Capabilities,
    DocumentSnapshot,
    ItemResult,
    Page,
    PaymentLine,
    PaymentRequest,
    RemotePayment,
)
from connector.clock import Clock
from connector.config import ConnectionSettings
from connector.errors import (
    AmountExceedsBalance,
    AuthExpired,
    AuthRevoked,
    ConnectorError,
    DocumentNotFound,
    DocumentNotPayable,
    OutcomeUnknown,
    RateLimited,
    Transient,
    ValidationRejected,
)
from connector.http import ProviderHTTP
from connector.mapping import Mapping_, field_getter, load_mapping
from connector.money import quantize, to_decimal
from connector.schema import Bill, Contact, Invoice, LedgerAccount, Payment
from connector.store import Store

__all__ = ["XERO_ERROR_TABLE", "XeroAdapter", "translate_xero_error"]

API = "/api.xro/2.0"
#: Ids (or numbers) per ``GET /Invoices?IDs=…`` and invoices per ``OR`` lookup: Xero
#: recommends about 50 elements per request (fact sheet §6), and 50 GUIDs keep the URL
#: under 2 KB.
READ_CHUNK = 50
#: Conditions per ``where`` of a payment lookup (each ``Invoice.InvoiceID==guid("…")``
#: is 56 characters; 25 keep the URL well under 2 KB).
LOOKUP_CHUNK = 25
#: Xero's longest Idempotency-Key (fact sheet §4).
MAX_KEY = 128
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
WRITE_FIELDS = frozenset(
    {
        "document_type",
        "contact_remote_id",
        "provider_key",
        "intent_id",
        "document_remote_id",
        "amount",
        "currency",
        "transaction_date",
        "reference",
        "account_code",
        "currency_rate",
        "lines",
        "unapplied",
        "total_amount",
    }
)
MODELS: dict[str, type[SQLModel]] = {
    "invoice": Invoice,
    "bill": Bill,
    "payment": Payment,
    "contact": Contact,
    "ledger_account": LedgerAccount,
}
_ENTITY_PATHS = {
    "invoice": ("Invoices", "Invoices"),
    "bill": ("Invoices", "Invoices"),
    "payment": ("Payments", "Payments"),
    "contact": ("Contacts", "Contacts"),
    "ledger_account": ("Accounts", "Accounts"),
}


@dataclass(frozen=True)
class XeroErrorRule:
    """One row of the decision table: provider signal → unified error."""

    status: int | None  # HTTP status, None = any
    error_type: str | None  # Xero's Type (ValidationException…), None = any
    pattern: str  # regex on the message (or problem Detail)
    error: type[ConnectorError]
    action: str  # what the engine does; documentation for people


# Most specific first: the first matching row wins.
XERO_ERROR_TABLE: tuple[XeroErrorRule, ...] = (
    XeroErrorRule(
        400,
        "ValidationException",
        r"Idempotency Key: .* is used with a different request",
        ValidationRejected,
        "bug-level: a key was reused for another body; park, alert",
    ),
    XeroErrorRule(
        400,
        "ValidationException",
        r"Payments can only be made against Authorised documents",
        DocumentNotPayable,
        "re-read the document: paid → already_settled, else rejected",
    ),
    XeroErrorRule(
        400,
        "ValidationException",
        r"Payment amount exceeds the amount outstanding",
        AmountExceedsBalance,
        "re-read the document: someone else may have paid",
    ),
    XeroErrorRule(
        400,
        "ValidationException",
        r"Account could not be found",
        ValidationRejected,
        "rejected: fix payment_account_code",
    ),
    XeroErrorRule(
        400,
        "ValidationException",
        r"Account type is invalid for making a payment",
        ValidationRejected,
        "rejected: the account must be BANK or take payments",
    ),
    XeroErrorRule(
        400,
        "ValidationException",
        r"not of valid status for modification|cannot be edited as it has a payment",
        DocumentNotPayable,
        "re-read the document: it is paid or locked by an allocation",
    ),
    XeroErrorRule(
        400,
        "ValidationException",
        r"(Invoice|document).*(could not be found|does not exist)",
        DocumentNotFound,
        "rejected: no such document",
    ),
    XeroErrorRule(
        400,
        "PostDataInvalidException",
        r".*",
        ValidationRejected,
        "bug-level: we sent malformed JSON",
    ),
    XeroErrorRule(400, None, r".*", ValidationRejected, "rejected with the provider's message"),
    XeroErrorRule(401, None, r"TokenExpired", AuthExpired, "refresh the token and send again"),
    XeroErrorRule(401, None, r".*", AuthRevoked, "park the connection: a person must reconnect"),
    XeroErrorRule(
        403,
        None,
        r".*",
        AuthRevoked,
        "park the connection: tenant disconnected or not in this grant",
    ),
    XeroErrorRule(404, None, r".*", DocumentNotFound, "rejected: no such document"),
    XeroErrorRule(429, None, r".*", RateLimited, "wait Retry-After, then send again"),
    XeroErrorRule(503, None, r".*", Transient, "reads: retry later; writes: outcome unknown"),
    XeroErrorRule(500, None, r".*", Transient, "reads: retry later; writes: outcome unknown"),
)


def load_connection_mapping(settings: ConnectionSettings) -> Mapping_:
    """The shipped Xero mapping with this connection's overrides, validated."""
    return load_mapping(
        "xero",
        models=MODELS,
        write_fields=WRITE_FIELDS,
        overrides=settings.mapping,
        overrides_source=f"connections[id={settings.id!r}].mapping",
    )


def translate_xero_error(
    status: int, error_type: str | None, message: str, *, write: bool = False
) -> ConnectorError:
    """Turn Xero's status, error Type and message into our taxonomy (one boundary)."""
    for rule in XERO_ERROR_TABLE:
        if rule.status is not None and rule.status != status:
            continue
        if rule.error_type is not None and rule.error_type != error_type:
            continue
        if re.search(rule.pattern, message or "", re.IGNORECASE):
            cls = rule.error
            if write and cls is Transient:
                cls = OutcomeUnknown
            return cls(
                message or f"HTTP {status}",
                provider_code=error_type or str(status),
                provider_message=message,
                status_code=status,
            )
    cls2: type[ConnectorError] = (
        (OutcomeUnknown if write else Transient) if status >= 500 else ValidationRejected
    )
    return cls2(
        message or f"HTTP {status}",
        provider_code=error_type or str(status),
        provider_message=message,
        status_code=status,
    )


_getter = field_getter


def _fast_reader(reader: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``reader.read`` with the per-field JMESPath walk replaced by dict lookups.

    Pages of 1000 records spend most of their mapping time in JMESPath's
    interpreter; a field path is a dict lookup with the same None-propagation.
    Conversions, enums and defaults are the mapping's own.
    """
    fields = [(f.name, _getter(f.expr), f.convert, f.enum, f.default) for f in reader.fields]

    def read(payload: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, get, convert, enum, default in fields:
            value = get(payload)
            if enum is not None and value is not None:
                key = str(value).upper()
                value = enum.get(key, enum.get("*", str(value).lower()))
            value = convert(value)
            out[name] = default if value is None else value
        return out

    return read


def _messages(item: dict[str, Any]) -> str:
    errors = item.get("ValidationErrors") or []
    # Xero writes "Message", some of its own examples "Description": read both.
    texts = [str(e.get("Message") or e.get("Description") or "") for e in errors]
    return "; ".join(t for t in texts if t)


class XeroAdapter:
    """The Xero implementation of :class:`connector.adapters.base.Adapter`."""

    provider = "xero"
    entities: tuple[str, ...] = ("invoice", "bill", "payment", "contact", "ledger_account")
    capabilities = Capabilities(
        max_batch=50,  # Xero recommends about 50 elements per request
        concurrency=5,
        per_minute=60,
        idempotency="Idempotency-Key header (kept 6 minutes) + Reference lookup",
        key_window=timedelta(minutes=6),
        max_key_length=MAX_KEY,
        # §1: "Amount: Must be less than or equal to the outstanding amount owing on the
        # invoice": a payment cannot carry more than it applies.
        unapplied_credit=False,
    )

    def __init__(
        self,
        settings: ConnectionSettings,
        store: Store,
        *,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        mapping: Mapping_ | None = None,
    ) -> None:
        self.settings = settings
        self.mapping = mapping or load_connection_mapping(settings)
        self.http = ProviderHTTP(
            settings,
            store,
            clock=clock,
            base_headers={"xero-tenant-id": settings.tenant},
            rate_limit_headers=(
                "X-MinLimit-Remaining",
                "X-DayLimit-Remaining",
                "X-AppMinLimit-Remaining",
            ),
            transport=transport,
            limits=self.capabilities,
        )
        self._readers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        #: Fetch the engine's next page in the background (a pull engine turns it on).
        self.prefetch_pages = False
        self._stamp_readers: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._prefetch: tuple[tuple[Any, ...], Future[Any]] | None = None

    def close(self) -> None:
        """Wait for a prefetch in flight, then close the HTTP client."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._prefetch = None
        self.http.close()

    # -- the error boundary ---------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        write: bool = False,
        ok_statuses: tuple[int, ...] = (200,),
    ) -> Any:
        content = None
        hdrs = dict(headers or {})
        if body is not None:
            content = jsonutil.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        response = self.http.request(
            method, f"{API}{path}", params=params, content=content, headers=hdrs, write=write
        )
        if response.status_code in ok_statuses:
            try:
                return jsonutil.loads(response.content)
            except ValueError as exc:
                raise (OutcomeUnknown if write else Transient)(
                    f"{method} {path}: HTTP {response.status_code} with a body that is not JSON",
                    provider_message=response.text[:300],
                    status_code=response.status_code,
                ) from exc
        raise self._error_from(response, write)

    @staticmethod
    def _error_from(response: httpx.Response, write: bool) -> ConnectorError:
        status = response.status_code
        error_type: str | None = None
        message = response.text[:500]
        try:
            data = jsonutil.loads(response.content)
        except ValueError:
            data = None
        if isinstance(data, dict):
            error_type = data.get("Type") or data.get("Title")
            parts = [str(data.get("Message") or data.get("Detail") or "")]
            for element in data.get("Elements") or []:
                text = _messages(element)
                if text:
                    parts.append(text)
            message = "; ".join(p for p in parts if p)
        return translate_xero_error(status, error_type, message, write=write)

    # -- reads -------------------------------------------------------------------
    def _snapshot(self, raw: dict[str, Any]) -> DocumentSnapshot:
        kind = "bill" if raw.get("Type") == "ACCPAY" else "invoice"
        record = self.mapping.reader(kind).read(raw)
        currency = str(record["currency"] or "USD")
        record["total"] = quantize(record["total"], currency)
        record["balance"] = quantize(record["balance"], currency)
        return DocumentSnapshot(
            remote_id=record["remote_id"],
            number=record.get("number"),
            kind=kind,
            status=record["status"],
            provider_status=str(raw.get("Status")),
            currency=currency,
            total=record["total"],
            balance=record["balance"],
            row_version=record.get("row_version"),
            record=record,
            contact_remote_id=(raw.get("Contact") or {}).get("ContactID"),
        )

    def get_document(self, ref: str, kind: str = "invoice") -> DocumentSnapshot:
        """Fresh read of an invoice by InvoiceID or InvoiceNumber."""
        if _GUID.match(ref):
            data = self._call("GET", f"/Invoices/{ref}")
        else:
            data = self._call("GET", "/Invoices", params={"InvoiceNumbers": ref})
        wanted = "ACCPAY" if kind == "bill" else "ACCREC"
        invoices = [i for i in data.get("Invoices", []) if i.get("Type", wanted) == wanted]
        if not invoices:
            raise DocumentNotFound(f"no {kind} {ref!r} in Xero tenant {self.settings.tenant}")
        return self._snapshot(invoices[0])

    def get_documents(
        self, remote_ids: Sequence[str], kind: str = "invoice"
    ) -> dict[str, DocumentSnapshot]:
        """Fresh reads of many invoices (bills), keyed by the ref as given.

        ``GET /Invoices?IDs=…`` (a documented filter, "faster than where", fact sheet §5)
        for InvoiceIDs and ``InvoiceNumbers=…`` for numbers, 50 a request. Without
        ``page`` Xero leaves out line items, which no snapshot field reads. Deleted and
        voided invoices come back with their status, as from :meth:`get_document`.
        """
        wanted_type = "ACCPAY" if kind == "bill" else "ACCREC"
        wanted = {ref: ref.strip() for ref in remote_ids if ref and ref.strip()}
        refs = list(dict.fromkeys(wanted.values()))
        ids = [ref for ref in refs if _GUID.match(ref)]
        numbers = [ref for ref in refs if not _GUID.match(ref) and "," not in ref]
        found: dict[str, dict[str, Any]] = {}
        for param, chunk_of in (("IDs", ids), ("InvoiceNumbers", numbers)):
            for start in range(0, len(chunk_of), READ_CHUNK):
                chunk = chunk_of[start : start + READ_CHUNK]
                data = self._call("GET", "/Invoices", params={param: ",".join(chunk)})
                for raw in data.get("Invoices") or []:
                    if raw.get("Type", wanted_type) != wanted_type:
                        continue
                    key = raw.get("InvoiceID") if param == "IDs" else raw.get("InvoiceNumber")
                    # As get_document: the first invoice (default order) of a number.
                    found.setdefault(str(key or "").lower(), raw)
        snapshots: dict[str, DocumentSnapshot] = {}
        for ref in refs:
            raw = found.get(ref.lower())
            if raw is not None:
                snapshots[ref] = self._snapshot(raw)
            elif "," in ref:  # no comma-separated list can name it: read it alone
                with contextlib.suppress(DocumentNotFound):
                    snapshots[ref] = self.get_document(ref, kind)
        return {given: snapshots[ref] for given, ref in wanted.items() if ref in snapshots}

    def list_changed(self, entity: str, since: datetime | None, page: int, page_size: int) -> Page:
        """One page of ``entity`` changed since ``since``, oldest change first.

        With ``prefetch_pages`` on, while a page is mapped and committed, the page
        the pull engine will ask for next (its keyset rule: the newest change of this page, page 1; or the next
        page number within one second) is already being fetched in the background.
        A prefetch is only a read sent earlier; any other request discards it.
        """
        key = (entity, since, page, page_size)
        pending, self._prefetch = self._prefetch, None
        if pending is not None:
            wanted, future = pending
            if wanted == key:
                data = future.result()  # re-raises what the request raised
            else:
                future.exception()  # wait: one request in flight per adapter
                data = self._fetch_changed(*key)
        else:
            data = self._fetch_changed(*key)
        resource_key = _ENTITY_PATHS[entity][1]
        items = data.get(resource_key, [])
        read = self._readers.get(entity)
        if read is None:
            read = self._readers[entity] = _fast_reader(self.mapping.reader(entity))
        paged = entity != "ledger_account"  # Accounts are not paged by Xero
        if paged:
            pagination = data.get("pagination") or {}
            page_count = int(pagination.get("pageCount", page if len(items) >= page_size else 0))
            has_more = page < page_count if pagination else len(items) >= page_size
        else:
            has_more = False
        if has_more and items and self.prefetch_pages:
            self._start_prefetch(entity, since, page, page_size, items)
        records = [read(item) for item in items]
        if entity == "payment":
            for rec, item in zip(records, items, strict=True):
                invoice = item.get("Invoice") or {}
                rec["allocations"] = [
                    {
                        "id": invoice.get("InvoiceID"),
                        "type": "bill" if invoice.get("Type") == "ACCPAY" else "invoice",
                        "amount": rec["total_amount"],
                    }
                ]
        stamps = [r["remote_updated_at"] for r in records if r.get("remote_updated_at")]
        return Page(
            records=records,
            page=page,
            page_size=page_size,
            has_more=has_more,
            max_updated_at=max(stamps) if stamps else None,
        )

    def _fetch_changed(self, entity: str, since: datetime | None, page: int, page_size: int) -> Any:
        resource, _key = _ENTITY_PATHS[entity]
        headers = {}
        if since is not None:
            headers["If-Modified-Since"] = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        params: dict[str, Any] = {"order": "UpdatedDateUTC ASC"}
        if entity in ("invoice", "bill"):
            # Sales invoices (ACCREC) and bills (ACCPAY) share the endpoint.
            params["where"] = 'Type=="ACCPAY"' if entity == "bill" else 'Type=="ACCREC"'
        if entity != "ledger_account":
            params.update(page=page, pageSize=page_size)
        return self._call("GET", f"/{resource}", params=params, headers=headers)

    def _start_prefetch(
        self,
        entity: str,
        since: datetime | None,
        page: int,
        page_size: int,
        items: list[dict[str, Any]],
    ) -> None:
        """Fetch the page the engine's keyset rule asks for next, in the background."""
        stamp_of = self._stamp_readers.get(entity)
        if stamp_of is None:
            reader = self.mapping.reader(entity)
            field_ = next((f for f in reader.fields if f.name == "remote_updated_at"), None)
            if field_ is None:
                return
            get, convert = _getter(field_.expr), field_.convert
            stamp_of = self._stamp_readers[entity] = lambda item: convert(get(item))
        stamps = [s for s in map(stamp_of, items) if s is not None]
        newest = max(stamps).replace(microsecond=0) if stamps else None
        if newest is not None and (since is None or newest > since):
            key = (entity, newest, 1, page_size)
        else:
            key = (entity, since, page + 1, page_size)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xero-prefetch")
        self._prefetch = (key, self._executor.submit(self._fetch_changed, *key))

    # -- writes ------------------------------------------------------------------
    def _payment(self, raw: dict[str, Any]) -> RemotePayment:
        rec = self.mapping.reader("payment").read(raw)
        invoice = raw.get("Invoice") or {}
        return RemotePayment(
            remote_id=str(rec["remote_id"]),
            document_remote_id=invoice.get("InvoiceID"),
            amount=rec["total_amount"],
            reference=rec.get("reference"),
            status=rec["status"],
            record=rec,
        )

    def push_payments(
        self, batch: Sequence[PaymentRequest], idempotency_key: str
    ) -> list[ItemResult]:
        """``PUT /Payments?summarizeErrors=false`` with one Idempotency-Key for the call;
        payments of several invoices as ``PUT /BatchPayments?summarizeErrors=false``.

        When a call holds both kinds, the batch payments go second under a key derived
        from ``idempotency_key`` (deterministic, so a resend of the call resends both
        under the same keys); if that second request fails, its items are reported
        :class:`OutcomeUnknown` (the first request's results stand).
        """
        results: dict[str, ItemResult] = {}
        singles: list[PaymentRequest] = []
        batches: list[PaymentRequest] = []
        for request in batch:
            if request.unapplied > 0:
                results[request.intent_id] = ItemResult(
                    request.intent_id,
                    error=ValidationRejected(
                        "Xero cannot leave part of a payment unapplied: a payment must not "
                        "exceed the invoice's AmountDue",
                        provider_code="unapplied_not_supported",
                    ),
                )
            elif request.multi:
                batches.append(request)
            else:
                singles.append(request)
        if singles:
            for result in self._put_payments(singles, idempotency_key):
                results[result.intent_id] = result
        if batches:
            if not singles:
                for result in self._put_batch_payments(batches, idempotency_key):
                    results[result.intent_id] = result
            else:
                key = _derived_key(idempotency_key, "-batch")
                try:
                    answered = self._put_batch_payments(batches, key)
                except ConnectorError as exc:
                    answered = [
                        ItemResult(
                            r.intent_id,
                            error=OutcomeUnknown(
                                f"PUT /BatchPayments failed after PUT /Payments "
                                f"({exc.code}: {exc.message})",
                                provider_code=exc.provider_code,
                                status_code=exc.status_code,
                            ),
                            status_code=exc.status_code,
                        )
                        for r in batches
                    ]
                for result in answered:
                    results[result.intent_id] = result
        return [results[r.intent_id] for r in batch]

    def _put_payments(self, batch: Sequence[PaymentRequest], key: str) -> list[ItemResult]:
        payload = {"Payments": [self.mapping.write_payment(r.as_mapping_input()) for r in batch]}
        data = self._call(
            "PUT",
            "/Payments",
            params={"summarizeErrors": "false"},
            body=payload,
            headers={"Idempotency-Key": key},
            write=True,
        )
        items = data.get("Payments") or []
        if len(items) != len(batch):
            raise OutcomeUnknown(
                f"PUT /Payments answered {len(items)} items for {len(batch)} sent",
                provider_message=str(data)[:300],
                status_code=200,
            )
        results: list[ItemResult] = []
        for request, item in zip(batch, items, strict=True):
            status = str(item.get("StatusAttributeString") or "OK").upper()
            if status == "ERROR" or item.get("HasValidationErrors"):
                err = translate_xero_error(400, "ValidationException", _messages(item))
                results.append(ItemResult(request.intent_id, error=err, status_code=200))
            elif not item.get("PaymentID"):
                # Xero has answered OK with no PaymentID and created nothing
                # (XeroAPI/Xero-NetStandard#324): we cannot know, so we look it up.
                results.append(
                    ItemResult(
                        request.intent_id,
                        error=OutcomeUnknown("Xero answered OK without a PaymentID"),
                        status_code=200,
                    )
                )
            else:
                results.append(
                    ItemResult(request.intent_id, payment=self._payment(item), status_code=200)
                )
        return results

    def batch_payload(self, request: PaymentRequest) -> dict[str, Any]:
        """The BatchPayment of a several-invoice request: one mapped payment per line
        (``[write.payment]``), the first one's Account, Date and Reference on the batch
        (the spec's request example carries them on both)."""
        members = [
            self.mapping.write_payment(
                {
                    **request.as_mapping_input(),
                    "document_remote_id": line.document_remote_id,
                    "amount": line.amount,
                }
            )
            for line in request.applied_lines
        ]
        body: dict[str, Any] = {
            name: members[0][name]
            for name in ("Account", "Date", "Reference")
            if name in members[0]
        }
        body["Payments"] = members
        return body

    def _put_batch_payments(self, batch: Sequence[PaymentRequest], key: str) -> list[ItemResult]:
        payload = {"BatchPayments": [self.batch_payload(r) for r in batch]}
        data = self._call(
            "PUT",
            "/BatchPayments",
            params={"summarizeErrors": "false"},
            body=payload,
            headers={"Idempotency-Key": key},
            write=True,
        )
        items = data.get("BatchPayments") or []
        if len(items) != len(batch):
            raise OutcomeUnknown(
                f"PUT /BatchPayments answered {len(items)} items for {len(batch)} sent",
                provider_message=str(data)[:300],
                status_code=200,
            )
        results: list[ItemResult] = []
        for request, item in zip(batch, items, strict=True):
            messages = "; ".join(
                dict.fromkeys(
                    m
                    for m in [_messages(item)] + [_messages(p) for p in item.get("Payments") or []]
                    if m
                )
            )
            status = str(item.get("StatusAttributeString") or "OK").upper()
            if status == "ERROR" or item.get("ValidationErrors") or messages:
                err = translate_xero_error(400, "ValidationException", messages)
                results.append(ItemResult(request.intent_id, error=err, status_code=200))
            elif not item.get("BatchPaymentID"):
                results.append(
                    ItemResult(
                        request.intent_id,
                        error=OutcomeUnknown("Xero answered OK without a BatchPaymentID"),
                        status_code=200,
                    )
                )
            else:
                results.append(
                    ItemResult(
                        request.intent_id,
                        payment=self._batch_remote(item, request),
                        status_code=200,
                    )
                )
        return results

    def _batch_remote(self, batch: dict[str, Any], request: PaymentRequest) -> RemotePayment:
        """A batch payment (as ``/BatchPayments`` renders it) as the answer to ``request``."""
        members = batch.get("Payments") or []
        currency = next(
            (
                str((m.get("Invoice") or {}).get("CurrencyCode"))
                for m in members
                if (m.get("Invoice") or {}).get("CurrencyCode")
            ),
            request.currency,
        )
        return self._batch_of(
            batch_id=str(batch["BatchPaymentID"]),
            summary=batch,
            members=[
                (str((m.get("Invoice") or {}).get("InvoiceID") or ""), m.get("Amount"))
                for m in members
            ],
            currency=currency,
            request=request,
        )

    def _batch_of(
        self,
        *,
        batch_id: str,
        summary: dict[str, Any],
        members: list[tuple[str, Any]],
        currency: str,
        request: PaymentRequest,
    ) -> RemotePayment:
        """The unified payment of a batch: ``remote_id`` the BatchPaymentID, ``amount`` and
        ``allocations`` what it applies to the request's invoices, the record read by the
        mapping's payment reader from the batch's summary."""
        per_invoice: dict[str, Decimal] = {}
        for invoice_id, amount in members:
            key = invoice_id.lower()
            per_invoice[key] = per_invoice.get(key, Decimal(0)) + to_decimal(amount or 0)
        lines = tuple(
            PaymentLine(doc, quantize(per_invoice[doc.lower()], currency))
            for doc in request.document_ids
            if doc.lower() in per_invoice
        )
        view = {
            "PaymentID": batch_id,
            "PaymentType": "ACCPAYPAYMENT"
            if summary.get("Type") == "PAYBATCH"
            else "ACCRECPAYMENT",
            "Status": summary.get("Status"),
            "Amount": summary.get("TotalAmount"),
            "Invoice": {"CurrencyCode": currency},
            "Date": summary.get("Date"),
            "Reference": summary.get("Reference"),
            "Account": summary.get("Account"),
            "UpdatedDateUTC": summary.get("UpdatedDateUTC"),
        }
        record = self.mapping.reader("payment").read(view)
        if record.get("total_amount") is not None:
            record["total_amount"] = quantize(record["total_amount"], currency)
        record["allocations"] = [
            {"id": line.document_remote_id, "type": request.document_type, "amount": line.amount}
            for line in lines
        ]
        return RemotePayment(
            remote_id=batch_id,
            document_remote_id=request.document_remote_id,
            amount=quantize(sum((line.amount for line in lines), Decimal(0)), currency),
            reference=record.get("reference") or request.reference,
            status=record["status"],
            record=record,
            allocations=lines,
        )

    def find_payment(self, request: PaymentRequest) -> list[RemotePayment]:
        """Payments whose Reference is exactly ours, on the intent's document(s)."""
        return self.find_payments([request])[request.intent_id]

    def find_payments(self, requests: Sequence[PaymentRequest]) -> dict[str, list[RemotePayment]]:
        """:meth:`find_payment` for many requests in few ``GET /Payments`` calls.

        One request: ``where=Reference=="…"``. Several: ``Invoice.InvoiceID==guid("…") OR
        …`` over their invoices, 25 a call — the fact sheet (§5) names PaymentID and
        Invoice.InvoiceID as the fields optimised with ``OR`` — our references then
        matched here (requests naming an invoice by something else than its InvoiceID
        fall back to ``Reference=="a" OR Reference=="b"``). A request of several invoices
        finds the batch payments whose payments carry its reference on its invoices,
        reported as batches (``BatchPaymentID``), as ``push_payments`` did.
        """
        found: dict[str, list[RemotePayment]] = {r.intent_id: [] for r in requests}
        if not requests:
            return found
        raws: dict[str, dict[str, Any]] = {}
        by_invoice = len(requests) > 1 and all(
            _GUID.match(d) for r in requests for d in r.document_ids
        )
        if by_invoice:
            docs = list(dict.fromkeys(d.lower() for r in requests for d in r.document_ids))
            clauses = [f'Invoice.InvoiceID==guid("{d}")' for d in docs]
        else:
            refs = list(dict.fromkeys(r.reference for r in requests))
            clauses = [f'Reference=="{_escaped(ref)}"' for ref in refs]
        for start in range(0, len(clauses), LOOKUP_CHUNK):
            where = " OR ".join(clauses[start : start + LOOKUP_CHUNK])
            data = self._call("GET", "/Payments", params={"where": where})
            for raw in data.get("Payments") or []:
                raws.setdefault(str(raw.get("PaymentID")), raw)
        batches: dict[str, list[dict[str, Any]]] = {}
        for raw in raws.values():
            if raw.get("BatchPaymentID"):
                batches.setdefault(str(raw["BatchPaymentID"]), []).append(raw)
        for request in requests:
            mine = {d.lower() for d in request.document_ids}
            if not request.multi:
                # One invoice: the payment itself, made alone or in a batch (the spec's
                # GET /Payments example shows one of a batch) — as push_payments sent it.
                for raw in raws.values():
                    payment = self._payment(raw)
                    if (
                        payment.reference == request.reference
                        and (payment.document_remote_id or "").lower() in mine
                    ):
                        found[request.intent_id].append(payment)
                continue
            for batch_id, members in batches.items():
                ours = [
                    m
                    for m in members
                    if m.get("Reference") == request.reference
                    and str((m.get("Invoice") or {}).get("InvoiceID") or "").lower() in mine
                ]
                if ours:
                    found[request.intent_id].append(
                        self._batch_of_payments(batch_id, ours, request)
                    )
        return found

    def _batch_of_payments(
        self, batch_id: str, payments: list[dict[str, Any]], request: PaymentRequest
    ) -> RemotePayment:
        """A batch payment as ``GET /Payments`` shows its payments (each with a summary
        of the batch); deleted once all of them are."""
        summary = dict(payments[0].get("BatchPayment") or {})
        summary.setdefault(
            "Type", "PAYBATCH" if payments[0].get("PaymentType") == "ACCPAYPAYMENT" else "RECBATCH"
        )
        summary.setdefault("Date", payments[0].get("Date"))
        summary.setdefault("UpdatedDateUTC", payments[0].get("UpdatedDateUTC"))
        summary["Reference"] = payments[0].get("Reference")
        if all(str(p.get("Status")).upper() == "DELETED" for p in payments):
            summary["Status"] = "DELETED"
        live = [p for p in payments if str(p.get("Status")).upper() != "DELETED"] or payments
        currency = str((payments[0].get("Invoice") or {}).get("CurrencyCode") or request.currency)
        return self._batch_of(
            batch_id=batch_id,
            summary=summary,
            members=[
                (str((p.get("Invoice") or {}).get("InvoiceID") or ""), p.get("Amount"))
                for p in live
            ],
            currency=currency,
            request=request,
        )


def _escaped(text: str) -> str:
    """A string for a ``where`` literal: its double quotes escaped."""
    return text.replace('"', '\\"')


def _derived_key(key: str, suffix: str) -> str:
    """A second Idempotency-Key of one call, deterministic and within Xero's 128."""
    if len(key) + len(suffix) <= MAX_KEY:
        return key + suffix
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return digest[: MAX_KEY - len(suffix)] + suffix
