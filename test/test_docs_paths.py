"""docs/ARCHITECTURE.md names only files and folders that exist (it is the map; moves must update it)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "ARCHITECTURE.md"


def named_paths(text: str) -> set[str]:
    """Backticked tokens that look like a path: ``a/b.py``, ``a/``, ``x.py``.

    Skipped: placeholders (``model/<method>/``), topics (``/diagnostics``) and URLs.
    """
    tokens = re.findall(r"`([^`\s]+)`", text)
    return {
        t
        for t in tokens
        if ("/" in t or t.endswith(".py")) and "<" not in t and not t.startswith("/") and "://" not in t
    }


def missing_paths(text: str, repo: Path) -> list[str]:
    """Named paths found neither from the repository root, nor in the package, nor (bare names) below it."""
    package = repo / "flowclas_ros"
    missing = []
    for token in sorted(named_paths(text)):
        rel = token.rstrip("/")
        if (repo / rel).exists() or (package / rel).exists():
            continue
        if "/" not in rel and any(package.rglob(rel)):
            continue
        missing.append(token)
    return missing


def test_every_path_in_the_architecture_document_exists():
    text = DOC.read_text()
    assert len(named_paths(text)) > 30, "the document names its files in backticks"
    missing = missing_paths(text, REPO)
    assert not missing, f"{DOC.name} names paths that do not exist: {missing}"


def test_the_check_catches_a_stale_path(tmp_path):
    (tmp_path / "flowclas_ros" / "ros").mkdir(parents=True)
    (tmp_path / "flowclas_ros" / "ros" / "node.py").write_text("")
    (tmp_path / "test").mkdir()
    text = "`ros/node.py`, `test/`, `node.py`, `model/<method>/`, `/topic`, `ros/gone.py`, `old.py`, `x.y`"
    assert missing_paths(text, tmp_path) == ["old.py", "ros/gone.py"]
