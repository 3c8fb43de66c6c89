"""The merchant REST API, v1: views parse and render; services and selectors do the work.

Each view validates its input with the serializer its schema names (``request=`` and
``parameters=``, kept on the view as ``input_serializers`` so the two cannot drift) and renders
its answer with the output serializer its schema names.
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import merchants, selectors, services
from .api_errors import validated
from .authentication import MerchantUser, merchant_user, owner
from .errors import ValidationFailed
from .idempotency import idempotent
from .models import ApiKey
from .selectors import EventListParams, ListParams, RefundListParams
from .serializers import (
    ERROR_RESPONSES,
    IDEMPOTENCY_PARAMETER,
    WRITE_ERROR_RESPONSES,
    ApiKeyCreatedSerializer,
    ApiKeyCreateInputSerializer,
    ApiKeyListSerializer,
    ApiKeyOutputSerializer,
    ApiKeyRollInputSerializer,
    CancelInputSerializer,
    CaptureInputSerializer,
    EventListParamsSerializer,
    EventListSerializer,
    EventOutputSerializer,
    PageParamsSerializer,
    PaymentCreateInputSerializer,
    PaymentListParamsSerializer,
    PaymentListSerializer,
    PaymentOutputSerializer,
    PaymentUpdateInputSerializer,
    RefundInputSerializer,
    RefundListParamsSerializer,
    RefundListSerializer,
    RefundOutputSerializer,
    payment_representation,
)

# A version number, bare or quoted as an ETag is, in ASCII digits (str.isdigit() also took "²",
# which int() then refused: a 500).
_VERSION = '^(?:"[0-9]+"|[0-9]+)$'
_IF_MATCH = OpenApiParameter(
    "If-Match",
    {"type": "string", "pattern": _VERSION},
    OpenApiParameter.HEADER,
    description='the payment version you expect: 3, or "3" as an ETag',
)


def parse_if_match(value: str | None) -> int | None:
    """``If-Match: <version>`` (quoted or not, as for an ETag); ``None`` when absent.

    A plain function, not a serializer: one header string, whatever the body holds.
    """
    if value is None:
        return None
    raw = value.strip(" \t")
    if re.fullmatch(_VERSION, raw) is None:
        raise ValidationFailed(
            "if_match_invalid", "If-Match must be the payment's version number", param="If-Match"
        )
    return int(raw.strip('"'))


def _expected_version(request: Request) -> int | None:
    return parse_if_match(request.headers.get("If-Match"))


def _body(view: APIView, request: Request) -> dict:
    """The body of an update, capture, cancel or refund, by the view's ``input_serializer``
    (read once the payment is found: another merchant's id is 404 whatever the body)."""
    serializer_class = view.input_serializer  # type: ignore[attr-defined]
    return validated(serializer_class(data=request.data))


class PaymentListCreateApi(APIView):
    required_scopes = {"get": "payments:read", "post": "payments:write"}
    input_serializers = {"post": PaymentCreateInputSerializer, "get": PaymentListParamsSerializer}

    @extend_schema(
        operation_id="payments_create",
        request=input_serializers["post"],
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: PaymentOutputSerializer} | WRITE_ERROR_RESPONSES,
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = validated(self.input_serializers["post"](data=request.data))
        payment = services.payment_create(
            **owner(request),
            actor=merchant_user(request).actor,
            amount=data["amount"],
            currency=data["currency"],
            payment_method=data["payment_method"],
            capture_method=data["capture_method"],
            customer=data["customer"],
            description=data["description"],
            merchant_reference=data["merchant_reference"],
            metadata=data["metadata"],
        )
        return Response(payment_representation(payment), status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="payments_list",
        parameters=[input_serializers["get"]],
        responses={200: PaymentListSerializer} | ERROR_RESPONSES,
    )
    def get(self, request: Request) -> Response:
        query = validated(self.input_serializers["get"](data=request.query_params.dict()))
        payments, has_more = selectors.payment_list(**owner(request), params=ListParams(**query))
        return Response(PaymentListSerializer({"data": payments, "has_more": has_more}).data)


class PaymentDetailApi(APIView):
    required_scopes = {"get": "payments:read", "post": "payments:write"}
    input_serializer = PaymentUpdateInputSerializer

    @extend_schema(
        operation_id="payments_retrieve", responses={200: PaymentOutputSerializer} | ERROR_RESPONSES
    )
    def get(self, request: Request, payment_id: str) -> Response:
        payment = selectors.payment_get(**owner(request), payment_id=payment_id)
        return Response(payment_representation(payment))

    @extend_schema(
        operation_id="payments_update",
        request=input_serializer,
        parameters=[IDEMPOTENCY_PARAMETER, _IF_MATCH],
        responses={200: PaymentOutputSerializer} | WRITE_ERROR_RESPONSES,
    )
    @idempotent
    def post(self, request: Request, payment_id: str) -> Response:
        payment = selectors.payment_get(**owner(request), payment_id=payment_id)
        body = _body(self, request)
        payment = services.payment_update(
            payment_id=payment.id,
            actor=merchant_user(request).actor,
            metadata=body.get("metadata"),
            description=body.get("description"),
            expected_version=_expected_version(request),
        )
        return Response(payment_representation(payment))


class PaymentEventsApi(APIView):
    required_scopes = {"get": "events:read"}

    @extend_schema(
        operation_id="payments_events_list", responses={200: EventListSerializer} | ERROR_RESPONSES
    )
    def get(self, request: Request, payment_id: str) -> Response:
        events = selectors.payment_events(**owner(request), payment_id=payment_id)
        return Response(EventListSerializer({"data": events, "has_more": False}).data)


class PaymentCaptureApi(APIView):
    required_scopes = {"post": "payments:write"}
    input_serializer = CaptureInputSerializer

    @extend_schema(
        operation_id="payments_capture",
        request=input_serializer,
        parameters=[IDEMPOTENCY_PARAMETER, _IF_MATCH],
        responses={200: PaymentOutputSerializer} | WRITE_ERROR_RESPONSES,
    )
    @idempotent
    def post(self, request: Request, payment_id: str) -> Response:
        payment = selectors.payment_get(**owner(request), payment_id=payment_id)
        body = _body(self, request)
        payment = services.payment_capture(
            payment_id=payment.id,
            actor=merchant_user(request).actor,
            amount=body["amount"],
            expected_version=_expected_version(request),
        )
        return Response(payment_representation(payment))


class PaymentCancelApi(APIView):
    required_scopes = {"post": "payments:write"}
    input_serializer = CancelInputSerializer

    @extend_schema(
        operation_id="payments_cancel",
        request=None,  # no parameters: the schema shows no body
        parameters=[IDEMPOTENCY_PARAMETER, _IF_MATCH],
        responses={200: PaymentOutputSerializer} | WRITE_ERROR_RESPONSES,
    )
    @idempotent
    def post(self, request: Request, payment_id: str) -> Response:
        payment = selectors.payment_get(**owner(request), payment_id=payment_id)
        _body(self, request)
        payment = services.payment_cancel(
            payment_id=payment.id,
            actor=merchant_user(request).actor,
            expected_version=_expected_version(request),
        )
        return Response(payment_representation(payment))


class PaymentRefundsApi(APIView):
    required_scopes = {"get": "payments:read", "post": "refunds:write"}
    input_serializer = RefundInputSerializer

    @extend_schema(
        operation_id="payments_refunds_create",
        request=input_serializer,
        parameters=[IDEMPOTENCY_PARAMETER, _IF_MATCH],
        responses={201: RefundOutputSerializer} | WRITE_ERROR_RESPONSES,
    )
    @idempotent
    def post(self, request: Request, payment_id: str) -> Response:
        payment = selectors.payment_get(**owner(request), payment_id=payment_id)
        body = _body(self, request)
        refund = services.refund_create(
            payment_id=payment.id,
            actor=merchant_user(request).actor,
            amount=body["amount"],
            reason=body["reason"],
            expected_version=_expected_version(request),
        )
        return Response(RefundOutputSerializer(refund).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="payments_refunds_list",
        responses={200: RefundListSerializer} | ERROR_RESPONSES,
    )
    def get(self, request: Request, payment_id: str) -> Response:
        refunds = selectors.refund_list(**owner(request), payment_id=payment_id)
        return Response(RefundListSerializer({"data": refunds, "has_more": False}).data)


class EventListApi(APIView):
    required_scopes = {"get": "events:read"}
    input_serializer = EventListParamsSerializer

    @extend_schema(
        operation_id="events_list",
        parameters=[input_serializer],
        responses={200: EventListSerializer} | ERROR_RESPONSES,
    )
    def get(self, request: Request) -> Response:
        query = validated(self.input_serializer(data=request.query_params.dict()))
        events, has_more = selectors.event_list(**owner(request), params=EventListParams(**query))
        return Response(EventListSerializer({"data": events, "has_more": has_more}).data)


class EventDetailApi(APIView):
    required_scopes = {"get": "events:read"}

    @extend_schema(
        operation_id="events_retrieve", responses={200: EventOutputSerializer} | ERROR_RESPONSES
    )
    def get(self, request: Request, event_id: str) -> Response:
        event = selectors.event_get(**owner(request), event_id=event_id)
        return Response(EventOutputSerializer(event).data)


class RefundListApi(APIView):
    required_scopes = {"get": "payments:read"}
    input_serializer = RefundListParamsSerializer

    @extend_schema(
        operation_id="refunds_list",
        parameters=[input_serializer],
        responses={200: RefundListSerializer} | ERROR_RESPONSES,
    )
    def get(self, request: Request) -> Response:
        query = validated(self.input_serializer(data=request.query_params.dict()))
        refunds, has_more = selectors.refund_page(
            **owner(request), params=RefundListParams(**query)
        )
        return Response(RefundListSerializer({"data": refunds, "has_more": has_more}).data)


class RefundDetailApi(APIView):
    required_scopes = {"get": "payments:read"}

    @extend_schema(
        operation_id="refunds_retrieve", responses={200: RefundOutputSerializer} | ERROR_RESPONSES
    )
    def get(self, request: Request, refund_id: str) -> Response:
        refund = selectors.refund_get(**owner(request), refund_id=refund_id)
        return Response(RefundOutputSerializer(refund).data)


# --- API keys ---


def _key_now(caller: MerchantUser, created: dict[str, Any]) -> dict[str, Any]:
    """A replayed create or roll answers the key as it is now (revoked, if it was since), and
    never the key itself, which only the first answer showed."""
    key = ApiKey.objects.get(merchant=caller.merchant, live=caller.livemode, pk=created["id"])
    return dict(ApiKeyOutputSerializer(key).data)


class ApiKeyListCreateApi(APIView):
    input_serializers = {"post": ApiKeyCreateInputSerializer, "get": PageParamsSerializer}
    required_scopes = {"get": "keys:write", "post": "keys:write"}

    @extend_schema(
        operation_id="api_keys_create",
        request=input_serializers["post"],
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: ApiKeyCreatedSerializer} | WRITE_ERROR_RESPONSES,
    )
    @idempotent(secret_fields=("secret",), replay=_key_now)
    def post(self, request: Request) -> Response:
        body = validated(self.input_serializers["post"](data=request.data))
        caller = merchant_user(request)
        key, raw = merchants.api_key_create(
            merchant=caller.merchant,
            live=caller.api_key.live,
            name=body["name"],
            restricted=body["restricted"],
            scopes=body["scopes"],
            caller=caller.api_key,
        )
        answer = {**ApiKeyOutputSerializer(key).data, "secret": raw}
        return Response(answer, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="api_keys_list",
        parameters=[input_serializers["get"]],
        responses={200: ApiKeyListSerializer} | ERROR_RESPONSES,
    )
    def get(self, request: Request) -> Response:
        params = validated(self.input_serializers["get"](data=request.query_params.dict()))
        caller = merchant_user(request)
        keys, has_more = selectors.api_key_list(
            merchant=caller.merchant, live=caller.api_key.live, **params
        )
        return Response(ApiKeyListSerializer({"data": keys, "has_more": has_more}).data)


