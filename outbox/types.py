"""Plain values that cross the outbox boundary. Consumers of outbox events receive these,
never ORM rows, so ``payments`` (read models) and the webhook dispatcher stay independent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
