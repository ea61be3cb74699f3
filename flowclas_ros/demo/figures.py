"""The demo's pictures: the overlay strip and the overlay GIF.

Built with numpy / OpenCV from the test images and what the node published during
the live replay (score maps, masks, results); no matplotlib, so panels keep their pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flowclas_ros.data.images.folder import FolderDataset

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BAR = (32, 32, 32)
_TEXT = (235, 235, 235)
_GT_COLOUR = (64, 255, 64)


def display_range(
    maps: np.ndarray, low_quantile: float = 0.5, high_quantile: float = 0.999
) -> tuple[float, float]:
    """Fixed colour-map range [low, high] over all pixels: the median stays clear, the top is red."""
    finite = maps[np.isfinite(maps)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.quantile(finite, [low_quantile, high_quantile]))
    return low, max(high, low + 1e-6)


def pick_strip_frames(dataset: FolderDataset, candidates: Sequence[int], count: int) -> list[int]:
    """Up to ``count`` of ``candidates``: anomalous frames spread evenly, plus one normal frame.

    Evenly spaced rather than best-scoring, so the strip shows typical frames.
    """
    anomalous, normal = [], []
    for index in sorted(candidates):
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


@dataclass
class StripRow:
    """One frame of the overlay strip.

    Attributes:
        name: Frame name for the caption.
        image: (H, W, 3) uint8 RGB input.
        score_map: (H, W) float scores.
        mask: (H, W) uint8 predicted mask (0/255), as the node published it.
        truth: (H, W) uint8 ground truth (0/1/255), or None.
        image_score: Image-level score.
    """

    name: str
    image: np.ndarray
    score_map: np.ndarray
    mask: np.ndarray
    truth: np.ndarray | None
    image_score: float


def overlay_strip(
    rows: Sequence[StripRow],
    threshold: float,
    score_range: tuple[float, float],
    path: Path,
    panel_side: int = 224,
) -> Path:
    """One row per frame: input | score map | mask (score >= threshold) | ground truth."""
    if not rows:
        raise ValueError("no frames for the overlay strip")
    titles = ("input", "score map", f"mask (score >= {threshold:.3g})", "ground truth")
    gap = 4
    lines, panel_w = [], panel_side
    for row in rows:
        truth = label_rgb(row.truth) if row.truth is not None else np.zeros_like(row.image)
        panels = [
            _fit(row.image, panel_side, nearest=True),
            _fit(colourise(row.score_map, score_range), panel_side, nearest=False),
            _fit(np.repeat(row.mask[..., None], 3, axis=2), panel_side, nearest=True),
            _fit(truth, panel_side, nearest=True),
        ]
        _caption(panels[0], f"{row.name}  image score {row.image_score:.3f}")
        panel_w = panels[0].shape[1]
        spacer = np.full((panels[0].shape[0], gap, 3), 255, np.uint8)
        lines.append(np.hstack([panels[0], spacer, panels[1], spacer, panels[2], spacer, panels[3]]))
    body = [_header(titles, panel_w, gap)]
    for line in lines:
        body += [np.full((gap, line.shape[1], 3), 255, np.uint8), line]
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
        cv2.drawContours(out, contours, -1, _GT_COLOUR, max(1, round(max(out.shape[:2]) / 224)))
    return out


def stream_frame(overlay: np.ndarray, reference: np.ndarray, caption: str) -> np.ndarray:
    """One GIF frame: the overlay (as RViz shows it) | the input with ground truth, and a caption bar."""
    spacer = np.full((overlay.shape[0], 4, 3), 255, np.uint8)
    frame = np.hstack([overlay, spacer, reference])
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
