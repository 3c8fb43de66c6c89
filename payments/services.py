"""Every write to payments. One path changes a payment: ``_apply`` inside ``_locked``.

The path, as ARCHITECTURE.md describes it: ``transaction.atomic()``; the payment row locked with
``select_for_update``; the expected version checked; the django-fsm transition called (its
source state and ``conditions`` checked); ``version += 1``; one ``PaymentEvent`` with
``sequence = version``; one outbox row; follow-up work enqueued with ``on_commit``.
Gateway calls never happen here while a row is locked: tasks call the gateway between two
short transactions.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_fsm import can_proceed

from aegispay.correlation import get_correlation_id
from gateways.base import GatewayResult, Outcome
from outbox.services import outbox_message_create
from routing.router import route

from .errors import AmountExceeded, InvalidTransition, PaymentNotFound, VersionConflict
from .models import (
    ApiKey,
    AttemptStatus,
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    PaymentStatus,
)
from .representations import event_to_dict, iso

SYSTEM = "system"

# The fields an event may set; replaying events applies exactly these (payments/projection.py).
PROJECTED_FIELDS = (
    "amount",
    "currency",
    "capture_method",
    "amount_authorized",
    "amount_captured",
    "amount_refunded",
    "payment_method",
    "customer",
    "description",
    "merchant_reference",
    "metadata",
    "gateway",
    "gateway_reference",
    "failure_code",
    "failure_message",
    "authorization_expires_at",
)

# Transition method name -> event type is ``payment.<target status>``; these are the commands.
TRANSITIONS = frozenset(
    {
        "start_processing",
        "retry_attempt",
        "authorize",
        "capture",
        "complete",
        "cancel",
        "expire",
        "fail",
        "retry",
        "initiate_refund",
        "mark_partially_refunded",
        "mark_refunded",
        "restore_completed",
        "fail_refund",
    }
)


# --- merchants and keys ---


def hash_api_key(raw_key: str) -> str:
    """The stored form of a key. Keys carry 256 random bits, so a plain SHA-256 is enough."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(*, merchant: Merchant, live: bool = False) -> tuple[ApiKey, str]:
    """Make a key for ``merchant``; returns the row and the raw key, which is never stored."""
    raw = f"sk_{'live' if live else 'test'}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        merchant=merchant, key_hash=hash_api_key(raw), prefix=raw[:12], live=live
    )
    return key, raw


@transaction.atomic
def merchant_create(*, name: str, gateways: list[str] | None = None) -> tuple[Merchant, str]:
    """Create a merchant with one test API key; returns the merchant and the raw key."""
    merchant = Merchant.objects.create(
        name=name, gateways=list(gateways if gateways is not None else ["sandbox_a", "sandbox_b"])
    )
    _key, raw = api_key_create(merchant=merchant)
    return merchant, raw


# --- the one transition path ---


@contextmanager
def _locked(payment_id: str, *, expected_version: int | None = None) -> Iterator[Payment]:
    """Open a transaction, lock the payment and check the caller's expected version."""
    with transaction.atomic():
        try:
            payment = Payment.objects.select_for_update(of=("self",)).get(pk=payment_id)
        except Payment.DoesNotExist:
            raise PaymentNotFound(f"no such payment: {payment_id}", param="id") from None
        if expected_version is not None and payment.version != expected_version:
            raise VersionConflict(
                f"payment is at version {payment.version}, not {expected_version}"
            )
        yield payment


def _jsonable(value: Any) -> Any:
    return iso(value) if isinstance(value, datetime) else value


def _append_event(
    payment: Payment,
    *,
    event_type: str,
    from_status: str,
    actor: str,
    changes: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
) -> PaymentEvent:
    """Bump the version, save the payment, append its event and the event's outbox row.

    Raises ``AmountExceeded`` before writing anything if the money invariant would break.
    """
    if not payment.money_invariant_holds():
        raise AmountExceeded(
            "amounts must satisfy 0 <= refunded <= captured <= authorized <= amount"
        )
    payment.version += 1
    payment.save()
    event = PaymentEvent.objects.create(
        payment=payment,
        sequence=payment.version,
        type=event_type,
        from_status=from_status,
        to_status=payment.status,
        data={"changes": {k: _jsonable(v) for k, v in changes.items()}, **(data or {})},
        actor=actor,
        correlation_id=get_correlation_id(),
    )
    outbox_message_create(
        event_id=event.id,
        event_type=event.type,
        aggregate_type="payment",
        aggregate_id=payment.id,
        sequence=event.sequence,
        merchant_id=payment.merchant_id,
        payload=event_to_dict(event),
    )
    return event


