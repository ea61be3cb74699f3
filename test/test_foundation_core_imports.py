"""The ROS-free core imports with no ROS available: from the source tree and from a built wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: blocks every ROS Python package, then imports every module of
# flowclas_ros except the ROS adapter (flowclas_ros.ros) and the generated messages
# (flowclas_ros.msg). Prints a JSON report.
IMPORT_ALL_WITHOUT_ROS = r"""
import importlib, importlib.abc, json, pkgutil, sys, traceback

ROS_TOP_LEVEL = ("rclpy", "rcl_", "rmw", "rosidl", "rpyutils", "ament_", "launch", "launch_ros",
                 "std_msgs", "sensor_msgs", "builtin_interfaces", "diagnostic_msgs", "geometry_msgs",
                 "visualization_msgs", "lifecycle_msgs", "rosgraph_msgs", "service_msgs",
                 "type_description_interfaces", "unique_identifier_msgs", "action_msgs", "cv_bridge")
EXCLUDED = ("flowclas_ros.ros", "flowclas_ros.msg")


def is_ros(name):
    top = name.split(".")[0]
    ros_top = top.startswith(ROS_TOP_LEVEL) or top.endswith(("_msgs", "_interfaces"))
    return ros_top or name.startswith(EXCLUDED)


class BlockRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if is_ros(name):
            raise ImportError(f"ROS module {name!r} imported by the ROS-free core")
        return None


sys.meta_path.insert(0, BlockRos())
errors, imported = {}, []


def import_tree(name):
    # Import module `name` and, for a package, everything below it (excluded subtrees skipped).
    try:
        module = importlib.import_module(name)
    except BaseException:
        errors[name] = traceback.format_exc()
        return
    imported.append(name)
    for info in pkgutil.iter_modules(getattr(module, "__path__", []), name + "."):
        if not info.name.startswith(EXCLUDED) and not info.name.endswith(".__main__"):  # runs a CLI
            import_tree(info.name)


import_tree("flowclas_ros")
leaked = sorted(m for m in sys.modules if is_ros(m))
package = sys.modules["flowclas_ros"]
print(json.dumps({"imported": imported, "errors": errors, "leaked": leaked,
                  "file": package.__file__, "path": list(package.__path__)}))
"""


def ros_free_env() -> dict[str, str]:
    """The environment without anything that points at ROS or the colcon install tree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "ROS_", "COLCON_"))}
    env.pop("PYTHONPATH", None)
    env.pop("CMAKE_PREFIX_PATH", None)
    return env


def run_import_all(sys_path_first: Path, cwd: Path) -> dict:
    # The dev venv's flowclas_ros_dev.pth adds the source tree and the colcon install tree:
    # drop both, so only `sys_path_first` provides flowclas_ros.
    root, install = str(REPO_ROOT), str(REPO_ROOT / "install")
    keep = f"p != {root!r} and not p.startswith({install!r})"
    code = f"import sys; sys.path[:] = [p for p in sys.path if {keep}]\n"
    code += f"sys.path.insert(0, {str(sys_path_first)!r})\n" + IMPORT_ALL_WITHOUT_ROS
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=ros_free_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"import script failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_report(report: dict, package_dir: Path) -> None:
    failures = "\n".join(f"--- {name}\n{tb}" for name, tb in report["errors"].items())
    assert not report["errors"], f"core modules failed to import without ROS:\n{failures}"
    assert not report["leaked"], f"ROS modules got imported: {report['leaked']}"
    assert Path(report["file"]).parent == package_dir, report["file"]
    assert [Path(p) for p in report["path"]] == [package_dir], "only the ROS-free package may be on __path__"
    # Every subpackage and module present in the package directory was imported.
    expected = {
        "flowclas_ros." + ".".join(p.relative_to(package_dir).with_suffix("").parts)
        for p in package_dir.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    } | {
        "flowclas_ros." + ".".join(p.parent.relative_to(package_dir).parts)
        for p in package_dir.rglob("__init__.py")
        if p.parent != package_dir
    }
    expected = {m for m in expected if not m.startswith(("flowclas_ros.ros", "flowclas_ros.msg"))}
    missing = sorted(expected - set(report["imported"]))
    assert not missing, f"modules not imported (not reachable as packages?): {missing}"
    assert "flowclas_ros.config_io" in report["imported"]


def test_core_imports_without_ros_from_source(tmp_path: Path) -> None:
    report = run_import_all(REPO_ROOT, cwd=tmp_path)
    check_report(report, REPO_ROOT / "flowclas_ros")


def test_core_imports_without_ros_from_built_wheel(tmp_path: Path) -> None:
    """`pip install .` of the ROS-free core: build the wheel, install it alone, import everything."""
    wheel_dir, site, src = tmp_path / "wheel", tmp_path / "site", tmp_path / "src"
    # Build from a copy: setuptools builds in-tree, and its build/ would mix with colcon's.
    shutil.copytree(
        REPO_ROOT / "flowclas_ros", src / "flowclas_ros", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ros_free_env(),
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheel_dir.glob("flowclas_ros-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    requires = [
        line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    ]
    assert requires and not [
        r for r in requires if r.lower().startswith(("ros-", "rclpy", "colcon", "ament"))
    ], requires
    scripts = ("flowclas-train", "flowclas-eval", "flowclas-export", "flowclas-bag", "flowclas-node")
    for script in (*scripts, "flowclas-make-dataset"):
        assert f"{script} = " in entry_points, script
    # The demo's scene renderer ships in synthetic/, not in the core data/ package.
    renderer = [n for n in names if n.startswith("flowclas_ros/data/") and ("scene" in n or "sprite" in n)]
    assert not renderer, renderer
    assert "flowclas_ros/synthetic/scene_render.py" in names
    # Every source file is packaged (no subpackage forgotten by package discovery).
    sources = {p.relative_to(src).as_posix() for p in (src / "flowclas_ros").rglob("*.py")}
    assert not sources - set(names), f"not in the wheel: {sorted(sources - set(names))}"

    install = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    report = run_import_all(site, cwd=tmp_path)
    check_report(report, site / "flowclas_ros")
