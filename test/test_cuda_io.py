"""The TensorRT backend's CUDA layer (runtime/cuda_io.py) against the real cuda-python bindings.

NVIDIA's ``cuda-bindings`` wheels import without a GPU or driver: every runtime call then
returns ``cudaErrorInsufficientDriver``. So this runs our code for real against both major
versions (12.x: CUDA 12, JetPack 6 / tensorrt-cu12; 13.x: the pinned one, tensorrt-cu13),
each in a fresh interpreter: every name in ``CUDA_API`` exists, and with no driver the device
check, ``cudaMalloc`` and the stream fail with one clear line each. Where a driver and GPU are
present, the same probe instead copies an array to the device and back through our stream.
The 12.x wheel is fetched once into the test-wheel cache (skipped, with the reason, if pip
cannot reach the registry).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowclas_ros.runtime import cuda_io
from flowclas_ros.runtime.cuda_io import CUDART_API, parse_device

CUDA12 = ("cuda-bindings==12.9.10", "cuda-pathfinder==1.9.1")

PROBE = r"""
import json, sys
from flowclas_ros.runtime import cuda_io
from flowclas_ros.runtime.cuda_io import CUDART_API, CudaError, TensorRTUnavailableError
cudart = cuda_io.import_cudart()
import cuda.bindings
enums = [cudart.cudaError_t, cudart.cudaDeviceAttr, cudart.cudaMemcpyKind]  # enum values live on these
missing = [n for n in CUDART_API if not hasattr(cudart, n) and not any(hasattr(e, n) for e in enums)]
driver = cudart.cudaDriverGetVersion()[1]
report = {"version": cuda.bindings.__version__, "missing": missing, "driver": driver}
def error(fn):
    try:
        fn()
    except (CudaError, TensorRTUnavailableError) as exc:
        return [type(exc).__name__, str(exc)]
    return None
if report["driver"] == 0:
    report["select"] = error(lambda: cuda_io.select_device("cuda:0"))
    report["malloc"] = error(lambda: cuda_io.DeviceBuffer(64))
    report["stream"] = error(cuda_io.CudaStream)
else:  # a GPU machine: a real round trip through our stream
    import numpy as np
    device = cuda_io.select_device("cuda")
    stream = cuda_io.CudaStream()
    data = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
    buf, back = cuda_io.DeviceBuffer(data.nbytes), np.zeros_like(data)
    stream.to_device(buf, data)
    stream.to_host(back, buf)
    stream.synchronize()
    report["round_trip"] = bool((back == data).all())
    report["cc"] = cuda_io.compute_capability(device)
    buf.free(); stream.destroy()
from flowclas_ros.runtime import create_backend
try:  # the whole backend path as the node takes it, up to the first thing missing here
    create_backend("tensorrt", "missing.onnx", device="cuda")
except Exception as exc:
    report["backend"] = [type(exc).__name__, str(exc)]
report["torch_loaded"] = "torch" in sys.modules
print(json.dumps(report))
"""


def _cuda12_path() -> Path:
    root = os.environ.get("FLOWCLAS_TEST_WHEELS") or Path.home() / ".cache" / "flowclas_ros" / "test-wheels"
    target = Path(root) / "cuda-bindings-12"
    installed = [target / sub / f"{spec.replace('-', '_').replace('==', '-')}.dist-info"
                 for spec, sub in zip(CUDA12, ("bindings", "pathfinder"))]  # fmt: skip
    if not all(path.is_dir() for path in installed):
        for spec, sub in zip(
            CUDA12, ("bindings", "pathfinder")
        ):  # two targets: both ship the cuda/ namespace
            cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade"]
            cmd += ["--target", str(target / sub), spec]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except subprocess.TimeoutExpired:
                pytest.skip(f"pip install {spec} timed out (no package registry?)")
            if done.returncode != 0:
                pytest.skip(f"cannot fetch {spec} from the registry: {done.stderr.strip()[-300:]}")
    return target


def _probe(extra_path: list[Path]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, extra_path), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=["13", "12"])
def probed(request) -> tuple[str, dict]:
    if request.param == "13":
        return "13", _probe([])  # the pinned cuda-bindings of this environment
    target = _cuda12_path()
    return "12", _probe([target / "bindings", target / "pathfinder"])


def test_the_probe_ran_the_major_version_it_names(probed):
    major, report = probed
    assert report["version"].split(".")[0] == major
    assert not report["torch_loaded"]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT installed")
def test_backend_path_reaches_tensorrt_without_torch(probed):
    _, report = probed
    kind, message = report["backend"]
    assert kind == "TensorRTUnavailableError" and "TensorRT is not installed" in message, report["backend"]
    assert not report["torch_loaded"]


def test_every_cuda_runtime_name_we_use_exists(probed):
    major, report = probed
    assert report["missing"] == [], f"cuda-bindings {report['version']} has no {report['missing']}"


def test_no_driver_fails_with_one_clear_line(probed):
    _, report = probed
    if report["driver"]:
        assert report["round_trip"] and report["cc"], report  # a GPU machine: the real copy worked
        return
    kind, message = report["select"]
    assert kind == "TensorRTUnavailableError" and "\n" not in message
    assert "needs a CUDA GPU; cudaGetDeviceCount: cudaError" in message and "CUDA driver not found" in message
    for key, call in (
        ("malloc", "cudaMalloc(64) failed: cudaError"),
        ("stream", "cudaStreamCreateWithFlags"),
    ):
        kind, message = report[key]
        assert kind == "CudaError" and call in message and "\n" not in message, report[key]


def test_cuda_io_uses_only_the_listed_names():
    used = set()
    for node in ast.walk(ast.parse(Path(cuda_io.__file__).read_text())):
        chain = []
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "cudart" and chain:
            used |= set(chain)
    assert used and used <= set(CUDART_API), used - set(CUDART_API)


@pytest.mark.parametrize("device,index", [("cuda", None), ("cuda:0", 0), ("cuda:3", 3), (" cuda:1 ", 1)])
def test_device_strings(device, index):
    assert parse_device(device) == index


@pytest.mark.parametrize("device", ["cpu", "cuda:x", "cuda:-1", "gpu", "cuda:0:1", ""])
def test_bad_device_string_is_one_line(device):
    with pytest.raises(ValueError, match=r"runs on a CUDA GPU; got device .* \(use cuda or cuda:N\)"):
        parse_device(device)
