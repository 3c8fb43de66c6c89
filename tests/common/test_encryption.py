"""Secrets encrypted at rest (common/encryption.py): Fernet with FIELD_ENCRYPTION_KEYS, the
first key encrypting and every one decrypting; a token no configured key decrypts is an error
that says what to do, never garbage; and the settings stop start-up on a missing key (outside
DEBUG) or on anything that is not a Fernet key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from common.encryption import DecryptionError, decrypt, encrypt, is_current, rotate
from tests.aegispay.test_deploy import STRONG_KEY, manage, printed, production

KEY_A = base64.urlsafe_b64encode(b"A" * 32).decode()
KEY_B = base64.urlsafe_b64encode(b"B" * 32).decode()
SECRET = "whsec_" + base64.b64encode(b"\x01" * 32).decode()


def test_a_value_is_stored_as_a_fernet_token_of_the_first_key(settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A, KEY_B]
    token = encrypt(SECRET)
    assert SECRET not in token
    assert Fernet(KEY_A).decrypt(token).decode() == SECRET
    assert decrypt(token) == SECRET
    assert encrypt(SECRET) != token  # a fresh IV every time


def test_every_listed_key_decrypts_and_only_the_first_encrypts(settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    old = encrypt(SECRET)
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B, KEY_A]
    assert decrypt(old) == SECRET
    assert not is_current(old)
    assert is_current(encrypt(SECRET))


def test_rotate_moves_a_token_to_the_first_key(settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    old = encrypt(SECRET)
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B, KEY_A]
    rotated = rotate(old)
    assert is_current(rotated)
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]
    assert decrypt(rotated) == SECRET


def test_a_token_of_a_key_no_longer_listed_is_a_clear_error(settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    old = encrypt(SECRET)
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]
    with pytest.raises(DecryptionError) as raised:
        decrypt(old, what="the test's secret")
    message = str(raised.value)
    assert message.startswith("the test's secret holds a value that none of the 1 key(s) in ")
    assert "FIELD_ENCRYPTION_KEYS" in message and "reencrypt_secrets" in message
    with pytest.raises(DecryptionError):
        rotate(old)


@pytest.mark.parametrize("stored", [SECRET, "gAAAAAnot-a-token", "", "\u00e9"])
def test_what_is_not_a_token_is_never_read_as_a_value(settings, stored: str) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    with pytest.raises(DecryptionError):
        decrypt(stored)


def test_keys_that_cannot_be_used_are_a_configuration_error_that_hides_them(settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = []
    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEYS is empty"):
        encrypt(SECRET)
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A, "not-a-fernet-key"]
    with pytest.raises(ImproperlyConfigured) as raised:
        encrypt(SECRET)
    assert "key 2 of 2 is not a Fernet key" in str(raised.value)
    assert "not-a-fernet-key" not in str(raised.value)


# --- start-up (aegispay/settings.py), each in a fresh interpreter ---


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        ("", "FIELD_ENCRYPTION_KEYS is not set"),
        (f"{KEY_A},short", "FIELD_ENCRYPTION_KEYS has key 2 of 2 that is not a Fernet key"),
        (base64.urlsafe_b64encode(b"x" * 31).decode(), "has key 1 of 1 that is not a Fernet key"),
    ],
)
def test_without_debug_a_missing_or_invalid_key_stops_start_up(
    tmp_path: Path, keys: str, says: str
) -> None:
    result = manage(production(tmp_path, FIELD_ENCRYPTION_KEYS=keys), "check")
    assert result.returncode != 0
    assert result.stderr.startswith("AegisPay cannot start: ")
    assert says in result.stderr
    assert [key for key in keys.split(",") if key and key in result.stderr] == []  # never shown


def test_an_invalid_key_stops_start_up_with_debug_too(tmp_path: Path) -> None:
    result = manage(production(tmp_path, FIELD_ENCRYPTION_KEYS="short", DEBUG="true"), "check")
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS has key 1 of 1 that is not a Fernet key" in result.stderr


def test_the_keys_are_read_in_order_and_trimmed(tmp_path: Path) -> None:
    env = production(tmp_path, FIELD_ENCRYPTION_KEYS=f" {KEY_B} ,{KEY_A},")
    code = "from django.conf import settings as s\nprint(list(s.FIELD_ENCRYPTION_KEYS))"
    assert printed(env, code) == str([KEY_B, KEY_A])


def test_debug_derives_a_development_key_from_the_secret_key(tmp_path: Path) -> None:
    code = "from django.conf import settings as s\nprint(','.join(s.FIELD_ENCRYPTION_KEYS))"
    debug = production(tmp_path, FIELD_ENCRYPTION_KEYS="", DEBUG="true")
    derived = printed(debug, code)
    Fernet(derived)  # a usable key
    assert printed(debug, code) == derived  # the same in every process
    assert printed(debug | {"SECRET_KEY": STRONG_KEY + "2"}, code) != derived
