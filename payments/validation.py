"""Validation of merchant input, with one stable error code per rule.

Plain functions over the parsed JSON: each raises ``ValidationFailed(code, message, param=)``
on the first problem, so a client always learns which field to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils.dateparse import parse_datetime

from . import currencies
from .errors import CardDataNotAllowed, ValidationFailed
from .models import CaptureMethod, PaymentStatus

# 13 to 19 digits, optionally separated by single spaces or dashes, not inside a longer number.
_CARD_CANDIDATE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{1,255}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_PRINTABLE_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_OBJECT_ID = re.compile(r"^[a-z]{2,4}_[0-9a-z]{26}$")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a digit string."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def reject_card_numbers(raw_body: str) -> None:
    """Refuse a body that holds anything shaped like a card number (13 to 19 digits, Luhn-valid).

    Scans the raw text, so keys, values, numbers and nested objects are all covered.
    """
    for match in _CARD_CANDIDATE.finditer(raw_body):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            raise CardDataNotAllowed(
                "raw card numbers are not accepted; send a gateway token in payment_method.token"
            )


def validate_idempotency_key(value: str) -> str:
    if not _PRINTABLE_KEY.match(value):
        raise ValidationFailed(
            "idempotency_key_invalid",
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            param="Idempotency-Key",
        )
    return value


def validate_amount(value: Any, currency: str, *, param: str = "amount") -> int:
    """A positive integer in the currency's minor unit, within the currency's bound."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationFailed(
            "amount_invalid",
            "amount must be a positive integer in the currency's minor unit",
            param=param,
        )
    # At most ten billion major units: with KWD's three decimals that is 10**13 minor units.
    bound = settings.MAX_AMOUNT_MAJOR_UNITS * 10 ** currencies.exponent(currency)
    if value > bound:
        raise ValidationFailed(
            "amount_too_large",
            f"amount may be at most {bound} minor units of {currency}",
            param=param,
        )
    return value


def validate_currency(value: Any) -> str:
    if not isinstance(value, str) or not currencies.is_supported(value):
        raise ValidationFailed(
            "currency_invalid",
            "currency must be an upper-case ISO 4217 code such as USD",
            param="currency",
        )
    return value


def _string(body: Mapping[str, Any], name: str, max_length: int, param: str | None = None) -> str:
    value = body.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str) or len(value) > max_length:
        raise ValidationFailed(
            f"{name}_invalid",
            f"{name} must be a string of at most {max_length} characters",
            param=param or name,
        )
    return value


def validate_metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed("metadata_invalid", "metadata must be an object", param="metadata")
    if len(value) > settings.METADATA_MAX_KEYS:
        raise ValidationFailed(
            "metadata_invalid",
            f"metadata may have at most {settings.METADATA_MAX_KEYS} keys",
            param="metadata",
        )
    for key, item in value.items():
        if not key or len(key) > settings.METADATA_MAX_KEY_LENGTH:
            raise ValidationFailed(
                "metadata_invalid",
                f"metadata keys must be 1 to {settings.METADATA_MAX_KEY_LENGTH} characters",
                param=f"metadata[{key}]",
            )
        if not isinstance(item, str) or len(item) > settings.METADATA_MAX_VALUE_LENGTH:
            raise ValidationFailed(
                "metadata_invalid",
                f"metadata values must be strings of at most "
                f"{settings.METADATA_MAX_VALUE_LENGTH} characters",
                param=f"metadata[{key}]",
            )
    return dict(value)


