from __future__ import annotations

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from common.partitions import register
        from outbox.registry import register_consumer

        from .models import ApiKey, Merchant
        from .partitions import AUDIT, EVENTS
        from .projections.read_models import READ_MODELS_CONSUMER, read_models_apply

        # Every process forgets the API keys it kept when a key or a merchant changes.
        for model in (ApiKey, Merchant):
            for signal in (post_save, post_delete):
                signal.connect(_keys_changed, sender=model)

        register_consumer(READ_MODELS_CONSUMER, read_models_apply)
        register(EVENTS)
        register(AUDIT)


def _keys_changed(**_: object) -> None:
    from .authentication import keys_changed

    keys_changed()
