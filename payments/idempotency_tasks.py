"""The beat task that forgets expired ``Idempotency-Key`` records (``payments/idempotency.py``).

Registered with Celery by ``PaymentsConfig.ready``; scheduled as ``idempotency-purge`` in
``CELERY_BEAT_SCHEDULE``.
"""

from __future__ import annotations

from celery import shared_task

from .idempotency import idempotency_keys_purge as purge


@shared_task
def idempotency_keys_purge() -> int:
    """Delete keys older than ``IDEMPOTENCY_KEY_TTL_HOURS`` in batches of
    ``IDEMPOTENCY_PURGE_BATCH_SIZE``, never one whose request is still running. Returns how
    many it deleted. Idempotent: a second run finds nothing more to delete."""
    return purge()
