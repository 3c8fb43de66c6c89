"""An example consumer of the event bus, as an outside system would write one.

    python manage.py consume_events --bind 'payment.*' --bind 'refund.*' --queue billing

It declares a durable queue bound to the ``aegispay.events`` topic exchange with each pattern
(``*`` is one word, ``#`` any number), so events published while it is stopped wait for it.
For every message it prints the event as one JSON line and acknowledges it only afterwards.
Delivery is at least once, so it deduplicates by event id: the id is remembered in Redis
(``SET NX`` with a TTL) and a message whose id was already seen is acknowledged and skipped.
A real consumer would record the id in its own database, in the transaction of its effect.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_redis import get_redis_connection
from kombu import Message

from outbox.bus import bus_connection, consumer_queue


class Command(BaseCommand):
    help = "Read AegisPay events from the event bus (an example consumer)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--bind",
            action="append",
            dest="patterns",
            help="routing-key pattern to bind, e.g. 'payment.*' (repeatable; default '#')",
        )
        parser.add_argument("--queue", default="aegispay.example-consumer", help="queue name")
        parser.add_argument("--url", default=None, help="broker URL (default EVENT_BUS_URL)")
        parser.add_argument("--max-messages", type=int, default=None, help="stop after N")
        parser.add_argument(
            "--idle-timeout", type=float, default=None, help="stop after N idle seconds"
        )
        parser.add_argument(
            "--dedupe-ttl", type=int, default=7 * 24 * 3600, help="seconds an id is remembered"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        patterns = options["patterns"] or ["#"]
        for pattern in patterns:
            if not pattern or any(part == "" for part in pattern.split(".")):
                raise CommandError(f"not a routing-key pattern: {pattern!r}")
        if options["max_messages"] is not None and options["max_messages"] < 1:
            raise CommandError("--max-messages must be at least 1")
        queue = consumer_queue(options["queue"], patterns)
        redis = get_redis_connection("default")
        seen_prefix = f"aegispay:consumer:{options['queue']}:"
        handled = 0
        limit = options["max_messages"]
        idle = options["idle_timeout"]

        def on_message(body: Any, message: Message) -> None:
            nonlocal handled
            event = json.loads(body) if isinstance(body, str | bytes) else body
            event_id = message.properties.get("message_id") or event.get("id")
            first = redis.set(seen_prefix + event_id, "1", nx=True, ex=options["dedupe_ttl"])
            if first:
                self.stdout.write(json.dumps(event, sort_keys=True))
                self.stdout.flush()
            else:
                self.stderr.write(f"duplicate {event_id} skipped")
            message.ack()
            handled += 1

        with bus_connection(options["url"]) as connection:
            try:
                connection.ensure_connection(max_retries=3)
            except Exception as exc:
                raise CommandError(f"cannot reach the event bus: {exc}") from exc
            with connection.Consumer(queue, callbacks=[on_message], prefetch_count=50):
                self.stderr.write(f"consuming {', '.join(patterns)} on queue {queue.name}")
                last = time.monotonic()
                while limit is None or handled < limit:
                    before = handled
                    try:
                        connection.drain_events(timeout=1)
                    except TimeoutError:
                        pass
                    except KeyboardInterrupt:
                        break
                    if handled != before:
                        last = time.monotonic()
                    elif idle is not None and time.monotonic() - last >= idle:
                        break
        self.stderr.write(f"handled {handled} messages")
        sys.stdout.flush()
