"""The commands on payments: create, capture, cancel, expire, settle, retry, update, refund.

Each command checks what it may do under the payment's row lock and changes the payment only
through the event store's one write path (``payments/eventstore.py``: ``locked``, then
``apply_transition`` or ``record_event``), so the state, the version, the event and the outbox
row commit together. Gateway calls never happen here while a row is locked: the commands
queue a task after commit, and the task calls the gateway between two short transactions
(``payments/gateway.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from common.correlation import get_correlation_id
from common.rows import Compiled, insert

from .errors import AmountExceeded, InvalidTransition, OperationInProgress, ValidationFailed
from .eventstore import (
    PROJECTED_FIELDS,
    SYSTEM,
    append_event,
    apply_transition,
    apply_update,
    locked,
    record_event,
)
from .hooks import guard_command
from .models import (
    OPEN_ATTEMPT_STATUSES,
    AttemptOperation,
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentStatus,
    Refund,
)

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
    livemode: bool = False,
) -> Payment:
    """Create a payment in ``initiated`` with its first event, and queue its processing.
    ``livemode``: made with a live key (it then never routes to a sandbox) or a test key.

    The caller validated the input (``PaymentCreateInputSerializer``). The payment, its
    ``payment.initiated`` event and the outbox row commit together; the processing task is
    sent only after that commit.

    Inside a caller's transaction (the Idempotency-Key's) it takes no savepoint of its own: it
    raises nothing after its first write but database errors, on which the caller's whole
    transaction rolls back anyway (issue 13: two round trips fewer per create).
    """
    with transaction.atomic(savepoint=False):
        payment = Payment(
            merchant=merchant,
            amount=amount,
            currency=currency,
            capture_method=capture_method,
            payment_method=dict(payment_method),
            customer=dict(customer or {}),
            description=description,
            merchant_reference=merchant_reference,
            metadata=dict(metadata or {}),
            livemode=livemode,
        )
        initial = {name: getattr(payment, name) for name in PROJECTED_FIELDS}
        append_event(
            payment,
            event_type="payment.initiated",
            from_status="",
            actor=actor,
            changes=initial,
            insert=True,
        )
        _send_after_commit("payment_process", payment.id)
    return payment


# A payment's last attempt number and how many of its attempts are open, in one query compiled
# once per process (common/rows.py; issue 13); no row when it has no attempt.
_ATTEMPT_COUNTS: Compiled[PaymentAttempt] = Compiled(
    lambda payment_id: (
        PaymentAttempt.objects.filter(payment_id=payment_id)
        .order_by()
        .values("payment_id")
        .annotate(last=Max("number"), open=Count("pk", filter=Q(status__in=OPEN_ATTEMPT_STATUSES)))
        .values_list("last", "open")
    )
)


def _open_attempt(
    payment: Payment, *, operation: str, amount: int, **fields: Any
) -> PaymentAttempt:
    """Create a pending attempt; refuses while another attempt of the payment is open. One
    query reads both whether one is open and the last attempt's number."""
    last, open_ = next(iter(_ATTEMPT_COUNTS.rows(payment.id)), (None, 0))
    if open_:
        raise OperationInProgress("another gateway operation on this payment is in progress")
    attempt = _new_attempt(
        payment, number=(last or 0) + 1, operation=operation, amount=amount, **fields
    )
    insert(attempt)
    return attempt


