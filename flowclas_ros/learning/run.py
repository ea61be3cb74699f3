"""One field-learning run, phase by phase (no ROS): collect, train, validate, export, swap.

The ROS adapter (:mod:`flowclas_ros.ros.learn_action`) supplies live collection and the swap
as callables, reads :attr:`LearnRun.state` for feedback and sets :attr:`LearnRun.stop` to
cancel. Whatever happens, the node keeps serving its model unless the gate passed and the
swap succeeded, and the run directory (``learn_dir/runs/<id>``) is kept with ``run.json``.
"""

from __future__ import annotations

import errno
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flowclas_ros.learning import child
from flowclas_ros.learning.frames import Budget, FrameRecorder, RateLimiter, copy_bag_frames, pick_bag_topic
from flowclas_ros.learning.gate import Figures, decide
from flowclas_ros.learning.layout import RunDir, read_json
from flowclas_ros.runtime.engine_cache import CACHE_ENV

PHASES = ("collecting", "training", "validating", "exporting", "swapping")
MIN_FRAMES = 5
"""At least this many frames (one in five is held out, so at least one held-out frame)."""


@dataclass(frozen=True)
class LearnGoal:
    """The action goal's fields (see ``action/LearnNominal.action``)."""

    cameras: list[str]
    duration_s: float
    max_frames: int
    max_rate_hz: float
    steps: int
    bag: str


@dataclass(frozen=True)
class ServingModel:
    """What the node serves when the run starts, and how it would judge a new model."""

    kind: str  # backend kind
    path: Path  # checkpoint directory (or exported file)
    identity: str
    threshold: float  # the pixel threshold in effect
    follow_checkpoint: bool  # the node's threshold is the checkpoint's (then the new one's applies)
    export_options: dict  # for ONNX Runtime / OpenVINO: input_size, dynamic_batch of the node's backend


@dataclass
class RunState:
    """Live progress, read by the feedback publisher (plain fields: a torn read is harmless)."""

    phase: str = "collecting"
    frames_collected: int = 0
    step: int = 0
    total_steps: int = 0
    loss: float = math.nan
    eta_s: float = math.nan


@dataclass
class Outcome:
    """The action result's fields."""

    success: bool = False
    message: str = ""
    checkpoint: str = ""
    identity: str = ""
    frames_used: int = 0
    frames_train: int = 0
    frames_val: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    false_alarm_rate_before: float = math.nan
    false_alarm_rate_after: float = math.nan
    ap_before: float = math.nan
    ap_after: float = math.nan
    threshold: float = math.nan
    image_threshold: float = math.nan
    run_dir: str = ""


class RunFailed(RuntimeError):
    """A phase failed; the message is the result's one line."""


