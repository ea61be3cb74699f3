"""anomaly_node end-to-end latency vs model-only time, and behaviour under 30 Hz input.

Usage (inside the dev environment, `source scripts/env.sh`):
    python benchmarks/node_latency.py [--steps 16] [--input-size 224] [--frames 20] [--overload-s 15]
        [--camera-dds flowclas|default] [--input-qos reliable|best_effort]

Starts `flowclas-node` in its own process with a random-init ViT-S/14 checkpoint (timing only)
and drives it over real rclpy from this process. Prints, in one run:
  * model-only forward time (backend.predict in this process, and the node's own model_ms);
  * end-to-end latency (publish -> AnomalyResult received) at 640x480, one camera and two;
  * the overhead ratio end-to-end / model time (target <= 1.05), where the model time is the
    node's own forward of those frames (``AnomalyResult.model_ms`` x batch size); and the same
    ratio inside the node (``latency_ms``: callback -> result published, no DDS transport);
  * under 30 Hz input on one camera: p50/p99 latency, drop rate, the node's resident memory at
    start and end (targets: p99 <= 2x model time, memory flat);
  * two cameras at the same rate (10 Hz, published together): answers per camera (fair: within
    10 %) and p99 latency against the 2-camera forward (target <= 2x).
The machine's load average is printed too: on a shared machine every number moves with it.

``--contention spin|torch`` measures instead the one-camera end-to-end latency (camera in ->
result out) idle and beside a competing process (a one-thread busy loop, or a torch process
doing matmuls with its default thread pool; benchmarks/contention.py), interleaved in one run,
and prints p50 / p99 idle and busy side by side with the CPU model and flags. ``--backend``,
``--precision`` and ``--num-threads`` set the node's parameters (default: what a new user gets).

The node always runs with its own Fast DDS profile (flowclas_ros/ros/dds_profile.py). This
process plays the camera driver: ``--camera-dds default`` leaves it on Fast DDS's defaults
(a 921 KB frame then travels fragmented through the 512 KB shared-memory segment: ~13 ms
one way, reliable), ``flowclas`` (default) gives it the node's profile (~3 ms).
"""

from __future__ import annotations

import argparse
import array
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

os.environ.setdefault("FLOWCLAS_ALLOW_RANDOM_BACKBONE", "1")  # timing only: weights do not matter
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/contention.py

WIDTH, HEIGHT = 640, 480
NS = "/node_latency_bench"
TOPICS = ["/bench_cam_a/image_raw", "/bench_cam_b/image_raw"]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def forward_share(msg) -> float:
    """The frame's share of its batch forward: ``model_ms``; a node from before that field (it reads
    0) put the share in ``latency_ms``, so the same benchmark also measures the old node."""
    return msg.model_ms or msg.latency_ms


def image_msg(rgb: np.ndarray, frame_id: str, stamp):
    from sensor_msgs.msg import Image

    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3)
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    msg.data = array.array("B", rgb.tobytes())
    return msg


class Client:
    """Publishes images and timestamps every AnomalyResult on arrival (spun in a thread)."""

    def __init__(self, subscribe_images: bool):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from flowclas_ros.msg import AnomalyResult

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("node_latency_bench", context=self.context)
        self.arrivals: dict[str, tuple[float, object]] = {}
        self.lock = threading.Lock()
        # Reliable, depth 1: large best-effort frames sent back to back get lost in DDS on loopback,
        # which would be counted as drops here; depth 1 keeps the newest-frame semantics.
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = [self.node.create_publisher(Image, t, qos) for t in TOPICS]
        for camera in ("bench_cam_a", "bench_cam_b"):
            self.node.create_subscription(
                AnomalyResult, f"{NS}/anomaly_node/{camera}/result", self._on_result, 50
            )
            if subscribe_images:  # makes the node build and send score map, mask and overlay too
                for output in ("score_map", "mask", "overlay"):
                    self.node.create_subscription(
                        Image, f"{NS}/anomaly_node/{camera}/{output}", lambda m: None, 5
                    )
        from diagnostic_msgs.msg import DiagnosticArray

        self.latest_diagnostics: dict[str, str] = {}
        self.diagnostics_at = 0.0
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.running = True
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.running:
            self.executor.spin_once(timeout_sec=0.02)

    def _on_result(self, msg) -> None:
        with self.lock:
            self.arrivals[msg.header.frame_id] = (time.perf_counter(), msg)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith(": bench_cam_a"):
                self.latest_diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics_at = time.perf_counter()

    def wait_diagnostics(self, timeout: float) -> bool:
        since = time.perf_counter()
        while time.perf_counter() - since < timeout:
            if self.diagnostics_at > since:
                return True
            time.sleep(0.01)
        return False

    def publish(self, camera: int, rgb: np.ndarray, frame_id: str) -> float:
        msg = image_msg(rgb, frame_id, self.node.get_clock().now().to_msg())
        start = time.perf_counter()
        self.publishers[camera].publish(msg)
        return start

    def wait(self, frame_ids: list[str], timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                if all(f in self.arrivals for f in frame_ids):
                    return True
            time.sleep(0.0005)
        return False

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def start_node(
    tmp: Path, checkpoint: Path, input_qos: str = "reliable", extra: dict | None = None
) -> subprocess.Popen:
    params = tmp / "params.yaml"
    values = {"checkpoint": str(checkpoint), "image_topics": TOPICS, "qos_reliability": input_qos}
    params.write_text(yaml.safe_dump({"/**/anomaly_node": {"ros__parameters": {**values, **(extra or {})}}}))
    exe = Path(sys.executable).parent / "flowclas-node"
    log = open(tmp / "node.log", "w")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [str(exe), "--ros-args", "--params-file", str(params), "-r", f"__ns:={NS}"], stdout=log, stderr=log
    )


