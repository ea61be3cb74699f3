"""The VL4AD prompt sets are package data: found by name after a plain wheel install (no source tree)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_prompt_sets_are_found_from_an_installed_wheel(tmp_path):
    # Built from a copy: setuptools would reuse (and leave) build/ in the working tree.
    source = tmp_path / "src"
    skip = shutil.ignore_patterns(
        ".git", ".venv", "build", "install", "log", "runs", "*.egg-info", "__pycache__"
    )
    shutil.copytree(REPO_ROOT, source, ignore=skip)
    wheels = tmp_path / "wheels"
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(wheels),
    ]
    proc = subprocess.run([*build, str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = wheels.glob("flowclas_ros-*.whl")
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)]
    proc = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Only the installed copy on the path: drop the source tree (the dev venv's .pth adds it).
    root, dev_install = str(REPO_ROOT), str(REPO_ROOT / "install")
    keep = f"p not in ('', {root!r}) and not p.startswith({dev_install!r})"
    code = (
        f"import sys; sys.path[:] = [{str(target)!r}] + [p for p in sys.path if {keep}]\n"
        "from flowclas_ros.model.vl4ad import prompts\n"
        "print(prompts.__file__)\n"
        "print(prompts.available_prompt_sets())\n"
        "print(prompts.load_prompt_set('road').description)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    module, names, description = proc.stdout.splitlines()[:3]
    assert Path(module).is_relative_to(target), module
    assert {"road", "planetary_rover", "orbital_inspection"} <= set(eval(names))  # noqa: S307 - our own print
    assert description
