"""Xero Accounting API emulation (identity, connections, Invoices and bills, Payments,
Accounts, Contacts) and Xero webhooks."""

from connector.sandbox.xero.ledger import PaymentBatch, XeroLedger
from connector.sandbox.xero.webhooks import XeroWebhooks

__all__ = ["PaymentBatch", "XeroLedger", "XeroWebhooks"]
