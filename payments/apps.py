from __future__ import annotations

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Celery autodiscovers payments.tasks only; this module holds the idempotency purge.
        from . import idempotency_tasks  # noqa: F401
