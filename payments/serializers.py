"""The merchant API's shapes, each described once: these serializers validate the input, render
the output and give drf-spectacular the OpenAPI schema.

Input serializers raise DRF's own codes (``required``, ``null``, ``invalid``, ...) or, where a
rule has a code of its own, the contract's code; ``payments/api_errors.py`` (``validation_failed``)
turns a serializer's errors into the one ``ValidationFailed`` the API answers, in one place.
Every field enforces its rule in ``to_internal_value`` with the contract's message (``_Checked``):
DRF's lenient coercions (``"2000"`` for an integer, ``5`` for a string) are refused, as they
always were.

Output serializers render what the services return, key for key in the contract's order. JSON
the API stored as it validated it (``payment_method``, ``customer``, ``metadata``, an event's
``data``) is passed through as stored.

The list envelopes and events have a field named ``data``. mypy reads it as overriding the
``Serializer.data`` property (``# type: ignore[assignment]`` below); it does not: DRF's
``SerializerMetaclass`` pops declared fields off the class into ``_declared_fields``, so
``.data`` stays the property and ``data`` is only a field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.utils.dateparse import parse_datetime
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from common.isotime import iso

from . import currencies
from .models import (
    EVENT_TYPES,
    EVENT_WILDCARDS,
    ApiKey,
    CaptureMethod,
    Payment,
    PaymentEvent,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from .scopes import SCOPES

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{1,255}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_OBJECT_ID = re.compile(r"^[a-z]{2,4}_[0-9a-z]{26}$")
_DIGITS = re.compile(r"^[0-9]+$")

_AMOUNT_INVALID = "amount must be a positive integer in the currency's minor unit"


def _messages(message: str) -> dict[str, Any]:
    """The same contract message for every DRF code a field can raise."""
    codes = ("required", "null", "blank", "invalid", "invalid_choice")
    return dict.fromkeys(codes, message)


# --- input ---


class _Checked:
    """A field whose ``to_internal_value`` enforces all of its rule, with the contract's message.

    The validators DRF derives from ``max_length``, ``min_value`` and the like stay on the field
    only to describe it in the schema; they do not run, since they would add rules the API never
    had (DRF's ``CharField`` refuses NUL characters and trims blanks, for one).
    """

    def run_validation(self, data: Any = empty) -> Any:
        is_empty, data = self.validate_empty_values(data)  # type: ignore[attr-defined]
        if is_empty:
            return data
        return self.to_internal_value(data)  # type: ignore[attr-defined]


class StringField(_Checked, serializers.CharField):
    """A string of at most ``max_length`` characters; null reads as ``""`` (so the schema says
    ``nullable``). Its error code is named after the field itself: ``description_invalid``, and
    ``id_invalid`` for ``customer.id``.
    """

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        return super().validate_empty_values("" if data is None else data)

    def __init__(self, *, max_length: int, **kwargs: Any) -> None:
        super().__init__(
            max_length=max_length,
            allow_blank=True,
            allow_null=True,
            trim_whitespace=False,
            **kwargs,
        )
        self.limit = max_length

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or len(data) > self.limit:
            raise serializers.ValidationError(
                f"{self.field_name} must be a string of at most {self.limit} characters",
                code=f"{self.field_name}_invalid",
            )
        return data


class PatternField(_Checked, serializers.CharField):
    """A string that matches ``pattern`` in full, which the schema shows as its ``pattern``.

    In full (``fullmatch``): with ``re.match`` a pattern's ``$`` also matched before a final
    newline, so ``"tok_visa\n"`` passed where the schema's (ECMA) pattern refuses it.
    """

    def __init__(self, pattern: re.Pattern[str], message: str, **kwargs: Any) -> None:
        self.pattern = pattern
        kwargs.setdefault("error_messages", _messages(message))
        super().__init__(trim_whitespace=False, **kwargs)
        self.validators.append(RegexValidator(pattern))  # for the schema; never run (_Checked)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or not self.pattern.fullmatch(data):
            self.fail("invalid")
        return data


class EmailField(PatternField, serializers.EmailField):
    """``PatternField`` with the schema's ``format: email``."""


@extend_schema_field({"type": "string", "enum": sorted(currencies.EXPONENTS)})
class CurrencyField(_Checked, serializers.CharField):
    default_error_messages = _messages("currency must be an upper-case ISO 4217 code such as USD")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_length=3, max_length=3, help_text="ISO 4217, upper case", **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or not currencies.is_supported(data):
            self.fail("invalid")
        return data


class AmountField(_Checked, serializers.IntegerField):
    """A positive integer in the currency's minor unit (``true``, ``10.5`` and ``"2000"`` are
    not). The serializer bounds it by the currency (``amount_bound``)."""

    default_error_messages = _messages(_AMOUNT_INVALID)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=1, help_text="Minor units of the currency", **kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int) or data <= 0:
            self.fail("invalid")
        return data


