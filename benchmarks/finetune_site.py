"""Fine-tuning a site-A checkpoint on site B's recording vs training fresh on site B (issue 24).

The world is the synthetic rover-scene generator (``flowclas_ros/synthetic``) at two sites
that look different: site A is reddish terrain (palettes mars, ochre, desert; texture seed
10), site B grey terrain (lunar, basalt; texture seed 20). Site B's normal frames are
written into a rosbag2 (sqlite3, rgb8, 1 Hz), the "recording" both B runs train on, with
``config/train/site.yaml``'s defaults (held-out last part of the time, OE validation).
Site B's test frames, with foreign objects and masks, give the pixel AP.

Per seed: site A trained fresh (``--steps``) gives the parent checkpoint; site B is trained
fresh (``--steps``) and fine-tuned from A (``--init-from``, ``--ft-steps``, default a quarter);
both from ``config/train/site.yaml`` plus the scale overrides printed with the table. A fresh
run with as few steps as the fine-tuning shows what the parent's weights are worth.

Example (small scale, a few minutes on 2 cores), then a fine-tuning variant against the same runs::

    .venv/bin/python benchmarks/finetune_site.py --size 112 --n-train 48 --steps 200 --seeds 0 1 2
    .venv/bin/python benchmarks/finetune_site.py ... --reuse --ft-set optim.warmup_steps=5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import torch

from flowclas_ros.config_io import load
from flowclas_ros.data.bags.writer import write_bag_from_folder
from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.evaluation.metrics import PixelMetrics
from flowclas_ros.model import load_checkpoint
from flowclas_ros.runtime.cpu import cpu_model
from flowclas_ros.runtime.torch_backend import TorchBackend
from flowclas_ros.synthetic.synthetic_scenes import SceneConfig, generate_dataset
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.init_from import load_config
from flowclas_ros.training.loop import Trainer

SITES = {"A": (10, ["mars", "ochre", "desert"]), "B": (20, ["lunar", "basalt"])}
RECIPE = Path(__file__).resolve().parents[1] / "config" / "train" / "site.yaml"


def make_sites(work: Path, size: int, n_train: int, n_test: int) -> dict[str, Path]:
    """Site folders (train / test) and site B's recording; reused when present."""
    out = {}
    for name, (seed, palettes) in SITES.items():
        root = work / f"site_{name}"
        if not (root / "test").is_dir():
            cfg = SceneConfig(size=(size, size), palettes=palettes)
            counts = {"train": n_train, "val": 0, "test": n_test}
            generate_dataset(root, seed=seed, counts=counts, cfg=cfg, progress=False)
        out[name] = root
    bag = work / "site_B_recording"
    if not bag.is_dir():
        # 1 Hz: the generator's frames are independent views, not a video, so the 2 Hz gate keeps all
        write_bag_from_folder(out["B"] / "train", bag, mask_topic=None, rate_hz=1.0)
    out["bag"] = bag
    return out


def test_ap(checkpoint: Path, test_root: Path) -> float:
    """Pixel AP of ``checkpoint`` on a test folder (masks: 0 normal, 1 anomaly)."""
    data = FolderDataset(test_root, require_masks=True)
    backend = TorchBackend(load_checkpoint(checkpoint))
    metrics = PixelMetrics(score_range=None)
    for i in range(len(data)):
        pred = backend.predict([data.load_image(i)])[0]
        metrics.update(pred.score_map, data.load_mask(i))
    return float(metrics.compute()["ap"])


