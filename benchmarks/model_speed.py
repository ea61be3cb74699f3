"""Backbone vs flow (+ scoring) forward time of FlowCLAS (ViT-S/14, 16 flow steps, batch 1).

Usage: python benchmarks/model_speed.py [--threads N] [--repeats R] [--device cpu|cuda]
Prints the median of R timed runs (after one warm-up) per input size, and each part's share.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

os.environ.setdefault("FLOWCLAS_ALLOW_RANDOM_BACKBONE", "1")  # timing only: weights do not matter

from flowclas_ros.model import BackboneConfig, FlowCLAS, FlowConfig, ModelConfig  # noqa: E402


def _median_ms(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = ModelConfig(backbone=BackboneConfig(weights="none"), flow=FlowConfig(steps=args.steps))
    model = FlowCLAS(cfg).eval().to(device)
    print(
        f"backbone={cfg.backbone.name} flow_steps={args.steps} batch=1 device={device} threads={args.threads}"
    )
    header = ("input", "backbone_ms", "flow+score_ms", "total_ms", "backbone%", "flow%")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (9, 12, 14, 9, 10, 6))))
    with torch.inference_mode():
        for side in (224, 448):
            x = torch.randn(1, 3, side, side, device=device)
            padded, hw = model.pad_input(x)
            feats = model.extract_features(padded)
            backbone_ms = _median_ms(lambda: model.extract_features(padded), args.repeats, device)  # noqa: B023
            flow_ms = _median_ms(lambda: model.score_features(feats, hw), args.repeats, device)  # noqa: B023
            total = backbone_ms + flow_ms
            print(
                f"{side:>4}x{side:<4} {backbone_ms:12.1f} {flow_ms:14.1f} {total:9.1f} "
                f"{100 * backbone_ms / total:9.0f}% {100 * flow_ms / total:5.0f}%"
            )


if __name__ == "__main__":
    main()
