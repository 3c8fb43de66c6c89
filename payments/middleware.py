"""The merchant API's middleware: a request whose path or query string holds text that may not be
stored (NUL, an unpaired surrogate) is refused before any view reads it, ``400
parameter_invalid`` in the API's error shape, for every URL, the admin's included (bodies are
the JSON parser's, ``parsers.py``); and every answer carries its rate limit's headers."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from common.rate_limit import Decision

from .api_errors import error_body
from .parsers import text_invalid, unstorable


def _unstorable_part(request: HttpRequest) -> str | None:
    """``"path"`` or the query parameter at fault (``"query"`` for a key), or ``None``."""
    if unstorable(request.path_info):
        return "path"
    for key, values in request.GET.lists():
        if unstorable(key):
            return "query"
        if any(unstorable(value) for value in values):
            return key
    return None


class UnstorableRequestMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        where = _unstorable_part(request)
        if where is None:
            return self.get_response(request)
        error = text_invalid(where)
        return JsonResponse(error_body(400, error.code, error.message, error.param), status=400)


class RateLimitHeadersMiddleware:
    """Puts the ``RateLimit-*`` headers (and ``Retry-After`` on a 429) of the request's rate-limit
    decision, taken by ``ApiKeyAuthentication``, on its answer, whatever the answer is."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        decision: Decision | None = getattr(request, "rate_limit", None)
        if decision is not None:
            for name, value in decision.headers().items():
                response[name] = value
        return response
