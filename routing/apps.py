from __future__ import annotations

from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from routing.models import GatewayConfig, MerchantRouting
        from routing.selectors import clear_cache

        def forget(**_: object) -> None:
            clear_cache()

        for model in (GatewayConfig, MerchantRouting):
            post_save.connect(
                forget, sender=model, weak=False, dispatch_uid=f"routing-{model.__name__}-save"
            )
            post_delete.connect(
                forget, sender=model, weak=False, dispatch_uid=f"routing-{model.__name__}-delete"
            )