def sequential(client: Client, rgb: np.ndarray, cameras: int, frames: int, tag: str) -> list[tuple]:
    """One frame per camera at a time, all cameras published together.

    Returns, per answered round: (time until the last camera's result in ms, forward time spent
    in ms, whether one batch held every camera, the node's largest ``latency_ms`` of the round).
    ``model_ms`` in a result is its batch's forward time divided by the batch size; results of
    one batch carry the same value.
    """
    rounds = []
    for i in range(frames + 2):  # the first two are warm-up
        ids = [f"{tag}_{i}_{c}" for c in range(cameras)]
        start = time.perf_counter()
        for camera, frame_id in enumerate(ids):
            client.publish(camera, rgb, frame_id)
        if not client.wait(ids, 20.0) or i < 2:
            continue
        arrivals = [client.arrivals[frame_id] for frame_id in ids]
        shares = [forward_share(msg) for _, msg in arrivals]
        batched = cameras == 1 or len({round(v, 3) for v in shares}) == 1
        forward = shares[0] * cameras if batched else sum(shares)
        inside = max(msg.latency_ms for _, msg in arrivals)
        rounds.append(((max(t for t, _ in arrivals) - start) * 1000.0, forward, batched, inside))
        time.sleep(0.05)
    return rounds


def node_internal_latency(client: Client) -> str:
    """The node's own receive -> publish latency (from /diagnostics), excluding DDS transport."""
    if not client.wait_diagnostics(5.0):
        return "node-internal latency: no /diagnostics received"
    values = client.latest_diagnostics
    return (
        f"node-internal (callback -> published) p50 {values['latency_p50_ms']} ms vs its forward p50 "
        f"{values['model_p50_ms']} ms"
    )


def overload(
    client: Client, rgb: np.ndarray, seconds: float, rate_hz: float, pid: int, cameras: int = 1
) -> dict:
    """Each camera at ``rate_hz``, all published at the same instants (triggered together).

    Together is the hard case for fairness: with input history depth 1, DDS dropped the frames
    of two cameras published at the same instant unevenly.
    """
    process = psutil.Process(pid)
    rss_start = process.memory_info().rss
    sent: dict[str, float] = {}
    period = 1.0 / rate_hz
    start_time = time.perf_counter()
    ticks = [(k * period, c) for k in range(int(seconds * rate_hz)) for c in range(cameras)]
    rss_peak = rss_start
    last_ids = {}
    for i, (offset, camera) in enumerate(sorted(ticks)):
        time.sleep(max(0.0, start_time + offset - time.perf_counter()))
        frame_id = f"load{cameras}_{camera}_{i}"
        sent[frame_id] = client.publish(camera, rgb, frame_id)
        last_ids[camera] = frame_id
        if i % 30 == 0:
            rss_peak = max(rss_peak, process.memory_info().rss)
    client.wait(list(last_ids.values()), 10.0)
    time.sleep(1.0)  # the other camera's last answer
    rss_end = process.memory_info().rss
    answered = [(fid, client.arrivals[fid]) for fid in sent if fid in client.arrivals]
    latencies = [(arrived - sent[fid]) * 1000.0 for fid, (arrived, _) in answered]
    model_ms = [forward_share(msg) for _, (_, msg) in answered]
    per_camera = [
        sum(1 for fid, _ in answered if fid.startswith(f"load{cameras}_{c}_")) for c in range(cameras)
    ]
    # Latency minus the frame's own forward: waiting for the worker + transport + node overhead.
    beyond = [lat - model for lat, model in zip(latencies, model_ms)]
    return {
        "sent": len(sent),
        "answered": len(answered),
        "per_camera": per_camera,
        "rate_hz": len(sent) / seconds,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies) if latencies else float("nan"),
        "model_p50": percentile(model_ms, 50),
        "model_p99": percentile(model_ms, 99),
        "beyond_p50": percentile(beyond, 50),
        "beyond_p99": percentile(beyond, 99),
        "rss_start": rss_start / 2**20,
        "rss_end": rss_end / 2**20,
        "rss_peak": rss_peak / 2**20,
    }


