"""The webhook errors: ``DomainError``s like the payments ones, so the API renders them with
their own status and stable code (``payments/api_errors.py``)."""

from __future__ import annotations

from common.errors import DomainError


class WebhookError(DomainError):
    """Base of the webhook errors. ``code`` is stable and machine-readable; the API answers
    a missing endpoint 404 and every other webhook error 400 (``payments/api_errors.py``)."""

    code = "webhook_error"


class WebhookUrlInvalid(WebhookError):
    code = "url_invalid"
    param = "url"


class WebhookUrlNotAllowed(WebhookError):
    code = "url_not_allowed"
    param = "url"


class WebhookEventsInvalid(WebhookError):
    code = "events_invalid"
    param = "events"


class WebhookNotFound(WebhookError):
    code = "resource_missing"
    status = 404
    param = "id"
