"""The family of domain errors. The API maps each to one status code and error code
(``payments/api_errors.py``); nothing else needs to know HTTP."""

from __future__ import annotations


class PaymentError(Exception):
    """Base of every domain error. ``code`` is stable and machine-readable."""

    code = "payment_error"
    status = 400
    param: str | None = None
    # A transient error describes a passing conflict with other work (a concurrent request, a
    # stale version), not the request itself: the same request may succeed later, so an
    # Idempotency-Key never keeps it as its answer (payments/idempotency.py).
    transient = False

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param


class ValidationFailed(PaymentError):
    def __init__(self, code: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.code = code


class CardDataNotAllowed(PaymentError):
    code = "card_data_not_allowed"


class PaymentNotFound(PaymentError):
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
