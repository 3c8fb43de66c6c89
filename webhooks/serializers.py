"""The webhook endpoints API's shapes, each described once: these serializers validate the
input, render the output and give drf-spectacular the OpenAPI schema. Errors become the
contract's ``ValidationFailed`` in ``payments/api_errors.py`` (``validation_failed``), as for
payments. The list envelope's ``data`` field is only a field, not ``Serializer.data`` (see
``payments/serializers.py``).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.fields import empty

from payments.serializers import ConstantField, IsoDateTimeField, OverlapField, StrictSerializer


class _CheckedByTheService:
    """A value passed on as sent: what a URL or an event pattern may be is the service's rule
    (``webhook_url_validate``, which resolves the host, and ``webhook_events_validate``), which
    every caller of ``webhook_endpoint_create`` gets. The field describes it in the schema."""

    def run_validation(self, data: Any = empty) -> Any:
        if data is empty:
            return super().run_validation(data)  # type: ignore[misc]  # required: missing
        return data


class UrlField(_CheckedByTheService, serializers.CharField):
    pass


class EventsField(_CheckedByTheService, serializers.ListField):
    pass


class WebhookEndpointCreateInputSerializer(StrictSerializer):
    url = UrlField(max_length=2048, help_text="https only; must not resolve to a private address")
    events = EventsField(
        child=serializers.CharField(),
        min_length=1,
        help_text="'*', 'payment.*', 'refund.*' or event types such as 'payment.captured'",
    )


class WebhookSecretRotateInputSerializer(StrictSerializer):
    expires_in = OverlapField("seconds the old secret goes on signing beside the new one")


class AsStoredListField(serializers.ListField):
    """A JSON list passed through as stored."""

    def to_representation(self, data: Any) -> Any:
        return data


class WebhookEndpointOutputSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    object = ConstantField("webhook_endpoint")
    url = serializers.CharField()
    events = AsStoredListField(child=serializers.CharField())
    status = serializers.ChoiceField(choices=["enabled", "disabled"])
    livemode = serializers.BooleanField()
    created_at = IsoDateTimeField()


class WebhookEndpointCreatedSerializer(WebhookEndpointOutputSerializer):
    # The create answer: the endpoint and, this once, its signing secret.

    secret = serializers.CharField(
        help_text="whsec_…: signs every delivery; shown in this answer only"
    )


class WebhookEndpointListSerializer(serializers.Serializer[Any]):
    # Renders ``{"data": [endpoints], "has_more": bool}``.

    object = ConstantField("list")
    data = WebhookEndpointOutputSerializer(many=True)  # type: ignore[assignment]  # field, see top
    has_more = serializers.BooleanField()
