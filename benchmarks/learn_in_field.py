"""Field learning acceptance (issue 25): a node serving world A learns world B from its camera, while serving.

Worlds are the synthetic rover scenes of ``benchmarks/finetune_site.py`` (site A reddish, site B grey
terrain). The node (``flowclas-node``, its own process) serves a checkpoint trained on site A; this
process plays a camera that replays site B's normal frames at ``--camera-hz`` (10 Hz: the node is
saturated, as a real camera makes it on 2 cores) and sends one ``~/learn_nominal`` goal for
``--frames`` frames. Printed:

* goal -> swapped model (s), and seconds per phase;
* answer rate (results/s) and p50 / p90 latency (publish -> result) while idle and while learning
  (targets: >= 50 % of the idle rate, p50 <= 2.5x idle);
* the largest gap between results around the swap vs the largest gap while idle (target: at most
  the idle gap plus one frame period);
* pixel AP on site B's test frames: site-A model, the field-learned model, and an offline
  ``flowclas-train --init-from`` on the same collected frames with the same steps (target: field
  within 0.05 of offline), and the false-alarm rate on B's normal test pixels before / after;
* the CPU and the load average (the machine may be shared: every number moves with it).

Example (small, checks that it runs)::

    python benchmarks/learn_in_field.py --size 112 --n-train 48 --steps-a 60 --ft-steps 20 --frames 40

The acceptance scale is the default: 224x224 (the demo size), 200 frames, the recipe's steps.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("FLOWCLAS_ALLOW_RANDOM_BACKBONE", "1")

from finetune_site import make_sites, test_ap, train  # noqa: E402

from flowclas_ros.data.images.folder import FolderDataset  # noqa: E402
from flowclas_ros.learning.child import architecture_overrides  # noqa: E402
from flowclas_ros.runtime.cpu import cpu_model

NS = "/field_bench"
NODE = f"{NS}/anomaly_node"
TOPIC = "/field_bench_cam/image_raw"


def false_alarm_rate(checkpoint: Path, test_root: Path) -> float:
    """Fraction of normal pixels (mask 0) of the test frames at or above the checkpoint's threshold."""
    from flowclas_ros.model import load_checkpoint
    from flowclas_ros.runtime.torch_backend import TorchBackend

    data = FolderDataset(test_root, require_masks=True)
    backend = TorchBackend(load_checkpoint(checkpoint))
    alarms = normal = 0
    for i in range(len(data)):
        score = backend.predict([data.load_image(i)])[0].score_map
        mask = data.load_mask(i)
        alarms += int(np.count_nonzero((score >= backend.threshold) & (mask == 0)))
        normal += int(np.count_nonzero(mask == 0))
    return alarms / max(normal, 1)


