"""The payment row as a projection of its events: replay, snapshot and compare.

Every event stores in ``data["changes"]`` the fields it set, and its ``to_status`` and
``sequence``; applying a payment's events in order therefore rebuilds the row's state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .models import Payment, PaymentEvent
from .representations import iso
from .services import PROJECTED_FIELDS


def replay(events: Iterable[PaymentEvent]) -> dict[str, Any]:
    """The state that ``events`` (one payment's, oldest first) describe."""
    state: dict[str, Any] = {}
    expected = 1
    for event in events:
        if event.sequence != expected:
            raise ValueError(f"event sequence {event.sequence} where {expected} was due")
        state.update(event.data.get("changes", {}))
        state["status"] = event.to_status
        state["version"] = event.sequence
        expected += 1
    return state


def snapshot(payment: Payment) -> dict[str, Any]:
    """The projected fields of a stored payment, in the form events carry them."""
    state: dict[str, Any] = {name: getattr(payment, name) for name in PROJECTED_FIELDS}
    state["authorization_expires_at"] = iso(payment.authorization_expires_at)
    state["status"] = payment.status
    state["version"] = payment.version
    return state


def differences(payment: Payment) -> dict[str, tuple[Any, Any]]:
    """Fields where the stored payment and the replay of its events disagree: (stored, replayed)."""
    stored = snapshot(payment)
    replayed = replay(payment.events.order_by("sequence"))
    return {
        name: (stored.get(name), replayed.get(name))
        for name in sorted(set(stored) | set(replayed))
        if stored.get(name) != replayed.get(name)
    }
