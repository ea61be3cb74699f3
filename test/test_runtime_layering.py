"""The deployment side stays light: ``runtime`` never imports ``export``, and the torch-free modules
load without torch, timm, FrEIA or open_clip (checked in a fresh interpreter of this environment).

The TensorRT path (backend, builder, engine cache, CUDA I/O) is checked at both levels: its
import loads none of them, and no ``import`` anywhere in those files, lazy ones included, names
torch or a flowclas_ros module that would load it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flowclas_ros"
TORCH_FREE = [
    "flowclas_ros.model.checkpoint_meta",
    "flowclas_ros.data.images.transforms",
    "flowclas_ros.model.config",
    "flowclas_ros.runtime.base",
    "flowclas_ros.runtime.onnx_backend",
    "flowclas_ros.runtime.openvino_backend",
    "flowclas_ros.runtime.engine_cache",
    "flowclas_ros.runtime.cuda_io",
    "flowclas_ros.runtime.tensorrt_builder",
    "flowclas_ros.runtime.tensorrt_backend",
    "flowclas_ros.evaluation.cli",
    "flowclas_ros.evaluation.runner",
    "flowclas_ros.ros.params",
]
TENSORRT_PATH = ["engine_cache", "cuda_io", "tensorrt_builder", "tensorrt_backend"]
HEAVY = {"torch", "torchvision", "timm", "FrEIA", "open_clip", "nncf"}


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


def _loads_without_torch(modules: list[str]) -> list[str]:
    """The heavy modules that importing ``modules`` in a fresh interpreter loads (empty = torch-free)."""
    probe = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(set(sys.modules) & {'torch', 'timm', 'FrEIA', 'open_clip', 'nncf'})))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_deployment_modules_load_without_torch():
    loaded = _loads_without_torch(TORCH_FREE)
    assert loaded == [], f"torch-side modules loaded by the deployment path: {loaded}"


def test_tensorrt_path_imports_no_torch_even_lazily():
    files = [PACKAGE / "runtime" / f"{name}.py" for name in TENSORRT_PATH]
    named = {path.name: _imported_modules(path) for path in files}
    heavy = {f: sorted(m for m in mods if m.split(".")[0] in HEAVY) for f, mods in named.items()}
    assert not any(heavy.values()), f"TensorRT path imports torch-side packages: {heavy}"
    ours = sorted({m for mods in named.values() for m in mods if m.startswith("flowclas_ros.")})
    assert "flowclas_ros.runtime.onnx_backend" in ours  # the lazy import is seen, so this can fail
    loaded = _loads_without_torch(ours)
    assert loaded == [], f"a module the TensorRT path imports (lazily too) loads {loaded}: {ours}"
