"""anomaly_node's runtime ``prompt_set`` (VL4AD): a node process with a tiny fused checkpoint."""

from __future__ import annotations

import time

import pytest
from ros_harness import (
    STARTUP_TIMEOUT_S,
    NodeProcess,
    TestClient,
    image_msg,
    now_stamp,
    textured_image,
    write_params,
)

from flowclas_ros.model import FlowCLAS, save_checkpoint
from flowclas_ros.model.config import BackboneConfig, FlowConfig, ModelConfig, PreprocessConfig
from flowclas_ros.model.vl4ad.fusion import FusionConfig
from flowclas_ros.model.vl4ad.text_scorer import TextScorerConfig

pytestmark = pytest.mark.ros

NS, TOPIC = "/prompt_test", "/prompt_in/camera/image_raw"
NODE = f"{NS}/anomaly_node"
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _fused_checkpoint(path):
    cfg = ModelConfig(
        backbone=BackboneConfig(weights="none"),
        flow=FlowConfig(steps=2),
        preprocess=PreprocessConfig(input_size=(56, 56)),
        text=TextScorerConfig(model="ViT-B-16", weights="none", arch=TINY_CLIP, prompt_set="planetary_rover"),
        fusion=FusionConfig(mode="weighted", weight=0.5),
    )
    return save_checkpoint(FlowCLAS(cfg).eval(), path, threshold=0.5)


def test_prompt_set_switches_live_and_bad_values_are_rejected(tmp_path):
    from sensor_msgs.msg import Image

    from flowclas_ros.msg import AnomalyResult

    params = write_params(
        tmp_path / "params.yaml",
        {
            "checkpoint": str(_fused_checkpoint(tmp_path / "ckpt")),
            "image_topics": [TOPIC],
            "no_frame_warning_s": 60.0,
        },
    )
    proc = NodeProcess(params, NS, tmp_path / "node.log")
    client = TestClient("prompt_tester", proc)
    try:
        results = client.subscribe(f"{NODE}/prompt_in_camera/result", AnomalyResult)
        pub = client.publisher(TOPIC, Image)
        client.wait_matched(pub, STARTUP_TIMEOUT_S)
        (ok,) = client.set_parameters(NODE, {"prompt_set": "orbital_inspection"})
        assert ok.successful, ok.reason
        (bad,) = client.set_parameters(NODE, {"prompt_set": "no_such_prompt_set"})
        assert not bad.successful and "prompt_set" in bad.reason
        assert client.get_parameters(NODE, ["prompt_set"])["prompt_set"] == "orbital_inspection"
        rgb = textured_image(56, 56, seed=3)

        def answered():
            pub.publish(image_msg(rgb, "rgb8", "cam", now_stamp(client)))
            time.sleep(0.2)  # inputs are best effort: resend until answered, at 5 Hz
            return results.snapshot()

        client.wait_for(answered, 60.0, "a result after the prompt switch")
    finally:
        client.close()
        rc, out = proc.stop()
    assert rc == 0, out
    assert "prompt set 'orbital_inspection' active (encoded)" in out, out
    assert "Traceback" not in out, out
