"""The event bus: a kombu topic exchange on ``EVENT_BUS_URL`` (RabbitMQ over AMQP, or Redis).

Every event is published persistently to the exchange ``EVENT_BUS_EXCHANGE`` with its type as
the routing key, its id as ``message_id`` and in the headers, so consumers can bind patterns
(``payment.*``) and deduplicate. On AMQP the channel is in publisher-confirm mode: ``publish``
returns only once the broker has taken the message, which is what lets the relay mark a row
published. A connection is opened once per process and reused; after a connection error it is
dropped and the next publish reconnects.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from struct import pack
from typing import Any, Protocol, cast

from amqp import spec
from amqp.serialization import dumps as amqp_dumps
from django.conf import settings
from kombu import Connection, Exchange, Producer, Queue

# Producer.batch and BatchPublishError are new in kombu 5.7; celery-types does not know them.
from kombu.exceptions import BatchPublishError  # type: ignore[attr-defined]

from .types import OutboxEvent

logger = logging.getLogger(__name__)


class BusUnavailable(Exception):
    """The broker could not be reached or did not confirm in time: nothing later will succeed
    in this pass either, so the relay stops and backs off. ``published`` holds what the
    broker did take before the failure (indexes into the wave)."""

    def __init__(self, message: str, *, published: set[int] | None = None) -> None:
        super().__init__(message)
        self.published = published or set()


class MessageRefused(Exception):
    """The broker refused this one message (a nack), or it is too large to send: the
    message's own failure, retried with backoff and dead-lettered in the end."""


def is_amqp(url: str) -> bool:
    return url.split("://", 1)[0] in {"amqp", "amqps", "pyamqp"}


def event_exchange(name: str | None = None) -> Exchange:
    return Exchange(name or settings.EVENT_BUS_EXCHANGE, type="topic", durable=True)


class _Transport(Protocol):
    """The part of py-amqp's transport that ``_publish_confirmed`` writes through."""

    def having_timeout(self, timeout: float | None) -> AbstractContextManager[Any]: ...

    def write(self, s: bytes) -> None: ...


class _AmqpConnection(Protocol):
    frame_max: int
    transport: _Transport

    def drain_events(self, timeout: float | None = ...) -> None: ...


class _ConfirmChannel(Protocol):
    """The part of py-amqp's ``amqp.channel.Channel`` that ``_publish_confirmed`` uses.

    Partly private (``_confirm_selected``, ``events``) or below the channel (the transport),
    so py-amqp's stubs do not describe it: it is written down here, against the py-amqp range
    pyproject.toml pins, and tests/outbox (publisher confirms on the real RabbitMQ, a message
    split over several frames) exercise every member.
    """

    _confirm_selected: bool
    channel_id: int
    events: dict[str, set[Any]]
    connection: _AmqpConnection

    def confirm_select(self, nowait: bool = ...) -> None: ...


# AMQP 0-9-1 framing (section 4.2.3 of the specification), as py-amqp's frame writer does it.
_METHOD_FRAME, _HEADER_FRAME, _BODY_FRAME = 1, 2, 3
_FRAME_END = b"\xce"
_PUBLISH_METHOD = pack(">HH", *spec.Basic.Publish)
# The basic properties every event carries, flagged in the order of py-amqp's
# ``Message.PROPERTIES``: content_type, content_encoding, application_headers, delivery_mode,
# priority (bits 15 to 11) and message_id (bit 7).
_PROPERTY_FLAGS = pack(">H", 0xF800 | 1 << 7)
_PROPERTY_FORMAT = "ssFoos"
_CONTENT_TYPE, _CONTENT_ENCODING = "application/json", "utf-8"
_PROPERTIES_PREFIX = _PROPERTY_FLAGS + amqp_dumps("ss", (_CONTENT_TYPE, _CONTENT_ENCODING))
_INT_LIMIT = 2147483647  # py-amqp writes a table int within +-this as "I", else as "L"
# Bytes written between two reads of what the broker sent meanwhile (its confirms), so that
# neither side's socket buffer can fill while the other waits for it.
_WRITE_CHUNK_BYTES = 256 * 1024


def _connection(url: str, timeout: float) -> Connection:
    if is_amqp(url):
        options: dict[str, Any] = {"confirm_publish": True}
    else:
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    return Connection(url, connect_timeout=timeout, transport_options=options, heartbeat=0)


# kombu's own connection errors, plus what a dead socket raises on either transport.
def _connection_errors(connection: Connection) -> tuple[type[BaseException], ...]:
    return (
        *connection.connection_errors,
        *connection.channel_errors,
        OSError,
        TimeoutError,
    )


