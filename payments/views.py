"""The merchant REST API, v1: views parse and render; services and selectors do the work."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors, services
from .authentication import merchant_user
from .idempotency import idempotent
from .representations import event_to_dict, payment_to_dict, refund_to_dict
from .serializers import (
    ERROR_RESPONSES,
    IDEMPOTENCY_PARAMETER,
    AmountInputSerializer,
    ErrorSerializer,
    EventListSerializer,
    PaymentCreateInputSerializer,
    PaymentListSerializer,
    PaymentOutputSerializer,
    RefundInputSerializer,
    RefundListSerializer,
    RefundOutputSerializer,
)
from .validation import (
    parse_if_match,
    reject_card_numbers,
    validate_amount_body,
    validate_list_params,
    validate_payment_create,
)


class PaymentListCreateApi(APIView):
    @extend_schema(
        operation_id="payments_create",
        request=PaymentCreateInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: PaymentOutputSerializer, 409: ErrorSerializer, 422: ErrorSerializer}
        | ERROR_RESPONSES,
    )
    @idempotent
    def post(self, request: Request) -> Response:
        reject_card_numbers(request._request.body.decode("utf-8", "replace"))
        data = validate_payment_create(request.data)
        payment = services.payment_create(
            merchant=merchant_user(request).merchant,
            actor=merchant_user(request).actor,
            amount=data.amount,
            currency=data.currency,
            payment_method=data.payment_method,
            capture_method=data.capture_method,
            customer=data.customer,
            description=data.description,
            merchant_reference=data.merchant_reference,
            metadata=data.metadata,
        )
        return Response(payment_to_dict(payment), status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="payments_list",
        parameters=[
            OpenApiParameter("limit", int, description="1 to 100, default 20"),
            OpenApiParameter("starting_after", str),
            OpenApiParameter("ending_before", str),
            OpenApiParameter("status", str),
            OpenApiParameter("created_gte", str, description="ISO 8601"),
            OpenApiParameter("created_lt", str, description="ISO 8601"),
            OpenApiParameter("merchant_reference", str),
        ],
        responses={200: PaymentListSerializer} | ERROR_RESPONSES,
    )
    def get(self, request: Request) -> Response:
        params = validate_list_params(request.query_params)
        payments, has_more = selectors.payment_list(
            merchant=merchant_user(request).merchant, params=params
        )
        return Response(
            {"object": "list", "data": [payment_to_dict(p) for p in payments], "has_more": has_more}
        )


class PaymentDetailApi(APIView):
    @extend_schema(
        operation_id="payments_retrieve", responses={200: PaymentOutputSerializer} | ERROR_RESPONSES
    )
    def get(self, request: Request, payment_id: str) -> Response:
        payment = selectors.payment_get(
            merchant=merchant_user(request).merchant, payment_id=payment_id
        )
        return Response(payment_to_dict(payment))


class PaymentEventsApi(APIView):
    @extend_schema(
        operation_id="payments_events_list", responses={200: EventListSerializer} | ERROR_RESPONSES
    )
    def get(self, request: Request, payment_id: str) -> Response:
        events = selectors.payment_events(
            merchant=merchant_user(request).merchant, payment_id=payment_id
        )
        return Response(
            {"object": "list", "data": [event_to_dict(e) for e in events], "has_more": False}
        )


_IF_MATCH = OpenApiParameter(
    "If-Match", str, OpenApiParameter.HEADER, description="the payment version you expect"
)
_WRITE_ERRORS = {409: ErrorSerializer, 422: ErrorSerializer} | ERROR_RESPONSES


def _expected_version(request: Request) -> int | None:
    return parse_if_match(request.headers.get("If-Match"))


class PaymentCaptureApi(APIView):
    @extend_schema(
        operation_id="payments_capture",
        request=AmountInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER, _IF_MATCH],
        responses={200: PaymentOutputSerializer} | _WRITE_ERRORS,
    )
    @idempotent
    def post(self, request: Request, payment_id: str) -> Response:
        payment = selectors.payment_get(
            merchant=merchant_user(request).merchant, payment_id=payment_id
        )
        body = validate_amount_body(request.data, payment.currency, allowed=frozenset({"amount"}))
        payment = services.payment_capture(
            payment_id=payment.id,
            actor=merchant_user(request).actor,
            amount=body.amount,
            expected_version=_expected_version(request),
        )
        return Response(payment_to_dict(payment))


class PaymentCancelApi(APIView):
    @extend_schema(
        operation_id="payments_cancel",
        request=None,
        parameters=[IDEMPOTENCY_PARAMETER, _IF_MATCH],
        responses={200: PaymentOutputSerializer} | _WRITE_ERRORS,
    )
    @idempotent
    def post(self, request: Request, payment_id: str) -> Response:
        payment = selectors.payment_get(
            merchant=merchant_user(request).merchant, payment_id=payment_id
        )
        validate_amount_body(request.data, payment.currency, allowed=frozenset())
        payment = services.payment_cancel(
            payment_id=payment.id,
            actor=merchant_user(request).actor,
            expected_version=_expected_version(request),
        )
        return Response(payment_to_dict(payment))


class PaymentRefundsApi(APIView):
    @extend_schema(
        operation_id="payments_refunds_create",
        request=RefundInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER, _IF_MATCH],
        responses={201: RefundOutputSerializer} | _WRITE_ERRORS,
    )
    @idempotent
    def post(self, request: Request, payment_id: str) -> Response:
        payment = selectors.payment_get(
            merchant=merchant_user(request).merchant, payment_id=payment_id
        )
        body = validate_amount_body(
            request.data, payment.currency, allowed=frozenset({"amount", "reason"})
        )
        refund = services.refund_create(
            payment_id=payment.id,
            actor=merchant_user(request).actor,
            amount=body.amount,
            reason=body.reason,
            expected_version=_expected_version(request),
        )
        return Response(refund_to_dict(refund), status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="payments_refunds_list",
        responses={200: RefundListSerializer} | ERROR_RESPONSES,
    )
    def get(self, request: Request, payment_id: str) -> Response:
        refunds = selectors.refund_list(
            merchant=merchant_user(request).merchant, payment_id=payment_id
        )
        return Response(
            {"object": "list", "data": [refund_to_dict(r) for r in refunds], "has_more": False}
        )
