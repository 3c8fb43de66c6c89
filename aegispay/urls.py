from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from backoffice import health
from backoffice.dashboard import dashboard_view
from backoffice.login_throttle import throttled_login
from backoffice.metrics import metrics_view

urlpatterns = [
    path("v1/", include("payments.urls")),
    path("v1/", include("webhooks.urls")),
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # Before the admin's own URLs; admin_view requires an active staff user (else: login page).
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    # The admin's login, with failed logins throttled per client address.
    path("admin/login/", throttled_login(admin.site.login), name="admin-login-throttled"),
    # The webhook models moved from the outbox app to webhooks: staff's old links still lead there.
    re_path(
        r"^admin/outbox/(?P<model>webhookendpoint|webhookdelivery|webhookattempt)/(?P<rest>.*)$",
        RedirectView.as_view(url="/admin/webhooks/%(model)s/%(rest)s", query_string=True),
    ),
    path("admin/", admin.site.urls),
]

# Django's own error answers, outside the API's views, in the API's error shape (error_views.py).
handler400 = "aegispay.error_views.bad_request"
handler403 = "aegispay.error_views.permission_denied"
handler404 = "aegispay.error_views.page_not_found"
handler500 = "aegispay.error_views.server_error"
