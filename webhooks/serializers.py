"""Serializers that describe the webhook endpoints API in the OpenAPI schema.

Input is validated by ``webhooks/views.py`` and the services; output is rendered by
``webhooks/views.py``. These classes give drf-spectacular the shapes. The list envelope's
``data`` field is only the schema's field, not ``Serializer.data`` (see
``payments/serializers.py``).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class WebhookEndpointCreateInputSerializer(serializers.Serializer[Any]):
    url = serializers.CharField(
        max_length=2048, help_text="https only; must not resolve to a private address"
    )
    events = serializers.ListField(
        child=serializers.CharField(),
        min_length=1,
        help_text="'*', 'payment.*', 'refund.*' or event types such as 'payment.captured'",
    )


class WebhookEndpointOutputSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    object = serializers.CharField(default="webhook_endpoint")
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    status = serializers.ChoiceField(choices=["enabled", "disabled"])
    created_at = serializers.DateTimeField()


class WebhookEndpointCreatedSerializer(WebhookEndpointOutputSerializer):
    secret = serializers.CharField(
        help_text="whsec_…: signs every delivery; shown in this answer only"
    )


class WebhookEndpointListSerializer(serializers.Serializer[Any]):
    object = serializers.CharField(default="list")
    data = WebhookEndpointOutputSerializer(many=True)  # type: ignore[assignment]  # field, see top
    has_more = serializers.BooleanField()
