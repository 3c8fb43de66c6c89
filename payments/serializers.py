"""Serializers that describe the merchant API in the OpenAPI schema.

Input is validated by ``payments/validation.py`` (one stable code per rule); output is
rendered by ``payments/representations.py``. These classes give drf-spectacular the shapes.

The list envelopes and events have a field named ``data``. mypy reads it as overriding the
``Serializer.data`` property (``# type: ignore[assignment]`` below); it does not: DRF's
``SerializerMetaclass`` pops declared fields off the class into ``_declared_fields``, so
``.data`` stays the property and ``data`` is only the schema's field.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from .models import CaptureMethod, PaymentStatus


class PaymentMethodSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["card"])
    token = serializers.CharField(help_text="A gateway token such as tok_visa; never a card number")
    brand = serializers.CharField(read_only=True, required=False)
    last4 = serializers.CharField(read_only=True, required=False)


class CustomerSerializer(serializers.Serializer):
    id = serializers.CharField(required=False)
    email = serializers.EmailField(required=False)
    country = serializers.CharField(required=False, min_length=2, max_length=2)
    name = serializers.CharField(required=False)


class PaymentCreateInputSerializer(serializers.Serializer):
    amount = serializers.IntegerField(min_value=1, help_text="Minor units of the currency")
    currency = serializers.CharField(min_length=3, max_length=3, help_text="ISO 4217, upper case")
    payment_method = PaymentMethodSerializer()
    capture_method = serializers.ChoiceField(
        choices=CaptureMethod.choices, default=CaptureMethod.AUTOMATIC
    )
    customer = CustomerSerializer(required=False)
    description = serializers.CharField(required=False, max_length=1000)
    merchant_reference = serializers.CharField(required=False, max_length=255)
    metadata = serializers.DictField(child=serializers.CharField(max_length=500), required=False)


class FailureSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class PaymentOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField(default="payment")
    status = serializers.ChoiceField(choices=PaymentStatus.choices)
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    capture_method = serializers.ChoiceField(choices=CaptureMethod.choices)
    amount_authorized = serializers.IntegerField()
    amount_captured = serializers.IntegerField()
    amount_refunded = serializers.IntegerField()
    payment_method = PaymentMethodSerializer()
    customer = CustomerSerializer()
    description = serializers.CharField()
    merchant_reference = serializers.CharField()
    metadata = serializers.DictField(child=serializers.CharField())
    gateway = serializers.CharField(allow_null=True)
    gateway_reference = serializers.CharField(allow_null=True)
    failure = FailureSerializer(allow_null=True)
    authorization_expires_at = serializers.DateTimeField(allow_null=True)
    version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class PaymentListSerializer(serializers.Serializer):
    object = serializers.CharField(default="list")
    data = PaymentOutputSerializer(many=True)  # type: ignore[assignment]  # field, see top
    has_more = serializers.BooleanField()


class EventOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField(default="event")
    type = serializers.CharField()
    payment = serializers.CharField()
    sequence = serializers.IntegerField()
    from_status = serializers.CharField(allow_null=True)
    to_status = serializers.CharField()
    data = serializers.DictField()  # type: ignore[assignment]  # field, see top
    actor = serializers.CharField()
    created_at = serializers.DateTimeField()


class EventListSerializer(serializers.Serializer):
    object = serializers.CharField(default="list")
    data = EventOutputSerializer(many=True)  # type: ignore[assignment]  # field, see top
    has_more = serializers.BooleanField()


class ErrorDetailSerializer(serializers.Serializer):
    type = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()
    param = serializers.CharField(required=False)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class AmountInputSerializer(serializers.Serializer):
    amount = serializers.IntegerField(min_value=1, required=False)


class RefundInputSerializer(AmountInputSerializer):
    reason = serializers.CharField(required=False, max_length=500)


class RefundOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField(default="refund")
    payment = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    reason = serializers.CharField()
    status = serializers.ChoiceField(choices=["pending", "succeeded", "failed"])
    failure = FailureSerializer(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class RefundListSerializer(serializers.Serializer):
    object = serializers.CharField(default="list")
    data = RefundOutputSerializer(many=True)  # type: ignore[assignment]  # field, see top
    has_more = serializers.BooleanField()


# Shared by every merchant API view's schema (payments and webhooks).
ERROR_RESPONSES = {400: ErrorSerializer, 401: ErrorSerializer, 404: ErrorSerializer}
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, description="1-255 printable characters"
)
