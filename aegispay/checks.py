"""System checks for settings that only work in a certain order.

One run of the gateway-call path (a lookup, the send and a lookup, each up to the gateway
timeout) must end before the task's soft limit, the soft limit must come before the hard one,
and the broker's visibility timeout must exceed every retry countdown (or a delayed task is
delivered twice). The payment lock is sized from the same worst case (payments/locks.py)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from payments.locks import CALLS_PER_RUN


@register()
def timeouts_are_ordered(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors = []
    run = CALLS_PER_RUN * settings.GATEWAY_TIMEOUT_SECONDS
    soft, hard = settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    if not run < soft < hard:
        errors.append(
            Error(
                f"need {CALLS_PER_RUN} x GATEWAY_TIMEOUT_SECONDS ({run}) < "
                f"CELERY_TASK_SOFT_TIME_LIMIT ({soft}) < CELERY_TASK_TIME_LIMIT ({hard})",
                id="aegispay.E001",
            )
        )
    if visibility <= max(settings.GATEWAY_RETRY_MAX_SECONDS, hard):
        errors.append(
            Error(
                f"CELERY_VISIBILITY_TIMEOUT ({visibility}) must exceed every retry countdown "
                f"and the task time limit",
                id="aegispay.E002",
            )
        )
    return errors