def amount_bound(amount: int, currency: str) -> int:
    """``amount`` if within the currency's bound: at most ten billion major units (with KWD's
    three decimals that is 10**13 minor units). Raises ``amount_too_large``."""
    bound = settings.MAX_AMOUNT_MAJOR_UNITS * 10 ** currencies.exponent(currency)
    if amount > bound:
        raise serializers.ValidationError(
            f"amount may be at most {bound} minor units of {currency}", code="amount_too_large"
        )
    return amount


@extend_schema_field(
    {
        "type": "object",
        "maxProperties": settings.METADATA_MAX_KEYS,
        # The keys' bound: JSON Schema's propertyNames, which OpenAPI 3.0 lacks (3.1 has it),
        # so as an extension.
        "x-property-names": {"minLength": 1, "maxLength": settings.METADATA_MAX_KEY_LENGTH},
        "additionalProperties": {
            "type": "string",
            "maxLength": settings.METADATA_MAX_VALUE_LENGTH,
        },
    }
)
class MetadataField(_Checked, serializers.DictField):
    """Up to ``METADATA_MAX_KEYS`` string values; null reads as ``{}``. A bad entry's error is
    keyed by its key, which the error's ``param`` names as ``metadata[key]``."""

    default_error_messages = _messages("metadata must be an object")

    def __init__(self, **kwargs: Any) -> None:
        child = serializers.CharField(max_length=settings.METADATA_MAX_VALUE_LENGTH)
        super().__init__(child=child, required=False, default=dict, allow_null=True, **kwargs)

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data is None:
            return (True, {})
        return super().validate_empty_values(data)

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict):
            self.fail("invalid")
        if len(data) > settings.METADATA_MAX_KEYS:
            raise serializers.ValidationError(
                f"metadata may have at most {settings.METADATA_MAX_KEYS} keys", code="invalid"
            )
        for key, item in data.items():
            if not key or len(key) > settings.METADATA_MAX_KEY_LENGTH:
                message = (
                    f"metadata keys must be 1 to {settings.METADATA_MAX_KEY_LENGTH} characters"
                )
            elif not isinstance(item, str) or len(item) > settings.METADATA_MAX_VALUE_LENGTH:
                message = (
                    f"metadata values must be strings of at most "
                    f"{settings.METADATA_MAX_VALUE_LENGTH} characters"
                )
            else:
                continue
            raise serializers.ValidationError({key: [message]}, code="invalid")
        return dict(data)

    def to_representation(self, value: Any) -> Any:
        return value  # as stored


class StrictSerializer(serializers.Serializer):
    # An input object that refuses parameters it does not declare, before checking any field
    # (its schema says ``additionalProperties: false``: ``StrictSerializerSchema``).
    #
    # ``unknown_message``: the object's own message for unknown keys (a nested object); without
    # it, the first unknown key in sorted order is ``parameter_unknown`` (a request body).

    unknown_message: str | None = None

    @classmethod
    def schema_rules(cls) -> dict[str, Any]:
        """JSON Schema keywords for the object's rules between fields (one field's bound set by
        another's value), added to its schema; none by default."""
        return {}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown and self.unknown_message is not None:
                raise serializers.ValidationError(
                    self.unknown_message.format(names=", ".join(unknown)), code="invalid"
                )
            if unknown:
                raise serializers.ValidationError(
                    {unknown[0]: [f"unknown parameter: {unknown[0]}"]}, code="parameter_unknown"
                )
        return dict(super().to_internal_value(data))


