"""Webhooks: legacy and CloudEvents payloads, signed with the verifier token, batched."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from decimal import Decimal
from typing import Any

from quickbooks import QuickBooks

from .conftest import (
    HarnessFactory,
    QboClient,
    Receiver,
    frozen_clock,
    parse,
    sample,
    shape_problems,
)


def _verify(token: str, body: bytes, signature: str) -> bool:
    """Intuit's documented check: base64(HMAC-SHA256(verifier token, raw body))."""
    expected = base64.b64encode(hmac.new(token.encode(), body, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, signature)


def _register(qbo: QboClient, receiver: Receiver, fmt: str = "legacy") -> dict[str, Any]:
    response = qbo.http.post(
        "/_sandbox/quickbooks/webhooks", json={"url": receiver.url, "format": fmt}
    )
    assert response.status_code == 201, response.text
    reg: dict[str, Any] = response.json()
    assert reg["verifier_token"] == qbo.ledger.webhook_verifier_token
    return reg


def _flush(qbo: QboClient) -> None:
    assert qbo.http.post("/_sandbox/quickbooks/webhooks/flush", json={}).json() == {"flushed": True}


def test_legacy_payload_is_signed_and_batched(qbo: QboClient, receiver: Receiver) -> None:
    reg = _register(qbo, receiver)
    inv = qbo.open_invoice()
    pay = parse(qbo.post("payment", qbo.payment_body(inv, "1.00")))["Payment"]
    _flush(qbo)
    received = receiver.wait(1)
    assert len(received) == 1  # one POST: both changes fell in the same ~100 ms window
    body, headers = received[0]
    signature = headers["intuit-signature"]
    assert _verify(reg["verifier_token"], body, signature)
    client = QuickBooks(minorversion=75)
    assert client.validate_webhook_signature(body.decode(), signature, reg["verifier_token"])
    assert not _verify("wrong-token", body, signature)
    payload = receiver.events()[0]
    assert shape_problems(sample("webhook_legacy_payload"), payload) == []
    note = payload["eventNotifications"][0]
    assert note["realmId"] == qbo.realm
    entities = note["dataChangeEvent"]["entities"]
    assert [(e["name"], e["id"], e["operation"]) for e in entities] == [
        ("Payment", pay["Id"], "Create"),
        ("Invoice", inv["Id"], "Update"),
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[-+]\d{4}", entities[0]["lastUpdated"])
    listing = qbo.http.get("/_sandbox/quickbooks/webhooks").json()
    assert listing["deliveries"][0]["delivered"] is True
    assert listing["registrations"][0]["id"] == reg["id"]


def test_cloudevents_payload(qbo: QboClient, receiver: Receiver) -> None:
    reg = _register(qbo, receiver, "cloudevents")
    inv = qbo.open_invoice()
    pay = parse(qbo.post("payment", qbo.payment_body(inv, "1.00")))["Payment"]
    _flush(qbo)
    qbo.post("payment", {"Id": pay["Id"], "SyncToken": "0"}, operation="void")
    qbo.post("customer", {"DisplayName": "Hooked Inc"})
    qbo.ledger.delete_invoice(qbo.realm, inv["Id"])
    _flush(qbo)
    received = receiver.wait(2)
    for body, headers in received:
        assert _verify(reg["verifier_token"], body, headers["intuit-signature"])
    first, second = receiver.events()
    assert shape_problems(sample("webhook_cloudevents_payload"), first) == []
    assert [e["type"] for e in first] == ["qbo.payment.created.v1", "qbo.invoice.updated.v1"]
    assert [e["type"] for e in second] == [
        "qbo.invoice.updated.v1",
        "qbo.payment.voided.v1",
        "qbo.customer.created.v1",
        "qbo.invoice.deleted.v1",
    ]
    assert {e["intuitaccountid"] for e in first + second} == {qbo.realm}
    assert first[0]["intuitentityid"] == pay["Id"]
    assert first[0]["specversion"] == "1.0" and first[0]["data"] == {}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", first[0]["time"])


def test_every_watched_entity_notifies(qbo: QboClient, receiver: Receiver) -> None:
    _register(qbo, receiver)
    ledger, realm = qbo.ledger, qbo.realm
    inv = ledger.add_invoice(realm, total=Decimal("10.00"))
    ledger.edit_invoice(realm, inv["Id"], PrivateNote="n")
    ledger.void_invoice(realm, inv["Id"])
    bill = ledger.add_bill(realm, total=Decimal("10.00"))
    ledger.apply_bill_payment(realm, bill["Id"], Decimal("1.00"))
    qbo.post("vendor", {"DisplayName": "Hook Supplies"})
    _flush(qbo)
    seen = {
        (e["name"], e["operation"])
        for payload in receiver.events()
        for note in payload["eventNotifications"]
        for e in note["dataChangeEvent"]["entities"]
    }
    assert seen >= {
        ("Invoice", "Create"),
        ("Invoice", "Update"),
        ("Invoice", "Void"),
        ("Bill", "Create"),
        ("Bill", "Update"),
        ("BillPayment", "Create"),
        ("Vendor", "Create"),
    }


def test_failed_delivery_is_retried(make_harness: HarnessFactory) -> None:
    clock = frozen_clock()
    clock.time_scale = 1000.0  # retry after 10 ms, not 10 s
    harness = make_harness(clock=clock)
    qbo = QboClient(harness)
    receiver = Receiver(status=500)
    try:
        _register(qbo, receiver)
        harness.ledger.add_invoice(qbo.realm, total=Decimal("1.00"))
        receiver.wait(1)
        receiver.status = 200
        _flush(qbo)
        assert len(receiver.received) >= 2
        assert receiver.received[0][0] == receiver.received[-1][0]
        delivery = harness.ledger.webhooks.deliveries()[0]
        assert delivery["delivered"] and delivery["attempts"] >= 2
    finally:
        receiver.stop()
        qbo.close()


def test_registration_validation_and_removal(qbo: QboClient, receiver: Receiver) -> None:
    bad = qbo.http.post("/_sandbox/quickbooks/webhooks", json={"url": receiver.url, "format": "x"})
    assert bad.status_code == 400
    assert qbo.http.post("/_sandbox/quickbooks/webhooks", json={}).status_code == 400
    reg = _register(qbo, receiver)
    assert qbo.http.delete(f"/_sandbox/quickbooks/webhooks/{reg['id']}").status_code == 200
    assert qbo.http.delete(f"/_sandbox/quickbooks/webhooks/{reg['id']}").status_code == 404
    qbo.ledger.add_invoice(qbo.realm)
    _flush(qbo)
    assert receiver.received == []