def model_only(checkpoint: Path, rgb: np.ndarray, frames: int) -> str:
    """Forward time of the same checkpoint in this process (after the node stopped).

    Runs in a worker thread like the node's: on a busy machine torch's OpenMP team behaves very
    differently in the main thread (several times slower here), which is not what the node sees.
    """
    from flowclas_ros.runtime import create_backend

    backend = create_backend("torch", checkpoint)
    forward_ms, predict_ms, forward2_ms = [], [], []

    def measure() -> None:
        for i in range(frames + 2):
            start = time.perf_counter()
            (prediction,) = backend.predict([rgb])
            if i >= 2:
                predict_ms.append((time.perf_counter() - start) * 1000.0)
                forward_ms.append(prediction.model_ms)
        for _ in range(max(frames // 2, 3)):
            forward2_ms.append(sum(p.model_ms for p in backend.predict([rgb, rgb])))

    worker = threading.Thread(target=measure)
    worker.start()
    worker.join()
    backend.close()
    return (
        f"model-only in this process, worker thread (node stopped): forward p50 "
        f"{statistics.median(forward_ms):.1f} ms; predict() incl. resize/normalise p50 "
        f"{statistics.median(predict_ms):.1f} ms; batch-2 forward p50 {statistics.median(forward2_ms):.1f} ms"
    )


def run_client(client: Client, proc: subprocess.Popen, rgb: np.ndarray, args, subscribe_images: bool) -> None:
    label = "result + score_map/mask/overlay" if subscribe_images else "result only"
    forward_p50 = {}
    for cameras in (1, 2):
        rounds = sequential(
            client, rgb, cameras, args.frames if cameras == 1 else args.frames // 2, f"{label}{cameras}"
        )
        e2e = [r[0] for r in rounds]
        forward = [r[1] for r in rounds]
        ratios = [a / b for a, b in zip(e2e, forward)]
        inside = [r[3] / r[1] for r in rounds]
        forward_p50[cameras] = percentile(forward, 50)
        batched = sum(r[2] for r in rounds)
        what = "1 camera" if cameras == 1 else f"2 cameras ({batched}/{len(rounds)} rounds in one batch)"
        print(
            f"\n[{label}] {what} 640x480: end-to-end (publish -> last result) "
            f"p50 {percentile(e2e, 50):.1f} ms "
            f"p90 {percentile(e2e, 90):.1f}; model-only (the node's forward of those frames) p50 "
            f"{percentile(forward, 50):.1f} ms; overhead ratio p50 {percentile(ratios, 50):.3f} "
            f"p90 {percentile(ratios, 90):.3f} (target <= 1.05); inside the node (latency_ms / forward) "
            f"p50 {percentile(inside, 50):.3f} p90 {percentile(inside, 90):.3f}"
        )
        if cameras == 1:
            print(f"    {node_internal_latency(client)}")
    stats = overload(client, rgb, args.overload_s, args.rate2, proc.pid, cameras=2)
    counts = stats["per_camera"]
    print(
        f"\n[{label}] 2 cameras x {args.rate2:g} Hz for {args.overload_s:g} s: answers per camera {counts} "
        f"(min/max {min(counts) / max(max(counts), 1):.3f}, fair: >= 0.9 within 10 %); latency p50 "
        f"{stats['p50']:.1f} ms p99 {stats['p99']:.1f} max {stats['max']:.1f}; p99 / 2-camera forward p50 "
        f"{forward_p50[2]:.1f} ms = {stats['p99'] / forward_p50[2]:.2f} (target <= 2)"
    )
    if subscribe_images:
        return
    stats = overload(client, rgb, args.overload_s, args.rate, proc.pid)
    drop = 1.0 - stats["answered"] / max(stats["sent"], 1)
    print(
        f"\n[{label}] {stats['rate_hz']:.1f} Hz input for {args.overload_s:g} s: "
        f"{stats['answered']}/{stats['sent']} answered (drop rate {drop:.1%})\n"
        f"    latency p50 {stats['p50']:.1f} ms p99 {stats['p99']:.1f} ms max {stats['max']:.1f} ms; "
        f"forward p50 {stats['model_p50']:.1f} ms p99 {stats['model_p99']:.1f} ms; "
        f"p99 latency / p50 forward = {stats['p99'] / stats['model_p50']:.2f} (target <= 2)\n"
        f"    latency minus the frame's own forward: p50 {stats['beyond_p50']:.1f} ms "
        f"p99 {stats['beyond_p99']:.1f} ms\n"
        f"    node RSS start {stats['rss_start']:.0f} MiB end {stats['rss_end']:.0f} MiB "
        f"peak {stats['rss_peak']:.0f} MiB"
    )


def contention(client: Client, rgb: np.ndarray, args) -> None:
    """One camera, end to end, idle and beside a competitor, interleaved blocks (see the module doc)."""
    from contention import Competitor, cpu_header, interleaved, stats

    competitor = Competitor(args.contention)
    try:
        sequential(client, rgb, 1, 2, "warm")
        measure = lambda tag: [r[0] for r in sequential(client, rgb, 1, args.frames, tag)]  # noqa: E731
        times = interleaved(measure, competitor, args.rounds)
    finally:
        competitor.close()
    idle, busy = stats(times["idle"]), stats(times["busy"])
    target = {"spin": 2, "torch": 3}[args.contention]
    print(
        f"\n{cpu_header()}\nnode: {args.backend}, precision {args.precision}, num_threads {args.num_threads}"
    )
    print(
        f"| 1 camera 640x480, camera in -> result out | idle | beside {args.contention} "
        f"| busy/idle (<= {target}) |"
    )
    print("|---|---|---|---|")
    for q in ("p50", "p99"):
        print(f"| {q} ms | {idle[q]:.1f} | {busy[q]:.1f} | {busy[q] / idle[q]:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16, help="flow steps of the random checkpoint")
    parser.add_argument("--input-size", type=int, default=224, help="model input side")
    parser.add_argument("--frames", type=int, default=20, help="timed frames per sequential test")
    parser.add_argument("--overload-s", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=30.0, help="input rate of the overload test (Hz)")
    parser.add_argument("--rate2", type=float, default=10.0, help="per-camera rate of the 2-camera test (Hz)")
    parser.add_argument(
        "--camera-dds",
        choices=("flowclas", "default"),
        default="flowclas",
        help="Fast DDS profile of this process, the camera side (the node always uses its own)",
    )
    parser.add_argument(
        "--input-qos",
        choices=("reliable", "best_effort"),
        default="reliable",
        help="the node's input reliability (reliable: no frame lost on loopback, so no drop is counted)",
    )
    parser.add_argument("--contention", choices=("spin", "torch"), help="idle vs beside a competitor only")
    parser.add_argument("--rounds", type=int, default=4, help="--contention: interleaved idle/busy rounds")
    parser.add_argument("--backend", default="torch", help="the node's backend parameter")
    parser.add_argument("--precision", default="auto", help="the node's precision parameter")
    parser.add_argument("--num-threads", default="auto", help="the node's num_threads parameter")
    args = parser.parse_args()
    from flowclas_ros.ros.dds_profile import FASTDDS_ENVS, apply_dds_profile

    if args.camera_dds == "flowclas":
        camera_dds = apply_dds_profile()  # before this process's first participant
    else:
        camera_dds = "Fast DDS defaults"
        for name in FASTDDS_ENVS:  # the node picks its own profile (an inherited one would win)
            os.environ.pop(name, None)

    import torch

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (1 min) at start")
    print(f"torch threads: {torch.get_num_threads()} here; the node: num_threads {args.num_threads}")
    print(f"camera side (this process): {camera_dds}; node input QoS {args.input_qos}, depth 1")
    rgb = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="node_latency_") as tmp_dir:
        tmp = Path(tmp_dir)
        from flowclas_ros.model.random_checkpoint import random_checkpoint

        checkpoint = random_checkpoint(
            tmp / "ckpt",
            input_size=(args.input_size, args.input_size),
            steps=args.steps,
            proj_dim=None,
            threshold=0.5,
        )
        size = f"{args.input_size}x{args.input_size}"
        print(f"model: ViT-S/14 (random init) + {args.steps} flow steps, input {size}, CPU fp32")
        node_params = {"backend": args.backend, "precision": args.precision}
        node_params["num_threads"] = args.num_threads if args.num_threads == "auto" else int(args.num_threads)
        proc = start_node(tmp, checkpoint, args.input_qos, node_params)
        try:
            for subscribe_images in (False,) if args.contention else (False, True):
                client = Client(subscribe_images)
                try:
                    deadline = time.time() + 300
                    while client.publishers[1].get_subscription_count() == 0:
                        if proc.poll() is not None or time.time() > deadline:
                            raise SystemExit(f"node did not start:\n{(tmp / 'node.log').read_text()}")
                        time.sleep(0.1)
                    if args.contention:
                        contention(client, rgb, args)
                    else:
                        run_client(client, proc, rgb, args, subscribe_images)
                finally:
                    client.close()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not args.contention:
            print("\n" + model_only(checkpoint, rgb, args.frames))
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) at end")


if __name__ == "__main__":
    main()
