"""The demo's pictures: torch score maps of the test split, the overlay strip and the overlay GIF.

Built with numpy / OpenCV from the test images, the torch backend's score maps
and the node's recorded overlays; no matplotlib, so the panels keep their pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flowclas_ros.data.folder import FolderDataset

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BAR = (32, 32, 32)
_TEXT = (235, 235, 235)
_GT_COLOUR = (64, 255, 64)


@dataclass
class ScoreMaps:
    """Torch-backend score maps of a dataset split, in the dataset's (sorted stem) order.

    Attributes:
        names: Image stems.
        maps: (N, H, W) float32 per-pixel scores at image resolution.
        image_scores: (N,) image-level scores.
        threshold: The checkpoint's calibrated pixel threshold.
    """

    names: list[str]
    maps: np.ndarray
    image_scores: np.ndarray
    threshold: float

    def save(self, path: Path) -> None:
        """Writes a compressed ``.npz``."""
        np.savez_compressed(
            path,
            names=np.array(self.names),
            maps=self.maps,
            image_scores=self.image_scores,
            threshold=np.float64(self.threshold),
        )

    @classmethod
    def load(cls, path: Path) -> ScoreMaps:
        """Reads what :meth:`save` wrote (no pickles)."""
        with np.load(path, allow_pickle=False) as data:
            return cls(
                [str(n) for n in data["names"]],
                data["maps"].astype(np.float32),
                data["image_scores"].astype(np.float64),
                float(data["threshold"]),
            )


def torch_score_maps(checkpoint: Path, split: Path, threads: int) -> ScoreMaps:
    """Scores every image of ``split`` with the torch backend (one frame per forward, like the node)."""
    import torch

    from flowclas_ros.runtime import create_backend

    torch.set_num_threads(threads)
    dataset = FolderDataset(split)
    with create_backend("torch", checkpoint) as backend:
        if backend.threshold is None:
            raise ValueError(f"checkpoint {checkpoint} has no calibrated threshold")
        maps, scores = [], []
        for index in range(len(dataset)):
            pred = backend.predict([dataset.load_image(index)])[0]
            maps.append(pred.score_map.astype(np.float32))
            scores.append(pred.image_score)
        threshold = float(backend.threshold)
    return ScoreMaps(list(dataset.stems), np.stack(maps), np.asarray(scores, np.float64), threshold)


def display_range(
    maps: np.ndarray, low_quantile: float = 0.5, high_quantile: float = 0.999
) -> tuple[float, float]:
    """Fixed colour-map range [low, high] over all pixels: the median stays clear, the top is red."""
    finite = maps[np.isfinite(maps)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.quantile(finite, [low_quantile, high_quantile]))
    return low, max(high, low + 1e-6)


def pick_strip_frames(dataset: FolderDataset, count: int) -> list[int]:
    """Up to ``count`` frames: anomalous ones spread evenly over the split, plus one normal frame.

    Evenly spaced rather than best-scoring, so the strip shows typical frames.
    """
    anomalous, normal = [], []
    for index in range(len(dataset)):
        mask = dataset.load_mask(index)
        (anomalous if mask is not None and np.any(mask == 1) else normal).append(index)
    n_anomalous = min(len(anomalous), count - (1 if normal else 0))
    picks = (
        [anomalous[round(i)] for i in np.linspace(0, len(anomalous) - 1, n_anomalous)] if n_anomalous else []
    )
    picks = list(dict.fromkeys(picks))
    if normal and len(picks) < count:
        picks.append(normal[len(normal) // 2])
    return sorted(picks)


def colourise(score_map: np.ndarray, score_range: tuple[float, float]) -> np.ndarray:
    """A score map as an RGB jet image over the fixed ``score_range``."""
    low, high = score_range
    norm = np.clip((np.nan_to_num(score_map, nan=low) - low) / (high - low), 0.0, 1.0)
    return cv2.cvtColor(cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def label_rgb(mask: np.ndarray) -> np.ndarray:
    """Ground truth as RGB: anomaly white, ignore grey, normal black."""
    out = np.zeros((*mask.shape, 3), np.uint8)
    out[mask == 1] = 255
    out[mask == 255] = 110
    return out


def _caption(panel: np.ndarray, text: str) -> None:
    scale = max(0.35, panel.shape[0] / 560)
    (w, h), base = cv2.getTextSize(text, _FONT, scale, 1)
    cv2.rectangle(panel, (0, 0), (w + 6, h + base + 6), _BAR, cv2.FILLED)
    cv2.putText(panel, text, (3, h + 3), _FONT, scale, _TEXT, 1, cv2.LINE_AA)


def _header(titles: Sequence[str], panel_w: int, gap: int) -> np.ndarray:
    bar = np.full((28, len(titles) * (panel_w + gap) - gap, 3), _BAR, np.uint8)
    for i, title in enumerate(titles):
        scale = 0.5
        (w, h), _ = cv2.getTextSize(title, _FONT, scale, 1)
        x = i * (panel_w + gap) + max(0, (panel_w - w) // 2)
        cv2.putText(bar, title, (x, 19), _FONT, scale, _TEXT, 1, cv2.LINE_AA)
    return bar


def _fit(image: np.ndarray, side: int, nearest: bool) -> np.ndarray:
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def overlay_strip(
    dataset: FolderDataset,
    scores: ScoreMaps,
    indices: Sequence[int],
    score_range: tuple[float, float],
    path: Path,
    panel_side: int = 224,
) -> Path:
    """One row per frame: input | score map | predicted mask (score >= threshold) | ground truth."""
    titles = ("input", "score map (torch)", f"mask (score >= {scores.threshold:.3g})", "ground truth")
    gap = 4
    rows, panel_w = [], panel_side
    for index in indices:
        image, smap = dataset.load_image(index), scores.maps[index]
        mask = dataset.load_mask(index, image.shape[:2])
        predicted = np.repeat((smap >= scores.threshold).astype(np.uint8)[..., None] * 255, 3, axis=2)
        panels = [
            _fit(image, panel_side, nearest=True),
            _fit(colourise(smap, score_range), panel_side, nearest=False),
            _fit(predicted, panel_side, nearest=True),
            _fit(label_rgb(mask) if mask is not None else np.zeros_like(image), panel_side, nearest=True),
        ]
        _caption(panels[0], f"{scores.names[index]}  image score {scores.image_scores[index]:.3f}")
        panel_w = panels[0].shape[1]
        spacer = np.full((panels[0].shape[0], gap, 3), 255, np.uint8)
        rows.append(np.hstack([panels[0], spacer, panels[1], spacer, panels[2], spacer, panels[3]]))
    if not rows:
        raise ValueError("no frames for the overlay strip")
    body = [_header(titles, panel_w, gap)]
    for row in rows:
        body += [np.full((gap, row.shape[1], 3), 255, np.uint8), row]
    width = max(b.shape[1] for b in body)
    strip = np.vstack([_pad_width(b, width) for b in body])
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    return path


def _pad_width(image: np.ndarray, width: int) -> np.ndarray:
    if image.shape[1] >= width:
        return image
    pad = np.full((image.shape[0], width - image.shape[1], 3), 255, np.uint8)
    return np.hstack([image, pad])


def gt_outline(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The input with the ground-truth anomalies outlined in green."""
    out = image.copy()
    if mask is not None:
        contours, _ = cv2.findContours(
            (mask == 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out, contours, -1, _GT_COLOUR, 1)
    return out


def stream_frame(overlay: np.ndarray, reference: np.ndarray, caption: str, scale: int) -> np.ndarray:
    """One GIF frame: the node's overlay (as RViz shows it) | input with ground truth, and a caption."""
    left = cv2.resize(overlay, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    right = cv2.resize(reference, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    spacer = np.full((left.shape[0], 4, 3), 255, np.uint8)
    frame = np.hstack([left, spacer, right])
    bar = np.full((24, frame.shape[1], 3), _BAR, np.uint8)
    cv2.putText(bar, caption, (4, 17), _FONT, 0.45, _TEXT, 1, cv2.LINE_AA)
    return np.vstack([frame, bar])


def write_gif(frames: Sequence[np.ndarray], durations_ms: Sequence[float], path: Path) -> Path:
    """An endlessly looping GIF."""
    import imageio.v3 as iio

    if not frames:
        raise ValueError("no frames for the GIF")
    durations = [max(20, round(d / 10) * 10) for d in durations_ms]  # GIF timing is in 10 ms units
    iio.imwrite(path, np.stack(frames), extension=".gif", duration=durations, loop=0)
    return path
