"""Celery entry points for the outbox. Thin: each calls ``outbox/relay.py``.

Every task is idempotent (acks late): a pass claims rows with ``SKIP LOCKED`` and marks them
in its own transaction, so a redelivered or concurrent run publishes nothing twice in a pass.
"""

from __future__ import annotations

from celery import shared_task

from . import webhook_tasks  # noqa: F401 - registers the webhook tasks with Celery
from .relay import outbox_prune as prune
from .relay import outbox_relay_run


@shared_task(name="outbox.tasks.outbox_relay")
def outbox_relay() -> int:
    """Publish pending outbox rows until none is due (kicked after commit; swept by beat)."""
    return outbox_relay_run()


@shared_task(name="outbox.tasks.outbox_prune")
def outbox_prune() -> int:
    """Delete published outbox rows past ``OUTBOX_RETENTION_HOURS`` (beat)."""
    return prune()
