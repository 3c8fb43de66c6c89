"""A merchant's webhook receiver on a real local HTTP server, for the webhook and consumer tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from webhooks.signing import HEADER, SignatureVerificationError, verify


@dataclass
class Receiver:
    """A merchant's webhook handler on a real local HTTP server.

    It verifies each request with ``webhooks/signing.py`` (a bad one is answered 400 and counted
    in ``refused``), processes each event id once (``processed``), then answers the next of
    ``statuses`` (200 once they run out). ``delay`` makes every answer slow; ``hold`` keeps a
    request open until the test sets it.
    """

    port: int = 0
    secret: str = ""
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    hold: threading.Event | None = None
    location: str = ""
    answer: bytes = b""
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    processed: list[str] = field(default_factory=list)
    refused: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/aegispay?source=test"

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.requests.append((headers, body))
        self.arrived.set()
        if self.hold is not None:
            self.hold.wait(10)
        time.sleep(self.delay)
        try:
            verify(secret=self.secret, body=body, header=headers.get(HEADER, ""))
        except SignatureVerificationError:
            with self.lock:
                self.refused += 1
            return 400, {}
        event_id = json.loads(body)["id"]
        with self.lock:
            if event_id not in self.processed:
                self.processed.append(event_id)
            status = self.statuses.pop(0) if self.statuses else 200
        return status, {"Location": self.location} if self.location else {}


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, extra = receiver.handle(dict(self.headers.items()), body)
            answer = receiver.answer or json.dumps({"received": status < 300}).encode()
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(**options: Any) -> Receiver:
        receiver = Receiver(**options)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
        receiver.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