class StrictSerializerSchema(OpenApiSerializerExtension):
    """A ``StrictSerializer``'s schema: drf-spectacular's, with ``additionalProperties: false``
    (an unknown parameter is refused) and the serializer's ``schema_rules``."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        # The target is the serializer or its class; schema_rules is a classmethod of both.
        rules: dict[str, Any] = self.target.schema_rules()
        return {**schema, "additionalProperties": False, **rules}


class PaymentMethodSerializer(StrictSerializer):
    # In: ``type`` and ``token`` (out: ``PaymentMethodOutputSerializer``).

    default_error_messages = _messages("payment_method must be an object with type and token")
    unknown_message = "payment_method has unknown fields: {names}"

    type = serializers.ChoiceField(
        choices=["card"], error_messages=_messages("payment_method.type must be 'card'")
    )
    token = PatternField(
        _TOKEN,
        "payment_method.token must be a gateway token such as tok_visa",
        max_length=255,
        help_text="A gateway token such as tok_visa; never a card number",
    )


_CUSTOMER_INVALID = "customer must be an object with id, email, country and name only"


class CustomerSerializer(StrictSerializer):
    # Only the keys sent, in this order; null reads as ``{}``.

    default_error_messages = {"invalid": _CUSTOMER_INVALID}
    unknown_message = _CUSTOMER_INVALID

    id = StringField(max_length=255, required=False)
    name = StringField(max_length=255, required=False)
    email = EmailField(_EMAIL, "customer.email is not valid", required=False)
    country = PatternField(
        _COUNTRY,
        "customer.country must be an upper-case ISO 3166 alpha-2 code",
        min_length=2,
        max_length=2,
        required=False,
    )

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data is None:
            return (True, {})
        return super().validate_empty_values(data)

    def to_representation(self, instance: Any) -> Any:
        return instance  # as stored


class PaymentCreateInputSerializer(StrictSerializer):
    # The body of ``POST /v1/payments``.

    # A missing parameter is reported first, in the order declared here (the contract's);
    # otherwise the first bad value in this order: the currency before the amount it bounds.
    error_order = (
        "currency",
        "capture_method",
        "amount",
        "payment_method",
        "customer",
        "description",
        "merchant_reference",
        "metadata",
    )

    amount = AmountField()
    currency = CurrencyField()
    payment_method = PaymentMethodSerializer()
    capture_method = serializers.ChoiceField(
        choices=CaptureMethod.choices,
        default=CaptureMethod.AUTOMATIC,
        error_messages=_messages("capture_method must be 'automatic' or 'manual'"),
    )
    customer = CustomerSerializer(required=False, default=dict, allow_null=True)
    description = StringField(max_length=1000, default="")
    merchant_reference = StringField(max_length=255, default="")
    metadata = MetadataField()

    def validate_amount(self, amount: int) -> int:
        currency = self.initial_data.get("currency")
        if isinstance(currency, str) and currencies.is_supported(currency):
            return amount_bound(amount, currency)
        return amount  # the currency's own error is reported before the amount's

    @classmethod
    def schema_rules(cls) -> dict[str, Any]:
        """``amount_bound``: the amount's maximum depends on the currency's exponent. (The
        currencies of each exponent are a pattern, not an enum: drf-spectacular's enum hook
        would give the four sets one component.)"""
        by_exponent: dict[int, list[str]] = {}
        for code, exponent in sorted(currencies.EXPONENTS.items()):
            by_exponent.setdefault(exponent, []).append(code)
        return {
            "anyOf": [
                {
                    "properties": {
                        "currency": {"type": "string", "pattern": f"^(?:{'|'.join(codes)})$"},
                        "amount": {"maximum": settings.MAX_AMOUNT_MAJOR_UNITS * 10**exponent},
                    }
                }
                for exponent, codes in sorted(by_exponent.items())
            ]
        }


class PaymentUpdateInputSerializer(StrictSerializer):
    # The body of ``POST /v1/payments/{id}``: the merchant's own fields, each optional.
    # ``metadata`` is merged into what is stored (``""`` removes a key).

    description = StringField(max_length=1000, required=False)
    metadata = MetadataField()


MAX_OVERLAP_SECONDS = 7 * 24 * 3600


class OverlapField(serializers.IntegerField):
    """``expires_in`` of a rotation (a webhook secret, an API key): how long the old one stays
    valid beside the new one, 0 to 7 days, default a day."""

    def __init__(self, meaning: str) -> None:
        super().__init__(
            min_value=0,
            max_value=MAX_OVERLAP_SECONDS,
            default=24 * 3600,
            help_text=f"{meaning} (default a day)",
        )

    def to_internal_value(self, data: Any) -> int:
        if (
            isinstance(data, bool)
            or not isinstance(data, int)
            or not (0 <= data <= MAX_OVERLAP_SECONDS)
        ):
            raise serializers.ValidationError(
                f"expires_in must be an integer number of seconds from 0 to {MAX_OVERLAP_SECONDS}",
                code="expires_in_invalid",
            )
        return data


class JsonBooleanField(_Checked, serializers.BooleanField):
    """JSON's ``true`` or ``false`` only: not DRF's ``"yes"``, ``"on"``, ``1`` and the like,
    which a client sending them most likely did not mean as a boolean."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


