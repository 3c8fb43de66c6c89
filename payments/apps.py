from __future__ import annotations

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from common.partitions import register
        from outbox.registry import register_consumer

        from .partitions import AUDIT, EVENTS
        from .projections.read_models import READ_MODELS_CONSUMER, read_models_apply

        register_consumer(READ_MODELS_CONSUMER, read_models_apply)
        register(EVENTS)
        register(AUDIT)
