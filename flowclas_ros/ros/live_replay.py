"""Live replay evaluation: play a bag into the real ``anomaly_node`` and score what comes back.

What ``ros2 bag play`` plus a recorder would give a ROS user, in one call:

1. start ``flowclas-node`` with a generated parameter file (checkpoint, backend,
   ``image_topics: [T]``), or attach to a running node;
2. wait until the node subscribes to the image topic and its ``~/<camera>/result``
   and ``~/<camera>/score_map`` publishers have matched ours;
3. publish the bag's image messages unchanged (their recorded CDR bytes, so the
   node decodes exactly what was recorded) at the recorded rate times
   ``rate_factor``, with sensor-data QoS like the node's subscription;
4. match results and score maps to the published frames by header stamp
   (:class:`~flowclas_ros.evaluation.replay_tracker.ReplayTracker`): end-to-end
   latency is publish time to result receive time; frames never answered were
   dropped by the node's newest-frame policy; answered frames with a mask go
   into the metrics.

Subscription callbacks only timestamp and queue messages; all other work runs
on the calling thread, so a slow metric update never delays a receive time.
"""

from __future__ import annotations

import math
import queue
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from flowclas_ros.data.bags.source import COMPRESSED_TYPE, IMAGE_TYPE
from flowclas_ros.data.images.codec import ImageDecodeError, decode_float
from flowclas_ros.evaluation.accumulator import EvalAccumulator
from flowclas_ros.evaluation.frames import BagFrames
from flowclas_ros.evaluation.replay_tracker import ReplayTracker
from flowclas_ros.logged_process import LoggedProcess
from flowclas_ros.ros.live_bag import RawImages, reencode
from flowclas_ros.ros.naming import camera_name

NODE_LOG = "node.log"
NODE_PARAMS = "node_params.yaml"
_POLL_S = 0.05


class LiveReplayError(RuntimeError):
    """The replay could not run (node did not start, never subscribed, ...); one-line message."""


@dataclass
class LiveReplayOptions:
    """Settings of one live replay.

    Attributes:
        out_dir: Where ``node_params.yaml`` and ``node.log`` go.
        checkpoint: Checkpoint for a node we start (unused with ``attach``).
        backend: Node backend kind.
        device: Node device.
        threshold: Node ``threshold`` parameter (None: the checkpoint's).
        rate_factor: Playback speed relative to the recording (2 = twice as fast).
        attach: Use a running node instead of starting one.
        node_name: Node name, optionally with namespace (``/ns/anomaly_node``).
        node_params: Extra ``NAME:=VALUE`` parameters for a node we start.
        startup_timeout_s: Longest wait for the node to come up and subscribe.
        drain_timeout_s: After the last frame, how long to wait for outstanding answers.
        progress: Show a tqdm bar.
    """

    out_dir: Path
    checkpoint: str | None = None
    backend: str = "torch"
    device: str = "cpu"
    threshold: float | None = None
    rate_factor: float = 1.0
    attach: bool = False
    node_name: str = "anomaly_node"
    node_params: list[str] = field(default_factory=list)
    startup_timeout_s: float = 180.0
    drain_timeout_s: float = 5.0
    progress: bool = True


def split_node_name(name: str) -> tuple[str, str]:
    """``"/ns/sub/node"`` -> ``("/ns/sub", "node")``; a bare name is in the root namespace."""
    parts = [p for p in name.split("/") if p]
    if not parts:
        raise LiveReplayError(f"invalid node name {name!r}")
    return "/" + "/".join(parts[:-1]), parts[-1]


def output_topics(node_name: str, image_topic: str) -> tuple[str, str]:
    """Absolute ``result`` and ``score_map`` topics the node publishes for ``image_topic``."""
    namespace, name = split_node_name(node_name)
    base = f"{namespace.rstrip('/')}/{name}/{camera_name(image_topic)}"
    return f"{base}/result", f"{base}/score_map"


def write_node_params(path: Path, opts: LiveReplayOptions, image_topic: str, compressed: bool) -> Path:
    """Write the parameter file for the node we start (matches any node name: ``/**``)."""
    params: dict[str, Any] = {
        "checkpoint": str(Path(opts.checkpoint).resolve()) if opts.checkpoint else "",
        "backend": opts.backend,
        "device": opts.device,
        "image_topics": [image_topic],
        "compressed": [bool(compressed)],
    }
    if opts.threshold is not None:
        params["threshold"] = float(opts.threshold)
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False))
    return path


