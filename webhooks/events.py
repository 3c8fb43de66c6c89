"""Which events an endpoint wants: its patterns, checked against the catalogue of event types
that payments emits (``payments.models.EVENT_TYPES``), and matched against each event."""

from __future__ import annotations

from collections.abc import Iterable

from payments.models import EVENT_TYPES, EVENT_WILDCARDS

from .errors import WebhookEventsInvalid

WILDCARDS = EVENT_WILDCARDS
_MAX_PATTERNS = 50


def webhook_events_validate(events: object) -> list[str]:
    """The endpoint's patterns, deduplicated in their given order.

    Raises ``WebhookEventsInvalid`` unless ``events`` is a non-empty list of ``*``,
    ``payment.*``, ``refund.*`` or known event types: a misspelt type would otherwise match
    nothing, silently.
    """
    if not isinstance(events, list) or not events:
        raise WebhookEventsInvalid("events must be a non-empty list of event types or patterns")
    if len(events) > _MAX_PATTERNS:
        raise WebhookEventsInvalid(f"events may hold at most {_MAX_PATTERNS} entries")
    patterns: list[str] = []
    for pattern in events:
        if not isinstance(pattern, str) or (pattern not in WILDCARDS | EVENT_TYPES):
            raise WebhookEventsInvalid(
                f"unknown event type or pattern: {pattern!r}; use '*', 'payment.*', "
                "'refund.*' or an event type such as 'payment.captured'"
            )
        if pattern not in patterns:
            patterns.append(pattern)
    return patterns


def event_matches(patterns: Iterable[str], event_type: str) -> bool:
    """Whether an endpoint with ``patterns`` wants events of ``event_type``."""
    return any(
        pattern in ("*", event_type)
        or (pattern.endswith(".*") and event_type.startswith(pattern[:-1]))
        for pattern in patterns
    )
