"""``flowclas-eval --bag``'s label-free review: its flags, its thresholds and the bag re-read for peaks."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flowclas_ros.evaluation.frames import BagFrames, EvalInputError
from flowclas_ros.evaluation.review import DEFAULT_MERGE_GAP_S
from flowclas_ros.runtime.decision import image_threshold_in_use

if TYPE_CHECKING:  # the recorder pulls in OpenCV: imported when a review runs, not for --help
    from flowclas_ros.evaluation.review_recorder import Refetch, ReviewRecorder
    from flowclas_ros.runtime.base import InferenceBackend


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The review's argument group."""
    review = parser.add_argument_group(
        "review of a recording (--bag, with or without masks): frames.csv, events.csv, timeline.png, "
        "events/<peak_stamp>.png"
    )
    review.add_argument(
        "--merge-gap",
        type=float,
        default=DEFAULT_MERGE_GAP_S,
        metavar="S",
        help="flagged frames at most S seconds apart form one event (default: %(default)s)",
    )
    review.add_argument(
        "--image-threshold",
        type=float,
        metavar="T",
        help="image-score threshold that flags a frame, as the node's image_threshold parameter "
        "(default: the checkpoint's image_threshold, else the pixel threshold, as the node)",
    )


def check_args(args: argparse.Namespace) -> None:
    """Checks of the review flags (raise EvalInputError with a one-line reason)."""
    if not (args.merge_gap >= 0 and math.isfinite(args.merge_gap)):
        raise EvalInputError(f"--merge-gap must be a finite number >= 0, got {args.merge_gap}")
    if args.image_threshold is not None and not math.isfinite(args.image_threshold):
        raise EvalInputError(f"--image-threshold must be finite, got {args.image_threshold}")
    if args.image_threshold is not None and (not args.bag or args.live):
        raise EvalInputError(
            "--image-threshold applies to the offline review of a --bag (not --data, --live)"
        )


def make_recorder(args: argparse.Namespace, backend: InferenceBackend, out_dir: Path) -> ReviewRecorder:
    """The recorder with the node's thresholds: the pixel one and the image decision's.

    As the node: the pixel threshold is ``--threshold`` or the checkpoint's; the image threshold
    is ``--image-threshold`` or the checkpoint's ``image_threshold``, else the pixel threshold.
    """
    from flowclas_ros.evaluation.review_recorder import ReviewRecorder

    pixel = args.threshold if args.threshold is not None else backend.threshold
    if args.image_threshold is not None:
        image, source = float(args.image_threshold), "--image-threshold"
    else:
        image = image_threshold_in_use(backend.image_threshold, pixel)
        has_own = backend.image_threshold is not None and math.isfinite(backend.image_threshold)
        source = (
            "the checkpoint's image_threshold"
            if has_own
            else "the pixel threshold (the checkpoint has no image_threshold)"
        )
    return ReviewRecorder(
        out_dir,
        pixel_threshold=pixel,
        image_threshold=image,
        image_threshold_source=source if image is not None else "none",
        merge_gap_s=args.merge_gap,
    )


def bag_refetch(args: argparse.Namespace, backend: InferenceBackend) -> Refetch:
    """A ``Refetch`` that re-reads ``--bag`` (images only) and scores just the wanted frames."""

    def refetch(indices: set[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray, float]]:
        frames = BagFrames(args.bag, args.image_topic)
        for frame in frames:
            if frame.index in indices:
                prediction = backend.predict([frame.image])[0]
                yield frame.index, frame.image, prediction.score_map, prediction.image_score

    return refetch


def review_warnings(review: dict[str, Any]) -> list[str]:
    """Problems of the review worth a line on stderr and in the report."""
    out = []
    if review["image_threshold"] is None:
        out.append("review: no image threshold is known (pass --image-threshold); no frame is flagged")
    if review["peak_frames_missing"]:
        out.append(f"review: {review['peak_frames_missing']} event peak frame(s) had no overlay")
    return out
