"""Provider adapters: one per ledger, all behind :class:`connector.adapters.base.Adapter`."""

from __future__ import annotations

from connector.adapters.base import Adapter, build_adapter

__all__ = ["Adapter", "build_adapter"]
