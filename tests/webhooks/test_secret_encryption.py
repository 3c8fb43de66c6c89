"""Endpoint signing secrets are encrypted at rest (common/encryption.py): the table holds Fernet
tokens, never a secret; deliveries are still signed with the secret itself; rows written under
an old key stay readable while it is listed after the new one, and ``reencrypt_secrets`` moves
them to the new key so the old one can go; a key that is gone is a clear error; and the
migration encrypts the secrets that were stored in the clear (and decrypts them backwards)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator

import pytest
import standardwebhooks
from cryptography.fernet import Fernet
from django.core.exceptions import FieldError
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import override_settings

from aegispay.celery import app as celery_app
from common.encryption import DecryptionError
from outbox.types import OutboxEvent
from tests.webhooks.receivers import Receiver
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.services import (
    webhook_deliveries_create,
    webhook_delivery_attempt,
    webhook_endpoint_create,
    webhook_endpoint_rotate_secret,
)
from webhooks.signing import HEADER, verify

KEY_A = base64.urlsafe_b64encode(b"key A of the webhook secret test").decode()
KEY_B = base64.urlsafe_b64encode(b"key B of the webhook secret test").decode()
MERCHANT = "mer_encryption"
PUBLIC_URL = "https://93.184.215.14/hooks"
BEFORE = [("webhooks", "0003_endpoint_previous_secret")]
AFTER = [("webhooks", "0004_encrypt_endpoint_secrets")]


@pytest.fixture
def broker() -> Iterator[None]:
    """An empty Celery queue afterwards: handing events over enqueues their sends."""
    yield
    celery_app.control.purge()


def stored(endpoint_id: str) -> tuple[str, str]:
    """The two columns as the table holds them, read with SQL, past the model."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT secret, previous_secret FROM outbox_webhookendpoint WHERE id = %s",
            [endpoint_id],
        )
        secret, previous = cursor.fetchone()
    return secret, previous


def endpoint_with_two_secrets() -> tuple[WebhookEndpoint, str, str]:
    """An endpoint whose secret was rotated with an overlap: (endpoint, old, new)."""
    endpoint, old = webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"])
    endpoint, new = webhook_endpoint_rotate_secret(
        merchant_id=MERCHANT, livemode=False, endpoint_id=endpoint.pk, overlap_seconds=3600
    )
    return endpoint, old, new


