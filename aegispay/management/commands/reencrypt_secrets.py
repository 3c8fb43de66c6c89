"""``manage.py reencrypt_secrets``: the last step of a key rotation (common/encryption.py).

Every column of every installed model that is an ``EncryptedTextField`` (found through the app
registry: a model that uses the field is covered with no change here) is rewritten with the
first of ``FIELD_ENCRYPTION_KEYS``, in batches. Run it after putting the new key first and
before dropping the old ones; running it again rewrites nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.encryption import DecryptionError, encrypted_fields, reencrypt


class Command(BaseCommand):
    help = (
        "Encrypt every encrypted column again with the first of FIELD_ENCRYPTION_KEYS; prints "
        "the rows rewritten per model and in all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="rows read, locked and rewritten per transaction (default 500)",
        )

    def handle(self, *args: Any, batch_size: int, **options: Any) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be 1 or more")
        total = 0
        for model, fields in encrypted_fields():
            names = ", ".join(field.name for field in fields)
            try:
                rewritten = reencrypt(model, fields, batch_size=batch_size)
            except DecryptionError as error:
                raise CommandError(str(error)) from error
            total += rewritten
            self.stdout.write(f"{model._meta.label} ({names}): {rewritten} rows rewritten")
        self.stdout.write(f"{total} rows rewritten with the current key")
