"""AnomalyResult.latency_ms is receive -> publish of that frame; model_ms its share of the forward (16.3).

One node process, two cameras batched together: each result's ``latency_ms`` covers the whole
batch forward (>= batch size x ``model_ms``), not the batch forward divided by the batch size
as before. Image outputs are subscribed, so they are built too (by the node's image thread).
"""

from __future__ import annotations

import time

import pytest
from ros_harness import (
    STARTUP_TIMEOUT_S,
    running_node,
    textured_image,
    write_params,
)
from tiny_checkpoints import tiny_checkpoint

pytestmark = [pytest.mark.ros, pytest.mark.alone]

NS = "/latency_fields_test"
NODE = f"{NS}/anomaly_node"
TOPICS = ["/latency_fields_in/cam_a/image_raw", "/latency_fields_in/cam_b/image_raw"]


def _both(results: dict, ids: list[str]) -> list | None:
    """Both cameras' results of one round, or None while one is missing."""
    found = [rec.find(lambda m, f=f: m.header.frame_id == f) for rec, f in zip(results.values(), ids)]
    return found if all(m is not None for m in found) else None


def test_latency_ms_is_receive_to_publish_and_covers_the_batch_forward(tmp_path):
    from sensor_msgs.msg import Image

    from flowclas_ros.msg import AnomalyResult

    params = write_params(
        tmp_path / "params.yaml",
        {
            "checkpoint": str(tiny_checkpoint(tmp_path / "ckpt")),
            "image_topics": TOPICS,
            "camera_names": ["cam_a", "cam_b"],
            "qos_reliability": "reliable",
            "max_batch": 2,
            "batch_wait_ms": 1000.0,  # capped at one forward by the node
        },
    )
    with running_node(params, NS, tmp_path / "node.log", "latency_fields_tester") as (proc, client):
        results = {cam: client.subscribe(f"{NODE}/{cam}/result", AnomalyResult) for cam in ("cam_a", "cam_b")}
        overlays = {cam: client.subscribe(f"{NODE}/{cam}/overlay", Image) for cam in ("cam_a", "cam_b")}
        pubs = [client.publisher(topic, Image, reliability="reliable") for topic in TOPICS]
        client.wait_matched(pubs[0], STARTUP_TIMEOUT_S)
        client.wait_matched(pubs[1], 30)
        for cam in ("cam_a", "cam_b"):
            client.wait_subscribed(f"{NODE}/{cam}/overlay")
        time.sleep(0.5)  # the node's side of the overlay match too (it builds images only when watched)
        rgb = textured_image(96, 128, seed=4)
        pairs = []
        for round_index in range(6):
            ids = [f"r{round_index}_a", f"r{round_index}_b"]
            for pub, frame_id in zip(pubs, ids):
                pub.publish(client.image(rgb, frame_id))
            got = client.wait_for(lambda ids=ids: _both(results, ids), 60, f"results of round {round_index}")
            pairs.append(got)
            time.sleep(0.1)
        messages = [msg for pair in pairs for msg in pair]
        for msg in messages:
            assert msg.model_ms > 0.0, msg
            assert msg.latency_ms >= msg.model_ms, (msg.latency_ms, msg.model_ms)
        # A round served by one batch of two: equal shares, and each frame waited for the whole forward.
        batched = [pair for pair in pairs if abs(pair[0].model_ms - pair[1].model_ms) < 1e-6]
        assert batched, [(p[0].model_ms, p[1].model_ms) for p in pairs]
        for pair in batched:
            for msg in pair:
                assert msg.latency_ms >= 2 * msg.model_ms, (msg.latency_ms, msg.model_ms)
        # The image outputs still come, from the image thread, after their result.
        for cam, frame_id in (("cam_a", "r5_a"), ("cam_b", "r5_b")):
            recorder = overlays[cam]
            client.wait_for(
                lambda r=recorder, f=frame_id: r.find(lambda m: m.header.frame_id == f),
                30,
                f"overlay {frame_id}",
            )