@extend_schema_field({"type": "string", "enum": list(SCOPES)})
class ScopeNameField(serializers.CharField):
    """A scope's name; which names there are is the service's rule (``api_key_scopes_validate``,
    with its own message), which the schema shows as an enum. Taken as sent: DRF's trimming
    made ``" payments:read"`` a scope."""

    def __init__(self) -> None:
        super().__init__(trim_whitespace=False)


class ApiKeyCreateInputSerializer(StrictSerializer):
    # The body of ``POST /v1/api_keys``. Scopes are checked by the service
    # (``api_key_scopes_validate``), which every caller gets.

    name = StringField(max_length=100, default="")
    restricted = JsonBooleanField(
        default=False, error_messages=_messages("restricted must be true or false")
    )
    scopes = serializers.ListField(
        child=ScopeNameField(),
        default=list,
        max_length=len(SCOPES),
        help_text=f"restricted keys only: any of {', '.join(SCOPES)}",
        error_messages=_messages("scopes must be a list of scope names"),
    )

    @classmethod
    def schema_rules(cls) -> dict[str, Any]:
        """``api_key_scopes_validate``: a secret key takes no scopes, a restricted one at least
        one."""
        # "not": an enum here would be taken for a choice set by drf-spectacular's enum hook.
        return {
            "anyOf": [
                {
                    "properties": {
                        "restricted": {"not": {"enum": [True]}},
                        "scopes": {"maxItems": 0},
                    }
                },
                {
                    "required": ["restricted", "scopes"],
                    "properties": {
                        "restricted": {"not": {"enum": [False]}},
                        "scopes": {"minItems": 1},
                    },
                },
            ]
        }


class AmountBodySerializer(StrictSerializer):
    # A body of optional parameters (capture, cancel, refund); no body at all is ``{}``.
    #
    # Through the API an amount is bounded by the payment itself, which the service checks (422
    # amount_exceeded): no payment holds more than its currency's bound, and a request's schema
    # cannot know the payment's currency (the API answered 400 amount_too_large to amounts its
    # schema called valid). The back office's form, which reads an amount typed in major units,
    # passes ``context["currency"]`` and has it bounded by the currency first.

    def run_validation(self, data: Any = empty) -> Any:
        return super().run_validation({} if data is None or data == "" else data)

    def validate_amount(self, amount: int | None) -> int | None:
        currency = self.context.get("currency")
        return amount if amount is None or currency is None else amount_bound(amount, currency)

    @classmethod
    def schema_rules(cls) -> dict[str, Any]:
        """A body of JSON ``null`` reads as no body, so the schema says ``nullable``."""
        return {"nullable": True}


class ApiKeyRollInputSerializer(AmountBodySerializer):
    # ``POST /v1/api_keys/{id}/roll``; no body at all is ``{}``.

    expires_in = OverlapField("seconds the old key stays valid beside the new one")


class CancelInputSerializer(AmountBodySerializer):
    """``POST /v1/payments/{id}/cancel`` takes no parameters (its schema shows no body)."""


class CaptureInputSerializer(AmountBodySerializer):
    amount = AmountField(required=False, allow_null=True, default=None)


class RefundInputSerializer(CaptureInputSerializer):
    reason = StringField(max_length=500, default="")


class LimitField(_Checked, serializers.IntegerField):
    default_error_messages = _messages("limit must be an integer from 1 to 100")

    def __init__(self) -> None:
        super().__init__(min_value=1, max_value=100, default=20, help_text="1 to 100, default 20")

    def to_internal_value(self, data: Any) -> int:
        # ASCII digits only: str.isdigit() also takes "²", which int() then refuses (a 500).
        if not _DIGITS.fullmatch(data) or not 1 <= int(data) <= 100:
            self.fail("invalid")
        return int(data)