def train(run: Path, overrides: list[str], parent: Path | None = None) -> float:
    """Trains one run (fresh, or from ``parent``); returns its wall time."""
    shutil.rmtree(run, ignore_errors=True)
    if parent is None:
        cfg, found = load(TrainConfig, RECIPE, overrides), None
    else:
        cfg, found = load_config(RECIPE, overrides, parent)
    start = time.perf_counter()
    Trainer(cfg, run, progress=False, parent=found).run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=112, help="frame and model input side (default 112)")
    parser.add_argument("--n-train", type=int, default=48, help="normal frames per site (default 48)")
    parser.add_argument("--n-test", type=int, default=24, help="site B test frames (default 24)")
    parser.add_argument("--steps", type=int, default=200, help="fresh training steps (default 200)")
    parser.add_argument("--ft-steps", type=int, default=0, help="fine-tuning steps (default steps // 4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared CPU)")
    parser.add_argument(
        "--set", dest="extra", action="append", default=[], help="extra override for all runs"
    )
    parser.add_argument("--work", default="/tmp/flowclas_finetune_site", help="scratch folder")
    parser.add_argument(
        "--ft-set", action="append", default=[], help="extra override for the fine-tuning runs only"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the site-A and fresh site-B checkpoints already in --work (same scale and --set); "
        "only the fine-tuning runs are trained again (to compare --ft-set variants)",
    )
    args = parser.parse_args()
    os.environ.setdefault("FLOWCLAS_ALLOW_RANDOM_BACKBONE", "1")
    torch.set_num_threads(args.threads)
    ft_steps = args.ft_steps or max(1, args.steps // 4)
    work = Path(args.work)
    sites = make_sites(work, args.size, args.n_train, args.n_test)
    scale = [
        f"model.preprocess.input_size=[{args.size},{args.size}]",
        "device=cpu",
        f"threads={args.threads}",
        *args.extra,
    ]

    def runs(steps: int) -> list[str]:
        every = max(1, steps // 4)
        return [*scale, f"steps={steps}", f"val_every={every}", f"checkpoint_every={steps}"]

    rows = []
    for seed in args.seeds:
        a_run = work / f"A_seed{seed}"
        on_b = [f"data.train={sites['bag']}", f"seed={seed}"]
        fresh_runs = {
            a_run: [*runs(args.steps), f"data.train={sites['A'] / 'train'}", f"seed={seed}"],
            work / f"B_fresh_seed{seed}": [*runs(args.steps), *on_b],
            work / f"B_short_seed{seed}": [*runs(ft_steps), *on_b],  # fresh, as few steps as fine-tuning
        }
        times = {}
        for run, overrides in fresh_runs.items():
            if not (args.reuse and (run / "checkpoint").is_dir()):
                times[run.name] = train(run, overrides)
        ft_overrides = [*runs(ft_steps), *on_b, *args.ft_set]
        t_ft = train(work / f"B_ft_seed{seed}", ft_overrides, parent=a_run / "checkpoint")
        t_fresh = times.get(f"B_fresh_seed{seed}", float("nan"))
        row = {
            "seed": seed,
            "A_on_B": test_ap(a_run / "checkpoint", sites["B"] / "test"),
            "fresh": test_ap(work / f"B_fresh_seed{seed}" / "checkpoint", sites["B"] / "test"),
            "ft": test_ap(work / f"B_ft_seed{seed}" / "checkpoint", sites["B"] / "test"),
            "short": test_ap(work / f"B_short_seed{seed}" / "checkpoint", sites["B"] / "test"),
            "t_fresh": t_fresh,
            "t_ft": t_ft,
        }
        rows.append(row)
        print(
            f"seed {seed}: site-A ckpt on B {row['A_on_B']:.3f}, fresh {row['fresh']:.3f}, "
            f"fine-tuned {row['ft']:.3f}, fresh short {row['short']:.3f}",
            flush=True,
        )

    if args.ft_set:
        print(f"\nfine-tuning runs also: {' '.join(args.ft_set)}")
    print(
        f"\nrecipe {RECIPE.name} + {' '.join(scale)}; {args.n_train} frames per site, "
        f"site B test {args.n_test}"
    )
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()}")
    print(
        f"| seed | site-A ckpt on B (0 steps) | fresh on B ({args.steps} steps) | "
        f"fine-tuned from A ({ft_steps} steps) | fine-tuned - fresh | fresh on B ({ft_steps} steps) "
        "| wall fresh / fine-tune (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['A_on_B']:.3f} | {r['fresh']:.3f} | {r['ft']:.3f} | "
            f"{r['ft'] - r['fresh']:+.3f} | {r['short']:.3f} | {r['t_fresh']:.0f} / {r['t_ft']:.0f} |"
        )

    def mean_sd(key: str) -> str:
        values = [r[key] for r in rows]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    diffs = [r["ft"] - r["fresh"] for r in rows]
    print(
        f"| mean ± sd | {mean_sd('A_on_B')} | {mean_sd('fresh')} | {mean_sd('ft')} | "
        f"{statistics.mean(diffs):+.3f} | {mean_sd('short')} | |"
    )
    ok = statistics.mean(diffs) >= -0.02
    print(f"\nfine-tuning within 0.02 AP of fresh in {ft_steps}/{args.steps} steps: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
