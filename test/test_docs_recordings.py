"""README "Train on your own recordings": its commands run, in order, on tiny generated recordings.

``ros2 bag record -o NAME TOPIC`` becomes ``flowclas-bag`` writing generated frames to NAME on TOPIC
(drive1: normal frames, drive2: frames with foreign objects); ``ros2 launch`` / ``ros2 run`` are
skipped (no launch here; test/test_launch_static.py covers the launch file); ``flowclas-train``
gets tiny sizes appended (56x56 frames, 2 flow steps, 2 optimiser steps). Everything else runs as
printed, with the console scripts of this environment, in a scratch directory that links
``config/`` from the repository.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from flowclas_ros.synthetic.synthetic_scenes import SceneConfig, generate_dataset

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = [
    *("--set", "model.preprocess.input_size=[56,56]", "--set", "model.flow.steps=2"),
    *("--set", "model.flow.proj_dim=16", "--set", "steps=2", "--set", "batch_size=2"),
    *("--set", "val_every=2", "--set", "checkpoint_every=2", "--set", "cache.pool_size=1"),
    *("--set", "threads=1", "--set", "device=cpu", "--no-progress"),
]


def readme_commands() -> list[str]:
    """The shell commands of the section's code block, continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Train on your own recordings", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return [line.strip() for line in lines if not line.lstrip().startswith("#")]


def record(args: list[str], cwd: Path, index: int) -> list[str]:
    """``ros2 bag record -o NAME TOPIC`` -> ``flowclas-bag`` writing generated frames (2 Hz) to NAME."""
    name, topic = args[args.index("-o") + 1], args[-1]
    frames = cwd / f"frames{index}"
    generate_dataset(
        frames,
        seed=index,
        counts={"train": 12, "val": 8, "test": 0},
        cfg=SceneConfig(size=(56, 56)),
        progress=False,
    )
    split = "train" if index == 0 else "val"  # the second drive has foreign objects in view
    return [str(BIN / "flowclas-bag"), "--data", str(frames / split), "--out", name, "--image-topic", topic]


def test_the_readme_recordings_walkthrough_runs(tmp_path):
    commands = readme_commands()
    assert [c.split()[0] for c in commands] == [
        "ros2", "flowclas-train", "ros2", "flowclas-eval", "flowclas-train", "flowclas-export", "ros2",
    ]  # fmt: skip
    (tmp_path / "config").symlink_to(REPO / "config")
    env = {**os.environ, "FLOWCLAS_ALLOW_RANDOM_BACKBONE": "1"}
    recordings = 0
    for command in commands:
        args = shlex.split(command)
        if args[:3] == ["ros2", "bag", "record"]:
            args = record(args, tmp_path, recordings) + ["--mask-topic", "", "--rate", "2"]
            recordings += 1
        elif args[0] == "ros2":
            continue
        else:
            args = [str(BIN / args[0]), *args[1:]] + (TINY if args[0] == "flowclas-train" else [])
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    site2 = json.loads((tmp_path / "runs/site2/checkpoint/config.json").read_text())["provenance"]
    site = tmp_path / "runs/site/checkpoint"
    assert site2["parent"]["path"] == str(site.resolve())
    assert [s["path"] for s in site2["training_data"]["sources"]] == [
        str((tmp_path / "drive1").resolve()),
        str((tmp_path / "drive2").resolve()),
    ]
    (first,) = json.loads((site / "config.json").read_text())["provenance"]["training_data"]["sources"]
    assert (first["kind"], first["topic"], first["messages"], first["kept"]) == (
        "bag",
        "/camera/image_raw",
        12,
        12,
    )
    assert (first["train"], first["val"]) == (9, 3)  # the last 20 % of 5.5 s: frames at 4.5, 5.0, 5.5 s
    review = tmp_path / "runs/review"
    assert all(
        (review / name).is_file() for name in ("metrics.json", "frames.csv", "events.csv", "timeline.png")
    )
    assert len((review / "frames.csv").read_text().splitlines()) == 1 + 8  # header + drive2's frames
    assert (tmp_path / "runs/site2/model.onnx").is_file()
