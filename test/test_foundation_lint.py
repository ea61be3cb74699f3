"""ruff (config in pyproject.toml) is clean over all Python code of the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Python files outside *.py that ruff would not find on its own.
EXTRA_FILES = ["scripts/anomaly_node"]


def python_targets() -> list[str]:
    """The whole repo (ruff skips the folders excluded in pyproject.toml) plus EXTRA_FILES."""
    return [".", *[f for f in EXTRA_FILES if (REPO_ROOT / f).is_file()]]


def run_ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *python_targets()],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ruff_check() -> None:
    proc = run_ruff("check", "--no-cache", "--output-format", "concise")
    assert proc.returncode == 0, f"ruff check found problems (fix: make format):\n{proc.stdout}{proc.stderr}"


def test_ruff_format() -> None:
    proc = run_ruff("format", "--check", "--no-cache")
    assert proc.returncode == 0, (
        f"ruff format would change files (fix: make format):\n{proc.stdout}{proc.stderr}"
    )
