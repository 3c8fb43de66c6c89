"""System checks for settings that only work in a certain order.

A gateway call must time out before the task's soft limit, the soft limit must come before the
hard one, the payment lock must outlive a gateway call, and the broker's visibility timeout must
exceed every retry countdown (or a delayed task is delivered twice)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def timeouts_are_ordered(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors = []
    gateway = settings.GATEWAY_TIMEOUT_SECONDS
    soft, hard = settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    if not gateway < soft < hard:
        errors.append(
            Error(
                f"need GATEWAY_TIMEOUT_SECONDS ({gateway}) < CELERY_TASK_SOFT_TIME_LIMIT "
                f"({soft}) < CELERY_TASK_TIME_LIMIT ({hard})",
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
