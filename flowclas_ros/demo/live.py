"""The live stage's processes: the real ``anomaly_node`` and the recorder of its outputs.

The demo starts the node itself (``flowclas-node``, newest-frame QoS, /diagnostics on),
then the recorder (``scripts/demo_record.py``), waits until the recorder has matched every
output of the node, and only then lets ``flowclas-eval --live --attach`` replay the bag:
DDS discovery can take seconds under load, and frames answered before the recorder is
matched would be missing from the recording. No ROS import here: both are processes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

from flowclas_ros.demo.recording import record_arguments
from flowclas_ros.demo.runner import DemoError, find_executable
from flowclas_ros.demo.settings import REPO_ROOT
from flowclas_ros.logged_process import LoggedProcess

RECORDER = REPO_ROOT / "scripts" / "demo_record.py"


def split_node_name(name: str) -> tuple[str, str]:
    """``/ns/node`` -> ``("/ns", "node")``."""
    namespace, _, node = name.rstrip("/").rpartition("/")
    return namespace or "/", node


def write_node_params(path: Path, checkpoint: Path, image_topic: str) -> Path:
    """The node's parameters: newest-frame policy (best effort, depth 1) and /diagnostics every second."""
    params = {
        "checkpoint": str(checkpoint.resolve()),
        "backend": "torch",
        "device": "cpu",
        "image_topics": [image_topic],
        "qos_reliability": "best_effort",  # sensor-data QoS, depth 1: always the newest frame, no queue
        "qos_depth": 1,
        "diagnostics_period_s": 1.0,
        "no_frame_warning_s": 120.0,  # the replay starts only once the recorder is matched
    }
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False))
    return path


class _Process(LoggedProcess):
    """A demo child process: failures are :class:`DemoError`."""

    error = DemoError


class NodeProcess(_Process):
    """``flowclas-node`` started as ``node_name`` with a parameter file."""

    what = "anomaly_node"

    def __init__(self, node_name: str, params_file: Path, log_path: Path, env: dict[str, str]) -> None:
        exe = find_executable("flowclas-node")
        if exe is None:
            raise DemoError(
                "flowclas-node not found on PATH; run 'make bootstrap' and 'source scripts/env.sh'"
            )
        namespace, name = split_node_name(node_name)
        cmd = [exe, "--ros-args", "--params-file", str(params_file), "-r", f"__node:={name}"]
        super().__init__(cmd + ["-r", f"__ns:={namespace}"], log_path, env)


class Recorder(_Process):
    """``scripts/demo_record.py`` recording the node's outputs and /diagnostics into a rosbag2."""

    what = "the recorder"

    def __init__(self, bag: Path, node_name: str, camera: str, log_path: Path) -> None:
        self.bag = bag
        self.ready = bag.with_name(bag.name + ".ready")
        self.ready.unlink(missing_ok=True)
        cmd = [sys.executable, str(RECORDER), "--out", str(bag), "--ready", str(self.ready)]
        super().__init__(cmd + record_arguments(node_name, camera), log_path)

    def wait_ready(self, node: NodeProcess, timeout_s: float) -> float:
        """Waits until the recorder matched every output of the node; returns the seconds waited."""
        start = time.monotonic()
        while not self.ready.exists():
            node.check_alive()
            self.check_alive()
            if time.monotonic() - start > timeout_s:
                raise DemoError(
                    f"the recorder did not match the node's outputs within {timeout_s:g} s "
                    f"(node log: {node.log_path}, last line: {node.tail()})"
                )
            time.sleep(0.1)
        time.sleep(0.5)  # the node's side of the match settles too
        return time.monotonic() - start
