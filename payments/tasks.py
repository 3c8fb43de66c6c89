"""Celery entry points for payments. Thin: each binds the correlation id and calls services.

Every task is idempotent (acks late, redelivered on worker loss): it re-reads the state it acts
on, every gateway call carries a reference that the gateway deduplicates, and a Redis lock per
payment keeps two workers from calling a gateway for the same payment at once. Every gateway
call goes through ``gateways.resilience.call_gateway`` (breaker, bulkhead, timeout).
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from celery import Task, shared_task
from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError

from aegispay.correlation import bind_correlation_id
from gateways.base import (
    CaptureRequest,
    ChargeRequest,
    GatewayResult,
    Outcome,
    RefundRequest,
    VoidRequest,
)
from gateways.resilience import NOT_SENT_CODES, call_gateway, gateway_available
from routing.metrics import record_result

from .errors import OperationInProgress, PaymentNotFound
from .locks import PaymentBusy, payment_gateway_lock
from .models import (
    OPEN_ATTEMPT_STATUSES,
    AttemptOperation,
    Payment,
    PaymentAttempt,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from .services import (
    AttemptPlan,
    payment_attempt_begin,
    payment_attempt_record,
    payment_expire,
    payment_facts,
    payment_operation_plan,
    payment_operation_record,
    payment_settle,
    refund_record,
)

logger = logging.getLogger(__name__)

BEAT_BATCH = 500


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * factor**retries)]."""
    ceiling = min(
        settings.GATEWAY_RETRY_MAX_SECONDS,
        settings.GATEWAY_RETRY_BASE_SECONDS * settings.GATEWAY_RETRY_FACTOR**retries,
    )
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


def _out_of_retries(task: Task, started_at: datetime) -> bool:
    """True once the retry count or the deadline since the first attempt is spent."""
    deadline = started_at + timedelta(seconds=settings.GATEWAY_RETRY_DEADLINE_SECONDS)
    return (task.request.retries or 0) >= settings.GATEWAY_MAX_RETRIES or timezone.now() > deadline


def _authorize(plan: AttemptPlan) -> GatewayResult:
    """Send an authorize; an attempt that may have reached the gateway is looked up first."""
    request = ChargeRequest(
        reference=plan.attempt_id,
        order_reference=plan.payment_id,
        amount=plan.amount,
        currency=plan.currency,
        token=plan.token,
    )

    def lookup() -> GatewayResult:
        return call_gateway(
            plan.gateway, "lookup", lambda g: g.lookup(plan.attempt_id), reference=plan.attempt_id
        )

    if plan.resume:
        found = lookup()
        if found.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
            return found
    result = call_gateway(
        plan.gateway, "authorize", lambda g: g.authorize(request), reference=plan.attempt_id
    )
    if result.is_unknown:
        # The answer was lost: ask the same gateway about this reference before anything else.
        found = lookup()
        if found.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
            return found
    return result


def _learn(result: GatewayResult, payment: Payment) -> None:
    """Feed an authorize result into the live routing metrics. Best effort: the payment is
    recorded already, and a metrics outage must not fail the task."""
    try:
        record_result(result, facts=payment_facts(payment))
    except RedisError:
        logger.warning("routing metrics not updated for %s", payment.id, exc_info=True)


@shared_task(bind=True, max_retries=None)
def payment_process(self: Task, payment_id: str, correlation_id: str = "") -> None:
    """Take a payment from ``initiated`` to ``authorized`` or ``failed`` through a gateway.

    Commits the attempt before the call, calls the gateway outside any transaction under the
    payment's Redis lock, then records the answer. Retryable errors become new attempts on the
    next gateway (at once when nothing was sent, else after backoff) until the retry count or
    deadline is spent; an unknown outcome is retried on the same gateway and reference.
    """
    bind_correlation_id(correlation_id)
    try:
        plan = payment_attempt_begin(payment_id=payment_id, available=gateway_available)
    except PaymentNotFound:
        logger.warning("payment_process for a payment that does not exist: %s", payment_id)
        return
    except OperationInProgress:
        return  # another task holds this payment's open attempt; the reconciler backs it up
    if plan is None:
        return
    try:
        with payment_gateway_lock(plan.payment_id):
            result = _authorize(plan)
            final = _out_of_retries(self, plan.first_attempt_at)
            payment = payment_attempt_record(attempt_id=plan.attempt_id, result=result, final=final)
        _learn(result, payment)
    except PaymentBusy:
        raise self.retry(countdown=backoff_seconds(self.request.retries or 0)) from None
    if final or result.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
        return
    countdown = (
        0 if result.decline_code in NOT_SENT_CODES else backoff_seconds(self.request.retries or 0)
    )
    raise self.retry(countdown=countdown)


