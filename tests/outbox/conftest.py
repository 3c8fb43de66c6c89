"""The event bus for the outbox tests: the Redis broker always, RabbitMQ when an AMQP URL is
given (``EVENT_BUS_URL`` if it is AMQP, else ``AMQP_TEST_URL``); each test gets an exchange of
its own, so workers of other tests and other runs on the same broker never cross it."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from kombu import Connection, Queue

from outbox.bus import bus_connection, consumer_queue, is_amqp
from tests.webhooks.receivers import receivers


def amqp_url() -> str | None:
    configured = os.environ.get("EVENT_BUS_URL", "")
    if is_amqp(configured):
        return configured
    return os.environ.get("AMQP_TEST_URL") or None


@pytest.fixture(params=["redis", "amqp"])
def bus_url(request: pytest.FixtureRequest, settings: Any) -> str:
    """The bus under test, with a fresh exchange name in settings."""
    if request.param == "amqp":
        url = amqp_url()
        if url is None:
            pytest.skip(
                "no AMQP URL given: set AMQP_TEST_URL (or EVENT_BUS_URL=amqp://...) to run the "
                "RabbitMQ variant; .ci/run does"
            )
    else:
        url = settings.REDIS_URL
    settings.EVENT_BUS_URL = url
    settings.EVENT_BUS_EXCHANGE = f"aegispay.test.{uuid.uuid4().hex[:10]}"
    return url


@dataclass
class Listener:
    """A durable queue bound to the test exchange; ``drain`` returns what arrived."""

    connection: Connection
    queue: Queue
    received: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    def drain(self, *, expect: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Read messages until ``expect`` arrived (or ``timeout``), plus a short grace period
        that would catch duplicates; returns the bodies in arrival order."""

        def on_message(body: Any, message: Any) -> None:
            meta = {
                **message.properties,
                "content_type": message.content_type,
                "headers": message.headers,
            }
            self.received.append((body, meta))
            message.ack()

        deadline = time.monotonic() + timeout
        with self.connection.Consumer(self.queue, callbacks=[on_message], prefetch_count=200):
            while len(self.received) < expect and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    self.connection.drain_events(timeout=0.5)
            grace = time.monotonic() + 1.0
            while time.monotonic() < grace:
                with contextlib.suppress(TimeoutError):
                    self.connection.drain_events(timeout=0.25)
        return [_decode(body) for body, _ in self.received]


def _decode(body: Any) -> dict[str, Any]:
    return json.loads(body) if isinstance(body, str | bytes) else body


@pytest.fixture
def listener(bus_url: str) -> Iterator[Listener]:
    """Bound before anything is published, as a real consumer's durable queue would be."""
    connection = bus_connection(bus_url)
    queue = consumer_queue(f"aegispay.test.{uuid.uuid4().hex[:10]}", ["#"])
    queue(connection.default_channel).declare()
    yield Listener(connection=connection, queue=queue)
    try:
        queue(connection.default_channel).delete()
    finally:
        connection.release()


class CuttableProxy:
    """A TCP proxy to the broker that a test can cut (every connection dropped, new ones
    refused) and restore: a broker outage as the relay sees it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while self.up.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.up.set()

    def url_for(self, url: str) -> str:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        auth = f"{netloc[0]}@" if len(netloc) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{self.port}"))

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.server.close()


@pytest.fixture
def proxy(bus_url: str) -> Iterator[CuttableProxy]:
    parts = urlsplit(bus_url)
    default_port = 5672 if is_amqp(bus_url) else 6379
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    yield proxy
    proxy.close()


@pytest.fixture(autouse=True)
def _fresh_bus_connection() -> Iterator[None]:
    """The relay keeps one bus connection per thread; each test starts with a new one."""
    from outbox import bus

    yield
    existing = getattr(bus._local, "bus", None)
    if existing is not None:
        existing.close()
        bus._local.bus = None


__all__ = ["CuttableProxy", "Listener", "receivers", "settings"]
