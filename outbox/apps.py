from __future__ import annotations

from django.apps import AppConfig


class OutboxConfig(AppConfig):
    name = "outbox"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .registry import register_consumer
        from .webhooks import WEBHOOKS_CONSUMER, webhook_deliveries_create

        register_consumer(WEBHOOKS_CONSUMER, webhook_deliveries_create)
