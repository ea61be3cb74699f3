"""anomaly_node with a checkpoint shaped like an imported one (official flow, native size, symmetric pad).

Each frame is scored at its own size: the score map has the frame's size and equals the in-process backend's.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from official_formats import official_native_checkpoint
from ros_harness import (
    image_from_msg,
    running_node,
    textured_image,
    write_params,
)

pytestmark = pytest.mark.ros

NS = "/authors_test"
TOPIC = "/authors_test_in/cam/image_raw"


def test_node_scores_each_frame_at_its_native_size(tmp_path):
    from sensor_msgs.msg import Image

    from flowclas_ros.runtime import create_backend

    checkpoint = official_native_checkpoint(tmp_path / "ckpt")
    params = write_params(
        tmp_path / "params.yaml",
        {"checkpoint": str(checkpoint), "image_topics": [TOPIC], "camera_names": ["cam"]},
    )
    with running_node(params, NS, tmp_path / "node.log", "authors_tester") as (proc, client):
        scores = client.subscribe(f"{NS}/anomaly_node/cam/score_map", Image)
        publisher = client.publisher(TOPIC, Image)
        backend = create_backend("torch", checkpoint)
        client.wait_matched(publisher)
        client.wait_subscribed(f"{NS}/anomaly_node/cam/score_map")
        for seed, (height, width) in enumerate(((45, 62), (70, 31))):
            rgb = textured_image(height, width, seed=seed)
            frame_id = f"native_{height}x{width}"
            msg = client.image(rgb, frame_id)
            deadline, found = time.monotonic() + 60, None
            while found is None and time.monotonic() < deadline:
                publisher.publish(msg)  # best-effort input: resend until answered
                time.sleep(0.5)
                proc.check_alive()
                found = scores.find(lambda m, f=frame_id: m.header.frame_id == f)
            assert found is not None, f"no score map for {frame_id}\n{proc.output()[-3000:]}"
            score = image_from_msg(found)
            assert score.shape == (height, width)
            expected = backend.predict([rgb])[0].score_map
            assert np.ptp(expected) > 0
            np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-5)
        assert "input native resolution" in proc.output()
