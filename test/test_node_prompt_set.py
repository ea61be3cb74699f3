"""anomaly_node's runtime ``prompt_set`` (VL4AD): a node process with a tiny fused checkpoint."""

from __future__ import annotations

import time

import pytest
from ros_harness import (
    running_node,
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


def test_prompt_set_is_read_at_configure_and_needs_thresholds_for_another_set(tmp_path):
    """The checkpoint's thresholds belong to its own prompts' fused score: another set needs its own."""
    from lifecycle_msgs.msg import Transition
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
    with running_node(params, NS, tmp_path / "node.log", "prompt_tester") as (proc, client):
        results = client.subscribe(f"{NODE}/prompt_in_camera/result", AnomalyResult)
        pub = client.publisher(TOPIC, Image)
        client.wait_matched(pub)
        (live,) = client.set_parameters(NODE, {"prompt_set": "orbital_inspection"})
        assert not live.successful and "read at configure" in live.reason
        assert client.change_state(NODE, Transition.TRANSITION_DEACTIVATE)
        assert client.change_state(NODE, Transition.TRANSITION_CLEANUP)
        (ok,) = client.set_parameters(NODE, {"prompt_set": "orbital_inspection"})
        assert ok.successful, ok.reason
        # NaN thresholds = the checkpoint's, calibrated on planetary_rover: refused for another set.
        assert not client.change_state(NODE, Transition.TRANSITION_CONFIGURE)
        assert "also set threshold and image_threshold" in proc.output()
        (bad,) = client.set_parameters(NODE, {"prompt_set": "no_such_prompt_set"})
        assert bad.successful  # the name is checked at configure
        results_set = client.set_parameters(NODE, {"threshold": 0.4, "image_threshold": 0.6})
        assert all(r.successful for r in results_set)
        assert not client.change_state(NODE, Transition.TRANSITION_CONFIGURE)
        assert "prompt_set: ConfigError" in proc.output() and "no_such_prompt_set" in proc.output()
        (ok,) = client.set_parameters(NODE, {"prompt_set": "orbital_inspection"})
        assert client.change_state(NODE, Transition.TRANSITION_CONFIGURE)
        assert client.change_state(NODE, Transition.TRANSITION_ACTIVATE)
        rgb = textured_image(56, 56, seed=3)

        def answered():
            pub.publish(client.image(rgb, "cam"))
            time.sleep(0.2)  # inputs are best effort: resend until answered, at 5 Hz
            return results.snapshot()

        (result, *_) = client.wait_for(answered, 60.0, "a result with the other prompt set")
        assert result.threshold == pytest.approx(0.4) and result.image_threshold == pytest.approx(0.6)
    assert "prompt set 'orbital_inspection'" in proc.output(), proc.output()
