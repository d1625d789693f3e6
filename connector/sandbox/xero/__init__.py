"""Xero Accounting API emulation (identity, connections, Invoices, Payments, Accounts,
Contacts)."""

from connector.sandbox.xero.ledger import PaymentBatch, XeroLedger

__all__ = ["PaymentBatch", "XeroLedger"]
