"""The NetSuite adapter under the real PushEngine, against the sandbox ledger over HTTP.

Every scenario runs for AR (invoice → customerPayment) and AP (bill → vendorPayment),
and every assertion that matters is on the ledger's state, not on our own logs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connector import jsonutil
from connector.adapters.base import (
    Adapter,
    DocumentSnapshot,
    ItemResult,
    Page,
    PaymentRequest,
    RemotePayment,
)
from connector.adapters.netsuite import NetSuiteAdapter
from connector.config import ConnectionSettings
from tests.adapters.netsuite.conftest import NS


def _counterparty(kind: str, payment: dict[str, Any]) -> str:
    field = "customer" if kind == "invoice" else "entity"
    value: str = payment[field]["id"]
    return value


def _applied(payment: dict[str, Any]) -> list[tuple[str, Decimal]]:
    return [(item["doc"]["id"], item["amount"]) for item in payment["apply"]["items"]]


# -- the happy paths -----------------------------------------------------------------
def test_full_payment_settles_the_document(ns: NS, kind: str) -> None:
    doc = ns.add_document(kind, "250.00")
    engine = ns.engine()
    intent = ns.drive(engine, ns.pay(engine, kind, doc, "250.00", "k-full"))

    assert intent.state == "applied"
    [payment] = ns.payments_on(kind, doc)
    assert payment["id"] == intent.remote_payment_id
    assert payment["externalId"] == intent.provider_key
    assert payment["memo"] == intent.reference
    assert _counterparty(kind, payment) == doc["entity"]["id"]
    assert payment["account"]["id"] == "1"  # payment_account_code / bill_payment_account_code
    assert _applied(payment) == [(doc["id"], Decimal("250.00"))]
    assert ns.open_amount(doc) == 0
    assert ns.status(kind, doc) == "B"
    assert intent.result_balance == 0
    assert intent.result_status == "Paid In Full"


def test_partial_payment_lowers_the_open_amount(ns: NS, kind: str) -> None:
    doc = ns.add_document(kind, "100.00")
    engine = ns.engine()
    intent = ns.drive(engine, ns.pay(engine, kind, doc, "40.01", "k-part"))

    assert intent.state == "applied"
    [payment] = ns.payments_on(kind, doc)
    assert _applied(payment) == [(doc["id"], Decimal("40.01"))]
    assert ns.open_amount(doc) == Decimal("59.99")
    assert ns.status(kind, doc) == "A"
    assert intent.result_balance == Decimal("59.99")


# -- the document is not payable ----------------------------------------------------------
def test_paid_elsewhere_before_the_push_is_already_settled_without_a_write(
    ns: NS, kind: str
) -> None:
    doc = ns.add_document(kind, "80.00")
    engine = ns.engine()
    intent = ns.pay(engine, kind, doc, "80.00", "k-settled")
    pay_ui = ns.ledger.apply_payment if kind == "invoice" else ns.ledger.apply_bill_payment
    pay_ui(ns.account, doc["id"], Decimal("80.00"), memo="Paid at the counter")
    before = len(ns.payments(kind))

    final = ns.drive(engine, intent)

    assert final.state == "already_settled"
    assert len(ns.payments(kind)) == before  # nothing written
    [only] = ns.payments_on(kind, doc)
    assert only["memo"] == "Paid at the counter"
    assert ns.ours(kind, final) == []


def test_paid_elsewhere_between_preflight_and_send_is_already_settled(ns: NS, kind: str) -> None:
    doc = ns.add_document(kind, "80.00")
    engine = ns.engine()
    intent = ns.pay(engine, kind, doc, "30.00", "k-race")
    # Someone pays it in full just before our create is processed: NetSuite then
    # refuses the doc in the apply sublist (INVALID_CONTENT), the engine re-reads.
    ns.faults.update({"paid_elsewhere_next": 1})

    final = ns.drive(engine, intent)

    assert final.state == "already_settled"
    assert ns.ours(kind, final) == []
    assert len(ns.payments_on(kind, doc)) == 1  # the other person's only
    assert ns.open_amount(doc) == 0


def test_document_pending_approval_is_rejected(ns: NS, kind: str) -> None:
    doc = ns.add_document(kind, "60.00", status="D")
    engine = ns.engine()
    final = ns.drive(engine, ns.pay(engine, kind, doc, "60.00", "k-pending"))

    assert final.state == "rejected"
    assert final.reason_code == "document_not_payable"
    assert "Pending Approval" in (final.reason_message or "")
    assert ns.payments_on(kind, doc) == []
    assert ns.open_amount(doc) == Decimal("60.00")


# -- the document moves under us --------------------------------------------------------------
def test_concurrent_edit_at_the_write_still_lands_once(ns: NS, kind: str) -> None:
    doc = ns.add_document(kind, "90.00")
    engine = ns.engine()
    intent = ns.pay(engine, kind, doc, "90.00", "k-edit")
    ns.sandbox_clock.advance(5)  # so that the edit moves lastModifiedDate
    ns.faults.update({"concurrent_edit_next": 1})

    final = ns.drive(engine, intent)

    assert final.state == "applied"
    [payment] = ns.payments_on(kind, doc)
    assert payment["id"] == final.remote_payment_id
    assert ns.open_amount(doc) == 0
    assert final.preflight_row_version is not None
    read = ns.ledger.invoice if kind == "invoice" else ns.ledger.bill
    assert read(ns.account, doc["id"])["lastModifiedDate"] > final.preflight_row_version


class _EditBeforeSend:
    """An adapter whose first push is preceded by a person's edit in the NetSuite UI."""

    def __init__(self, inner: NetSuiteAdapter, edit: Callable[[], object]) -> None:
        self.inner = inner
        self.provider = inner.provider
        self.capabilities = inner.capabilities
        self.entities = inner.entities
        self._edit: Callable[[], object] | None = edit

    def get_document(self, ref: str, kind: str = "invoice") -> DocumentSnapshot:
        return self.inner.get_document(ref, kind)

    def list_changed(self, entity: str, since: datetime | None, page: int, page_size: int) -> Page:
        return self.inner.list_changed(entity, since, page, page_size)

    def push_payments(
        self, batch: Sequence[PaymentRequest], idempotency_key: str
    ) -> list[ItemResult]:
        if self._edit is not None:
            self._edit()
            self._edit = None
        return self.inner.push_payments(batch, idempotency_key)

    def find_payment(self, request: PaymentRequest) -> list[RemotePayment]:
        return self.inner.find_payment(request)

    def get_documents(
        self, remote_ids: Sequence[str], kind: str = "invoice"
    ) -> dict[str, DocumentSnapshot]:
        return self.inner.get_documents(remote_ids, kind)

    def find_payments(self, requests: Sequence[PaymentRequest]) -> dict[str, list[RemotePayment]]:
        return self.inner.find_payments(requests)

    def close(self) -> None:
        self.inner.close()


