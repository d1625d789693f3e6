"""The SuiteQL tables of one account, built from the ledger on each query.

Columns and their meaning (fact sheet §2/§3 and the recorded SuiteQL responses):

``transaction``
    ``id tranid transactionnumber type recordtype entity status trandate duedate
    createddate lastmodifieddate currency exchangerate foreigntotal total externalid memo
    email postingperiod account subsidiary approvalstatus posting voided`` and, for invoices and bills,
    ``foreignamountpaid foreignamountunpaid foreignamountremaining amountpaid
    amountunpaid amountremaining`` (transaction currency for ``foreign*``, base currency
    for the others); for payments ``foreignpaymentamountused
    foreignpaymentamountunused``. ``type`` is ``CustInvc``/``VendBill``/``CustPymt``/
    ``VendPymt``; ``status`` the letter (``A``), ``BUILTIN.DF(status)`` the text
    (``Invoice : Open``). ``foreigntotal``/``total`` are negative for bills and bill
    payments (vendor payments are recorded live as ``-60``; bills by the same
    credit-side rule — sandbox choice).
``transactionline``
    ``transaction id linesequencenumber mainline entity foreignamount netamount memo
    subsidiary`` (the main line and one item/expense line per document).
``nexttransactionlinelink``
    ``previousdoc previousline previoustype nextdoc nextline nexttype linktype
    foreignamount amount lastmodifieddate``: one row per applied payment line.
``customer`` / ``vendor``
    ``id entityid companyname altname email currency subsidiary isinactive isperson
    datecreated lastmodifieddate externalid``.
``account``
    ``id acctnumber accountsearchdisplayname fullname accttype currency isinactive
    description``.
``currency``
    ``id name symbol displaysymbol isbasecurrency exchangerate isinactive``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connector.sandbox.netsuite.models import (
    BILL,
    CUSTOMER_PAYMENT,
    INVOICE,
    VENDOR_PAYMENT,
    Company,
    Transaction,
)
from connector.sandbox.netsuite.render import (
    entity_name,
    gl_name,
    posting_period_id,
    status_display,
)
from connector.sandbox.netsuite.suiteql import Table

__all__ = ["TRANSACTION_TYPE", "catalog"]

TRANSACTION_TYPE = {
    INVOICE: "CustInvc",
    BILL: "VendBill",
    CUSTOMER_PAYMENT: "CustPymt",
    VENDOR_PAYMENT: "VendPymt",
}
_TYPE_NAME = {
    INVOICE: "Invoice",
    BILL: "Bill",
    CUSTOMER_PAYMENT: "Payment",
    VENDOR_PAYMENT: "Bill Payment",
}
_TRANSACTION_COLUMNS = (
    "id",
    "tranid",
    "transactionnumber",
    "type",
    "recordtype",
    "entity",
    "status",
    "trandate",
    "duedate",
    "createddate",
    "lastmodifieddate",
    "currency",
    "exchangerate",
    "foreigntotal",
    "total",
    "externalid",
    "memo",
    "email",
    "postingperiod",
    "account",
    "subsidiary",
    "approvalstatus",
    "posting",
    "voided",
    "foreignamountpaid",
    "foreignamountunpaid",
    "foreignamountremaining",
    "amountpaid",
    "amountunpaid",
    "amountremaining",
    "foreignpaymentamountused",
    "foreignpaymentamountunused",
)
_ENTITY_COLUMNS = (
    "id",
    "entityid",
    "companyname",
    "altname",
    "email",
    "currency",
    "subsidiary",
    "isinactive",
    "isperson",
    "datecreated",
    "lastmodifieddate",
    "externalid",
)


def _base(amount: Decimal, rate: Decimal) -> Decimal:
    return (amount * rate).quantize(Decimal("0.01"))


def _transaction(company: Company, tx: Transaction) -> tuple[dict[str, Any], dict[str, str]]:
    sign = -1 if tx.kind in (BILL, VENDOR_PAYMENT) else 1
    row: dict[str, Any] = {
        "id": tx.id,
        "tranid": tx.tran_id,
        "transactionnumber": tx.number,
        "type": TRANSACTION_TYPE[tx.kind],
        "recordtype": tx.kind.lower(),
        "entity": tx.entity_id,
        "status": tx.status,
        "trandate": tx.tran_date,
        "duedate": tx.due_date,
        "createddate": tx.created,
        "lastmodifieddate": tx.modified,
        "currency": tx.currency_id,
        "exchangerate": tx.exchange_rate,
        "foreigntotal": sign * tx.total,
        "total": sign * _base(tx.total, tx.exchange_rate),
        "externalid": tx.external_id,
        "memo": tx.memo,
        "email": company.entities[tx.entity_id].email if tx.entity_id in company.entities else None,
        "postingperiod": posting_period_id(tx.tran_date),
        "account": tx.account_id,
        "subsidiary": company.subsidiary_id,
        "approvalstatus": None,
        "posting": tx.status != "D",
        "voided": False,
    }
    display = {
        "entity": entity_name(company, tx.entity_id),
        "type": _TYPE_NAME[tx.kind],
        "currency": company.currencies[tx.currency_id].name,
        "subsidiary": company.subsidiary_name,
        "postingperiod": tx.tran_date.strftime("%b %Y"),
    }
    shown_status = status_display(tx)
    if shown_status is not None:
        display["status"] = shown_status
    if tx.account_id is not None:
        display["account"] = gl_name(company, tx.account_id)
    if tx.is_document:
        remaining = tx.amount_remaining
        row.update(
            {
                "approvalstatus": 1 if tx.status == "D" else 2,
                "foreignamountpaid": tx.amount_paid,
                "foreignamountunpaid": remaining,
                "foreignamountremaining": remaining,
                "amountpaid": _base(tx.amount_paid, tx.exchange_rate),
                "amountunpaid": _base(remaining, tx.exchange_rate),
                "amountremaining": _base(remaining, tx.exchange_rate),
            }
        )
        display["approvalstatus"] = "Pending Approval" if tx.status == "D" else "Approved"
    else:
        row["foreignpaymentamountused"] = tx.applied
        row["foreignpaymentamountunused"] = tx.unapplied
    return row, display


def _lines(company: Company, tx: Transaction) -> list[dict[str, Any]]:
    sign = -1 if tx.kind in (BILL, VENDOR_PAYMENT) else 1
    main = {
        "transaction": tx.id,
        "id": 0,
        "linesequencenumber": 0,
        "mainline": True,
        "entity": tx.entity_id,
        "foreignamount": sign * tx.total,
        "netamount": sign * _base(tx.total, tx.exchange_rate),
        "memo": tx.memo,
        "subsidiary": company.subsidiary_id,
    }
    if not tx.is_document:
        return [main]
    item = dict(main)
    item.update(
        {
            "id": 1,
            "linesequencenumber": 1,
            "mainline": False,
            "foreignamount": -sign * tx.total,
            "netamount": -sign * _base(tx.total, tx.exchange_rate),
            "memo": tx.item_description or None,
        }
    )
    return [main, item]


def catalog(company: Company) -> dict[str, Table]:
    """Every table of the account, as of now (call under the ledger lock)."""
    txs = sorted(company.transactions.values(), key=lambda t: t.id)
    transactions = Table("transaction", _TRANSACTION_COLUMNS, [], [])
    lines = Table(
        "transactionline",
        (
            "transaction",
            "id",
            "linesequencenumber",
            "mainline",
            "entity",
            "foreignamount",
            "netamount",
            "memo",
            "subsidiary",
        ),
        [],
        [],
    )
    links = Table(
        "nexttransactionlinelink",
        (
            "previousdoc",
            "previousline",
            "previoustype",
            "nextdoc",
            "nextline",
            "nexttype",
            "linktype",
            "foreignamount",
            "amount",
            "lastmodifieddate",
        ),
        [],
        [],
    )
    for tx in txs:
        row, display = _transaction(company, tx)
        transactions.rows.append(row)
        transactions.display.append(display)
        for line in _lines(company, tx):
            lines.rows.append(line)
            lines.display.append({"entity": entity_name(company, tx.entity_id)})
        for applied in tx.apply:
            doc = company.transactions.get(applied.doc_id)
            if doc is None:
                continue
            links.rows.append(
                {
                    "previousdoc": doc.id,
                    "previousline": 0,
                    "previoustype": TRANSACTION_TYPE[doc.kind],
                    "nextdoc": tx.id,
                    "nextline": 0,
                    "nexttype": TRANSACTION_TYPE[tx.kind],
                    "linktype": "Payment",
                    "foreignamount": applied.amount,
                    "amount": _base(applied.amount, tx.exchange_rate),
                    "lastmodifieddate": tx.modified,
                }
            )
            links.display.append({"linktype": "Payment"})

    # DeletedRecord: the fact sheet names the table (O:section_N3508018.html) but not
    # its columns; these follow Oracle's record browser as we know it (UNCONFIRMED):
    # recordid, recordtypeid (the record type's lower-case id), name, deleteddate.
    deleted = Table(
        "deletedrecord",
        ("recordid", "recordtypeid", "name", "deleteddate", "istransaction", "context"),
        [],
        [],
    )
    for tx in sorted(company.deleted, key=lambda t: t.id):
        deleted.rows.append(
            {
                "recordid": tx.id,
                "recordtypeid": tx.kind.lower(),
                "name": tx.tran_id,
                "deleteddate": tx.deleted,
                "istransaction": True,
                "context": "REST",
            }
        )
        deleted.display.append({})
    tables = {
        "transaction": transactions,
        "transactionline": lines,
        "nexttransactionlinelink": links,
        "deletedrecord": deleted,
    }
    for kind in ("customer", "vendor"):
        table = Table(kind, _ENTITY_COLUMNS, [], [])
        for entity in company.entities.values():
            if entity.kind != kind:
                continue
            table.rows.append(
                {
                    "id": entity.id,
                    "entityid": entity.entity_id,
                    "companyname": entity.company_name,
                    "altname": entity.company_name,
                    "email": entity.email,
                    "currency": entity.currency_id,
                    "subsidiary": company.subsidiary_id,
                    "isinactive": False,
                    "isperson": False,
                    "datecreated": entity.created,
                    "lastmodifieddate": entity.modified,
                    "externalid": entity.external_id,
                }
            )
            table.display.append(
                {
                    "currency": company.currencies[entity.currency_id].name,
                    "subsidiary": company.subsidiary_name,
                }
            )
        tables[kind] = table
    accounts = Table(
        "account",
        (
            "id",
            "acctnumber",
            "accountsearchdisplayname",
            "fullname",
            "accttype",
            "currency",
            "isinactive",
            "description",
        ),
        [],
        [],
    )
    for account in company.gl_accounts.values():
        accounts.rows.append(
            {
                "id": account.id,
                "acctnumber": account.number,
                "accountsearchdisplayname": f"{account.number} {account.name}",
                "fullname": account.name,
                "accttype": account.type,
                "currency": account.currency_id,
                "isinactive": account.inactive,
                "description": account.description or None,
            }
        )
        display = {"accttype": account.type_name}
        if account.currency_id is not None:
            display["currency"] = company.currencies[account.currency_id].name
        accounts.display.append(display)
    tables["account"] = accounts
    currencies = Table(
        "currency",
        ("id", "name", "symbol", "displaysymbol", "isbasecurrency", "exchangerate", "isinactive"),
        [],
        [],
    )
    for currency in company.currencies.values():
        currencies.rows.append(
            {
                "id": currency.id,
                "name": currency.name,
                "symbol": currency.code,
                "displaysymbol": currency.symbol,
                "isbasecurrency": currency.id == company.base_currency_id,
                "exchangerate": currency.rate,
                "isinactive": False,
            }
        )
        currencies.display.append({})
    tables["currency"] = currencies
    return tables
