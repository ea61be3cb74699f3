"""``flowclas-learn``: send a ``~/learn_nominal`` goal to a running anomaly_node and show its progress.

For machines without the ros2 CLI; ``ros2 action send_goal --feedback`` does the same. The
feedback is shown as a tqdm bar per phase (frames while collecting, steps while training);
Ctrl-C cancels the goal (the node stays on its model) and waits for its result. Exit code 0
when the new model was swapped in, 1 when the run failed, was refused or rejected, 2 on bad
arguments, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time

PROG = "flowclas-learn"
RESULT_FIELDS = (
    "success", "message", "checkpoint", "identity", "frames_used", "frames_train", "frames_val",
    "collecting_s", "training_s", "validating_s", "exporting_s", "swapping_s",
    "false_alarm_rate_before", "false_alarm_rate_after", "ap_before", "ap_after",
    "threshold", "image_threshold", "run_dir",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Teach a running anomaly_node that what its cameras see now is normal: collect, "
        "fine-tune beside it, gate, swap (the LearnNominal action at <node>/learn_nominal).",
    )
    parser.add_argument(
        "--node",
        default="/anomaly_node",
        help="the node's full name, e.g. /robot/anomaly_node (default: %(default)s)",
    )
    parser.add_argument(
        "--cameras", default="", help="comma-separated camera names to collect from (default: all)"
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, metavar="S", help="collect for S seconds (0: no limit)"
    )
    parser.add_argument("--frames", type=int, default=0, metavar="N", help="collect N frames (0: no limit)")
    parser.add_argument(
        "--rate", type=float, default=0.0, metavar="HZ", help="at most HZ frames/s per camera"
    )
    parser.add_argument("--steps", type=int, default=0, metavar="N", help="training steps (0: the recipe's)")
    parser.add_argument("--bag", default="", help="learn from this recording instead of live frames")
    parser.add_argument("--server-timeout", type=float, default=10.0, metavar="S", help="wait for the node")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _check(args: argparse.Namespace) -> str | None:
    for name in ("duration", "rate", "server_timeout"):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            return f"--{name.replace('_', '-')} must be >= 0, got {value}"
    for name in ("frames", "steps"):
        if not 0 <= getattr(args, name) < 2**32:
            return f"--{name} must be between 0 and 4294967295"
    if not args.node.startswith("/"):
        return f"--node must be a full name starting with '/', got {args.node!r}"
    return None


class _Bar:
    """One tqdm bar per phase: frames while collecting, steps while training, time otherwise."""

    def __init__(self, disabled: bool, frames_total: int):
        self.disabled, self.frames_total = disabled, frames_total
        self.phase, self.bar = "", None

    def update(self, fb) -> None:
        from tqdm import tqdm

        if fb.phase != self.phase:
            self.close()
            self.phase = fb.phase
            total = self.frames_total or None if fb.phase == "collecting" else (fb.total_steps or None)
            unit = "frame" if fb.phase == "collecting" else ("step" if fb.phase == "training" else "s")
            self.bar = tqdm(total=total, desc=fb.phase, unit=unit, disable=self.disabled, file=sys.stderr)
            self.start = time.monotonic()
        if fb.phase == "collecting":
            self.bar.n = int(fb.frames_collected)
        elif fb.phase == "training":
            self.bar.total = fb.total_steps or self.bar.total
            self.bar.n = int(fb.step)
            if math.isfinite(fb.loss):
                self.bar.set_postfix(loss=f"{fb.loss:.4g}", refresh=False)
        else:
            self.bar.n = int(time.monotonic() - self.start)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _result_dict(result) -> dict:
    return {name: getattr(result, name) for name in RESULT_FIELDS}


def _print_result(result, status_name: str, as_json: bool) -> None:
    data = _result_dict(result)
    if as_json:
        print(json.dumps({"status": status_name, **data}, indent=2))
        return
    print(f"{status_name}: {result.message}")
    if result.checkpoint:
        print(f"checkpoint {result.checkpoint} (identity {result.identity[:12]})")
    if math.isfinite(result.false_alarm_rate_after):
        print(
            f"false-alarm rate {result.false_alarm_rate_before:.4g} -> {result.false_alarm_rate_after:.4g}, "
            f"synthetic-anomaly AP {result.ap_before:.4g} -> {result.ap_after:.4g}"
        )
    phases = ("collecting", "training", "validating", "exporting", "swapping")
    seconds = ", ".join(f"{p} {getattr(result, p + '_s'):.1f} s" for p in phases)
    print(
        f"frames {result.frames_used} ({result.frames_train} train, {result.frames_val} held out); {seconds}"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    problem = _check(args)
    if problem:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return 2
    import rclpy
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient
    from rclpy.executors import SingleThreadedExecutor

    from flowclas_ros.action import LearnNominal

    names = {
        getattr(GoalStatus, n): n[len("STATUS_") :].lower()
        for n in dir(GoalStatus)
        if n.startswith("STATUS_")
    }
    rclpy.init(args=None, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("flowclas_learn_cli")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    bar = _Bar(args.no_progress, args.frames)
    try:
        client = ActionClient(node, LearnNominal, f"{args.node.rstrip('/')}/learn_nominal")
        if not client.wait_for_server(timeout_sec=args.server_timeout):
            print(
                f"{PROG}: no action server {args.node}/learn_nominal within {args.server_timeout:g} s "
                "(is the node running? is its name right? see ros2 node list)",
                file=sys.stderr,
            )
            return 1
        goal = LearnNominal.Goal(
            cameras=[c for c in args.cameras.split(",") if c], duration_s=float(args.duration),
            max_frames=int(args.frames), max_rate_hz=float(args.rate), steps=int(args.steps), bag=args.bag,
        )  # fmt: skip
        # Ctrl-C sets a flag that the wait loops poll, rather than raising KeyboardInterrupt wherever
        # the main thread happens to be: a CI run once lost that exception and never cancelled.
        ctrl_c = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda *_: ctrl_c.set())
        try:
            sent = client.send_goal_async(goal, feedback_callback=lambda msg: bar.update(msg.feedback))
            while not sent.done():
                time.sleep(0.05)
            handle = sent.result()
            if not handle.accepted:
                print(f"{PROG}: the goal was rejected by {args.node}", file=sys.stderr)
                return 1
            result_future = handle.get_result_async()
            while not result_future.done() and not ctrl_c.is_set():
                time.sleep(0.1)
            interrupted = ctrl_c.is_set() and not result_future.done()
            if interrupted:
                print(f"\n{PROG}: cancelling the goal (the node stays on its model) ...", file=sys.stderr)
                handle.cancel_goal_async()
                deadline = time.monotonic() + 60
                while not result_future.done() and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not result_future.done():
                    print(f"{PROG}: no result within 60 s of the cancel", file=sys.stderr)
                    return 130
        finally:
            signal.signal(signal.SIGINT, previous)
        bar.close()
        response = result_future.result()
        _print_result(response.result, names.get(response.status, str(response.status)), args.json)
        if interrupted:
            return 130
        return 0 if response.result.success else 1
    finally:
        bar.close()
        executor.shutdown()
        spinner.join(5)  # before the node goes: a spinning thread at exit aborts the process
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