def _apply(
    payment: Payment,
    transition: str,
    *,
    actor: str,
    changes: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> PaymentEvent:
    """Set ``changes``, run the fsm ``transition`` and record it. Call only inside ``_locked``.

    Raises ``InvalidTransition`` when the state machine refuses (wrong source state or a
    failed condition); the enclosing transaction then rolls back whatever was set.
    """
    if transition not in TRANSITIONS:
        raise ValueError(f"not a payment transition: {transition}")
    changes = dict(changes or {})
    unknown = set(changes) - set(PROJECTED_FIELDS)
    if unknown:
        raise ValueError(f"fields outside the projection: {sorted(unknown)}")
    for name, value in changes.items():
        setattr(payment, name, value)
    method = getattr(payment, transition)
    from_status = payment.status
    if not can_proceed(method):
        raise InvalidTransition(
            f"cannot {transition.replace('_', ' ')} a payment that is {from_status}"
        )
    method()
    return _append_event(
        payment,
        event_type=f"payment.{payment.status}",
        from_status=from_status,
        actor=actor,
        changes=changes,
        data=data,
    )


def _record(
    payment: Payment, event_type: str, *, actor: str, data: Mapping[str, Any] | None = None
) -> PaymentEvent:
    """An event that changes no state (``payment.attempt_failed``, ``refund.created``)."""
    return _append_event(
        payment,
        event_type=event_type,
        from_status=payment.status,
        actor=actor,
        changes={},
        data=data,
    )


def payment_transition(
    *,
    payment_id: str,
    transition: str,
    actor: str,
    changes: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    expected_version: int | None = None,
    after_commit: Callable[[], None] | None = None,
) -> Payment:
    """Run one transition through the one path and return the payment as committed.

    Locks the payment row for the transaction. Raises ``PaymentNotFound``,
    ``VersionConflict`` (``expected_version`` differs) or ``InvalidTransition``; on any of
    them nothing is written. ``after_commit`` runs only if the transaction commits.
    """
    with _locked(payment_id, expected_version=expected_version) as payment:
        _apply(payment, transition, actor=actor, changes=changes, data=data)
        if after_commit is not None:
            transaction.on_commit(after_commit)
    return payment


# --- creating and processing payments ---


def _enqueue_processing(payment_id: str) -> Callable[[], None]:
    def send() -> None:
        from .tasks import payment_process

        payment_process.delay(payment_id, get_correlation_id())

    return send


def payment_create(
    *,
    merchant: Merchant,
    amount: int,
    currency: str,
    payment_method: Mapping[str, Any],
    actor: str,
    capture_method: str = "automatic",
    customer: Mapping[str, Any] | None = None,
    description: str = "",
    merchant_reference: str = "",
    metadata: Mapping[str, str] | None = None,
) -> Payment:
    """Create a payment in ``initiated`` with its first event, and queue its processing.

    The caller validated the input (``payments/validation.py``). The payment, its
    ``payment.initiated`` event and the outbox row commit together; the processing task is
    sent only after that commit.
    """
    with transaction.atomic():
        payment = Payment.objects.create(
            merchant=merchant,
            amount=amount,
            currency=currency,
            capture_method=capture_method,
            payment_method=dict(payment_method),
            customer=dict(customer or {}),
            description=description,
            merchant_reference=merchant_reference,
            metadata=dict(metadata or {}),
        )
        initial = {name: getattr(payment, name) for name in PROJECTED_FIELDS}
        _append_event(
            payment,
            event_type="payment.initiated",
            from_status="",
            actor=actor,
            changes=initial,
        )
        transaction.on_commit(_enqueue_processing(payment.id))
    return payment


@dataclass(frozen=True, slots=True)
class AttemptPlan:
    """What a worker must send to a gateway, committed before the call is made."""

    payment_id: str
    attempt_id: str
    gateway: str
    amount: int
    currency: str
    token: str
    capture_method: str
    resume: bool  # an earlier call with this reference may have reached the gateway


def _plan(payment: Payment, attempt: PaymentAttempt, *, resume: bool) -> AttemptPlan:
    return AttemptPlan(
        payment_id=payment.id,
        attempt_id=attempt.id,
        gateway=attempt.gateway,
        amount=attempt.amount,
        currency=attempt.currency,
        token=str(payment.payment_method.get("token", "")),
        capture_method=payment.capture_method,
        resume=resume,
    )


def payment_attempt_begin(*, payment_id: str) -> AttemptPlan | None:
    """Commit the next gateway attempt of a payment, or say where an unfinished one stands.

    * ``initiated``: choose a gateway, create attempt 1 (``pending``) and move to
      ``processing``.
    * ``processing`` whose last attempt is ``pending`` or ``unknown`` (a worker died, an answer
      was lost): the same attempt again with ``resume=True``; its reference is the gateway's
      idempotency key, so resending it never charges twice.
    * ``processing`` whose last attempt erred without charging: a new attempt on the next
      gateway in order, or the first again when none is left (``retry_attempt``).
    * any other state: ``None``; the work was done already (tasks are redelivered).

    Fails the payment with ``no_gateway_available`` when the merchant has no usable gateway.
    """
    with _locked(payment_id) as payment:
        last = payment.attempts.order_by("-number").first()
        if payment.status == PaymentStatus.PROCESSING and last is not None:
            if last.status in (AttemptStatus.PENDING, AttemptStatus.UNKNOWN):
                return _plan(payment, last, resume=True)
            if last.status != AttemptStatus.ERROR:
                return None
        elif payment.status != PaymentStatus.INITIATED:
            return None

        tried = set(payment.attempts.values_list("gateway", flat=True))
        decision = route(configured=payment.merchant.gateways, exclude=tried)
        if not decision.gateways:
            # Every gateway was tried once: go round again in the merchant's order.
            decision = route(configured=payment.merchant.gateways)
        if not decision.gateways:
            _apply(
                payment,
                "fail",
                actor=SYSTEM,
                changes={
                    "failure_code": "no_gateway_available",
                    "failure_message": "the merchant has no gateway that can take this payment",
                },
                data={"routing": decision.as_dict()},
            )
            return None
        gateway = decision.gateways[0]
        attempt = PaymentAttempt.objects.create(
            payment=payment,
            number=(last.number + 1) if last else 1,
            gateway=gateway,
            amount=payment.amount,
            currency=payment.currency,
            routing_decision=decision.as_dict(),
        )
        transition = (
            "start_processing" if payment.status == PaymentStatus.INITIATED else ("retry_attempt")
        )
        _apply(
            payment,
            transition,
            actor=SYSTEM,
            changes={"gateway": gateway},
            data={"attempt": attempt.id, "gateway": gateway, "routing": decision.as_dict()},
        )
        return _plan(payment, attempt, resume=False)


def _finish_attempt(attempt: PaymentAttempt, result: GatewayResult, status: str) -> None:
    attempt.status = status
    attempt.gateway_reference = result.gateway_reference or ""
    attempt.error_code = result.decline_code or ""
    attempt.error_message = result.message[:500]
    attempt.latency_ms = result.latency_ms
    attempt.completed_at = timezone.now()
    attempt.save()


def _attempt_data(attempt: PaymentAttempt, result: GatewayResult) -> dict[str, Any]:
    return {
        "attempt": attempt.id,
        "gateway": attempt.gateway,
        "outcome": str(result.outcome),
        "code": result.decline_code,
        "latency_ms": result.latency_ms,
    }


def payment_attempt_record(
    *, attempt_id: str, result: GatewayResult, final: bool = False
) -> Payment:
    """Record a gateway's answer to an authorize attempt, with the transition it implies.

    ``succeeded`` -> ``authorized``; ``declined`` -> ``failed`` with the decline code;
    ``retryable_error`` -> the attempt is marked ``error`` (``payment.attempt_failed``), or
    with ``final`` the payment fails with that code; ``unknown`` -> the attempt is marked
    ``unknown`` and the payment stays ``processing`` until a lookup settles it.
    Idempotent: an attempt already recorded is left alone and the payment returned as it is.
    """
    attempt = PaymentAttempt.objects.select_related("payment").get(pk=attempt_id)
    with _locked(attempt.payment_id) as payment:
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.status not in (AttemptStatus.PENDING, AttemptStatus.UNKNOWN):
            return payment
        data = _attempt_data(attempt, result)
        if result.outcome == Outcome.SUCCEEDED:
            _finish_attempt(attempt, result, AttemptStatus.SUCCEEDED)
            method = dict(payment.payment_method)
            method.update(
                {k: v for k, v in (("brand", result.brand), ("last4", result.last4)) if v}
            )
            expires = timezone.now() + timedelta(hours=settings.AUTHORIZATION_EXPIRY_HOURS)
            _apply(
                payment,
                "authorize",
                actor=SYSTEM,
                changes={
                    "amount_authorized": result.amount or attempt.amount,
                    "gateway": attempt.gateway,
                    "gateway_reference": result.gateway_reference or "",
                    "payment_method": method,
                    "authorization_expires_at": expires,
                },
                data=data,
            )
            if payment.capture_method == "automatic":
                transaction.on_commit(_enqueue_capture(payment.id))
        elif result.outcome == Outcome.DECLINED or (final and result.retryable):
            _finish_attempt(
                attempt,
                result,
                AttemptStatus.DECLINED
                if result.outcome == Outcome.DECLINED
                else AttemptStatus.ERROR,
            )
            _apply(
                payment,
                "fail",
                actor=SYSTEM,
                changes={
                    "failure_code": result.decline_code or "processing_error",
                    "failure_message": result.message or "the gateway refused the payment",
                },
                data=data,
            )
        elif result.outcome == Outcome.RETRYABLE_ERROR:
            _finish_attempt(attempt, result, AttemptStatus.ERROR)
            _record(payment, "payment.attempt_failed", actor=SYSTEM, data=data)
        else:
            # UNKNOWN or NOT_FOUND from a lookup: the charge may exist; never charge elsewhere.
            if attempt.status != AttemptStatus.UNKNOWN:
                _finish_attempt(attempt, result, AttemptStatus.UNKNOWN)
                _record(payment, "payment.attempt_failed", actor=SYSTEM, data=data)
    return payment


def _enqueue_capture(payment_id: str) -> Callable[[], None]:
    def send() -> None:
        from .tasks import payment_capture_automatic

        payment_capture_automatic.delay(payment_id, get_correlation_id())

    return send


def payment_capture_record(
    *, payment_id: str, amount: int, result: GatewayResult, actor: str, settle: bool
) -> Payment:
    """Record a gateway capture: ``authorized -> captured`` (and ``-> completed`` with ``settle``).

    A capture the gateway refused leaves the payment ``authorized`` and records a
    ``payment.attempt_failed`` event with the gateway's code. Idempotent: a payment already
    ``captured`` or ``completed`` is returned unchanged. Raises ``InvalidTransition`` for any
    other state.
    """
    with _locked(payment_id) as payment:
        if payment.status != PaymentStatus.AUTHORIZED:
            if payment.status in (PaymentStatus.CAPTURED, PaymentStatus.COMPLETED):
                return payment  # recorded already: a redelivered task
            raise InvalidTransition(f"cannot capture a payment that is {payment.status}")
        data = {
            "operation": "capture",
            "outcome": str(result.outcome),
            "code": result.decline_code,
            "latency_ms": result.latency_ms,
        }
        if not result.succeeded:
            _record(payment, "payment.attempt_failed", actor=actor, data=data)
            return payment
        _apply(payment, "capture", actor=actor, changes={"amount_captured": amount}, data=data)
        if settle:
            _apply(payment, "complete", actor=actor)
    return payment
