from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aegispay.settings")
django_application = get_wsgi_application()

from aegispay.chunked_body import ChunkedBodyMiddleware  # noqa: E402 - needs the settings above

# A chunked request body reaches Django in full, with its length (chunked_body.py).
application = ChunkedBodyMiddleware(django_application)
