"""~/learn_nominal on an ONNX Runtime node: the new checkpoint is exported (child, into learn_dir) first."""

from __future__ import annotations

import math

import pytest
import yaml
from ros_harness import running_node, write_params
from test_learn_action import Goal, _recording
from tiny_checkpoints import tiny_checkpoint
from train_support import tiny_train_dict

pytest.importorskip("onnxruntime")
pytestmark = [pytest.mark.ros, pytest.mark.alone]

NS = "/learn_onnx_test"
NODE = f"{NS}/anomaly_node"


def test_onnxruntime_node_gets_the_new_checkpoint_exported_before_the_swap(tmp_path):
    from types import SimpleNamespace

    from sensor_msgs.msg import Image

    from flowclas_ros.model.export_meta import read_onnx_metadata

    (tmp_path / "data").mkdir()
    recipe = tmp_path / "site.yaml"
    recipe.write_text(yaml.safe_dump({**tiny_train_dict(tmp_path / "data"), "steps": 1, "val_every": 0}))
    checkpoint = tiny_checkpoint(tmp_path / "site_a", threshold=-1.0e6)
    params = write_params(
        tmp_path / "params.yaml",
        {"checkpoint": str(checkpoint), "backend": "onnxruntime", "image_topics": ["/learn_onnx_in/image"],
         "learn_ap_margin": 1.0, "no_frame_warning_s": 60.0},
    )  # fmt: skip
    cache = tmp_path / "cache"  # the configure-time export
    node_env = {"FLOWCLAS_LEARN_RECIPE": str(recipe), "FLOWCLAS_CACHE_DIR": str(cache)}
    with running_node(params, NS, tmp_path / "node.log", "learn_onnx_tester", env=node_env) as (proc, client):
        pub = client.publisher("/learn_onnx_in/image", Image)
        client.wait_matched(pub)
        env = SimpleNamespace(client=client, proc=proc, action=None)
        _, result = Goal(env, node=NODE, bag=str(_recording(tmp_path / "bag")), steps=1).result()
        assert result.success, result.message
        assert result.exporting_s > 0 and math.isfinite(result.false_alarm_rate_after)
        exports = list((tmp_path / "site_a.learn" / "exports" / "onnx").glob("*.onnx"))
        assert len(exports) == 1, exports
        assert read_onnx_metadata(exports[0]).identity.sha256 == result.identity
        assert "swapped model" in proc.output()
        assert not list(cache.glob(f"onnx/{result.identity[:16]}*")), "export stays in learn_dir"
