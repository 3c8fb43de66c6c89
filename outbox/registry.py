"""The in-process consumers of the outbox, registered in code by each app's ``AppConfig.ready()``.

A consumer is a name and a function that applies a batch of events (``OutboxEvent``, in
per-aggregate sequence order) inside the transaction that marks them applied. Every outbox row
written after a consumer is registered gets a mark for it (``OutboxConsumerMark``), so the
consumer sees every event from then on, whether or not the relay has published it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .types import OutboxEvent

Apply = Callable[[list[OutboxEvent]], None]

# Names go into SQL (``consumer_applied_sql``) and into the marks table: keep them plain.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

_consumers: dict[str, Apply] = {}


def valid_consumer_name(name: str) -> bool:
    """Whether ``name`` can name a consumer (and so go into SQL as a literal)."""
    return bool(_NAME.match(name))


def register_consumer(name: str, apply: Apply) -> None:
    """Register ``apply`` as the consumer ``name`` (idempotent for the same function).

    ``apply(events)`` must be idempotent per event id and must not commit: the consumer pass
    calls it inside its transaction and rolls everything back if it raises. Raises
    ``ValueError`` for a malformed name or a name taken by another function.
    """
    if not valid_consumer_name(name):
        raise ValueError(f"consumer names are lowercase identifiers: {name!r}")
    existing = _consumers.get(name)
    if existing is not None and existing is not apply:
        raise ValueError(f"another function is registered as the outbox consumer {name!r}")
    _consumers[name] = apply


def consumer_names() -> list[str]:
    """The registered consumers' names, sorted (the order outbox rows get their marks in)."""
    return sorted(_consumers)


def consumer_apply(name: str) -> Apply:
    """The registered function of ``name``; ``KeyError`` if there is none."""
    return _consumers[name]
