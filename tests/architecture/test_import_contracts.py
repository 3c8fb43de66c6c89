"""The import contracts of ``make lint`` (import-linter, ``[tool.importlinter]`` in
pyproject.toml) catch a wrong import: each test copies the packages, adds one import that
breaks the architecture, and runs ``lint-imports`` on the copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (
    "aegispay",
    "backoffice",
    "common",
    "payments",
    "gateways",
    "routing",
    "outbox",
    "webhooks",
    "embedded",
)
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

Lint = Callable[[dict[str, str]], subprocess.CompletedProcess[str]]


@pytest.fixture
def lint(tmp_path: Path) -> Lint:
    """Run lint-imports on a copy of the packages, after appending ``{module: import line}``."""

    def run(added: dict[str, str]) -> subprocess.CompletedProcess[str]:
        for package in PACKAGES:
            shutil.copytree(
                REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
            )
        shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
        for module, line in added.items():
            path = tmp_path.joinpath(*module.split(".")).with_suffix(".py")
            path.write_text(path.read_text() + f"\n{line}\n")
        # The copy comes first on the path, before the editable install of the real tree.
        env = dict(os.environ, PYTHONPATH=str(tmp_path))
        return subprocess.run(
            [str(LINT_IMPORTS), "--no-cache"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    return run


def test_the_tree_as_it_is_keeps_every_contract(lint: Lint) -> None:
    result = lint({})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # A lower layer importing a higher one.
        ("gateways.base", "import payments.models", "layers"),
        ("common.ids", "import routing.models", "layers"),
        ("payments.models", "import backoffice.selectors", "layers"),
        # Siblings of one layer are independent.
        ("routing.models", "import outbox.models", "layers"),
        # A circle inside one package.
        ("payments.currencies", "import payments.serializers", "no import circles"),
        # The launcher stays outside the project.
        ("embedded.layout", "import aegispay.settings", "embedded imports no app"),
    ],
)
def test_a_wrong_import_breaks_a_contract(
    lint: Lint, module: str, line: str, contract: str
) -> None:
    result = lint({module: line})

    assert result.returncode == 1, result.stdout + result.stderr
    # "<name> BROKEN", or "<name> BROKEN (n ignored imports)".
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(row.startswith(contract) for row in broken), result.stdout
