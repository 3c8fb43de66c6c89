"""``/v1/webhook_endpoints``, included under ``v1/`` by ``aegispay/urls.py`` next to payments'
URLs, so the merchant API keeps one prefix."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path(
        "webhook_endpoints",
        views.WebhookEndpointListCreateApi.as_view(),
        name="webhook-endpoints",
    ),
    path(
        "webhook_endpoints/<str:endpoint_id>",
        views.WebhookEndpointDetailApi.as_view(),
        name="webhook-endpoint-detail",
    ),
    path(
        "webhook_endpoints/<str:endpoint_id>/rotate_secret",
        views.WebhookEndpointRotateSecretApi.as_view(),
        name="webhook-endpoint-rotate-secret",
    ),
]
