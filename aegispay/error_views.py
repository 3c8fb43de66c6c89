"""Django's own error answers (``handler400``, ``handler403``, ``handler404``, ``handler500`` in
``urls.py``) as the API's error object, for every URL the API's views do not answer themselves:
a Host not in ``ALLOWED_HOSTS``, a body over the limit read outside the API, an unknown URL, a
crash outside DRF. Fixed messages: what the client sent (a Host, a path) is not echoed.

Under DEBUG, Django shows its debug pages instead, as ever (``make run``).
"""

from __future__ import annotations

from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.http import HttpRequest, JsonResponse

from payments.api_errors import error_body


def _answer(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(status, code, message), status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    if isinstance(exception, RequestDataTooBig):
        return _answer(413, "request_too_large", "the request body is too large")
    if isinstance(exception, DisallowedHost):
        return _answer(400, "request_malformed", "the Host header names no host served here")
    return _answer(400, "request_malformed", "the request is not valid")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _answer(403, "permission_denied", "you may not do this")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _answer(404, "resource_missing", "nothing exists at this URL")


def server_error(request: HttpRequest) -> JsonResponse:
    return _answer(500, "internal_error", "an internal error occurred")
