"""flowclas-eval --live: replay a bag through the real anomaly_node process and score its outputs."""

from __future__ import annotations

import json

import pytest
import torch
from eval_support import EVAL_MODEL, IMAGE_TOPIC, MASK_TOPIC, assert_same_metrics, make_dataset
from tiny_checkpoints import tiny_checkpoint

from flowclas_ros.data.bags.frames import write_bag_from_folder
from flowclas_ros.evaluation.cli import main

try:
    import rclpy  # noqa: F401

    from flowclas_ros.msg import AnomalyResult  # noqa: F401

    _ROS_MISSING = ""
except ImportError as _err:  # only the generated messages / rclpy can be missing here
    _ROS_MISSING = (
        f"ROS 2 messages not built or not on PYTHONPATH ({_err}); run 'make test' "
        "(scripts/bootstrap builds them, scripts/env.sh puts them on the path)"
    )

pytestmark = [pytest.mark.ros, pytest.mark.alone, pytest.mark.skipif(bool(_ROS_MISSING), reason=_ROS_MISSING)]
torch.set_num_threads(1)
N = 8
SAME = ("auroc", "ap", "fpr95", "image_auroc", "n_images", "pixel")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    ckpt = tiny_checkpoint(root / "ckpt", **EVAL_MODEL)
    make_dataset(root / "data", N)
    # --examples 0: no worst/best frame figures (half a tiny evaluation's time; no test here looks at them).
    folder_eval = ["--checkpoint", str(ckpt), "--data", str(root / "data"), "--out", str(root / "folder")]
    assert main([*folder_eval, "--examples", "0"]) == 0
    folder = json.loads((root / "folder" / "metrics.json").read_text())
    return root, ckpt, folder


@pytest.fixture
def node_env(monkeypatch):
    # The node process inherits these: quiet random-backbone banner, no thread oversubscription.
    monkeypatch.setenv("FLOWCLAS_ALLOW_RANDOM_BACKBONE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_live_replay_starts_the_node_and_matches_offline_metrics(setup, node_env, capsys):
    root, ckpt, folder = setup
    # PNG CompressedImage on a topic that does not end in /compressed: the generated
    # parameter file must tell the node (compressed: [true]); PNG is lossless.
    bag = root / "bag_png"
    write_bag_from_folder(root / "data", bag, encoding="png", rate_hz=2.0)  # slow: nothing dropped
    out = root / "live_png"
    rc = main(
        [
            *("--live", "--checkpoint", str(ckpt), "--bag", str(bag), "--image-topic", IMAGE_TOPIC),
            *("--mask-topic", MASK_TOPIC, "--out", str(out), "--no-progress", "--startup-timeout", "240"),
            *("--examples", "0"),
        ]
    )
    captured = capsys.readouterr()
    log = (out / "node.log").read_text() if (out / "node.log").exists() else "no node log"
    assert rc == 0, f"{captured.err}\n--- node log ---\n{log[-3000:]}"
    m = json.loads((out / "metrics.json").read_text())
    live = m["live"]
    assert live["n_published"] == N and live["n_answered"] == N and live["n_dropped"] == 0, live
    assert live["image_msgtype"] == "sensor_msgs/msg/CompressedImage"
    assert live["node_exit_code"] == 0 and live["result_topic"] == "/anomaly_node/camera/result"
    assert live["node_threshold"] == 20.0 and m["threshold"]["source"] == "node"
    # The node's score maps are the offline ones: identical metrics.
    assert_same_metrics(m, folder, SAME)
    assert m["latency_kind"] == "end_to_end" and set(m["latency_ms"]) == {"p50", "p90", "p99"}
    assert m["latency_ms"]["p50"] > 0 and m["model_ms"]["p50"] > 0  # node-reported inference time
    params = (out / "node_params.yaml").read_text()
    assert "compressed:\n    - true" in params and str(ckpt.resolve()) in params
    report = (out / "report.md").read_text()
    assert "## Live replay through the node" in report and "end-to-end latency" in report


def test_live_replay_attached_counts_frames_dropped_by_newest_frame_policy(setup, node_env, tmp_path, capsys):
    from ros_harness import NodeProcess, write_params

    root, ckpt, _ = setup
    bag = root / "bag_rgb8"
    if not bag.exists():
        write_bag_from_folder(root / "data", bag, encoding="rgb8", rate_hz=10.0)
    params = write_params(
        tmp_path / "params.yaml",
        {"checkpoint": str(ckpt), "image_topics": [IMAGE_TOPIC], "publish_overlay": False},
    )
    node = NodeProcess(params, "/eval_attach", tmp_path / "node.log")
    try:
        out = tmp_path / "live"
        # 10 Hz x 40 = one frame every 2.5 ms: far faster than the model, so the node drops frames.
        rc = main(
            [
                *("--live", "--attach", "--node-name", "/eval_attach/anomaly_node", "--bag", str(bag)),
                *("--image-topic", IMAGE_TOPIC, "--mask-topic", MASK_TOPIC, "--rate-factor", "40"),
                *("--out", str(out), "--no-progress", "--startup-timeout", "90", "--drain-timeout", "5"),
                *("--examples", "0"),
            ]
        )
        captured = capsys.readouterr()
        node.check_alive()
    finally:
        node_rc, node_log = node.stop()
    assert rc == 0, f"{captured.err}\n--- node log ---\n{node_log[-3000:]}"
    m = json.loads((out / "metrics.json").read_text())
    live = m["live"]
    assert live["attached"] is True and live["node_log"] is None and m["checkpoint"] is None
    assert live["n_published"] == N
    assert live["n_answered"] >= 1 and live["n_dropped"] >= 1, live
    assert live["n_answered"] + live["n_dropped"] == N
    assert m["n_images"] == live["n_answered"] - live["n_score_map_missing"]
    assert any("never answered" in w for w in m["warnings"]) and "never answered" in captured.err
    assert node_rc == 0, node_log[-2000:]


def test_live_replay_rejects_a_wrong_topic_before_starting_the_node(setup, tmp_path, capsys):
    root, ckpt, _ = setup
    bag = tmp_path / "bag"
    write_bag_from_folder(root / "data", bag)
    rc = main(
        ["--live", "--checkpoint", str(ckpt), "--bag", str(bag), "--image-topic", "/cam"]
        + ["--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "topics: /camera/anomaly_mask" in err
    assert not (tmp_path / "o" / "node.log").exists()
