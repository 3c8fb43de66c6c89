"""Management commands: create_merchant and seed_demo."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings
from rest_framework.test import APIClient

from payments.models import ApiKey, Merchant

pytestmark = pytest.mark.django_db


def run(*args: str) -> list[str]:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_create_merchant_prints_json_with_a_working_key() -> None:
    created = json.loads(run("create_merchant", "--name", "Shop")[-1])
    key = ApiKey.objects.get(merchant_id=created["id"])
    response = APIClient().get("/v1/payments", HTTP_AUTHORIZATION=f"Bearer {created['api_key']}")
    assert set(created) == {"id", "name", "api_key"}
    assert created["name"] == "Shop"
    assert created["api_key"].startswith("sk_test_")
    assert created["api_key"] not in key.key_hash
    assert key.prefix == created["api_key"][:12]
    assert Merchant.objects.get(pk=created["id"]).gateways == ["sandbox_a", "sandbox_b"]
    assert response.status_code == 200


def test_create_merchant_takes_gateways_in_order() -> None:
    created = json.loads(
        run("create_merchant", "--name", "B", "--gateway", "sandbox_b", "--gateway", "sandbox_a")[
            -1
        ]
    )
    assert Merchant.objects.get(pk=created["id"]).gateways == ["sandbox_b", "sandbox_a"]


def test_seed_demo_is_idempotent(tmp_path: Path) -> None:
    with override_settings(STATE_DIR=tmp_path / ".aegispay"):
        first = json.loads(run("seed_demo")[-1])
        second = json.loads(run("seed_demo")[-1])
    assert first == second
    assert Merchant.objects.count() == 1
    assert (tmp_path / ".aegispay" / "demo_api_key").read_text().strip() == first["api_key"]
