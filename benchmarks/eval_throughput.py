"""Offline evaluation throughput (images/s) and how much of it is model time.

Runs the flowclas-eval folder path (FolderFrames -> backend.predict -> EvalAccumulator,
then metrics.json + report.md) on a synthetic dataset with masks, at the default model:
ViT-S/14 (random init: timing only), 16 flow steps, 224x224 input.

Usage: python benchmarks/eval_throughput.py [--images N] [--size WxH] [--threads T] [--batch-size B]
Prints images/s over the whole loop, the model's share, and the per-frame split
(read+decode / preprocess+resize / model / metrics) plus the report-writing time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

os.environ.setdefault("FLOWCLAS_ALLOW_RANDOM_BACKBONE", "1")  # timing only: weights do not matter

from flowclas_ros.evaluation.accumulator import EvalAccumulator  # noqa: E402
from flowclas_ros.evaluation.frames import FolderFrames  # noqa: E402
from flowclas_ros.evaluation.report import build_metrics, write_metrics, write_report  # noqa: E402
from flowclas_ros.evaluation.runner import evaluate_frames  # noqa: E402
from flowclas_ros.model import BackboneConfig, FlowCLAS, FlowConfig, ModelConfig, save_checkpoint  # noqa: E402
from flowclas_ros.runtime import create_backend  # noqa: E402


def make_dataset(root: Path, n: int, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        img = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        mask = np.zeros((height, width), np.uint8)
        y, x = height // 3, width // 3
        mask[y : y + height // 6, x : x + width // 6] = 1
        img[mask == 1] = (255, 0, 255)
        cv2.imwrite(str(root / "images" / f"{i:04d}.png"), img)
        cv2.imwrite(str(root / "masks" / f"{i:04d}.png"), mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", default="640x480", help="dataset image size WxH")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset(root / "data", args.images, width, height)
        cfg = ModelConfig(backbone=BackboneConfig(weights="none"), flow=FlowConfig(steps=args.steps))
        save_checkpoint(FlowCLAS(cfg, warn_random_backbone=False), root / "ckpt", threshold=0.5)
        with create_backend("torch", root / "ckpt") as backend:
            backend.predict([np.zeros((height, width, 3), np.uint8)])  # warm-up
            frames = FolderFrames(root / "data")
            acc = EvalAccumulator(score_kind=cfg.score.kind)
            timing = evaluate_frames(frames, backend, acc, batch_size=args.batch_size, progress=False)
        t0 = time.perf_counter()
        metrics = build_metrics(
            acc,
            source=frames.describe(),
            checkpoint=str(root / "ckpt"),
            backend="torch",
            device="cpu",
            threshold=0.5,
            threshold_source="checkpoint",
            latency_kind="predict",
            throughput=timing.as_dict(),
        )
        write_metrics(metrics, root)
        write_report(acc, metrics, root)
        report_s = time.perf_counter() - t0
    n = timing.n_frames
    other_s = timing.wall_s - timing.predict_s
    print(
        f"eval throughput: {n} images {width}x{height} -> model input {cfg.preprocess.input_size}, "
        f"ViT-S/14 random init, {args.steps} flow steps, batch {args.batch_size}, threads {args.threads}, "
        f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"  images/s (whole loop)      {n / timing.wall_s:8.2f}")
    print(f"  model share of loop time   {100 * timing.model_s / timing.wall_s:8.1f} %")
    print(f"  per frame: model           {1000 * timing.model_s / n:8.1f} ms")
    print(f"  per frame: preprocess+resize {1000 * (timing.predict_s - timing.model_s) / n:6.1f} ms")
    print(f"  per frame: read+metrics    {1000 * other_s / n:8.1f} ms")
    print(f"  report (json+md+plots)     {report_s:8.2f} s once")


if __name__ == "__main__":
    main()
