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
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_fsm import can_proceed

from common.correlation import get_correlation_id
from outbox.services import outbox_message_create
from routing.router import PaymentFacts

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
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    PaymentStatus,
    Refund,
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
            payment = Payment.objects.locked().get(pk=payment_id)
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


def _refund_data(refund: Refund) -> dict[str, Any]:
    return {"refund": refund.id, "amount": refund.amount, "status": refund.status}
