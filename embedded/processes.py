"""Ports and processes on this machine: free ports, whether a pid is alive and what it runs,
stopping a pid; and ``say``, the launcher's own output line. Pure helpers, used by the tests
with real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

import psutil

LOCAL_HOST = "127.0.0.1"
# The default Redis port: a system Redis may hold it or want it later, so it is never ours.
RESERVED_PORTS: frozenset[int] = frozenset({6379})
STOP_TIMEOUT_SECONDS = 10.0
START_TIMEOUT_SECONDS = 30.0


def say(message: str) -> None:
    """Print one launcher line to stdout, flushed, so it interleaves correctly with child output."""
    print(f"[aegispay] {message}", flush=True)


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


def process_exe(pid: int) -> str:
    """The resolved executable path of a live process; empty when gone or unreadable."""
    try:
        return os.path.realpath(psutil.Process(pid).exe())
    except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
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
