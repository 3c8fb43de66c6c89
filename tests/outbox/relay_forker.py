"""A process that sets Django up once and then, for every ``fork`` line on stdin, forks a relay
process and prints its pid: the relay and the in-process consumers, passing in a loop, as the
outbox worker runs them. The test SIGKILLs those processes; forking from a process that is set
up already (as Celery's prefork pool does) makes each restart take milliseconds, not a second.
Every ``RELAY_WEBHOOK_SWEEP_SECONDS`` a relay process also runs the webhook sweep, as beat does.

Run as ``python -m tests.outbox.relay_forker`` with the settings in the environment. No database
or broker connection is open when it forks: each relay process opens its own.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time


def relay_loop() -> None:
    from outbox.consumers import outbox_consumer_drain
    from outbox.registry import consumer_names
    from outbox.relay import outbox_relay_drain
    from webhooks.tasks import webhook_deliveries_sweep

    random.seed()
    batch = int(os.environ.get("RELAY_BATCH_SIZE", "50"))
    sweep_every = float(os.environ.get("RELAY_WEBHOOK_SWEEP_SECONDS", "5"))
    swept = time.monotonic()
    while True:
        if time.monotonic() - swept > sweep_every:  # what beat does for the webhook sends
            webhook_deliveries_sweep()
            swept = time.monotonic()
        relayed = outbox_relay_drain(batch_size=batch, max_passes=4).claimed
        applied = sum(
            outbox_consumer_drain(consumer=name, batch_size=batch, max_passes=4).claimed
            for name in consumer_names()
        )
        if not relayed and not applied:
            time.sleep(0.02)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aegispay.settings")
    import django

    django.setup()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed children are reaped by the kernel
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "fork":
            continue
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                relay_loop()
            finally:
                os._exit(1)
        print(pid, flush=True)


if __name__ == "__main__":
    main()
