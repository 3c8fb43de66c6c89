"""Celery entry points for merchant webhooks. Thin: each calls ``webhooks/services.py`` or
``webhooks/selectors.py``.

Both are idempotent, as ``acks_late`` requires: a redelivered send finds the delivery already
leased or finished and does nothing, and a sweep only enqueues sends. Workers register them by
autodiscovery (``aegispay/celery.py``).

The task names are those the tasks had when they lived in ``outbox/webhook_tasks.py``, not this
module's path: messages already queued and the beat schedule (``webhooks-sweep``) name a task by
its name, so a worker of either version runs a send queued by the other.
"""

from __future__ import annotations

from celery import shared_task

from .selectors import webhook_deliveries_due
from .services import webhook_delivery_attempt


@shared_task(name="outbox.webhook_tasks.webhook_delivery_send")
def webhook_delivery_send(delivery_id: int) -> str:
    """Try one delivery once if it is due (see ``webhook_delivery_attempt``).

    Does not retry through Celery: a failed try stores its next time on the row and the beat
    sweep sends it then, so no countdown waits in the broker.
    """
    return str(webhook_delivery_attempt(delivery_id=delivery_id))


@shared_task(name="outbox.webhook_tasks.webhook_deliveries_sweep")
def webhook_deliveries_sweep() -> int:
    """Enqueue a send for every due delivery (beat, every ``BEAT_WEBHOOK_SWEEP_SECONDS``).

    The guarantee behind the after-commit kick and the only driver of retries. A delivery may
    be enqueued twice (by a kick and a sweep, or two sweeps); the lease sends it once.
    """
    due = webhook_deliveries_due()
    for delivery_id in due:
        webhook_delivery_send.delay(delivery_id)
    return len(due)
