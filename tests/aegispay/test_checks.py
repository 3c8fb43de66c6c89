from __future__ import annotations

from django.test import override_settings

from aegispay.checks import timeouts_are_ordered


def test_the_default_settings_pass() -> None:
    assert timeouts_are_ordered() == []


@override_settings(GATEWAY_TIMEOUT_SECONDS=120)
def test_a_gateway_timeout_above_the_soft_limit_is_an_error() -> None:
    assert [e.id for e in timeouts_are_ordered()] == ["aegispay.E001"]


@override_settings(GATEWAY_TIMEOUT_SECONDS=25, CELERY_TASK_SOFT_TIME_LIMIT=60)
def test_a_lookup_send_and_lookup_past_the_soft_limit_is_an_error() -> None:
    assert [e.id for e in timeouts_are_ordered()] == ["aegispay.E001"]


@override_settings(CELERY_BROKER_TRANSPORT_OPTIONS={"visibility_timeout": 5})
def test_a_short_visibility_timeout_is_an_error() -> None:
    assert [e.id for e in timeouts_are_ordered()] == ["aegispay.E002"]
