from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from payments.merchants import merchant_create


class Command(BaseCommand):
    help = "Create a merchant and a test API key; the last line printed is a JSON object."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--gateway",
            action="append",
            dest="gateways",
            help="a gateway account, in fallback order (repeatable); default sandbox_a, sandbox_b",
        )

    def handle(self, *args: Any, name: str, gateways: list[str] | None, **options: Any) -> None:
        if not name.strip():
            self.stderr.write("--name must not be blank")
            raise SystemExit(2)
        merchant, raw_key = merchant_create(name=name.strip(), gateways=gateways)
        self.stdout.write(
            json.dumps({"id": merchant.id, "name": merchant.name, "api_key": raw_key})
        )
