"""Post-export check: ONNX Runtime must reproduce the torch score maps on random and real-looking inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from flowclas_ros.data.images.transforms import to_model_input
from flowclas_ros.model.config import PreprocessConfig
from flowclas_ros.model.export_meta import INPUT_NAME
from flowclas_ros.model.method import AnomalyMethod

RELATIVE_TOLERANCE = 1e-3
"""Allowed max abs difference, as a fraction of the torch score range over all verification inputs."""

NOISE_FLOOR = 1e-5
"""Absolute floor (times max(1, max |score|)) so a near-constant map (untrained flow) is judged by float32
rounding rather than by a tolerance of ~0."""


class ExportVerificationError(RuntimeError):
    """The exported model does not reproduce the torch model within tolerance."""


@dataclass
class VerificationResult:
    """Outcome of :func:`verify_onnx` (stored in the ONNX metadata).

    Attributes:
        n_inputs: Number of verification images.
        max_abs_diff: Largest |ORT - torch| over all pixels and inputs.
        score_range: max - min of the torch scores over all inputs.
        tolerance: The threshold ``max_abs_diff`` was held to.
        relative_diff: ``max_abs_diff / score_range`` (inf when the range is 0).
    """

    n_inputs: int
    max_abs_diff: float
    score_range: float
    tolerance: float
    relative_diff: float

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly form."""
        return asdict(self)


def _real_images() -> list[np.ndarray]:
    """Photos and textures shipped inside scikit-image (no download), as HxWx3 uint8 RGB."""
    from skimage import data  # heavy import, only needed here

    images = []
    for name in ("astronaut", "coffee", "grass", "brick"):
        image = np.asarray(getattr(data, name)())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        images.append(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    return images


def verification_inputs(preprocess: PreprocessConfig, seed: int = 0) -> np.ndarray:
    """(N, 3, H, W) float32 inputs: scikit-image photos / textures, uniform noise images, Gaussian noise.

    Real images go through the runtime's own preprocessing (``to_model_input``);
    the last input is N(0, 1) in normalised space, beyond what a camera gives.
    """
    rng = np.random.default_rng(seed)
    height, width = preprocess.input_size
    noise_image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    images = to_model_input([*_real_images(), noise_image], preprocess)
    gaussian = rng.standard_normal((1, 3, height, width)).astype(np.float32)
    return np.concatenate([images, gaussian], axis=0)


def torch_reference(model: AnomalyMethod, inputs: np.ndarray) -> np.ndarray:
    """Score maps of the torch model (fp32, CPU, dynamic position embedding), one input at a time."""
    outputs = []
    with torch.inference_mode():
        for x in inputs:
            outputs.append(model(torch.from_numpy(x[None]).float()).numpy())
    return np.concatenate(outputs, axis=0)


def compare(reference: np.ndarray, got: np.ndarray) -> VerificationResult:
    """Max abs difference against ``RELATIVE_TOLERANCE`` x score range (with the float32 noise floor)."""
    if got.shape != reference.shape:
        raise ExportVerificationError(f"exported model returns shape {got.shape}, torch {reference.shape}")
    if not np.isfinite(got).all():
        raise ExportVerificationError("exported model returns non-finite scores")
    diff = float(np.abs(got.astype(np.float64) - reference).max())
    score_range = float(reference.max() - reference.min())
    floor = NOISE_FLOOR * max(1.0, float(np.abs(reference).max()))
    tolerance = max(RELATIVE_TOLERANCE * score_range, floor)
    relative = diff / score_range if score_range > 0 else float("inf")
    return VerificationResult(len(reference), diff, score_range, tolerance, relative)


def verify_onnx(
    onnx_path: str, model: AnomalyMethod, preprocess: PreprocessConfig, *, dynamic_batch: bool
) -> VerificationResult:
    """Runs the exported file in ONNX Runtime (CPU, full optimisation) against the torch model.

    With a dynamic batch, the inputs also run as one batch, so batching is verified too.

    Raises:
        ExportVerificationError: Shape mismatch, non-finite output or difference above tolerance.
    """
    import onnxruntime as ort

    inputs = verification_inputs(preprocess)
    reference = torch_reference(model, inputs)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {INPUT_NAME: x[None]})[0] for x in inputs], axis=0)
    result = compare(reference, got)
    if dynamic_batch:
        batched = compare(reference, session.run(None, {INPUT_NAME: inputs})[0])
        result = batched if batched.max_abs_diff > result.max_abs_diff else result
    if result.max_abs_diff > result.tolerance:
        raise ExportVerificationError(
            f"ONNX Runtime differs from torch by {result.max_abs_diff:.3g} (max abs) over {result.n_inputs} "
            f"inputs; allowed {result.tolerance:.3g} (= {RELATIVE_TOLERANCE:g} x score range "
            f"{result.score_range:.3g})"
        )
    return result