def reencrypt(*args: str) -> str:
    out = io.StringIO()
    call_command("reencrypt_secrets", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_the_table_holds_tokens_of_the_first_key_and_never_a_secret(settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    endpoint, old, new = endpoint_with_two_secrets()
    secret, previous = stored(endpoint.pk)

    assert new not in secret and old not in previous
    assert "whsec_" not in secret + previous
    assert Fernet(KEY_A).decrypt(secret).decode() == new
    assert Fernet(KEY_A).decrypt(previous).decode() == old
    loaded = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert (loaded.secret, loaded.previous_secret) == (new, old)


@pytest.mark.django_db
def test_no_previous_secret_is_stored_empty(settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    endpoint, secret = webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"])
    raw_secret, raw_previous = stored(endpoint.pk)
    assert raw_previous == "" and raw_secret != secret
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).previous_secret == ""


def test_an_encrypted_column_can_be_filtered_by_isnull_only() -> None:
    with pytest.raises(FieldError, match=r"WebhookEndpoint\.secret is encrypted"):
        WebhookEndpoint.objects.filter(secret="whsec_x")
    with pytest.raises(FieldError, match="not by startswith"):
        WebhookEndpoint.objects.filter(previous_secret__startswith="whsec_")
    WebhookEndpoint.objects.filter(previous_secret__isnull=True)


@override_settings(WEBHOOK_ALLOW_PRIVATE_URLS=True)
@pytest.mark.usefixtures("broker")
def test_a_delivery_is_signed_with_the_secret_not_with_what_is_stored(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    endpoint, receiver.secret = webhook_endpoint_create(
        merchant_id=MERCHANT, url=receiver.url, events=["*"]
    )
    payload = {"id": "evt_encrypted_secret_0001", "object": "event", "type": "payment.captured"}
    published = OutboxEvent(
        event_id="evt_encrypted_secret_0001",
        event_type="payment.captured",
        aggregate_type="payment",
        aggregate_id="pay_encrypted",
        sequence=4,
        merchant_id=MERCHANT,
        payload=payload,
    )
    with transaction.atomic():
        webhook_deliveries_create([published])
    delivery = WebhookDelivery.objects.get(event_id=published.event_id)

    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "succeeded"
    ((headers, body),) = receiver.requests
    verify(secret=receiver.secret, body=body, header=headers[HEADER])
    standard = {k.lower(): v for k, v in headers.items() if k.lower().startswith("webhook-")}
    assert standardwebhooks.Webhook(receiver.secret).verify(body, standard) == payload
    assert json.loads(body) == payload
    assert receiver.refused == 0
    assert stored(endpoint.pk)[0] != receiver.secret


@pytest.mark.django_db
def test_rotating_keys_keeps_every_secret_and_reencrypt_frees_the_old_key(settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    rotated, old, new = endpoint_with_two_secrets()
    fresh, fresh_secret = webhook_endpoint_create(
        merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"]
    )

    # The new key first, the old one after it: rows written under A read as before, and new
    # ones are written under B.
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B, KEY_A]
    loaded = WebhookEndpoint.objects.get(pk=rotated.pk)
    assert (loaded.secret, loaded.previous_secret) == (new, old)
    assert WebhookEndpoint.objects.get(pk=fresh.pk).secret == fresh_secret
    current, current_secret = webhook_endpoint_create(
        merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"]
    )
    untouched = stored(current.pk)

    out = reencrypt("--batch-size", "1")
    assert "webhooks.WebhookEndpoint (secret, previous_secret): 2 rows rewritten" in out
    assert out.splitlines()[-1] == "2 rows rewritten with the current key"
    assert stored(current.pk) == untouched  # already under the first key

    # The old key can go.
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]
    loaded = WebhookEndpoint.objects.get(pk=rotated.pk)
    assert (loaded.secret, loaded.previous_secret) == (new, old)
    assert WebhookEndpoint.objects.get(pk=fresh.pk).secret == fresh_secret
    assert WebhookEndpoint.objects.get(pk=current.pk).secret == current_secret
    secret, previous = stored(rotated.pk)
    assert Fernet(KEY_B).decrypt(secret).decode() == new
    assert Fernet(KEY_B).decrypt(previous).decode() == old
    assert stored(fresh.pk)[1] == ""
    assert reencrypt().splitlines()[-1] == "0 rows rewritten with the current key"


@pytest.mark.django_db
def test_a_secret_under_a_key_no_longer_listed_is_a_clear_error(settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    endpoint, _secret = webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"])
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]

    with pytest.raises(DecryptionError) as raised:
        WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert str(raised.value).startswith(
        "webhooks.WebhookEndpoint.secret holds a value that none of the 1 key(s) in "
        "FIELD_ENCRYPTION_KEYS decrypts"
    )
    with pytest.raises(
        CommandError, match=f"webhooks.WebhookEndpoint.secret of row '{endpoint.pk}'"
    ):
        reencrypt()


def migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection)


def test_the_migration_encrypts_clear_secrets_and_decrypts_them_backwards(
    transactional_db: None, settings
) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B, KEY_A]
    clear = "whsec_" + base64.b64encode(b"\x02" * 32).decode()
    clear_previous = "whsec_" + base64.b64encode(b"\x03" * 32).decode()
    try:
        executor = migrate(BEFORE)
        Endpoint = executor.loader.project_state(BEFORE).apps.get_model(
            "webhooks", "WebhookEndpoint"
        )
        Endpoint.objects.create(
            id="we_clear_two",
            merchant_id=MERCHANT,
            url=PUBLIC_URL,
            events=["*"],
            secret=clear,
            previous_secret=clear_previous,
        )
        Endpoint.objects.create(
            id="we_clear_one", merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"], secret=clear
        )
        assert stored("we_clear_two") == (clear, clear_previous)

        migrate(AFTER)
        secret, previous = stored("we_clear_two")
        assert Fernet(KEY_B).decrypt(secret).decode() == clear  # the first key encrypts
        assert Fernet(KEY_B).decrypt(previous).decode() == clear_previous
        assert stored("we_clear_one")[1] == ""
        # Read through the field (only its columns: later migrations' are not there yet).
        loaded = WebhookEndpoint.objects.only("secret", "previous_secret").get(pk="we_clear_two")
        assert (loaded.secret, loaded.previous_secret) == (clear, clear_previous)

        migrate(BEFORE)
        assert stored("we_clear_two") == (clear, clear_previous)
        assert stored("we_clear_one") == (clear, "")

        # Neither a clear secret nor a token of a listed key: the migration stops, undone.
        Endpoint.objects.filter(pk="we_clear_one").update(secret="not a secret of ours")
        with pytest.raises(DecryptionError, match="of row 'we_clear_one'"):
            migrate(AFTER)
        assert stored("we_clear_two") == (clear, clear_previous)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM outbox_webhookendpoint WHERE id = 'we_clear_one'")
        executor = MigrationExecutor(connection)
        migrate(executor.loader.graph.leaf_nodes())
    assert stored("we_clear_two")[0] != clear
