from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from payments.merchants import hash_api_key, merchant_create
from payments.models import ApiKey

DEMO_NAME = "Demo merchant"


class Command(BaseCommand):
    help = (
        "Create the demo merchant with the sandbox gateways and print its API key. Idempotent: "
        "the key is kept in .aegispay/demo_api_key (settings.STATE_DIR; only a hash is in the "
        "database), so a second run prints the same key."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        key_file = Path(settings.STATE_DIR) / "demo_api_key"
        raw = key_file.read_text().strip() if key_file.exists() else ""
        key = (
            ApiKey.objects.select_related("merchant")
            .filter(key_hash=hash_api_key(raw), revoked_at__isnull=True)
            .first()
            if raw
            else None
        )
        if key is None:
            merchant, raw = merchant_create(name=DEMO_NAME, gateways=["sandbox_a", "sandbox_b"])
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(raw + "\n")
            key_file.chmod(0o600)
        else:
            merchant = key.merchant
        self.stdout.write(json.dumps({"id": merchant.id, "name": merchant.name, "api_key": raw}))
