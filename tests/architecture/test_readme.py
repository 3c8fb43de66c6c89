"""The README's "How it is built" table names the tree as it is, file by file, and the README
and the code's comments name only documents that exist in the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("aegispay", "backoffice", "common", "payments", "gateways", "routing", "outbox")
PACKAGES += ("webhooks", "embedded", "bench")
# Files every Django app or package has, which the table need not name.
BOILERPLATE = {"__init__.py", "apps.py"}


def table_rows() -> dict[str, str]:
    """{folder: the text of its row} from the README's "How it is built" table."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## How it is built") :]
    table = section[section.index("| where | what |") :].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        # A cell may hold an escaped pipe (\|); split on the unescaped ones only.
        where, what = re.split(r"(?<!\\)\|", line)[1:3]
        folder = re.search(r"`([^`]+)`", where)
        if folder is not None:
            rows[folder.group(1).rstrip("/")] = what
    return rows


def named(row: str) -> set[str]:
    return set(re.findall(r"`([^`\s]+)`", row))


def modules(package: str) -> list[Path]:
    return sorted(
        path
        for path in (REPO / package).rglob("*.py")
        if "migrations" not in path.parts and path.name not in BOILERPLATE
    )


def test_every_module_of_every_package_is_named_in_its_row() -> None:
    rows = table_rows()
    unnamed = {
        package: [str(p.relative_to(REPO)) for p in modules(package) if p.name not in named(row)]
        for package, row in rows.items()
        if package in PACKAGES
    }
    assert set(PACKAGES) <= set(rows), f"packages without a row: {set(PACKAGES) - set(rows)}"
    assert {package: files for package, files in unnamed.items() if files} == {}


def test_every_file_a_row_names_exists() -> None:
    missing = {}
    for package, row in table_rows().items():
        files = {p.name for p in (REPO / package).rglob("*")}
        gone = [
            name
            for name in named(row)
            if re.fullmatch(r"[\w.-]+\.(py|html)|[\w-]+/", name) and name.rstrip("/") not in files
        ]
        if gone:
            missing[package] = gone
    assert missing == {}


def test_documents_named_by_the_readme_and_the_code_exist() -> None:
    texts = [REPO / "README.md", *(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))]
    texts += [*(REPO / "tests").rglob("*.py"), REPO / "pyproject.toml", REPO / "Makefile"]
    missing = set()
    for path in texts:
        for document in re.findall(r"[\w./-]*\b[A-Z][A-Z_]+\.md\b", path.read_text()):
            inside = [
                found
                for found in ((REPO / document).resolve(), (path.parent / document).resolve())
                if found.is_relative_to(REPO) and found.exists()
            ]
            if not inside:
                missing.add(f"{path.relative_to(REPO)}: {document}")
    assert sorted(missing) == []
