"""Every third-party module the package imports is installable on a real ROS 2 machine.

Either package.xml declares its rosdep key (apt, checked against ros/rosdistro's
rosdep/python.yaml when written) or requirements/host.txt lists it for pip. numpy and
OpenCV must come from apt only: a pip copy would shadow the one rclpy / cv_bridge use.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from catkin_pkg.package import parse_package

REPO_ROOT = Path(__file__).resolve().parents[1]
APT_KEYS = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "skimage": "python3-skimage",
    "PIL": "python3-pil",
    "imageio": "python3-imageio",
}
PIP_NAMES = {  # import name -> distribution in requirements/host.txt
    "torch": "torch",
    "timm": "timm",
    "FrEIA": "FrEIA",
    "safetensors": "safetensors",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "open_clip": "open-clip-torch",
    "rosbags": "rosbags",
    "mcap": "mcap",
    "zstandard": "zstandard",
    "lz4": "lz4",
}
OPTIONAL = {"tensorrt", "cuda", "openvino", "nncf", "sam2"}
"""Imported lazily for optional backends / formats (README says how to add them), or not modules."""


def _third_party_imports() -> set[str]:
    found: set[str] = set()
    for path in (REPO_ROOT / "flowclas_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    ros = {
        m
        for m in found
        if m in {"rclpy", "launch", "launch_ros"} or m.endswith(("_msgs", "_srvs", "_interfaces"))
    }
    return found - set(sys.stdlib_module_names) - ros - {"flowclas_ros", "sensor_msgs_py"}


def test_every_import_has_a_rosdep_key_or_a_host_requirement():
    pkg = parse_package(str(REPO_ROOT / "package.xml"))
    exec_keys = {d.name for d in pkg.exec_depends + pkg.build_export_depends}
    host = (REPO_ROOT / "requirements" / "host.txt").read_text()
    host_names = {re.split(r"[<>=!~ ]", line)[0] for line in host.splitlines() if line and line[0] != "#"}
    missing = []
    for module in sorted(_third_party_imports() - OPTIONAL):
        if module in APT_KEYS:
            ok = APT_KEYS[module] in exec_keys
        else:
            ok = PIP_NAMES.get(module) in host_names
        if not ok:
            missing.append(module)
    assert not missing, f"imported but neither in package.xml (rosdep) nor requirements/host.txt: {missing}"
    assert not {"numpy", "opencv-python", "opencv-python-headless"} & host_names
    for key in ("python3-psutil", "rclpy", "lifecycle_msgs", "launch_ros", "rviz2"):
        assert key in exec_keys, key
    assert {"ament_cmake_pytest", "python3-pytest"} <= {d.name for d in pkg.test_depends}
