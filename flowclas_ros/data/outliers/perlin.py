"""Vectorised Perlin and fractal (fBm) noise in numpy.

Hand-written (about 40 lines) on purpose: the PyPI noise packages either
evaluate one point per Python call (``noise``, ``perlin-noise``), seed a global
state instead of taking a ``numpy.random.Generator`` (``opensimplex``), or are
unmaintained single-file uploads (``perlin-numpy``). We need whole 2-D arrays,
reproducible from a Generator, at any (not just grid-multiple) size.
"""

from __future__ import annotations

import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic smoothstep 6t^5 - 15t^4 + 10t^3."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(shape: tuple[int, int], res: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Classic 2-D gradient (Perlin) noise.

    Args:
        shape: Output (height, width) in pixels.
        res: Number of noise periods (gradient cells) along (height, width);
            fractional values are fine.
        rng: Source of the random gradient directions.

    Returns:
        float32 array of ``shape`` with values roughly in [-1, 1].
    """
    h, w = int(shape[0]), int(shape[1])
    ry, rx = max(float(res[0]), 1e-3), max(float(res[1]), 1e-3)
    ny, nx = int(np.ceil(ry)) + 1, int(np.ceil(rx)) + 1
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(ny, nx)).astype(np.float32)
    grad_y, grad_x = np.sin(angles), np.cos(angles)
    y = np.arange(h, dtype=np.float32) * (ry / h)
    x = np.arange(w, dtype=np.float32) * (rx / w)
    yi, xi = y.astype(np.int64), x.astype(np.int64)
    fy, fx = (y - yi)[:, None], (x - xi)[None, :]

    def corner(oy: int, ox: int) -> np.ndarray:
        gy = grad_y[yi + oy][:, xi + ox]
        gx = grad_x[yi + oy][:, xi + ox]
        return gy * (fy - oy) + gx * (fx - ox)

    u, v = _fade(fx), _fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return (np.sqrt(2.0) * (top * (1 - v) + bottom * v)).astype(np.float32)


def fractal_noise(
    shape: tuple[int, int],
    res: tuple[float, float],
    rng: np.random.Generator,
    octaves: int = 4,
    persistence: float = 0.5,
    lacunarity: float = 2.0,
) -> np.ndarray:
    """Fractal Brownian motion: a sum of Perlin octaves of rising frequency.

    Args:
        shape: Output (height, width).
        res: Periods of the first (coarsest) octave.
        rng: Random source.
        octaves: Number of octaves summed.
        persistence: Amplitude factor from one octave to the next.
        lacunarity: Frequency factor from one octave to the next.

    Returns:
        float32 array normalised to zero mean and unit standard deviation.
    """
    total = np.zeros(shape, np.float32)
    amplitude, freq = 1.0, 1.0
    for _ in range(octaves):
        total += amplitude * perlin_noise(shape, (res[0] * freq, res[1] * freq), rng)
        amplitude *= persistence
        freq *= lacunarity
    total -= total.mean()
    return total / max(float(total.std()), 1e-6)


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    fraction: float = 0.4,
    res_range: tuple[int, int] = (1, 4),
    octaves: int = 3,
) -> np.ndarray:
    """Random blobby mask (DRAEM / CL-flow style) by thresholding fBm noise.

    Args:
        shape: Mask (height, width).
        rng: Random source.
        fraction: Fraction of pixels that end up True (a quantile threshold).
        res_range: Inclusive range of coarse-octave periods per side.
        octaves: fBm octaves; more gives ragged edges.

    Returns:
        Boolean mask of ``shape`` with about ``fraction`` True pixels.
    """
    lo, hi = res_range
    res = (float(rng.integers(lo, hi + 1)), float(rng.integers(lo, hi + 1)))
    noise = fractal_noise(shape, res, rng, octaves=octaves)
    threshold = np.quantile(noise, 1.0 - float(np.clip(fraction, 1e-3, 1.0)))
    return noise > threshold
