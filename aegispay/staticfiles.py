"""The static files storage: WhiteNoise's, compressed and with content-hashed names from
``collectstatic``'s manifest (the image collects at build time).

Where nothing was collected (the test suite, a benchmark, a development server run without
DEBUG), a file is linked by its plain name instead of failing the page: Django's manifest
storage would raise, even with ``manifest_strict`` off, because it then hashes the file from
``STATIC_ROOT``. ``tests/aegispay/test_runtime_install.py`` shows the hashed names in use
after ``collectstatic``.
"""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    manifest_strict = False

    def stored_name(self, name: str) -> str:
        try:
            return str(super().stored_name(name))
        except ValueError:  # not collected: no manifest entry, no file to hash
            return name
