"""Celery entry points for payments. Thin: each runs one step of the gateway-call path
(payments/gateway.py), which holds every rule about gateway calls, or one beat sweep, which
reads its candidates through a selector (payments/selectors.py) and hands each to a command or
a task that checks it again under the lock. The correlation id a task was sent with is bound
and cleared around it by aegispay/celery.py.

Every task is idempotent (acks late, redelivered on worker loss): each run takes the payment's
lock, re-plans from the database, sends with a reference the gateway deduplicates, and records
only if its fence still holds. Retries back off with full jitter; past the task's bound an open
operation is the reconciler's.
"""

from __future__ import annotations

import logging
from datetime import datetime

from celery import Task, shared_task
from django.utils import timezone

from .gateway import Next, authorize_run, backoff_seconds, operation_run, refund_run
from .idempotency import idempotency_keys_purge as purge_idempotency_keys
from .models import AttemptOperation
from .selectors import (
    expiries_due,
    open_attempts_due,
    pending_refunds_due,
    settlements_due,
    stalled_payments,
)
from .services import payment_expire, payment_settle

logger = logging.getLogger(__name__)

BEAT_BATCH = 500


def _follow(task: Task, step: Next) -> None:
    """Retry the task as the step says (at once, or after backoff); nothing when done."""
    retries = task.request.retries or 0
    if step is Next.RETRY_NOW:
        raise task.retry(countdown=0)
    if step is Next.RETRY_LATER:
        raise task.retry(countdown=backoff_seconds(retries))


@shared_task(bind=True, max_retries=None)
def payment_process(self: Task, payment_id: str, correlation_id: str = "") -> None:
    """Take a payment from ``initiated`` to ``authorized`` or ``failed`` through a gateway
    (``payments.gateway.authorize_run``): an unknown outcome stays open on its gateway until
    that gateway answers; only an attempt known not taken moves on to the next gateway."""
    _follow(self, authorize_run(payment_id=payment_id, retries=self.request.retries or 0))


@shared_task(bind=True, max_retries=None)
def payment_operation_execute(self: Task, attempt_id: str, correlation_id: str = "") -> None:
    """Send a capture or void attempt to its gateway and record the answer
    (``payments.gateway.operation_run``). The attempt id is the gateway's idempotency
    reference, so a retried or redelivered task never captures or voids twice."""
    _follow(self, operation_run(attempt_id=attempt_id, retries=self.request.retries or 0))


@shared_task(bind=True, max_retries=None)
def refund_execute(self: Task, refund_id: str, correlation_id: str = "") -> None:
    """Send a refund to the payment's gateway (reference: the refund id) and record the answer
    (``payments.gateway.refund_run``). An unknown refund stays pending; it never fails."""
    _follow(self, refund_run(refund_id=refund_id, retries=self.request.retries or 0))


# --- beat ---


@shared_task
def payments_expire_authorizations() -> int:
    """Expire authorisations past their window (and void them). Returns how many expired."""
    due = expiries_due(timezone.now()).values_list("pk", flat=True)[:BEAT_BATCH]
    return sum(payment_expire(payment_id=pk) is not None for pk in list(due))


@shared_task
def payments_settle_captures() -> int:
    """Settle captures older than ``SETTLEMENT_DELAY_SECONDS``. Returns how many settled."""
    due = settlements_due(timezone.now())
    return sum(
        payment_settle(payment_id=pk) is not None
        for pk in list(due.values_list("pk", flat=True)[:BEAT_BATCH])
    )


def reconcile(now: datetime) -> dict[str, int]:
    """Drive again every non-terminal payment, attempt and refund with no live task behind it,
    as of ``now``.

    Open attempts and pending refunds past their ``next_check_at`` (a worker killed mid-call,
    a lost answer, a task that gave up) are sent again through their task, which looks the
    reference up first; the wait between two checks of one operation grows with every send
    (``RECONCILE_BACKOFF_MAX_SECONDS``), for as long as it takes. Payments ``initiated``, or
    ``processing`` with no open attempt, whose task was lost are queued again. Every resumed
    task is idempotent and takes the payment's lock, so a resume that races a live task is
    harmless. Returns how many of each it queued.
    """
    attempts = list(
        open_attempts_due(now)
        .order_by("created_at")
        .values_list("pk", "payment_id", "operation")[:BEAT_BATCH]
    )
    for attempt_id, payment_id, operation in attempts:
        if operation == AttemptOperation.AUTHORIZE:
            payment_process.delay(payment_id)
        else:
            payment_operation_execute.delay(attempt_id)
    refunds = list(
        pending_refunds_due(now).order_by("created_at").values_list("pk", flat=True)[:BEAT_BATCH]
    )
    for refund_id in refunds:
        refund_execute.delay(refund_id)
    stalled = list(
        stalled_payments(now).order_by("created_at").values_list("pk", flat=True)[:BEAT_BATCH]
    )
    for payment_id in stalled:
        payment_process.delay(payment_id)
    return {"attempts": len(attempts), "refunds": len(refunds), "stalled": len(stalled)}


@shared_task
def payments_reconcile() -> dict[str, int]:
    """The beat sweep: ``reconcile`` as of now."""
    return reconcile(timezone.now())


@shared_task
def idempotency_keys_purge() -> int:
    """Delete keys older than ``IDEMPOTENCY_KEY_TTL_HOURS`` in batches of
    ``IDEMPOTENCY_PURGE_BATCH_SIZE``, never one whose request is still running. Returns how
    many it deleted. Idempotent: a second run finds nothing more to delete."""
    return purge_idempotency_keys()
