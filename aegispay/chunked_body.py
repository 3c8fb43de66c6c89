"""A request body sent with ``Transfer-Encoding`` (chunked), which has no ``Content-Length``,
given to Django in full: Django reads a body by its ``Content-Length`` alone and would take such a
body for an empty one (docs/API.md, "Requests the server cannot read").

WSGI middleware around Django's application (``wsgi.py``). Where the server decodes the body and
ends ``wsgi.input`` at its end (``wsgi.input_terminated``: gunicorn), the body is read, up to one
byte over ``DATA_UPLOAD_MAX_MEMORY_SIZE``, and handed on with its length, so that Django's own
limit answers a body over it as for any body (``413 request_too_large``). A bad chunk raises
gunicorn's error while it is read, before Django answers (``400 request_malformed``,
``gunicorn_worker.py``). Where the server does not (Django's runserver, wsgiref), the body's end
cannot be found: ``411 length_required``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

from payments.api_errors import error_body

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
Application = Callable[[Environ, StartResponse], Iterable[bytes]]

_PIECE = 64 * 1024


def _read(stream: Any, limit: int | None) -> bytes:
    """All of ``stream``, or its first ``limit + 1`` bytes: enough to know it is over."""
    body = bytearray()
    while limit is None or len(body) <= limit:
        piece = stream.read(_PIECE if limit is None else min(_PIECE, limit + 1 - len(body)))
        if not piece:
            break
        body += piece
    return bytes(body)


class ChunkedBodyMiddleware:
    def __init__(self, application: Application) -> None:
        self.application = application

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not environ.get("HTTP_TRANSFER_ENCODING"):
            return self.application(environ, start_response)
        if not environ.get("wsgi.input_terminated"):
            return _length_required(start_response)
        body = _read(environ["wsgi.input"], settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        # The body Django sees is no longer transfer-encoded: it has a length.
        del environ["HTTP_TRANSFER_ENCODING"]
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = io.BytesIO(body)
        return self.application(environ, start_response)


def _length_required(start_response: StartResponse) -> list[bytes]:
    message = "send the request body with a Content-Length header"
    body = json.dumps(error_body(411, "length_required", message), separators=(",", ":"))
    encoded = body.encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(encoded)))]
    start_response("411 Length Required", headers)
    return [encoded]
