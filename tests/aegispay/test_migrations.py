"""Every model change has its migration: a model whose state differs from its migrations would
be deployed with a schema that does not match it."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_model_change_lacks_a_migration() -> None:
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exit_:
        pytest.fail(
            f"makemigrations --check exited {exit_.code}: missing migrations\n{out.getvalue()}"
        )
