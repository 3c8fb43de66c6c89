"""The server's own answers, under gunicorn with the project's configuration, are the API's error
object (docs/API.md, "Errors" and "Requests the server cannot read"), not an HTML page: what
gunicorn refuses before Django sees the request (a request line or header fields it will not
take or cannot parse, a bad chunk), what Django answers outside the API's views (a Host not in
ALLOWED_HOSTS, an unknown URL), and a body the server cannot read in full.

One gunicorn (one worker) for the module; each request is raw bytes over a socket.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import runpy
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from django.conf import settings
from django.db import connection
from django.test import RequestFactory
from django.urls import get_resolver
from gunicorn.config import Config
from gunicorn.http.errors import InvalidResponseHeader

from aegispay.gunicorn_worker import REFUSALS, refusal_for
from aegispay.wsgi import application
from embedded.processes import LOCAL_HOST, pick_free_port
from payments.api_errors import error_body
from tests.aegispay.test_runtime_install import REPO, start, stop
from tests.conftest import make_client
from tests.waiting import wait_until


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    after: bytes  # whatever the server sent after this answer on the same connection

    def error(self) -> dict[str, Any]:
        assert self.headers["content-type"] == "application/json", self.body[:300]
        error: dict[str, Any] = json.loads(self.body)["error"]
        return error


def parse(received: bytes) -> Answer:
    """The first HTTP answer in ``received`` (http.client's parser)."""
    stream = _Unclosed(received)
    response = http.client.HTTPResponse(_Received(stream))  # type: ignore[arg-type]  # no socket
    response.begin()
    body = response.read()
    headers = {name.lower(): value for name, value in response.getheaders()}
    return Answer(response.status, response.reason, headers, body, stream.read())


class _Unclosed(io.BytesIO):
    """Bytes that http.client's parser leaves readable after the answer it parsed."""

    def close(self) -> None:
        pass


class _Received:
    """What http.client's parser reads from: the bytes a socket received."""

    def __init__(self, stream: io.BytesIO) -> None:
        self.stream = stream

    def makefile(self, mode: str) -> io.BytesIO:
        return self.stream


@pytest.fixture(scope="module")
def server(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Path]]:
    """gunicorn as the image runs it (``-c python:aegispay.gunicorn``, DEBUG off), one worker,
    on the suite's environment, test database and Redis (as ``start_worker`` in conftest.py);
    its port and its log."""
    port = pick_free_port()
    log = tmp_path_factory.mktemp("server_errors") / "gunicorn.log"
    env = {
        **os.environ,
        "DEBUG": "false",
        "DATABASE_NAME": connection.settings_dict["NAME"],
        "CELERY_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
        "ALLOWED_HOSTS": LOCAL_HOST,
        "SECURE_SSL_REDIRECT": "false",  # plain HTTP here, as behind a TLS-terminating proxy
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "2",
    }
    # No control socket: its default path is one per user, shared with any other gunicorn.
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:aegispay.gunicorn"]
    process = start([*argv, "--no-control-socket", "aegispay.wsgi"], env, log, REPO)
    try:
        wait_until(lambda: _live(port) or process.poll() is not None, timeout=90)
        assert process.poll() is None, log.read_text()
        yield port, log
    finally:
        stop([process])


def _live(port: int) -> bool:
    try:
        return exchange(port, request("GET", "/health/live")).status == 200
    except OSError:
        return False


def request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {LOCAL_HOST}", "Connection: close"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode("latin-1") + body


def exchange(port: int, raw: bytes) -> Answer:
    """Send ``raw``, read until the server closes, and parse the first answer."""
    with socket.create_connection((LOCAL_HOST, port), timeout=10) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return parse(received)


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


# --- what gunicorn refuses, before the application sees the request ---

