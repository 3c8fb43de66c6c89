"""Supervising child processes: the launcher's stop signals (SIGINT, SIGTERM, SIGHUP), children
started as leaders of their own session that die with the launcher, stopping their whole process
groups, and reaping orphans the launcher adopted as a subreaper."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from embedded.layout import REPO_DIR
from embedded.processes import STOP_TIMEOUT_SECONDS, say

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


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