def validate_payment_method(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValidationFailed(
            "payment_method_invalid",
            "payment_method must be an object with type and token",
            param="payment_method",
        )
    unknown = set(value) - {"type", "token"}
    if unknown:
        raise ValidationFailed(
            "payment_method_invalid",
            f"payment_method has unknown fields: {', '.join(sorted(unknown))}",
            param="payment_method",
        )
    if value.get("type") != "card":
        raise ValidationFailed(
            "payment_method_invalid",
            "payment_method.type must be 'card'",
            param="payment_method.type",
        )
    token = value.get("token")
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise ValidationFailed(
            "payment_method_invalid",
            "payment_method.token must be a gateway token such as tok_visa",
            param="payment_method.token",
        )
    return {"type": "card", "token": token}


def validate_customer(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - {"id", "email", "country", "name"}:
        raise ValidationFailed(
            "customer_invalid",
            "customer must be an object with id, email, country and name only",
            param="customer",
        )
    customer: dict[str, str] = {}
    for name in ("id", "name"):
        if name in value:
            customer[name] = _string(value, name, 255, param=f"customer.{name}")
    if "email" in value and (
        not isinstance(value["email"], str) or not _EMAIL.match(value["email"])
    ):
        raise ValidationFailed(
            "customer_invalid", "customer.email is not valid", param="customer.email"
        )
    if "email" in value:
        customer["email"] = value["email"]
    if "country" in value and (
        not isinstance(value["country"], str) or not _COUNTRY.match(value["country"])
    ):
        raise ValidationFailed(
            "customer_invalid",
            "customer.country must be an upper-case ISO 3166 alpha-2 code",
            param="customer.country",
        )
    if "country" in value:
        customer["country"] = value["country"]
    return customer


@dataclass(frozen=True)
class PaymentInput:
    amount: int
    currency: str
    payment_method: dict[str, str]
    capture_method: str
    customer: dict[str, str] = field(default_factory=dict)
    description: str = ""
    merchant_reference: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


_PAYMENT_FIELDS = {
    "amount",
    "currency",
    "payment_method",
    "capture_method",
    "customer",
    "description",
    "merchant_reference",
    "metadata",
}


def validate_payment_create(body: Any) -> PaymentInput:
    """The body of ``POST /v1/payments``, validated field by field in the contract's order."""
    if not isinstance(body, dict):
        raise ValidationFailed("invalid_request", "the body must be a JSON object")
    unknown = set(body) - _PAYMENT_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationFailed("parameter_unknown", f"unknown parameter: {name}", param=name)
    for required in ("amount", "currency", "payment_method"):
        if required not in body:
            raise ValidationFailed("parameter_missing", f"{required} is required", param=required)
    currency = validate_currency(body["currency"])
    capture_method = body.get("capture_method", CaptureMethod.AUTOMATIC)
    if capture_method not in CaptureMethod.values:
        raise ValidationFailed(
            "capture_method_invalid",
            "capture_method must be 'automatic' or 'manual'",
            param="capture_method",
        )
    return PaymentInput(
        amount=validate_amount(body["amount"], currency),
        currency=currency,
        payment_method=validate_payment_method(body["payment_method"]),
        capture_method=capture_method,
        customer=validate_customer(body.get("customer")),
        description=_string(body, "description", 1000),
        merchant_reference=_string(body, "merchant_reference", 255),
        metadata=validate_metadata(body.get("metadata")),
    )


@dataclass(frozen=True)
class ListParams:
    limit: int
    starting_after: str | None
    ending_before: str | None
    status: str | None
    created_gte: datetime | None
    created_lt: datetime | None
    merchant_reference: str | None


def _datetime_param(params: Mapping[str, str], name: str) -> datetime | None:
    raw = params.get(name)
    if raw is None:
        return None
    parsed = parse_datetime(raw)
    if parsed is None or parsed.tzinfo is None:
        raise ValidationFailed(
            "parameter_invalid",
            f"{name} must be an ISO 8601 time with a UTC offset, e.g. 2026-01-31T12:00:00Z",
            param=name,
        )
    return parsed


def _cursor_param(params: Mapping[str, str], name: str) -> str | None:
    raw = params.get(name)
    if raw is not None and not _OBJECT_ID.match(raw):
        raise ValidationFailed("parameter_invalid", f"{name} must be an object id", param=name)
    return raw


def validate_list_params(params: Mapping[str, str]) -> ListParams:
    """Query parameters of ``GET /v1/payments``."""
    raw_limit = params.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise ValidationFailed(
            "parameter_invalid", "limit must be an integer from 1 to 100", param="limit"
        )
    status = params.get("status")
    if status is not None and status not in PaymentStatus.values:
        raise ValidationFailed("parameter_invalid", f"unknown status: {status}", param="status")
    starting_after = _cursor_param(params, "starting_after")
    ending_before = _cursor_param(params, "ending_before")
    if starting_after and ending_before:
        raise ValidationFailed(
            "parameter_invalid",
            "send starting_after or ending_before, not both",
            param="ending_before",
        )
    return ListParams(
        limit=int(raw_limit),
        starting_after=starting_after,
        ending_before=ending_before,
        status=status,
        created_gte=_datetime_param(params, "created_gte"),
        created_lt=_datetime_param(params, "created_lt"),
        merchant_reference=params.get("merchant_reference"),
    )


@dataclass(frozen=True)
class AmountInput:
    amount: int | None
    reason: str = ""


def validate_amount_body(body: Any, currency: str, *, allowed: frozenset[str]) -> AmountInput:
    """A body of ``{"amount": optional[, "reason": optional]}`` (capture, refund, cancel)."""
    if body is None or body == "":
        body = {}
    if not isinstance(body, dict):
        raise ValidationFailed("invalid_request", "the body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationFailed("parameter_unknown", f"unknown parameter: {name}", param=name)
    amount = body.get("amount")
    return AmountInput(
        amount=None if amount is None else validate_amount(amount, currency),
        reason=_string(body, "reason", 500) if "reason" in allowed else "",
    )


def parse_if_match(value: str | None) -> int | None:
    """``If-Match: <version>`` (quotes allowed, as for an ETag); ``None`` when absent."""
    if value is None:
        return None
    raw = value.strip().strip('"')
    if not raw.isdigit():
        raise ValidationFailed(
            "if_match_invalid", "If-Match must be the payment's version number", param="If-Match"
        )
    return int(raw)
