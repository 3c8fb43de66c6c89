"""The webhook endpoints API's shapes, each described once: these serializers validate the
input, render the output and give drf-spectacular the OpenAPI schema. Errors become the
contract's ``ValidationFailed`` in ``payments/api_errors.py`` (``validation_failed``), as for
payments. The list envelope's ``data`` field is only a field, not ``Serializer.data`` (see
``payments/serializers.py``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from payments.models import EVENT_TYPES
from payments.serializers import ConstantField, IsoDateTimeField, OverlapField, StrictSerializer

from .events import _MAX_PATTERNS as MAX_PATTERNS  # the service's bound, described
from .events import WILDCARDS


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


# The syntax webhook_url_validate accepts (webhooks/url_guard.py), as a schema pattern: a scheme
# in any case, a host of printable ASCII (no "/?#@[]:"), a port from 1 to 65535 (leading zeros
# read as Python's urlsplit reads them; an empty one is the default), then anything printable.
# Whether the host resolves to a public address is checked at the call, not described. Hosts
# the guard also takes but the pattern leaves out: IPv6 literals in brackets and non-ASCII names.
_PORT = (
    r"0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
_HOST = r'[!-"$-.0-9;->A-Z\\^-~]+'


def webhook_url_pattern() -> str:
    """The pattern for ``url``: https only, or http too where ``WEBHOOK_ALLOW_PRIVATE_URLS``."""
    scheme = "[Hh][Tt][Tt][Pp][Ss]" + ("?" if settings.WEBHOOK_ALLOW_PRIVATE_URLS else "")
    return rf"^{scheme}://{_HOST}(?::(?:{_PORT})?)?(?:[/?#][!-~]*)?$"


# drf-spectacular's extension base registers subclasses in an untyped __init_subclass__.
class UrlFieldSchema(OpenApiSerializerFieldExtension):  # type: ignore[no-untyped-call]
    """``UrlField``'s schema, with the pattern of this server's settings (read when the schema is
    made, not when this module is imported)."""

    target_class = UrlField

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {"type": "string", "pattern": webhook_url_pattern()}


@extend_schema_field({"type": "string", "enum": sorted(EVENT_TYPES | WILDCARDS)})
class EventPatternField(serializers.CharField):
    """An entry of ``events`` (``webhook_events_validate``), which the schema shows as an enum."""


class EventsField(_CheckedByTheService, serializers.ListField):
    pass


class WebhookEndpointCreateInputSerializer(StrictSerializer):
    url = UrlField(max_length=2048, help_text="https only; must not resolve to a private address")
    events = EventsField(
        child=EventPatternField(),
        min_length=1,
        max_length=MAX_PATTERNS,
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

    # Not required: an idempotent replay answers the endpoint as it is now, without it.
    secret = serializers.CharField(
        required=False,
        help_text="whsec_…: signs every delivery; in the first answer only, never in a replay",
    )


class WebhookEndpointListSerializer(serializers.Serializer[Any]):
    # Renders ``{"data": [endpoints], "has_more": bool}``.

    object = ConstantField("list")
    data = WebhookEndpointOutputSerializer(many=True)  # type: ignore[assignment]  # field, see top
    has_more = serializers.BooleanField()
