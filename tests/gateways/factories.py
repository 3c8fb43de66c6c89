"""Factories of gateway request values (plain frozen dataclasses, no database rows)."""

from __future__ import annotations

import uuid

import factory

from gateways.base import CaptureRequest, ChargeRequest, RefundRequest, VoidRequest


def _ref(prefix: str) -> factory.LazyFunction:
    return factory.LazyFunction(lambda: f"{prefix}_{uuid.uuid4().hex}")


class ChargeRequestFactory(factory.Factory):
    class Meta:
        model = ChargeRequest

    reference = _ref("att")
    order_reference = _ref("pay")
    amount = 2000
    currency = "USD"
    token = "tok_visa"
    capture = False


class CaptureRequestFactory(factory.Factory):
    class Meta:
        model = CaptureRequest

    reference = _ref("cap")
    gateway_reference = "ch_missing"
    amount = 2000
    currency = "USD"


class VoidRequestFactory(factory.Factory):
    class Meta:
        model = VoidRequest

    reference = _ref("void")
    gateway_reference = "ch_missing"


class RefundRequestFactory(factory.Factory):
    class Meta:
        model = RefundRequest

    reference = _ref("re")
    gateway_reference = "ch_missing"
    amount = 500
    currency = "USD"
