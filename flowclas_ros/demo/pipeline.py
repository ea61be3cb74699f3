"""``python scripts/demo.py`` (what ``make demo`` runs): stages 2-7 of the demo, then the summary.

Stage 1, the bootstrap, is ``make demo``'s first step (it passes its wall time in).
Every stage is skipped when its stamp matches its inputs (see
:mod:`flowclas_ros.demo.stamps`), so a second run only prints the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from flowclas_ros.dds_isolation import isolate_ros_traffic
from flowclas_ros.demo.report import write_report
from flowclas_ros.demo.runner import DemoError, Stage, StageRunner
from flowclas_ros.demo.settings import DEFAULT_CONFIG, DEFAULT_OUT, THREADS_ENV, DemoSettings, tiny_settings
from flowclas_ros.demo.stages import DemoStages, dataset_params
from flowclas_ros.model.backbones import ALLOW_RANDOM_ENV

PROG = "demo"


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="The whole mission end to end: generate data, train, evaluate (torch), replay a "
        "rosbag live through anomaly_node, export to ONNX and re-evaluate, write report.md/report.html. "
        "Stages whose inputs did not change are skipped.",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="run folder (default: runs/demo)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config (default: demo.yaml)")
    p.add_argument("--tiny", action="store_true", help="test size: 56x56 frames, 8/4/4 images, 4 steps")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch threads per stage (default: the free cores before each stage; or ${THREADS_ENV})",
    )
    p.add_argument(
        "--bag-rate", type=float, default=None, help="camera rate of the test bag in Hz (default 10)"
    )
    p.add_argument(
        "--rate-factor", type=float, default=None, help="live replay speed (default 1 = real time)"
    )
    p.add_argument("--force", action="store_true", help="rerun every stage")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--bootstrap-seconds", type=float, default=None, help=argparse.SUPPRESS)
    return p


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """DemoSettings for the command line (validated)."""
    out = args.out.resolve()
    settings = tiny_settings(out) if args.tiny else DemoSettings(out=out)
    settings.config = args.config.resolve()
    if not settings.config.is_file():
        raise DemoError(f"training config {settings.config} not found")
    if args.threads is not None:
        if args.threads < 0:
            raise DemoError(f"--threads must be >= 0, got {args.threads}")
        settings.threads = args.threads
    for name, value in (("bag-rate", args.bag_rate), ("rate-factor", args.rate_factor)):
        if value is not None and not value > 0:
            raise DemoError(f"--{name} must be > 0, got {value}")
    settings.bag_rate_hz = args.bag_rate or settings.bag_rate_hz
    settings.rate_factor = args.rate_factor or settings.rate_factor
    settings.progress = settings.progress and not args.no_progress
    settings.bootstrap_s = args.bootstrap_seconds
    return settings


def random_backbone(settings: DemoSettings) -> bool:
    """True when the training config (with the demo's overrides) asks for a random-init backbone."""
    from flowclas_ros.config_io import load
    from flowclas_ros.training.config import TrainConfig

    return load(TrainConfig, settings.config, list(settings.train_overrides)).model.backbone.weights == "none"


def run(settings: DemoSettings, force: bool = False) -> list[str]:
    """Runs stages 2-7 and prints the stage times and the summary; returns the summary lines."""
    start = time.perf_counter()
    settings.out.mkdir(parents=True, exist_ok=True)
    if force:
        for stamp in settings.stamps.glob("*.json"):
            stamp.unlink()
    try:
        isolate_ros_traffic()  # the demo's node never meets another session's (or a robot's) traffic
    except RuntimeError as exc:
        raise DemoError(str(exc)) from exc
    print(f"[demo] run folder {settings.out}; ROS_DOMAIN_ID {os.environ['ROS_DOMAIN_ID']}", flush=True)
    if random_backbone(settings):
        os.environ[ALLOW_RANDOM_ENV] = "1"  # said once here and in the report, not by every process
        print(
            "[demo] note: random-init backbone (no pretrained weights here): the scores show the pipeline "
            "working, not DINOv2's quality",
            flush=True,
        )
    stages = DemoStages(settings)
    runner = StageRunner(stages.stamps, log=lambda text: print(text, flush=True))
    for stage in stages.all():
        runner.run(stage)
    params = dataset_params(settings)
    lines: list[str] = []

    def report() -> None:
        lines.extend(write_report(settings, params, runner.results, stages.threads_used))

    report_stage = Stage(
        "report",
        "write report.md / report.html with the overlay strip and the overlay GIF",
        key=lambda: stages.key("report", ["flowclas_ros.demo.report"], ["eval_torch", "live", "onnx"]),
        outputs=[settings.out / "report.md", settings.out / "report.html", settings.out / "summary.json"],
        run=report,
    )
    runner.run(report_stage)
    if not lines:  # up to date: the summary of the run that wrote it
        lines = json.loads((settings.out / "summary.json").read_text())["summary"]
    print_timings(runner, settings, time.perf_counter() - start)
    print("\n".join(["", "[demo] summary:", *lines]), flush=True)
    return lines


def print_timings(runner: StageRunner, settings: DemoSettings, total_s: float) -> None:
    """The wall time of each stage (bootstrap included when make measured it)."""
    print("\n[demo] stage wall times:")
    if settings.bootstrap_s is not None:
        print(f"  {'1 bootstrap':<14} {settings.bootstrap_s:7.1f} s")
    for number, result in enumerate(runner.results, start=2):
        note = (
            ""
            if result.ran
            else "  (up to date"
            + (f"; produced in {result.produced_wall_s:.1f} s)" if result.produced_wall_s else ")")
        )
        print(f"  {f'{number} {result.name}':<14} {result.wall_s:7.1f} s{note}")
    total = total_s + (settings.bootstrap_s or 0.0)
    print(f"  {'total':<14} {total:7.1f} s")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; 0 on success, 1 when a stage failed, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except DemoError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    try:
        run(settings, force=args.force)
    except (DemoError, ValueError, OSError) as err:  # ValueError: bad config, unusable recording
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun to continue (finished stages are kept)", file=sys.stderr)
        return 130
    return 0
