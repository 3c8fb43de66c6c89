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
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, cast

from amqp.basic_message import Message as AmqpMessage
from django.conf import settings
from kombu import Connection, Exchange, Producer, Queue

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


class _ConfirmChannel(Protocol):
    """The part of py-amqp's ``amqp.channel.Channel`` that ``_publish_confirmed`` uses.

    Partly private (``_confirm_selected``, ``_basic_publish``, ``events``), so py-amqp's stubs
    do not describe it: it is written down here, against the py-amqp range pyproject.toml pins,
    and tests/outbox (publisher confirms on the real RabbitMQ) exercise every member.
    """

    _confirm_selected: bool
    events: dict[str, set[Any]]
    connection: Any  # amqp.Connection: drain_events(timeout=)

    def confirm_select(self, nowait: bool = ...) -> None: ...

    def prepare_message(
        self,
        body: bytes,
        priority: int | None = ...,
        content_type: str | None = ...,
        content_encoding: str | None = ...,
        headers: dict[str, Any] | None = ...,
        properties: dict[str, Any] | None = ...,
    ) -> AmqpMessage: ...

    def _basic_publish(
        self, msg: AmqpMessage, exchange: str = ..., routing_key: str = ..., **options: Any
    ) -> Any: ...


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
                for done, (index, (body, headers, properties)) in enumerate(
                    zip(sendable, messages, strict=True)
                ):
                    try:
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
                    except errors as exc:
                        raise BusUnavailable(
                            f"publish failed: {exc!r}", published=set(sendable[:done])
                        ) from exc
        except BusUnavailable:
            self.close()
            raise
        except errors as exc:
            self.close()
            raise BusUnavailable(f"publish failed: {exc!r}") from exc
        return results

    def _publish_confirmed(
        self,
        producer: Producer,
        events: Sequence[OutboxEvent],
        sendable: list[int],
        messages: list[tuple[bytes, dict[str, Any], dict[str, Any]]],
        results: list[MessageRefused | None],
    ) -> None:
        """AMQP: send every message, then wait for the broker's acks (or nacks) of them all.

        Confirms are collected by listeners on the channel, not by ``channel.wait``: py-amqp
        may read (and dispatch) a confirm while a later message is still being written.
        """
        # On AMQP kombu's channel is py-amqp's Channel (kombu.transport.pyamqp).
        channel = cast("_ConfirmChannel", producer.channel)
        if not channel._confirm_selected:
            channel._confirm_selected = True
            channel.confirm_select()
            self._delivery_tag = 0
        waiting: dict[int, int] = {}  # delivery tag -> index in events
        confirmed: set[int] = set()

        def settle(delivery_tag: int, multiple: bool, *, nacked: bool) -> None:
            tags = [t for t in waiting if t <= delivery_tag] if multiple else [delivery_tag]
            for tag in tags:
                index = waiting.pop(tag, None)
                if index is None:
                    continue
                if nacked:
                    results[index] = MessageRefused(f"the broker nacked {events[index].event_id}")
                else:
                    confirmed.add(index)

        def on_ack(delivery_tag: int, multiple: bool) -> None:
            settle(delivery_tag, multiple, nacked=False)

        def on_nack(delivery_tag: int, multiple: bool) -> None:
            settle(delivery_tag, multiple, nacked=True)

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(on_nack)
        try:
            for index, (body, headers, properties) in zip(sendable, messages, strict=True):
                message = channel.prepare_message(
                    body, 0, "application/json", "utf-8", headers, properties
                )
                self._delivery_tag += 1
                waiting[self._delivery_tag] = index
                channel._basic_publish(
                    message,
                    exchange=self.exchange.name,
                    routing_key=events[index].event_type,
                    timeout=self.timeout,
                )
            deadline = time.monotonic() + self.timeout
            while waiting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BusUnavailable("the broker did not confirm in time", published=confirmed)
                try:
                    channel.connection.drain_events(timeout=remaining)
                except TimeoutError:
                    continue
        except BusUnavailable:
            raise
        except Exception as exc:
            raise BusUnavailable(f"publish failed: {exc!r}", published=confirmed) from exc
        finally:
            channel.events["basic_ack"].discard(on_ack)
            channel.events["basic_nack"].discard(on_nack)

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
