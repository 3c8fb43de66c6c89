"""The one base of every domain error, whichever app raises it.

An error carries what the API needs to answer it and nothing of HTTP handling itself:
``code`` (stable, machine-readable), ``status``, the ``param`` at fault if any, and whether it
is ``transient``. ``payments/api_errors.py`` turns any of them into the contract's error shape,
and ``@idempotent`` (``payments/idempotency.py``) stores it as a request's answer unless it is
transient.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of ``payments.errors.PaymentError`` and ``webhooks.errors.WebhookError``."""

    code = "domain_error"
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