class LearnRun:
    """Runs a goal to an :class:`Outcome` (see the module docstring).

    Args:
        learn_dir: The node's learn directory.
        goal: The goal.
        serving: The serving model.
        collect_live: ``(recorder, budget, limiter, stop) -> None`` that records live frames
            until the budget is spent or ``stop`` is set (raises on failure).
        live_msgtype: The message type the live collector records.
        swap: ``(checkpoint path, reason) -> message`` that swaps the model in (raises on failure).
        threads: Thread limit of the children (``learn_threads``).
        nice: nice increment of the children (``learn_nice``).
        ap_margin: The gate's AP margin (``learn_ap_margin``).
    """

    def __init__(
        self,
        learn_dir: Path,
        goal: LearnGoal,
        serving: ServingModel,
        *,
        collect_live: Callable[..., None],
        live_msgtype: str,
        swap: Callable[[Path, str], str],
        threads: int,
        nice: int,
        ap_margin: float,
    ):
        self.learn_dir, self.goal, self.serving = Path(learn_dir), goal, serving
        self._collect_live, self._live_msgtype, self._swap = collect_live, live_msgtype, swap
        self.threads, self.nice, self.ap_margin = int(threads), int(nice), float(ap_margin)
        self.state = RunState()
        self.stop = threading.Event()
        self.stop_reason = "cancelled"
        self.run_dir: RunDir | None = None
        self.outcome = Outcome()

    def request_stop(self, reason: str) -> None:
        """Stops the run at the next check (children are terminated); ``reason`` goes in the message."""
        self.stop_reason = reason
        self.stop.set()

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise child.Cancelled(self.stop_reason)

    def _child(self, command: list[str], log: Path, poll=None) -> None:
        child.run_child(
            command, log, threads=self.threads, nice=self.nice, stop=self.stop,
            why_stopped=lambda: self.stop_reason, poll=poll,
            env={CACHE_ENV: str(self.learn_dir / "exports")},  # caches stay inside learn_dir too
        )  # fmt: skip

    # ------------------------------------------------------------------ the run
    def run(self) -> Outcome:
        """Runs every phase; never raises (failures become the outcome's message)."""
        out = self.outcome
        try:
            if self.serving.path.is_file() and self.serving.path.suffix != "":
                raise RunFailed(
                    f"the node serves an exported model ({self.serving.path}); learning fine-tunes a "
                    "checkpoint directory: configure the node with the checkpoint (its backend exports it)"
                )
            self.run_dir = RunDir(self.learn_dir)
            out.run_dir = str(self.run_dir.path)
            self._record("running")
            topic = self._timed("collecting", self._collect)
            checkpoint = self._timed("training", lambda: self._train(topic))
            self._timed("validating", lambda: self._validate(checkpoint, topic))
            self._timed("exporting", lambda: self._export(checkpoint))
            self._check_stop()
            message = self._timed(
                "swapping", lambda: self._swap(checkpoint, f"learn_nominal run {self.run_dir.id}")
            )
            out.success, out.message = True, f"{message}; run {out.run_dir}"
        except child.Cancelled as stop:
            out.message = (
                f"{stop} during {self.state.phase}: the node stays on model {self.serving.identity[:12]}; "
                f"partial run kept in {out.run_dir or self.learn_dir}"
            )
        except (RunFailed, child.ChildError) as err:
            out.message = (
                f"{self.state.phase} failed: {err}; the node keeps model {self.serving.identity[:12]}"
            )
            if out.run_dir:
                out.message += f"; run kept in {out.run_dir}"
        except (OSError, sqlite3.OperationalError) as err:  # the bags are sqlite3: "database or disk is full"
            full = getattr(err, "errno", None) == errno.ENOSPC or "disk is full" in str(err)
            what = "disk full" if full else f"file error ({type(err).__name__}: {err})"
            out.message = (
                f"{self.state.phase} failed: {what} under {self.learn_dir}; the node keeps model "
                f"{self.serving.identity[:12]}; data written so far is kept"
            )
        except Exception as err:  # noqa: BLE001 - never take the node down
            out.message = (
                f"{self.state.phase} failed: {type(err).__name__}: {err}; the node keeps model "
                f"{self.serving.identity[:12]}"
            )
        out.message = " ".join(out.message.split())
        self._record("succeeded" if out.success else ("cancelled" if self.stop.is_set() else "failed"))
        return out

    def _timed(self, phase: str, fn):
        self._check_stop()
        self.state.phase, self.state.eta_s = phase, math.nan
        start = time.monotonic()
        try:
            return fn()
        finally:
            self.outcome.seconds[phase] = time.monotonic() - start

    def _record(self, status: str) -> None:
        if self.run_dir is None:
            return
        try:
            serving = {"path": str(self.serving.path), "identity": self.serving.identity}
            self.run_dir.record(
                {
                    "status": status,
                    "goal": asdict(self.goal),
                    "serving": serving,
                    "outcome": asdict(self.outcome),
                }
            )
        except OSError:
            pass  # a full disk must not hide the run's real message

    # ------------------------------------------------------------------ phases
    def _collect(self) -> str:
        run, goal = self.run_dir, self.goal
        budget = Budget.from_goal(goal.duration_s, goal.max_frames)
        limiter = RateLimiter(goal.max_rate_hz)
        if goal.bag:
            bag = Path(goal.bag).expanduser()
            source_topic, msgtype = pick_bag_topic(bag, list(goal.cameras))
        else:
            msgtype = self._live_msgtype
        recorder = FrameRecorder(run.frames, run.heldout, msgtype)
        try:
            if goal.bag:
                copy_bag_frames(bag, source_topic, recorder, budget, limiter, self.stop.is_set)
            else:
                self._collect_live(recorder, budget, limiter, self.stop, self.state)
        finally:
            recorder.close()
            self.state.frames_collected = recorder.total
            self.outcome.frames_used = recorder.total
            self.outcome.frames_train, self.outcome.frames_val = recorder.n_train, recorder.n_heldout
        self._check_stop()
        if recorder.total < MIN_FRAMES:
            raise RunFailed(f"only {recorder.total} frames collected; at least {MIN_FRAMES} are needed")
        return recorder.topic

    def _train(self, topic: str) -> Path:
        run = self.run_dir
        self.state.total_steps = int(self.goal.steps) or _recipe_steps()
        command = child.train_command(
            self.serving.path, run.frames, topic, self.goal.steps, run.train, self.threads
        )
        start = time.monotonic()

        def poll() -> None:
            progress = child.read_progress(run.train / "log.csv")
            self.state.step, self.state.loss = progress.step, progress.loss
            if not self.state.total_steps:
                self.state.total_steps = _recipe_steps(run.train / "config.yaml")
            if progress.step and self.state.total_steps:
                per_step = (time.monotonic() - start) / progress.step
                self.state.eta_s = per_step * max(self.state.total_steps - progress.step, 0)

        self._child(command, run.train_log, poll)
        if not (run.checkpoint / "config.json").is_file():
            raise RunFailed(f"flowclas-train ended without a checkpoint in {run.checkpoint}")
        from flowclas_ros.model.checkpoint_meta import read_checkpoint_identity

        identity = read_checkpoint_identity(run.checkpoint)
        self.outcome.checkpoint, self.outcome.identity = str(run.checkpoint), identity.sha256
        self.outcome.threshold = _nan_if_none(identity.threshold)
        self.outcome.image_threshold = _nan_if_none(identity.image_threshold)
        return run.checkpoint

    def _validate(self, checkpoint: Path, topic: str) -> None:
        run, out, serving = self.run_dir, self.outcome, self.serving
        after = out.threshold if serving.follow_checkpoint else serving.threshold
        if not math.isfinite(after):
            raise RunFailed(f"the new checkpoint {checkpoint} has no calibrated threshold")
        before_kind = "torch" if serving.path.is_dir() else serving.kind
        command = [
            child.sys.executable,
            "-m",
            "flowclas_ros.learning.validate",
            "--heldout",
            str(run.heldout),
        ]
        command += ["--topic", topic, "--out", str(run.validation)]
        command += ["--model", f"before:{before_kind}:{serving.threshold!r}:{serving.path}"]
        command += ["--model", f"after:torch:{after!r}:{checkpoint}"]
        self._child(command, run.path / "validate.log")
        models = read_json(run.validation).get("models", {})
        before, new = (
            Figures(**{k: float(models[n][k]) for k in ("false_alarm_rate", "ap")})
            for n in ("before", "after")
        )
        out.false_alarm_rate_before, out.ap_before = before.false_alarm_rate, before.ap
        out.false_alarm_rate_after, out.ap_after = new.false_alarm_rate, new.ap
        decision = decide(before, new, self.ap_margin)
        if not decision.passed:
            raise RunFailed(f"{decision.reason}; not swapped")

    def _export(self, checkpoint: Path) -> None:
        kind = self.serving.kind
        if kind == "tensorrt":
            from flowclas_ros.learning.swap import _cuda_present

            if not _cuda_present():
                raise RunFailed(
                    f"this node runs TensorRT and cannot rebuild its engine without a CUDA GPU; the gated "
                    f"checkpoint is {checkpoint}: build its engine where a GPU is and call ~/load_model"
                )
            return  # the TensorRT backend builds (and caches) the engine while the node loads it
        if kind not in ("onnxruntime", "openvino"):
            return
        from flowclas_ros.runtime.engine_cache import onnx_cache_path

        options = self.serving.export_options
        size = options.get("input_size") or tuple(_config_size(checkpoint))
        target = onnx_cache_path(
            self.learn_dir / "exports", self.outcome.identity, size, bool(options.get("dynamic_batch"))
        )
        if target.is_file():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        command = [child.sys.executable, "-m", "flowclas_ros.export", "--checkpoint", str(checkpoint)]
        command += ["--format", "onnx", "--out", str(target), "--input-size", str(size[0]), str(size[1])]
        if options.get("dynamic_batch"):
            command.append("--dynamic-batch")
        self._child(command, self.run_dir.path / "export.log")


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _config_size(checkpoint: Path) -> tuple[int, int]:
    from flowclas_ros.model.checkpoint_meta import read_checkpoint_identity

    return tuple(read_checkpoint_identity(checkpoint).config.preprocess.input_size)


def _recipe_steps(config: Path | None = None) -> int:
    """``steps`` of the resolved run config, or of the site recipe (0 when unknown)."""
    import yaml

    try:
        path = config if config is not None else child.site_recipe()
        data = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else {}
        return int((data or {}).get("steps") or 0)
    except (OSError, ValueError, TypeError, child.ChildError, yaml.YAMLError):
        return 0
