"""The inference thread: newest frames of all cameras -> decode -> one batched forward -> publish.

Callbacks only store frames (:class:`~flowclas_ros.ros.frame_buffer.FrameSlots`);
everything costly happens here, off the executor thread. PyTorch / ONNX
Runtime release the GIL during the forward, so callbacks keep running.

Each frame's result goes out as soon as its mask and regions are known; the image
outputs (score map, mask, overlay) are built and sent by a second thread
(:class:`ImageOutputThread`) while the next forward runs, so they add neither to the
result's latency nor to the next frame's wait. That thread keeps one pending frame
per camera (newest wins), like the input side: it never queues.

The model's Python objects (~400k for ViT-S + flow) are frozen out of the garbage
collector at start (:func:`gc.freeze`): one full collection over them took ~0.75 s on a
loaded 2-core machine, holding the GIL and so stalling every thread. CPython runs one
rarely (when new long-lived objects reach 25 % of the old), but when it does, the
frames of every camera wait; frozen, it costs microseconds.
"""

from __future__ import annotations

import functools
import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from flowclas_ros.data.images.codec import ImageDecodeError
from flowclas_ros.ros.conversions import to_rgb
from flowclas_ros.ros.frame_buffer import Frame, FrameSlots
from flowclas_ros.ros.frame_stages import FrameCall, FrameStage, guarded
from flowclas_ros.ros.oneline import one_line
from flowclas_ros.ros.outputs import CameraOutputs
from flowclas_ros.ros.settings import CameraInput, RuntimeSettings
from flowclas_ros.ros.stats import CameraStats
from flowclas_ros.runtime.base import InferenceBackend

THROTTLE_S = 5.0
_IDLE_WAIT_S = 0.25


@dataclass
class WorkerContext:
    """What the worker needs from the node (all thread-safe to use from the worker)."""

    backend: InferenceBackend
    cameras: list[CameraInput]
    outputs: list[CameraOutputs]
    stats: list[CameraStats]
    slots: FrameSlots
    settings: Callable[[], RuntimeSettings]  # the current runtime snapshot
    max_image_side: int
    logger: object  # rclpy logger
    on_model_error: Callable[[str], None]
    stages: list[FrameStage] = field(default_factory=list)  # per frame, in order (3D first)


def _append_job(jobs: list[tuple[int, Callable[[], None]]], camera: int, job: Callable[[], None]) -> None:
    jobs.append((camera, job))


class ImageOutputThread(threading.Thread):
    """Runs each camera's deferred image publishing; one pending job per camera, the newest.

    Args:
        num_cameras: Number of cameras (one slot each).
        logger: rclpy logger for failures (one line, throttled).
    """

    def __init__(self, num_cameras: int, logger: object):
        super().__init__(name="flowclas_image_outputs", daemon=True)
        self._cond = threading.Condition()
        self._jobs: list[Callable[[], None] | None] = [None] * num_cameras
        self._next = 0
        self._closed = False
        self._logger = logger
        self.replaced = 0  # image outputs of a frame dropped because a newer one came first

    def submit(self, camera: int, job: Callable[[], None]) -> None:
        """Stores ``job`` as ``camera``'s pending image publishing (replacing an older one)."""
        with self._cond:
            if self._closed:
                return
            if self._jobs[camera] is not None:
                self.replaced += 1
            self._jobs[camera] = job
            self._cond.notify()

    def _take(self) -> Callable[[], None] | None:
        with self._cond:
            self._cond.wait_for(lambda: self._closed or any(j is not None for j in self._jobs))
            if self._closed:
                return None
            count = len(self._jobs)
            for offset in range(count):  # round robin: no camera's images starve
                index = (self._next + offset) % count
                job = self._jobs[index]
                if job is not None:
                    self._jobs[index] = None
                    self._next = (index + 1) % count
                    return job
            return None

    def run(self) -> None:  # noqa: D102 - threading.Thread API
        while (job := self._take()) is not None:
            try:
                job()
            except Exception as err:  # noqa: BLE001 - keep serving; one line, not a traceback
                if self._closed:
                    break
                self._logger.error(
                    f"publishing image outputs failed: {one_line(err)}", throttle_duration_sec=THROTTLE_S
                )

    def stop(self, timeout: float = 10.0) -> None:
        """Drops pending jobs, lets the running one finish and ends the thread."""
        with self._cond:
            self._closed = True
            self._jobs = [None] * len(self._jobs)
            self._cond.notify_all()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)


