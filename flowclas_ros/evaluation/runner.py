"""Offline evaluation: stream frames from any source through an inference backend."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tqdm import tqdm

from flowclas_ros.evaluation.accumulator import EvalAccumulator
from flowclas_ros.evaluation.frames import EvalFrame
from flowclas_ros.runtime.base import InferenceBackend, Prediction


@dataclass
class RunTiming:
    """Wall-clock split of an offline run.

    Attributes:
        n_frames: Frames evaluated.
        wall_s: Whole loop: reading/decoding, prediction, metrics.
        predict_s: Inside ``backend.predict`` (preprocess, model, resize back).
        model_s: Model forward only (sum of ``Prediction.model_ms``).
    """

    n_frames: int = 0
    wall_s: float = 0.0
    predict_s: float = 0.0
    model_s: float = 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        """Throughput numbers for metrics.json."""
        rate = self.n_frames / self.wall_s if self.wall_s > 0 else None
        return {
            "n_frames": self.n_frames,
            "wall_s": self.wall_s,
            "images_per_s": rate,
            "predict_s": self.predict_s,
            "model_s": self.model_s,
            "model_fraction": self.model_s / self.wall_s if self.wall_s > 0 else None,
            "predict_fraction": self.predict_s / self.wall_s if self.wall_s > 0 else None,
        }


def evaluate_frames(
    frames: Iterable[EvalFrame],
    backend: InferenceBackend,
    accumulator: EvalAccumulator,
    *,
    batch_size: int = 1,
    total: int | None = None,
    progress: bool = True,
    on_result: Callable[[EvalFrame, Prediction], None] | None = None,
) -> RunTiming:
    """Predict every frame in batches and add the results to ``accumulator``.

    The recorded per-frame latency is the ``backend.predict`` time of its batch
    divided by the batch size (so with ``batch_size=1`` it is the frame's own
    preprocess + model + resize time); the model time is ``Prediction.model_ms``.

    Args:
        frames: Frame source (streamed; at most ``batch_size`` frames held).
        backend: Any :class:`InferenceBackend`.
        accumulator: Receives the results.
        batch_size: Frames per ``predict`` call.
        total: Expected number of frames, for the progress bar.
        progress: Show a tqdm bar on stderr.
        on_result: Called with each frame and its prediction (e.g. the label-free review's rows).

    Returns:
        Timing of the run.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    timing = RunTiming()
    start = time.perf_counter()
    batch: list[EvalFrame] = []
    with tqdm(total=total, desc="evaluating", unit="img", disable=not progress, leave=False) as bar:

        def run_batch() -> None:
            t0 = time.perf_counter()
            predictions = backend.predict([f.image for f in batch])
            elapsed = time.perf_counter() - t0
            timing.predict_s += elapsed
            per_frame_ms = elapsed * 1000.0 / len(batch)
            for frame, pred in zip(batch, predictions):
                timing.model_s += pred.model_ms / 1000.0
                accumulator.add(
                    frame.name,
                    frame.image,
                    frame.mask,
                    pred.score_map,
                    pred.image_score,
                    latency_ms=per_frame_ms,
                    model_ms=pred.model_ms,
                )
                if on_result is not None:
                    on_result(frame, pred)
            timing.n_frames += len(batch)
            bar.update(len(batch))
            batch.clear()

        for frame in frames:
            batch.append(frame)
            if len(batch) == batch_size:
                run_batch()
        if batch:
            run_batch()
    accumulator.flush()
    timing.wall_s = time.perf_counter() - start
    return timing
