"""The payment row as a projection of its events: replay, snapshot and compare.

Every event stores in ``data["changes"]`` the fields it set, and its ``to_status`` and
``sequence``; applying a payment's events in order therefore rebuilds the row's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from common.isotime import iso

from .eventstore import PROJECTED_FIELDS
from .models import Payment, PaymentEvent

# The fields a payment's events rebuild: the projected ones, its status and its version.
PAYMENT_FIELDS = (*PROJECTED_FIELDS, "status", "version")


def replay_state(
    rows: Iterable[tuple[int, str, Mapping[str, Any]]],
) -> tuple[dict[str, Any], int | None]:
    """Fold (sequence, to_status, changes) rows, oldest first, into a payment's projected state.

    Returns the state and the first missing sequence number (None when the sequence is
    1, 2, 3, ... without a gap), so a streaming verifier can report a gap instead of stopping.
    """
    state: dict[str, Any] = {}
    gap = None
    for sequence, to_status, changes in rows:
        if gap is None and sequence != state.get("version", 0) + 1:
            gap = state.get("version", 0) + 1
        state.update(changes)
        state["status"] = to_status
        state["version"] = sequence
    return state, gap


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
