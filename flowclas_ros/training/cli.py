"""``flowclas-train --config FILE.yaml [--set key=value ...] --out RUN_DIR``.

Multi-GPU / multi-process: ``torchrun --nproc_per_node=N $(which flowclas-train) --config ... --out ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import yaml

from flowclas_ros.config_io import ConfigError, load, to_dict
from flowclas_ros.data.images.folder import DatasetError
from flowclas_ros.model.backbones import ALLOW_RANDOM_ENV, BackboneError
from flowclas_ros.training.checkpointing import StateError
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.loop import Trainer

PROG = "flowclas-train"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train FlowCLAS (frozen backbone + normalizing flow, Outlier Exposure, contrastive "
        "loss). Resumes when --out already holds a training state. Runs under torchrun for multi-GPU DDP.",
    )
    parser.add_argument("--config", required=True, help="training config YAML (see config/train/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set steps=500 --set optim.lr=1e-4 (repeatable)",
    )
    parser.add_argument(
        "--out", help="run directory (checkpoint/, state/, log.csv); required unless --print-config"
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the fully resolved config (file + --set + every default) as YAML and exit",
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="STEPS",
        help="stop (and save the state) after this step",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (2 = bad input, 1 = training failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.print_config and not args.out:
        parser.error("the following arguments are required: --out")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load(TrainConfig, args.config, args.overrides)
        if args.print_config:
            sys.stdout.write(yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False))
            return 0
        if cfg.model.backbone.weights == "none":
            os.environ.setdefault(ALLOW_RANDOM_ENV, "1")  # the config asks for it; one log line is enough
            logging.getLogger(PROG).warning(
                "model.backbone.weights is 'none': random-init backbone (demo/tests)"
            )
        summary = Trainer(cfg, args.out, progress=not args.no_progress).run(stop_after=args.stop_after)
    except (ConfigError, DatasetError, BackboneError, StateError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        print(f"{PROG}: training failed: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        best = summary.best_metrics or {}
        report = {
            "step": summary.step,
            "resumed_from": summary.resumed_from,
            "total_steps": summary.total_steps,
            "checkpoint": str(summary.checkpoint) if summary.checkpoint else None,
            "best_step": summary.best_step,
            "val_ap": best.get("ap"),
            "val_auroc": best.get("auroc"),
            "val_fpr95": best.get("fpr95"),
            "val_image_auroc": best.get("image_auroc"),
            "threshold": summary.threshold,
            "image_threshold": summary.image_threshold,
            "images_per_s": round(summary.images_per_s, 2),
            "wall_s": round(summary.wall_s, 1),
        }
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
