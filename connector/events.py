"""Events out: signed webhooks for allocation outcomes and connection health.

(Stub: the engine records events through :func:`record_event`; delivery comes next.)
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from connector.config import Settings
from connector.state import Event, EventDelivery
from connector.types import utcnow

__all__ = ["record_event"]


def record_event(
    session: Any,
    settings: Settings,
    type_: str,
    *,
    data: dict[str, Any],
    connection_id: str | None = None,
    intent_id: str | None = None,
) -> Event | None:
    """Write an event and one delivery per subscribed endpoint, in the caller's transaction."""
    endpoints = [e for e in settings.events.endpoints if e.enabled and type_ in e.events]
    if not endpoints:
        return None
    now = utcnow()
    event = Event(
        id=str(uuid.uuid4()),
        type=type_,
        connection_id=connection_id,
        intent_id=intent_id,
        payload=json.dumps(data, sort_keys=True, default=str),
        created_at=now,
    )
    session.add(event)
    for endpoint in endpoints:
        session.add(
            EventDelivery(
                event_id=event.id, endpoint=endpoint.url, next_attempt_at=now, updated_at=now
            )
        )
    return event
