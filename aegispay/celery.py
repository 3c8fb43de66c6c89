"""The Celery application. Configuration lives in settings (the ``CELERY_`` names)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aegispay.settings")

app = Celery("aegispay")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
