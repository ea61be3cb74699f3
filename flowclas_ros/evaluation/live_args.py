"""The ``--live`` flags of ``flowclas-eval`` and their checks (argparse only: no ROS, no replay).

They live beside the offline CLI so that parsing and checking a command line never imports
the ROS adapter; :mod:`flowclas_ros.ros.live_cli` runs the replay, and ``flowclas-eval``
imports it only when ``--live`` is given.
"""

from __future__ import annotations

import argparse
import math

from flowclas_ros.evaluation.frames import EvalInputError


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