def node_command(params_file: Path, node_name: str, extra: list[str]) -> list[str]:
    """Command line that starts ``flowclas-node`` with ``params_file``."""
    exe = Path(sys.executable).parent / "flowclas-node"
    found = str(exe) if exe.exists() else shutil.which("flowclas-node")
    cmd = [found] if found else [sys.executable, "-m", "flowclas_ros.ros.node"]
    namespace, name = split_node_name(node_name)
    cmd += ["--ros-args", "--params-file", str(params_file), "-r", f"__node:={name}"]
    if namespace != "/":
        cmd += ["-r", f"__ns:={namespace}"]
    for item in extra:
        cmd += ["-p", item]
    return cmd


# ----------------------------------------------------------------- node side


class _NodeProcess(LoggedProcess):
    """``flowclas-node`` as a child process, its output in ``node.log``."""

    what = "flowclas-node"
    error = LiveReplayError
    tail_lines = 3


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def run_live_replay(
    opts: LiveReplayOptions, frames: BagFrames, accumulator: EvalAccumulator
) -> dict[str, Any]:
    """Replay ``frames`` (an opened :class:`BagFrames`) through the node; fill ``accumulator``.

    Returns:
        The ``live`` section of metrics.json (counts, topics, node, threshold used by the node).

    Raises:
        LiveReplayError: The node failed to start, subscribe or publish in time.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import (
        DurabilityPolicy,
        HistoryPolicy,
        QoSProfile,
        ReliabilityPolicy,
        qos_profile_sensor_data,
    )
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CompressedImage, Image

    try:
        from flowclas_ros.msg import AnomalyResult
    except ImportError as err:
        raise LiveReplayError(
            f"flowclas_ros messages are not built or not on PYTHONPATH ({err}); run 'make bootstrap' and "
            "'source scripts/env.sh'"
        ) from err

    if not opts.rate_factor > 0 or not math.isfinite(opts.rate_factor):
        raise LiveReplayError(f"rate factor must be > 0, got {opts.rate_factor}")
    raw = RawImages(frames.bag, frames.image_topic)
    compressed = raw.msgtype == COMPRESSED_TYPE
    result_topic, score_topic = output_topics(opts.node_name, frames.image_topic)
    node_proc: _NodeProcess | None = None
    context = rclpy.Context()
    rclpy.init(args=[], context=context, signal_handler_options=SignalHandlerOptions.NO)  # not our argv
    node = rclpy.create_node("flowclas_live_replay", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin_thread = threading.Thread(target=executor.spin, name="live-replay-spin", daemon=True)
    inbox: queue.Queue[tuple[str, float, Any]] = queue.Queue()
    tracker = ReplayTracker()
    n_shape_mismatch = 0
    try:
        if not opts.attach:
            params = write_node_params(opts.out_dir / NODE_PARAMS, opts, frames.image_topic, compressed)
            node_proc = _NodeProcess(
                node_command(params, opts.node_name, opts.node_params), opts.out_dir / NODE_LOG
            )
        publisher = node.create_publisher(
            CompressedImage if compressed else Image, frames.image_topic, qos_profile_sensor_data
        )
        spin_thread.start()
        deadline = time.monotonic() + opts.startup_timeout_s

        def wait(what: str, ready: Any) -> None:
            while not ready():
                if node_proc is not None:
                    node_proc.check_alive()
                if time.monotonic() > deadline:
                    log = (
                        f"; node log: {node_proc.log_path} (last line: {node_proc.tail(1)})"
                        if node_proc
                        else ""
                    )
                    raise LiveReplayError(
                        f"node {opts.node_name} not ready within {opts.startup_timeout_s:g} s: {what}{log}"
                    )
                time.sleep(0.1)

        # ---- wait for the node: it subscribes to the images and advertises its outputs
        wait(f"no subscriber on {frames.image_topic}", lambda: publisher.get_subscription_count() > 0)
        wait(
            f"{result_topic} / {score_topic} not advertised (is publish_score_map false?)",
            lambda: node.count_publishers(result_topic) > 0 and node.count_publishers(score_topic) > 0,
        )
        # Created only now: BEST_AVAILABLE reliability is resolved against the publishers that
        # exist at creation, so it matches the node's whether best effort or reliable. VOLATILE
        # durability is compatible with any publisher.
        answers_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=100,
            reliability=ReliabilityPolicy.BEST_AVAILABLE,
            durability=DurabilityPolicy.VOLATILE,
        )
        result_sub = node.create_subscription(
            AnomalyResult, result_topic, lambda m: inbox.put(("result", time.monotonic(), m)), answers_qos
        )
        score_sub = node.create_subscription(
            Image, score_topic, lambda m: inbox.put(("score_map", time.monotonic(), m)), answers_qos
        )
        wait(
            f"our subscriptions to {result_topic} / {score_topic} did not match (QoS?)",
            lambda: result_sub.get_publisher_count() > 0 and score_sub.get_publisher_count() > 0,
        )
        time.sleep(0.5)  # let the reverse matches (node -> our subscriptions) settle too

        def handle(kind: str, t_recv: float, msg: Any) -> None:
            nonlocal n_shape_mismatch
            stamp = _stamp_ns(msg.header)
            if kind == "result":
                done = tracker.on_result(
                    stamp, t_recv, float(msg.image_score), float(msg.threshold), float(msg.model_ms)
                )
            else:
                try:
                    scores = decode_float(
                        msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian
                    )
                except ImageDecodeError:
                    tracker.n_unmatched += 1
                    return
                done = tracker.on_score_map(stamp, t_recv, scores)
            for ans in done:
                if ans.score_map.shape != ans.frame.image.shape[:2]:
                    n_shape_mismatch += 1
                    continue
                accumulator.add(
                    ans.frame.name,
                    ans.frame.image,
                    ans.frame.mask,
                    ans.score_map,
                    ans.image_score,
                    latency_ms=ans.end_to_end_ms,
                    model_ms=ans.node_latency_ms,
                )

        def process_until(t_end: float) -> None:
            while True:
                remaining = t_end - time.monotonic()
                try:
                    item = (
                        inbox.get(timeout=max(0.0, min(remaining, _POLL_S)))
                        if remaining > 0
                        else inbox.get_nowait()
                    )
                except queue.Empty:
                    if time.monotonic() >= t_end:
                        return
                    continue
                handle(*item)

        # ---- play
        t0: float | None = None
        first_log: int | None = None
        last_pub = time.monotonic()
        n_reencoded = 0
        with tqdm(
            total=len(frames), desc="replaying", unit="frame", disable=not opts.progress, leave=False
        ) as bar:
            for frame in frames:
                item = raw.get(frame.index)
                if item is not None:
                    _, log_ns, cdr = item
                else:
                    log_ns, cdr = int(frame.stamp_ns or 0), reencode(frame, raw.msgtype or IMAGE_TYPE)
                    n_reencoded += 1
                if t0 is None:
                    t0, first_log = time.monotonic(), log_ns
                target = t0 + max(0.0, (log_ns - first_log) / 1e9) / opts.rate_factor
                process_until(target)
                if node_proc is not None:
                    node_proc.check_alive()
                t_pub = time.monotonic()
                if tracker.published(frame, t_pub):
                    publisher.publish(cdr)
                    last_pub = t_pub
                bar.update(1)

            # ---- drain: until every frame is answered or nothing came for drain_timeout_s
            while tracker.n_pending:
                last = max(last_pub, tracker.last_answer_time or 0.0)
                if time.monotonic() - last > opts.drain_timeout_s:
                    break
                process_until(time.monotonic() + _POLL_S)
        process_until(time.monotonic())
        tracker.finish()
        accumulator.flush()
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        context.try_shutdown()
        if spin_thread.is_alive():
            spin_thread.join(timeout=5.0)
        raw.close()
        exit_code = node_proc.stop(timeout_s=20.0) if node_proc is not None else None

    return {
        **tracker.as_dict(),
        "n_score_map_shape_mismatch": n_shape_mismatch,
        "n_reencoded": n_reencoded,
        "rate_factor": opts.rate_factor,
        "node": opts.node_name,
        "attached": opts.attach,
        "result_topic": result_topic,
        "score_map_topic": score_topic,
        "image_msgtype": raw.msgtype,
        "node_threshold": tracker.threshold,
        "node_log": str(node_proc.log_path) if node_proc else None,
        "node_exit_code": exit_code,
    }
