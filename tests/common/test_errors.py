"""The one domain error base (common/errors.py), the families on it, and how the API renders
any of them."""

from __future__ import annotations

import pytest

from common.errors import DomainError
from payments.api_errors import exception_handler
from payments.errors import (
    IdempotencyKeyInUse,
    OperationInProgress,
    PaymentError,
    PaymentNotFound,
    ValidationFailed,
    VersionConflict,
)
from webhooks.errors import (
    WebhookError,
    WebhookEventsInvalid,
    WebhookNotFound,
    WebhookUrlInvalid,
    WebhookUrlNotAllowed,
)


class Refused(DomainError):
    code = "refused"
    status = 409
    param = "amount"


def test_an_error_keeps_its_message_and_the_class_param_unless_given_one() -> None:
    default = Refused("no")
    given = Refused("no", param="currency")

    assert (str(default), default.message, default.param) == ("no", "no", "amount")
    assert (given.message, given.param) == ("no", "currency")
    assert Refused.param == "amount"


def test_the_base_is_a_final_400_without_a_param() -> None:
    error = DomainError("bad")

    assert (error.code, error.status, error.param, error.transient) == (
        "domain_error",
        400,
        None,
        False,
    )


@pytest.mark.parametrize("family", [PaymentError, WebhookError])
def test_both_families_share_the_base_and_its_init(family: type[DomainError]) -> None:
    error = family("bad", param="x")

    assert isinstance(error, DomainError)
    assert family.__init__ is DomainError.__init__
    assert (error.message, error.param, error.status, error.transient) == ("bad", "x", 400, False)


@pytest.mark.parametrize(
    ("error", "status", "code", "param"),
    [
        (WebhookUrlInvalid("url must be https"), 400, "url_invalid", "url"),
        (WebhookUrlNotAllowed("private address"), 400, "url_not_allowed", "url"),
        (WebhookEventsInvalid("unknown event"), 400, "events_invalid", "events"),
        (WebhookNotFound("no such webhook endpoint: we_1"), 404, "resource_missing", "id"),
        (PaymentNotFound("no such payment: pay_1", param="id"), 404, "resource_missing", "id"),
        (
            ValidationFailed("parameter_invalid", "bad", param="limit"),
            400,
            "parameter_invalid",
            "limit",
        ),
    ],
)
def test_the_api_renders_any_domain_error_by_its_own_status_code_and_param(
    error: DomainError, status: int, code: str, param: str
) -> None:
    response = exception_handler(error, {})

    assert response.status_code == status
    assert response.data == {
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": error.message,
            "param": param,
        }
    }


@pytest.mark.parametrize("error", [VersionConflict, OperationInProgress, IdempotencyKeyInUse])
def test_only_the_passing_conflicts_are_transient(error: type[PaymentError]) -> None:
    assert (error.transient, PaymentError.transient, WebhookError.transient) == (
        True,
        False,
        False,
    )
