"""The plain values of the gateway port."""

from __future__ import annotations

import dataclasses

import pytest

from gateways.base import ChargeRequest, GatewayResult, Outcome


@pytest.mark.parametrize(
    ("outcome", "flags"),
    [
        (Outcome.SUCCEEDED, (True, False, False, False)),
        (Outcome.DECLINED, (False, True, False, False)),
        (Outcome.RETRYABLE_ERROR, (False, False, True, False)),
        (Outcome.UNKNOWN, (False, False, False, True)),
        (Outcome.NOT_FOUND, (False, False, False, False)),
    ],
)
def test_result_flags_follow_the_outcome(
    outcome: Outcome, flags: tuple[bool, bool, bool, bool]
) -> None:
    result = GatewayResult(outcome=outcome, gateway="g", operation="authorize", reference="r")

    assert (result.succeeded, result.declined, result.retryable, result.is_unknown) == flags


def test_outcomes_are_their_lowercase_values() -> None:
    assert [str(o) for o in Outcome] == [
        "succeeded",
        "declined",
        "retryable_error",
        "not_sent",
        "unknown",
        "not_found",
    ]


def test_requests_are_frozen() -> None:
    request = ChargeRequest("att_1", "pay_1", 100, "USD", "tok_visa")

    with pytest.raises(dataclasses.FrozenInstanceError):
        request.amount = 1  # type: ignore[misc]


def test_charge_request_keeps_its_own_copy_of_metadata() -> None:
    metadata = {"order_id": "1234"}
    request = ChargeRequest("att_1", "pay_1", 100, "USD", "tok_visa", metadata=metadata)

    metadata["order_id"] = "changed"

    assert request.metadata == {"order_id": "1234"}
    assert request.capture is False
