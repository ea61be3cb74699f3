"""``flowclas-eval --bag`` without labels: the review files, checked against ``flowclas-predict``.

Real CLIs on a tiny bag written by ``flowclas-bag`` from a folder that ``flowclas-predict``
also scores; a random 56x56 checkpoint (test/eval_support.py), one CPU thread.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_support import EVAL_MODEL, IMAGE_TOPIC, MASK_TOPIC, make_dataset
from rosbags.rosbag2 import Writer
from tiny_checkpoints import tiny_checkpoint

from flowclas_ros.data.bags.cli import main as bag_main
from flowclas_ros.data.bags.source import IMAGE_TYPE, typestore
from flowclas_ros.data.images.codec import encode_image
from flowclas_ros.evaluation.cli import main as eval_main
from flowclas_ros.evaluation.predict_cli import main as predict_main
from flowclas_ros.model.checkpoint_meta import read_checkpoint_identity

torch.set_num_threads(1)
N = 10
FAST = ["--no-progress", "--threads", "1"]


def _table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Dataset folder, its bag (flowclas-bag), predict's score maps, a checkpoint flagging about half."""
    root = tmp_path_factory.mktemp("review")
    make_dataset(root / "data", N, seed=5)
    assert bag_main(["--data", str(root / "data"), "--out", str(root / "bag"), "--rate", "10"]) == 0
    plain = tiny_checkpoint(root / "plain", **EVAL_MODEL)
    assert predict_main(["--checkpoint", str(plain), "--input", str(root / "data/images"),
                         "--out", str(root / "pred"), "--no-overlay", *FAST]) == 0  # fmt: skip
    maps = [np.load(root / "pred" / f"f{i:02d}.npy") for i in range(N)]
    image_threshold = float(np.median([m.max() for m in maps]))
    # The same weights (fixed seeds), now with a calibrated image threshold in the checkpoint.
    ckpt = tiny_checkpoint(root / "ckpt", image_threshold=image_threshold, **EVAL_MODEL)
    return root, ckpt, maps


def _review(root: Path, ckpt: Path, out: str, *extra: str, bag: str = "bag") -> tuple[dict, Path]:
    out_dir = root / out
    argv = ["--checkpoint", str(ckpt), "--bag", str(root / bag), "--image-topic", IMAGE_TOPIC]
    assert eval_main([*argv, "--out", str(out_dir), *FAST, *extra]) == 0
    return json.loads((out_dir / "metrics.json").read_text()), out_dir


