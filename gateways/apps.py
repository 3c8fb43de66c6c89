"""The ``gateways`` app: the gateway port, its registry and the sandbox gateway."""

from __future__ import annotations

from django.apps import AppConfig


class GatewaysConfig(AppConfig):
    """Registers the default sandbox gateway accounts once the app registry is ready."""

    name = "gateways"
    verbose_name = "Gateways"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from gateways.registry import gateway_names

        gateway_names()  # registers the default sandbox accounts
