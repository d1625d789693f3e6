"""Webhooks: intent to receive, signed and batched INVOICE/CONTACT events.

The receiver here is independent of the sandbox: it verifies ``x-xero-signature`` with
the documented algorithm (base64 of HMAC-SHA256 of the raw body under the signing key),
checked first against the fact sheet's test vector.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema_path import SchemaPath
from openapi_core.validation.schemas import oas31_schema_validators_factory

from connector.sandbox import SandboxServer, SandboxState
from connector.sandbox.xero import webhooks

from .conftest import ServerFactory, XeroClient, parse

SPEC_DIR = Path(
    os.environ.get(
        "XERO_SPEC_DIR", Path(__file__).parents[1] / "fixtures" / "shared" / "specs" / "xero"
    )
)
KEY = "x1D3nPq5cV0mNs8zR4wYbT7uKe2LhGjA9fWo6iE+Qd0SaBcXrMvF1yHtUk3lZp8gJnOw=="

# The fact sheet's verified vector (calcinai/xero-php tests/WebhookTest.php).
VECTOR_KEY = "test_key"
VECTOR_BODY = (
    b'{"events":[],"firstEventSequence": 0,"lastEventSequence": 0, '
    b'"entropy": "NLDZEGWUXNHESAQVGLYF"}'
)
VECTOR_SIGNATURE = "ixznmr+Pdl6QymsWZM+9UkY4lu97q04sJyejmSOp25U="


def documented_signature(key: str, body: bytes) -> str:
    """[DOC-WH]: base64(HMAC-SHA256(key = webhook signing key, msg = raw body))."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every POST.

    ``mode``: ``verify`` answers 200 to correctly signed bodies and 401 to the rest (what
    Xero requires); ``accept_all`` answers 200 to everything; ``flaky`` verifies, but
    answers 500 to the first ``fail_first`` event deliveries.
    """

    def __init__(self, key: str, mode: str = "verify", fail_first: int = 0) -> None:
        self.key = key
        self.mode = mode
        self.fail_first = fail_first
        self.posts: list[tuple[bytes, str | None, int]] = []
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the stdlib's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.answer(body, self.headers.get("x-xero-signature"))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/xero-webhooks"

    def answer(self, body: bytes, signature: str | None) -> int:
        valid = signature is not None and hmac.compare_digest(
            documented_signature(self.key, body), signature
        )
        status = 200 if valid or self.mode == "accept_all" else 401
        with self._lock:
            flaky = status == 200 and self.mode == "flaky" and self.fail_first > 0
            if flaky and json.loads(body)["events"]:
                self.fail_first -= 1
                status = 500
            self.posts.append((body, signature, status))
            self._lock.notify_all()
        return status

    def event_posts(self) -> list[dict[str, Any]]:
        """Accepted POSTs that carried events, parsed."""
        with self._lock:
            return [
                json.loads(body)
                for body, _, status in self.posts
                if status == 200 and json.loads(body)["events"]
            ]

    def events(self) -> list[dict[str, Any]]:
        return [event for post in self.event_posts() for event in post["events"]]

    def wait_for(self, check: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not check():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(KEY)
    yield rec
    rec.close()


def admin(server: SandboxServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)


def register(server: SandboxServer, url: str, key: str = KEY, **extra: Any) -> dict[str, Any]:
    with admin(server) as http:
        response = http.post("/_sandbox/xero/webhooks", json={"url": url, "key": key, **extra})
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


def webhook_validator() -> Callable[[dict[str, Any]], None]:
    spec = SchemaPath.from_file_path(str(SPEC_DIR / "xero-webhooks.yaml"))
    schema = spec / "components" / "schemas" / "WebhookEvent"
    return oas31_schema_validators_factory.create(spec, schema).validate


def test_signature_matches_the_documented_test_vector() -> None:
    assert documented_signature(VECTOR_KEY, VECTOR_BODY) == VECTOR_SIGNATURE
    assert webhooks.sign(VECTOR_BODY, VECTOR_KEY) == VECTOR_SIGNATURE
    assert webhooks.verify(VECTOR_BODY, VECTOR_KEY, VECTOR_SIGNATURE)
    assert not webhooks.verify(VECTOR_BODY + b" ", VECTOR_KEY, VECTOR_SIGNATURE)
    assert not webhooks.verify(VECTOR_BODY, "other_key", VECTOR_SIGNATURE)
    assert not webhooks.verify(VECTOR_BODY, VECTOR_KEY, None)


def test_intent_to_receive_passes_a_correct_receiver(
    server: SandboxServer, receiver: Receiver
) -> None:
    status = register(server, receiver.url)
    assert (status["registered"], status["status"]) == (True, "OK")
    probes = status["intent_to_receive"]["probes"]
    assert status["intent_to_receive"]["passed"] is True
    assert {p["signed_correctly"] for p in probes} == {True, False}  # some of each
    assert [p["status"] for p in probes] == [200 if p["signed_correctly"] else 401 for p in probes]
    assert len(receiver.posts) == len(probes)
    for (body, signature, answered), probe in zip(receiver.posts, probes, strict=True):
        payload = json.loads(body)
        assert payload["events"] == [] and len(payload["entropy"]) == 20
        assert (payload["firstEventSequence"], payload["lastEventSequence"]) == (0, 0)
        assert (documented_signature(KEY, body) == signature) is probe["signed_correctly"]
        assert answered == probe["status"]
    assert len({json.loads(body)["entropy"] for body, _, _ in receiver.posts}) == len(probes)
    with admin(server) as http:
        assert http.get("/_sandbox/xero/webhooks").json()["status"] == "OK"


def test_a_receiver_that_accepts_everything_fails_and_gets_no_events(
    server: SandboxServer,
) -> None:
    lazy = Receiver(KEY, mode="accept_all")
    try:
        status = register(server, lazy.url)
        assert status["status"] == "FAILED" and status["intent_to_receive"]["passed"] is False
        failed = [p for p in status["intent_to_receive"]["probes"] if not p["passed"]]
        assert failed and all(not p["signed_correctly"] and p["status"] == 200 for p in failed)
        probes = len(lazy.posts)
        tenant = server.state.xero.tenant_ids[0]
        server.state.xero.add_invoice(tenant, total=Decimal("5.00"))
        assert not lazy.wait_for(lambda: len(lazy.posts) > probes, timeout=0.4)
    finally:
        lazy.close()


def test_unreachable_receiver_fails_intent_to_receive(server: SandboxServer) -> None:
    closed = Receiver(KEY)
    url = closed.url
    closed.close()
    status = register(server, url)
    assert status["status"] == "FAILED"
    assert all(p["status"] is None and p["error"] for p in status["intent_to_receive"]["probes"])


def test_registration_input_is_checked(xero: XeroClient) -> None:
    bodies: list[Any] = [
        {"url": "ftp://x", "key": KEY},
        {"url": "http://127.0.0.1:9/x", "key": ""},
        {"key": KEY},
        {"url": "http://127.0.0.1:9/x", "key": KEY, "categories": ["PAYMENT"]},
        [],
    ]
    for body in bodies:
        assert xero.http.post("/_sandbox/xero/webhooks", json=body).status_code == 400, body
    assert xero.http.get("/_sandbox/xero/webhooks").json() == {"registered": False}


def test_changes_arrive_signed_batched_and_valid(server: SandboxServer, receiver: Receiver) -> None:
    state = server.state
    register(server, receiver.url)
    # One batch for the four changes below, however slow a loaded machine makes the HTTP
    # call among them (the ~100 ms default is checked by the test after this one).
    state.xero.webhooks.batch_window = 1.0
    xero = XeroClient(server)
    tenant = xero.tenant_id
    try:
        invoice = xero.payable_invoice()
        bill = xero.payable_invoice(type="ACCPAY")
        created = state.xero.add_invoice(tenant, total=Decimal("42.00"))
        paid = xero.send("POST", "/Payments", xero.payment_body(invoice["InvoiceID"], "3.00"))
        assert paid.status_code == 200
        state.xero.apply_payment(tenant, bill["InvoiceID"], Decimal("2.00"))
        contact = state.xero.add_contact(tenant, "Fresh Foods", is_customer=True)
        assert state.xero.webhooks.wait_idle(5)
        assert receiver.wait_for(lambda: len(receiver.events()) >= 4)
        posts = receiver.event_posts()
        events = receiver.events()
        assert [(e["eventCategory"], e["eventType"], e["resourceId"]) for e in events] == [
            ("INVOICE", "CREATE", created["InvoiceID"]),
            ("INVOICE", "UPDATE", invoice["InvoiceID"]),  # a payment is an invoice update
            ("INVOICE", "UPDATE", bill["InvoiceID"]),  # bills are invoices too
            ("CONTACT", "CREATE", contact["ContactID"]),
        ]
        assert len(posts) == 1  # all four within one batch window
        assert (posts[0]["firstEventSequence"], posts[0]["lastEventSequence"]) == (1, 4)
        assert all(e["tenantId"] == tenant and e["tenantType"] == "ORGANISATION" for e in events)
        validate = webhook_validator()
        for post in posts:
            validate(post)
        # Every delivery was signed with the key over the exact bytes sent.
        for body, signature, _ in receiver.posts:
            assert json.loads(body)["events"] == [] or signature == documented_signature(KEY, body)
        # resourceUrl points at the sandbox and returns the changed record.
        updated = next(e for e in events if e["resourceId"] == invoice["InvoiceID"])
        url = updated["resourceUrl"]
        assert url == f"{server.url}/xero/api.xro/2.0/Invoices/{invoice['InvoiceID']}"
        fetched = parse(xero.http.get(url, headers=xero.headers()))["Invoices"][0]
        assert fetched["AmountPaid"] == Decimal("3.00")
        assert updated["eventDateUtc"].endswith("Z")
        status = xero.http.get("/_sandbox/xero/webhooks").json()
        assert status["delivered_events"] == 4 and status["failed_events"] == 0
    finally:
        xero.close()


def test_edits_contacts_and_deletions_are_updates(
    server: SandboxServer, receiver: Receiver
) -> None:
    state = server.state
    tenant = state.xero.tenant_ids[0]
    register(server, receiver.url, categories=["CONTACT", "INVOICE"])
    invoice = next(
        i for i in state.xero.invoices(tenant) if i["Status"] == "AUTHORISED" and i["AmountPaid"]
    )
    state.xero.edit_invoice(tenant, invoice["InvoiceID"], Reference="renamed")
    contact_id = invoice["Contact"]["ContactID"]
    state.xero.edit_contact(tenant, contact_id, EmailAddress="billing@example.com")
    xero = XeroClient(server)
    try:
        payment_id = invoice["Payments"][0]["PaymentID"]
        deleted = xero.send("POST", f"/Payments/{payment_id}", {"Status": "DELETED"})
        assert deleted.status_code == 200
    finally:
        xero.close()
    assert receiver.wait_for(lambda: len(receiver.events()) >= 3)
    assert [(e["eventCategory"], e["eventType"], e["resourceId"]) for e in receiver.events()] == [
        ("INVOICE", "UPDATE", invoice["InvoiceID"]),
        ("CONTACT", "UPDATE", contact_id),
        ("INVOICE", "UPDATE", invoice["InvoiceID"]),
    ]
    contact_event = receiver.events()[1]
    assert contact_event["resourceUrl"].endswith(f"/Contacts/{contact_id}")


def test_only_subscribed_categories_and_batches_split_by_time(
    server: SandboxServer, receiver: Receiver
) -> None:
    state = server.state
    tenant = state.xero.tenant_ids[0]
    register(server, receiver.url, categories=["INVOICE"])
    assert state.xero.webhooks.batch_window == webhooks.BATCH_WINDOW_SECONDS == 0.1
    state.xero.add_contact(tenant, "Not Sent Ltd")  # CONTACT: not subscribed
    first = state.xero.add_invoice(tenant, total=Decimal("1.00"))
    assert receiver.wait_for(lambda: len(receiver.events()) == 1)
    time.sleep(webhooks.BATCH_WINDOW_SECONDS * 2)
    second = state.xero.add_invoice(tenant, total=Decimal("2.00"))
    assert receiver.wait_for(lambda: len(receiver.events()) == 2)
    posts = receiver.event_posts()
    assert [[e["resourceId"] for e in p["events"]] for p in posts] == [
        [first["InvoiceID"]],
        [second["InvoiceID"]],
    ]
    assert [(p["firstEventSequence"], p["lastEventSequence"]) for p in posts] == [(1, 1), (2, 2)]


def test_failed_deliveries_are_retried(make_server: ServerFactory) -> None:
    server = make_server(seed=1)
    flaky = Receiver(KEY, mode="flaky", fail_first=1)
    try:
        assert register(server, flaky.url)["status"] == "OK"
        tenant = server.state.xero.tenant_ids[0]
        created = server.state.xero.add_invoice(tenant, total=Decimal("9.00"))
        assert server.state.xero.webhooks.wait_idle(5)
        assert [e["resourceId"] for e in flaky.events()] == [created["InvoiceID"]]
        (delivery,) = server.state.xero.webhooks.status()["deliveries"]
        assert [a["status"] for a in delivery["attempts"]] == [500, 200] and delivery["ok"]
    finally:
        flaky.close()


def test_unregister_stops_deliveries(server: SandboxServer, receiver: Receiver) -> None:
    register(server, receiver.url)
    with admin(server) as http:
        assert http.delete("/_sandbox/xero/webhooks").json() == {"registered": False}
    posts = len(receiver.posts)
    server.state.xero.add_invoice(server.state.xero.tenant_ids[0], total=Decimal("3.00"))
    assert not receiver.wait_for(lambda: len(receiver.posts) > posts, timeout=0.3)


def test_ledger_api_registration_without_http(receiver: Receiver) -> None:
    state = SandboxState(seed=2, invoices=2)
    try:
        status = state.xero.webhooks.register(receiver.url, KEY)
        assert status["status"] == "OK"
        tenant = state.xero.tenant_ids[0]
        contact = state.xero.add_contact(tenant, "Direct Co", is_supplier=True)
        assert receiver.wait_for(lambda: len(receiver.events()) == 1)
        (event,) = receiver.events()
        assert event["resourceUrl"] == (
            f"https://api.xero.com/api.xro/2.0/Contacts/{contact['ContactID']}"
        )
    finally:
        state.close()
    assert state.xero.webhooks.status() == {"registered": False}