def _new_attempt(
    payment: Payment, *, number: int, operation: str, amount: int, **fields: Any
) -> PaymentAttempt:
    """The attempt numbered ``number``, not yet written: for a caller under the payment's lock
    that knows the number and that no attempt is open (``_open_attempt`` reads both). The
    unique (payment, number) index and the partial unique index on the open attempt refuse
    the row if it is wrong."""
    return PaymentAttempt(
        payment=payment,
        number=number,
        operation=operation,
        gateway=fields.pop("gateway", payment.gateway),
        amount=amount,
        currency=payment.currency,
        **fields,
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
    with locked(payment_id, expected_version=expected_version) as payment:
        guard_command("capture", payment)  # PAYMENT_GUARDS (payments/hooks.py)
        if payment.status != PaymentStatus.AUTHORIZED:
            raise InvalidTransition(f"cannot capture a payment that is {payment.status}")
        amount = payment.amount_authorized if amount is None else amount
        if amount > payment.amount_authorized:
            raise AmountExceeded(
                f"amount may be at most the authorized {payment.amount_authorized}",
                param="amount",
            )
        attempt = _open_attempt(payment, operation=AttemptOperation.CAPTURE, amount=amount)
        record_event(
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
    with locked(payment_id, expected_version=expected_version) as payment:
        guard_command("cancel", payment)  # PAYMENT_GUARDS (payments/hooks.py)
        if payment.status == PaymentStatus.INITIATED:
            apply_transition(payment, "cancel", actor=actor)
        elif payment.status == PaymentStatus.AUTHORIZED:
            attempt = _open_attempt(
                payment, operation=AttemptOperation.VOID, amount=payment.amount_authorized
            )
            record_event(
                payment, "payment.cancel_requested", actor=actor, data={"attempt": attempt.id}
            )
            _send_after_commit("payment_operation_execute", attempt.id)
        else:
            raise InvalidTransition(f"cannot cancel a payment that is {payment.status}")
    return payment


def payment_expire(*, payment_id: str) -> Payment | None:
    """``authorized -> expired`` for an authorisation past its window, then void it at the
    gateway (best effort: the gateway lets it lapse anyway). ``None`` if not due any more."""
    with locked(payment_id) as payment:
        due = (
            payment.status == PaymentStatus.AUTHORIZED
            and payment.authorization_expires_at is not None
            and payment.authorization_expires_at <= timezone.now()
            and not payment.attempts.filter(status__in=OPEN_ATTEMPT_STATUSES).exists()
        )
        if not due:
            return None
        apply_transition(payment, "expire", actor=SYSTEM)
        attempt = _open_attempt(
            payment, operation=AttemptOperation.VOID, amount=payment.amount_authorized
        )
        _send_after_commit("payment_operation_execute", attempt.id)
    return payment


def payment_settle(*, payment_id: str) -> Payment | None:
    """``captured -> completed`` once the capture is older than ``SETTLEMENT_DELAY_SECONDS``."""
    cutoff = timezone.now() - timedelta(seconds=settings.SETTLEMENT_DELAY_SECONDS)
    with locked(payment_id) as payment:
        if payment.status != PaymentStatus.CAPTURED or payment.progressed_at > cutoff:
            return None
        apply_transition(payment, "complete", actor=SYSTEM)
    return payment


def payment_retry(*, payment_id: str, actor: str, expected_version: int | None = None) -> Payment:
    """Manual retry: ``failed -> initiated`` and processing again with a new attempt.

    Only for a payment that holds no funds (nothing authorised or captured), so a retry can
    never charge twice. Raises ``InvalidTransition`` otherwise.
    """
    with locked(payment_id, expected_version=expected_version) as payment:
        guard_command("retry", payment)  # PAYMENT_GUARDS (payments/hooks.py)
        apply_transition(
            payment, "retry", actor=actor, changes={"failure_code": "", "failure_message": ""}
        )
        _send_after_commit("payment_process", payment.id)
    return payment


# --- a merchant's own fields ---


def payment_update(
    *,
    payment_id: str,
    actor: str,
    metadata: Mapping[str, str] | None = None,
    description: str | None = None,
    expected_version: int | None = None,
) -> Payment:
    """Change the merchant's own fields of a payment, in any state: ``metadata`` is merged
    into what is stored (a key sent with ``""`` is removed), ``description`` replaced. Records
    ``payment.updated`` with the new values; when nothing changes, nothing is written.

    Raises ``ValidationFailed`` (``metadata_invalid``) when the merged metadata would hold more
    than ``METADATA_MAX_KEYS`` keys; ``VersionConflict`` and ``PaymentNotFound`` as any command.
    """
    with locked(payment_id, expected_version=expected_version) as payment:
        guard_command("update", payment)  # PAYMENT_GUARDS (payments/hooks.py)
        changes: dict[str, Any] = {}
        if metadata:
            merged = {**payment.metadata, **metadata}
            merged = {key: value for key, value in merged.items() if value != ""}
            if len(merged) > settings.METADATA_MAX_KEYS:
                raise ValidationFailed(
                    "metadata_invalid",
                    f"metadata may have at most {settings.METADATA_MAX_KEYS} keys",
                    param="metadata",
                )
            changes["metadata"] = merged
        if description is not None:
            changes["description"] = description
        apply_update(payment, actor=actor, changes=changes)
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
    with locked(payment_id, expected_version=expected_version) as payment:
        guard_command("refund", payment)  # PAYMENT_GUARDS (payments/hooks.py)
        if payment.status not in (PaymentStatus.COMPLETED, PaymentStatus.PARTIALLY_REFUNDED):
            raise InvalidTransition(f"cannot refund a payment that is {payment.status}")
        refundable = payment.amount_captured - payment.amount_refunded
        amount = refundable if amount is None else amount
        if amount > refundable:
            raise AmountExceeded(
                f"amount may be at most the {refundable} not yet refunded", param="amount"
            )
        refund = Refund.objects.create(
            payment=payment,
            livemode=payment.livemode,
            amount=amount,
            currency=payment.currency,
            reason=reason,
        )
        record_event(payment, "refund.created", actor=actor, data=_refund_data(refund))
        apply_transition(payment, "initiate_refund", actor=actor, data={"refund": refund.id})
        _send_after_commit("refund_execute", refund.id)
    return refund


def _refund_data(refund: Refund) -> dict[str, Any]:
    return {"refund": refund.id, "amount": refund.amount, "status": refund.status}
