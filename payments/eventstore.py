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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from django_fsm import can_proceed

from common.correlation import get_correlation_id
from common.isotime import iso
from common.rows import Compiled, Statement, insert_statement, mark_saved, update_statement
from outbox.services import outbox_messages_create
from outbox.types import OutboxEvent

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


# The merchant and its risk rules with it (their rows not locked: ``locked``'s ``of``): routing
# and the risk checks read them, two queries fewer a plan. Compiled once per process: taken
# three times a payment, the query's compilation was half its CPU (issue 13).
_LOCK: Compiled[Payment] = Compiled(
    lambda pk: (
        Payment.objects.locked().select_related("merchant", "merchant__risk_rules").filter(pk=pk)
    )
)


@contextmanager
def locked(payment_id: str, *, expected_version: int | None = None) -> Iterator[Payment]:
    """Open a transaction, lock the payment and check the caller's expected version."""
    with transaction.atomic():
        try:
            payment = _LOCK.get(payment_id)
        except Payment.DoesNotExist:
            raise PaymentNotFound(f"no such payment: {payment_id}", param="id") from None
        if expected_version is not None and payment.version != expected_version:
            raise VersionConflict(
                f"payment is at version {payment.version}, not {expected_version}"
            )
        yield payment


def _jsonable(value: Any) -> Any:
    return iso(value) if isinstance(value, datetime) else value


def _stage(
    payment: Payment,
    *,
    event_type: str,
    from_status: str,
    actor: str,
    changes: Mapping[str, Any],
    data: Mapping[str, Any] | None,
) -> PaymentEvent:
    """Bump the version and make the event of the change just set on ``payment`` (not yet
    written). Raises ``AmountExceeded`` if the money invariant would break."""
    if not payment.money_invariant_holds():
        raise AmountExceeded(
            "amounts must satisfy 0 <= refunded <= captured <= authorized <= amount"
        )
    payment.version += 1
    if event_type != UPDATE_EVENT_TYPE:
        payment.progressed_at = timezone.now()
    return PaymentEvent(
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


def _write(
    payment: Payment,
    events: Sequence[PaymentEvent],
    *,
    insert: bool,
    along: Sequence[Statement],
) -> None:
    """The payment as it now is, its staged events and their outbox rows in one statement
    (issue 13), with the caller's ``along``."""
    write = insert_statement(payment) if insert else update_statement(payment)
    event_writes = [insert_statement(event) for event in events]  # sets created_at
    payloads = [event_payload(event) for event in events]  # which the payload carries
    outbox_messages_create(
        [
            OutboxEvent(
                event_id=event.id,
                event_type=event.type,
                aggregate_type="payment",
                aggregate_id=payment.id,
                sequence=event.sequence,
                merchant_id=payment.merchant_id,
                payload=payload,
            )
            for event, payload in zip(events, payloads, strict=True)
        ],
        along=(write, *event_writes, *along),
    )
    mark_saved(payment)
    for event, payload in zip(events, payloads, strict=True):
        mark_saved(event)
        notify_after_commit(payload)  # PAYMENT_LISTENERS, if any (payments/hooks.py)


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
    event = _stage(
        payment,
        event_type=event_type,
        from_status=from_status,
        actor=actor,
        changes=changes,
        data=data,
    )
    _write(payment, [event], insert=insert, along=along)
    return event


@dataclass(frozen=True, slots=True)
class Step:
    """One transition of ``apply_transitions``: the fsm method's name, the fields it sets
    (``PROJECTED_FIELDS``) and its event's extra data."""

    transition: str
    changes: Mapping[str, Any] | None = None
    data: Mapping[str, Any] | None = None


def apply_transitions(
    payment: Payment,
    steps: Sequence[Step],
    *,
    actor: str,
    along: Sequence[Statement] = (),
) -> list[PaymentEvent]:
    """Run ``steps`` in order, each an fsm transition with its event, and write them
    together: one UPDATE of the payment (as it is after the last), the events and their
    outbox rows in one statement (an automatic capture: ``captured``, then ``completed``).
    ``along``: as ``append_event``. Call only inside ``locked``.

    Raises ``InvalidTransition`` when the state machine refuses a step (wrong source state or
    a failed condition), and ``AmountExceeded``, before anything is written; the enclosing
    transaction then rolls back whatever was set.
    """
    events = []
    for step in steps:
        if step.transition not in TRANSITIONS:
            raise ValueError(f"not a payment transition: {step.transition}")
        changes = dict(step.changes or {})
        unknown = set(changes) - set(PROJECTED_FIELDS)
        if unknown:
            raise ValueError(f"fields outside the projection: {sorted(unknown)}")
        for name, value in changes.items():
            setattr(payment, name, value)
        method = getattr(payment, step.transition)
        from_status = payment.status
        if not can_proceed(method):
            raise InvalidTransition(
                f"cannot {step.transition.replace('_', ' ')} a payment that is {from_status}"
            )
        method()
        events.append(
            _stage(
                payment,
                event_type=f"payment.{payment.status}",
                from_status=from_status,
                actor=actor,
                changes=changes,
                data=step.data,
            )
        )
    _write(payment, events, insert=False, along=along)
    return events


def apply_transition(
    payment: Payment,
    transition: str,
    *,
    actor: str,
    changes: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    along: Sequence[Statement] = (),
) -> PaymentEvent:
    """Set ``changes``, run the fsm ``transition`` and record it (``apply_transitions`` of
    one step). Call only inside ``locked``.

    Raises ``InvalidTransition`` when the state machine refuses (wrong source state or a
    failed condition); the enclosing transaction then rolls back whatever was set.
    """
    return apply_transitions(payment, [Step(transition, changes, data)], actor=actor, along=along)[
        0
    ]


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
