"""The intake API (/v1/allocations) against a real server on loopback and the real sandbox."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from sqlmodel import select

from connector.errors import Transient
from connector.intake_api import AllocationIn, request_fingerprint
from connector.state import ApiRequest, PaymentIntent
from connector.store import Store
from connector.sync.push import PushEngine
from connector.types import utcnow
from tests.api.conftest import (
    TOKEN,
    Serve,
    api_requests,
    auth,
    intents,
    ledger_payments,
    new_invoice,
    slow_engine,
    with_token,
)
from tests.conftest import Env, _reset_pg


class Closing:
    """Something with a ``close()`` for ``env.closers``."""

    def __init__(self, close: Callable[[], None]) -> None:
        self.close = close


@pytest.fixture
def db_url_postgres(pg_server_url: str) -> str:
    """An empty schema on the session's PostgreSQL database."""
    _reset_pg(pg_server_url)
    return pg_server_url


def one(env: Env, number: str, amount: str = "40.00", **extra: object) -> dict[str, object]:
    return {"connection_id": env.conn_id, "document": number, "amount": amount, **extra}


# ---------------------------------------------------------------------- auth


def test_requests_without_or_with_a_wrong_token_get_401(
    env: Env, serve: Serve, http: httpx.Client
) -> None:
    server = serve()
    inv = new_invoice(env)
    body = one(env, inv["InvoiceNumber"])
    url = f"{server.url}/v1/allocations"
    cases = [
        {"Idempotency-Key": "k-auth"},
        {"Idempotency-Key": "k-auth", "Authorization": "Bearer not-the-token"},
        {"Idempotency-Key": "k-auth", "Authorization": f"Basic {TOKEN}"},
        {"Idempotency-Key": "k-auth", "Authorization": "Bearer"},
        {"Idempotency-Key": "k-auth", "Authorization": f"Bearer {TOKEN}x"},
    ]
    for headers in cases:
        r = http.post(url, json=body, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"] == "unauthorized"
    for path in ("/v1/allocations/whatever", "/v1/allocations?idempotency_key=k"):
        r = http.get(f"{server.url}{path}", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
    assert intents(env) == []
    assert api_requests(env) == []
    assert ledger_payments(env, inv) == []
    # The provider webhook routes keep their own (signature) auth; health stays open.
    assert http.get(f"{server.url}/healthz").status_code == 200


@pytest.mark.parametrize("token", [None, ""])
def test_without_a_configured_token_v1_is_off_with_503(
    env: Env, serve: Serve, http: httpx.Client, token: str | None
) -> None:
    server = serve(with_token(env.settings, token))
    inv = new_invoice(env)
    r = http.post(
        f"{server.url}/v1/allocations",
        json=one(env, inv["InvoiceNumber"]),
        headers=auth("k-503"),
    )
    assert r.status_code == 503
    assert r.json()["error"] == "api_token_not_configured"
    assert "[api] token" in r.json()["message"]
    assert http.get(f"{server.url}/v1/allocations/x", headers=auth()).status_code == 503
    assert http.get(f"{server.url}/v1/allocations/x", headers=auth(token="x")).status_code == 503
    assert intents(env) == []
    assert http.get(f"{server.url}/healthz").status_code == 200


def test_the_api_is_bound_to_loopback(env: Env, serve: Serve, http: httpx.Client) -> None:
    assert env.settings.api.host == "127.0.0.1"  # the default, from the config model
    server = serve()
    assert server.url.startswith("http://127.0.0.1:")
    runner = server._runner
    assert runner is not None and runner._server is not None
    bound = {sock.getsockname()[0] for srv in runner._server.servers for sock in srv.sockets}
    assert bound == {"127.0.0.1"}
    # From another interface of this machine (when it has one) nothing answers.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for UDP connect
        other = probe.getsockname()[0]
    except OSError:
        other = "127.0.0.1"
    finally:
        probe.close()
    if other != "127.0.0.1":
        with pytest.raises(httpx.ConnectError):
            http.get(f"http://{other}:{server.port}/healthz")
    assert http.get(f"{server.url}/healthz").json() == {"status": "ok"}


# ---------------------------------------------------------------------- one allocation


def test_post_one_then_push_then_get_shows_applied_with_history(
    env: Env, serve: Serve, http: httpx.Client
) -> None:
    woken: list[int] = []
    server = serve(wake=lambda: woken.append(1))
    inv = new_invoice(env, "120.00")
    r = http.post(
        f"{server.url}/v1/allocations",
        json=one(env, inv["InvoiceNumber"], "45.50", reference="order 42"),
        headers=auth("k-one"),
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["state"] == "pending"
    assert body["created"] is True
    assert body["amount"] == "45.50"
    assert body["idempotency_key"] == "k-one"
    assert body["links"] == {"self": f"/v1/allocations/{body['id']}"}
    [stored] = intents(env)
    assert stored.id == body["id"] and stored.state == "pending"
    assert woken == [1]
    assert ledger_payments(env, inv) == []  # the API stores; the push loop sends

    engine = PushEngine(env.settings, env.store)
    env.closers.append(engine)
    [final] = engine.push_until_final([stored.id], timeout=30)
    assert final.state == "applied"

    got = http.get(f"{server.url}{body['links']['self']}", headers=auth())
    assert got.status_code == 200
    view = got.json()
    assert view["state"] == "applied"
    assert view["remote_payment_id"] == final.remote_payment_id
    phases = [h["phase"] for h in view["history"]]
    assert phases[0] == "preflight" and "send" in phases
    send = next(h for h in view["history"] if h["phase"] == "send")
    assert send["outcome"] == "ok" and send["remote_payment_id"] == final.remote_payment_id
    assert set(send) == {
        "at",
        "phase",
        "outcome",
        "status_code",
        "provider_code",
        "message",
        "remote_payment_id",
    }
    [payment] = ledger_payments(env, inv)
    assert payment["PaymentID"] == final.remote_payment_id
    assert str(payment["Amount"]) in ("45.5", "45.50")

    found = http.get(
        f"{server.url}/v1/allocations",
        params={"idempotency_key": "k-one", "connection_id": env.conn_id},
        headers=auth(),
    )
    assert found.status_code == 200
    assert [a["id"] for a in found.json()["allocations"]] == [stored.id]
    missing = http.get(f"{server.url}/v1/allocations/no-such-id", headers=auth())
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    none = http.get(
        f"{server.url}/v1/allocations", params={"idempotency_key": "nope"}, headers=auth()
    )
    assert none.json() == {"allocations": []}


def test_replay_same_key_and_body_gives_the_original_response_byte_for_byte(
    env: Env, serve: Serve, http: httpx.Client
) -> None:
    woken: list[int] = []
    server = serve(wake=lambda: woken.append(1))
    inv = new_invoice(env)
    body = one(env, inv["InvoiceNumber"], "10.00", transaction_date="2026-01-15")
    url = f"{server.url}/v1/allocations"
    first = http.post(url, json=body, headers=auth("k-replay"))
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    second = http.post(url, json=body, headers=auth("k-replay"))
    assert second.status_code == 202
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    # The same request written differently (key order, spacing, an explicit null, the
    # document_id alias) is the same request.
    reordered = json.dumps(
        {
            "transaction_date": "2026-01-15",
            "amount": "10.00",
            "reference": None,
            "document_id": inv["InvoiceNumber"],
            "connection_id": env.conn_id,
        },
        indent=2,
    )
    third = http.post(
        url, content=reordered, headers={**auth("k-replay"), "Content-Type": "application/json"}
    )
    assert third.status_code == 202 and third.content == first.content
    assert len(intents(env)) == 1
    [row] = api_requests(env)
    assert row.state == "done" and row.status_code == 202
    assert woken == [1]  # replays store nothing and wake nothing

    # A new request key for an allocation already stored under its own key → 200.
    keyed = {**body, "idempotency_key": "k-replay"}
    again = http.post(url, json=keyed, headers=auth("k-replay-2"))
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False
    assert len(intents(env)) == 1


def test_same_key_with_another_body_is_422_and_stores_nothing(
    env: Env, serve: Serve, http: httpx.Client
) -> None:
    server = serve()
    inv = new_invoice(env)
    url = f"{server.url}/v1/allocations"
    assert http.post(url, json=one(env, inv["InvoiceNumber"]), headers=auth("k-1")).status_code == (
        202
    )
    other = http.post(url, json=one(env, inv["InvoiceNumber"], "41.00"), headers=auth("k-1"))
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"
    [intent] = intents(env)
    assert intent.amount == 40
    [row] = api_requests(env)
    assert row.state == "done" and row.status_code == 202


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_concurrent_requests_with_one_key_one_stores_the_others_get_409(
    env: Env, serve: Serve, http: httpx.Client, request: pytest.FixtureRequest, database: str
) -> None:
    store = env.store
    if database == "postgres":
        store = Store(request.getfixturevalue("db_url_postgres"))
        store.upgrade()
        env.closers.append(Closing(store.dispose))
    engine, _adapters = slow_engine(env, delay=1.5, store=store)
    server = serve(store=store, engine=engine)
    inv = new_invoice(env)
    body = one(env, inv["InvoiceNumber"], "25.00")
    url = f"{server.url}/v1/allocations"
    barrier = threading.Barrier(5)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def post() -> None:
        with httpx.Client(trust_env=False, timeout=30) as client:
            barrier.wait()
            r = client.post(url, json=body, headers=auth("k-race"))
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=post) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(r.status_code for r in answers)
    assert codes == [202, 409, 409, 409, 409], [r.text for r in answers]
    for r in answers:
        if r.status_code == 409:
            assert r.json()["error"] == "request_in_progress"
            assert r.headers["retry-after"] == "1"
    assert len(intents(env, store)) == 1
    with store.session() as s:
        [row] = s.exec(select(ApiRequest)).all()
    assert row.key == "k-race" and row.state == "done"
    winner = next(r for r in answers if r.status_code == 202)
    replay = http.post(url, json=body, headers=auth("k-race"))
    assert replay.status_code == 202 and replay.content == winner.content


def test_an_abandoned_in_progress_key_is_taken_over(
    env: Env, serve: Serve, http: httpx.Client
) -> None:
    server = serve()
    inv = new_invoice(env)
    body = one(env, inv["InvoiceNumber"])
    fingerprint = request_fingerprint("POST", "/v1/allocations", AllocationIn.model_validate(body))
    now = utcnow()
    with env.store.session() as s:
        s.add(ApiRequest(key="k-stuck", fingerprint=fingerprint, created_at=now, updated_at=now))
    url = f"{server.url}/v1/allocations"
    assert http.post(url, json=body, headers=auth("k-stuck")).status_code == 409
    with env.store.session() as s:
        row = s.get(ApiRequest, "k-stuck")
        assert row is not None
        row.updated_at = now - timedelta(seconds=61)
        s.add(row)
    taken = http.post(url, json=body, headers=auth("k-stuck"))
    assert taken.status_code == 202, taken.text
    [row] = api_requests(env)
    assert row.state == "done" and row.response_body == taken.text
    assert len(intents(env)) == 1


def test_an_unexpected_failure_gives_the_key_back(
    env: Env, serve: Serve, http: httpx.Client
) -> None:
    engine, adapters = slow_engine(env, fail=1)
    server = serve(engine=engine)
    inv = new_invoice(env)
    body = one(env, inv["InvoiceNumber"])
    url = f"{server.url}/v1/allocations"
    failed = http.post(url, json=body, headers=auth("k-bug"))
    assert failed.status_code == 500
    assert failed.json()["error"] == "internal_error"
    assert api_requests(env) == [] and intents(env) == []
    retried = http.post(url, json=body, headers=auth("k-bug"))
    assert retried.status_code == 202
    assert len(intents(env)) == 1
    assert sum(a.reads for a in adapters) == 2


def test_a_ledger_that_cannot_be_read_gives_503_and_stores_nothing(
    env: Env, serve: Serve, http: httpx.Client
) -> None:
    engine, _ = slow_engine(env, fail=1, error=lambda: Transient("ledger down", status_code=503))
    server = serve(engine=engine)
    inv = new_invoice(env)
    url = f"{server.url}/v1/allocations"
    down = http.post(url, json=one(env, inv["InvoiceNumber"]), headers=auth("k-down"))
    assert down.status_code == 503
    assert down.headers["retry-after"] == "5"
    [error] = down.json()["errors"]
    assert (error["index"], error["code"]) == (0, "provider_unavailable")
    assert intents(env) == [] and api_requests(env) == []
    up = http.post(url, json=one(env, inv["InvoiceNumber"]), headers=auth("k-down"))
    assert up.status_code == 202


# ---------------------------------------------------------------------- batches


def test_a_batch_is_stored_with_keys_derived_from_the_request_key(
    env: Env, serve: Serve, http: httpx.Client
) -> None:
    server = serve()
    a, b = new_invoice(env, "50.00"), new_invoice(env, "60.00")
    body = {
        "allocations": [
            one(env, a["InvoiceNumber"], "50"),
            one(env, b["InvoiceNumber"], "20.00", idempotency_key="mine"),
        ]
    }
    url = f"{server.url}/v1/allocations"
    r = http.post(url, json=body, headers=auth("k-batch"))
    assert r.status_code == 202, r.text
    rows = r.json()["allocations"]
    assert [row["idempotency_key"] for row in rows] == ["k-batch:0", "mine"]
    assert [row["amount"] for row in rows] == ["50.00", "20.00"]
    assert all(row["created"] for row in rows)
    with env.store.session() as s:
        stored = s.exec(select(PaymentIntent).order_by(PaymentIntent.idempotency_key)).all()
    assert [(i.idempotency_key, i.amount) for i in stored] == [
        ("k-batch:0", Decimal("50.00")),
        ("mine", Decimal("20.00")),
    ]
    engine = PushEngine(env.settings, env.store)
    env.closers.append(engine)
    final = engine.push_until_final([row["id"] for row in rows], timeout=30)
    assert [i.state for i in final] == ["applied", "applied"]
    assert len(ledger_payments(env, a)) == 1 and len(ledger_payments(env, b)) == 1
    # The replay is the stored answer: still "pending", byte for byte; nothing sent again.
    replay = http.post(url, json=body, headers=auth("k-batch"))
    assert replay.content == r.content and replay.status_code == 202
    assert len(ledger_payments(env, a)) == 1 and len(ledger_payments(env, b)) == 1


def test_a_batch_with_one_bad_row_is_refused_whole(
    env: Env, serve: Serve, http: httpx.Client
) -> None:
    server = serve()
    a, b = new_invoice(env), new_invoice(env)
    body = {
        "allocations": [
            one(env, a["InvoiceNumber"]),
            one(env, "INV-DOES-NOT-EXIST"),
            one(env, b["InvoiceNumber"], "0.001"),
        ]
    }
    url = f"{server.url}/v1/allocations"
    r = http.post(url, json=body, headers=auth("k-bad"))
    assert r.status_code == 422
    errors = r.json()["errors"]
    assert [(e["index"], e["code"]) for e in errors] == [
        (1, "document_not_found"),
        (2, "invalid_amount"),
    ]
    assert all(e["message"] for e in errors)
    assert intents(env) == [] and api_requests(env) == []
    # Nothing was stored, not even the key: the corrected batch goes in under it.
    fixed = {"allocations": [one(env, a["InvoiceNumber"]), one(env, b["InvoiceNumber"])]}
    ok = http.post(url, json=fixed, headers=auth("k-bad"))
    assert ok.status_code == 202
    assert len(intents(env)) == 2


def test_a_payment_over_several_documents_goes_to_the_engine_as_lines(
    env: Env, serve: Serve, http: httpx.Client
) -> None:
    server = serve()
    a, b = new_invoice(env), new_invoice(env)
    url = f"{server.url}/v1/allocations"
    unknown = {
        "connection_id": env.conn_id,
        "allocations": [
            {"document": a["InvoiceNumber"], "amount": "10.00"},
            {"document": "INV-DOES-NOT-EXIST", "amount": "5"},
        ],
    }
    refused = http.post(url, json=unknown, headers=auth("k-lines"))
    assert refused.status_code == 422
    [error] = refused.json()["errors"]
    assert (error["index"], error["code"]) == (0, "document_not_found")  # the engine's refusal
    assert intents(env) == []
    body = {
        "connection_id": env.conn_id,
        "allocations": [
            {"document": a["InvoiceNumber"], "amount": "10.00"},
            {"invoice_number": b["InvoiceNumber"], "amount": "5"},
        ],
    }
    r = http.post(url, json=body, headers=auth("k-lines"))
    assert r.status_code == 202, r.text
    assert r.json()["amount"] == "15.00"  # the total defaults to the lines' sum
    [intent] = intents(env)
    assert intent.lines is not None
    lines = json.loads(intent.lines)
    assert [(line["document"], Decimal(line["amount"])) for line in lines] == [
        (a["InvoiceNumber"], Decimal("10.00")),
        (b["InvoiceNumber"], Decimal("5")),
    ]


# ---------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("content", "status", "field", "code"),
    [
        (b"{not json", 400, None, "invalid_json"),
        (b'{"amount": NaN}', 400, None, "invalid_json"),
        (b"[]", 422, None, "invalid_body"),
        (b'{"connection_id": "c", "document": "INV-1", "amount": 49.99}', 422, "amount", None),
        (b'{"connection_id": "c", "document": "INV-1", "amount": "abc"}', 422, "amount", None),
        (b'{"connection_id": "c", "document": "INV-1", "amount": true}', 422, "amount", None),
        (
            b'{"connection_id": "c", "document": "INV-1", "amount": "1", "colour": "red"}',
            422,
            "colour",
            "extra_forbidden",
        ),
        (
            b'{"connection_id": "c", "document": "INV-1", "amount": "1", '
            b'"transaction_date": "15/01/2026"}',
            422,
            "transaction_date",
            None,
        ),
        (
            b'{"connection_id": "c", "document": "INV-1", "amount": "1", "document_type": "x"}',
            422,
            "document_type",
            "literal_error",
        ),
        (b'{"connection_id": "c", "document": "INV-1"}', 422, None, "value_error"),
        (b'{"allocations": []}', 422, "allocations", "too_short"),
        (
            b'{"allocations": [{"connection_id": "c", "document": "I", "amount": "1"}, '
            b'{"connection_id": "c", "document": "I", "amount": 1.5}]}',
            422,
            "amount",
            None,
        ),
    ],
)
def test_malformed_bodies_are_refused_with_what_is_wrong(
    env: Env,
    serve: Serve,
    http: httpx.Client,
    content: bytes,
    status: int,
    field: str | None,
    code: str | None,
) -> None:
    server = serve()
    r = http.post(
        f"{server.url}/v1/allocations",
        content=content,
        headers={**auth("k-malformed"), "Content-Type": "application/json"},
    )
    assert r.status_code == status, r.text
    body = r.json()
    if status == 400:
        assert body["error"] == code
    else:
        [error] = body["errors"]
        assert error["field"] == field
        if code is not None:
            assert error["code"] == code
        assert error["message"]
    if b"1.5" in content:
        assert error["index"] == 1
    if b"49.99" in content:
        assert "string" in error["message"]
    assert intents(env) == [] and api_requests(env) == []


def test_the_idempotency_key_header_is_required_and_checked(
    env: Env, serve: Serve, http: httpx.Client
) -> None:
    server = serve()
    inv = new_invoice(env)
    url = f"{server.url}/v1/allocations"
    body = one(env, inv["InvoiceNumber"])
    missing = http.post(url, json=body, headers=auth())
    assert missing.status_code == 400
    assert missing.json()["error"] == "idempotency_key_required"
    for bad in ("x" * 201, "has space"):
        r = http.post(url, json=body, headers=auth(bad))
        assert r.status_code == 400 and r.json()["error"] == "invalid_idempotency_key"
    assert intents(env) == [] and api_requests(env) == []