class ObjectIdField(PatternField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(_OBJECT_ID, "", required=False, **kwargs)

    def bind(self, field_name: str, parent: Any) -> None:
        super().bind(field_name, parent)
        self.error_messages = _messages(f"{field_name} must be an object id")


class TimeParamField(_Checked, serializers.DateTimeField):
    """A time with a UTC offset (ISO 8601), as Django's ``parse_datetime`` reads it, in UTC:
    PostgreSQL takes offsets up to 15:59 only, and RFC 3339 (the schema's ``date-time``) any
    up to 23:59."""

    def __init__(self) -> None:
        super().__init__(required=False, help_text="ISO 8601 with a UTC offset")

    def to_internal_value(self, value: Any) -> datetime:
        try:
            parsed = parse_datetime(value)
            # Past the ends of the calendar in UTC (0001-01-01T00:00:00+01:00): OverflowError.
            utc = None if parsed is None or parsed.tzinfo is None else parsed.astimezone(UTC)
        except (ValueError, OverflowError):  # well formed, but no such time: 2026-02-30
            utc = None
        if utc is None:
            raise serializers.ValidationError(
                f"{self.field_name} must be an ISO 8601 time with a UTC offset, "
                "e.g. 2026-01-31T12:00:00Z",
                code="invalid",
            )
        return utc


class RawStringField(_Checked, serializers.CharField):
    """Any string, as sent (blank included): a filter value compared as is."""

    def __init__(self) -> None:
        super().__init__(required=False, allow_blank=True, trim_whitespace=False)

    def to_internal_value(self, data: Any) -> str:
        return str(data)


_AFTER = "the id to page on from, to older objects; not with ending_before"
_BEFORE = "the id to page back from, to newer objects; not with starting_after"


class _CursorPair:
    def validate_ending_before(self, value: str | None) -> str | None:
        starting_after = self.initial_data.get("starting_after")  # type: ignore[attr-defined]
        if starting_after and value:
            raise serializers.ValidationError(
                "send starting_after or ending_before, not both", code="invalid"
            )
        return value


class PageParamsSerializer(_CursorPair, serializers.Serializer):
    # ``?limit=&starting_after=&ending_before=`` of a newest-first list (other parameters are
    # ignored). Validate ``request.query_params.dict()``: the last value of a repeated one.

    contract_invalid_code = "parameter_invalid"

    limit = LimitField()
    starting_after = ObjectIdField(help_text=_AFTER)
    ending_before = ObjectIdField(help_text=_BEFORE)


_UNKNOWN_STATUS: dict[str, Any] = {"invalid_choice": "unknown status: {input}"}


class PaymentListParamsSerializer(_CursorPair, serializers.Serializer):
    # The query parameters of ``GET /v1/payments``, checked in this order.

    contract_invalid_code = "parameter_invalid"

    limit = LimitField()
    status = serializers.ChoiceField(
        choices=PaymentStatus.choices,
        required=False,
        error_messages=_UNKNOWN_STATUS,
    )
    starting_after = ObjectIdField(help_text=_AFTER)
    ending_before = ObjectIdField(help_text=_BEFORE)
    created_gte = TimeParamField()
    created_lt = TimeParamField()
    merchant_reference = RawStringField()


@extend_schema_field({"type": "string", "enum": sorted(EVENT_TYPES | EVENT_WILDCARDS)})
class EventTypeParamField(_Checked, serializers.CharField):
    """An event type (``payment.captured``) or a pattern of them (``payment.*``, ``*``): a
    misspelt type is refused, since it would silently match nothing."""

    def __init__(self) -> None:
        super().__init__(required=False, help_text="an event type, or payment.*, refund.* or *")

    def to_internal_value(self, data: Any) -> str:
        if data not in EVENT_TYPES | EVENT_WILDCARDS:
            raise serializers.ValidationError(
                "type must be an event type such as payment.captured, "
                "or one of payment.*, refund.*, *",
                code="invalid",
            )
        return str(data)


class EventListParamsSerializer(_CursorPair, serializers.Serializer):
    # The query parameters of ``GET /v1/events``.

    contract_invalid_code = "parameter_invalid"

    limit = LimitField()
    type = EventTypeParamField()
    starting_after = ObjectIdField(help_text=_AFTER)
    ending_before = ObjectIdField(help_text=_BEFORE)
    created_gte = TimeParamField()
    created_lt = TimeParamField()


class RefundListParamsSerializer(_CursorPair, serializers.Serializer):
    # The query parameters of ``GET /v1/refunds``.

    contract_invalid_code = "parameter_invalid"

    limit = LimitField()
    payment = ObjectIdField()
    status = serializers.ChoiceField(
        choices=RefundStatus.choices, required=False, error_messages=_UNKNOWN_STATUS
    )
    starting_after = ObjectIdField(help_text=_AFTER)
    ending_before = ObjectIdField(help_text=_BEFORE)
    created_gte = TimeParamField()
    created_lt = TimeParamField()


# --- output ---


class ConstantField(serializers.CharField):
    """The object's type name (``"payment"``, ``"list"``), the same on every object."""

    def __init__(self, value: str) -> None:
        self.value = value
        super().__init__(read_only=True)

    def get_attribute(self, instance: Any) -> str:
        return self.value


class IsoDateTimeField(serializers.DateTimeField):
    """ISO 8601 in UTC with a ``Z`` (``common.isotime.iso``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value: datetime) -> Any:
        return iso(value)


class BlankAsNullField(serializers.CharField):
    """A string column where ``""`` means none: ``null``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(read_only=True, allow_null=True, **kwargs)

    def get_attribute(self, instance: Any) -> Any:
        return super().get_attribute(instance) or None


class AsStoredDictField(serializers.DictField):
    """A JSON object passed through as stored."""

    def to_representation(self, value: Any) -> Any:
        return value


class FailureSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class RefundFailureSerializer(serializers.Serializer):
    code = serializers.CharField()


class PaymentMethodOutputSerializer(serializers.Serializer):
    """The payment method as stored: what was sent, and the gateway's ``brand`` and ``last4``
    once an authorisation has told them (an ``initiated`` payment has neither)."""

    type = serializers.ChoiceField(choices=["card"])
    token = serializers.CharField()
    brand = serializers.CharField(required=False)
    last4 = serializers.CharField(required=False)

    def to_representation(self, instance: Any) -> Any:
        return instance  # as stored


class PaymentOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = ConstantField("payment")
    status = serializers.ChoiceField(choices=PaymentStatus.choices)
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    capture_method = serializers.ChoiceField(choices=CaptureMethod.choices)
    amount_authorized = serializers.IntegerField()
    amount_captured = serializers.IntegerField()
    amount_refunded = serializers.IntegerField()
    payment_method = PaymentMethodOutputSerializer()
    customer = CustomerSerializer()
    description = serializers.CharField()
    merchant_reference = serializers.CharField()
    metadata = MetadataField()
    gateway = BlankAsNullField()
    gateway_reference = BlankAsNullField()
    failure = serializers.SerializerMethodField()
    authorization_expires_at = IsoDateTimeField(allow_null=True)
    livemode = serializers.BooleanField()
    version = serializers.IntegerField()
    created_at = IsoDateTimeField()
    updated_at = IsoDateTimeField()

    @extend_schema_field(FailureSerializer(allow_null=True))
    def get_failure(self, payment: Payment) -> dict[str, str] | None:
        if not payment.failure_code:
            return None
        return {"code": payment.failure_code, "message": payment.failure_message}


_PAYMENT_OUTPUT = PaymentOutputSerializer()


def payment_representation(payment: Payment) -> dict[str, Any]:
    """The payment as the API answers it (``PaymentOutputSerializer``), on every payment view.

    One serializer instance, reused, as ``event_payload`` does: ``to_representation`` keeps no
    state between calls, and binding a new instance's fields on every request cost more than
    rendering them (issue 13, make bench-api).
    """
    return dict(_PAYMENT_OUTPUT.to_representation(payment))


class PaymentListSerializer(serializers.Serializer):
    # Renders ``{"data": [payments], "has_more": bool}``.

    object = ConstantField("list")
    data = PaymentOutputSerializer(many=True)  # type: ignore[assignment]  # field, see top
    has_more = serializers.BooleanField()


class EventOutputSerializer(serializers.Serializer):
    # An event, as the API lists it and as its outbox message carries it.

    id = serializers.CharField()
    object = ConstantField("event")
    type = serializers.CharField()
    payment = serializers.CharField(source="payment_id")
    sequence = serializers.IntegerField()
    from_status = BlankAsNullField()
    to_status = serializers.CharField()
    data = AsStoredDictField()  # type: ignore[assignment]  # field, see top
    actor = serializers.CharField()
    livemode = serializers.BooleanField()
    created_at = IsoDateTimeField()


_EVENT_OUTPUT = EventOutputSerializer()


def event_payload(event: PaymentEvent) -> dict[str, Any]:
    """The event as a plain dict: its outbox message's payload, on the write path of every event.

    One serializer instance, reused: ``to_representation`` keeps no state between calls, and
    binding a new instance's fields costs about 15 times the rendering itself (166 against
    11 microseconds per event, measured on this 2-core machine).
    """
    return dict(_EVENT_OUTPUT.to_representation(event))


class EventListSerializer(serializers.Serializer):
    # Renders ``{"data": [events], "has_more": bool}``.

    object = ConstantField("list")
    data = EventOutputSerializer(many=True)  # type: ignore[assignment]  # field, see top
    has_more = serializers.BooleanField()


class RefundOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = ConstantField("refund")
    payment = serializers.CharField(source="payment_id")
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    reason = serializers.CharField()
    status = serializers.ChoiceField(choices=["pending", "succeeded", "failed"])
    failure = serializers.SerializerMethodField()
    livemode = serializers.BooleanField()
    created_at = IsoDateTimeField()
    updated_at = IsoDateTimeField()

    @extend_schema_field(RefundFailureSerializer(allow_null=True))
    def get_failure(self, refund: Refund) -> dict[str, str] | None:
        return {"code": refund.failure_code} if refund.failure_code else None


class RefundListSerializer(serializers.Serializer):
    # Renders ``{"data": [refunds], "has_more": bool}``.

    object = ConstantField("list")
    data = RefundOutputSerializer(many=True)  # type: ignore[assignment]  # field, see top
    has_more = serializers.BooleanField()


class ApiKeyOutputSerializer(serializers.Serializer):
    # An API key as listed: never the key itself, only its display prefix.

    id = serializers.CharField()
    object = ConstantField("api_key")
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="the key's first 12 characters")
    restricted = serializers.BooleanField()
    scopes = serializers.SerializerMethodField()
    livemode = serializers.BooleanField(source="live")
    created_at = IsoDateTimeField()
    last_used_at = IsoDateTimeField(allow_null=True)
    expires_at = IsoDateTimeField(allow_null=True)
    revoked_at = IsoDateTimeField(allow_null=True)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_scopes(self, key: ApiKey) -> list[str]:
        """A restricted key's scopes; every scope for a secret key."""
        return list(key.scopes) if key.restricted else list(SCOPES)


