"""``flowclas-node`` / ``ros2 run flowclas_ros anomaly_node``: runs :class:`AnomalyNode` until it is stopped.

With ``autostart`` (default true) the node configures and activates itself at start, so a
plain ``ros2 run`` just works; if that fails the process logs the reason and exits with
code 1 (a launch file shows it died). With ``autostart: false`` it waits, unconfigured, for
a lifecycle manager (the standard ``~/change_state`` / ``~/get_state`` services).

Stopping (issue 23: "a clean stop, always"). Every way a node is stopped ends with exit
code 0 and no traceback: SIGINT (Ctrl-C), SIGTERM, a second signal while it shuts down
(``ros2 launch`` forwards Ctrl-C, so the node gets SIGINT twice), and the lifecycle
``shutdown`` transition (a finalized node exits). The process owns its signals
(``rclpy.init(signal_handler_options=NO)``): a handler only records the signal, the main
loop spins with a short timeout and checks it, then the node is released, destroyed and
rclpy shut down in that order. So nothing shuts the context down under a running executor
(rclpy's own handler did: ``RCLError: failed to initialize wait set`` from ``rclpy.spin``)
and no ``KeyboardInterrupt`` is raised in the middle of the cleanup (e.g. from
``gc.collect()`` in ``release()``). Further signals during the shutdown are ignored, up to
``FORCE_EXIT_SIGNALS``: then the process exits at once, still with code 0 (what launch's
SIGTERM escalation asks for).

Heavy imports (rclpy, the node, numpy) happen inside :func:`main`, after the handlers are
installed, so a signal during start-up ends the process cleanly too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

SPIN_PERIOD_S = 0.1
"""Longest wait of one ``spin_once``: how soon a recorded signal is seen (a handler cannot wake rcl_wait)."""

FINALIZED_LINGER_S = 0.5
"""After the lifecycle ``shutdown`` transition: spin this long more (the reply gets out), then exit."""

FORCE_EXIT_SIGNALS = 3
"""At this many stop signals the process exits at once with code 0 (the orderly stop takes too long)."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

EXECUTOR_THREADS = 4
"""Executor threads: the node's own callbacks, a model swap, a learning run, and one spare."""


class StopRequest:
    """Records SIGINT / SIGTERM for the main loop; installed before anything heavy is imported.

    The handler does no I/O and takes no lock (it runs between two bytecodes of the main
    thread, possibly inside logging or the garbage collector), except on the forced exit,
    which writes one line with ``os.write`` and leaves with ``os._exit(0)``.
    """

    def __init__(self) -> None:
        self.signals: list[int] = []

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived."""
        return bool(self.signals)

    def install(self) -> None:
        """Makes this object the SIGINT and SIGTERM handler of the process."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        if len(self.signals) >= FORCE_EXIT_SIGNALS:
            os.write(2, f"flowclas-node: {len(self.signals)} stop signals, exiting now\n".encode())
            os._exit(0)

    def describe(self) -> str:
        """The first signal's name, e.g. ``SIGINT``."""
        return signal.Signals(self.signals[0]).name if self.signals else "no signal"


def _parse_cli(argv: list[str]) -> None:
    """Handles ``--help`` and rejects unknown non-ROS arguments (ROS ones are left to rclpy)."""
    from rclpy.utilities import remove_ros_args

    parser = argparse.ArgumentParser(
        prog="flowclas-node",
        description="Start flowclas_ros's anomaly_node (a lifecycle node). Parameters are set with "
        "'--ros-args -p NAME:=VALUE' or '--ros-args --params-file config/anomaly.yaml'; "
        "see config/anomaly.yaml for the list.",
    )
    parser.parse_args(remove_ros_args(args=argv)[1:])


