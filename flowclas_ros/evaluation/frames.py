"""Evaluation frame sources: a folder dataset or a rosbag2, as one stream of :class:`EvalFrame`.

Both sources stream (one frame in memory at a time) and keep the counts the
report needs: frames without a mask are yielded with ``mask=None`` and
counted, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from flowclas_ros.data.bags.frames import BagError, BagReadStats, iter_bag_frames
from flowclas_ros.data.images.folder import FolderDataset


class EvalInputError(ValueError):
    """The evaluation input cannot be used (the message names the path / topic and the problem)."""


@dataclass
class EvalFrame:
    """One image to evaluate.

    Attributes:
        name: Human-readable id (folder: the stem; bag: index and stamp).
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) uint8 with 0 normal / 1 anomaly / 255 ignore, or None if unpaired.
        stamp_ns: Header stamp for bag frames, None for folder frames.
        index: Position in the source (folder: sorted stem order; bag: image-topic order).
    """

    name: str
    image: np.ndarray
    mask: np.ndarray | None
    stamp_ns: int | None = None
    index: int = 0


def bag_frame_name(index: int, stamp_ns: int) -> str:
    """Display name of a bag frame: ``#index @ sec.nanosec``."""
    return f"#{index} @ {stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}"


class FolderFrames:
    """Frames of a folder dataset (docs/ARCHITECTURE.md layout) in sorted stem order.

    Raises:
        EvalInputError: Missing folder, no images (from the constructor).
    """

    kind = "folder"

    def __init__(self, root: str | Path) -> None:
        """Index the folder (images are read lazily while iterating)."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise EvalInputError(f"dataset folder {self.root} does not exist")
        try:
            self.dataset = FolderDataset(self.root)
        except ValueError as err:
            raise EvalInputError(str(err)) from err

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def n_unpaired(self) -> int:
        """Images with no ``masks/<stem>.png``."""
        return sum(path is None for path in self.dataset.mask_paths)

    def __iter__(self) -> Iterator[EvalFrame]:
        """Yield the frames; a mask of the wrong size or with bad values raises DatasetError."""
        for i in range(len(self.dataset)):
            image = self.dataset.load_image(i)
            mask = self.dataset.load_mask(i, image.shape[:2])
            yield EvalFrame(self.dataset.stems[i], image, mask, None, i)

    def describe(self) -> dict[str, Any]:
        """Source description for metrics.json."""
        return {"kind": self.kind, "path": str(self.root), "n_unpaired": self.n_unpaired}

    def warnings(self) -> list[str]:
        """Problems to surface in the report."""
        n = self.n_unpaired
        if n == len(self):
            return [f"{self.root}: no masks found (masks/<stem>.png); pixel metrics are unavailable"]
        if n:
            return [f"{n} of {len(self)} images have no mask; they are not in the pixel/image metrics"]
        return []


class BenchmarkFrames(FolderFrames):
    """Frames of a public benchmark in its released layout (:mod:`flowclas_ros.data.readers.benchmarks`).

    Raises:
        EvalInputError: Unknown name, or ROOT not in the benchmark's layout (from the constructor).
    """

    kind = "benchmark"

    def __init__(self, name: str, root: str | Path) -> None:  # noqa: D107 - see the class
        from flowclas_ros.data.readers.benchmarks import open_benchmark

        self.root = Path(root)
        try:
            self.dataset, self.benchmark = open_benchmark(name, root)
        except ValueError as err:
            raise EvalInputError(str(err)) from err

    @property
    def n_unpaired(self) -> int:
        """Images without a label (MVTec ``good`` images count as labelled: all normal)."""
        return 0 if self.dataset.zero_mask_if_missing else super().n_unpaired

    def describe(self) -> dict[str, Any]:
        """Source description for metrics.json: the dataset, its layout and the label convention applied."""
        from flowclas_ros.data.readers.benchmarks import ONE_BIT_NOTE

        n_one_bit = self.dataset.n_one_bit_masks
        return {
            **super().describe(),
            "dataset": self.benchmark.name,
            "layout": self.benchmark.layout,
            "label_convention": self.benchmark.convention + (f"; {ONE_BIT_NOTE}" if n_one_bit else ""),
            "n_one_bit_masks": n_one_bit,
            "resolution": "native: labels are never resized; the checkpoint decides any model-input resize",
        }


class BagFrames:
    """Frames of one image topic of a rosbag2, with masks from a topic or folder paired by stamp.

    Call :meth:`open` first: it reads the first frame, so a wrong path or topic
    fails before any model is loaded. ``stats`` is filled while iterating.
    """

    kind = "bag"

    def __init__(
        self,
        bag: str | Path,
        image_topic: str,
        mask_topic: str | None = None,
        mask_dir: str | Path | None = None,
        *,
        stamp_tolerance_s: float = 0.01,
        mask_dir_naming: Literal["stamp", "index"] = "stamp",
    ) -> None:
        """Store the arguments (see :func:`flowclas_ros.data.bags.frames.iter_bag_frames`)."""
        self.bag = Path(bag)
        self.image_topic = image_topic
        self.mask_topic = mask_topic or None
        self.mask_dir = Path(mask_dir) if mask_dir else None
        self.stamp_tolerance_s = stamp_tolerance_s
        self.mask_dir_naming = mask_dir_naming
        self.stats = BagReadStats()
        self._iter: Iterator[Any] | None = None
        self._first: EvalFrame | None = None

    def open(self) -> BagFrames:
        """Start reading and fetch the first frame.

        Raises:
            EvalInputError: Missing bag, unknown topic (the message lists the bag's topics),
                wrong message type, or no decodable frame at all.
        """
        if not self.bag.exists():
            raise EvalInputError(f"bag {self.bag} does not exist")
        try:
            self._iter = iter_bag_frames(
                self.bag,
                self.image_topic,
                self.mask_topic,
                self.mask_dir,
                stamp_tolerance_s=self.stamp_tolerance_s,
                mask_dir_naming=self.mask_dir_naming,
                stats=self.stats,
            )
            first = next(self._iter, None)
        except (BagError, ValueError) as err:
            raise EvalInputError(str(err)) from err
        if first is None:
            problems = "; ".join(self.stats.problems) or f"{self.stats.n_decode_errors} undecodable"
            raise EvalInputError(
                f"no frame could be read from {self.image_topic!r} in {self.bag} ({problems})"
            )
        self._first = self._convert(first)
        return self

    @staticmethod
    def _convert(frame: Any) -> EvalFrame:
        return EvalFrame(
            bag_frame_name(frame.index, frame.stamp_ns), frame.image, frame.mask, frame.stamp_ns, frame.index
        )

    def __len__(self) -> int:
        """Image messages on the topic (known once :meth:`open` has run); an upper bound on frames."""
        return self.stats.n_image_messages

    def __iter__(self) -> Iterator[EvalFrame]:
        """Yield the frames (single pass)."""
        if self._iter is None:
            self.open()
        first, self._first = self._first, None
        if first is not None:
            yield first
        assert self._iter is not None
        for frame in self._iter:
            yield self._convert(frame)

    def describe(self) -> dict[str, Any]:
        """Source description for metrics.json."""
        return {
            "kind": self.kind,
            "path": str(self.bag),
            "image_topic": self.image_topic,
            "mask_topic": self.mask_topic,
            "mask_dir": str(self.mask_dir) if self.mask_dir else None,
            "stamp_tolerance_s": self.stamp_tolerance_s,
            "n_unpaired": self.stats.n_unpaired,
        }

    def warnings(self) -> list[str]:
        """Problems to surface in the report (call after iterating)."""
        st = self.stats
        out = []
        if st.problems:
            out.append(
                f"DAMAGED BAG: partial evaluation, {st.n_frames} of the readable frames evaluated; "
                + "; ".join(st.problems)
            )
        if st.n_decode_errors:
            out.append(f"{st.n_decode_errors} image message(s) could not be decoded and were skipped")
        if not (self.mask_topic or self.mask_dir):
            out.append("no mask topic or mask folder given; pixel metrics are unavailable")
        elif st.n_unpaired:
            out.append(
                f"{st.n_unpaired} of {st.n_frames} frames have no mask (unpaired); "
                "they are not in the pixel/image metrics"
            )
        if st.n_mask_errors:
            out.append(f"{st.n_mask_errors} mask(s) were unusable (wrong size or values)")
        if st.n_masks_unused:
            out.append(f"{st.n_masks_unused} mask(s) matched no image")
        return out
