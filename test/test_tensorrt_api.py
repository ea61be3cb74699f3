"""Our TensorRT code against the real TensorRT 10.3 (JetPack 6) and 11.4 Python bindings (17.4).

What this can check here, honestly: the ``tensorrt`` bindings wheels (about 1 MB each) come
from the registry, but importing them needs ``libnvinfer`` (the ``tensorrt-cu12-libs`` wheel
is a stub that downloads from NVIDIA's index, unreachable here), and building needs a GPU.
So no TensorRT code runs. Instead the bindings' compiled module is read as data: pybind11
registers every Python name (class, method, property, enum value) as a NUL-terminated C
string, so the set of those strings is the API surface of that version. The tests check
that every name our builder and backend use exists in both versions, that none of the
weak-typing API TensorRT 11 removed is used, and that the table does see version
differences (``FP16`` is in 10.3 and not in 11.4), so a check could fail.
A real build runs in ``benchmarks/tensorrt_smoke.py`` where a GPU and TensorRT are present.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from flowclas_ros.runtime import tensorrt_backend, tensorrt_builder
from flowclas_ros.runtime.tensorrt_builder import REMOVED_IN_11, TRT_API, profile_shapes

VERSIONS = ("10.3.0", "11.4.0.106")
WHEEL = "tensorrt-cu12-bindings"
OUR_FILES = (Path(tensorrt_builder.__file__), Path(tensorrt_backend.__file__))
OUR_OWN = {"precision"}  # EngineKey / TensorRTBackend.precision (TensorRT 10 ILayer.precision: unused)


def _wheel_cache() -> Path:
    root = os.environ.get("FLOWCLAS_TEST_WHEELS") or Path.home() / ".cache" / "flowclas_ros" / "test-wheels"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _bindings_wheel(version: str) -> Path:
    cache = _wheel_cache()
    pattern = f"tensorrt_cu12_bindings-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            f"{WHEEL}=={version}",
            "-d",
            str(cache),
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip(f"pip download {WHEEL}=={version} timed out (no package registry?)")
        found = sorted(cache.glob(pattern))
        if done.returncode != 0 or not found:
            pytest.skip(f"cannot fetch {WHEEL}=={version} from the registry: {done.stderr.strip()[-300:]}")
    return found[-1]


def _name_table(wheel: Path) -> set[bytes]:
    """Names the compiled module registers, plus those its package ``__init__.py`` defines."""
    with zipfile.ZipFile(wheel) as archive:
        member = next(n for n in archive.namelist() if re.search(r"/tensorrt[^/]*\.so$", n))
        table = set(re.findall(rb"[A-Za-z_][A-Za-z0-9_]*(?=\0)", archive.read(member)))
        init = archive.read(str(Path(member).parent / "__init__.py"))
    defined = rb"^(?:[A-Za-z_][A-Za-z0-9_]*)(?=\s*=)|(?<=^def )[A-Za-z_][A-Za-z0-9_]*"
    return table | set(re.findall(defined, init, flags=re.MULTILINE))


def has(table: set[bytes], name: str) -> bool:
    """Registered in that module: a NUL-terminated string equal to ``name`` or ending in it.

    (The linker may store ``"Runtime"`` as the tail of ``"IRuntime"``.) Absence is therefore
    certain; presence is a necessary condition, checked for names specific enough to mean it.
    """
    needle = name.encode()
    return any(entry.endswith(needle) for entry in table)


@pytest.fixture(scope="module")
def tables() -> dict[str, set[bytes]]:
    return {version: _name_table(_bindings_wheel(version)) for version in VERSIONS}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_tensorrt_name_we_use_exists(tables, version):
    missing = [name for name in TRT_API if not has(tables[version], name)]
    assert not missing, f"TensorRT {version} has no {missing}"


def test_the_table_sees_what_tensorrt_11_removed(tables):
    old, new = tables["10.3.0"], tables["11.4.0.106"]
    for name in REMOVED_IN_11:
        assert has(old, name), f"{name} should exist in 10.3"
        assert not has(new, name), f"{name} should be gone in 11.4"
    assert has(old, "STRONGLY_TYPED") and has(new, "STRONGLY_TYPED")  # the one mode both have


def _attribute_names(path: Path) -> set[str]:
    """``x.name`` accesses, plus names given to getattr / hasattr / setattr."""
    tree = ast.parse(path.read_text())
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "hasattr", "setattr"):
            names |= {a.value for a in node.args[1:2] if isinstance(a, ast.Constant)}
    return names


def _trt_module_attributes(path: Path) -> set[str]:
    """``trt.X`` and ``trt.X.Y`` accessed in a file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        chain = []
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in ("trt", "tensorrt") and chain:
            found |= set(chain)
    return found


@pytest.mark.parametrize("path", OUR_FILES, ids=lambda p: p.name)
def test_our_code_uses_no_version_specific_or_removed_name(tables, path):
    used = _attribute_names(path)
    old, new = tables["10.3.0"], tables["11.4.0.106"]
    removed = sorted(n for n in used if n in REMOVED_IN_11)
    assert not removed, f"{path.name} uses weak-typing API that TensorRT 11 removed: {removed}"
    only_one = sorted(n for n in used - OUR_OWN if len(n) > 6 and has(old, n) != has(new, n))
    assert not only_one, f"{path.name} uses names that exist in only one TensorRT version: {only_one}"
    assert _trt_module_attributes(path) <= set(TRT_API), _trt_module_attributes(path) - set(TRT_API)


def test_profile_opt_batch_is_the_number_of_cameras():
    chw = (3, 224, 224)
    assert profile_shapes(-1, 4, 2, chw) == ((1, *chw), (2, *chw), (4, *chw))  # 2 cameras, max_batch 4
    assert profile_shapes(-1, 4, 9, chw)[1] == (4, *chw)  # opt never above max
    assert profile_shapes(-1, 1, 1, chw) == ((1, *chw),) * 3
    assert profile_shapes(2, 2, 2, chw) is None  # fixed-batch graph: no profile
