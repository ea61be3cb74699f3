"""PyTorch inference backend: fp32 on CPU, autocast fp16 / bf16 backbone on CUDA, optional torch.compile."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from flowclas_ros.model.checkpoint import LoadedCheckpoint, load_checkpoint
from flowclas_ros.model.method import AnomalyMethod
from flowclas_ros.runtime.base import InferenceBackend
from flowclas_ros.runtime.registry import canonical_precision
from flowclas_ros.runtime.threads import torch_threads

Precision = Literal["auto", "f32", "f16", "bf16", "fp32", "fp16"]
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_INTERNAL = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "auto": "auto"}  # registry vocabulary -> ours


class TorchBackend(InferenceBackend):
    """Runs a checkpoint (or an in-memory model) of any method with PyTorch.

    Reduced precision applies to the backbone only, via autocast; the method's
    head and the scoring always run in fp32 because likelihoods are sensitive to it.

    Args:
        checkpoint: Checkpoint directory, a ``LoadedCheckpoint`` or an ``AnomalyMethod`` model.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto`` (f16 on CUDA, f32 on CPU), ``f32``, ``f16`` or ``bf16`` (CUDA only);
            the old ``fp32`` / ``fp16`` still work, with a deprecation warning.
        compile: Wrap feature extraction and scoring in ``torch.compile``.
        threshold: Threshold to report when ``checkpoint`` is a bare model.
        threads: On the CPU, torch's intra-op threads for the whole process (``auto``: the usable
            CPUs, :func:`flowclas_ros.runtime.threads.torch_threads`); None leaves torch's setting
            (a library caller's, e.g. a training run's).
    """

    name = "torch"

    def __init__(
        self,
        checkpoint: str | Path | LoadedCheckpoint | AnomalyMethod,
        device: str = "cpu",
        *,
        precision: Precision = "auto",
        compile: bool = False,
        threshold: float | None = None,
        threads: int | str | None = None,
    ):
        image_threshold = None
        if isinstance(checkpoint, AnomalyMethod):
            model = checkpoint
        else:
            loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint)
            model, threshold, image_threshold = loaded.model, loaded.threshold, loaded.image_threshold
        super().__init__(model.cfg, threshold, device, image_threshold)
        if precision not in _INTERNAL and precision not in ("fp32", "fp16"):
            raise ValueError(f"unknown precision {precision!r} (expected auto, f32, f16 or bf16)")
        precision = _INTERNAL[canonical_precision(precision)]
        torch_device = torch.device(device)
        if threads is not None and torch_device.type == "cpu":
            torch_threads(threads)
        if precision == "auto":
            precision = "fp16" if torch_device.type == "cuda" else "fp32"
        if precision != "fp32" and torch_device.type != "cuda":
            raise ValueError(f"precision {precision!r} needs a CUDA device, got {device!r}")
        self.precision = precision
        self.model: AnomalyMethod | None = model.to(torch_device).eval()
        self._torch_device = torch_device
        self._lock = threading.Lock()  # set_prompts (any thread) must not race a forward
        self._features = torch.compile(model.extract_features) if compile else model.extract_features
        self._score = torch.compile(model.score_features) if compile else model.score_features

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=_DTYPES[self.precision])

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("TorchBackend is closed")
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._torch_device)
        with self._lock, torch.inference_mode():
            padded, image_hw = self.model.pad_input(x)
            with self._autocast():
                feats = self._features(padded)
            scores = self._score(feats.float(), image_hw)
            scores = self.model.fuse_text(scores.float(), x)  # VL4AD fusion; identity when off
        return scores.float().cpu().numpy()

    @property
    def supports_prompts(self) -> bool:
        """True when the checkpoint has a VL4AD text scorer."""
        return self.model is not None and self.model.text_scorer is not None

    def set_prompts(self, prompts: str) -> bool:
        """Switches the VL4AD prompt set between two forwards; the text is encoded once here."""
        if not self.supports_prompts:
            raise ValueError("this checkpoint has no VL4AD text scorer (model.text is not set)")
        with self._lock:
            return self.model.text_scorer.set_prompts(prompts)

    def close(self) -> None:
        """Drops the model and frees cached CUDA memory."""
        self.model = None
        self._features = self._score = None
        if self._torch_device.type == "cuda":
            torch.cuda.empty_cache()
