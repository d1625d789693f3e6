"""Payments and bill payments: computed balances, back-references, SyncTokens, void/delete,
stale objects (5010) and business rules (6000)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from connector.sandbox.quickbooks.fmt import parse_moment

from .conftest import QboClient, fault_of, parse, sample, shape_problems


def _create(qbo: QboClient, kind: str, body: Any, **params: Any) -> dict[str, Any]:
    response = qbo.post(kind.lower(), body, **params)
    assert response.status_code == 200, response.text
    entity: dict[str, Any] = parse(response)[kind]
    return entity


def test_full_payment_pays_the_invoice(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    qbo.ledger.clock.advance(5)
    pay = _create(qbo, "Payment", qbo.payment_body(inv, str(inv["Balance"])))
    assert pay["UnappliedAmt"] == 0
    assert pay["TotalAmt"] == inv["Balance"]
    assert pay["DepositToAccountRef"] == {"value": qbo.account("undeposited")}
    assert pay["SyncToken"] == "0"
    assert pay["Line"][0]["LinkedTxn"] == [{"TxnId": inv["Id"], "TxnType": "Invoice"}]
    after = qbo.ledger.invoice(qbo.realm, inv["Id"])
    assert after["Balance"] == 0
    assert after["TotalAmt"] == inv["TotalAmt"]
    assert int(after["SyncToken"]) == int(inv["SyncToken"]) + 1
    assert {"TxnId": pay["Id"], "TxnType": "Payment"} in after["LinkedTxn"]
    assert parse_moment(after["MetaData"]["LastUpdatedTime"]) > parse_moment(
        inv["MetaData"]["LastUpdatedTime"]
    )
    assert "Status" not in after and "status" not in after


def test_partial_payment_and_overpayment(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    partial = _create(qbo, "Payment", qbo.payment_body(inv, "10.00"))
    assert partial["UnappliedAmt"] == 0
    balance = qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"]
    assert balance == inv["Balance"] - Decimal("10.00")
    over = _create(qbo, "Payment", qbo.payment_body(inv, str(balance), total=str(balance + 25)))
    assert over["UnappliedAmt"] == 25
    assert over["TotalAmt"] == balance + 25
    paid = qbo.ledger.invoice(qbo.realm, inv["Id"])
    assert paid["Balance"] == 0
    assert [link["TxnId"] for link in paid["LinkedTxn"] if link["TxnType"] == "Payment"] == [
        partial["Id"],
        over["Id"],
    ]
    line_ex = over["Line"][0]["LineEx"]["any"]
    values = {item["value"]["Name"]: item["value"]["Value"] for item in line_ex}
    assert values == {
        "txnId": inv["Id"],
        "txnOpenBalance": f"{balance:.2f}",
        "txnReferenceNumber": inv["DocNumber"],
    }


def test_payment_without_lines_is_all_unapplied(qbo: QboClient) -> None:
    customer = qbo.ledger.customers(qbo.realm)[0]["Id"]
    pay = _create(qbo, "Payment", {"TotalAmt": 25.0, "CustomerRef": {"value": customer}})
    assert pay["UnappliedAmt"] == 25 and pay["Line"] == []


def test_foreign_currency_payment_carries_the_exchange_rate(qbo: QboClient) -> None:
    inv = qbo.open_invoice("EUR")
    pay = _create(qbo, "Payment", qbo.payment_body(inv, "5.00"))
    assert pay["CurrencyRef"]["value"] == "EUR"
    assert pay["ExchangeRate"] == Decimal("1.08")
    after = qbo.ledger.invoice(qbo.realm, inv["Id"])
    assert after["HomeBalance"] == (after["Balance"] * Decimal("1.08")).quantize(Decimal("0.01"))


@pytest.mark.parametrize(
    ("change", "code", "detail"),
    [
        (
            lambda b, q: b["Line"][0].update(Amount=Decimal("100000")),
            "6000",
            "exceeds its open balance",
        ),
        (lambda b, q: b["Line"][0]["LinkedTxn"][0].update(TxnId="99999"), "6000", "doesn't exist"),
        (
            lambda b, q: b["CustomerRef"].update(value=_other_customer(q, b)),
            "6000",
            "belongs to another customer",
        ),
        (
            lambda b, q: b.update(CurrencyRef={"value": "EUR"}),
            "6000",
            "does not match the currency",
        ),
        (lambda b, q: b.update(TotalAmt=Decimal("1.00")), "6000", "exceeds the payment total"),
        (
            lambda b, q: b.update(DepositToAccountRef={"value": q.account("ar")}),
            "6000",
            "Bank or Other Current Asset",
        ),
        (
            lambda b, q: b["Line"][0]["LinkedTxn"][0].update(TxnType="Bill"),
            "6000",
            "can't be linked",
        ),
        (lambda b, q: b.pop("CustomerRef"), "2020", "CustomerRef"),
        (lambda b, q: b.pop("TotalAmt"), "2020", "TotalAmt"),
        (lambda b, q: b["CustomerRef"].update(value="999"), "610", "Object Not Found"),
        (lambda b, q: b.update(TotalAmt="abc"), "2140", "TotalAmt"),
        (lambda b, q: b["Line"][0].update(Amount=Decimal("-1")), "2290", "negative"),
    ],
)
def test_refused_payments_commit_nothing(
    qbo: QboClient, change: Any, code: str, detail: str
) -> None:
    inv = qbo.open_invoice()
    body = qbo.payment_body(inv, "10.00")
    change(body, qbo)
    before = len(qbo.ledger.payments(qbo.realm))
    response = qbo.post("payment", body)
    assert response.status_code == 400
    error = fault_of(response)
    assert error["code"] == code
    assert detail in error["Detail"]
    if code == "6000":
        assert (
            error["Message"]
            == "A business validation error has occurred while processing your request"
        )
        assert error["Detail"].startswith("Business Validation Error: ")
    assert len(qbo.ledger.payments(qbo.realm)) == before
    assert qbo.ledger.invoice(qbo.realm, inv["Id"]) == inv


def _other_customer(qbo: QboClient, body: dict[str, Any]) -> str:
    mine = body["CustomerRef"]["value"]
    return next(
        c["Id"]
        for c in qbo.ledger.customers(qbo.realm)
        if c["Id"] != mine and c["CurrencyRef"]["value"] == "USD"
    )


@pytest.mark.parametrize("pay_type", ["Check", "CreditCard"])
def test_bill_payment(qbo: QboClient, pay_type: str) -> None:
    bill = qbo.open_bill()
    amount = str(bill["Balance"] - 1)
    bp = _create(qbo, "BillPayment", qbo.bill_payment_body(bill, amount, pay_type))
    assert bp["PayType"] == pay_type
    if pay_type == "Check":
        assert bp["CheckPayment"]["BankAccountRef"]["value"] == qbo.account("checking")
        assert bp["CheckPayment"]["PrintStatus"] == "NeedToPrint"
        link_type = "BillPaymentCheck"
    else:
        assert bp["CreditCardPayment"]["CCAccountRef"] == {
            "value": qbo.account("credit_card"),
            "name": "Mastercard",
        }
        link_type = "BillPaymentCreditCard"
    after = qbo.ledger.bill(qbo.realm, bill["Id"])
    assert after["Balance"] == 1
    assert int(after["SyncToken"]) == int(bill["SyncToken"]) + 1
    assert {"TxnId": bp["Id"], "TxnType": link_type} in after["LinkedTxn"]


def test_refused_bill_payments(qbo: QboClient) -> None:
    bill = qbo.open_bill()
    body = qbo.bill_payment_body(bill, "1.00")
    body["CheckPayment"]["BankAccountRef"]["value"] = qbo.account("credit_card")
    assert fault_of(qbo.post("billpayment", body))["code"] == "6000"
    body = qbo.bill_payment_body(bill, "1.00")
    body.pop("PayType")
    assert fault_of(qbo.post("billpayment", body))["Detail"].endswith(
        "PayType is missing in the request"
    )
    body = qbo.bill_payment_body(bill, "1.00", "CreditCard")
    body.pop("CreditCardPayment")
    assert fault_of(qbo.post("billpayment", body))["code"] == "2020"
    body = qbo.bill_payment_body(bill, str(bill["Balance"] + 1))
    assert "exceeds its open balance" in fault_of(qbo.post("billpayment", body))["Detail"]


@pytest.mark.parametrize("how", [{"operation": "void"}, {"operation": "update", "include": "void"}])
def test_void_payment_restores_the_balance(qbo: QboClient, how: dict[str, str]) -> None:
    inv = qbo.open_invoice()
    pay = _create(qbo, "Payment", {**qbo.payment_body(inv, "30.00"), "PrivateNote": "ext:1"})
    paid = qbo.ledger.invoice(qbo.realm, inv["Id"])
    response = qbo.post(
        "payment", {"Id": pay["Id"], "SyncToken": pay["SyncToken"], "sparse": True}, **how
    )
    assert response.status_code == 200, response.text
    voided = parse(response)["Payment"]
    assert voided["TotalAmt"] == 0 and voided["UnappliedAmt"] == 0 and voided["Line"] == []
    assert voided["PrivateNote"] == "Voided - ext:1"
    assert voided["SyncToken"] == "1"
    after = qbo.ledger.invoice(qbo.realm, inv["Id"])
    assert after["Balance"] == inv["Balance"]
    assert int(after["SyncToken"]) == int(paid["SyncToken"]) + 1
    assert all(link["TxnId"] != pay["Id"] for link in after["LinkedTxn"])
    # Still readable, with zero amounts.
    assert parse(qbo.get(f"payment/{pay['Id']}"))["Payment"]["TotalAmt"] == 0


def test_delete_payment_restores_the_balance(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    pay = _create(qbo, "Payment", qbo.payment_body(inv, "30.00"))
    response = qbo.post("payment", {"Id": pay["Id"], "SyncToken": "0"}, operation="delete")
    assert response.status_code == 200
    assert parse(response)["Payment"] == {"status": "Deleted", "domain": "QBO", "Id": pay["Id"]}
    assert qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"] == inv["Balance"]
    assert fault_of(qbo.get(f"payment/{pay['Id']}"))["code"] == "610"
    deleted = [
        p for p in qbo.ledger.payments(qbo.realm, include_deleted=True) if p["Id"] == pay["Id"]
    ]
    assert deleted[0]["status"] == "Deleted"
    assert pay["Id"] not in [p["Id"] for p in qbo.ledger.payments(qbo.realm)]
    # A second delete finds nothing.
    again = qbo.post("payment", {"Id": pay["Id"], "SyncToken": "1"}, operation="delete")
    assert fault_of(again)["code"] == "610"


def test_void_and_delete_bill_payment(qbo: QboClient) -> None:
    bill = qbo.open_bill()
    first = _create(qbo, "BillPayment", qbo.bill_payment_body(bill, "10.00"))
    second = _create(qbo, "BillPayment", qbo.bill_payment_body(bill, "5.00", "CreditCard"))
    assert qbo.ledger.bill(qbo.realm, bill["Id"])["Balance"] == bill["Balance"] - 15
    voided = qbo.post(
        "billpayment",
        {"Id": first["Id"], "SyncToken": "0", "sparse": True},
        operation="update",
        include="void",
    )
    assert parse(voided)["BillPayment"]["TotalAmt"] == 0
    assert qbo.ledger.bill(qbo.realm, bill["Id"])["Balance"] == bill["Balance"] - 5
    deleted = qbo.post("billpayment", {"Id": second["Id"], "SyncToken": "0"}, operation="delete")
    assert parse(deleted)["BillPayment"]["status"] == "Deleted"
    after = qbo.ledger.bill(qbo.realm, bill["Id"])
    assert after["Balance"] == bill["Balance"]
    assert int(after["SyncToken"]) == int(bill["SyncToken"]) + 4


def test_stale_sync_token_is_5010(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    pay = _create(qbo, "Payment", qbo.payment_body(inv, "10.00"))
    update = {
        **qbo.payment_body(inv, "12.00"),
        "Id": pay["Id"],
        "SyncToken": "0",
        "PrivateNote": "a",
    }
    assert qbo.post("payment", update).status_code == 200
    stale = qbo.post("payment", update)
    assert stale.status_code == 400
    body = parse(stale)
    assert shape_problems(sample("fault_stale_object_5010"), body, extra_ok={"time"}) == []
    assert body["Fault"]["Error"][0]["code"] == "5010"
    assert body["Fault"]["Error"][0]["Message"] == "Stale Object Error"
    # The invoice's SyncToken moved with the payment: an update with the cached one fails.
    invoice_update = {
        "Id": inv["Id"],
        "SyncToken": inv["SyncToken"],
        "sparse": True,
        "PrivateNote": "x",
    }
    assert fault_of(qbo.post("invoice", invoice_update))["code"] == "5010"
    fresh = qbo.ledger.invoice(qbo.realm, inv["Id"])
    invoice_update["SyncToken"] = fresh["SyncToken"]
    updated = parse(qbo.post("invoice", invoice_update))["Invoice"]
    assert updated["PrivateNote"] == "x" and updated["Balance"] == fresh["Balance"]
    assert fault_of(qbo.post("payment", {"Id": pay["Id"]}, operation="delete"))["code"] == "2020"
    assert (
        fault_of(qbo.post("payment", {"Id": pay["Id"], "SyncToken": "0"}, operation="delete"))[
            "code"
        ]
        == "5010"
    )


def test_full_and_sparse_payment_updates(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    pay = _create(qbo, "Payment", {**qbo.payment_body(inv, "10.00"), "PaymentRefNum": "R1"})
    sparse = qbo.post(
        "payment", {"Id": pay["Id"], "SyncToken": "0", "sparse": True, "PrivateNote": "n"}
    )
    got = parse(sparse)["Payment"]
    assert got["PaymentRefNum"] == "R1" and got["PrivateNote"] == "n" and got["TotalAmt"] == 10
    assert qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"] == inv["Balance"] - 10
    full = {**qbo.payment_body(inv, "20.00"), "Id": pay["Id"], "SyncToken": "1"}
    got = parse(qbo.post("payment", full))["Payment"]
    assert "PaymentRefNum" not in got and "PrivateNote" not in got  # omitted → cleared
    assert got["TotalAmt"] == 20 and got["SyncToken"] == "2"
    assert qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"] == inv["Balance"] - 20
    # Lines are all-or-none: an empty Line unapplies everything.
    got = parse(
        qbo.post("payment", {"Id": pay["Id"], "SyncToken": "2", "sparse": True, "Line": []})
    )["Payment"]
    assert got["UnappliedAmt"] == 20
    assert qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"] == inv["Balance"]


def test_payment_with_a_credit_memo(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    customer = inv["CustomerRef"]["value"]
    memo = qbo.ledger.add_credit_memo(qbo.realm, total=Decimal("30.00"), customer_id=customer)
    body = {
        "CustomerRef": {"value": customer},
        "TotalAmt": Decimal("20.00"),
        "Line": [
            {"Amount": Decimal("50.00"), "LinkedTxn": [{"TxnId": inv["Id"], "TxnType": "Invoice"}]},
            {
                "Amount": Decimal("30.00"),
                "LinkedTxn": [{"TxnId": memo["Id"], "TxnType": "CreditMemo"}],
            },
        ],
    }
    pay = _create(qbo, "Payment", body)
    assert pay["UnappliedAmt"] == 0
    assert qbo.ledger.invoice(qbo.realm, inv["Id"])["Balance"] == inv["Balance"] - 50
    memo_after = parse(qbo.get(f"creditmemo/{memo['Id']}"))["CreditMemo"]
    assert memo_after["Balance"] == 0 and memo_after["RemainingCredit"] == 0


def test_invoice_void_and_delete_leave_payments_unapplied(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    pay = _create(qbo, "Payment", qbo.payment_body(inv, "10.00"))
    fresh = qbo.ledger.invoice(qbo.realm, inv["Id"])
    voided = parse(
        qbo.post("invoice", {"Id": inv["Id"], "SyncToken": fresh["SyncToken"]}, operation="void")
    )["Invoice"]
    assert voided["TotalAmt"] == 0 and voided["Balance"] == 0
    assert voided["PrivateNote"] == "Voided"
    after = parse(qbo.get(f"payment/{pay['Id']}"))["Payment"]
    assert after["UnappliedAmt"] == 10 and after["Line"] == [] and after["SyncToken"] == "1"
    other = qbo.open_invoice()
    pay2 = _create(qbo, "Payment", qbo.payment_body(other, "7.00"))
    fresh = qbo.ledger.invoice(qbo.realm, other["Id"])
    deleted = qbo.post(
        "invoice", {"Id": other["Id"], "SyncToken": fresh["SyncToken"]}, operation="delete"
    )
    assert parse(deleted)["Invoice"]["status"] == "Deleted"
    assert parse(qbo.get(f"payment/{pay2['Id']}"))["Payment"]["UnappliedAmt"] == 7
    assert (
        "doesn't exist" in fault_of(qbo.post("payment", qbo.payment_body(other, "1.00")))["Detail"]
    )


def test_invoice_total_cannot_drop_below_what_was_paid(qbo: QboClient) -> None:
    inv = qbo.open_invoice()
    _create(qbo, "Payment", qbo.payment_body(inv, "50.00"))
    fresh = qbo.ledger.invoice(qbo.realm, inv["Id"])
    lines = [
        {
            "Amount": Decimal("10.00"),
            "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {"ItemRef": {"value": "1"}},
        }
    ]
    update = {"Id": inv["Id"], "SyncToken": fresh["SyncToken"], "sparse": True, "Line": lines}
    assert "less than the payments applied" in fault_of(qbo.post("invoice", update))["Detail"]
    lines[0]["Amount"] = Decimal("60.00")
    got = parse(qbo.post("invoice", update))["Invoice"]
    assert got["TotalAmt"] == 60 and got["Balance"] == 10


def test_create_invoice_bill_customer_vendor(qbo: QboClient) -> None:
    customer = _create(
        qbo, "Customer", {"DisplayName": "New Co", "PrimaryEmailAddr": {"Address": "a@b.c"}}
    )
    assert customer["Balance"] == 0 and customer["Active"] is True
    dup = qbo.post("customer", {"DisplayName": "new co"})
    assert fault_of(dup)["code"] == "6240"
    assert fault_of(dup)["Message"] == "Duplicate Name Exists Error"
    vendor = _create(qbo, "Vendor", {"DisplayName": "Parts GmbH", "CurrencyRef": {"value": "EUR"}})
    assert vendor["CurrencyRef"]["value"] == "EUR"
    inv = _create(
        qbo,
        "Invoice",
        {
            "CustomerRef": {"value": customer["Id"]},
            "Line": [
                {
                    "Amount": 100.0,
                    "DetailType": "SalesItemLineDetail",
                    "SalesItemLineDetail": {
                        "ItemRef": {"value": "1", "name": "Services"},
                        "TaxCodeRef": {"value": "TAX"},
                    },
                }
            ],
        },
    )
    assert inv["TotalAmt"] == Decimal("108.00") and inv["Balance"] == Decimal("108.00")
    assert inv["DocNumber"]
    bill = _create(
        qbo,
        "Bill",
        {
            "VendorRef": {"value": vendor["Id"]},
            "Line": [
                {
                    "Amount": 40.5,
                    "DetailType": "AccountBasedExpenseLineDetail",
                    "AccountBasedExpenseLineDetail": {
                        "AccountRef": {"value": qbo.account("expense")}
                    },
                }
            ],
        },
    )
    assert bill["TotalAmt"] == Decimal("40.50") and bill["ExchangeRate"] == Decimal("1.08")
    assert parse(qbo.get(f"customer/{customer['Id']}"))["Customer"]["Balance"] == Decimal("108.00")
    renamed = qbo.post(
        "customer",
        {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "DisplayName": "Newer Co"},
    )
    assert parse(renamed)["Customer"]["DisplayName"] == "Newer Co"
    refused = qbo.post("customer", {"Id": customer["Id"], "SyncToken": "1"}, operation="delete")
    assert fault_of(refused)["code"] == "6000"


def test_test_api_writes(qbo: QboClient) -> None:
    ledger, realm = qbo.ledger, qbo.realm
    inv = ledger.add_invoice(
        realm, total=Decimal("80.00"), balance=Decimal("30.00"), doc_number="X-1"
    )
    assert (inv["TotalAmt"], inv["Balance"], inv["DocNumber"]) == (80, 30, "X-1")
    pay = ledger.apply_payment(realm, inv["Id"], Decimal("30.00"), private_note="UI")
    assert pay["PrivateNote"] == "UI"
    assert ledger.invoice(realm, inv["Id"])["Balance"] == 0
    with pytest.raises(ValueError, match="exceeds its open balance"):
        ledger.apply_payment(realm, inv["Id"], Decimal("1.00"))
    edited = ledger.edit_invoice(realm, inv["Id"], PrivateNote="edited")
    assert edited["PrivateNote"] == "edited"
    assert ledger.edit_invoice(realm, inv["Id"])["SyncToken"] == str(int(edited["SyncToken"]) + 1)
    bill = ledger.add_bill(realm, total=Decimal("50.00"), currency="EUR")
    ledger.apply_bill_payment(realm, bill["Id"], Decimal("20.00"))
    assert ledger.bill(realm, bill["Id"])["Balance"] == 30
    assert ledger.void_invoice(realm, inv["Id"])["Balance"] == 0
    ledger.delete_invoice(realm, inv["Id"])
    assert ledger.invoice(realm, inv["Id"])["status"] == "Deleted"
