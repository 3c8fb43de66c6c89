"""Secrets encrypted at rest: Fernet with the keys of ``FIELD_ENCRYPTION_KEYS``.

``settings.FIELD_ENCRYPTION_KEYS`` lists Fernet keys (aegispay/settings.py reads them from the
environment, comma-separated): the first encrypts, every one decrypts (``MultiFernet``). A
column of ``EncryptedTextField`` holds Fernet tokens (AES-128-CBC and HMAC-SHA256, URL-safe
base64) and its model attribute the clear text: encrypted on save, decrypted on load.

Rotating a key: put the new key first and keep the old ones after it (every process restarted
with that list reads both), run ``manage.py reencrypt_secrets`` (``reencrypt`` below: every
encrypted column of every model rewritten with the first key), then drop the old keys. A value
that no configured key decrypts raises ``DecryptionError``; nothing is ever read as garbage or
as empty.

The empty string is stored as itself, not encrypted: it holds no secret ("no previous
secret"), and a blank field stays blank in the table. Encrypting is not deterministic (a new
token on every write), so an encrypted column can be filtered by ``isnull`` only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.db import models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import Expression
from django.db.models.functions import Cast
from django.db.models.lookups import Lookup

SETTING = "FIELD_ENCRYPTION_KEYS"


class DecryptionError(Exception):
    """A stored value that none of ``FIELD_ENCRYPTION_KEYS`` decrypts: it was encrypted with a
    key that is no longer listed, or it is not a Fernet token at all (altered, or written in
    the clear by something that bypassed the field)."""


def configured_keys() -> tuple[str, ...]:
    """``settings.FIELD_ENCRYPTION_KEYS`` as a tuple of keys, the encrypting one first."""
    value = getattr(settings, SETTING, ())
    keys = value.split(",") if isinstance(value, str) else value
    return tuple(key.strip() for key in keys if key.strip())


@functools.lru_cache(maxsize=8)
def _ciphers(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    """Every key together and the first alone, built once per list of keys: a change of the
    setting (a test's ``settings`` fixture) is a new list, so it takes effect at once."""
    if not keys:
        raise ImproperlyConfigured(f"{SETTING} is empty: no key to encrypt or decrypt with")
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except ValueError:
            # The key itself is never repeated in the message.
            raise ImproperlyConfigured(
                f"{SETTING}: key {position} of {len(keys)} is not a Fernet key (32 bytes in "
                "URL-safe base64, 44 characters, as Fernet.generate_key() makes them)"
            ) from None
    return MultiFernet(fernets), fernets[0]


def encrypt(value: str) -> str:
    """``value`` encrypted with the first key, as a Fernet token."""
    multi, _current = _ciphers(configured_keys())
    return multi.encrypt(value.encode("utf-8")).decode("ascii")


def _undecryptable(what: str) -> DecryptionError:
    count = len(configured_keys())
    return DecryptionError(
        f"{what} holds a value that none of the {count} key(s) in {SETTING} decrypts: it was "
        "encrypted with a key that is no longer listed, or it is not a Fernet token. Put the "
        f"old key back in {SETTING}, after the current one, and run manage.py "
        "reencrypt_secrets before removing it."
    )


def decrypt(token: str, *, what: str = "a value") -> str:
    """The clear text of ``token``, decrypted with whichever configured key encrypted it.

    Raises ``DecryptionError``, naming ``what``, when none does."""
    multi, _current = _ciphers(configured_keys())
    try:
        return multi.decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError):
        raise _undecryptable(what) from None


def is_current(token: str) -> bool:
    """True when the first key, the one that encrypts, decrypts ``token``."""
    _multi, current = _ciphers(configured_keys())
    try:
        current.decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeError):
        return False
    return True


def rotate(token: str, *, what: str = "a value") -> str:
    """``token`` encrypted again with the first key (``MultiFernet.rotate``: decrypted with
    whichever key encrypted it, its original timestamp kept). Raises ``DecryptionError``."""
    multi, _current = _ciphers(configured_keys())
    try:
        return multi.rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError):
        raise _undecryptable(what) from None


class EncryptedTextField(models.TextField[Any, str]):
    """Text stored as a Fernet token of ``FIELD_ENCRYPTION_KEYS`` and read back in the clear.

    ``None`` and ``""`` are stored as they are. Reading a token that no configured key
    decrypts raises ``DecryptionError`` (naming the model and field). Only ``isnull`` lookups
    are allowed: any other comparison would be with a token written under a fresh IV, which
    never matches.
    """

    description = "Text encrypted at rest with FIELD_ENCRYPTION_KEYS (Fernet)"

    def qualified_name(self) -> str:
        """``app.Model.field``, as errors name the field."""
        model = getattr(self, "model", None)
        return f"{model._meta.label}.{self.name}" if model is not None else str(self.name)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(str(value))

    def from_db_value(
        self, value: str | None, expression: Expression, connection: BaseDatabaseWrapper
    ) -> str | None:
        if value is None or value == "":
            return value
        return decrypt(value, what=self.qualified_name())

    def get_lookup(self, lookup_name: str) -> type[Lookup[Any]] | None:
        if lookup_name != "isnull":
            raise FieldError(
                f"{self.qualified_name()} is encrypted (a new token on every write): it can be "
                f"filtered by isnull only, not by {lookup_name}"
            )
        return super().get_lookup(lookup_name)


def encrypted_fields() -> list[tuple[type[models.Model], list[EncryptedTextField]]]:
    """Every installed model that has encrypted columns, with those columns: what
    ``reencrypt_secrets`` rewrites. A model registers by using ``EncryptedTextField``."""
    found = []
    for model in apps.get_models():
        fields = [
            field for field in model._meta.concrete_fields if isinstance(field, EncryptedTextField)
        ]
        if fields and not model._meta.proxy:
            found.append((model, fields))
    return found


def reencrypt(
    model: type[models.Model], fields: Sequence[EncryptedTextField], *, batch_size: int
) -> int:
    """Rewrite with the first key every value of ``fields`` that an older key encrypted, and
    return how many rows were rewritten (values already under the first key, and empty ones,
    are left as they are).

    The table is read in primary-key order, ``batch_size`` rows at a time, each batch in a
    transaction that locks its rows (``select_for_update``, in primary-key order): a write of
    the same row meanwhile (a secret rotated) waits and is never overwritten with the older
    value. The stored tokens are read and written as they are (``MultiFernet.rotate``), never
    through the field. Raises ``DecryptionError``, naming the row, when no configured key
    decrypts a value; the batches before it stay committed.
    """
    raw = {f"_stored_{field.attname}": Cast(field.attname, models.TextField()) for field in fields}
    manager = model._base_manager
    rewritten = 0
    last: Any = None
    while True:
        with transaction.atomic():
            rows = manager.order_by("pk").select_for_update(of=("self",))
            if last is not None:
                rows = rows.filter(pk__gt=last)
            batch = list(rows.annotate(**raw).values_list("pk", *raw)[:batch_size])
            for pk, *tokens in batch:
                changes = {
                    field.attname: models.Value(
                        rotate(token, what=f"{field.qualified_name()} of row {pk!r}"),
                        output_field=models.TextField(),
                    )
                    for field, token in zip(fields, tokens, strict=True)
                    if token and not is_current(token)
                }
                if changes:
                    manager.filter(pk=pk).update(**changes)
                    rewritten += 1
        if len(batch) < batch_size:
            return rewritten
        last = batch[-1][0]
