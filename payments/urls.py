from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("payments", views.PaymentListCreateApi.as_view(), name="payments"),
    path("payments/<str:payment_id>", views.PaymentDetailApi.as_view(), name="payment-detail"),
    path(
        "payments/<str:payment_id>/events", views.PaymentEventsApi.as_view(), name="payment-events"
    ),
    path(
        "payments/<str:payment_id>/capture",
        views.PaymentCaptureApi.as_view(),
        name="payment-capture",
    ),
    path(
        "payments/<str:payment_id>/cancel", views.PaymentCancelApi.as_view(), name="payment-cancel"
    ),
    path(
        "payments/<str:payment_id>/refunds",
        views.PaymentRefundsApi.as_view(),
        name="payment-refunds",
    ),
    path("api_keys", views.ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("api_keys/<str:key_id>", views.ApiKeyDetailApi.as_view(), name="api-key-detail"),
    path("api_keys/<str:key_id>/roll", views.ApiKeyRollApi.as_view(), name="api-key-roll"),
    path("events", views.EventListApi.as_view(), name="events"),
    path("events/<str:event_id>", views.EventDetailApi.as_view(), name="event-detail"),
    path("refunds", views.RefundListApi.as_view(), name="refunds"),
    path("refunds/<str:refund_id>", views.RefundDetailApi.as_view(), name="refund-detail"),
]