def _properties(headers: dict[str, Any], delivery_mode: int, message_id: str) -> bytes:
    """An event's property list as py-amqp's ``Message._serialize_properties`` writes it
    (content type, encoding, headers, delivery mode, priority 0, message id).

    The headers table (text and small integers) is written here directly: py-amqp's generic
    serializer was the largest cost of building a wave. Any other value, or a name too long
    for a short string, goes through py-amqp's serializer (tests/outbox/test_bus.py compares
    the two byte for byte).
    """
    table: list[bytes] = []
    for key, value in headers.items():
        name = key.encode("utf-8", "surrogatepass")  # as py-amqp encodes text
        if len(name) > 255:
            return _properties_by_amqp(headers, delivery_mode, message_id)
        if type(value) is str:
            data = value.encode("utf-8", "surrogatepass")
            table.append(pack(">B", len(name)) + name + b"S" + pack(">I", len(data)) + data)
        elif type(value) is int and -_INT_LIMIT <= value <= _INT_LIMIT:
            table.append(pack(">B", len(name)) + name + pack(">ci", b"I", value))
        else:
            return _properties_by_amqp(headers, delivery_mode, message_id)
    encoded = b"".join(table)
    identifier = message_id.encode("utf-8", "surrogatepass")
    if len(identifier) > 255:
        return _properties_by_amqp(headers, delivery_mode, message_id)
    return b"".join(
        (
            _PROPERTIES_PREFIX,
            pack(">I", len(encoded)),
            encoded,
            pack(">BBB", delivery_mode, 0, len(identifier)),
            identifier,
        )
    )


def _properties_by_amqp(headers: dict[str, Any], delivery_mode: int, message_id: str) -> bytes:
    values = (_CONTENT_TYPE, _CONTENT_ENCODING, headers, delivery_mode, 0, message_id)
    return _PROPERTY_FLAGS + amqp_dumps(_PROPERTY_FORMAT, values)


@contextmanager
def _bindings_read_once(channel: Any) -> Iterator[None]:
    """While inside, the channel reads each exchange's bindings from Redis once and reuses
    them (kombu's virtual transport reads them again for every message it routes). A channel
    without ``get_table`` (AMQP routes on the broker) is left as it is."""
    if not hasattr(channel, "get_table"):
        yield
        return
    read = channel.get_table  # kombu's virtual channel: an exchange's bindings
    tables: dict[str, list[tuple[str, str, str]]] = {}

    def get_table(exchange: str) -> list[tuple[str, str, str]]:
        if exchange not in tables:
            tables[exchange] = read(exchange)
        return tables[exchange]

    channel.get_table = get_table
    try:
        yield
    finally:
        del channel.get_table  # the class's method again


