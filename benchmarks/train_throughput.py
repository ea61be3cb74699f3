"""Training throughput with and without backbone feature caching (``cache.mode`` none vs pool).

Runs the real trainer for a few steps on the demo data (generated if missing)
and prints samples/s (one sample = an OE-mixed image + its standalone outlier
image) for each mode, plus the one-off cost of building the pool and the
number of steps after which caching pays off.

Example::

    .venv/bin/python benchmarks/train_throughput.py --config config/train/demo.yaml --steps 20
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from flowclas_ros.config_io import load
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.loop import Trainer


def run_mode(cfg_path: str, overrides: list[str], mode: str, steps: int, workdir: Path) -> dict:
    settings = overrides + [
        f"cache.mode={mode}",
        f"steps={steps}",
        f"checkpoint_every={steps}",
        f"val_every={steps}",
        "data.val_max_images=2",
    ]
    cfg = load(TrainConfig, cfg_path, settings)
    out = workdir / mode
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = Trainer(cfg, out, progress=False).run()
    wall = time.perf_counter() - start
    return {"mode": mode, "images_per_s": summary.images_per_s, "wall_s": wall, "steps": summary.step}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config/train/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=20, help="training steps per mode")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_mode(args.config, overrides, mode, args.steps, Path(tmp)) for mode in ("none", "pool")]
    cfg = load(TrainConfig, args.config, overrides)
    print(
        f"threads={torch.get_num_threads()} batch_size={cfg.batch_size} "
        f"input={list(cfg.model.preprocess.input_size)} backbone={cfg.model.backbone.name} "
        f"flow_steps={cfg.model.flow.steps} pool_size={cfg.cache.pool_size}"
    )
    for r in results:
        print(
            f"cache={r['mode']:<5} {r['images_per_s']:7.2f} samples/s over {r['steps']} steps "
            f"(run wall {r['wall_s']:.1f} s)"
        )
    none, pool = results
    overhead = [r["wall_s"] - r["steps"] * cfg.batch_size / r["images_per_s"] for r in results]
    build = overhead[1] - overhead[0]
    saved_per_step = cfg.batch_size / none["images_per_s"] - cfg.batch_size / pool["images_per_s"]
    print(f"speed-up from caching: x{pool['images_per_s'] / none['images_per_s']:.2f} (training steps only)")
    print(f"one-off pool build: {build:.1f} s; pays off after {build / max(saved_per_step, 1e-9):.0f} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
