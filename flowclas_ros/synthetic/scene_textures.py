"""Texture bank for the synthetic scenes: real textures + fractal noise, periodic, with a blur pyramid."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import skimage.data

from flowclas_ros.data.outliers.perlin import fractal_noise

TEX_SIZE = 512  # side of the texture bank images


def _highpass(img: np.ndarray) -> np.ndarray:
    """Removes illumination gradients and normalises to zero mean, unit std."""
    x = img.astype(np.float32)
    x -= cv2.GaussianBlur(x, (0, 0), 24)
    return (x - x.mean()) / max(float(x.std()), 1e-6)


def _tileable(tex: np.ndarray) -> np.ndarray:
    """Makes a square texture periodic by cross-fading with a half-period shifted copy, axis by axis.

    The shifted copy's seam sits where the original has full weight, so no
    seam survives; dividing by the blend's norm keeps the local contrast.
    """
    n = tex.shape[0]
    w = np.sin(np.pi * (np.arange(n, dtype=np.float32) + 0.5) / n) ** 2
    norm = np.sqrt(w**2 + (1 - w) ** 2)
    out = tex.astype(np.float32)
    for axis in (0, 1):
        shape = [1] * out.ndim
        shape[axis] = n
        wa, na = w.reshape(shape), norm.reshape(shape)
        out = (wa * out + (1 - wa) * np.roll(out, n // 2, axis=axis)) / na
    return out


def _blur_wrap(tex: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a periodic texture (cv2 has no wrap border for filters)."""
    pad = int(np.ceil(3 * sigma))
    padded = np.pad(tex, [(pad, pad), (pad, pad)] + [(0, 0)] * (tex.ndim - 2), mode="wrap")
    return cv2.GaussianBlur(padded, (0, 0), sigma)[pad:-pad, pad:-pad]


class TextureBank:
    """Textures shared by all frames: detail (moon, gravel, fBm, ridged fBm) and low-frequency fields.

    Built once per generator (about 0.2 s); the detail stack is pre-blurred
    into a small pyramid so distant ground can be sampled without aliasing.
    """

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 7919])
        ridged = 1.0 - np.abs(fractal_noise((TEX_SIZE, TEX_SIZE), (6, 6), rng, octaves=5))
        detail = np.stack(
            [
                _highpass(skimage.data.moon()),
                _highpass(skimage.data.gravel()),
                fractal_noise((TEX_SIZE, TEX_SIZE), (8, 8), rng, octaves=5, persistence=0.6),
                _highpass(ridged),
            ],
            axis=2,
        ).astype(np.float32)
        detail = _tileable(detail)
        self.levels = [detail] + [_blur_wrap(detail, s) for s in (1.0, 2.5, 6.0)]
        self.covariance = np.cov(detail.reshape(-1, 4).T).astype(np.float32)
        self.low = _tileable(
            np.stack(
                [
                    fractal_noise((256, 256), (3, 3), rng, octaves=3),
                    fractal_noise((256, 256), (2, 2), rng, octaves=2),
                ],
                axis=2,
            )
        )
        self.rock_detail = fractal_noise((256, 256), (24, 24), rng, octaves=3)


@functools.lru_cache(maxsize=2)
def texture_bank(seed: int) -> TextureBank:
    """The bank for ``seed``, built once per process (generators and tests share it)."""
    return TextureBank(seed)


def wrap_coords(coord: np.ndarray, period: int) -> np.ndarray:
    """Folds coordinates into [0, period) for periodic textures (cv2 maps must stay small)."""
    return np.mod(coord, period).astype(np.float32)
