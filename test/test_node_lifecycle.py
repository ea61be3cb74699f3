"""Start-up behaviour of the flowclas-node process (transitions themselves: test_node_pipeline.py)."""

from __future__ import annotations

import subprocess

import pytest
from ros_harness import node_executable, write_params

pytestmark = pytest.mark.ros


def test_autostart_with_missing_checkpoint_exits_with_one_line(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    params = write_params(tmp_path / "p.yaml", {"checkpoint": str(missing)})
    proc = subprocess.run(
        [node_executable(), "--ros-args", "--params-file", str(params)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "configure failed" in line]
    assert len(lines) == 1 and str(missing) in lines[0], output
