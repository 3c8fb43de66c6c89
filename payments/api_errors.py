"""The one place that turns errors into the contract's error shape and status codes: every
``common.errors.DomainError`` (the payments errors and the webhook errors alike) by
its own ``status``, ``code`` and ``param``, and DRF's and Django's own exceptions; and the one
place that turns an input serializer's errors into the contract's ``ValidationFailed``
(``validation_failed``), DRF's own error codes mapped to the contract's in one table."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.response import Response
from rest_framework.settings import api_settings

from common.errors import DomainError

from .errors import ValidationFailed

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


# --- input: a serializer's errors as the contract's one ValidationFailed ---

# DRF's own error codes, as the contract names them. ``required`` on a top-level parameter is
# ``parameter_missing``; every other one (and ``required`` inside an object, such as
# ``payment_method.type``) is ``<top-level parameter>_invalid``, or the serializer's
# ``contract_invalid_code`` (query parameters: ``parameter_invalid``). Any other code is
# already the contract's (``amount_too_large``, ``parameter_unknown``, ``reason_invalid``...).
_DRF_CODES = {
    "required": "parameter_missing",
    "null": "{field}_invalid",
    "blank": "{field}_invalid",
    "invalid": "{field}_invalid",
    "invalid_choice": "{field}_invalid",
    "max_length": "{field}_invalid",
    "min_length": "{field}_invalid",
    "max_value": "{field}_invalid",
    "min_value": "{field}_invalid",
    "max_string_length": "{field}_invalid",
    "not_a_dict": "{field}_invalid",
    "not_a_list": "{field}_invalid",
    "empty": "{field}_invalid",
}
# A body that is no JSON object at all: DRF's ``invalid`` (or ``null``) on the serializer itself.
_NOT_AN_OBJECT = ("invalid_request", "the body must be a JSON object")


def _first(field: Any, detail: Any, param: str) -> tuple[str, ErrorDetail]:
    """The first error inside one field's errors, and its ``param``: ``a.b`` for a field of an
    object, ``a[key]`` for an entry of a dict."""
    if isinstance(detail, list):
        return param, detail[0]
    name = next(iter(detail))
    if isinstance(field, serializers.Serializer):
        child = field.fields.get(name)
        inner = param if name == api_settings.NON_FIELD_ERRORS_KEY else f"{param}.{name}"
    else:
        child = getattr(field, "child", None)
        inner = f"{param}[{name}]"
    return _first(child, detail[name], inner)


def validation_failed(serializer: serializers.Serializer) -> ValidationFailed:
    """The one error the API reports for an invalid ``serializer`` (``is_valid()`` was False).

    A body that is no object, then an unknown parameter, then the first missing parameter in
    declaration order, then the first bad value: in the serializer's ``error_order`` if it has
    one, else in declaration order. The code is the contract's (``_DRF_CODES``).
    """
    errors = serializer.errors
    non_field = errors.get(api_settings.NON_FIELD_ERRORS_KEY)
    if non_field and non_field[0].code in ("invalid", "null"):
        code, message = _NOT_AN_OBJECT
        return ValidationFailed(code, message)
    fields = serializer.fields
    declared = list(fields.keys())
    missing = [
        name
        for name in declared
        if isinstance(errors.get(name), list) and errors[name][0].code == "required"
    ]
    if missing:
        code = _DRF_CODES["required"]
        return ValidationFailed(code, f"{missing[0]} is required", param=missing[0])
    order = getattr(serializer, "error_order", None) or declared
    # Keys that are no declared field (an unknown parameter) come from whole-body checks.
    names = [name for name in errors if name not in declared] + [n for n in order if n in errors]
    top = names[0]
    param, detail = _first(fields.get(top), errors[top], top)
    code = str(detail.code)
    if code in _DRF_CODES:
        # Inside an object, a missing field is a bad value of that object (payment_method.type).
        template = "{field}_invalid" if code == "required" else _DRF_CODES[code]
        code = getattr(serializer, "contract_invalid_code", None) or template.format(field=top)
    return ValidationFailed(code, str(detail), param=param)


def validated(serializer: serializers.Serializer) -> dict[str, Any]:
    """``serializer.validated_data``, or raise its one ``ValidationFailed``."""
    if not serializer.is_valid():
        raise validation_failed(serializer)
    return dict(serializer.validated_data)