class EventBus:
    """A publisher on one broker URL. Not shared between threads (see ``event_bus``)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        exchange: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.url = url or settings.EVENT_BUS_URL
        self.exchange = event_exchange(exchange)
        self.timeout = (
            timeout if timeout is not None else settings.EVENT_BUS_PUBLISH_TIMEOUT_SECONDS
        )
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._delivery_tag = 0
        self._publish_methods: dict[str, bytes] = {}  # routing key -> basic.publish frame

    def _ensure(self) -> tuple[Connection, Producer]:
        if self._connection is None or self._producer is None:
            connection = _connection(self.url, self.timeout)
            try:
                # kombu's stubs say int; kombu passes it on to a float deadline.
                connection.ensure_connection(max_retries=1, timeout=self.timeout)  # type: ignore[arg-type]
                channel = connection.channel()
                producer = Producer(channel, exchange=self.exchange)
                self.exchange(channel).declare()
            except Exception as exc:
                connection.release()
                raise BusUnavailable(f"event bus unreachable: {exc!r}") from exc
            self._connection, self._producer = connection, producer
        return self._connection, self._producer

    def _message(self, event: OutboxEvent) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
        body = json.dumps(event.payload, separators=(",", ":"), sort_keys=True).encode()
        if len(body) > settings.EVENT_BUS_MAX_MESSAGE_BYTES:
            raise MessageRefused(
                f"event {event.event_id} is {len(body)} bytes, above "
                f"EVENT_BUS_MAX_MESSAGE_BYTES ({settings.EVENT_BUS_MAX_MESSAGE_BYTES})"
            )
        headers = {
            "event_id": event.event_id,
            "event_type": event.event_type,
            "aggregate_type": event.aggregate_type,
            "aggregate_id": event.aggregate_id,
            "sequence": event.sequence,
            "merchant_id": event.merchant_id,
        }
        properties = {"delivery_mode": 2, "message_id": event.event_id}
        return body, headers, properties

    def publish(self, event: OutboxEvent) -> None:
        """Publish one event; raise ``MessageRefused`` or ``BusUnavailable``."""
        error = self.publish_wave([event])[0]
        if error is not None:
            raise error

    def publish_wave(self, events: Sequence[OutboxEvent]) -> list[MessageRefused | None]:
        """Publish events of *distinct* aggregates together; per event, None or why the broker
        refused it (a nack, a message above the size limit).

        On AMQP all messages are sent, then the confirms are awaited together: one round trip
        per wave instead of one per message. Because a wave holds at most one event per
        aggregate, a refusal can never let a later event of the same payment overtake it.
        Raises ``BusUnavailable`` when the connection fails or confirms do not arrive in time;
        its ``published`` holds the indexes the broker did confirm before that.
        """
        connection, producer = self._ensure()
        errors = _connection_errors(connection)
        results: list[MessageRefused | None] = [None] * len(events)
        sendable: list[int] = []
        messages = []
        for index, event in enumerate(events):
            try:
                messages.append(self._message(event))
                sendable.append(index)
            except MessageRefused as exc:
                results[index] = exc
        try:
            if is_amqp(self.url):
                self._publish_confirmed(producer, events, sendable, messages, results)
            else:
                self._publish_batched(producer, events, sendable, messages, errors)
        except BusUnavailable:
            self.close()
            raise
        except errors as exc:
            self.close()
            raise BusUnavailable(f"publish failed: {exc!r}") from exc
        return results

    def _publish_batched(
        self,
        producer: Producer,
        events: Sequence[OutboxEvent],
        sendable: list[int],
        messages: list[tuple[bytes, dict[str, Any], dict[str, Any]]],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        """Redis: the wave in two round trips, whatever its size.

        kombu's Redis transport routes a topic exchange by reading the exchange's bindings
        (``SMEMBERS``) for every message, then pushes it with an ``LPUSH`` of its own: two
        round trips a message, most of a relay pass on Redis (issue 13's profile). Here the
        bindings are read once for the wave (``_bindings_read_once``) and the pushes go in one
        pipeline (kombu's ``Producer.batch``). A binding made while the wave is sent applies
        from the next wave, as it would to a message published a moment earlier.

        When the pipeline fails, which of its pushes Redis applied is unknown, so none counts
        as published: the relay sends them all again and consumers deduplicate by event id
        (at least once, as everywhere on the bus).
        """
        try:
            batch = producer.batch(max_size=len(messages) or 1)  # type: ignore[attr-defined]
            with _bindings_read_once(producer.channel), batch:
                for index, (body, headers, properties) in zip(sendable, messages, strict=True):
                    producer.publish(
                        body,
                        routing_key=events[index].event_type,
                        content_type="application/json",
                        content_encoding="utf-8",
                        headers=headers,
                        retry=False,
                        timeout=self.timeout,
                        **properties,
                    )
        except (BatchPublishError, *errors) as exc:
            raise BusUnavailable(f"publish failed: {exc!r}") from exc

    def _publish_confirmed(
        self,
        producer: Producer,
        events: Sequence[OutboxEvent],
        sendable: list[int],
        messages: list[tuple[bytes, dict[str, Any], dict[str, Any]]],
        results: list[MessageRefused | None],
    ) -> None:
        """AMQP: send every message, then wait for the broker's acks (or nacks) of them all.

        The wave's frames are built here and written in a few large writes instead of one
        write (and one poll of the socket) per message through py-amqp's ``basic_publish``,
        which took most of a relay pass (issue 13's profile). The frames are what
        ``basic_publish`` would send: ``basic.publish`` to the exchange with the event type as
        routing key, the properties, the body split at ``frame_max``. Between writes whatever
        the broker sent meanwhile is read, so neither side's socket buffer fills while the
        other waits. Confirms are collected by listeners on the channel, not by
        ``channel.wait``. Delivery tags are consecutive on a confirm channel, so the wave's
        tags are one range.
        """
        # On AMQP kombu's channel is py-amqp's Channel (kombu.transport.pyamqp).
        channel = cast("_ConfirmChannel", producer.channel)
        if not channel._confirm_selected:
            channel._confirm_selected = True
            channel.confirm_select()
            self._delivery_tag = 0
        connection = channel.connection
        first_tag = self._delivery_tag + 1
        count = len(sendable)
        settled = [False] * count  # by delivery tag - first_tag
        confirmed: set[int] = set()
        low = 0  # every tag below first_tag + low is settled

        def settle(delivery_tag: int, multiple: bool, *, nacked: bool) -> None:
            nonlocal low
            top = delivery_tag - first_tag
            for position in range(low if multiple else top, min(top + 1, count)):
                if position < 0 or settled[position]:
                    continue
                settled[position] = True
                index = sendable[position]
                if nacked:
                    results[index] = MessageRefused(f"the broker nacked {events[index].event_id}")
                else:
                    confirmed.add(index)
            while low < count and settled[low]:
                low += 1

        def on_ack(delivery_tag: int, multiple: bool) -> None:
            settle(delivery_tag, multiple, nacked=False)

        def on_nack(delivery_tag: int, multiple: bool) -> None:
            settle(delivery_tag, multiple, nacked=True)

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(on_nack)
        try:
            frames = self._frames(
                channel.channel_id, connection.frame_max, events, sendable, messages
            )
            self._delivery_tag += count
            with connection.transport.having_timeout(self.timeout):
                for offset in range(0, len(frames), _WRITE_CHUNK_BYTES):
                    connection.transport.write(frames[offset : offset + _WRITE_CHUNK_BYTES])
                    self._read_ready(connection)
            deadline = time.monotonic() + self.timeout
            while low < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BusUnavailable("the broker did not confirm in time", published=confirmed)
                try:
                    connection.drain_events(timeout=remaining)
                except TimeoutError:
                    continue
        except BusUnavailable:
            raise
        except Exception as exc:
            raise BusUnavailable(f"publish failed: {exc!r}", published=confirmed) from exc
        finally:
            channel.events["basic_ack"].discard(on_ack)
            channel.events["basic_nack"].discard(on_nack)

    def _frames(
        self,
        channel_id: int,
        frame_max: int,
        events: Sequence[OutboxEvent],
        sendable: list[int],
        messages: list[tuple[bytes, dict[str, Any], dict[str, Any]]],
    ) -> bytes:
        """The frames of one ``basic.publish`` per message: method, content header, body."""
        chunk = frame_max - 8  # a frame's header (7 bytes) and end octet (1) count
        exchange = self.exchange.name
        parts: list[bytes] = []
        append = parts.append
        for index, (body, headers, properties) in zip(sendable, messages, strict=True):
            routing_key = events[index].event_type
            method = self._publish_methods.get(routing_key)
            if method is None:
                method = _PUBLISH_METHOD + amqp_dumps("Bssbb", (0, exchange, routing_key, 0, 0))
                self._publish_methods[routing_key] = method
            header = pack(">HHQ", spec.Basic.CLASS_ID, 0, len(body)) + _properties(
                headers, properties["delivery_mode"], properties["message_id"]
            )
            append(pack(">BHI", _METHOD_FRAME, channel_id, len(method)))
            append(method)
            append(_FRAME_END)
            append(pack(">BHI", _HEADER_FRAME, channel_id, len(header)))
            append(header)
            append(_FRAME_END)
            for offset in range(0, len(body), chunk):
                piece = body[offset : offset + chunk]
                append(pack(">BHI", _BODY_FRAME, channel_id, len(piece)))
                append(piece)
                append(_FRAME_END)
        return b"".join(parts)

    @staticmethod
    def _read_ready(connection: _AmqpConnection) -> None:
        """Dispatch the frames the broker has sent so far (confirms), without waiting."""
        while True:
            try:
                connection.drain_events(timeout=0)
            except TimeoutError:
                return

    def close(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            try:
                connection.release()
            except Exception:  # a broken connection may fail to close; it is gone either way
                logger.debug("closing the event bus connection failed", exc_info=True)


_local = threading.local()


def event_bus() -> EventBus:
    """This thread's publisher on the configured bus, created on first use and reused."""
    bus: EventBus | None = getattr(_local, "bus", None)
    if (
        bus is None
        or bus.url != settings.EVENT_BUS_URL
        or bus.exchange.name != settings.EVENT_BUS_EXCHANGE
    ):
        if bus is not None:
            bus.close()
        bus = _local.bus = EventBus()
    return bus


def consumer_queue(name: str, patterns: Iterable[str], *, exchange: str | None = None) -> Queue:
    """A durable queue bound to the event exchange once per routing-key pattern."""
    from kombu import binding

    ex = event_exchange(exchange)
    return Queue(
        name,
        exchange=ex,
        bindings=[binding(ex, routing_key=pattern) for pattern in patterns],
        durable=True,
    )


def bus_connection(url: str | None = None) -> Connection:
    """A connection for consumers (the example ``consume_events`` command and tests)."""
    return Connection(url or settings.EVENT_BUS_URL, connect_timeout=5, heartbeat=0)
