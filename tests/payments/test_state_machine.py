"""Every transition of the state machine from every state: allowed ones move the payment and
record one event and one outbox row; all others are refused and change nothing."""

from __future__ import annotations

import itertools

import pytest

from outbox.models import OutboxMessage
from payments.errors import AmountExceeded, InvalidTransition, VersionConflict
from payments.eventstore import payment_transition
from payments.models import Payment, PaymentEvent, PaymentStatus
from tests.conftest import make_client
from tests.payments.helpers import AMOUNT, PATHS, payment_in

# The design of docs/ARCHITECTURE.md, written out independently of the model.
ALLOWED = {
    "initiated": {"start_processing": "processing", "cancel": "cancelled", "fail": "failed"},
    "processing": {"authorize": "authorized", "fail": "failed", "retry_attempt": "processing"},
    "authorized": {"capture": "captured", "cancel": "cancelled", "expire": "expired"},
    "captured": {"complete": "completed", "fail": "failed"},
    "completed": {
        "initiate_refund": "refund_initiated",
        "mark_partially_refunded": "partially_refunded",
    },
    "refund_initiated": {
        "mark_refunded": "refunded",
        "mark_partially_refunded": "partially_refunded",
        "restore_completed": "completed",
        "fail_refund": "failed",
    },
    "partially_refunded": {
        "initiate_refund": "refund_initiated",
        "restore_completed": "completed",
    },
    "failed": {"retry": "initiated"},
    "cancelled": {},
    "refunded": {},
    "expired": {},
}

# Field changes that satisfy each transition's conditions where its source state is right.
CHANGES = {
    "start_processing": {"gateway": "sandbox_a"},
    "retry_attempt": {"gateway": "sandbox_b"},
    "authorize": {"amount_authorized": AMOUNT},
    "capture": {"amount_captured": 600},
    "complete": {},
    "cancel": {},
    "expire": {},
    "fail": {"failure_code": "processing_error", "failure_message": "failed"},
    "retry": {"failure_code": "", "failure_message": ""},
    "initiate_refund": {},
    "mark_partially_refunded": {"amount_refunded": 100},
    "mark_refunded": {"amount_refunded": AMOUNT},
    "restore_completed": {"amount_refunded": 0},
    "fail_refund": {"failure_code": "refund_failed", "failure_message": "funds lost"},
}

ALLOWED_CASES = [(s, t, target) for s, moves in ALLOWED.items() for t, target in moves.items()]
REFUSED_CASES = [(s, t) for s, t in itertools.product(ALLOWED, CHANGES) if t not in ALLOWED[s]]


def test_the_tables_cover_every_state_and_transition() -> None:
    assert set(ALLOWED) == set(PATHS) == set(PaymentStatus.values)
    assert set(CHANGES) == set(Payment._meta.get_field("status").transitions[Payment])
    assert len(ALLOWED_CASES) + len(REFUSED_CASES) == 11 * 14


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "transition", "target"), ALLOWED_CASES)
def test_allowed_transition(source: str, transition: str, target: str) -> None:
    payment = payment_in(make_client().merchant, source)
    after = payment_transition(
        payment_id=payment.id, transition=transition, actor="test", changes=CHANGES[transition]
    )
    stored = Payment.objects.get(pk=payment.id)
    event = PaymentEvent.objects.get(payment=payment, sequence=stored.version)
    assert (stored.status, after.status) == (target, target)
    assert stored.version == payment.version + 1
    assert (event.type, event.from_status, event.to_status) == (
        f"payment.{target}",
        source,
        target,
    )
    assert OutboxMessage.objects.get(event_id=event.id).sequence == stored.version


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "transition"), REFUSED_CASES)
def test_refused_transition_changes_nothing(source: str, transition: str) -> None:
    payment = payment_in(make_client().merchant, source)
    with pytest.raises(InvalidTransition, match=f"is {source}"):
        payment_transition(
            payment_id=payment.id, transition=transition, actor="test", changes=CHANGES[transition]
        )
    stored = Payment.objects.get(pk=payment.id)
    assert (stored.status, stored.version) == (source, payment.version)
    assert PaymentEvent.objects.filter(payment=payment).count() == payment.version
    assert OutboxMessage.objects.filter(aggregate_id=payment.id).count() == payment.version


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("source", "transition", "changes"),
    [
        ("processing", "authorize", {"amount_authorized": 0}),
        ("processing", "authorize", {"amount_authorized": AMOUNT + 1}),
        ("authorized", "capture", {"amount_captured": 0}),
        ("initiated", "start_processing", {}),
        ("completed", "mark_partially_refunded", {"amount_refunded": AMOUNT}),
        ("refund_initiated", "mark_refunded", {"amount_refunded": 100}),
        ("initiated", "fail", {}),
        ("failed", "retry", {}),
    ],
)
def test_a_failed_condition_refuses_the_transition(
    source: str, transition: str, changes: dict
) -> None:
    payment = payment_in(make_client().merchant, source)
    with pytest.raises(InvalidTransition):
        payment_transition(
            payment_id=payment.id, transition=transition, actor="test", changes=changes
        )
    assert Payment.objects.get(pk=payment.id).version == payment.version


@pytest.mark.django_db
def test_capturing_more_than_authorized_is_refused() -> None:
    payment = payment_in(make_client().merchant, "authorized")
    with pytest.raises(InvalidTransition):
        payment_transition(
            payment_id=payment.id,
            transition="capture",
            actor="test",
            changes={"amount_captured": AMOUNT + 1},
        )
    assert Payment.objects.get(pk=payment.id).amount_captured == 0


@pytest.mark.django_db
def test_changes_that_break_the_money_invariant_are_refused() -> None:
    payment = payment_in(make_client().merchant, "captured")
    with pytest.raises(AmountExceeded):
        payment_transition(
            payment_id=payment.id,
            transition="complete",
            actor="test",
            changes={"amount_refunded": AMOUNT + 5},
        )
    assert Payment.objects.get(pk=payment.id).status == "captured"


@pytest.mark.django_db
def test_expected_version_mismatch_is_a_conflict() -> None:
    payment = payment_in(make_client().merchant, "authorized")
    with pytest.raises(VersionConflict):
        payment_transition(
            payment_id=payment.id,
            transition="cancel",
            actor="test",
            expected_version=payment.version - 1,
        )
    after = payment_transition(
        payment_id=payment.id, transition="cancel", actor="test", expected_version=payment.version
    )
    assert (after.status, after.version) == ("cancelled", payment.version + 1)


@pytest.mark.django_db
def test_status_cannot_be_assigned_directly() -> None:
    payment = payment_in(make_client().merchant, "initiated")
    with pytest.raises(AttributeError, match="Direct status modification is not allowed"):
        payment.status = "completed"
