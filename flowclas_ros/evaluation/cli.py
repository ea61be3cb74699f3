"""``flowclas-eval``: evaluate a checkpoint on a folder dataset, a rosbag2, or live through the node.

Writes ``OUT/metrics.json`` (docs/ARCHITECTURE.md keys plus extensions) and ``OUT/report.md``
with PR/ROC curves and the worst/best frames as overlays. A ``--bag`` also gets the label-free
review (:mod:`flowclas_ros.evaluation.review_recorder`): ``frames.csv``, ``events.csv``,
``timeline.png`` and ``events/<peak_stamp>.png``, with or without masks.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from flowclas_ros.cli_errors import OneLineParser, one_line
from flowclas_ros.data.bags.frames import BagReadWarning
from flowclas_ros.data.readers.benchmarks import BENCHMARKS
from flowclas_ros.evaluation import live_args, review_cli
from flowclas_ros.evaluation.accumulator import EvalAccumulator
from flowclas_ros.evaluation.backend_args import add_backend_arguments
from flowclas_ros.evaluation.frames import BagFrames, BenchmarkFrames, EvalInputError, FolderFrames
from flowclas_ros.evaluation.metrics import DEFAULT_NUM_BINS
from flowclas_ros.evaluation.report import build_metrics, fmt, write_metrics, write_report
from flowclas_ros.runtime.registry import backend_options
from flowclas_ros.runtime.sam2_refine import add_refine_arguments, check_refine_args, refiner_from_args

PROG = "flowclas-eval"

EXAMPLES = """examples:
  flowclas-eval --checkpoint runs/a/checkpoint --data data/val --out eval/val
  flowclas-eval --checkpoint ckpt --data RoadAnomaly --dataset road_anomaly --out eval/ra
  flowclas-eval --checkpoint ckpt --bag drive.mcap --image-topic /camera/image_raw --out review/drive
  flowclas-eval --checkpoint ckpt --bag rec.bag --image-topic /camera/image_raw \\
      --mask-topic /camera/anomaly_mask --out eval/rec
  flowclas-eval --live --checkpoint ckpt --bag rec.bag --image-topic /camera/image_raw \\
      --mask-topic /camera/anomaly_mask --rate-factor 1.0 --out eval/live
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = OneLineParser(
        prog=PROG,
        description="Evaluate a FlowCLAS checkpoint: pixel AUROC / AP / FPR95 (ignore label 255 excluded), "
        "image AUROC, latency; writes OUT/metrics.json and OUT/report.md. A --bag is also reviewed "
        "frame by frame, labels or not: OUT/frames.csv, OUT/events.csv, OUT/timeline.png, OUT/events/.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("input (one of --data or --bag)")
    src.add_argument(
        "--checkpoint", metavar="CKPT", help="checkpoint directory (or exported model for the backend)"
    )
    src.add_argument(
        "--data", metavar="ROOT", help="folder dataset: ROOT/images/<stem>.png|jpg, ROOT/masks/<stem>.png"
    )
    src.add_argument(
        "--dataset",
        choices=tuple(BENCHMARKS),
        metavar="NAME",
        help="read --data ROOT in a public benchmark's own layout and labels: "
        f"{', '.join(BENCHMARKS)} (default: the folder layout above)",
    )
    src.add_argument("--bag", metavar="BAG", help="rosbag2 directory (sqlite3 or mcap) or .db3/.mcap file")
    src.add_argument("--image-topic", metavar="T", help="image topic in the bag (Image or CompressedImage)")
    masks = src.add_mutually_exclusive_group()
    masks.add_argument(
        "--mask-topic", metavar="M", help="mask topic in the bag (mono8 0/1/255, paired by stamp)"
    )
    masks.add_argument(
        "--mask-dir", metavar="DIR", help="folder of mask PNGs named <sec>_<nanosec>.png (or index)"
    )
    src.add_argument(
        "--mask-dir-naming",
        choices=("stamp", "index"),
        default="stamp",
        help="--mask-dir file names: by stamp <sec>_<nanosec:09d>.png or by index %%06d.png "
        "(default: %(default)s)",
    )
    src.add_argument(
        "--stamp-tolerance",
        type=float,
        default=0.01,
        metavar="S",
        help="largest stamp difference in seconds for a nearest mask match; 0 = exact only "
        "(default: %(default)s)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")

    run = p.add_argument_group("model")
    add_backend_arguments(
        run,
        "pixel threshold for the precision/recall/IoU summary (default: the checkpoint's calibrated one)",
        " (1 on a busy shared machine)",
    )
    run.add_argument("--batch-size", type=int, default=1, metavar="N", help="frames per forward (default: 1)")

    add_refine_arguments(p)

    met = p.add_argument_group("metrics and report")
    met.add_argument(
        "--score-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="fixed histogram range of the pixel scores (default: from the first frames, see docs)",
    )
    met.add_argument(
        "--num-bins", type=int, default=DEFAULT_NUM_BINS, help="histogram bins (default: %(default)s)"
    )
    met.add_argument(
        "--examples", type=int, default=4, metavar="K", help="worst/best frames in the report (default: 4)"
    )
    met.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    met.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")

    review_cli.add_arguments(p)
    live_args.add_arguments(p)  # the flags only: the replay is imported when --live is given
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Cross-argument checks (raise EvalInputError with a one-line reason)."""
    if bool(args.data) == bool(args.bag):
        raise EvalInputError("give exactly one of --data ROOT or --bag BAG")
    if args.dataset and not args.data:
        raise EvalInputError("--dataset NAME needs --data ROOT")
    problem = check_refine_args(args)
    if problem:
        raise EvalInputError(problem)
    if args.refine != "none" and args.live:
        raise EvalInputError("--refine applies to offline evaluation, not --live (the node does not refine)")
    if args.data and (args.image_topic or args.mask_topic or args.mask_dir):
        raise EvalInputError("--image-topic/--mask-topic/--mask-dir only apply to --bag")
    if args.bag and not args.image_topic:
        raise EvalInputError("--bag needs --image-topic")
    live_args.check_args(args)
    review_cli.check_args(args)
    if not args.checkpoint and live_args.needs_checkpoint(args):
        raise EvalInputError("--checkpoint is required")
    if args.checkpoint and not Path(args.checkpoint).exists():
        raise EvalInputError(f"checkpoint {args.checkpoint} does not exist")
    if args.batch_size < 1:
        raise EvalInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise EvalInputError(f"--threshold must be finite, got {args.threshold}")
    if args.stamp_tolerance < 0:
        raise EvalInputError(f"--stamp-tolerance must be >= 0, got {args.stamp_tolerance}")
    if args.score_range is not None and not args.score_range[0] < args.score_range[1]:
        raise EvalInputError(f"--score-range needs LO < HI, got {args.score_range}")
    if args.num_bins < 2:
        raise EvalInputError(f"--num-bins must be >= 2, got {args.num_bins}")


def _checkpoint_score_kind(checkpoint: str | None) -> str | None:
    """``score.kind`` of a checkpoint directory or exported model (no model is built); None if unknown."""
    from flowclas_ros.model.checkpoint_meta import CheckpointError, read_checkpoint_identity
    from flowclas_ros.model.export_meta import ModelMismatchError, read_onnx_metadata

    if not checkpoint:
        return None
    try:
        if Path(checkpoint).suffix == ".onnx":
            return read_onnx_metadata(checkpoint).identity.config.score.kind
        return read_checkpoint_identity(checkpoint).config.score.kind
    except (CheckpointError, ModelMismatchError, OSError):
        return None


def _run(args: argparse.Namespace) -> dict[str, Any]:
    _check_args(args)
    out_dir = Path(args.out)
    progress = not args.no_progress
    if args.data and args.dataset:
        frames: FolderFrames | BagFrames = BenchmarkFrames(args.dataset, args.data)
    elif args.data:
        frames = FolderFrames(args.data)
    else:
        frames = BagFrames(
            args.bag,
            args.image_topic,
            args.mask_topic,
            args.mask_dir,
            stamp_tolerance_s=args.stamp_tolerance,
            mask_dir_naming=args.mask_dir_naming,
        ).open()  # reads the first frame: a bad path/topic fails before the model loads
    out_dir.mkdir(parents=True, exist_ok=True)

    def accumulator(score_kind: str | None) -> EvalAccumulator:
        return EvalAccumulator(
            score_kind=score_kind or "nll",  # unknown kind: no bound is assumed
            score_range=tuple(args.score_range) if args.score_range else None,
            num_bins=args.num_bins,
            n_examples=args.examples,
        )

    throughput = live = review = None
    run_warnings: list[str] = []
    if args.live:
        from flowclas_ros.ros import live_cli

        acc = accumulator(_checkpoint_score_kind(args.checkpoint))
        assert isinstance(frames, BagFrames)
        live, run_warnings = live_cli.run(args, frames, acc, out_dir)
        backend_name, latency_kind = args.backend, "end_to_end"
        threshold, threshold_source = args.threshold, "--threshold"
        if threshold is None and live["node_threshold"] is not None:
            threshold, threshold_source = live["node_threshold"], "node"
    else:
        from flowclas_ros.evaluation.runner import evaluate_frames
        from flowclas_ros.runtime import create_backend

        options = backend_options(args.backend, threads=args.threads)  # the table names each option
        refiner = refiner_from_args(args, PROG)  # package and files checked before the model loads
        backend = create_backend(args.backend, args.checkpoint, device=args.device, **options)
        if refiner is not None:
            backend = refiner.wrap(backend)
        with backend:
            acc = accumulator(backend.config.score.kind)
            recorder = review_cli.make_recorder(args, backend, out_dir) if args.bag else None
            timing = evaluate_frames(
                frames,
                backend,
                acc,
                batch_size=args.batch_size,
                total=len(frames),
                progress=progress,
                on_result=None if recorder is None else recorder.on_result,
            )
            if recorder is not None:  # inside `with backend`: peaks may need scoring again
                review = recorder.finish(review_cli.bag_refetch(args, backend))
                run_warnings += review_cli.review_warnings(review)
            backend_name, latency_kind = backend.name, "predict"
            threshold, threshold_source = args.threshold, "--threshold"
            if threshold is None and backend.threshold is not None:
                threshold, threshold_source = backend.threshold, "checkpoint"
        throughput = timing.as_dict()
    warn = frames.warnings() + run_warnings
    metrics = build_metrics(
        acc,
        source=frames.describe(),
        checkpoint=args.checkpoint,
        backend=backend_name,
        device=args.device,
        threshold=threshold,
        threshold_source=threshold_source,
        latency_kind=latency_kind,
        throughput=throughput,
        bag=frames.stats.as_dict() if isinstance(frames, BagFrames) else None,
        live=live,
        warnings=warn,
    )
    metrics["refine"] = (
        {
            "kind": "sam2",
            "checkpoint": args.sam2_checkpoint,
            "config": args.sam2_config,
            "options": args.sam2_option,
        }
        if args.refine == "sam2"
        else {"kind": "none"}
    )
    if review is not None:
        metrics["review"] = review
    write_metrics(metrics, out_dir)
    report = write_report(acc, metrics, out_dir)
    if review is not None:
        from flowclas_ros.evaluation.review_report import append_review_section

        append_review_section(report, review)
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Run ``flowclas-eval``; returns the exit status (0 ok, 1 bad input or failure, 2 usage)."""
    args = build_parser().parse_args(argv)
    from flowclas_ros.model.checkpoint_meta import CheckpointError

    try:
        with warnings.catch_warnings():
            # Damage is reported once, in metrics.json / report.md and the summary below.
            warnings.filterwarnings("ignore", category=BagReadWarning)
            metrics = _run(args)
    except (CheckpointError, ValueError, OSError, ImportError, RuntimeError) as err:
        if args.debug:
            raise
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    for text in metrics["warnings"]:
        print(f"{PROG}: warning: {text}", file=sys.stderr)

    lat = metrics["latency_ms"]["p50"]
    print(
        f"auroc {fmt(metrics['auroc'])}  ap {fmt(metrics['ap'])}  fpr95 {fmt(metrics['fpr95'])}  "
        f"image_auroc {fmt(metrics['image_auroc'])}  n_images {metrics['n_images']}  "
        f"latency p50 {'n/a' if lat is None else f'{lat:.1f}'} ms -> {Path(args.out) / 'metrics.json'}"
        + ("  [PARTIAL: damaged bag]" if metrics["partial"] else "")
    )
    review = metrics.get("review")
    if review is not None:
        print(
            f"review: {review['frames']} frames, {review['flagged']} flagged, {review['events']} events "
            f"-> {Path(args.out) / review['files']['frames']}, {Path(args.out) / review['files']['events']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
