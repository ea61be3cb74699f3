"""What a synthetic scene is: the generator's settings, the terrain palettes, one rendered frame."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowclas_ros.synthetic.scene_objects import ANOMALY_RENDERERS


@dataclass
class SceneConfig:
    """Generator settings.

    Attributes:
        size: Output (height, width) in pixels.
        anomaly_probability: Chance that a val/test frame holds at least one foreign object.
        max_anomalies: Most foreign objects in one frame.
        anomaly_area: Range of one object's area as a fraction of the frame
            (drawn log-uniformly; occlusion by nearer rocks can reduce it).
        ignore_band: Width in pixels of a 255 (ignore) band around each object
            outline in the masks; 0 keeps masks strictly 0/1.
        anomaly_kinds: Which foreign-object renderers to use.
        weathering: Chance that an object is dust-coated, and (separately)
            that it is partly covered by soil; both make it harder to see.
        palettes: Terrain palettes drawn from (names in ``PALETTES``); empty = all. A subset
            makes a different-looking site, e.g. ``["lunar", "basalt"]`` against the
            reddish ``["mars", "ochre", "desert"]`` (``benchmarks/finetune_site.py``).
    """

    size: tuple[int, int] = (224, 224)
    anomaly_probability: float = 0.85
    max_anomalies: int = 2
    anomaly_area: tuple[float, float] = (0.005, 0.08)
    ignore_band: int = 0
    anomaly_kinds: list[str] = field(default_factory=lambda: sorted(ANOMALY_RENDERERS))
    weathering: float = 0.1
    palettes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 32:
            raise ValueError(f"size must be (height, width) with both >= 32, got {self.size}")
        lo, hi = self.anomaly_area
        if not 0 < lo <= hi < 0.5:
            raise ValueError(f"anomaly_area must satisfy 0 < lo <= hi < 0.5, got {self.anomaly_area}")
        names = [p.name for p in PALETTES]
        if set(self.palettes) - set(names):
            raise ValueError(
                f"palettes {sorted(set(self.palettes) - set(names))} invalid; choose from {names}"
            )
        unknown = sorted(set(self.anomaly_kinds) - set(ANOMALY_RENDERERS))
        if unknown or not self.anomaly_kinds:
            raise ValueError(
                f"anomaly_kinds {unknown or '[]'} invalid; choose from {sorted(ANOMALY_RENDERERS)}"
            )


@dataclass(frozen=True)
class Palette:
    """Colours of one kind of terrain and its sky."""

    name: str
    ground: tuple[float, float, float]
    ground_alt: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    sky_zenith: tuple[float, float, float]
    haze: float
    ambient: float


PALETTES = (
    Palette(
        "mars", (0.58, 0.36, 0.22), (0.45, 0.30, 0.21), (0.80, 0.64, 0.50), (0.56, 0.42, 0.34), 0.45, 0.35
    ),
    Palette("lunar", (0.50, 0.49, 0.47), (0.38, 0.37, 0.36), (0.03, 0.03, 0.04), (0.0, 0.0, 0.01), 0.0, 0.18),
    Palette(
        "desert", (0.66, 0.54, 0.40), (0.55, 0.44, 0.33), (0.82, 0.84, 0.86), (0.45, 0.58, 0.78), 0.35, 0.40
    ),
    Palette(
        "basalt", (0.30, 0.28, 0.27), (0.42, 0.36, 0.30), (0.72, 0.74, 0.78), (0.42, 0.52, 0.68), 0.30, 0.35
    ),
    Palette(
        "ochre", (0.62, 0.44, 0.27), (0.52, 0.40, 0.30), (0.85, 0.70, 0.55), (0.62, 0.48, 0.38), 0.40, 0.35
    ),
)


@dataclass
class Scene:
    """One rendered frame.

    Attributes:
        image: RGB uint8 (H, W, 3).
        mask: uint8 (H, W): 0 normal, 1 foreign object, 255 ignore band.
        objects: One dict per foreign object: ``id``, ``kind`` and visible ``area`` (fraction of the frame).
        palette: Terrain palette name.
        instances: int16 (H, W): 0 scene, k = pixels of the object with ``id`` k.
    """

    image: np.ndarray
    mask: np.ndarray
    objects: list[dict]
    palette: str
    instances: np.ndarray
