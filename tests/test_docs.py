"""The documents the code cites exist: docs/design.md is current with the code it is generated
from, every "docs/design.md §N" citation names a section that exists, nothing cites a design
document outside the repository, and every relative link in a Markdown file resolves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
TEXT_SUFFIXES = {".py", ".md", ".h", ".cpp", ".cu", ".txt", ".cmake", ".toml", ".sh", ".html"}
SKIP_DIRS = {".git", ".venv", ".venv-ci", "build", "node_modules", "__pycache__"}

CITATION = re.compile(
    r"docs/design\.md(?:[`'\"]?)\s*(?:§\s*|sections?\s+)(\d+)((?:\s*(?:,|and|/)\s*§?\s*\d+)*)"
)
OUTSIDE = re.compile(r"(?<![\w/.-])DESIGN\.md")
LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s]+)\)")


def _files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        paths = [ROOT / p for p in out]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist)
        paths = [p for p in ROOT.rglob("*") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return [p for p in paths if p.is_file() and p.suffix in TEXT_SUFFIXES]


def _sections() -> set[int]:
    return {int(m) for m in re.findall(r"^## (\d+)\. ", DESIGN.read_text("utf-8"), re.M)}


def test_design_document_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "generate.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_citations_name_existing_sections() -> None:
    sections = _sections()
    assert sections == set(range(1, max(sections) + 1)), sections
    bad, cited = [], 0
    for path in _files():
        if path == Path(__file__):  # the planted citations below
            continue
        text = path.read_text("utf-8", errors="replace")
        for m in CITATION.finditer(text):
            numbers = [int(m.group(1)), *map(int, re.findall(r"\d+", m.group(2)))]
            cited += 1
            for n in numbers:
                if n not in sections:
                    line = text.count("\n", 0, m.start()) + 1
                    bad.append(f"{path.relative_to(ROOT)}:{line} cites docs/design.md §{n}")
    assert not bad, "citations of sections that do not exist:\n" + "\n".join(bad)
    assert cited >= 10, f"only {cited} citations found: is the pattern still right?"


def test_no_citation_of_a_document_outside_the_repository() -> None:
    bad = []
    for path in _files():
        if path == Path(__file__):
            continue
        text = path.read_text("utf-8", errors="replace")
        for m in OUTSIDE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            bad.append(f"{path.relative_to(ROOT)}:{line}")
    assert not bad, "cite docs/design.md §N instead of DESIGN.md:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "planted, expect_bad",
    [
        ("see docs/design.md §42", True),
        ("see docs/design.md sections 3 and 17", True),
        ("see docs/design.md §3", False),
        ("as DESIGN.md says", None),
    ],
)
def test_the_checks_catch_planted_citations(planted: str, expect_bad: bool | None) -> None:
    sections = _sections()
    if expect_bad is None:
        assert OUTSIDE.search(planted)
        return
    m = CITATION.search(planted)
    assert m is not None
    numbers = [int(m.group(1)), *map(int, re.findall(r"\d+", m.group(2)))]
    assert any(n not in sections for n in numbers) is expect_bad


def test_relative_markdown_links_resolve() -> None:
    bad = []
    for path in _files():
        if path.suffix != ".md":
            continue
        text = path.read_text("utf-8", errors="replace")
        for m in LINK.finditer(text):
            target = m.group(1).split("#", 1)[0]
            if target and not (path.parent / target).exists():
                line = text.count("\n", 0, m.start()) + 1
                bad.append(f"{path.relative_to(ROOT)}:{line} -> {m.group(1)}")
    assert not bad, "broken relative links:\n" + "\n".join(bad)
