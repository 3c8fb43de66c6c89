"""Celery entry points for the outbox. Thin: each calls ``outbox/relay.py`` or
``outbox/consumers.py``.

Every task is idempotent (acks late): a pass claims rows (or consumer marks) with
``SKIP LOCKED`` and marks them in its own transaction, so a redelivered or concurrent run
publishes or applies nothing twice in a pass.
"""

from __future__ import annotations

from celery import shared_task

from .consumers import outbox_consumers_run
from .relay import outbox_prune as prune
from .relay import outbox_relay_run


@shared_task(name="outbox.tasks.outbox_relay")
def outbox_relay() -> int:
    """Publish pending outbox rows until none is due (kicked after commit; swept by beat)."""
    return outbox_relay_run()


@shared_task(name="outbox.tasks.outbox_consumers")
def outbox_consumers() -> dict[str, int]:
    """Apply every in-process consumer's unapplied events (kicked after commit; swept by beat).

    Independent of the relay and the event bus: a bus outage does not hold it up."""
    return outbox_consumers_run()


@shared_task(name="outbox.tasks.outbox_prune")
def outbox_prune() -> dict[str, object]:
    """Drop the outbox's day partitions past ``OUTBOX_RETENTION_HOURS`` that hold nothing
    left to do (beat)."""
    result = prune()
    return {"partitions": list(result.partitions), "default_rows": result.default_rows}