def test_total_lowered_between_preflight_and_send_is_redecided(ns: NS, kind: str) -> None:
    doc = ns.add_document(kind, "100.00")
    edit = ns.ledger.edit_invoice if kind == "invoice" else ns.ledger.edit_bill

    def factory(conn: ConnectionSettings) -> Adapter:
        return _EditBeforeSend(
            ns.adapter(conn), lambda: edit(ns.account, doc["id"], total=Decimal("70.00"))
        )

    engine = ns.engine(factory=factory)
    final = ns.drive(engine, ns.pay(engine, kind, doc, "90.00", "k-lowered"))

    # NetSuite refused more than is due; the fresh read shows the lower balance.
    assert final.state == "conflict"
    assert final.reason_code == "balance_moved"
    assert "70.00" in (final.reason_message or "")
    assert ns.payments_on(kind, doc) == []
    assert ns.open_amount(doc) == Decimal("70.00")


class _RecordChangedOnce(httpx.BaseTransport):
    """Answers the first payment create with NetSuite's RCRD_HAS_BEEN_CHANGED.

    The sandbox raises it only for updates; NetSuite's optimistic locking can refuse a
    create touching a document saved meanwhile the same way. Everything else is real.
    """

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.fired = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self.fired and request.method == "POST" and "Payment" in request.url.path:
            self.fired += 1
            body = {
                "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1",
                "title": "Bad Request",
                "status": 400,
                "o:errorDetails": [
                    {
                        "detail": "Error while accessing a resource. Record has been changed.",
                        "o:errorCode": "RCRD_HAS_BEEN_CHANGED",
                    }
                ],
            }
            return httpx.Response(400, content=jsonutil.dumps(body).encode(), request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_record_has_been_changed_is_redecided_under_a_new_key(ns: NS, kind: str) -> None:
    doc = ns.add_document(kind, "100.00")
    transport = _RecordChangedOnce()
    engine = ns.engine(factory=lambda conn: ns.adapter(conn, transport=transport))
    final = ns.drive(engine, ns.pay(engine, kind, doc, "55.00", "k-changed"))

    assert transport.fired == 1
    assert final.state == "applied"
    assert final.key_version == 2
    [payment] = ns.payments_on(kind, doc)
    assert payment["id"] == final.remote_payment_id
    assert payment["externalId"] == final.provider_key
    assert payment["externalId"].endswith("-v2")
    assert ns.open_amount(doc) == Decimal("45.00")


# -- lost answers -----------------------------------------------------------------------------
def test_response_dropped_after_commit_gives_exactly_one_payment(ns: NS, kind: str) -> None:
    doc = ns.add_document(kind, "80.00")
    engine = ns.engine()
    intent = ns.pay(engine, kind, doc, "80.00", "k-drop")
    ns.faults.update({"drop_after_commit_next": 1})

    engine.run_once(intent_ids=[intent.id])
    [after_drop] = engine.intents([intent.id])
    assert after_drop.state == "unknown"  # never resent blind
    assert len(ns.ours(kind, intent)) == 1  # the ledger did commit it

    final = ns.drive(engine, intent)
    assert final.state == "applied"
    [payment] = ns.payments_on(kind, doc)
    assert final.remote_payment_id == payment["id"]
    assert ns.open_amount(doc) == 0
    phases = [a.phase for a in ns.attempts(intent)]
    assert phases.count("send") == 1
    assert "lookup" in phases


def test_ignore_idempotency_and_a_drop_still_one_payment(ns: NS, kind: str) -> None:
    doc = ns.add_document(kind, "75.00")
    engine = ns.engine()
    intent = ns.pay(engine, kind, doc, "75.00", "k-noidem")
    # The provider dedupes nothing and the first answer is lost: only our lookup
    # before any resend stands between us and a second payment.
    ns.faults.update({"drop_after_commit_next": 1, "ignore_idempotency": 1.0})

    final = ns.drive(engine, intent)

    assert final.state == "applied"
    [payment] = ns.payments_on(kind, doc)
    assert payment["id"] == final.remote_payment_id
    assert len(ns.ours(kind, final)) == 1
    assert ns.open_amount(doc) == 0


def test_500_after_commit_gives_exactly_one_payment(ns: NS, kind: str) -> None:
    doc = ns.add_document(kind, "64.00")
    engine = ns.engine()
    intent = ns.pay(engine, kind, doc, "14.00", "k-500")
    ns.faults.update({"error_500_after_commit_next": 1})

    final = ns.drive(engine, intent)

    assert final.state == "applied"
    [payment] = ns.payments_on(kind, doc)
    assert payment["id"] == final.remote_payment_id
    assert ns.open_amount(doc) == Decimal("50.00")


# -- authentication --------------------------------------------------------------------------
def test_jwt_client_credentials_token_is_sealed_shared_and_reused(ns: NS) -> None:
    from connector.crypto import TokenCipher, generate_key
    from connector.store import Store

    cipher = TokenCipher([generate_key()])
    store = Store(f"sqlite:///{ns.tmp_path / 'sealed.db'}", cipher=cipher)
    store.upgrade()
    ns.stores["sealed"] = store  # disposed at teardown
    settings = ns.settings()
    doc = ns.add_document("invoice", "30.00")

    first = ns.adapter(settings, store=store)
    assert first.credentials.mode == "jwt"
    assert first.get_document(doc["id"]).balance == Decimal("30.00")
    # Another process (a new adapter) finds the stored token: no second grant.
    second = ns.adapter(settings, store=store)
    assert second.get_document(doc["id"]).total == Decimal("30.00")

    tokens = ns.ledger.auth.tokens(ns.account)
    assert len(tokens) == 1
    from connector.state import ConnectionRecord

    with store.session() as s:
        row = s.get(ConnectionRecord, settings.connections[0].id)
        assert row is not None
        assert row.status == "active"
        assert row.access_token is not None and row.access_token.startswith("fernet:")
        assert cipher.decrypt(row.access_token) == tokens[0].token


def test_jwt_token_expired_in_the_ledger_is_replaced_once(ns: NS) -> None:
    doc = ns.add_document("invoice", "30.00")
    adapter = ns.adapter()
    adapter.get_document(doc["id"])
    # An hour later in the ledger: its token expired, while our cache (on our clock)
    # still believes it fresh. The 401 makes us fetch a new one and send again.
    ns.sandbox_clock.advance(3601)

    assert adapter.get_document(doc["id"]).balance == Decimal("30.00")

    assert len(ns.ledger.auth.tokens(ns.account)) == 2
    row = ns.connection_row(adapter.settings.id)
    assert row is not None and row.status == "active"


def test_tba_token_based_auth_pays_without_any_oauth2_token(ns: NS, kind: str) -> None:
    settings = ns.settings("tba")
    assert settings.connections[0].certificate_id is None
    doc = ns.add_document(kind, "45.00")
    engine = ns.engine(settings)
    final = ns.drive(engine, ns.pay(engine, kind, doc, "45.00", "k-tba"))

    assert final.state == "applied"
    [payment] = ns.payments_on(kind, doc)
    assert payment["id"] == final.remote_payment_id
    assert ns.open_amount(doc) == 0
    assert ns.ledger.auth.tokens(ns.account) == []  # every call was signed with TBA


@pytest.mark.parametrize("mode", ["jwt", "tba"])
def test_revoked_account_parks_the_connection(ns: NS, mode: str) -> None:
    settings = ns.settings(mode)
    doc = ns.add_document("invoice", "40.00")
    engine = ns.engine(settings)
    intent = ns.pay(engine, "invoice", doc, "40.00", "k-revoked")
    ns.ledger.revoke(ns.account)

    engine.run_once(intent_ids=[intent.id])
    row = ns.connection_row(settings.connections[0].id)
    assert row is not None
    assert row.status == "needs_reauth"
    assert row.status_reason
    [parked] = engine.intents([intent.id])
    assert parked.state not in {"applied", "rejected"}
    assert parked.reason_code == "auth_revoked"

    ns.clock.advance(600)  # past the parked retry: the engine does not even try
    engine.run_once(intent_ids=[intent.id])
    [still] = engine.intents([intent.id])
    assert still.reason_code == "connection_parked"
    assert ns.payments_on("invoice", doc) == []
    assert ns.open_amount(doc) == Decimal("40.00")


# -- the account's concurrency limit ------------------------------------------------------------
def test_concurrent_pushes_stay_within_the_account_limit(ns: NS) -> None:
    adapter = ns.adapter()
    docs = [ns.add_document("invoice", "20.00") for _ in range(8)]
    snapshots = [adapter.get_document(d["id"]) for d in docs]
    refused: list[str] = []
    original = ns.ledger.acquire_slot

    def counting(account: str) -> bool:
        ok = original(account)
        if not ok:
            refused.append(account)
        return ok

    ns.ledger.acquire_slot = counting  # type: ignore[method-assign,assignment]
    ns.faults.update({"latency_ms": 150})  # every write holds its slot a while
    results: dict[int, list[ItemResult]] = {}

    def push(i: int) -> None:
        snap = snapshots[i]
        request = PaymentRequest(
            intent_id=f"i{i}",
            document_remote_id=snap.remote_id,
            amount=Decimal("20.00"),
            currency="USD",
            transaction_date=ns.clock.now().date(),
            reference=f"cx-conc-{i}",
            account_code="1",
            contact_remote_id=snap.contact_remote_id,
            provider_key=f"cx-conc-{i}-v1",
        )
        results[i] = adapter.push_payments([request], f"cx-conc-{i}-v1")

    threads = [threading.Thread(target=push, args=(i,)) for i in range(len(docs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert refused == []  # never a 429 from NetSuite
    assert adapter.http.rate.throttled == 0
    assert all(results[i][0].payment is not None for i in range(len(docs)))
    assert all(ns.open_amount(d) == 0 for d in docs)