def _operation(plan: AttemptPlan) -> GatewayResult:
    if plan.operation == AttemptOperation.CAPTURE:
        capture = CaptureRequest(
            reference=plan.attempt_id,
            gateway_reference=plan.gateway_reference,
            amount=plan.amount,
            currency=plan.currency,
        )
        return call_gateway(
            plan.gateway, "capture", lambda g: g.capture(capture), reference=plan.attempt_id
        )
    void = VoidRequest(reference=plan.attempt_id, gateway_reference=plan.gateway_reference)
    return call_gateway(plan.gateway, "void", lambda g: g.void(void), reference=plan.attempt_id)


@shared_task(bind=True, max_retries=None)
def payment_operation_execute(self: Task, attempt_id: str, correlation_id: str = "") -> None:
    """Send a capture or void attempt to its gateway and record the answer.

    The attempt id is the gateway's idempotency reference, so a retried or redelivered task
    never captures or voids twice. Past the retry bound the attempt stays open and the
    reconciler sends it again.
    """
    bind_correlation_id(correlation_id)
    plan = payment_operation_plan(attempt_id=attempt_id)
    if plan is None:
        return
    try:
        with payment_gateway_lock(plan.payment_id):
            result = _operation(plan)
            payment_operation_record(attempt_id=attempt_id, result=result)
            final = _out_of_retries(self, plan.first_attempt_at)
    except PaymentBusy:
        raise self.retry(countdown=backoff_seconds(self.request.retries or 0)) from None
    if not final and (result.retryable or result.is_unknown):
        raise self.retry(countdown=backoff_seconds(self.request.retries or 0))


@shared_task(bind=True, max_retries=None)
def refund_execute(self: Task, refund_id: str, correlation_id: str = "") -> None:
    """Send a refund to the payment's gateway (reference: the refund id) and record the answer."""
    bind_correlation_id(correlation_id)
    refund = Refund.objects.select_related("payment").filter(pk=refund_id).first()
    if refund is None or refund.status != RefundStatus.PENDING:
        return
    payment = refund.payment
    request = RefundRequest(
        reference=refund.id,
        gateway_reference=payment.gateway_reference,
        amount=refund.amount,
        currency=refund.currency,
    )
    try:
        with payment_gateway_lock(payment.id):
            result = call_gateway(
                payment.gateway, "refund", lambda g: g.refund(request), reference=refund.id
            )
            final = _out_of_retries(self, refund.created_at)
            refund_record(refund_id=refund.id, result=result, final=final)
    except PaymentBusy:
        raise self.retry(countdown=backoff_seconds(self.request.retries or 0)) from None
    if not final and (result.retryable or result.is_unknown):
        raise self.retry(countdown=backoff_seconds(self.request.retries or 0))


# --- beat ---


@shared_task
def payments_expire_authorizations() -> int:
    """Expire authorisations past their window (and void them). Returns how many expired."""
    due = Payment.objects.filter(
        status=PaymentStatus.AUTHORIZED, authorization_expires_at__lte=timezone.now()
    ).values_list("pk", flat=True)[:BEAT_BATCH]
    return sum(payment_expire(payment_id=pk) is not None for pk in list(due))


@shared_task
def payments_settle_captures() -> int:
    """Settle captures older than ``SETTLEMENT_DELAY_SECONDS``. Returns how many settled."""
    cutoff = timezone.now() - timedelta(seconds=settings.SETTLEMENT_DELAY_SECONDS)
    due = Payment.objects.filter(status=PaymentStatus.CAPTURED, updated_at__lte=cutoff)
    return sum(
        payment_settle(payment_id=pk) is not None
        for pk in list(due.values_list("pk", flat=True)[:BEAT_BATCH])
    )


@shared_task
def payments_reconcile() -> dict[str, int]:
    """Resume work left in flight past ``RECONCILE_AFTER_SECONDS``.

    Open attempts (a worker killed mid-call, a lost answer) are sent again through their task,
    which looks the reference up before anything else; pending refunds likewise; payments
    still ``initiated`` (a processing task lost before it ran, or never sent) are queued
    again. Every resumed task is idempotent, so a resume that races a live task is harmless.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.RECONCILE_AFTER_SECONDS)
    attempts = list(
        PaymentAttempt.objects.filter(
            status__in=OPEN_ATTEMPT_STATUSES, created_at__lte=cutoff
        ).values_list("pk", "payment_id", "operation")[:BEAT_BATCH]
    )
    for attempt_id, payment_id, operation in attempts:
        if operation == AttemptOperation.AUTHORIZE:
            payment_process.delay(payment_id)
        else:
            payment_operation_execute.delay(attempt_id)
    refunds = list(
        Refund.objects.filter(status=RefundStatus.PENDING, created_at__lte=cutoff).values_list(
            "pk", flat=True
        )[:BEAT_BATCH]
    )
    for refund_id in refunds:
        refund_execute.delay(refund_id)
    stalled = list(
        Payment.objects.filter(status=PaymentStatus.INITIATED, updated_at__lte=cutoff).values_list(
            "pk", flat=True
        )[:BEAT_BATCH]
    )
    for payment_id in stalled:
        payment_process.delay(payment_id)
    return {"attempts": len(attempts), "refunds": len(refunds), "initiated": len(stalled)}
