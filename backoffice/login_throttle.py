"""Failed admin logins are throttled per client address: each failure takes a token from the
address's bucket (``ADMIN_LOGIN_FAILURES_BURST`` tokens, refilled at
``ADMIN_LOGIN_FAILURES_PER_MINUTE``), and a login posted from an address with no token left is
answered ``429`` without checking the password, so guessing is slow whatever the guesses are.
A successful login takes nothing. Redis down: logins go on, counted by the limiter."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from common.rate_limit import Bucket, client_ip, limiter

SCOPE = "admin_login"


def _bucket() -> Bucket:
    return Bucket(
        rate=settings.ADMIN_LOGIN_FAILURES_PER_MINUTE / 60,
        burst=settings.ADMIN_LOGIN_FAILURES_BURST,
    )


@receiver(user_login_failed, dispatch_uid="aegispay-admin-login-failed")
def _count_failure(
    sender: Any, credentials: Any, request: HttpRequest | None = None, **_: Any
) -> None:
    if request is not None:
        limiter.take(SCOPE, client_ip(request), _bucket())


def throttled_login(login_view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The admin's login view, refusing a login posted from an address out of tries."""

    @wraps(login_view)
    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            decision = limiter.take(SCOPE, client_ip(request), _bucket(), cost=0)
            if decision is not None and not decision.allowed:
                response = HttpResponse(
                    "Too many failed logins from this address: try again in "
                    f"{max(1, decision.retry_after)} seconds.\n",
                    status=429,
                    content_type="text/plain; charset=utf-8",
                )
                response["Retry-After"] = str(max(1, decision.retry_after))
                return response
        return login_view(request, *args, **kwargs)

    return view