def test_review_scores_equal_predict_and_flags_follow_the_checkpoint(world, capsys):
    root, ckpt, maps = world
    metrics, out = _review(root, ckpt, "review")
    assert "review:" in capsys.readouterr().out
    identity = read_checkpoint_identity(ckpt)
    frames = _table(out / "frames.csv")
    assert len(frames) == N
    stamps = [float(r["stamp"]) for r in frames]
    assert stamps == sorted(stamps) and stamps[1] - stamps[0] == pytest.approx(0.1)
    lo, hi = min(m.min() for m in maps), max(m.max() for m in maps)
    for row, score_map in zip(frames, maps):
        assert abs(float(row["image_score"]) - float(score_map.max())) <= 1e-3 * (hi - lo)
        frac = float(np.count_nonzero(score_map >= identity.threshold)) / score_map.size
        assert float(row["anomalous_fraction"]) == pytest.approx(frac, abs=0.02)
        assert row["flagged"] == str(int(float(row["image_score"]) >= identity.image_threshold))
    flagged = [r for r in frames if r["flagged"] == "1"]
    assert 0 < len(flagged) < N

    events = _table(out / "events.csv")
    assert sum(int(e["frames"]) for e in events) == len(flagged)
    flagged_stamps = {r["stamp"] for r in flagged}
    for number, e in enumerate(events, 1):
        assert e["start"] in flagged_stamps and e["end"] in flagged_stamps
        members = [r for r in flagged if r["event"] == str(number)]
        assert len(members) == int(e["frames"]) and {members[0]["stamp"], members[-1]["stamp"]} == {
            e["start"],
            e["end"],
        }
        peak = max(members, key=lambda r: float(r["image_score"]))
        assert (e["peak_stamp"], float(e["peak_score"])) == (peak["stamp"], float(peak["image_score"]))
        assert e["peak_frame"] == f"{e['peak_stamp']}.png" and (out / "events" / e["peak_frame"]).is_file()
    assert sorted(p.name for p in (out / "events").iterdir()) == sorted(e["peak_frame"] for e in events)
    assert all(r["event"] for r in flagged)

    review = metrics["review"]
    assert (review["frames"], review["flagged"], review["events"]) == (N, len(flagged), len(events))
    assert review["flagged_fraction"] == pytest.approx(len(flagged) / N)
    assert review["duration_s"] == pytest.approx(0.9)
    assert review["events_per_minute"] == pytest.approx(len(events) / (0.9 / 60))
    assert review["image_threshold"] == pytest.approx(identity.image_threshold)
    assert review["image_threshold_source"] == "the checkpoint's image_threshold"
    assert (out / "timeline.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "## Review of the recording" in report and "](timeline.png)" in report
    assert f"](events/{events[0]['peak_frame']})" in report


def test_with_masks_the_review_sits_next_to_the_metrics(world):
    root, ckpt, _ = world
    plain, _ = _review(root, ckpt, "review_plain")
    labelled, out = _review(root, ckpt, "review_masks", "--mask-topic", MASK_TOPIC)
    assert eval_main(["--checkpoint", str(ckpt), "--data", str(root / "data"),
                      "--out", str(root / "folder_eval"), *FAST]) == 0  # fmt: skip
    folder = json.loads((root / "folder_eval" / "metrics.json").read_text())
    assert labelled["auroc"] is not None
    for key in ("auroc", "ap", "fpr95", "image_auroc", "n_images"):
        assert labelled[key] == folder[key], key
    assert "review" not in folder  # folder frames have no stamps: no review
    same = ("frames", "flagged", "events", "flagged_fraction", "duration_s", "strongest_events")
    assert {k: labelled["review"][k] for k in same} == {k: plain["review"][k] for k in same}
    assert _table(out / "frames.csv") == _table(root / "review_plain" / "frames.csv")


def _custom_bag(path: Path, frames: list[tuple[int, np.ndarray]], topic: str = IMAGE_TOPIC) -> None:
    """A bag of rgb8 frames logged in the given order: (header stamp ns, image)."""
    ts = typestore()
    types = ts.types
    with Writer(path, version=9) as writer:
        conn = writer.add_connection(topic, IMAGE_TYPE, typestore=ts)
        for log_ns, (stamp, rgb) in enumerate(frames, 1):
            step, data = encode_image(rgb, "rgb8")
            stamp_msg = types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
            msg = types[IMAGE_TYPE](
                header=types["std_msgs/msg/Header"](stamp=stamp_msg, frame_id="cam"),
                height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0, step=step,
                data=np.frombuffer(data, np.uint8),
            )  # fmt: skip
            writer.write(conn, log_ns * 1000, ts.serialize_cdr(msg, IMAGE_TYPE))


def test_frames_logged_out_of_stamp_order_give_the_same_review(world):
    root, ckpt, _ = world
    from flowclas_ros.data.images.folder import read_rgb

    images = [read_rgb(root / "data/images" / f"f{i:02d}.png") for i in range(N)]
    stamps = [1_700_000_000 * 10**9 + i * 10**8 for i in range(N)]
    _custom_bag(root / "shuffled", [(stamps[i], images[i]) for i in [3, 1, 0, 2, 9, 5, 4, 8, 6, 7]])
    ordered, out_ordered = _review(root, ckpt, "review_ordered")
    shuffled, out = _review(root, ckpt, "review_shuffled", bag="shuffled")
    assert not shuffled["review"]["stamps_in_order"] and ordered["review"]["stamps_in_order"]
    assert shuffled["review"]["peak_frames_rescored"] == shuffled["review"]["events"] > 0
    columns = ("stamp", "image_score", "flagged", "event")
    rows = [{k: r[k] for k in columns} for r in _table(out / "frames.csv")]
    assert rows == [{k: r[k] for k in columns} for r in _table(out_ordered / "frames.csv")]
    assert _table(out / "events.csv") == _table(out_ordered / "events.csv")
    assert sorted(os.listdir(out / "events")) == sorted(os.listdir(out_ordered / "events"))


def _wrong_type_bag(path: Path) -> None:
    ts = typestore()
    with Writer(path, version=9) as writer:
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        msg = ts.types["std_msgs/msg/String"](data="hello")
        writer.write(conn, 1, ts.serialize_cdr(msg, "std_msgs/msg/String"))


def _empty_bag(path: Path) -> None:
    with Writer(path, version=9) as writer:
        writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=typestore())