class ApiKeyCreatedSerializer(ApiKeyOutputSerializer):
    # The create and roll answer: the key and, this once, the key itself.

    # Not required: an idempotent replay answers the key as it is now, without it.
    secret = serializers.CharField(
        required=False, help_text="the API key; in the first answer only, never in a replay"
    )


class ApiKeyListSerializer(serializers.Serializer):
    # Renders ``{"data": [keys], "has_more": bool}``.

    object = ConstantField("list")
    data = ApiKeyOutputSerializer(many=True)  # type: ignore[assignment]  # field, see top
    has_more = serializers.BooleanField()


class ErrorDetailSerializer(serializers.Serializer):
    type = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()
    param = serializers.CharField(required=False)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ErrorSerializer, description=description)


# Shared by every merchant API view's schema (payments and webhooks): what any call may answer,
# and what a call with a body may answer besides.
ERROR_RESPONSES = {
    400: _error("The request is invalid: the error's code and param say why"),
    401: _error("No API key, or not a valid one"),
    403: _error("A restricted key without the scope this call needs (scope_missing)"),
    429: _error("Over the key's request budget (rate_limited); see Retry-After"),
    404: _error("No such object (or not this merchant's)"),
    405: _error("The path does not take this method"),
    500: _error("An internal error; nothing was done that the answer does not show"),
}
WRITE_ERROR_RESPONSES = ERROR_RESPONSES | {
    409: _error("In conflict with the object's state, its version, or a request in progress"),
    413: _error("The body is larger than the server accepts"),
    422: _error(
        "The Idempotency-Key was used with a different request (idempotency_key_reused), or the "
        "object's state refuses a well-formed request (amount_exceeded, command_refused)"
    ),
}
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    # payments/idempotency.py validate_idempotency_key: printable ASCII, no space.
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    OpenApiParameter.HEADER,
    description="1-255 printable characters",
)
