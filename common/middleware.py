from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .correlation import bind_correlation_id, clear_correlation_id, new_correlation_id

_VALID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class CorrelationIdMiddleware:
    """Takes ``X-Correlation-Id`` from the client when well formed, else makes one; echoes it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        supplied = request.headers.get("X-Correlation-Id", "")
        correlation_id = supplied if _VALID.match(supplied) else new_correlation_id()
        bind_correlation_id(correlation_id)
        try:
            response = self.get_response(request)
        finally:
            clear_correlation_id()
        response["X-Correlation-Id"] = correlation_id
        return response
