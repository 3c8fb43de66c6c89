"""The reference for ``make bench-api``: a bare Django REST framework app doing the writes that
``POST /v1/payments`` does, and nothing else, on AegisPay's own tables.

    gunicorn -k gthread -w 2 --threads 8 bench.reference_app:application

Served by gunicorn with the same worker class, workers and threads as AegisPay, on the same
database (``DATABASE_URL``, ``DATABASE_NAME``), with persistent connections
(``CONN_MAX_AGE``: what any production Django app sets). Per request:

- ``POST /v1/payments``: the API key looked up by its SHA-256 (with its merchant); the body
  validated by a DRF serializer; one transaction inserting the payment, its first event and the
  event's outbox row; the payment rendered by a serializer (201);
- ``GET /v1/payments/{id}``: the key looked up; the merchant's payment read and rendered.

It keeps no idempotency keys, rate limits, consumer marks, task queue or middleware: the floor
that AegisPay's create and read are measured against. Nothing here is imported by AegisPay.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid

import django
import environ
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY=secrets.token_urlsafe(50),
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"],
    MIDDLEWARE=[],
    DATABASES={
        "default": {
            **environ.Env.db_url_config(os.environ["DATABASE_URL"]),
            "NAME": os.environ["DATABASE_NAME"],
            "CONN_MAX_AGE": int(os.environ.get("REFERENCE_CONN_MAX_AGE", "600")),
        }
    },
    USE_TZ=True,
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    REST_FRAMEWORK={
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
        "UNAUTHENTICATED_USER": None,
    },
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import models, transaction  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework import authentication, exceptions, serializers, status  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402


class Key(models.Model):  # noqa: DJ008 - the bare reference: no more than the writes need
    id = models.CharField(primary_key=True, max_length=40)
    merchant_id = models.CharField(max_length=40)
    key_hash = models.CharField(max_length=64)
    revoked_at = models.DateTimeField(null=True)

    class Meta:
        app_label = "reference"
        managed = False
        db_table = "payments_apikey"


class Payment(models.Model):  # noqa: DJ008 - the bare reference: no more than the writes need
    id = models.CharField(primary_key=True, max_length=40)
    merchant_id = models.CharField(max_length=40)
    status = models.CharField(max_length=32, default="initiated")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    capture_method = models.CharField(max_length=10, default="automatic")
    amount_authorized = models.BigIntegerField(default=0)
    amount_captured = models.BigIntegerField(default=0)
    amount_refunded = models.BigIntegerField(default=0)
    payment_method = models.JSONField(default=dict)
    customer = models.JSONField(default=dict)
    description = models.CharField(max_length=1000, default="")
    merchant_reference = models.CharField(max_length=255, default="")
    metadata = models.JSONField(default=dict)
    gateway = models.CharField(max_length=64, default="")
    gateway_reference = models.CharField(max_length=255, default="")
    failure_code = models.CharField(max_length=64, default="")
    failure_message = models.CharField(max_length=500, default="")
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "reference"
        managed = False
        db_table = "payments_payment"


class Event(models.Model):  # noqa: DJ008 - the bare reference: no more than the writes need
    id = models.CharField(primary_key=True, max_length=40)
    payment = models.ForeignKey(Payment, on_delete=models.DO_NOTHING)
    sequence = models.PositiveIntegerField()
    type = models.CharField(max_length=64)
    from_status = models.CharField(max_length=32, default="")
    to_status = models.CharField(max_length=32)
    data = models.JSONField(default=dict)
    actor = models.CharField(max_length=200)
    correlation_id = models.CharField(max_length=64, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "reference"
        managed = False
        db_table = "payments_paymentevent"


class Outbox(models.Model):  # noqa: DJ008 - the bare reference: no more than the writes need
    event_id = models.CharField(max_length=40)
    event_type = models.CharField(max_length=64)
    aggregate_type = models.CharField(max_length=32)
    aggregate_id = models.CharField(max_length=40)
    sequence = models.PositiveIntegerField()
    merchant_id = models.CharField(max_length=40)
    payload = models.JSONField()
    state = models.CharField(max_length=16, default="pending")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "reference"
        managed = False
        db_table = "outbox_outboxmessage"


class Caller:
    is_authenticated = True

    def __init__(self, merchant_id: str) -> None:
        self.merchant_id = merchant_id


class KeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):  # type: ignore[no-untyped-def]
        scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
        key = Key.objects.filter(
            key_hash=hashlib.sha256(raw.encode()).hexdigest(), revoked_at__isnull=True
        ).first()
        if scheme != "Bearer" or key is None:
            raise exceptions.AuthenticationFailed("invalid API key")
        return Caller(key.merchant_id), key


class PaymentMethodIn(serializers.Serializer):
    type = serializers.ChoiceField(choices=["card"])
    token = serializers.CharField(max_length=255)


class PaymentIn(serializers.Serializer):
    amount = serializers.IntegerField(min_value=1, max_value=10**12)
    currency = serializers.RegexField(r"^[A-Z]{3}$")
    payment_method = PaymentMethodIn()
    capture_method = serializers.ChoiceField(["automatic", "manual"], default="automatic")
    description = serializers.CharField(max_length=1000, default="", allow_blank=True)
    metadata = serializers.DictField(child=serializers.CharField(), default=dict)


class PaymentOut(serializers.ModelSerializer):
    class Meta:
        model = Payment
        fields = (
            "id",
            "status",
            "amount",
            "currency",
            "capture_method",
            "amount_authorized",
            "amount_captured",
            "amount_refunded",
            "description",
            "metadata",
            "version",
            "created_at",
            "updated_at",
        )


class PaymentsView(APIView):
    authentication_classes = (KeyAuthentication,)

    def post(self, request):  # type: ignore[no-untyped-def]
        body = PaymentIn(data=request.data)
        body.is_valid(raise_exception=True)
        merchant_id = request.user.merchant_id
        with transaction.atomic():
            payment = Payment.objects.create(
                id=f"pay_{uuid.uuid4().hex}", merchant_id=merchant_id, **body.validated_data
            )
            out = PaymentOut(payment).data
            event = Event.objects.create(
                id=f"evt_{uuid.uuid4().hex}",
                payment=payment,
                sequence=1,
                type="payment.initiated",
                to_status="initiated",
                data={"changes": body.validated_data},
                actor="api_key",
            )
            Outbox.objects.create(
                event_id=event.id,
                event_type=event.type,
                aggregate_type="payment",
                aggregate_id=payment.id,
                sequence=1,
                merchant_id=merchant_id,
                payload={"id": event.id, "type": event.type, "data": {"object": out}},
            )
        return Response(out, status=status.HTTP_201_CREATED)


class PaymentView(APIView):
    authentication_classes = (KeyAuthentication,)

    def get(self, request, payment_id):  # type: ignore[no-untyped-def]
        payment = Payment.objects.filter(
            pk=payment_id, merchant_id=request.user.merchant_id
        ).first()
        if payment is None:
            raise exceptions.NotFound()
        return Response(PaymentOut(payment).data)


def health(request):  # type: ignore[no-untyped-def]
    return HttpResponse("ok")


urlpatterns = [
    path("health", health),
    path("v1/payments", PaymentsView.as_view()),
    path("v1/payments/<str:payment_id>", PaymentView.as_view()),
]

application = get_wsgi_application()
