"""~/learn_nominal when learn_dir's disk fills up while collecting: a clear message, the node keeps serving.

learn_dir is a 256 KiB tmpfs (needs root / CAP_SYS_ADMIN to mount; skipped otherwise).
"""

from __future__ import annotations

import subprocess
import threading
from types import SimpleNamespace

import pytest
from ros_harness import (
    running_node,
    textured_image,
    write_params,
)
from test_learn_action import Goal
from tiny_checkpoints import tiny_checkpoint

pytestmark = pytest.mark.ros

NS = "/learn_full_test"
NODE = f"{NS}/anomaly_node"
TOPIC = "/learn_full_in/image"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "learn"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_while_collecting_ends_the_goal_and_keeps_the_data(tmp_path, small_disk):
    from sensor_msgs.msg import Image

    from flowclas_ros.msg import AnomalyResult

    checkpoint = tiny_checkpoint(tmp_path / "site_a")
    params = write_params(
        tmp_path / "params.yaml",
        {"checkpoint": str(checkpoint), "image_topics": [TOPIC], "camera_names": ["cam"],
         "learn_dir": str(small_disk), "no_frame_warning_s": 60.0},
    )  # fmt: skip
    with running_node(params, NS, tmp_path / "node.log", "learn_full_tester") as (proc, client):
        stop = threading.Event()
        try:
            results = client.subscribe(f"{NODE}/cam/result", AnomalyResult, depth=100)
            pub = client.publisher(TOPIC, Image)
            client.wait_matched(pub)

            def camera() -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    pub.publish(client.image(textured_image(120, 160, i % 50), f"c{i}"))
                    stop.wait(0.05)

            threading.Thread(target=camera, daemon=True).start()
            env = SimpleNamespace(client=client, proc=proc, action=None)
            _, result = Goal(env, node=NODE, max_frames=500).result(120)
            assert not result.success
            assert result.message.startswith("collecting failed: disk full under"), result.message
            assert "data written so far is kept" in result.message
            count = len(results.snapshot())
            client.wait_for(lambda: len(results.snapshot()) > count + 3, 30, "results after the failed run")
            runs = list((small_disk / "runs").iterdir())
            assert len(runs) == 1 and (runs[0] / "frames").is_dir()
        finally:
            stop.set()
