"""The outbox message list for staff: the backlog counts above it, dead-lettered rows one click
away with their error, and the requeue action only for staff allowed to change messages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db

LIST = "/admin/outbox/outboxmessage/"


def message(
    index: int, state: str, *, error: str = "", published_ago: timedelta | None = None
) -> OutboxMessage:
    row = OutboxMessage.objects.create(
        event_id=f"evt_admin_{index}",
        event_type="payment.captured",
        aggregate_type="payment",
        aggregate_id=f"pay_admin_{index}",
        sequence=1,
        merchant_id="mer_admin",
        payload={},
        state=state,
        last_error=error,
        dead_at=timezone.now() if state == "dead" else None,
    )
    if published_ago is not None:
        published = timezone.now() - published_ago
        OutboxMessage.objects.filter(pk=row.pk).update(
            created_at=published - timedelta(seconds=1), published_at=published
        )
    return row


@pytest.fixture
def superuser() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw-12345678"))
    return client


@pytest.fixture
def viewer() -> Client:
    """Staff who may look at outbox messages and nothing more."""
    user = User.objects.create_user("viewer", password="pw-12345678", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_outboxmessage"))
    client = Client()
    client.force_login(user)
    return client


def test_the_list_opens_with_pending_dead_and_published_counts(superuser: Client) -> None:
    for index in range(3):
        message(index, "pending")
    message(3, "dead", error="broker refused: message too large")
    message(4, "dead", error="broker refused: message too large")
    message(5, "published", published_ago=timedelta(minutes=5))
    message(6, "published", published_ago=timedelta(hours=3))

    html = superuser.get(LIST).content.decode()

    assert 'data-outbox-state="pending"><strong>3</strong> pending</a>' in html
    assert 'data-outbox-state="dead"><strong>2</strong> dead-lettered</a>' in html
    assert 'data-outbox-state="published"><strong>1</strong> published in the last hour</a>' in html
    assert 'href="/admin/dashboard/"' in html


def test_dead_rows_are_one_click_away_with_their_error(superuser: Client) -> None:
    message(1, "pending")
    message(2, "dead", error="broker refused: message too large " + "x" * 200)
    html = superuser.get(f"{LIST}?state__exact=dead").content.decode()
    assert "pay_admin_2" in html
    assert "pay_admin_1" not in html
    assert "broker refused: message too large" in html
    assert "x" * 100 not in html


def test_a_viewer_sees_the_list_but_cannot_requeue(viewer: Client) -> None:
    dead = message(1, "dead")
    listing = viewer.get(LIST)
    response = viewer.post(LIST, {"action": "requeue", "_selected_action": [dead.pk]})
    assert listing.status_code == 200
    assert 'value="requeue"' not in listing.content.decode()
    assert 'data-outbox-state="dead"><strong>1</strong>' in listing.content.decode()
    # Without an action it may run, the POST is only the list again.
    assert response.status_code == 200
    assert OutboxMessage.objects.get(pk=dead.pk).state == "dead"


def test_requeue_moves_only_dead_rows_back_to_pending(superuser: Client) -> None:
    dead = message(1, "dead")
    published = message(2, "published", published_ago=timedelta(minutes=1))
    response = superuser.post(
        LIST, {"action": "requeue", "_selected_action": [dead.pk, published.pk]}
    )
    assert response.status_code == 302
    assert OutboxMessage.objects.get(pk=dead.pk).state == "pending"
    assert OutboxMessage.objects.get(pk=dead.pk).dead_at is None
    assert OutboxMessage.objects.get(pk=published.pk).state == "published"
    assert 'data-outbox-state="dead"><strong>0</strong>' in superuser.get(LIST).content.decode()
