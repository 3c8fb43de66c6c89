"""The merchant REST API for webhook endpoints, v1 (``/v1/webhook_endpoints``): views parse and
render; services and selectors do the work. Authentication, idempotency, list parameters and
the error shape are the merchant API's own, from payments."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments.api_errors import validated
from payments.authentication import MerchantUser, merchant_user
from payments.idempotency import idempotent
from payments.serializers import (
    ERROR_RESPONSES,
    IDEMPOTENCY_PARAMETER,
    WRITE_ERROR_RESPONSES,
    PageParamsSerializer,
)

from . import selectors, services
from .serializers import (
    WebhookEndpointCreatedSerializer,
    WebhookEndpointCreateInputSerializer,
    WebhookEndpointListSerializer,
    WebhookEndpointOutputSerializer,
    WebhookSecretRotateInputSerializer,
)

# The webhook errors are DomainErrors like the payments ones: payments' api_errors renders
# them and @idempotent stores them like any other answer, a missing (or another merchant's)
# endpoint as 404 and every other webhook error as 400, each with its own stable code.


def _endpoint_now(caller: MerchantUser, created: dict[str, Any]) -> dict[str, Any]:
    """A replayed create answers the endpoint as it is now (disabled, if it was since), and
    never its secret, which only the first answer showed."""
    endpoint = selectors.webhook_endpoint_get(
        merchant_id=caller.merchant.id, livemode=caller.livemode, endpoint_id=created["id"]
    )
    return dict(WebhookEndpointOutputSerializer(endpoint).data)


def _mode(request: Request) -> dict[str, Any]:
    """The caller's merchant and mode, as the webhook services and selectors take them."""
    caller = merchant_user(request)
    return {"merchant_id": caller.merchant.id, "livemode": caller.livemode}


class WebhookEndpointListCreateApi(APIView):
    required_scopes = {"get": "webhooks:read", "post": "webhooks:write"}
    input_serializers = {"post": WebhookEndpointCreateInputSerializer, "get": PageParamsSerializer}

    @extend_schema(
        operation_id="webhook_endpoints_create",
        request=input_serializers["post"],
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: WebhookEndpointCreatedSerializer} | WRITE_ERROR_RESPONSES,
    )
    @idempotent(secret_fields=("secret",), replay=_endpoint_now)
    def post(self, request: Request) -> Response:
        body = validated(self.input_serializers["post"](data=request.data))
        endpoint, _secret = services.webhook_endpoint_create(
            **_mode(request), url=body["url"], events=body["events"]
        )
        return Response(
            WebhookEndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        operation_id="webhook_endpoints_list",
        parameters=[input_serializers["get"]],
        responses={200: WebhookEndpointListSerializer} | ERROR_RESPONSES,
    )
    def get(self, request: Request) -> Response:
        params = validated(self.input_serializers["get"](data=request.query_params.dict()))
        endpoints, has_more = selectors.webhook_endpoint_list(**_mode(request), **params)
        return Response(
            WebhookEndpointListSerializer({"data": endpoints, "has_more": has_more}).data
        )


class WebhookEndpointDetailApi(APIView):
    required_scopes = {"get": "webhooks:read", "delete": "webhooks:write"}

    @extend_schema(
        operation_id="webhook_endpoints_retrieve",
        responses={200: WebhookEndpointOutputSerializer} | ERROR_RESPONSES,
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = selectors.webhook_endpoint_get(**_mode(request), endpoint_id=endpoint_id)
        return Response(WebhookEndpointOutputSerializer(endpoint).data)

    @extend_schema(
        operation_id="webhook_endpoints_disable",
        description="Disables the endpoint: no new deliveries; it stays listed as disabled.",
        responses={200: WebhookEndpointOutputSerializer} | ERROR_RESPONSES,
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        endpoint = services.webhook_endpoint_disable(**_mode(request), endpoint_id=endpoint_id)
        return Response(WebhookEndpointOutputSerializer(endpoint).data)


class WebhookEndpointRotateSecretApi(APIView):
    required_scopes = {"post": "webhooks:write"}
    input_serializer = WebhookSecretRotateInputSerializer

    @extend_schema(
        operation_id="webhook_endpoints_rotate_secret",
        description=(
            "A new signing secret, shown in this answer only. The old one goes on signing beside "
            "it for expires_in seconds, so receivers can move over with no delivery refused."
        ),
        request=input_serializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={200: WebhookEndpointCreatedSerializer} | WRITE_ERROR_RESPONSES,
    )
    @idempotent(secret_fields=("secret",), replay=_endpoint_now)
    def post(self, request: Request, endpoint_id: str) -> Response:
        body = validated(self.input_serializer(data=request.data))
        endpoint, _secret = services.webhook_endpoint_rotate_secret(
            **_mode(request),
            endpoint_id=endpoint_id,
            overlap_seconds=body["expires_in"],
        )
        return Response(WebhookEndpointCreatedSerializer(endpoint).data)
