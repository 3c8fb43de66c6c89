"""Celery entry points for payments. Thin: each binds the correlation id and calls services.

Every task is idempotent (acks late with redelivery on worker loss): it re-reads the state it
acts on, and every gateway call carries a reference that the gateway deduplicates.
"""

from __future__ import annotations

import logging
import random

from celery import Task, shared_task
from django.conf import settings

from aegispay.correlation import bind_correlation_id
from gateways.base import CaptureRequest, ChargeRequest, GatewayResult, Outcome
from gateways.registry import get_gateway

from .errors import PaymentNotFound
from .models import Payment, PaymentStatus
from .services import (
    SYSTEM,
    AttemptPlan,
    payment_attempt_begin,
    payment_attempt_record,
    payment_capture_record,
)

logger = logging.getLogger(__name__)


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * factor**retries)]."""
    ceiling = min(
        settings.GATEWAY_RETRY_MAX_SECONDS,
        settings.GATEWAY_RETRY_BASE_SECONDS * settings.GATEWAY_RETRY_FACTOR**retries,
    )
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


def _authorize(plan: AttemptPlan) -> GatewayResult:
    """Call the gateway for ``plan``; an earlier call with the same reference is looked up first."""
    gateway = get_gateway(plan.gateway)
    request = ChargeRequest(
        reference=plan.attempt_id,
        order_reference=plan.payment_id,
        amount=plan.amount,
        currency=plan.currency,
        token=plan.token,
    )
    if plan.resume:
        found = gateway.lookup(plan.attempt_id)
        if found.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
            return found
    result = gateway.authorize(request)
    if result.is_unknown:
        # The answer was lost: ask the same gateway about this reference before anything else.
        found = gateway.lookup(plan.attempt_id)
        if found.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
            return found
    return result


@shared_task(bind=True, max_retries=None)
def payment_process(self: Task, payment_id: str, correlation_id: str = "") -> None:
    """Take a payment from ``initiated`` to ``authorized`` or ``failed`` through a gateway.

    Commits the attempt before the call, calls the gateway outside any transaction, then
    records the answer. Retryable errors are retried with backoff up to
    ``GATEWAY_MAX_RETRIES``; an unknown outcome is retried on the same reference.
    """
    bind_correlation_id(correlation_id)
    try:
        plan = payment_attempt_begin(payment_id=payment_id)
    except PaymentNotFound:
        logger.warning("payment_process for a payment that does not exist: %s", payment_id)
        return
    if plan is None:
        return
    result = _authorize(plan)
    retries = self.request.retries or 0
    final = retries >= settings.GATEWAY_MAX_RETRIES
    payment_attempt_record(attempt_id=plan.attempt_id, result=result, final=final)
    if (result.retryable or result.outcome in (Outcome.UNKNOWN, Outcome.NOT_FOUND)) and not final:
        raise self.retry(countdown=backoff_seconds(retries))


@shared_task(bind=True, max_retries=None)
def payment_capture_automatic(self: Task, payment_id: str, correlation_id: str = "") -> None:
    """Capture the whole authorisation of an automatic-capture payment and settle it.

    The capture reference is derived from the payment, so a redelivered or retried task
    never captures twice.
    """
    bind_correlation_id(correlation_id)
    payment = Payment.objects.filter(pk=payment_id).first()
    if payment is None or payment.status != PaymentStatus.AUTHORIZED:
        return
    gateway = get_gateway(payment.gateway)
    result = gateway.capture(
        CaptureRequest(
            reference=f"cap_{payment.id}",
            gateway_reference=payment.gateway_reference,
            amount=payment.amount_authorized,
            currency=payment.currency,
        )
    )
    retries = self.request.retries or 0
    if (result.retryable or result.is_unknown) and retries < settings.GATEWAY_MAX_RETRIES:
        raise self.retry(countdown=backoff_seconds(retries))
    payment_capture_record(
        payment_id=payment.id,
        amount=payment.amount_authorized,
        result=result,
        actor=SYSTEM,
        settle=True,
    )