@pytest.mark.parametrize(
    ("make", "topic", "extra", "expected"),
    [
        (None, "/nope", (), "topic '/nope' is not in bag"),
        (_wrong_type_bag, "/chatter", (), "topic '/chatter' has type std_msgs/msg/String; expected"),
        (_empty_bag, IMAGE_TOPIC, (), "no frame could be read from '/camera/image_raw'"),
        (None, IMAGE_TOPIC, ("--merge-gap", "-1"), "--merge-gap must be a finite number >= 0"),
        (None, IMAGE_TOPIC, ("--image-threshold", "nan"), "--image-threshold must be finite"),
    ],
)
def test_bad_input_is_one_line_without_traceback(world, tmp_path, make, topic, extra, expected):
    root, ckpt, _ = world
    bag = root / "bag"
    if make is not None:
        bag = tmp_path / "bad"
        make(bag)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(ckpt), "--bag", str(bag), "--image-topic", topic, "--out", str(out), *extra]
    done = subprocess.run(
        [sys.executable, "-m", "flowclas_ros.evaluation.cli", *argv, *FAST],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowclas-eval: error: ") and expected in lines[0], lines
    assert not (out / "metrics.json").exists() and not (out / "frames.csv").exists()


# Runs in a fresh interpreter: any import of the ROS adapter or of a ROS package fails.
NO_ROS_EVAL = r"""
import importlib.abc, sys

class BlockRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith(("flowclas_ros.ros", "rclpy", "flowclas_ros.msg")):
            raise ImportError(f"{name} imported by an offline evaluation")
        return None

sys.meta_path.insert(0, BlockRos())
from flowclas_ros.evaluation.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as done:  # --help
    rc = done.code
leaked = sorted(m for m in sys.modules if m.startswith(("flowclas_ros.ros", "rclpy")))
print("LEAKED", leaked)
sys.exit(rc)
"""


def test_offline_eval_never_imports_the_ros_adapter(world, tmp_path):
    """issue 26: the live replay (ros/live_cli.py) is imported only when --live is given."""
    root, ckpt, _ = world
    argv = ["--checkpoint", str(ckpt), "--bag", str(root / "bag"), "--image-topic", IMAGE_TOPIC]
    env = {**os.environ, "FLOWCLAS_ALLOW_RANDOM_BACKBONE": "1"}
    for args in (["--help"], [*argv, "--out", str(tmp_path / "o"), *FAST]):
        done = subprocess.run(
            [sys.executable, "-c", NO_ROS_EVAL, *args], capture_output=True, text=True, timeout=300, env=env
        )
        assert done.returncode == 0, done.stderr
        assert "LEAKED []" in done.stdout, done.stdout
    assert (tmp_path / "o" / "frames.csv").is_file()
