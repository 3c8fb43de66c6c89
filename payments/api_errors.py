"""The one place that turns errors into the contract's error shape and status codes: every
``common.errors.DomainError`` (the payments errors and the webhook errors alike) by
its own ``status``, ``code`` and ``param``, and DRF's and Django's own exceptions."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

from common.errors import DomainError

logger = logging.getLogger(__name__)

_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def error_type(status: int) -> str:
    if status >= 500:
        return "api_error"
    return _TYPES.get(status, "invalid_request_error")


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type(status), "code": code, "message": message}
    if param is not None:
        error["param"] = param
    return {"error": error}


def _drf(exc: exceptions.APIException) -> tuple[str, str]:
    if isinstance(exc, exceptions.NotAuthenticated):
        return "authentication_required", "send your API key as 'Authorization: Bearer <key>'"
    if isinstance(exc, exceptions.AuthenticationFailed):
        return "invalid_api_key", "the API key is not valid"
    if isinstance(exc, exceptions.ParseError):
        return "invalid_json", "the request body is not valid JSON"
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return "unsupported_media_type", "send the body as application/json"
    if isinstance(exc, exceptions.MethodNotAllowed):
        return "method_not_allowed", str(exc.detail)
    if isinstance(exc, exceptions.NotFound):
        return "resource_missing", "no such object"
    if isinstance(exc, exceptions.Throttled):
        return "rate_limited", str(exc.detail)
    if isinstance(exc, exceptions.PermissionDenied):
        return "permission_denied", str(exc.detail)
    return "invalid_request", str(exc.detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's exception handler: every error leaves in the contract's shape."""
    if isinstance(exc, DomainError):
        return Response(error_body(exc.status, exc.code, exc.message, exc.param), exc.status)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body(413, "request_too_large", "the request body is too large"), status=413
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, exceptions.APIException):
        code, message = _drf(exc)
        headers = {}
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            headers["WWW-Authenticate"] = "Bearer"
        return Response(
            error_body(exc.status_code, code, message), exc.status_code, headers=headers
        )
    logger.exception("unhandled error in the API")
    return Response(error_body(500, "internal_error", "an internal error occurred"), status=500)
