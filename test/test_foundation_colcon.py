"""The real-ROS install path: a default `colcon build` from the source tree, then the installed node.

This is what `colcon build` + `ros2 run flowclas_ros anomaly_node` do on a ROS machine: the Python
package and the generated messages are installed side by side, and lib/flowclas_ros/anomaly_node
runs with nothing but the install tree (and the ROS underlay) on the path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_foundation_node import (
    CHECKPOINT_THRESHOLD,
    NodeClient,
    check_result,
    node_args,
    start_node,
    stop_node,
)
from tiny_checkpoints import tiny_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
SITE = "lib/python3.11/site-packages"

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def underlay_env() -> dict[str, str]:
    """This environment without the dev install tree (the venv stays: it is the ROS underlay)."""
    dev_install = str(REPO_ROOT / "install")
    env = dict(os.environ)
    for var in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "LD_LIBRARY_PATH", "PYTHONPATH"):
        parts = [p for p in env.get(var, "").split(os.pathsep) if p and not p.startswith(dev_install)]
        parts = [p for p in parts if Path(p).resolve() != REPO_ROOT]
        env[var] = os.pathsep.join(parts)
    env.setdefault("COLCON_DEFAULTS_FILE", str(REPO_ROOT / "scripts" / "colcon-defaults.yaml"))
    return env


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Default (FLOWCLAS_ROS_INSTALL_PYTHON=ON) colcon build of the repo into a temporary workspace."""
    ws = tmp_path_factory.mktemp("colcon_ws")
    colcon = Path(sys.executable).parent / "colcon"
    cmd = [str(colcon), "--log-base", str(ws / "log"), "build", "--base-paths", str(REPO_ROOT)]
    cmd += ["--build-base", str(ws / "build"), "--install-base", str(ws / "install")]
    cmd += ["--event-handlers", "console_cohesion+", "status-"]
    proc = subprocess.run(cmd, cwd=ws, env=underlay_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"colcon build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return ws / "install" / "flowclas_ros"


def installed_env(prefix: Path) -> dict[str, str]:
    env = underlay_env()
    env["PYTHONPATH"] = str(prefix / SITE)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(prefix / "lib"), env["LD_LIBRARY_PATH"]]).rstrip(os.pathsep)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), env["AMENT_PREFIX_PATH"]]).rstrip(os.pathsep)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)  # let the ROS wheels recompute the library path
    return env


def isolated_python(code: str) -> list[str]:
    """`python -c` that first drops the dev tree from sys.path (the venv's flowclas_ros_dev.pth adds it)."""
    root, install = str(REPO_ROOT), str(REPO_ROOT / "install")
    keep = f"p != {root!r} and not p.startswith({install!r})"
    prelude = f"import sys; sys.path[:] = [p for p in sys.path if {keep}]\n"
    return [sys.executable, "-c", prelude + code]


def test_install_tree_layout(colcon_install: Path) -> None:
    prefix = colcon_install
    exe = prefix / "lib" / "flowclas_ros" / "anomaly_node"
    assert exe.is_file() and os.access(exe, os.X_OK)
    share = prefix / "share" / "flowclas_ros"
    assert (share / "launch" / "anomaly.launch.py").is_file()
    assert (share / "config" / "anomaly.yaml").is_file()
    assert (share / "package.xml").is_file()
    pkg = prefix / SITE / "flowclas_ros"
    assert (pkg / "ros" / "node.py").is_file() and (pkg / "model").is_dir()
    assert (pkg / "msg" / "_anomaly_result.py").is_file()
    assert (pkg / "model" / "vl4ad" / "prompt_sets" / "road.yaml").is_file()  # prompt_set:=road
    # Our __init__.py replaced the empty one rosidl generates.
    assert "__version__" in (pkg / "__init__.py").read_text()


def test_colcon_test_runs_the_pytest_suite(colcon_install: Path) -> None:
    """`colcon test` runs ctest in the build directory: the suite must be registered there."""
    build = colcon_install.parents[1] / "build" / "flowclas_ros"
    proc = subprocess.run(["ctest", "-N", "-V"], cwd=build, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "flowclas_ros_pytest" in proc.stdout and '"-m" "pytest"' in proc.stdout, proc.stdout[-3000:]
    assert str(REPO_ROOT / "test") in proc.stdout, proc.stdout[-3000:]


def test_installed_package_imports_from_install_tree_only(colcon_install: Path, tmp_path: Path) -> None:
    code = (
        "import flowclas_ros, flowclas_ros.ros.node, flowclas_ros.msg\n"
        "from ament_index_python.packages import get_package_share_directory\n"
        "for module in (flowclas_ros, flowclas_ros.ros.node, flowclas_ros.msg):\n"
        "    print(module.__file__)\n"
        "print(*flowclas_ros.__path__)\n"
        "print(get_package_share_directory('flowclas_ros'))\n"
    )
    proc = subprocess.run(
        isolated_python(code), cwd=tmp_path, env=installed_env(colcon_install), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    paths = [Path(line) for line in proc.stdout.split()]
    assert len(paths) == 5 and all(p.is_relative_to(colcon_install) for p in paths), paths


def test_installed_executable_answers_an_image(colcon_install: Path, tmp_path: Path, ros_context) -> None:
    """Like `ros2 run flowclas_ros anomaly_node`: the installed script, with the installed params file."""
    exe = colcon_install / "lib" / "flowclas_ros" / "anomaly_node"
    params = colcon_install / "share" / "flowclas_ros" / "config" / "anomaly.yaml"
    checkpoint = tiny_checkpoint(tmp_path / "checkpoint", threshold=CHECKPOINT_THRESHOLD)
    namespace = "/colcon_test"
    run_script = f"import runpy; sys.argv = {[str(exe), *node_args(namespace, checkpoint, params)]!r}\n"
    run_script += f"runpy.run_path({str(exe)!r}, run_name='__main__')\n"
    proc = start_node(isolated_python(run_script), cwd=tmp_path, env=installed_env(colcon_install))
    client = NodeClient(ros_context, namespace, proc)
    try:
        image, result = client.exchange(frame_id="installed")
        check_result(image, result)
    finally:
        client.close()
        rc, out = stop_node(proc, signal.SIGINT)
    assert rc == 0, out
    assert "Traceback" not in out, out
