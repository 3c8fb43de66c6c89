"""Where the launcher keeps its state, and how it writes and reads its small state files.

Everything lives under ``<repo>/.aegispay`` (``STATE_DIR``; ``AEGISPAY_STATE_DIR`` moves it),
the same directory the project's settings and commands use for their own local files;
``make clean-data`` deletes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("AEGISPAY_STATE_DIR") or REPO_DIR / ".aegispay")
SERVICES = ("postgres", "redis")


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
    def secret_key_file(self) -> Path:
        """The development SECRET_KEY the launcher generated for this checkout (mode 0600)."""
        return self.root / "secret_key"

    @property
    def field_encryption_key_file(self) -> Path:
        """The development FIELD_ENCRYPTION_KEYS the launcher generated (mode 0600)."""
        return self.root / "field_encryption_key"

    @property
    def run_file(self) -> Path:
        """While ``run`` is up: its pid and its children's variables, so that a ``manage.py``
        started by hand in this checkout finds the same servers (aegispay/settings.py reads it).
        """
        return self.root / "run.json"

    def owner_file(self, service: str) -> Path:
        """Holds the pid of the launcher that has to stop ``service``."""
        return self.root / "owners" / service


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_private(path: Path, text: str) -> None:
    """``write_atomic`` for a file only this user may read (it holds a secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def read_pid_file(path: Path) -> int | None:
    """The integer on the first line of ``path``; None when missing or not a number."""
    try:
        first = path.read_text().splitlines()[0]
        return int(first.strip())
    except (OSError, IndexError, ValueError):
        return None