def prepare_process() -> None:
    """Process-wide settings that must precede torch: OpenMP threads sleep when idle.

    libgomp (torch's intra-op pool) reads ``OMP_WAIT_POLICY`` once, when torch is imported
    (at configure, for the torch backend), and by default its threads spin after each
    parallel region, which starves a process sharing the cores
    (:mod:`flowclas_ros.runtime.threads`). A policy the user exported is kept.
    """
    from flowclas_ros.runtime.threads import passive_openmp  # light: no torch, numpy or rclpy

    passive_openmp()


def main(args: list[str] | None = None) -> int:
    """Runs the node until a stop signal or the lifecycle ``shutdown`` transition.

    Args:
        args: Full argument vector including the program name (default ``sys.argv``);
            may contain ``--ros-args ...``.

    Returns:
        Exit code: 0 on a stop (any signal, any moment, see the module docstring), 1 when
        autostart could not configure or activate (e.g. bad checkpoint), 2 on bad parameters
        or ``FLOWCLAS_DDS_PROFILE`` (only while the node is constructed: an error raised
        later, in a callback, propagates as itself).
    """
    stop = StopRequest()
    stop.install()
    argv = list(sys.argv if args is None else args)
    _parse_cli(argv)
    prepare_process()
    from flowclas_ros.ros.dds_profile import apply_dds_profile

    try:
        dds_note = apply_dds_profile()  # before rclpy.init: Fast DDS reads it with the first participant
    except ValueError as err:
        print(f"flowclas-node: {err}", file=sys.stderr)
        return 2
    if stop.requested:
        return 0
    return _run(argv, stop, dds_note)


def _run(argv: list[str], stop: StopRequest, dds_note: str | None) -> int:
    """Initialises rclpy without its signal handlers, runs the node, and tears down in order."""
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.signals import SignalHandlerOptions

    from flowclas_ros.ros.anomaly_node import AnomalyNode
    from flowclas_ros.ros.oneline import one_line

    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    executor = None
    try:
        try:
            node = AnomalyNode()
        except (ValueError, ParameterException) as err:
            print(f"flowclas-node: {one_line(err)}", file=sys.stderr)
            return 2
        if dds_note:
            node.get_logger().info(dds_note)
        if node.autostart and not stop.requested:
            # Failures are logged (one line) by the transition callbacks themselves.
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                return 1
            if not stop.requested and node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                return 1
        executor = _make_executor()
        executor.add_node(node)
        _spin_until_stopped(executor, node, stop)
    except ExternalShutdownException:
        pass  # someone else shut the context down: still a stop
    finally:
        if node is not None:
            if stop.requested:
                node.get_logger().info(f"stopping on {stop.describe()}")
            node.release()
        if executor is not None:
            executor.shutdown(timeout_sec=0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _make_executor() -> Any:
    """The executor ``main`` spins (in short steps, see :func:`_spin_until_stopped`).

    Several threads: ``~/load_model``, ``~/rollback_model`` and ``~/learn_nominal`` block for
    seconds to minutes in callback groups of their own; the node's other callbacks share one
    mutually exclusive group, so they still run one at a time, as under a single-threaded executor.
    """
    from rclpy.executors import MultiThreadedExecutor

    return MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)


def _spin_until_stopped(executor: Any, node: Any, stop: StopRequest) -> None:
    """Spins in short steps until a stop signal, the context's end, or a while after finalization."""
    finalized_at = None
    while not stop.requested and executor.context.ok():
        executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        if node.finalized and finalized_at is None:
            finalized_at = time.monotonic()
            node.get_logger().info("finalized (lifecycle shutdown): exiting")
        if finalized_at is not None and time.monotonic() - finalized_at > FINALIZED_LINGER_S:
            return


def __getattr__(name: str) -> Any:
    """``NODE_NAME`` and ``AnomalyNode`` stay importable from here (imported on first use)."""
    if name in ("NODE_NAME", "AnomalyNode"):
        from flowclas_ros.ros import anomaly_node

        return getattr(anomaly_node, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["StopRequest", "main"]


if __name__ == "__main__":
    sys.exit(main())
