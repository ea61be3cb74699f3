"""The inference thread: newest frames of all cameras -> decode -> one batched forward -> publish.

Callbacks only store frames (:class:`~flowclas_ros.ros.frame_buffer.FrameSlots`);
everything costly happens here, off the executor thread. PyTorch / ONNX
Runtime release the GIL during the forward, so callbacks keep running.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flowclas_ros.data.image_codec import ImageDecodeError
from flowclas_ros.ros.conversions import to_rgb
from flowclas_ros.ros.frame_buffer import Frame, FrameSlots
from flowclas_ros.ros.oneline import one_line
from flowclas_ros.ros.outputs import CameraOutputs, FrameStage
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
    stage_3d: FrameStage | None = None  # the per-frame 3D stage, when any camera has depth


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

    def stop(self, timeout: float = 30.0) -> None:
        """Asks the loop to end, wakes it and waits for the current batch to finish."""
        self._stop_event.set()
        self.ctx.slots.close()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def run(self) -> None:  # noqa: D102 - threading.Thread API
        while not self._stop_event.is_set():
            settings = self.ctx.settings()
            frames = self.ctx.slots.take(settings.max_batch, _IDLE_WAIT_S, self._gather_s(settings))
            if frames and not self._stop_event.is_set():
                try:
                    self.process(frames)
                except Exception as err:  # noqa: BLE001 - keep serving; one line, not a traceback
                    if self._stop_event.is_set():
                        break  # publishers/context torn down under us during shutdown
                    self.ctx.logger.error(
                        f"processing a batch failed: {one_line(err)}",
                        throttle_duration_sec=THROTTLE_S,
                    )

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
        for (frame, rgb), prediction in zip(decoded, predictions):
            if not (np.isfinite(prediction.image_score) and np.isfinite(prediction.score_map).all()):
                ctx.stats[frame.camera].record_nonfinite()
                ctx.logger.error(
                    f"model output for {ctx.cameras[frame.camera].topic} contains NaN/inf; not published",
                    throttle_duration_sec=THROTTLE_S,
                )
                if ctx.stage_3d is not None:  # no scores: what it showed for this camera is stale
                    ctx.stage_3d.skip(frame.camera, frame.msg.header)
                continue
            stage_3d = ctx.stage_3d.for_frame(frame.camera, settings) if ctx.stage_3d is not None else None
            ctx.outputs[frame.camera].publish(
                frame.msg.header, rgb, prediction, settings, ctx.backend.name, stage_3d
            )
            latency_ms = (time.monotonic_ns() - frame.received_ns) / 1e6
            ctx.stats[frame.camera].record_result(latency_ms, prediction.model_ms)
