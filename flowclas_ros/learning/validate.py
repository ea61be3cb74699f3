"""``python -m flowclas_ros.learning.validate``: the gate's figures for the serving and the new model.

Run as a child of the node (niced, threads limited; see :mod:`flowclas_ros.learning.child`), so
neither model's validation forward competes at full speed with serving. For each model, on the
held-out frames of the run (all normal):

* **false-alarm rate**: the fraction of pixels scored at or above the model's threshold
  (the threshold the node would use with it);
* **AP on synthetic anomalies**: pixel AP with objects pasted into the same frames by the
  training's own synthetic Outlier Exposure (Perlin, cut-paste, shapes), the same seed for both
  models, so both see identical anomalies.

Writes ``{"models": {name: {"false_alarm_rate", "ap", "threshold", "frames"}}}`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

PASTES_PER_FRAME = 1


def _model_spec(text: str) -> tuple[str, str, str, float]:
    try:
        name, kind, threshold, path = text.split(":", 3)
        return name, kind, path, float(threshold)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected NAME:BACKEND:THRESHOLD:PATH, got {text!r}") from err


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(prog="python -m flowclas_ros.learning.validate", description=__doc__)
    parser.add_argument("--heldout", required=True, help="rosbag2 of held-out normal frames")
    parser.add_argument("--topic", required=True, help="image topic in that bag")
    parser.add_argument(
        "--model",
        action="append",
        type=_model_spec,
        required=True,
        help="NAME:BACKEND:THRESHOLD:PATH (repeat)",
    )
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-frames", type=int, default=200, help="use at most this many held-out frames")
    return parser


def load_frames(bag: Path, topic: str, limit: int) -> list[np.ndarray]:
    """RGB uint8 frames of ``topic`` (at most ``limit``)."""
    from flowclas_ros.data.bags.frames import iter_bag_frames

    frames = []
    for frame in iter_bag_frames(bag, topic):
        frames.append(frame.image)
        if len(frames) >= limit:
            break
    return frames


def anomalous_frames(frames: list[np.ndarray], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``PASTES_PER_FRAME`` (image, 0/1 mask) pairs per frame with synthetic objects pasted in."""
    from flowclas_ros.data.outliers.exposure import OEConfig, OutlierExposure

    rng = np.random.default_rng(seed)
    pool = frames
    oe = OutlierExposure(
        OEConfig(kind="synthetic", probability=1.0), rng, lambda r: pool[int(r.integers(len(pool)))]
    )
    out = []
    for frame in frames:
        for _ in range(PASTES_PER_FRAME):
            sample = oe(frame, rng)
            if sample.paste_mask.any():
                out.append((sample.mixed, sample.paste_mask))
    return out


def figures(kind: str, path: str, threshold: float, normal: list[np.ndarray], pasted) -> dict[str, float]:
    """False-alarm rate on ``normal`` at ``threshold`` and pixel AP on ``pasted`` for one model."""
    from flowclas_ros.evaluation.metrics import PixelMetrics
    from flowclas_ros.runtime.base import create_backend

    backend = create_backend(kind, path, "cpu")
    try:
        alarms = pixels = 0
        for image in normal:
            (prediction,) = backend.predict([image])
            alarms += int(np.count_nonzero(prediction.score_map >= threshold))
            pixels += prediction.score_map.size
        metrics = PixelMetrics(score_range=None)
        for image, mask in pasted:
            (prediction,) = backend.predict([image])
            metrics.update(np.nan_to_num(prediction.score_map, nan=0.0, posinf=1e30, neginf=-1e30), mask)
        ap = metrics.compute()["ap"]
    finally:
        backend.close()
    return {
        "false_alarm_rate": alarms / pixels if pixels else math.nan,
        "ap": float(ap) if ap is not None else math.nan,
        "threshold": threshold,
        "frames": len(normal),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; one-line errors, exit 1."""
    args = build_parser().parse_args(argv)
    try:
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))  # learn_threads
        normal = load_frames(Path(args.heldout), args.topic, args.max_frames)
        if not normal:
            raise ValueError(f"{args.heldout}: no held-out frames on {args.topic}")
        pasted = anomalous_frames(normal, args.seed)
        result = {"models": {}}
        for name, kind, path, threshold in args.model:
            result["models"][name] = figures(kind, path, threshold, normal, pasted)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    except Exception as err:  # noqa: BLE001 - the parent reports the last line
        print(f"validate: {type(err).__name__}: {err}".replace("\n", " "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
