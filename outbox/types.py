"""Plain values that cross the outbox boundary. Consumers of outbox events receive these,
never ORM rows, so ``payments`` (read models) and the webhook dispatcher stay independent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# The outbox row's columns an event is made of, in ``OutboxEvent.from_row``'s order.
EVENT_COLUMNS = "event_id, event_type, aggregate_type, aggregate_id, sequence, merchant_id, payload"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One event as the relay publishes it. ``payload`` is the API's event object."""

    event_id: str
    event_type: str
    aggregate_type: str
    aggregate_id: str
    sequence: int
    merchant_id: str
    payload: dict[str, Any]

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> OutboxEvent:
        """The event of an outbox row read as ``EVENT_COLUMNS`` (the payload as psycopg gives
        jsonb, or as text)."""
        event_id, event_type, aggregate_type, aggregate_id, sequence, merchant_id, payload = row
        return cls(
            event_id=event_id,
            event_type=event_type,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            sequence=sequence,
            merchant_id=merchant_id,
            payload=payload if isinstance(payload, dict) else json.loads(payload),
        )
