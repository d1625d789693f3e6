"""Batch (≤ 30 items, per-item faults), change data capture, and requestid replays."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx

from connector.sandbox.quickbooks.fmt import meta_time
from connector.sandbox.quickbooks.requestids import RETENTION

from .conftest import QboClient, fault_of, parse


def _batch(qbo: QboClient, items: list[dict[str, Any]], **params: Any) -> httpx.Response:
    return qbo.post("batch", {"BatchItemRequest": items}, **params)


def test_batch_runs_items_independently_with_per_item_faults(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    items = [
        {"bId": "ok", "operation": "create", "Payment": qbo.payment_body(inv, "10.00")},
        {"bId": "big", "operation": "create", "Payment": qbo.payment_body(inv, "100000")},
        {"bId": "gone", "operation": "delete", "Invoice": {"Id": "99999", "SyncToken": "0"}},
        {"bId": "q", "Query": f"select * from Invoice where Id = '{inv['Id']}'"},
        {"bId": "cnt", "Query": "select count(*) from Customer"},
        {"bId": "bad", "Query": "select * from Invoice where a = 1 or b = 2"},
    ]
    response = _batch(qbo, items)
    assert response.status_code == 200
    body = parse(response)
    assert set(body) == {"BatchItemResponse", "time"}
    out = {item["bId"]: item for item in body["BatchItemResponse"]}
    assert out["ok"]["Payment"]["TotalAmt"] == 10
    assert out["big"]["Fault"]["Error"][0]["code"] == "6000"
    assert out["big"]["Fault"]["type"] == "ValidationFault"
    assert out["gone"]["Fault"]["Error"][0]["code"] == "610"
    # Items do not see each other's results within the batch, and run in order here.
    assert out["q"]["QueryResponse"]["Invoice"][0]["Balance"] == inv["Balance"] - 10
    assert out["cnt"]["QueryResponse"] == {"totalCount": len(qbo.ledger.customers(qbo.realm))}
    assert out["bad"]["Fault"]["Error"][0]["code"] == "4001"
    assert "time" not in out["big"]["Fault"]


def test_batch_update_delete_and_void(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    pay = parse(qbo.post("payment", qbo.payment_body(inv, "10.00")))["Payment"]
    pay2 = parse(qbo.post("payment", qbo.payment_body(inv, "5.00")))["Payment"]
    items = [
        {
            "bId": "u",
            "operation": "update",
            "Payment": {"Id": pay["Id"], "SyncToken": "0", "sparse": True, "PrivateNote": "n"},
        },
        {
            "bId": "v",
            "operation": "update",
            "optionsData": "void",
            "Payment": {"Id": pay2["Id"], "SyncToken": "0"},
        },
        {
            "bId": "s",
            "operation": "update",
            "Payment": {"Id": pay["Id"], "SyncToken": "0", "sparse": True},
        },
    ]
    out = {i["bId"]: i for i in parse(_batch(qbo, items))["BatchItemResponse"]}
    assert out["u"]["Payment"]["PrivateNote"] == "n"
    assert out["v"]["Payment"]["TotalAmt"] == 0
    assert out["s"]["Fault"]["Error"][0]["code"] == "5010"
    assert qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"] == inv["Balance"] - 10


def test_batch_limits(qbo: QboClient) -> None:
    query = {"Query": "select count(*) from Invoice"}
    thirty = [{"bId": f"b{i}", **query} for i in range(30)]
    assert len(parse(_batch(qbo, thirty))["BatchItemResponse"]) == 30
    too_many = _batch(qbo, [*thirty, {"bId": "b30", **query}])
    assert too_many.status_code == 400
    assert fault_of(too_many)["code"] == "1040"
    assert fault_of(_batch(qbo, [{"bId": "x", **query}, {"bId": "x", **query}]))["code"] == "2010"
    assert fault_of(_batch(qbo, [query]))["code"] == "2020"
    assert fault_of(qbo.post("batch", {"nope": []}))["code"] == "2020"
    unsupported = parse(_batch(qbo, [{"bId": "e", "operation": "create", "Estimate": {}}]))
    assert unsupported["BatchItemResponse"][0]["Fault"]["Error"][0]["code"] == "5030"


def test_cdc_returns_changes_and_deletions(qbo: QboClient) -> None:
    clock = qbo.ledger.clock
    clock.advance(60)
    since = meta_time(clock.now())
    clock.advance(5)
    inv = qbo.open_invoice()
    pay = parse(qbo.post("payment", qbo.payment_body(inv, "10.00")))["Payment"]
    doomed = qbo.ledger.add_invoice(qbo.realm, total=Decimal("9.00"))
    qbo.ledger.delete_invoice(qbo.realm, doomed["Id"])
    response = qbo.get("cdc", entities="Invoice,Payment,Customer", changedSince=since)
    assert response.status_code == 200, response.text
    body = parse(response)
    groups = body["CDCResponse"][0]["QueryResponse"]
    assert len(groups) == 3
    invoices = groups[0]["Invoice"]
    assert [i["Id"] for i in invoices] == [inv["Id"], doomed["Id"]]
    assert invoices[-1] == {
        "status": "Deleted",
        "domain": "QBO",
        "Id": doomed["Id"],
        "MetaData": {"LastUpdatedTime": invoices[-1]["MetaData"]["LastUpdatedTime"]},
    }
    assert groups[0]["totalCount"] == 2 and groups[0]["startPosition"] == 1
    assert groups[1]["Payment"][0]["Id"] == pay["Id"]
    assert groups[2] == {}


def test_cdc_limits(qbo: QboClient) -> None:
    old = meta_time(qbo.ledger.clock.now() - timedelta(days=31))
    assert fault_of(qbo.get("cdc", entities="Invoice", changedSince=old))["code"] == "4001"
    assert (
        fault_of(
            qbo.get("cdc", entities="TaxRate", changedSince=meta_time(qbo.ledger.clock.now()))
        )["code"]
        == "4001"
    )
    assert (
        fault_of(qbo.get("cdc", changedSince=meta_time(qbo.ledger.clock.now())))["code"] == "2020"
    )
    assert fault_of(qbo.get("cdc", entities="Invoice", changedSince="yesterday"))["code"] == "2010"
    # All seeded data lies within the last 30 days.
    recent = meta_time(qbo.ledger.clock.now() - timedelta(days=29))
    groups = parse(qbo.get("cdc", entities="Invoice", changedSince=recent))["CDCResponse"][0][
        "QueryResponse"
    ]
    assert len(groups[0]["Invoice"]) == len(qbo.ledger.invoices(qbo.realm))


def test_cdc_caps_at_1000_objects(qbo: QboClient) -> None:
    since = meta_time(qbo.ledger.clock.now())
    for _ in range(1001):
        qbo.ledger.add_invoice(qbo.realm, total=Decimal("1.00"))
    groups = parse(qbo.get("cdc", entities="Invoice", changedSince=since))["CDCResponse"][0][
        "QueryResponse"
    ]
    assert len(groups[0]["Invoice"]) == 1000


def test_requestid_replays_the_original_response(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    body = qbo.payment_body(inv, "10.00")
    first = qbo.post("payment", body, requestid="pay-1")
    second = qbo.post("payment", body, requestid="pay-1")
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert second.headers["X-Sandbox-Idempotent-Replay"] == "true"
    assert len([p for p in qbo.ledger.payments(qbo.realm) if p["TotalAmt"] == 10]) == 1
    # Same id, different body: still the original answer (QuickBooks does not compare).
    third = qbo.post("payment", qbo.payment_body(inv, "11.00"), requestid="pay-1")
    assert third.content == first.content
    # Another id is another payment; the same id in another realm is independent.
    assert (
        parse(qbo.post("payment", body, requestid="pay-2"))["Payment"]["Id"]
        != parse(first)["Payment"]["Id"]
    )
    assert qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"] == inv["Balance"] - 20


def test_replay_after_remote_delete_returns_the_dead_id(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    body = qbo.payment_body(inv, "10.00")
    created = parse(qbo.post("payment", body, requestid="k1"))["Payment"]
    deleted = qbo.post("payment", {"Id": created["Id"], "SyncToken": "0"}, operation="delete")
    assert deleted.status_code == 200
    replay = parse(qbo.post("payment", body, requestid="k1"))["Payment"]
    assert replay["Id"] == created["Id"]
    assert fault_of(qbo.get(f"payment/{created['Id']}"))["code"] == "610"
    assert qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"] == inv["Balance"]


def test_failed_writes_are_not_remembered_and_retention_expires(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    too_much = qbo.payment_body(inv, str(inv["Balance"] + 1))
    assert qbo.post("payment", too_much, requestid="r").status_code == 400
    ok = qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="r")
    assert ok.status_code == 200
    qbo.ledger.clock.advance(RETENTION.total_seconds())
    qbo.access_token = qbo.refresh()["access_token"]
    after = qbo.post("payment", qbo.payment_body(inv, "1.00"), requestid="r")
    assert parse(after)["Payment"]["Id"] != parse(ok)["Payment"]["Id"]


def test_overlong_request_ids_are_refused(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    body = qbo.payment_body(inv, "1.00")
    assert qbo.post("payment", body, requestid="x" * 50).status_code == 200
    refused = qbo.post("payment", body, requestid="x" * 51)
    assert refused.status_code == 400 and fault_of(refused)["code"] == "2130"
    query = {"Query": "select count(*) from Invoice"}
    assert _batch(qbo, [{"bId": "b" * 10, **query}], requestid="y" * 36).status_code == 200
    assert fault_of(_batch(qbo, [{"bId": "b", **query}], requestid="y" * 37))["code"] == "2130"
    long_bid = _batch(qbo, [{"bId": "b" * 11, **query}], requestid="z")
    assert fault_of(long_bid)["code"] == "2130"
    # Without a requestid, bIds may be long (python-quickbooks sends uuid4s).
    assert _batch(qbo, [{"bId": "b" * 36, **query}]).status_code == 200


def test_batch_requestid_replays_the_whole_batch(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    items = [{"bId": "p", "operation": "create", "Payment": qbo.payment_body(inv, "3.00")}]
    first = _batch(qbo, items, requestid="batch-1")
    assert _batch(qbo, items, requestid="batch-1").content == first.content
    assert qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"] == inv["Balance"] - 3


def test_concurrent_duplicates_wait_for_the_first(qbo: QboClient) -> None:
    qbo.ledger.faults.update({"latency_ms": 150})
    inv = qbo.open_invoice()
    body = qbo.payment_body(inv, "2.00")
    answers: list[bytes] = []

    def send() -> None:
        with httpx.Client(base_url=qbo.harness.url, timeout=10) as client:
            response = client.post(
                qbo.path("payment"),
                params={"requestid": "same"},
                content=__import__("json").dumps(
                    {
                        **body,
                        "TotalAmt": 2.0,
                        "Line": [{"Amount": 2.0, "LinkedTxn": body["Line"][0]["LinkedTxn"]}],
                    }
                ),
                headers={**qbo.headers(), "Content-Type": "application/json"},
            )
            answers.append(response.content)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(answers)) == 1
    assert qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"] == inv["Balance"] - 2
