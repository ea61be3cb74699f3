"""The deployment install has no torch: a fresh venv with ``pip install .[runtime]`` + rclpy runs the
node and ``flowclas-eval`` on an exported ONNX model.

The venv is made with ``python -m venv`` (no ``--system-site-packages``: it must not see this
environment's torch) and cached in ``.cache/torchfree-<hash>`` keyed by the packaging and pin
files, so only the first run (or a change to them) pays the ~1 min of ``pip install``.
The exported model is made here, in the dev environment, where torch is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ros_harness import (
    STARTUP_TIMEOUT_S,
    TestClient,
    write_params,
)
from tiny_checkpoints import tiny_checkpoint, tiny_export

REPO = Path(__file__).resolve().parents[1]
HASHED = [
    "setup.cfg",
    "setup.py",
    "pyproject.toml",
    "requirements/runtime.txt",
    "requirements/constraints.txt",
]
ROS_RUNTIME = [  # the node's ROS wheels, pinned as in requirements/ros.txt (no generators)
    "ros-jazzy-rclpy[fastrtps]",
    "ros-jazzy-sensor-msgs",
    "ros-jazzy-std-msgs",
    "ros-jazzy-diagnostic-msgs",
    "ros-jazzy-visualization-msgs",
    "ros-jazzy-geometry-msgs",
    "ros-jazzy-lifecycle-msgs",
    "ros-jazzy-builtin-interfaces",
    "ros-jazzy-std-srvs",  # ~/rollback_model (std_srvs/Trigger); action_msgs comes with rclpy
    "ros-jazzy-rosidl-default-runtime",
]
HEAVY = ("torch", "timm", "FrEIA", "open_clip", "nncf", "skimage")
NS = "/torchfree_test"
TOPIC = "/torchfree_test_in/image_raw"
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"


def _ros_pins() -> list[str]:
    pins = {}
    for line in (REPO / "requirements" / "ros.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if version:
            pins[name.split("[")[0]] = version.strip()
    return [f"{req}=={pins[req.split('[')[0]]}" for req in ROS_RUNTIME]


def _install_tree(venv: Path, pip: list[str], extra: list[str]) -> None:
    """``pip install <copy of this tree>[runtime]`` (building in the repo writes into colcon's build/)."""
    source = venv / "src"
    shutil.rmtree(source, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "flowclas_ros", source / "flowclas_ros", ignore=skip)
    for name in ("setup.cfg", "setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    subprocess.run([*pip, *extra, f"{source}[runtime]"], check=True, cwd=venv)
    shutil.rmtree(source)


def _venv() -> Path:
    """The torch-free venv: dependencies cached by the packaging / pin files; this tree installed each run."""
    digest = hashlib.sha256()
    for name in HASHED:
        digest.update(name.encode() + (REPO / name).read_bytes())
    digest.update(" ".join(ROS_RUNTIME).encode())
    venv = REPO / ".cache" / f"torchfree-{digest.hexdigest()[:16]}"
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input"]
    constraints = ["-c", str(REPO / "requirements" / "constraints.txt")]
    if (venv / ".complete").is_file():  # deps unchanged: refresh only our package (~10 s)
        _install_tree(venv, pip, ["--no-deps", "--force-reinstall"])
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    for _ in (1, 2):  # ensurepip failed once, transiently, on the loaded shared machine
        command = [sys.executable, "-m", "venv", "--clear", str(venv)]
        made = subprocess.run(command, capture_output=True, text=True)
        if made.returncode == 0:
            break
    assert made.returncode == 0, f"python -m venv failed twice: {made.stdout}{made.stderr}"
    # Exactly what the docs tell a robot to run: `pip install .[runtime]` (+ the ROS wheels).
    runtime = str(REPO / "requirements" / "runtime.txt")
    subprocess.run([*pip, *constraints, "-r", runtime, *_ros_pins()], check=True)
    _install_tree(venv, pip, constraints)
    (venv / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
    return venv


def _env(venv: Path) -> dict[str, str]:
    """Runs the venv's own installed copy (not the source tree) plus the colcon-built messages."""
    generated = REPO / "install" / "flowclas_ros"
    site = venv / "lib" / PY / "site-packages"
    (site / "flowclas_ros_msgs.pth").write_text(f"{generated}/lib/{PY}/site-packages\n")  # after site
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
        LD_LIBRARY_PATH=f"{generated / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}",
        AMENT_PREFIX_PATH=f"{generated}:{venv}",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    return env


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if not (REPO / "install" / "flowclas_ros").is_dir():
        pytest.fail("install/flowclas_ros missing: run scripts/bootstrap (builds the messages)")
    tmp = tmp_path_factory.mktemp("torchfree")
    checkpoint = tiny_checkpoint(tmp / "ckpt", threshold=3.0)
    tiny_export(checkpoint, tmp / "m.onnx")
    venv = _venv()
    return tmp, venv, _env(venv)


def test_torch_is_not_installed(setup):
    _, venv, env = setup
    modules = "flowclas_ros.runtime.base, flowclas_ros.ros.node, flowclas_ros.runtime.openvino_backend"
    probe = (
        f"import importlib.util, json, sys; import {modules}, flowclas_ros.model.checkpoint_meta; "
        f"print(json.dumps([[m, importlib.util.find_spec(m) is not None] for m in {list(HEAVY)!r}]"
        " + [['loaded', sorted(set(sys.modules) & {'torch', 'timm', 'FrEIA'})], "
        "['file', flowclas_ros.__file__]]))"
    )
    python = str(venv / "bin" / "python")
    done = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True, cwd=venv)
    assert done.returncode == 0, done.stderr
    found = dict(json.loads(done.stdout))
    assert not any(found[m] for m in HEAVY), f"heavy packages installed in the runtime venv: {found}"
    assert found["loaded"] == [] and str(venv) in found["file"], found


def test_eval_runs_without_torch(setup):
    tmp, venv, env = setup
    from flowclas_ros.synthetic.synthetic_scenes import SceneConfig, generate_dataset

    generate_dataset(
        tmp / "data", seed=4, counts={"train": 0, "val": 0, "test": 2}, cfg=SceneConfig(size=(56, 56))
    )
    for backend in ("onnxruntime", "openvino"):
        out = tmp / f"eval_{backend}"
        cmd = [str(venv / "bin" / "flowclas-eval"), "--checkpoint", str(tmp / "m.onnx"), "--backend", backend]
        cmd += ["--data", str(tmp / "data" / "test"), "--out", str(out), "--no-progress"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp)
        assert done.returncode == 0, done.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["n_images"] == 2 and metrics["backend"].startswith(backend)


def test_node_answers_without_torch(setup):
    from sensor_msgs.msg import Image

    from flowclas_ros.msg import AnomalyResult

    tmp, venv, env = setup
    params = write_params(
        tmp / "params.yaml",
        {
            "checkpoint": str(tmp / "m.onnx"),
            "backend": "openvino",
            "precision": "f32",
            "image_topics": [TOPIC],
            "camera_names": ["cam"],
        },
    )
    # The node, then (at exit) which heavy modules its process had loaded.
    wrapper = (
        "import atexit, sys; atexit.register(lambda: print('HEAVY_LOADED', sorted(set(sys.modules) & "
        f"{set(HEAVY)!r}), flush=True)); from flowclas_ros.ros.node import main; sys.exit(main())"
    )
    log = open(tmp / "node.log", "w")
    cmd = [str(venv / "bin" / "python"), "-c", wrapper, "--ros-args", "--params-file", str(params)]
    cmd += ["-r", f"__ns:={NS}"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    client = TestClient("torchfree_tester")
    try:
        results = client.subscribe(f"{NS}/anomaly_node/cam/result", AnomalyResult)
        publisher = client.publisher(TOPIC, Image)
        ready = lambda: publisher.get_subscription_count() > 0 or proc.poll() is not None  # noqa: E731
        client.wait_for(ready, STARTUP_TIMEOUT_S, "the node to subscribe")
        assert proc.poll() is None, (tmp / "node.log").read_text()
        rgb = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not results.snapshot():
            publisher.publish(client.image(rgb, "torchfree"))
            time.sleep(0.5)
        got = results.snapshot()
        assert got, f"no result within 60 s\n{(tmp / 'node.log').read_text()[-3000:]}"
        assert got[0].backend == "openvino-f32" and got[0].header.frame_id == "torchfree"
    finally:
        client.close()
        proc.send_signal(2)
        try:
            proc.wait(timeout=60)
        finally:
            log.close()
    output = (tmp / "node.log").read_text()
    assert "HEAVY_LOADED []" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
