"""Risk checks before authorization, and the hooks of your own: registered checks, guards
before commands, listeners after commit, each with a time limit and isolated from failures."""

from __future__ import annotations

import json
import time

import pytest
from django.contrib.auth.models import User
from django.test import Client

from gateways.sandbox.ledger import charge_count
from payments.hooks import HOOK_FAILURES
from payments.models import Payment, PaymentEvent, Refund, RiskRules
from payments.services import payment_create
from payments.tasks import payment_process
from tests.conftest import VISA, MerchantClient
from tests.payments import hook_examples
from tests.payments.helpers import payment_in
from tests.payments.test_api import error

pytestmark = pytest.mark.django_db

EXAMPLES = "tests.payments.hook_examples"


def processed(api: MerchantClient, **body) -> Payment:
    """A payment made through the API and taken through its processing task."""
    response = api.post(
        "/v1/payments", data=json.dumps({**VISA, **body}), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    payment_process.apply(args=[response.json()["id"]])
    return Payment.objects.get(pk=response.json()["id"])


def assessed(payment: Payment) -> dict:
    return PaymentEvent.objects.get(payment=payment, type="payment.risk_assessed").data


def assert_declined(payment: Payment, rule: str) -> None:
    assert (payment.status, payment.failure_code) == ("failed", "risk_declined")
    assert not payment.attempts.exists()
    assert charge_count(payment.id) == 0
    data = assessed(payment)
    assert data["decision"] == "decline"
    assert rule in [fired["rule"] for fired in data["rules"]]


def failures(kind: str, hook: str, outcome: str) -> float:
    return HOOK_FAILURES.labels(kind=kind, hook=hook, outcome=outcome)._value.get()


# --- built-in rules ---


def test_an_amount_over_the_merchants_limit_is_declined_before_any_gateway(
    api: MerchantClient,
) -> None:
    RiskRules.objects.create(merchant=api.merchant, max_amounts={"USD": 1500})
    declined = processed(api, amount=2000)
    assert_declined(declined, "amount_limit")
    assert api.get(f"/v1/payments/{declined.id}").json()["failure"]["code"] == "risk_declined"

    allowed = processed(api, amount=1500)
    assert allowed.status != "failed"
    assert not PaymentEvent.objects.filter(payment=allowed, type="payment.risk_assessed").exists()
    started = PaymentEvent.objects.get(payment=allowed, type="payment.processing")
    assert started.data["risk"] == {"decision": "approve", "rules": [], "unchecked": []}
    # Another currency has no limit here.
    assert processed(api, amount=2000, currency="EUR").status != "failed"


def test_a_blocked_country_is_declined(api: MerchantClient) -> None:
    RiskRules.objects.create(merchant=api.merchant, blocked_countries=["KP"])
    assert_declined(processed(api, customer={"country": "KP"}), "blocked_country")
    assert processed(api, customer={"country": "US"}).status != "failed"


def test_the_default_blocked_countries_come_from_settings(api: MerchantClient, settings) -> None:
    settings.RISK_BLOCKED_COUNTRIES = ["IR"]
    assert_declined(processed(api, customer={"country": "IR"}), "blocked_country")


def test_card_velocity_counts_per_token_in_redis(
    api: MerchantClient, other_api: MerchantClient
) -> None:
    RiskRules.objects.create(merchant=api.merchant, card_velocity_limit=2)
    assert [processed(api).status != "failed" for _ in range(2)] == [True, True]
    assert_declined(processed(api), "card_velocity")
    other_card = {"type": "card", "token": "tok_mastercard"}
    assert processed(api, payment_method=other_card).status != "failed"
    # Another merchant's counters are its own.
    assert processed(other_api).status != "failed"


def test_customer_velocity_counts_per_customer(api: MerchantClient) -> None:
    RiskRules.objects.create(merchant=api.merchant, customer_velocity_limit=1)
    assert processed(api, customer={"id": "cus_1"}).status != "failed"
    assert_declined(processed(api, customer={"id": "cus_1"}), "customer_velocity")
    assert processed(api, customer={"id": "cus_2"}).status != "failed"


def test_disabled_rules_do_not_run(api: MerchantClient) -> None:
    RiskRules.objects.create(merchant=api.merchant, enabled=False, max_amounts={"USD": 1})
    assert processed(api).status != "failed"


def test_a_failing_redis_leaves_velocity_unchecked_and_the_payment_goes_on(
    api: MerchantClient, settings
) -> None:
    RiskRules.objects.create(merchant=api.merchant, card_velocity_limit=1)
    caches = {name: dict(config) for name, config in settings.CACHES.items()}
    caches["default"]["LOCATION"] = "redis://127.0.0.1:1/0"  # nothing listens there
    caches["default"].setdefault("OPTIONS", {})
    caches["default"]["OPTIONS"] = {
        **caches["default"]["OPTIONS"],
        "SOCKET_CONNECT_TIMEOUT": 0.2,
        "SOCKET_TIMEOUT": 0.2,
    }
    payment = payment_create(
        merchant=api.merchant,
        amount=1000,
        currency="USD",
        payment_method={"type": "card", "token": "tok_visa"},
        actor="test",
    )
    from payments.risk import risk_assess

    settings.CACHES = caches
    assessment = risk_assess(payment)
    assert assessment.unchecked == ("card_velocity",)
    assert not assessment.declined


# --- checks, guards and listeners of your own ---


def test_a_registered_check_declines(api: MerchantClient, settings) -> None:
    settings.RISK_CHECKS = [f"{EXAMPLES}.no_test_cards_for_big_amounts"]
    assert_declined(processed(api, amount=20_000), "big_test_card")
    assert processed(api, amount=5_000).status != "failed"


def test_a_check_that_fails_or_runs_over_counts_as_allowed_and_is_counted(
    api: MerchantClient, settings
) -> None:
    settings.RISK_CHECKS = [f"{EXAMPLES}.raises", f"{EXAMPLES}.sleeps"]
    settings.RISK_CHECK_TIMEOUT_SECONDS = 0.2
    before = (
        failures("risk_check", f"{EXAMPLES}.raises", "error"),
        failures("risk_check", f"{EXAMPLES}.sleeps", "timeout"),
    )
    started = time.monotonic()
    payment = processed(api)
    assert time.monotonic() - started < 2.5  # waited 0.2 s for the sleeper, not its 3 s
    assert payment.status != "failed"
    assert assessed(payment)["unchecked"] == [f"{EXAMPLES}.raises", f"{EXAMPLES}.sleeps"]
    after = (
        failures("risk_check", f"{EXAMPLES}.raises", "error"),
        failures("risk_check", f"{EXAMPLES}.sleeps", "timeout"),
    )
    assert after == (before[0] + 1, before[1] + 1)


def test_a_failing_check_declines_when_so_configured(api: MerchantClient, settings) -> None:
    settings.RISK_CHECKS = [f"{EXAMPLES}.raises"]
    settings.RISK_CHECK_FAILURE = "decline"
    assert_declined(processed(api), f"{EXAMPLES}.raises")


def refund(api: MerchantClient, payment: Payment):
    return api.post(
        f"/v1/payments/{payment.id}/refunds", data="{}", content_type="application/json"
    )


def test_a_guard_refuses_a_command_with_its_reason_and_nothing_is_written(
    api: MerchantClient, settings
) -> None:
    settings.PAYMENT_GUARDS = [f"{EXAMPLES}.no_refunds_on_disputed_orders"]
    disputed = payment_in(api.merchant, "completed", metadata={"disputed": "yes"})
    status, code, _ = error(refund(api, disputed))
    assert (status, code) == (422, "command_refused")
    assert "disputed" in refund(api, disputed).json()["error"]["message"]
    assert Payment.objects.get(pk=disputed.id).version == disputed.version
    assert not Refund.objects.filter(payment=disputed).exists()

    fine = payment_in(api.merchant, "completed")
    assert refund(api, fine).status_code == 201


def test_a_guard_that_fails_or_runs_over_lets_the_command_through(
    api: MerchantClient, settings
) -> None:
    settings.PAYMENT_GUARDS = [f"{EXAMPLES}.raises", f"{EXAMPLES}.sleeps"]
    settings.PAYMENT_HOOK_TIMEOUT_SECONDS = 0.2
    payment = payment_in(api.merchant, "completed")
    started = time.monotonic()
    assert refund(api, payment).status_code == 201
    assert time.monotonic() - started < 2.5


def test_listeners_hear_each_event_after_commit_only(
    api: MerchantClient, settings, django_capture_on_commit_callbacks
) -> None:
    settings.PAYMENT_LISTENERS = [f"{EXAMPLES}.remember_events", f"{EXAMPLES}.raises"]
    hook_examples.SEEN.clear()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        payment = payment_in(api.merchant, "authorized")
        assert hook_examples.SEEN == []  # nothing before the commit
    for callback in callbacks:
        callback()
    types = [event["type"] for event in hook_examples.SEEN if event["payment"] == payment.id]
    assert types == ["payment.initiated", "payment.processing", "payment.authorized"]
    # The listener that raised changed nothing for the one after it, nor for the payment.
    assert Payment.objects.get(pk=payment.id).status == "authorized"


# --- the back office ---


def test_staff_set_a_merchants_risk_rules_in_the_admin(api: MerchantClient) -> None:
    staff = Client()
    staff.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw-123456789"))
    fields = {
        "merchant": api.merchant.id,
        "enabled": "on",
        "max_amounts": '{"USD": 1500}',
        "blocked_countries": '["KP"]',
        "card_velocity_limit": "",
        "customer_velocity_limit": "",
        "velocity_window_seconds": "",
    }
    bad = staff.post("/admin/payments/riskrules/add/", {**fields, "blocked_countries": '["kp1"]'})
    assert bad.status_code == 200 and "ISO 3166-1" in bad.content.decode()
    assert not RiskRules.objects.exists()
    saved = staff.post("/admin/payments/riskrules/add/", fields)
    assert saved.status_code == 302
    assert_declined(processed(api, amount=2000), "amount_limit")
