"""Endpoint signing secrets encrypted at rest (common/encryption.py, FIELD_ENCRYPTION_KEYS).

The columns become text (a Fernet token of a ``whsec_`` secret is about 140 characters), then
every secret stored in the clear (``whsec_...``) is encrypted with the first key. A value that
is neither clear nor a token of a configured key stops the migration rather than be guessed at.
Backwards, every token is decrypted again (with any configured key) before the columns go back
to ``varchar(100)``.

The stored values are read and written as they are (a cast to text, ``Value`` with a plain
text field), never through the encrypted field, which would decrypt on read and encrypt on
write. The rows are locked while they are rewritten, so a secret rotated meanwhile waits.
"""

from django.db import migrations, models
from django.db.models.functions import Cast

import common.encryption
from common.encryption import decrypt, encrypt

FIELDS = ("secret", "previous_secret")
CLEAR_PREFIX = "whsec_"


def _rewrite(apps, change):
    WebhookEndpoint = apps.get_model("webhooks", "WebhookEndpoint")
    stored = {f"stored_{name}": Cast(name, models.TextField()) for name in FIELDS}
    rows = (
        WebhookEndpoint._base_manager.order_by("pk")
        .select_for_update(of=("self",))
        .annotate(**stored)
        .values_list("pk", *stored)
    )
    for pk, *values in rows.iterator(chunk_size=500):
        changes = {
            name: models.Value(
                change(value, f"webhooks.WebhookEndpoint.{name} of row {pk!r}"),
                output_field=models.TextField(),
            )
            for name, value in zip(FIELDS, values)
            if value
        }
        if changes:
            WebhookEndpoint._base_manager.filter(pk=pk).update(**changes)


def _encrypted(value, what):
    if value.startswith(CLEAR_PREFIX):
        return encrypt(value)
    # Not a clear secret: it must already be a token of a configured key (decrypt raises
    # DecryptionError, naming the row, if not). A token of an older key is left for
    # reencrypt_secrets.
    decrypt(value, what=what)
    return value


def _clear(value, what):
    return decrypt(value, what=what)


def encrypt_clear_secrets(apps, schema_editor):
    _rewrite(apps, _encrypted)


def decrypt_secrets(apps, schema_editor):
    _rewrite(apps, _clear)


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0003_endpoint_previous_secret'),
    ]

    operations = [
        migrations.AlterField(
            model_name='webhookendpoint',
            name='secret',
            field=common.encryption.EncryptedTextField(),
        ),
        migrations.AlterField(
            model_name='webhookendpoint',
            name='previous_secret',
            field=common.encryption.EncryptedTextField(blank=True, default=''),
        ),
        migrations.RunPython(encrypt_clear_secrets, decrypt_secrets),
    ]