class Camera:
    """rclpy side: publishes frames at a fixed rate, records results and feedback."""

    def __init__(self, frames: list[np.ndarray], hz: float):
        import rclpy
        from rclpy.action import ActionClient
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from flowclas_ros.action import LearnNominal
        from flowclas_ros.msg import AnomalyResult

        rclpy.init()
        self.node = rclpy.create_node("field_bench_camera")
        self.pub = self.node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
        self.results: list[tuple[float, float]] = []  # (receive time, latency ms)
        self.feedback: list[tuple[float, str]] = []
        self.node.create_subscription(AnomalyResult, f"{NODE}/cam/result", self._on_result, 50)
        self.action = ActionClient(self.node, LearnNominal, f"{NODE}/learn_nominal")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()
        self.frames, self.period = frames, 1.0 / hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish, daemon=True)

    def _on_result(self, msg) -> None:
        now = time.time()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.results.append((now, (now - stamp) * 1000.0))

    def _publish(self) -> None:
        from sensor_msgs.msg import Image

        i, next_at = 0, time.monotonic()
        while not self._stop.is_set():
            rgb = self.frames[i % len(self.frames)]
            msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3)
            msg.header.stamp = self.node.get_clock().now().to_msg()
            msg.header.frame_id = "cam"
            msg.data = rgb.tobytes()
            self.pub.publish(msg)
            i += 1
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        self._thread.start()

    def window(self, start: float, end: float) -> dict[str, float]:
        """Answer rate, latency percentiles and the largest gap between results in [start, end]."""
        inside = [(t, lat) for t, lat in self.results if start <= t <= end]
        times = [t for t, _ in inside]
        gaps = np.diff(times) if len(times) > 1 else np.array([np.nan])
        lat = [lat for _, lat in inside] or [np.nan]
        return {
            "rate_hz": len(inside) / max(end - start, 1e-9),
            "p50_ms": float(np.percentile(lat, 50)),
            "p90_ms": float(np.percentile(lat, 90)),
            "max_gap_s": float(np.max(gaps)),
        }

    def learn(self, frames: int, steps: int, timeout: float):
        from flowclas_ros.action import LearnNominal

        if not self.action.wait_for_server(timeout_sec=60):
            raise RuntimeError("no learn_nominal action server")
        goal = LearnNominal.Goal(max_frames=frames, steps=steps)
        sent = self.action.send_goal_async(
            goal, feedback_callback=lambda m: self.feedback.append((time.time(), m.feedback.phase))
        )
        while not sent.done():
            time.sleep(0.05)
        future = sent.result().get_result_async()
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no result within {timeout} s")
            time.sleep(0.1)
        return future.result().result

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.executor.shutdown()
        self._spin.join(5)
        self.node.destroy_node()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, default=224, help="frame and model side (default: the demo's 224)"
    )
    parser.add_argument("--n-train", type=int, default=200, help="normal frames per site")
    parser.add_argument("--n-test", type=int, default=24, help="site B test frames")
    parser.add_argument("--steps-a", type=int, default=250, help="site A training steps (parent checkpoint)")
    parser.add_argument("--parent", default="", help="use this site-A checkpoint instead of training one")
    parser.add_argument("--ft-steps", type=int, default=0, help="field fine-tuning steps (0: the recipe's)")
    parser.add_argument("--frames", type=int, default=200, help="frames the goal collects")
    parser.add_argument("--camera-hz", type=float, default=10.0)
    parser.add_argument("--idle-s", type=float, default=20.0, help="idle measurement window")
    parser.add_argument("--learn-threads", type=int, default=1)
    parser.add_argument(
        "--learn-nice", type=int, default=0, help="the node parameter learn_nice (its default)"
    )
    parser.add_argument("--skip-offline", action="store_true", help="no offline fine-tune for comparison")
    parser.add_argument("--work", default="/tmp/flowclas_learn_in_field")
    args = parser.parse_args()
    work = Path(args.work)
    load_start = os.getloadavg()
    sites = make_sites(work, args.size, args.n_train, args.n_test)
    scale = [f"model.preprocess.input_size=[{args.size},{args.size}]", "device=cpu", "threads=1"]
    if args.parent:
        parent = Path(args.parent)
    else:
        parent = work / "A" / "checkpoint"
        if not parent.is_dir():
            every = max(1, args.steps_a // 4)
            overrides = [
                *scale,
                f"steps={args.steps_a}",
                f"val_every={every}",
                f"checkpoint_every={args.steps_a}",
            ]
            print(f"training the site-A checkpoint ({args.steps_a} steps) ...", flush=True)
            train(work / "A", [*overrides, f"data.train={sites['A'] / 'train'}"])
    learn_dir = work / "A.learn"
    params = work / "node_params.yaml"
    node_params = {
        "checkpoint": str(parent), "image_topics": [TOPIC], "camera_names": ["cam"],
        "learn_dir": str(learn_dir), "learn_threads": args.learn_threads, "learn_nice": args.learn_nice,
        "no_frame_warning_s": 60.0,
    }  # fmt: skip
    params.write_text(yaml.safe_dump({"/**/anomaly_node": {"ros__parameters": node_params}}))
    node_exe = str(Path(sys.executable).parent / "flowclas-node")
    log = open(work / "node.log", "w")
    node = subprocess.Popen(
        [node_exe, "--ros-args", "--params-file", str(params), "-r", f"__ns:={NS}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    data = FolderDataset(sites["B"] / "train")
    camera = Camera([data.load_image(i) for i in range(len(data))], args.camera_hz)
    try:
        camera.start()
        deadline = time.monotonic() + 180
        while not camera.results and time.monotonic() < deadline:
            time.sleep(0.2)
        if not camera.results:
            raise RuntimeError(f"no result from the node; see {work / 'node.log'}")
        time.sleep(5)  # warm
        t0 = time.time()
        time.sleep(args.idle_s)
        idle = camera.window(t0, time.time())
        goal_at = time.time()
        result = camera.learn(args.frames, args.ft_steps, timeout=3600)
        done_at = time.time()
        time.sleep(args.idle_s)  # the "after" window: serving the new model
        swap_at = next((t for t, p in camera.feedback if p == "swapping"), done_at)
        learning = camera.window(goal_at, swap_at)
        around = camera.window(swap_at - 2.0, done_at + 2.0)
        after = camera.window(done_at + 0.5, time.time())
    finally:
        camera.close()
        node.send_signal(2)
        node.wait(60)
        log.close()
    print(
        f"\nCPU {cpu_model()}, {os.cpu_count()} cores; load average at start {load_start}, "
        f"end {os.getloadavg()}"
    )
    print(f"result: success={result.success}: {result.message}")
    print(
        f"goal -> swapped model: {done_at - goal_at:.1f} s for {result.frames_used} frames "
        f"({result.frames_train} train, {result.frames_val} held out); "
        f"collecting {result.collecting_s:.1f} s, training {result.training_s:.1f} s, "
        f"validating {result.validating_s:.1f} s, "
        f"exporting {result.exporting_s:.1f} s, swapping {result.swapping_s:.1f} s"
    )
    print("| window | answers/s | p50 ms | p90 ms | largest gap s |\n|---|---|---|---|---|")
    for name, w in (("idle", idle), ("learning", learning), ("around the swap", around), ("after", after)):
        print(
            f"| {name} | {w['rate_hz']:.2f} | {w['p50_ms']:.0f} | {w['p90_ms']:.0f} | {w['max_gap_s']:.2f} |"
        )
    print(
        f"learning/idle: answer rate {learning['rate_hz'] / idle['rate_hz']:.2f} (target >= 0.5), "
        f"p50 {learning['p50_ms'] / idle['p50_ms']:.2f}x (target <= 2.5); "
        f"swap gap {around['max_gap_s']:.2f} s vs idle gap + one period "
        f"{idle['max_gap_s'] + 1 / args.camera_hz:.2f} s"
    )
    if not result.success:
        return 1
    new = Path(result.checkpoint)
    test = sites["B"] / "test"
    rows = [("site A (before)", parent), ("field-learned", new)]
    if not args.skip_offline:
        offline = work / "offline"
        steps = [f"steps={args.ft_steps}"] if args.ft_steps else []
        run_frames = Path(result.run_dir) / "frames"
        same = [f"data.train={run_frames}", "data.bag.image_topic=/learn/image_raw", "data.bag.max_rate_hz=0"]
        arch = [f"{k}={v}" for k, v in architecture_overrides(parent).items()]  # as the node's child
        train(offline, [*arch, *same, "data.val=", "threads=1", *steps], parent=parent)
        rows.append(("offline --init-from", offline / "checkpoint"))
    print("| model | pixel AP on B test | false-alarm rate on B normal pixels |\n|---|---|---|")
    for name, ckpt in rows:
        print(f"| {name} | {test_ap(ckpt, test):.3f} | {false_alarm_rate(ckpt, test):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
