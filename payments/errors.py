"""The payments app's domain errors, on ``common.errors.DomainError``. The API maps each to
one status code and error code (``payments/api_errors.py``); nothing else needs to know HTTP."""

from __future__ import annotations

from common.errors import DomainError


class PaymentError(DomainError):
    """Base of the payments errors. ``code`` is stable and machine-readable."""

    code = "payment_error"


class ValidationFailed(PaymentError):
    def __init__(self, code: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.code = code


class CardDataNotAllowed(PaymentError):
    code = "card_data_not_allowed"


class PaymentNotFound(PaymentError):
    code = "resource_missing"
    status = 404


class EventNotFound(PaymentError):
    code = "resource_missing"
    status = 404


class RefundNotFound(PaymentError):
    code = "resource_missing"
    status = 404


class InvalidTransition(PaymentError):
    code = "invalid_state_transition"
    status = 409


class VersionConflict(PaymentError):
    code = "version_conflict"
    status = 409
    transient = True


class OperationInProgress(PaymentError):
    code = "operation_in_progress"
    status = 409
    transient = True


class AmountExceeded(PaymentError):
    code = "amount_exceeded"
    status = 422


class GatewayDeclined(PaymentError):
    code = "card_declined"
    status = 402


class GatewayUnavailable(PaymentError):
    code = "gateway_unavailable"
    status = 503


class IdempotencyKeyReused(PaymentError):
    code = "idempotency_key_reused"
    status = 422


class IdempotencyKeyInUse(PaymentError):
    code = "idempotency_key_in_use"
    status = 409
    transient = True
