"""The launcher's development keys (embedded/cli.py): generated once per checkout, kept in
files only their user can read, and given to every child unless the environment has its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from embedded.cli import child_env, development_field_encryption_key
from embedded.layout import Layout
from embedded.sharing import Services

SERVICES = Services(
    database_url="postgres://u@127.0.0.1:5432/unused",
    redis_state=None,
    external_redis_url="redis://127.0.0.1:6379/15",
)


def test_children_get_a_fernet_key_that_is_generated_once_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIELD_ENCRYPTION_KEYS", raising=False)
    layout = Layout(tmp_path)

    key = child_env(SERVICES, 1, layout)["FIELD_ENCRYPTION_KEYS"]

    Fernet(key)  # a key Fernet takes
    assert layout.field_encryption_key_file.read_text() == key + "\n"
    assert layout.field_encryption_key_file.stat().st_mode & 0o077 == 0
    assert child_env(SERVICES, 0, layout, debug=True)["FIELD_ENCRYPTION_KEYS"] == key


def test_keys_given_in_the_environment_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELD_ENCRYPTION_KEYS", "given-by-the-developer")
    assert child_env(SERVICES, 1, Layout(tmp_path))["FIELD_ENCRYPTION_KEYS"] == (
        "given-by-the-developer"
    )


@pytest.mark.parametrize("damaged", ["", "not a key", "c2hvcnQ="])
def test_a_file_that_holds_no_fernet_key_is_replaced(tmp_path: Path, damaged: str) -> None:
    layout = Layout(tmp_path)
    layout.field_encryption_key_file.write_text(damaged + "\n")
    key = development_field_encryption_key(layout)
    Fernet(key)
    assert key != damaged
    assert development_field_encryption_key(layout) == key
