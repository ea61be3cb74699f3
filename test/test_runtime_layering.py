"""The deployment side stays light: ``runtime`` never imports ``export``, and the torch-free modules
load without torch, timm, FrEIA or open_clip (checked in a fresh interpreter of this environment)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flowclas_ros"
TORCH_FREE = [
    "flowclas_ros.model.checkpoint_meta",
    "flowclas_ros.data.transforms",
    "flowclas_ros.model.config",
    "flowclas_ros.runtime.base",
    "flowclas_ros.runtime.onnx_backend",
    "flowclas_ros.runtime.openvino_backend",
    "flowclas_ros.runtime.engine_cache",
    "flowclas_ros.evaluation.cli",
    "flowclas_ros.evaluation.runner",
    "flowclas_ros.ros.params",
]


def _imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` statement in ``path`` names, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_runtime_does_not_import_export():
    offenders = {}
    for path in (PACKAGE / "runtime").glob("*.py"):
        found = sorted(m for m in _imported_modules(path) if m.startswith("flowclas_ros.export"))
        if found:
            offenders[str(path.relative_to(PACKAGE))] = found
    assert not offenders, offenders


def test_deployment_modules_load_without_torch():
    probe = (
        "import importlib, json, sys\n"
        f"for name in {TORCH_FREE!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(set(sys.modules) & {'torch', 'timm', 'FrEIA', 'open_clip', 'nncf'})))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [], f"torch-side modules loaded by the deployment path: {done.stdout}"
