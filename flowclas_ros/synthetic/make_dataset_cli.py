"""Command line: write the embedded synthetic robot-scene dataset.

Example::

    python -m flowclas_ros.synthetic.make_dataset_cli --out data/synth --n-train 200 --n-val 40 --n-test 60
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from flowclas_ros.synthetic.synthetic_scenes import SPLITS, SceneConfig, generate_dataset


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the dataset generator CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m flowclas_ros.synthetic.make_dataset_cli",
        description="Generate the synthetic robot-scene dataset (train: normal only; val/test: with "
        "foreign-object anomalies and masks) in the docs/ARCHITECTURE.md folder layout.",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="output root (train/, val/, test/ are written)"
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (same seed, same bytes)")
    parser.add_argument("--n-train", type=int, default=200, help="normal training frames")
    parser.add_argument("--n-val", type=int, default=40, help="validation frames")
    parser.add_argument("--n-test", type=int, default=60, help="test frames")
    parser.add_argument(
        "--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"), help="frame size"
    )
    parser.add_argument(
        "--anomaly-prob", type=float, default=0.85, help="chance that a val/test frame has foreign objects"
    )
    parser.add_argument("--max-anomalies", type=int, default=2, help="most foreign objects per frame")
    parser.add_argument(
        "--anomaly-area",
        type=float,
        nargs=2,
        default=(0.005, 0.08),
        metavar=("MIN", "MAX"),
        help="area range of one object as a fraction of the frame",
    )
    parser.add_argument(
        "--weathering",
        type=float,
        default=0.1,
        help="chance an object is dust-coated / partly buried (harder)",
    )
    parser.add_argument(
        "--ignore-band", type=int, default=0, help="width in px of a 255 ignore band at object edges"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing split folders in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        counts = {"train": args.n_train, "val": args.n_val, "test": args.n_test}
        if any(n < 0 for n in counts.values()):
            raise ValueError("--n-train/--n-val/--n-test must be >= 0")
        if not 0.0 <= args.anomaly_prob <= 1.0:
            raise ValueError(f"--anomaly-prob must be in [0, 1], got {args.anomaly_prob}")
        if args.max_anomalies < 1:
            raise ValueError(f"--max-anomalies must be >= 1, got {args.max_anomalies}")
        if not 0.0 <= args.weathering <= 1.0:
            raise ValueError(f"--weathering must be in [0, 1], got {args.weathering}")
        if args.ignore_band < 0:
            raise ValueError(f"--ignore-band must be >= 0, got {args.ignore_band}")
        existing = [s for s in SPLITS if (args.out / s).exists()]
        if existing and not args.overwrite:
            raise ValueError(
                f"{args.out} already holds {', '.join(existing)}; pass --overwrite to replace them"
            )
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"{args.out} exists and is not a directory")
        cfg = SceneConfig(
            size=(args.size[0], args.size[1]),
            anomaly_probability=args.anomaly_prob,
            max_anomalies=args.max_anomalies,
            anomaly_area=(args.anomaly_area[0], args.anomaly_area[1]),
            ignore_band=args.ignore_band,
            weathering=args.weathering,
        )
        start = time.perf_counter()
        summary = generate_dataset(args.out, seed=args.seed, counts=counts, cfg=cfg, progress=not args.quiet)
        elapsed = time.perf_counter() - start
    except (ValueError, OSError) as exc:
        print(f"make_dataset_cli: error: {exc}", file=sys.stderr)
        return 2
    total = sum(summary["counts"].values())
    print(f"wrote {total} frames to {args.out} in {elapsed:.1f} s ({summary['counts']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
