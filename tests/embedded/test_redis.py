"""The embedded Redis: stale state that must never block a start, and a real server started,
found again and stopped.

Real processes and a real Redis, under tmp_path; nothing is mocked.
"""

from __future__ import annotations

import os
from pathlib import Path

import embedded.layout
import embedded.processes
import embedded.redis
from tests.embedded.pids import dead_pid


def test_redis_state_naming_a_dead_pid_is_ignored_and_removed(tmp_path: Path) -> None:
    state_file = tmp_path / "redis.json"
    embedded.redis.write_redis_state(
        state_file, embedded.redis.RedisState(pid=dead_pid(), port=43210)
    )

    assert embedded.redis.read_redis_state(state_file) is None
    assert not state_file.exists()


def test_redis_state_naming_a_live_process_that_is_not_redis_is_ignored(tmp_path: Path) -> None:
    state_file = tmp_path / "redis.json"
    embedded.redis.write_redis_state(
        state_file, embedded.redis.RedisState(pid=os.getpid(), port=43210)
    )

    assert embedded.redis.read_redis_state(state_file) is None
    assert not state_file.exists()


def test_redis_state_naming_a_redis_on_the_reserved_port_is_never_trusted(tmp_path: Path) -> None:
    # Whatever runs there (a system Redis, say) is not ours to use or to stop.
    state_file = tmp_path / "redis.json"
    embedded.redis.write_redis_state(
        state_file, embedded.redis.RedisState(pid=os.getpid(), port=6379)
    )

    assert embedded.redis.read_redis_state(state_file) is None


def test_garbled_redis_state_is_ignored(tmp_path: Path) -> None:
    state_file = tmp_path / "redis.json"
    state_file.write_text("{not json")

    assert embedded.redis.read_redis_state(state_file) is None


def test_real_redis_is_started_found_again_and_stopped(tmp_path: Path) -> None:
    layout = embedded.layout.Layout(tmp_path)
    started, was_started = embedded.redis.ensure_redis(layout)
    try:
        again, started_again = embedded.redis.ensure_redis(layout)

        assert was_started
        assert not started_again
        assert again == started
        assert started.port != 6379
        assert embedded.redis.redis_answers(started.port)
    finally:
        embedded.redis.stop_redis(layout)

    assert not embedded.processes.process_alive(started.pid)
    assert embedded.redis.read_redis_state(layout.redis_state) is None
