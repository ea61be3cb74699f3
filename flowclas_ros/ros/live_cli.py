"""``flowclas-eval --live``: the ROS side of the evaluation CLI (its flags, their checks, the run).

``flowclas_ros.evaluation.cli`` owns the offline evaluation and imports this module lazily,
so the core never imports ROS at import time. Nothing here imports rclpy either: that
happens only inside :func:`~flowclas_ros.ros.live_replay.run_live_replay`, so ``--help``
and offline runs work without ROS.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from flowclas_ros.evaluation.accumulator import EvalAccumulator
from flowclas_ros.evaluation.frames import BagFrames, EvalInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--live`` argument group."""
    live = parser.add_argument_group(
        "live replay through anomaly_node (--live, needs ROS 2 and the built messages)"
    )
    live.add_argument(
        "--live", action="store_true", help="play --bag into the real node and evaluate its outputs"
    )
    live.add_argument(
        "--rate-factor",
        type=float,
        default=1.0,
        metavar="F",
        help="playback speed x recorded rate (default: 1.0)",
    )
    live.add_argument("--attach", action="store_true", help="use a running node instead of starting one")
    live.add_argument(
        "--node-name",
        default="anomaly_node",
        metavar="NAME",
        help="node name, optionally /namespace/name (default: %(default)s)",
    )
    live.add_argument(
        "--node-param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="extra parameter for the started node (repeatable)",
    )
    live.add_argument(
        "--startup-timeout",
        type=float,
        default=180.0,
        metavar="S",
        help="wait for the node (default: %(default)s)",
    )
    live.add_argument(
        "--drain-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="after the last frame, wait this long for answers (default: %(default)s)",
    )


def check_args(args: argparse.Namespace) -> None:
    """Checks of the ``--live`` flags (raise EvalInputError with a one-line reason)."""
    if args.live and not args.bag:
        raise EvalInputError("--live needs --bag and --image-topic")
    if (args.attach or args.node_param) and not args.live:
        raise EvalInputError("--attach/--node-param only apply to --live")
    if not (args.rate_factor > 0 and math.isfinite(args.rate_factor)):
        raise EvalInputError(f"--rate-factor must be > 0, got {args.rate_factor}")


def needs_checkpoint(args: argparse.Namespace) -> bool:
    """False only when attaching to a running node, which has its own checkpoint."""
    return not (args.live and args.attach)


def run(
    args: argparse.Namespace, frames: BagFrames, accumulator: EvalAccumulator, out_dir: Path
) -> tuple[dict[str, Any], list[str]]:
    """Replay ``frames`` through the node; returns metrics.json's ``live`` section and warnings."""
    from flowclas_ros.ros.live_replay import LiveReplayOptions, run_live_replay

    opts = LiveReplayOptions(
        out_dir=out_dir,
        checkpoint=args.checkpoint,
        backend=args.backend,
        device=args.device,
        threshold=args.threshold,
        rate_factor=args.rate_factor,
        attach=args.attach,
        node_name=args.node_name,
        node_params=list(args.node_param),
        startup_timeout_s=args.startup_timeout,
        drain_timeout_s=args.drain_timeout,
        progress=not args.no_progress,
    )
    live = run_live_replay(opts, frames, accumulator)
    warn = []
    if live["n_dropped"]:
        warn.append(
            f"{live['n_dropped']} of {live['n_published']} published frames were never answered "
            "(dropped by the node's newest-frame policy or lost)"
        )
    if live["n_score_map_shape_mismatch"]:
        warn.append(f"{live['n_score_map_shape_mismatch']} score maps did not match their image size")
    return live, warn