class InferenceWorker(threading.Thread):
    """Runs until :meth:`stop`; one iteration = one batched forward over the cameras with a frame."""

    def __init__(self, ctx: WorkerContext):
        super().__init__(name="flowclas_inference", daemon=True)
        self.ctx = ctx
        self._stop_event = threading.Event()
        # Batch statistics for diagnostics (written by this thread only).
        self.batches = 0
        self.batched_frames = 0
        self.largest_batch = 0
        self._last_forward_s: float | None = None
        self.images = ImageOutputThread(len(ctx.cameras), ctx.logger)
        self._frozen = False
        # Held for a whole batch: a model swap (:meth:`between_batches`) waits for it, so no
        # batch sees a half-swapped backend or thresholds of another model.
        self._batch_lock = threading.Lock()

    def start(self) -> None:
        """Freezes the model's objects out of the garbage collector, then starts both threads."""
        gc.collect()  # what is garbage now must not be frozen
        gc.freeze()
        self._frozen = True
        self.images.start()
        super().start()

    def stop(self, timeout: float = 30.0) -> None:
        """Asks the loop to end, wakes it and waits for the current batch to finish."""
        self._stop_event.set()
        self.ctx.slots.close()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        self.images.stop()
        if self._frozen:  # so that releasing the model can collect it again
            gc.unfreeze()
            self._frozen = False

    def run(self) -> None:  # noqa: D102 - threading.Thread API
        while not self._stop_event.is_set():
            settings = self.ctx.settings()
            frames = self.ctx.slots.take(settings.max_batch, _IDLE_WAIT_S, self._gather_s(settings))
            if frames and not self._stop_event.is_set():
                try:
                    with self._batch_lock:
                        self.process(frames)
                except Exception as err:  # noqa: BLE001 - keep serving; one line, not a traceback
                    if self._stop_event.is_set():
                        break  # publishers/context torn down under us during shutdown
                    self.ctx.logger.error(
                        f"processing a batch failed: {one_line(err)}",
                        throttle_duration_sec=THROTTLE_S,
                    )

    def between_batches(self, apply: Callable[[], None]) -> None:
        """Runs ``apply`` while no batch is in flight (waits for the current one, at most one forward)."""
        with self._batch_lock:
            apply()

    def _gather_s(self, settings: RuntimeSettings) -> float:
        """How long to wait for the other cameras: ``batch_wait_ms``, at most one forward.

        Waiting longer than a forward never pays: scoring the frames one after the other would
        have finished by then.
        """
        wait_s = settings.batch_wait_ms / 1000.0
        return wait_s if self._last_forward_s is None else min(wait_s, self._last_forward_s)

    def _decode(self, frames: list[Frame]) -> list[tuple[Frame, np.ndarray]]:
        decoded = []
        for frame in frames:
            try:
                decoded.append((frame, to_rgb(frame.msg, max_side=self.ctx.max_image_side)))
            except ImageDecodeError as err:
                self.ctx.stats[frame.camera].record_malformed()
                camera = self.ctx.cameras[frame.camera]
                self.ctx.logger.warning(
                    f"skipping malformed frame on {camera.topic}: {err}", throttle_duration_sec=THROTTLE_S
                )
        return decoded

    def _stage_failed(self, stage: FrameStage, camera: int, err: BaseException) -> None:
        """One stage raised on one frame: counted and logged; the frame's other outputs still go out."""
        self.ctx.stats[camera].record_stage_error()
        self.ctx.logger.error(
            f"frame stage {type(stage).__name__} failed on {self.ctx.cameras[camera].topic}: {one_line(err)}",
            throttle_duration_sec=THROTTLE_S,
        )

    def _run_stage(self, stage: FrameStage, camera: int, hook: Callable[[], object]) -> object:
        try:
            return hook()
        except Exception as err:  # noqa: BLE001 - a stage must never stop the worker
            self._stage_failed(stage, camera, err)
            return None

    def _frame_calls(self, camera: int, settings: RuntimeSettings) -> list[FrameCall]:
        """This frame's call of each stage that has one, each guarded (:meth:`_stage_failed`)."""
        calls = []
        for stage in self.ctx.stages:
            call = self._run_stage(stage, camera, functools.partial(stage.for_frame, camera, settings))
            if call is not None:
                calls.append(guarded(call, functools.partial(self._stage_failed, stage, camera)))
        return calls

    def process(self, frames: list[Frame]) -> None:
        """Decodes ``frames``, scores them in one forward and publishes each camera's outputs."""
        ctx = self.ctx
        settings = ctx.settings()  # one snapshot per batch: consistent thresholds
        decoded = self._decode(frames)
        if not decoded:
            return
        try:
            predictions = ctx.backend.predict([rgb for _, rgb in decoded])
        except Exception as err:  # noqa: BLE001 - a model failure must not kill the node
            reason = one_line(err)
            ctx.on_model_error(reason)
            ctx.logger.error(f"model forward failed: {reason}", throttle_duration_sec=THROTTLE_S)
            return
        self._last_forward_s = sum(p.model_ms for p in predictions) / 1000.0
        self.batches += 1
        self.batched_frames += len(decoded)
        self.largest_batch = max(self.largest_batch, len(decoded))
        # Image jobs start after the batch's last result is out: started earlier, the image
        # thread took the GIL and a core from the next camera's mask and regions.
        image_jobs: list[tuple[int, Callable[[], None]]] = []
        for (frame, rgb), prediction in zip(decoded, predictions):
            if not (np.isfinite(prediction.image_score) and np.isfinite(prediction.score_map).all()):
                ctx.stats[frame.camera].record_nonfinite()
                ctx.logger.error(
                    f"model output for {ctx.cameras[frame.camera].topic} contains NaN/inf; not published",
                    throttle_duration_sec=THROTTLE_S,
                )
                for stage in ctx.stages:  # no scores: what a stage showed for this camera is stale
                    skip = functools.partial(stage.skip, frame.camera, frame.msg.header)
                    self._run_stage(stage, frame.camera, skip)
                continue
            ctx.outputs[frame.camera].publish(
                frame.msg.header,
                rgb,
                prediction,
                settings,
                ctx.backend.name,
                self._frame_calls(frame.camera, settings),
                received_ns=frame.received_ns,
                image_sink=functools.partial(_append_job, image_jobs, frame.camera),
            )
            latency_ms = (time.monotonic_ns() - frame.received_ns) / 1e6
            ctx.stats[frame.camera].record_result(latency_ms, prediction.model_ms)
        for camera, job in image_jobs:
            self.images.submit(camera, job)
