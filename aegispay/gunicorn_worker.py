"""gunicorn's workers for the web tier, whose own answers are the API's error object: a request
gunicorn refuses before the application sees it (a request line or header fields too large, HTTP
it cannot parse, a bad chunk) and an error outside the application's answer (gunicorn's 500).

gunicorn writes those answers as an HTML page in ``Worker.handle_error``; the workers here
override that one method, with the same status codes and the same log lines. gunicorn's master
imports this module before Django is set up, so it imports neither Django nor an app: the body
is built here, in the shape of ``payments.api_errors.error_body`` (the type from the status, no
``param``), which tests/aegispay/test_server_errors.py compares it with.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gunicorn import util
from gunicorn.http import errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers import gthread, sync


@dataclass(frozen=True)
class Refusal:
    """One of the server's own answers: status line, and the error object's code and message."""

    status: int
    reason: str
    code: str
    message: str

    def body(self) -> bytes:
        kind = "api_error" if self.status >= 500 else "invalid_request_error"
        if self.status == 403:
            kind = "permission_error"
        error = {"type": kind, "code": self.code, "message": self.message}
        return json.dumps({"error": error}, separators=(",", ":")).encode()

    def response(self) -> bytes:
        body = self.body()
        head = (
            f"HTTP/1.1 {self.status} {self.reason}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        return head.encode("latin-1") + body


INTERNAL = Refusal(500, "Internal Server Error", "internal_error", "an internal error occurred")
_MALFORMED = "request_malformed"

# gunicorn's status for each of its exceptions (workers/base.py, handle_error), first match wins.
# The application's own bad response headers subclass the request's: they come first, as 500s.
REFUSALS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Refusal], ...] = (
    ((errors.InvalidResponseHeader, errors.InvalidResponseHeaderName), INTERNAL),
    (errors.ConfigurationProblem, INTERNAL),
    (
        errors.LimitRequestLine,
        Refusal(414, "URI Too Long", "request_line_too_long", "the request line is too long"),
    ),
    (
        errors.LimitRequestHeaders,  # too many header fields, one too large, or the trailers
        Refusal(
            431,
            "Request Header Fields Too Large",
            "headers_too_large",
            "the request's header fields are too many or too large",
        ),
    ),
    (
        errors.ExpectationFailed,
        Refusal(
            417,
            "Expectation Failed",
            "expectation_failed",
            "the server cannot meet the request's Expect header",
        ),
    ),
    (
        errors.UnsupportedTransferCoding,
        Refusal(
            501,
            "Not Implemented",
            "transfer_encoding_unsupported",
            "the request's Transfer-Encoding is not supported",
        ),
    ),
    (
        (errors.ForbiddenProxyRequest, ssl.SSLError),
        Refusal(403, "Forbidden", "permission_denied", "the request is forbidden"),
    ),
    (
        (errors.InvalidRequestLine, errors.InvalidRequestMethod, errors.InvalidHTTPVersion),
        Refusal(400, "Bad Request", _MALFORMED, "the request line is not valid HTTP/1.1"),
    ),
    (
        (errors.InvalidHeader, errors.InvalidHeaderName, errors.ObsoleteFolding),
        Refusal(400, "Bad Request", _MALFORMED, "a header field of the request is not valid"),
    ),
    (
        (errors.InvalidChunkSize, errors.ChunkMissingTerminator, errors.InvalidChunkExtension),
        Refusal(400, "Bad Request", _MALFORMED, "the chunked request body is not valid"),
    ),
    # The rest of what gunicorn cannot parse: a PROXY line, contradictory scheme headers, ...
    (errors.ParseException, Refusal(400, "Bad Request", _MALFORMED, "the request is not valid")),
)


def refusal_for(exc: BaseException) -> Refusal:
    """The answer to ``exc``, raised while gunicorn read a request or ran the application."""
    for kinds, refusal in REFUSALS:
        if isinstance(exc, kinds):
            return refusal
    return INTERNAL


def _client_error(exc: BaseException) -> bool:
    """What gunicorn logs as the client's fault (a warning), not as an error with traceback."""
    ours = isinstance(exc, errors.InvalidResponseHeader | errors.InvalidResponseHeaderName)
    return isinstance(exc, errors.ParseException | ssl.SSLError) and not ours


class JsonErrorsMixin:
    """``handle_error`` of gunicorn's ``Worker``, answering with the error object."""

    cfg: Any
    log: Any

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        request_start = datetime.now()
        addr = addr or ("", -1)  # a unix socket
        refusal = refusal_for(exc)
        if _client_error(exc):
            self.log.warning(f"Invalid request from ip={addr[0]}: {exc}")
            if req is None and isinstance(exc, errors.InvalidHeader):
                req = exc.req  # for the access log
        elif hasattr(req, "uri"):
            self.log.exception("Error handling request %s %s", getattr(req, "method", ""), req.uri)
        else:
            self.log.exception("Error handling request (no URI read)")

        response = refusal.response()
        if req is not None:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"] = addr[0]
            environ["REMOTE_PORT"] = str(addr[1])
            logged = Response(req, client, self.cfg)
            logged.status = f"{refusal.status} {refusal.reason}"
            logged.response_length = len(refusal.body())
            self.log.access(logged, req, environ, datetime.now() - request_start)
        try:
            util.write_nonblock(client, response)
        except Exception:
            self.log.debug("Failed to send error message.")


class ThreadWorker(JsonErrorsMixin, gthread.ThreadWorker):
    """gunicorn's ``gthread`` worker (the default, aegispay/gunicorn.py)."""


class SyncWorker(JsonErrorsMixin, sync.SyncWorker):
    """gunicorn's ``sync`` worker (``GUNICORN_WORKER_CLASS=sync`` with one thread)."""