REFUSED = {
    "request line too long": (
        request("GET", "/v1/payments?" + "q" * 5000),
        414,
        "request_line_too_long",
    ),
    "too many header fields": (
        request("GET", "/health/live", *(f"X-Field-{n}: v" for n in range(120))),
        431,
        "headers_too_large",
    ),
    "a header field too large": (
        request("GET", "/health/live", "X-Big: " + "v" * 9000),
        431,
        "headers_too_large",
    ),
    "a malformed request line": (b"GARBAGE\r\n\r\n", 400, "request_malformed"),
    "a method that is no token": (request("G@T", "/health/live"), 400, "request_malformed"),
    "an invalid header name": (
        request("GET", "/health/live", "Bad Name: v"),
        400,
        "request_malformed",
    ),
    "an unknown HTTP version": (
        request("GET", "/health/live").replace(b"HTTP/1.1", b"HTTP/9.9", 1),
        400,
        "request_malformed",
    ),
    "a Content-Length that is no number": (
        request("POST", "/v1/payments", "Content-Length: abc", body=b"{}"),
        400,
        "request_malformed",
    ),
    "Content-Length beside Transfer-Encoding": (
        request(
            "POST",
            "/v1/payments",
            "Content-Length: 2",
            "Transfer-Encoding: chunked",
            body=b"{}",
        ),
        400,
        "request_malformed",
    ),
    "chunked over HTTP/1.0": (
        request("POST", "/v1/payments", "Transfer-Encoding: chunked", body=chunked(b"{}")).replace(
            b"HTTP/1.1", b"HTTP/1.0", 1
        ),
        400,
        "request_malformed",
    ),
    "an expectation the server cannot meet": (
        request("POST", "/v1/payments", "Expect: teapot", "Content-Length: 2", body=b"{}"),
        417,
        "expectation_failed",
    ),
}


@pytest.mark.parametrize(("raw", "status", "code"), REFUSED.values(), ids=REFUSED.keys())
def test_what_gunicorn_refuses_is_answered_with_the_error_object(
    server: tuple[int, Path], raw: bytes, status: int, code: str
) -> None:
    port, _ = server
    answer = exchange(port, raw)
    error = answer.error()
    assert (answer.status, error["type"], error["code"]) == (status, "invalid_request_error", code)
    assert error == error_body(status, code, error["message"])["error"]
    assert answer.headers["connection"] == "close"
    assert int(answer.headers["content-length"]) == len(answer.body)


def test_a_bad_chunk_is_one_400_before_the_application_answers(
    server: tuple[int, Path], transactional_db: None
) -> None:
    """Django reads no chunked body: gunicorn used to see the request answered as if it had
    none (here 400 parameter_missing), then find the bad chunk while draining the body and write
    a second answer, an HTML 400, on the same connection."""
    port, log = server
    key = make_client().api_key
    body = b"zz\r\n{}\r\n0\r\n\r\n"  # "zz" is no chunk size
    raw = request(
        "POST",
        "/v1/payments",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        body=body,
    )
    answer = exchange(port, raw)
    error = answer.error()
    assert (answer.status, error["type"], error["code"]) == (
        400,
        "invalid_request_error",
        "request_malformed",
    )
    assert answer.after == b""
    assert b"Invalid chunk size" in log.read_bytes()  # gunicorn's own log line says why


# --- Django's own answers, outside the API's views ---


def test_a_host_not_allowed_is_a_400_error_object(server: tuple[int, Path]) -> None:
    port, _ = server
    raw = request("GET", "/health/live").replace(
        f"Host: {LOCAL_HOST}".encode(), b"Host: evil.example", 1
    )
    answer = exchange(port, raw)
    error = answer.error()
    assert (answer.status, error["type"], error["code"]) == (
        400,
        "invalid_request_error",
        "request_malformed",
    )
    assert "evil.example" not in error["message"]


@pytest.mark.parametrize("path", ["/v1/no-such-thing", "/no-such-page/"])
def test_an_unknown_url_is_a_404_error_object(server: tuple[int, Path], path: str) -> None:
    port, _ = server
    answer = exchange(port, request("GET", path))
    error = answer.error()
    assert (answer.status, error["type"], error["code"]) == (
        404,
        "invalid_request_error",
        "resource_missing",
    )


def test_a_body_over_the_limit_is_413_under_gunicorn(
    server: tuple[int, Path], transactional_db: None
) -> None:
    port, _ = server
    key = make_client().api_key
    body = b'{"description": "' + b"x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + b'"}'
    raw = request(
        "POST",
        "/v1/payments",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        body=body,
    )
    answer = exchange(port, raw)
    assert (answer.status, answer.error()["code"]) == (413, "request_too_large")


def test_django_answers_a_crash_with_the_error_object() -> None:
    """Outside DRF (a middleware, a non-API view), a crash is Django's handler500."""
    handler = get_resolver().resolve_error_handler(500)
    response = handler(RequestFactory().get("/admin/"))
    assert (response.status_code, response["Content-Type"]) == (500, "application/json")
    assert json.loads(response.content) == error_body(
        500, "internal_error", "an internal error occurred"
    )


