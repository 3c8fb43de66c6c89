"""A hypothesis stateful test of the payment state machine through the one transition path.

Whatever sequence of commands and amounts is tried, accepted or refused, the stored payment
keeps ``0 <= refunded <= captured <= authorized <= amount``, a refused command changes
nothing, and replaying the events in order gives exactly the stored state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from payments.errors import AmountExceeded, InvalidTransition
from payments.eventstore import TRANSITIONS, payment_transition
from payments.models import Payment
from payments.projections.payment import replay, snapshot
from tests.conftest import make_client
from tests.payments.helpers import AMOUNT, payment_in

Changes = Callable[[Payment, int], dict[str, Any]]

# How each command sets amounts: from the drawn ``n`` (which may be out of range on purpose).
CHANGES: dict[str, Changes] = {
    "start_processing": lambda p, n: {"gateway": "sandbox_a"},
    "retry_attempt": lambda p, n: {"gateway": "sandbox_b"},
    "authorize": lambda p, n: {"amount_authorized": n},
    "capture": lambda p, n: {"amount_captured": n},
    "complete": lambda p, n: {},
    "cancel": lambda p, n: {},
    "expire": lambda p, n: {},
    "fail": lambda p, n: {"failure_code": "card_declined", "failure_message": "declined"},
    "retry": lambda p, n: {"failure_code": "", "failure_message": ""},
    "initiate_refund": lambda p, n: {},
    "mark_partially_refunded": lambda p, n: {"amount_refunded": p.amount_refunded + n},
    "mark_refunded": lambda p, n: {"amount_refunded": p.amount_captured},
    "restore_completed": lambda p, n: {"amount_refunded": 0},
    "fail_refund": lambda p, n: {"failure_code": "refund_failed", "failure_message": "lost"},
}


class PaymentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.payment = payment_in(make_client().merchant, "initiated")

    def stored(self) -> Payment:
        return Payment.objects.get(pk=self.payment.pk)

    @rule(
        transition=st.sampled_from(sorted(TRANSITIONS)),
        n=st.one_of(st.integers(0, AMOUNT + 10), st.just(AMOUNT), st.integers(1, 300)),
    )
    def command(self, transition: str, n: int) -> None:
        before = snapshot(self.stored())
        try:
            payment_transition(
                payment_id=self.payment.pk,
                transition=transition,
                actor="hypothesis",
                changes=CHANGES[transition](self.stored(), n),
            )
        except (InvalidTransition, AmountExceeded):
            assert snapshot(self.stored()) == before
            return
        assert self.stored().version == before["version"] + 1

    @invariant()
    def money_invariant(self) -> None:
        p = self.stored()
        assert 0 <= p.amount_refunded <= p.amount_captured <= p.amount_authorized <= p.amount

    @invariant()
    def events_replay_to_the_stored_state(self) -> None:
        p = self.stored()
        assert replay(p.events.order_by("sequence")) == snapshot(p)


@pytest.mark.django_db
def test_state_machine_properties() -> None:
    run_state_machine_as_test(
        PaymentMachine,
        settings=settings(max_examples=40, stateful_step_count=25, deadline=None),
    )


def test_every_command_has_a_change_rule() -> None:
    assert set(CHANGES) == TRANSITIONS
