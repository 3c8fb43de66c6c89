"""Staff can read payments, their attempts and events in the admin, and cannot edit them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import make_client
from tests.payments.helpers import payment_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw-12345678"))
    return client


def test_payment_list_and_detail_show_the_timeline(staff: Client) -> None:
    payment = payment_in(make_client().merchant, "completed")
    listing = staff.get("/admin/payments/payment/")
    detail = staff.get(f"/admin/payments/payment/{payment.id}/change/")
    assert listing.status_code == detail.status_code == 200
    assert payment.id in listing.content.decode()
    assert "payment.captured" in detail.content.decode()
    assert "AegisPay back office" in detail.content.decode()


def test_payments_cannot_be_edited_or_deleted(staff: Client) -> None:
    payment = payment_in(make_client().merchant, "authorized")
    post = staff.post(f"/admin/payments/payment/{payment.id}/change/", {"amount": 1})
    delete = staff.post(f"/admin/payments/payment/{payment.id}/delete/", {"post": "yes"})
    assert post.status_code == 403
    assert delete.status_code == 403
    assert payment.__class__.objects.get(pk=payment.id).amount == 1000


def test_the_detail_shows_each_attempts_routing_decision(staff: Client) -> None:
    from gateways.resilience import gateway_available
    from payments.services import payment_attempt_begin

    payment = payment_in(make_client(strategy="priority").merchant, "initiated")
    payment_attempt_begin(payment_id=payment.id, available=gateway_available)
    detail = staff.get(f"/admin/payments/payment/{payment.id}/change/").content.decode()
    assert "&quot;strategy&quot;: &quot;priority&quot;" in detail
    assert "&quot;candidates&quot;" in detail
