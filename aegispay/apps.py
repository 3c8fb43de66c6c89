from __future__ import annotations

from django.apps import AppConfig


class AegispayConfig(AppConfig):
    name = "aegispay"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
