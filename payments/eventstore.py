"""The event store's one write path: every change of a payment goes through here.

The path, as docs/ARCHITECTURE.md describes it: ``transaction.atomic()``; the payment row locked
(``Payment.objects.locked()``, ``select_for_update``); the expected version checked; the
django-fsm transition called (its source state and ``conditions`` checked); ``version += 1``;
one ``PaymentEvent`` with ``sequence = version``; one outbox row; follow-up work enqueued with
``on_commit``. ``locked`` opens the transaction and takes the lock; ``apply_transition`` (a
state change) and ``record_event`` (an event that changes no state) write inside it, both
through ``append_event``; ``payment_transition`` is the three in one call.

The rule: no other code writes a payment's ``status`` or appends its events. The commands
(``payments/services.py``) and the gateway-call path (``payments/gateway.py``) decide *what*
happens and call these; gateway calls never happen here while a row is locked: tasks call the
gateway between two short transactions. The one sanctioned exception is a repair by
``manage.py replay_events --repair`` (``payments/projections/verify.py``), which restores the
projection the events describe without adding an event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from django_fsm import can_proceed

from common.correlation import get_correlation_id
from common.isotime import iso
from common.rows import Statement, insert_statement, mark_saved, update_statement
from outbox.services import outbox_message_create

from .errors import AmountExceeded, InvalidTransition, PaymentNotFound, VersionConflict
from .hooks import notify_after_commit
from .models import STATELESS_EVENT_TYPES, UPDATE_EVENT_TYPE, Payment, PaymentEvent
from .serializers import event_payload

SYSTEM = "system"

# The fields an event may set; replaying events applies exactly these
# (payments/projections/fold.py).
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


@contextmanager
def locked(payment_id: str, *, expected_version: int | None = None) -> Iterator[Payment]:
    """Open a transaction, lock the payment and check the caller's expected version."""
    with transaction.atomic():
        try:
            # The merchant and its risk rules with it (their rows not locked: ``locked``'s
            # ``of``): routing and the risk checks read them, two queries fewer a plan.
            payment = (
                Payment.objects.locked()
                .select_related("merchant", "merchant__risk_rules")
                .get(pk=payment_id)
            )
        except Payment.DoesNotExist:
            raise PaymentNotFound(f"no such payment: {payment_id}", param="id") from None
        if expected_version is not None and payment.version != expected_version:
            raise VersionConflict(
                f"payment is at version {payment.version}, not {expected_version}"
            )
        yield payment


def _jsonable(value: Any) -> Any:
    return iso(value) if isinstance(value, datetime) else value


def append_event(
    payment: Payment,
    *,
    event_type: str,
    from_status: str,
    actor: str,
    changes: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
    insert: bool = False,
    along: Sequence[Statement] = (),
) -> PaymentEvent:
    """Bump the version, save the payment, append its event and the event's outbox row.
    ``insert``: the payment is new (not yet saved), and is inserted at its first version
    rather than inserted and then updated. ``along``: the caller's own writes of the same
    transaction (an attempt's row), sent in the same statement.

    Raises ``AmountExceeded`` before writing anything if the money invariant would break.
    """
    if not payment.money_invariant_holds():
        raise AmountExceeded(
            "amounts must satisfy 0 <= refunded <= captured <= authorized <= amount"
        )
    payment.version += 1
    if event_type != UPDATE_EVENT_TYPE:
        payment.progressed_at = timezone.now()
    # The payment, its event and the event's outbox row in one statement (issue 13).
    write = insert_statement(payment) if insert else update_statement(payment)
    event = PaymentEvent(
        payment=payment,
        livemode=payment.livemode,
        sequence=payment.version,
        type=event_type,
        from_status=from_status,
        to_status=payment.status,
        data={"changes": {k: _jsonable(v) for k, v in changes.items()}, **(data or {})},
        actor=actor,
        correlation_id=get_correlation_id(),
    )
    event_write = insert_statement(event)  # sets created_at, which the payload carries
    payload = event_payload(event)
    outbox_message_create(
        event_id=event.id,
        event_type=event.type,
        aggregate_type="payment",
        aggregate_id=payment.id,
        sequence=event.sequence,
        merchant_id=payment.merchant_id,
        payload=payload,
        along=(write, event_write, *along),
    )
    mark_saved(payment)
    mark_saved(event)
    notify_after_commit(payload)  # PAYMENT_LISTENERS, if any (payments/hooks.py)
    return event


def apply_transition(
    payment: Payment,
    transition: str,
    *,
    actor: str,
    changes: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    along: Sequence[Statement] = (),
) -> PaymentEvent:
    """Set ``changes``, run the fsm ``transition`` and record it (``along``: as
    ``append_event``). Call only inside ``locked``.

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
    return append_event(
        payment,
        event_type=f"payment.{payment.status}",
        from_status=from_status,
        actor=actor,
        changes=changes,
        data=data,
        along=along,
    )


def record_event(
    payment: Payment,
    event_type: str,
    *,
    actor: str,
    data: Mapping[str, Any] | None = None,
    along: Sequence[Statement] = (),
) -> PaymentEvent:
    """An event that changes no state (``payment.attempt_failed``, ``refund.created``).

    Raises ``ValueError`` for a type outside ``STATELESS_EVENT_TYPES``: the catalogue webhook
    endpoints subscribe from must name every event that is emitted.
    """
    if event_type not in STATELESS_EVENT_TYPES:
        raise ValueError(f"not a payment event type: {event_type}")
    return append_event(
        payment,
        event_type=event_type,
        from_status=payment.status,
        actor=actor,
        changes={},
        data=data,
        along=along,
    )


# The fields a merchant may change after creation (``POST /v1/payments/{id}``).
UPDATABLE_FIELDS = ("metadata", "description")


def apply_update(
    payment: Payment, *, actor: str, changes: Mapping[str, Any]
) -> PaymentEvent | None:
    """Set ``changes`` (``UPDATABLE_FIELDS`` only) and record ``payment.updated`` with them.
    Call only inside ``locked``. Fields whose value is already the one given are left out; when
    none is left, nothing is written and ``None`` is returned (the version stays)."""
    unknown = set(changes) - set(UPDATABLE_FIELDS)
    if unknown:
        raise ValueError(f"fields a merchant may not update: {sorted(unknown)}")
    changed = {name: value for name, value in changes.items() if getattr(payment, name) != value}
    if not changed:
        return None
    for name, value in changed.items():
        setattr(payment, name, value)
    return append_event(
        payment,
        event_type=UPDATE_EVENT_TYPE,
        from_status=payment.status,
        actor=actor,
        changes=changed,
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
    with locked(payment_id, expected_version=expected_version) as payment:
        apply_transition(payment, transition, actor=actor, changes=changes, data=data)
        if after_commit is not None:
            transaction.on_commit(after_commit)
    return payment
