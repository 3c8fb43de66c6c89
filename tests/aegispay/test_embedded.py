"""The embedded launcher's helpers: free ports, and stale state that must never block a start.

Real processes and a real Redis, under tmp_path; nothing is mocked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from aegispay import embedded


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_pick_free_port_is_bindable_and_never_6379() -> None:
    ports = {embedded.pick_free_port() for _ in range(20)}

    assert 6379 not in ports
    for port in ports:
        assert embedded.port_is_free("127.0.0.1", port)


def test_pick_free_port_avoids_the_ports_it_is_told_to() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken_port = taken.getsockname()[1]
        port = embedded.pick_free_port(avoid=frozenset({taken_port, 6379}))

        assert port != taken_port
        assert not embedded.port_is_free("127.0.0.1", taken_port)


def test_redis_state_naming_a_dead_pid_is_ignored_and_removed(tmp_path: Path) -> None:
    state_file = tmp_path / "redis.json"
    embedded.write_redis_state(state_file, embedded.RedisState(pid=dead_pid(), port=43210))

    assert embedded.read_redis_state(state_file) is None
    assert not state_file.exists()


def test_redis_state_naming_a_live_process_that_is_not_redis_is_ignored(tmp_path: Path) -> None:
    state_file = tmp_path / "redis.json"
    embedded.write_redis_state(state_file, embedded.RedisState(pid=os.getpid(), port=43210))

    assert embedded.read_redis_state(state_file) is None
    assert not state_file.exists()


def test_redis_state_naming_a_redis_on_the_reserved_port_is_never_trusted(tmp_path: Path) -> None:
    # Whatever runs there (a system Redis, say) is not ours to use or to stop.
    state_file = tmp_path / "redis.json"
    embedded.write_redis_state(state_file, embedded.RedisState(pid=os.getpid(), port=6379))

    assert embedded.read_redis_state(state_file) is None


def test_garbled_redis_state_is_ignored(tmp_path: Path) -> None:
    state_file = tmp_path / "redis.json"
    state_file.write_text("{not json")

    assert embedded.read_redis_state(state_file) is None


def test_stale_postmaster_pid_is_cleared(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    pid = dead_pid()
    lines = [str(pid), str(pgdata), "1700000000", "5432", str(pgdata), "", "0 0", "ready"]
    (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
    (pgdata / ".s.PGSQL.5432.lock").write_text(f"{pid}\n")

    assert embedded.postgres_running(pgdata) is None
    assert embedded.clear_stale_postmaster(pgdata)
    assert not (pgdata / "postmaster.pid").exists()
    assert not (pgdata / ".s.PGSQL.5432.lock").exists()


def test_half_written_postmaster_pid_naming_a_non_postgres_process_is_cleared(
    tmp_path: Path,
) -> None:
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n{pgdata}\n")

    assert embedded.clear_stale_postmaster(pgdata)
    assert not (pgdata / "postmaster.pid").exists()


def test_real_redis_is_started_found_again_and_stopped(tmp_path: Path) -> None:
    layout = embedded.Layout(tmp_path)
    started, was_started = embedded.ensure_redis(layout)
    try:
        again, started_again = embedded.ensure_redis(layout)

        assert was_started
        assert not started_again
        assert again == started
        assert started.port != 6379
        assert embedded.redis_answers(started.port)
    finally:
        embedded.stop_redis(layout)

    assert not embedded.process_alive(started.pid)
    assert embedded.read_redis_state(layout.redis_state) is None
