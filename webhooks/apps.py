from __future__ import annotations

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    label = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from outbox.registry import register_consumer

        from .services import WEBHOOKS_CONSUMER, webhook_deliveries_create

        register_consumer(WEBHOOKS_CONSUMER, webhook_deliveries_create)
