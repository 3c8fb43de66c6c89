#!/usr/bin/env python
"""Django's command-line utility for AegisPay."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aegispay.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # What is missing from the environment (aegispay/settings.py), said once, plainly.
        sys.exit(f"AegisPay cannot start: {exc}")


if __name__ == "__main__":
    main()