# --- a chunked body: read in full, never taken for an empty one ---


def test_a_chunked_body_is_read_in_full(server: tuple[int, Path], transactional_db: None) -> None:
    """Django reads a body by its Content-Length; a chunked one has none. Read as empty, this
    body would miss ``amount`` (the first parameter), not ``currency``."""
    port, _ = server
    key = make_client().api_key
    raw = request(
        "POST",
        "/v1/payments",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        body=chunked(b'{"amount": ', b"2000}"),
    )
    answer = exchange(port, raw)
    error = answer.error()
    assert (answer.status, error["code"], error["param"]) == (400, "parameter_missing", "currency")


def test_a_chunked_body_over_the_limit_is_413(
    server: tuple[int, Path], transactional_db: None
) -> None:
    port, _ = server
    key = make_client().api_key
    piece = b"x" * 16384
    pieces = [b'{"description": "'] + [piece] * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 16384)
    raw = request(
        "POST",
        "/v1/payments",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        body=chunked(*pieces, b'"}'),
    )
    answer = exchange(port, raw)
    assert (answer.status, answer.error()["code"]) == (413, "request_too_large")


def test_where_the_server_does_not_end_the_body_a_chunked_one_is_411() -> None:
    """A WSGI server that passes a chunked body on undecoded and unterminated (Django's
    runserver, wsgiref) leaves no way to find its end: 411, never an empty body."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/v1/payments",
        "SERVER_NAME": LOCAL_HOST,
        "HTTP_HOST": LOCAL_HOST,
        "CONTENT_TYPE": "application/json",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(chunked(b'{"amount": 2000}')),
    }
    setup_testing_defaults(environ)
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))

    body = b"".join(application(environ, start_response))
    [(status, headers)] = started
    assert status.startswith("411 ")
    assert ("Content-Type", "application/json") in headers
    assert json.loads(body) == error_body(
        411, "length_required", json.loads(body)["error"]["message"]
    )


# --- the worker classes gunicorn is given ---


@pytest.mark.parametrize(
    ("variables", "worker"),
    [
        ({}, "ThreadWorker"),
        ({"GUNICORN_WORKER_CLASS": "gthread"}, "ThreadWorker"),
        # gunicorn itself runs "sync" with more than one thread as gthread: so do we.
        ({"GUNICORN_WORKER_CLASS": "sync"}, "ThreadWorker"),
        ({"GUNICORN_WORKER_CLASS": "sync", "GUNICORN_THREADS": "1"}, "SyncWorker"),
    ],
)
def test_the_configured_worker_classes_answer_with_the_error_object(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], worker: str
) -> None:
    monkeypatch.delenv("GUNICORN_WORKER_CLASS", raising=False)
    monkeypatch.delenv("GUNICORN_THREADS", raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    configuration = runpy.run_path(str(REPO / "aegispay" / "gunicorn.py"))
    config = Config()
    config.set("worker_class", configuration["worker_class"])
    config.set("threads", configuration["threads"])
    loaded = config.worker_class
    assert (loaded.__module__, loaded.__name__) == ("aegispay.gunicorn_worker", worker)


def test_an_error_outside_the_application_is_a_500_error_object() -> None:
    """gunicorn's 500 (the application failed before it answered, or sent a header gunicorn
    refuses) is the error object too; the exception is logged, never sent."""
    for exc in (RuntimeError("secret detail"), InvalidResponseHeader("X-Bad")):
        answer = parse(refusal_for(exc).response())
        assert (answer.status, answer.headers["connection"]) == (500, "close")
        assert json.loads(answer.body) == error_body(
            500, "internal_error", "an internal error occurred"
        )


def test_every_answer_of_the_workers_is_in_the_shape_of_the_api() -> None:
    """The worker builds its body without Django (gunicorn's master imports it): the same
    object ``payments.api_errors.error_body`` makes, for each of its answers."""
    for _, refusal in REFUSALS:
        answer = parse(refusal.response())
        assert (answer.status, answer.reason) == (refusal.status, refusal.reason)
        assert (answer.headers["content-type"], answer.headers["connection"]) == (
            "application/json",
            "close",
        )
        assert int(answer.headers["content-length"]) == len(answer.body)
        assert json.loads(answer.body) == error_body(refusal.status, refusal.code, refusal.message)
