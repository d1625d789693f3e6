"""Accounting-integration sync connector: exactly-once payment allocations into
QuickBooks Online, Xero and NetSuite, with a unified pull store.

``from connector import Connector`` is the Python API (:mod:`connector.client`);
it is imported on first use, so ``import connector`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector.client import Allocation, Connector
    from connector.sync.push import AllocationLine, AllocationRequest, IntakeError, IntakeRejected

__all__ = [
    "Allocation",
    "AllocationLine",
    "AllocationRequest",
    "Connector",
    "IntakeError",
    "IntakeRejected",
]

_LAZY = {
    "Allocation": "connector.client",
    "Connector": "connector.client",
    "AllocationLine": "connector.sync.push",
    "AllocationRequest": "connector.sync.push",
    "IntakeError": "connector.sync.push",
    "IntakeRejected": "connector.sync.push",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'connector' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
