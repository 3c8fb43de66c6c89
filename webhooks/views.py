"""The merchant REST API for webhook endpoints, v1 (``/v1/webhook_endpoints``): views parse and
render; services and selectors do the work. Authentication, idempotency, list parameters and
the error shape are the merchant API's own, from payments."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments.authentication import merchant_user
from payments.errors import ValidationFailed
from payments.idempotency import idempotent
from payments.representations import iso
from payments.serializers import ERROR_RESPONSES, IDEMPOTENCY_PARAMETER, ErrorSerializer
from payments.validation import validate_list_params

from . import selectors, services
from .models import WebhookEndpoint
from .serializers import (
    WebhookEndpointCreatedSerializer,
    WebhookEndpointCreateInputSerializer,
    WebhookEndpointListSerializer,
    WebhookEndpointOutputSerializer,
)

# The webhook errors are DomainErrors like the payments ones: payments' api_errors renders
# them and @idempotent stores them like any other answer, a missing (or another merchant's)
# endpoint as 404 and every other webhook error as 400, each with its own stable code.


def webhook_endpoint_to_dict(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """The webhook endpoint object; the secret is added only to the create answer."""
    return {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "events": endpoint.events,
        "status": endpoint.status,
        "created_at": iso(endpoint.created_at),
    }


_WEBHOOK_FIELDS = ("url", "events")
_PAGE_PARAMS = ("limit", "starting_after", "ending_before")


class WebhookEndpointListCreateApi(APIView):
    @extend_schema(
        operation_id="webhook_endpoints_create",
        request=WebhookEndpointCreateInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: WebhookEndpointCreatedSerializer,
            409: ErrorSerializer,
            422: ErrorSerializer,
        }
        | ERROR_RESPONSES,
    )
    @idempotent
    def post(self, request: Request) -> Response:
        body = request.data
        if not isinstance(body, dict):
            raise ValidationFailed("invalid_request", "the body must be a JSON object")
        unknown = sorted(set(body) - set(_WEBHOOK_FIELDS))
        if unknown:
            raise ValidationFailed(
                "parameter_unknown", f"unknown parameter: {unknown[0]}", param=unknown[0]
            )
        for required in _WEBHOOK_FIELDS:
            if required not in body:
                raise ValidationFailed(
                    "parameter_missing", f"{required} is required", param=required
                )
        endpoint, secret = services.webhook_endpoint_create(
            merchant_id=merchant_user(request).merchant.id, url=body["url"], events=body["events"]
        )
        return Response(
            webhook_endpoint_to_dict(endpoint) | {"secret": secret},
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        operation_id="webhook_endpoints_list",
        parameters=[
            OpenApiParameter("limit", int, description="1 to 100, default 20"),
            OpenApiParameter("starting_after", str),
            OpenApiParameter("ending_before", str),
        ],
        responses={200: WebhookEndpointListSerializer} | ERROR_RESPONSES,
    )
    def get(self, request: Request) -> Response:
        query = {
            name: request.query_params[name]
            for name in _PAGE_PARAMS
            if name in request.query_params
        }
        params = validate_list_params(query)
        endpoints, has_more = selectors.webhook_endpoint_list(
            merchant_id=merchant_user(request).merchant.id,
            limit=params.limit,
            starting_after=params.starting_after,
            ending_before=params.ending_before,
        )
        return Response(
            {
                "object": "list",
                "data": [webhook_endpoint_to_dict(e) for e in endpoints],
                "has_more": has_more,
            }
        )


class WebhookEndpointDetailApi(APIView):
    @extend_schema(
        operation_id="webhook_endpoints_retrieve",
        responses={200: WebhookEndpointOutputSerializer} | ERROR_RESPONSES,
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = selectors.webhook_endpoint_get(
            merchant_id=merchant_user(request).merchant.id, endpoint_id=endpoint_id
        )
        return Response(webhook_endpoint_to_dict(endpoint))

    @extend_schema(
        operation_id="webhook_endpoints_disable",
        description="Disables the endpoint: no new deliveries; it stays listed as disabled.",
        responses={200: WebhookEndpointOutputSerializer} | ERROR_RESPONSES,
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        endpoint = services.webhook_endpoint_disable(
            merchant_id=merchant_user(request).merchant.id, endpoint_id=endpoint_id
        )
        return Response(webhook_endpoint_to_dict(endpoint))