class ApiKeyDetailApi(APIView):
    required_scopes = {"delete": "keys:write"}

    @extend_schema(
        operation_id="api_keys_revoke",
        description="Revokes the key at once.",
        responses={200: ApiKeyOutputSerializer} | ERROR_RESPONSES,
    )
    def delete(self, request: Request, key_id: str) -> Response:
        caller = merchant_user(request)
        key = merchants.api_key_revoke(
            merchant=caller.merchant, caller=caller.api_key, key_id=key_id
        )
        return Response(ApiKeyOutputSerializer(key).data)


class ApiKeyRollApi(APIView):
    input_serializer = ApiKeyRollInputSerializer
    required_scopes = {"post": "keys:write"}

    @extend_schema(
        operation_id="api_keys_roll",
        description=(
            "A new key like this one, valid at once and shown in this answer only; the old key "
            "stays valid for expires_in seconds."
        ),
        request=input_serializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: ApiKeyCreatedSerializer} | WRITE_ERROR_RESPONSES,
    )
    @idempotent(secret_fields=("secret",), replay=_key_now)
    def post(self, request: Request, key_id: str) -> Response:
        body = validated(self.input_serializer(data=request.data))
        caller = merchant_user(request)
        key, raw = merchants.api_key_roll(
            merchant=caller.merchant,
            caller=caller.api_key,
            key_id=key_id,
            expires_in=body["expires_in"],
        )
        answer = {**ApiKeyOutputSerializer(key).data, "secret": raw}
        return Response(answer, status=status.HTTP_201_CREATED)
