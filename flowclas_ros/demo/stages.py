"""The demo's stages 2-6: dataset, training, offline evaluation, live replay, ONNX Runtime check.

Each stage runs the project's own CLIs (``flowclas-make-dataset``, ``flowclas-train``,
``flowclas-eval``, ``flowclas-bag``, ``flowclas-export``) as subprocesses; the live
stage also starts ``anomaly_node`` and the recorder as processes
(:mod:`flowclas_ros.demo.live`), so this module imports no ROS. Stage 7, the report,
is in :mod:`flowclas_ros.demo.report`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowclas_ros.demo.live import RECORDER, NodeProcess, Recorder, write_node_params
from flowclas_ros.demo.runner import DemoError, Stage, run_cli, threads_env
from flowclas_ros.demo.settings import REPO_ROOT, DemoSettings, pick_threads
from flowclas_ros.demo.stamps import StampStore, code_digest, digest_files, stage_key

NODE_NAME = "/flowclas_demo/anomaly_node"
IMAGE_TOPIC = "/camera/image_raw"
MASK_TOPIC = "/camera/anomaly_mask"
CAMERA = "camera"  # the node's output namespace for IMAGE_TOPIC (flowclas_ros.ros.naming)
BAG_START_S = 1_700_000_000  # stamp of the bag's first frame
AGREEMENT_FILE = "agreement.json"
COMPARED_METRICS = ("auroc", "ap")


@dataclass
class DatasetParams:
    """The generated dataset (from the training config's ``data.generate`` unless overridden)."""

    seed: int
    n_train: int
    n_val: int
    n_test: int
    size: tuple[int, int]


def dataset_params(settings: DemoSettings) -> DatasetParams:
    """Dataset size: ``settings.dataset`` fields, else the training config's ``data.generate``."""
    from flowclas_ros.config_io import load
    from flowclas_ros.training.config import TrainConfig

    gen = load(TrainConfig, settings.config).data.generate
    ds = settings.dataset
    return DatasetParams(
        seed=gen.seed if ds.seed is None else ds.seed,
        n_train=gen.n_train if ds.n_train is None else ds.n_train,
        n_val=gen.n_val if ds.n_val is None else ds.n_val,
        n_test=gen.n_test if ds.n_test is None else ds.n_test,
        size=tuple(gen.size if ds.size is None else ds.size),
    )


def environment_digest() -> str:
    """Digest of the pinned requirements (a new torch or onnxruntime invalidates every stage)."""
    return digest_files(sorted((REPO_ROOT / "requirements").glob("*.txt")), REPO_ROOT)


def read_metrics(folder: Path) -> dict[str, Any]:
    """``folder/metrics.json`` of an evaluation."""
    path = folder / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DemoError(f"cannot read {path}: {err}") from err


def compare_backends(
    torch_metrics: dict[str, Any], ort_metrics: dict[str, Any], tolerance: float
) -> dict[str, Any]:
    """|torch - onnxruntime| of AUROC and AP (must be <= tolerance); FPR95 and image AUROC for information."""
    rows: dict[str, Any] = {}
    for key in (*COMPARED_METRICS, "fpr95", "image_auroc"):
        a, b = torch_metrics.get(key), ort_metrics.get(key)
        diff = abs(a - b) if a is not None and b is not None else None
        rows[key] = {"torch": a, "onnxruntime": b, "abs_diff": diff, "checked": key in COMPARED_METRICS}
    bad = [k for k in COMPARED_METRICS if rows[k]["abs_diff"] is None or not rows[k]["abs_diff"] <= tolerance]
    return {"tolerance": tolerance, "metrics": rows, "agree": not bad, "disagreeing": bad}


def thread_override(threads: int) -> list[str]:
    """``threads=N`` for flowclas-train when its config has that key (it sets torch's threads itself)."""
    from flowclas_ros.training.config import TrainConfig

    return [f"threads={threads}"] if "threads" in TrainConfig.__dataclass_fields__ else []


class DemoStages:
    """Builds the stages of one demo run; ``threads`` is picked before each stage unless fixed."""

    def __init__(self, settings: DemoSettings, log: Callable[[str], None] = print) -> None:
        self.s = settings
        self.stamps = StampStore(settings.stamps)
        self.log = log
        self.env = environment_digest()
        self.threads_used: dict[str, int] = {}

    def _threads(self, stage: str) -> int:
        threads = self.s.threads or pick_threads()
        self.threads_used[stage] = threads
        self.log(f"[demo]   torch threads: {threads} (of {os.cpu_count()} CPUs)")
        return threads

    def key(self, stage: str, roots: list[str], upstream: list[str], **params: Any) -> str:
        """Input hash of ``stage``: parameters, its code closure, the environment, upstream tokens."""
        tokens = {name: self.stamps.token(name) for name in upstream}
        return stage_key(stage=stage, env=self.env, code=code_digest(roots), upstream=tokens, **params)

    def _progress(self) -> list[str]:
        return [] if self.s.progress else ["--no-progress"]

    # ------------------------------------------------------------------ stages

    def all(self) -> list[Stage]:
        """Stages 2-6 in order."""
        return [self.data(), self.train(), self.eval_torch(), self.live(), self.onnx()]

    def data(self) -> Stage:
        """2: the embedded synthetic rover-scene dataset."""
        params = dataset_params(self.s)
        tmp = self.s.out / "data.partial"

        def run() -> None:
            cmd = ["flowclas-make-dataset", "--out", tmp, "--seed", params.seed]
            cmd += ["--n-train", params.n_train, "--n-val", params.n_val, "--n-test", params.n_test]
            cmd += ["--size", *params.size, *([] if self.s.progress else ["--quiet"])]
            run_cli(cmd, threads=1, what="dataset generation")
            tmp.replace(self.s.data)  # only a complete dataset gets the final name

        return Stage(
            "data",
            f"generate the synthetic rover-scene dataset ({params.n_train} train / {params.n_val} val / "
            f"{params.n_test} test frames, {params.size[0]}x{params.size[1]})",
            key=lambda: self.key(
                "data", ["flowclas_ros.synthetic.make_dataset_cli"], [], params=params.__dict__
            ),
            outputs=[self.s.data / split / "images" for split in ("train", "val", "test")],
            run=run,
            clean=[tmp, self.s.data],
        )

    def train(self) -> Stage:
        """3: train with the demo config; flowclas-train calibrates the threshold on val."""
        overrides = [
            f"data.root={self.s.data.resolve()}",
            "data.generate.enabled=false",
            *self.s.train_overrides,
        ]

        def run() -> None:
            threads = self._threads("train")
            cmd = ["flowclas-train", "--config", self.s.config, "--out", self.s.train_dir]
            for item in overrides + (thread_override(threads) if self.s.threads == 0 else []):
                cmd += ["--set", item]
            run_cli(cmd + self._progress(), threads=threads, what="training")

        return Stage(
            "train",
            f"train with {self.s.config.name} and calibrate the threshold",
            key=lambda: self.key(
                "train",
                ["flowclas_ros.training.cli"],
                ["data"],
                config=self.s.config.read_text(),
                overrides=overrides[1:],  # data.root's absolute path must not matter
            ),
            outputs=[self.s.checkpoint / "config.json", self.s.checkpoint / "flow.safetensors"],
            run=run,
            clean=[self.s.train_dir],
            resumable=True,
        )

    def eval_torch(self) -> Stage:
        """4: offline evaluation of the test split (torch backend)."""

        def run() -> None:
            threads = self._threads("eval_torch")
            cmd = ["flowclas-eval", "--checkpoint", self.s.checkpoint, "--data", self.s.test_split]
            cmd += ["--out", self.s.eval_torch, "--threads", threads, *self._progress()]
            run_cli(cmd, threads=threads, what="offline evaluation (torch)")

        return Stage(
            "eval_torch",
            "evaluate the held-out test split offline (torch backend)",
            key=lambda: self.key("eval_torch", ["flowclas_ros.evaluation.cli"], ["train"]),
            outputs=[self.s.eval_torch / "metrics.json"],
            run=run,
            clean=[self.s.eval_torch],
        )

    def live(self) -> Stage:
        """5: the test split as a rosbag, replayed live through the real node; its outputs are recorded."""
        bag, recorded = self.s.live / "test_bag", self.s.live / "recorded"

        def run() -> None:
            threads = self._threads("live")
            self.s.live.mkdir(parents=True, exist_ok=True)
            cmd = ["flowclas-bag", "--data", self.s.test_split, "--out", bag, "--rate", self.s.bag_rate_hz]
            cmd += ["--start-time", BAG_START_S, "--image-topic", IMAGE_TOPIC, "--mask-topic", MASK_TOPIC]
            run_cli(cmd, threads=1, what="writing the test bag")
            params = write_node_params(self.s.live / "node_params.yaml", self.s.checkpoint, IMAGE_TOPIC)
            node = NodeProcess(NODE_NAME, params, self.s.live / "node.log", threads_env(threads))
            recorder = None
            try:
                recorder = Recorder(recorded, NODE_NAME, CAMERA, self.s.live / "recorder.log")
                waited = recorder.wait_ready(node, timeout_s=300.0)
                self.log(f"[demo]   anomaly_node up and recorded ({waited:.1f} s); replaying the bag")
                cmd = ["flowclas-eval", "--live", "--attach", "--node-name", NODE_NAME, "--bag", bag]
                cmd += ["--checkpoint", self.s.checkpoint, "--image-topic", IMAGE_TOPIC]
                cmd += ["--mask-topic", MASK_TOPIC, "--rate-factor", self.s.rate_factor]
                run_cli(cmd + ["--out", self.s.live, *self._progress()], threads=1, what="live replay")
                node.check_alive()
                time.sleep(1.5)  # one more /diagnostics period: the final counts get recorded
            finally:
                node_rc = node.stop()
                recorder_rc = recorder.stop() if recorder is not None else 0
            if node_rc != 0:
                raise DemoError(f"anomaly_node exited with code {node_rc}; log: {self.s.live / 'node.log'}")
            if recorder_rc != 0:
                raise DemoError(
                    f"the recorder exited with code {recorder_rc}; log: {self.s.live / 'recorder.log'}"
                )

        return Stage(
            "live",
            f"write the test split to a rosbag and replay it live through anomaly_node "
            f"({self.s.bag_rate_hz:g} Hz x {self.s.rate_factor:g}), recording its outputs",
            key=lambda: self.key(
                "live",
                [
                    "flowclas_ros.evaluation.cli",
                    "flowclas_ros.ros.node",
                    "flowclas_ros.data.bags.cli",
                    "flowclas_ros.demo.live",
                ],
                ["train"],
                recorder=digest_files([RECORDER], REPO_ROOT),
                rate=self.s.bag_rate_hz,
                rate_factor=self.s.rate_factor,
            ),
            outputs=[self.s.live / "metrics.json", recorded / "metadata.yaml"],
            run=run,
            clean=[self.s.live],
        )

    def onnx(self) -> Stage:
        """6: export to ONNX, evaluate with ONNX Runtime, check the metrics agree with torch."""

        def run() -> None:
            threads = self._threads("onnx")
            self.s.onnx_model.parent.mkdir(parents=True, exist_ok=True)
            cmd = ["flowclas-export", "--checkpoint", self.s.checkpoint, "--format", "onnx"]
            run_cli(cmd + ["--out", self.s.onnx_model], threads=threads, what="ONNX export")
            cmd = ["flowclas-eval", "--backend", "onnxruntime", "--checkpoint", self.s.onnx_model]
            cmd += ["--data", self.s.test_split, "--out", self.s.eval_ort, *self._progress()]
            run_cli(cmd, threads=threads, what="offline evaluation (onnxruntime)")
            check = compare_backends(
                read_metrics(self.s.eval_torch), read_metrics(self.s.eval_ort), self.s.ort_tolerance
            )
            (self.s.eval_ort / AGREEMENT_FILE).write_text(json.dumps(check, indent=2) + "\n")
            if not check["agree"]:
                diffs = ", ".join(f"{k} {check['metrics'][k]['abs_diff']}" for k in check["disagreeing"])
                raise DemoError(
                    f"ONNX Runtime metrics differ from torch by more than {self.s.ort_tolerance:g}: {diffs} "
                    f"(see {self.s.eval_ort / AGREEMENT_FILE})"
                )
            self.log(
                "[demo]   onnxruntime agrees with torch: "
                + ", ".join(f"|d{k}| {check['metrics'][k]['abs_diff']:.2e}" for k in COMPARED_METRICS)
            )

        return Stage(
            "onnx",
            "export to ONNX and re-evaluate with ONNX Runtime (metrics must agree with torch)",
            key=lambda: self.key(
                "onnx",
                ["flowclas_ros.export", "flowclas_ros.evaluation.cli"],
                ["train", "eval_torch"],
                tolerance=self.s.ort_tolerance,
            ),
            outputs=[self.s.onnx_model, self.s.eval_ort / "metrics.json", self.s.eval_ort / AGREEMENT_FILE],
            run=run,
            clean=[self.s.onnx_model.parent, self.s.eval_ort],
        )
