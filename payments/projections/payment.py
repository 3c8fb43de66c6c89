"""The payment row as a projection of its events: replay, snapshot and compare."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from common.isotime import iso

from ..models import Payment, PaymentEvent
from .fold import PAYMENT_FIELDS, replay_state


def replay(events: Iterable[PaymentEvent]) -> dict[str, Any]:
    """The state that ``events`` (one payment's, oldest first) describe; a gap is an error."""
    state, gap = replay_state(
        (event.sequence, event.to_status, event.data.get("changes", {})) for event in events
    )
    if gap is not None:
        raise ValueError(f"event sequence {gap} is missing")
    return state


def stored_state(values: Mapping[str, Any]) -> dict[str, Any]:
    """A stored payment's ``PAYMENT_FIELDS`` (from the row or a ``.values()`` dict) in the form
    events carry them."""
    state = {name: values[name] for name in PAYMENT_FIELDS}
    state["authorization_expires_at"] = iso(values["authorization_expires_at"])
    return state


def snapshot(payment: Payment) -> dict[str, Any]:
    """The projected fields of a stored payment, in the form events carry them."""
    return stored_state({name: getattr(payment, name) for name in PAYMENT_FIELDS})


def differences(payment: Payment) -> dict[str, tuple[Any, Any]]:
    """Fields where the stored payment and the replay of its events disagree: (stored, replayed)."""
    stored = snapshot(payment)
    replayed = replay(payment.events.order_by("sequence"))
    return {
        name: (stored.get(name), replayed.get(name))
        for name in sorted(set(stored) | set(replayed))
        if stored.get(name) != replayed.get(name)
    }
