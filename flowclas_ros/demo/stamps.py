"""Up-to-date checks for the demo stages: what a stage's output depends on, hashed.

A stage's *key* hashes its parameters, the source of every ``flowclas_ros`` module
its CLI can import (found by following imports, so an edit anywhere in that
closure reruns it) and the *tokens* of the stages it reads from. A finished stage
stores its key and a fresh token in ``STAMP_DIR/<stage>.json``; rerunning an
upstream stage gives it a new token, so everything downstream reruns too, even
when the upstream inputs did not change (training is not bit-reproducible).
"""

from __future__ import annotations

import ast
import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PACKAGE = "flowclas_ros"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _module_file(name: str, package_dir: Path) -> Path | None:
    """``flowclas_ros.a.b`` -> its ``.py`` file (or package ``__init__.py``), None if not in the tree."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _referenced_modules(path: Path, module: str) -> set[str]:
    """Package modules ``path`` imports (any scope), or names in strings such as ``"pkg.mod:Class"``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules imported by name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.split(":", 1)[0]
            if text.startswith(f"{PACKAGE}.") and text.replace(".", "").replace("_", "").isalnum():
                names.add(text)
    return {n for n in names if n == PACKAGE or n.startswith(f"{PACKAGE}.")}


def module_closure(roots: Iterable[str], package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Source files of ``roots`` and of every package module they reference, transitively.

    Parent packages' ``__init__.py`` are included (importing ``a.b`` runs ``a/__init__.py``).

    Raises:
        ValueError: A root is not a module of the package.
    """
    seen: dict[str, Path] = {}
    todo = list(roots)
    for root in todo:
        if _module_file(root, package_dir) is None:
            raise ValueError(f"{root} is not a module under {package_dir}")
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # the module and its parent packages
            prefix = ".".join(parts[:depth])
            if prefix in seen:
                continue
            path = _module_file(prefix, package_dir)
            if path is None:
                continue  # an attribute imported by name, not a module
            seen[prefix] = path
            todo.extend(_referenced_modules(path, prefix) - seen.keys())
    return sorted(set(seen.values()))


def digest_files(paths: Iterable[Path], root: Path) -> str:
    """sha256 over the files' paths (relative to ``root``) and contents; missing files hash as absent."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        h.update(str(path.resolve().relative_to(root.resolve())).encode() + b"\0")
        h.update(path.read_bytes() if path.is_file() else b"<absent>")
        h.update(b"\0")
    return h.hexdigest()


def code_digest(roots: Iterable[str], package_dir: Path = PACKAGE_DIR) -> str:
    """Digest of :func:`module_closure` of ``roots``."""
    return digest_files(module_closure(roots, package_dir), package_dir.parent)


def stage_key(**inputs: Any) -> str:
    """sha256 of the JSON of ``inputs`` (parameters, code digests, upstream tokens)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


class StampStore:
    """Stage stamps in one folder: ``<stage>.json`` with the key, a token and the run's wall time.

    A stage is *started* with a key before it runs (so an interrupted, resumable
    stage can tell that its partial output belongs to the same inputs) and
    *done* afterwards.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, stage: str) -> Path:
        return self.folder / f"{stage}.json"

    def read(self, stage: str) -> dict[str, Any]:
        """The stamp of ``stage`` (empty when missing or unreadable)."""
        try:
            data = json.loads(self._path(stage).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, stage: str, data: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._path(stage).with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self._path(stage))  # atomic: a crash never leaves half a stamp

    def is_done(self, stage: str, key: str) -> bool:
        """True when ``stage`` finished with this key."""
        stamp = self.read(stage)
        return stamp.get("state") == "done" and stamp.get("key") == key

    def interrupted_with(self, stage: str, key: str) -> bool:
        """True when ``stage`` was started with this key and did not finish."""
        stamp = self.read(stage)
        return stamp.get("state") == "started" and stamp.get("key") == key

    def token(self, stage: str) -> str | None:
        """Token of the finished run of ``stage`` (None if not done)."""
        stamp = self.read(stage)
        return stamp.get("token") if stamp.get("state") == "done" else None

    def mark_started(self, stage: str, key: str) -> None:
        """Record that ``stage`` is running with ``key`` (its old token is void)."""
        self._write(stage, {"state": "started", "key": key, "started": time.time()})

    def mark_done(self, stage: str, key: str, wall_s: float) -> str:
        """Record that ``stage`` finished; returns its new token."""
        token = uuid.uuid4().hex
        self._write(
            stage, {"state": "done", "key": key, "token": token, "wall_s": wall_s, "done": time.time()}
        )
        return token
