"""The embedded PostgreSQL's stale state (a postmaster.pid of a dead or foreign process) is
cleared, so it can never block a start.

Real processes under tmp_path; nothing is mocked.
"""

from __future__ import annotations

import os
from pathlib import Path

import embedded.postgres
from tests.embedded.pids import dead_pid


def test_stale_postmaster_pid_is_cleared(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    pid = dead_pid()
    lines = [str(pid), str(pgdata), "1700000000", "5432", str(pgdata), "", "0 0", "ready"]
    (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
    (pgdata / ".s.PGSQL.5432.lock").write_text(f"{pid}\n")

    assert embedded.postgres.postgres_running(pgdata) is None
    assert embedded.postgres.clear_stale_postmaster(pgdata)
    assert not (pgdata / "postmaster.pid").exists()
    assert not (pgdata / ".s.PGSQL.5432.lock").exists()


def test_half_written_postmaster_pid_naming_a_non_postgres_process_is_cleared(
    tmp_path: Path,
) -> None:
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n{pgdata}\n")

    assert embedded.postgres.clear_stale_postmaster(pgdata)
    assert not (pgdata / "postmaster.pid").exists()
