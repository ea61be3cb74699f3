"""``flowclas-eval --live``: the ROS side of the evaluation CLI (the run and its warnings).

``flowclas_ros.evaluation.cli`` owns the offline evaluation and the ``--live`` flags
(:mod:`flowclas_ros.evaluation.live_args`); it imports this module only when ``--live`` is
given, so offline runs and ``--help`` never import the ROS adapter. Nothing here imports
rclpy either: that happens only inside :func:`~flowclas_ros.ros.live_replay.run_live_replay`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flowclas_ros.evaluation.accumulator import EvalAccumulator
from flowclas_ros.evaluation.frames import BagFrames


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
