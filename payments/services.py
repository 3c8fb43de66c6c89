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
from routing.router import PaymentFacts, route

from .errors import (
    AmountExceeded,
    InvalidTransition,
    OperationInProgress,
    PaymentNotFound,
    VersionConflict,
)
from .models import (
    OPEN_ATTEMPT_STATUSES,
    ApiKey,
    AttemptOperation,
    AttemptStatus,
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    PaymentStatus,
    Refund,
    RefundStatus,
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


def _send_after_commit(task_name: str, *args: str) -> None:
    """Send a payments task once the current transaction commits (never before)."""

    def send() -> None:
        from . import tasks

        getattr(tasks, task_name).delay(*args, get_correlation_id())

    transaction.on_commit(send)


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
        _send_after_commit("payment_process", payment.id)
    return payment


@dataclass(frozen=True, slots=True)
class AttemptPlan:
    """What a worker must send to a gateway, committed before the call is made."""

    payment_id: str
    attempt_id: str
    operation: str
    gateway: str
    amount: int
    currency: str
    token: str
    gateway_reference: str
    resume: bool  # an earlier call with this reference may have reached the gateway
    first_attempt_at: datetime


def _plan(payment: Payment, attempt: PaymentAttempt, *, resume: bool) -> AttemptPlan:
    first = (
        payment.attempts.filter(operation=attempt.operation)
        .order_by("number")
        .values_list("created_at", flat=True)
        .first()
    )
    return AttemptPlan(
        payment_id=payment.id,
        attempt_id=attempt.id,
        operation=attempt.operation,
        gateway=attempt.gateway,
        amount=attempt.amount,
        currency=attempt.currency,
        token=str(payment.payment_method.get("token", "")),
        gateway_reference=payment.gateway_reference,
        resume=resume,
        first_attempt_at=first or attempt.created_at,
    )


def _next_number(payment: Payment) -> int:
    last = payment.attempts.order_by("-number").values_list("number", flat=True).first()
    return (last or 0) + 1


def _open_attempt(
    payment: Payment, *, operation: str, amount: int, **fields: Any
) -> PaymentAttempt:
    """Create a pending attempt; refuses while another attempt of the payment is open."""
    if payment.attempts.filter(status__in=OPEN_ATTEMPT_STATUSES).exists():
        raise OperationInProgress("another gateway operation on this payment is in progress")
    return PaymentAttempt.objects.create(
        payment=payment,
        number=_next_number(payment),
        operation=operation,
        gateway=fields.pop("gateway", payment.gateway),
        amount=amount,
        currency=payment.currency,
        **fields,
    )


def payment_attempt_begin(
    *, payment_id: str, available: Callable[[str], bool] | None = None
) -> AttemptPlan | None:
    """Commit the next authorize attempt of a payment, or say where an unfinished one stands.

    * ``initiated``: choose a gateway, create an attempt (``pending``), move to ``processing``.
    * ``processing`` whose last attempt is ``pending`` or ``unknown`` (a worker died, an answer
      was lost): that attempt again with ``resume=True``; its reference is the gateway's
      idempotency key, so resending it never charges twice.
    * ``processing`` whose last attempt erred without charging: a new attempt on the next
      gateway in the merchant's order (``retry_attempt``): the fallback.
    * any other state: ``None``; the work was done already (tasks are redelivered).

    ``available`` says whether a gateway can take a call now (breaker, bulkhead). Fails the
    payment with ``no_gateway_available`` when no gateway can take it.
    """
    with _locked(payment_id) as payment:
        last = (
            payment.attempts.filter(operation=AttemptOperation.AUTHORIZE)
            .order_by("-number")
            .first()
        )
        if payment.status == PaymentStatus.PROCESSING and last is not None:
            if last.status in OPEN_ATTEMPT_STATUSES:
                return _plan(payment, last, resume=True)
            if last.status != AttemptStatus.ERROR:
                return None
        elif payment.status != PaymentStatus.INITIATED:
            return None
        after = last.gateway if payment.status == PaymentStatus.PROCESSING and last else None
        decision = route(
            facts=payment_facts(payment),
            merchant_gateways=payment.merchant.gateways,
            after=after,
            available=available,
        )
        if not decision.gateways:
            _apply(
                payment,
                "fail",
                actor=SYSTEM,
                changes={
                    "failure_code": "no_gateway_available",
                    "failure_message": "no gateway of the merchant can take this payment now",
                },
                data={"routing": decision.as_dict()},
            )
            return None
        gateway = decision.gateways[0]
        attempt = _open_attempt(
            payment,
            operation=AttemptOperation.AUTHORIZE,
            amount=payment.amount,
            gateway=gateway,
            routing_decision=decision.as_dict(),
        )
        transition = (
            "start_processing" if payment.status == PaymentStatus.INITIATED else "retry_attempt"
        )
        _apply(
            payment,
            transition,
            actor=SYSTEM,
            changes={"gateway": gateway},
            data={"attempt": attempt.id, "gateway": gateway, "routing": decision.as_dict()},
        )
        return _plan(payment, attempt, resume=False)


def payment_facts(payment: Payment) -> PaymentFacts:
    """What the router may know of a payment (plain values; routing never sees the model)."""
    return PaymentFacts(
        payment_id=payment.id,
        merchant_id=payment.merchant_id,
        amount=payment.amount,
        currency=payment.currency,
        method=str(payment.payment_method.get("type", "card")),
        country=str(payment.customer.get("country", "")),
        metadata=dict(payment.metadata),
    )


def _finish_attempt(attempt: PaymentAttempt, result: GatewayResult, status: str) -> None:
    attempt.status = status
    attempt.gateway_reference = result.gateway_reference or attempt.gateway_reference
    attempt.error_code = result.decline_code or ""
    attempt.error_message = result.message[:500]
    attempt.latency_ms = result.latency_ms
    attempt.completed_at = timezone.now() if status not in OPEN_ATTEMPT_STATUSES else None
    attempt.save()


def _attempt_data(attempt: PaymentAttempt, result: GatewayResult) -> dict[str, Any]:
    return {
        "attempt": attempt.id,
        "operation": attempt.operation,
        "gateway": attempt.gateway,
        "outcome": str(result.outcome),
        "code": result.decline_code,
        "latency_ms": result.latency_ms,
    }


def payment_attempt_record(
    *, attempt_id: str, result: GatewayResult, final: bool = False
) -> Payment:
    """Record a gateway's answer to an authorize attempt, with the transition it implies.

    ``succeeded`` -> ``authorized`` (and, for automatic capture, a capture attempt opened and
    queued); ``declined`` -> ``failed`` with the decline code; ``retryable_error`` -> the
    attempt is marked ``error`` (``payment.attempt_failed``), or with ``final`` the payment
    fails with that code; ``unknown`` -> the attempt is marked ``unknown`` and the payment
    stays ``processing`` until a lookup settles it. Idempotent: an attempt already closed is
    left alone and the payment returned as it is.
    """
    payment_id = PaymentAttempt.objects.values_list("payment_id", flat=True).get(pk=attempt_id)
    with _locked(payment_id) as payment:
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.status not in OPEN_ATTEMPT_STATUSES:
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
                capture = _open_attempt(
                    payment, operation=AttemptOperation.CAPTURE, amount=payment.amount_authorized
                )
                _send_after_commit("payment_operation_execute", capture.id)
        elif result.outcome == Outcome.DECLINED or (final and result.retryable):
            declined = result.outcome == Outcome.DECLINED
            _finish_attempt(
                attempt, result, AttemptStatus.DECLINED if declined else AttemptStatus.ERROR
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
        elif attempt.status != AttemptStatus.UNKNOWN:
            # UNKNOWN, or NOT_FOUND from a lookup: the charge may exist; never charge elsewhere.
            _finish_attempt(attempt, result, AttemptStatus.UNKNOWN)
            _record(payment, "payment.attempt_failed", actor=SYSTEM, data=data)
    return payment


# --- capture, cancel, expiry, settlement, manual retry ---


def payment_capture(
    *,
    payment_id: str,
    actor: str,
    amount: int | None = None,
    expected_version: int | None = None,
) -> Payment:
    """Ask the gateway to capture ``amount`` (default: all) of an ``authorized`` payment.

    Commits a capture attempt and ``payment.capture_requested`` (who asked, for how much) and
    queues its gateway call; the payment becomes ``captured`` when the gateway confirms.
    Raises ``InvalidTransition`` unless ``authorized``, ``AmountExceeded`` above
    ``amount_authorized``, ``OperationInProgress`` while another gateway operation (a capture
    or a void) is open, so racing captures capture once.
    """
    with _locked(payment_id, expected_version=expected_version) as payment:
        if payment.status != PaymentStatus.AUTHORIZED:
            raise InvalidTransition(f"cannot capture a payment that is {payment.status}")
        amount = payment.amount_authorized if amount is None else amount
        if amount > payment.amount_authorized:
            raise AmountExceeded(
                f"amount may be at most the authorized {payment.amount_authorized}",
                param="amount",
            )
        attempt = _open_attempt(payment, operation=AttemptOperation.CAPTURE, amount=amount)
        _record(
            payment,
            "payment.capture_requested",
            actor=actor,
            data={"attempt": attempt.id, "amount": amount},
        )
        _send_after_commit("payment_operation_execute", attempt.id)
    return payment


def payment_cancel(*, payment_id: str, actor: str, expected_version: int | None = None) -> Payment:
    """Cancel a payment: at once when ``initiated``; by voiding at the gateway when ``authorized``.

    A void runs in a Celery task; the payment becomes ``cancelled`` when the gateway confirms.
    Raises ``InvalidTransition`` in any other state and ``OperationInProgress`` while another
    gateway operation is open.
    """
    with _locked(payment_id, expected_version=expected_version) as payment:
        if payment.status == PaymentStatus.INITIATED:
            _apply(payment, "cancel", actor=actor)
        elif payment.status == PaymentStatus.AUTHORIZED:
            attempt = _open_attempt(
                payment, operation=AttemptOperation.VOID, amount=payment.amount_authorized
            )
            _record(payment, "payment.cancel_requested", actor=actor, data={"attempt": attempt.id})
            _send_after_commit("payment_operation_execute", attempt.id)
        else:
            raise InvalidTransition(f"cannot cancel a payment that is {payment.status}")
    return payment


def payment_operation_plan(*, attempt_id: str) -> AttemptPlan | None:
    """The capture or void attempt to send, or ``None`` when it is closed already."""
    attempt = PaymentAttempt.objects.select_related("payment").get(pk=attempt_id)
    if attempt.status not in OPEN_ATTEMPT_STATUSES:
        return None
    return _plan(attempt.payment, attempt, resume=attempt.status == AttemptStatus.UNKNOWN)


def payment_operation_record(*, attempt_id: str, result: GatewayResult) -> Payment:
    """Record the answer to a capture or void attempt, with the transition it implies.

    Capture succeeded: ``authorized -> captured`` (and at once ``-> completed`` for automatic
    capture; manual captures are settled by beat). Void succeeded: ``authorized -> cancelled``
    (an expired payment stays expired). A refusal closes the attempt and records
    ``payment.attempt_failed``; the payment keeps its state. Retryable and unknown answers keep
    the attempt open, also past the retry bound: a capture or void that is owed is sent again
    with the same reference (by the task, then by the reconciler) until the gateway answers.
    Idempotent: a closed attempt is left alone.
    """
    payment_id = PaymentAttempt.objects.values_list("payment_id", flat=True).get(pk=attempt_id)
    with _locked(payment_id) as payment:
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.status not in OPEN_ATTEMPT_STATUSES:
            return payment
        data = _attempt_data(attempt, result)
        if result.succeeded:
            _finish_attempt(attempt, result, AttemptStatus.SUCCEEDED)
            if attempt.operation == AttemptOperation.CAPTURE:
                _apply(
                    payment,
                    "capture",
                    actor=SYSTEM,
                    changes={"amount_captured": attempt.amount},
                    data=data,
                )
                if payment.capture_method == "automatic":
                    _apply(payment, "complete", actor=SYSTEM)
            elif payment.status == PaymentStatus.AUTHORIZED:
                _apply(payment, "cancel", actor=SYSTEM, data=data)
            else:
                _record(payment, "payment.voided", actor=SYSTEM, data=data)
        elif result.declined:
            _finish_attempt(attempt, result, AttemptStatus.DECLINED)
            _record(payment, "payment.attempt_failed", actor=SYSTEM, data=data)
        else:
            # Not refused: a capture or void that is owed stays open, whatever the retry count,
            # and the reconciler sends the same reference again until the gateway answers.
            status = AttemptStatus.UNKNOWN if result.is_unknown else AttemptStatus.PENDING
            _finish_attempt(attempt, result, status)
    return payment


def payment_expire(*, payment_id: str) -> Payment | None:
    """``authorized -> expired`` for an authorisation past its window, then void it at the
    gateway (best effort: the gateway lets it lapse anyway). ``None`` if not due any more."""
    with _locked(payment_id) as payment:
        due = (
            payment.status == PaymentStatus.AUTHORIZED
            and payment.authorization_expires_at is not None
            and payment.authorization_expires_at <= timezone.now()
            and not payment.attempts.filter(status__in=OPEN_ATTEMPT_STATUSES).exists()
        )
        if not due:
            return None
        _apply(payment, "expire", actor=SYSTEM)
        attempt = _open_attempt(
            payment, operation=AttemptOperation.VOID, amount=payment.amount_authorized
        )
        _send_after_commit("payment_operation_execute", attempt.id)
    return payment


def payment_settle(*, payment_id: str) -> Payment | None:
    """``captured -> completed`` once the capture is older than ``SETTLEMENT_DELAY_SECONDS``."""
    cutoff = timezone.now() - timedelta(seconds=settings.SETTLEMENT_DELAY_SECONDS)
    with _locked(payment_id) as payment:
        if payment.status != PaymentStatus.CAPTURED or payment.updated_at > cutoff:
            return None
        _apply(payment, "complete", actor=SYSTEM)
    return payment


def payment_retry(*, payment_id: str, actor: str, expected_version: int | None = None) -> Payment:
    """Manual retry: ``failed -> initiated`` and processing again with a new attempt.

    Only for a payment that holds no funds (nothing authorised or captured), so a retry can
    never charge twice. Raises ``InvalidTransition`` otherwise.
    """
    with _locked(payment_id, expected_version=expected_version) as payment:
        _apply(payment, "retry", actor=actor, changes={"failure_code": "", "failure_message": ""})
        _send_after_commit("payment_process", payment.id)
    return payment


# --- refunds ---


def refund_create(
    *,
    payment_id: str,
    actor: str,
    amount: int | None = None,
    reason: str = "",
    expected_version: int | None = None,
) -> Refund:
    """Start a refund of ``amount`` (default: all that is left) of a captured payment.

    Under the payment's row lock: the payment must be ``completed`` or ``partially_refunded``
    (so one refund at a time is in flight) and the amount at most captured minus refunded, so
    racing refund requests can never refund more than was captured. Commits the refund
    (``pending``), ``refund.created`` and ``refund_initiated``; the gateway call is queued.
    """
    with _locked(payment_id, expected_version=expected_version) as payment:
        if payment.status not in (PaymentStatus.COMPLETED, PaymentStatus.PARTIALLY_REFUNDED):
            raise InvalidTransition(f"cannot refund a payment that is {payment.status}")
        refundable = payment.amount_captured - payment.amount_refunded
        amount = refundable if amount is None else amount
        if amount > refundable:
            raise AmountExceeded(
                f"amount may be at most the {refundable} not yet refunded", param="amount"
            )
        refund = Refund.objects.create(
            payment=payment, amount=amount, currency=payment.currency, reason=reason
        )
        _record(payment, "refund.created", actor=actor, data=_refund_data(refund))
        _apply(payment, "initiate_refund", actor=actor, data={"refund": refund.id})
        _send_after_commit("refund_execute", refund.id)
    return refund


def _refund_data(refund: Refund, result: GatewayResult | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"refund": refund.id, "amount": refund.amount, "status": refund.status}
    if result is not None:
        data.update(outcome=str(result.outcome), code=result.decline_code)
    return data


def refund_record(*, refund_id: str, result: GatewayResult, final: bool = False) -> Refund:
    """Record the gateway's answer to a refund, with the payment transition it implies.

    Succeeded: ``amount_refunded`` grows and the payment becomes ``refunded`` or
    ``partially_refunded``. Refused, or a retryable error (known not refunded) with ``final``:
    the refund fails and the payment goes back to ``completed`` or ``partially_refunded`` (the
    money is still captured). An unknown outcome never fails a refund (it may have happened):
    the refund stays ``pending`` and is sent again with the same reference.
    Idempotent: a refund no longer pending is left alone.
    """
    payment_id = Refund.objects.values_list("payment_id", flat=True).get(pk=refund_id)
    with _locked(payment_id) as payment:
        refund = Refund.objects.select_for_update().get(pk=refund_id)
        if refund.status != RefundStatus.PENDING:
            return refund
        if result.succeeded:
            refund.status = RefundStatus.SUCCEEDED
            refund.gateway_reference = result.gateway_reference or ""
            refund.save()
            refunded = payment.amount_refunded + refund.amount
            _record(payment, "refund.succeeded", actor=SYSTEM, data=_refund_data(refund, result))
            transition = (
                "mark_refunded"
                if refunded == payment.amount_captured
                else "mark_partially_refunded"
            )
            _apply(payment, transition, actor=SYSTEM, changes={"amount_refunded": refunded})
        elif result.declined or (final and result.retryable):
            refund.status = RefundStatus.FAILED
            refund.failure_code = result.decline_code or "refund_failed"
            refund.save()
            _record(payment, "refund.failed", actor=SYSTEM, data=_refund_data(refund, result))
            transition = (
                "restore_completed" if payment.amount_refunded == 0 else ("mark_partially_refunded")
            )
            _apply(payment, transition, actor=SYSTEM, data={"refund": refund.id})
    return refund
