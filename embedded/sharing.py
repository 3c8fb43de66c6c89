"""Servers shared between launchers: which launchers use the embedded servers, which one has to
stop each server (its owner), and starting, releasing and stopping them under one lock.

Every decision is taken holding ``launcher.lock``; the users are files in ``clients/`` named by
pid, the owners files in ``owners/`` holding one pid. The last launcher out stops a server; a
server whose owner died is adopted by the next launcher.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from embedded.layout import SERVICES, Layout, read_pid_file, write_atomic
from embedded.postgres import (
    clear_stale_postmaster,
    ensure_postgres,
    postgres_running,
    stop_postgres,
)
from embedded.processes import process_alive, process_cmdline, say
from embedded.redis import RedisState, ensure_redis, read_redis_state, stop_redis

# A launcher runs as ``python -m embedded ...``: its command line names this module after -m.
LAUNCHER_MODULE = "embedded"


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


def runs_launcher(cmdline: Sequence[str]) -> bool:
    """True when ``cmdline`` runs this launcher (``-m embedded`` or ``-membedded``). Only the
    module name after ``-m`` counts, so a command that merely mentions the word (``pytest
    tests/embedded``) is not one."""
    return f"-m{LAUNCHER_MODULE}" in cmdline or any(
        flag == "-m" and module == LAUNCHER_MODULE for flag, module in itertools.pairwise(cmdline)
    )


def is_launcher(pid: int) -> bool:
    """True when ``pid`` is a live process running this launcher."""
    return process_alive(pid) and runs_launcher(process_cmdline(pid))


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
