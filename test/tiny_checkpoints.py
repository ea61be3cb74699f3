"""The one builder of tiny checkpoints (and their exports) for the tests.

Not a test module. Every test that needs a checkpoint directory or an exported model
builds it here, through the package's own :mod:`flowclas_ros.model.random_checkpoint`
(so a change to how models are built reaches every test at once) and the package's own
``flowclas-export`` entry (:func:`flowclas_ros.export.main`).

The default is a random-init ViT-S/14 (``weights: none``) with a 2-step flow at 56x56 and the
NLL score, its trainable parameters perturbed so scores vary with the image content (an
untouched random flow is nearly the identity and scores every pixel alike). It is a real model
in the real checkpoint format: only its scores mean nothing. The weights depend on the seeds
alone, so two calls with the same arguments give the same model.

Two ways to get one:

* :func:`tiny_checkpoint` / :func:`tiny_export` write a fresh one where the test says: for
  tests that change, corrupt or swap what they were given;
* the ``tiny`` fixture (``conftest.py``, a :class:`TinyCache`) builds each distinct one once
  per pytest session and hands out the same path: for tests that only read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_INPUT = (56, 56)
"""(height, width) of the tiny model's input."""


def tiny_checkpoint(
    path: str | Path,
    *,
    threshold: float | None = 100.0,
    image_threshold: float | None = None,
    input_size: tuple[int, int] = TINY_INPUT,
    kind: str = "nll",
    steps: int = 2,
    proj_dim: int | None = None,
    perturb: float = 0.1,
    seed: int = 0,
    nan_weights: bool = False,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Writes a tiny random-weight checkpoint directory at ``path``.

    Args:
        path: The checkpoint directory to write.
        threshold: The calibrated pixel threshold stored in ``config.json`` (None: none).
        image_threshold: The image-level threshold (None: none, like older checkpoints).
        input_size: ``preprocess.input_size``.
        kind: The score (``nll`` keeps a random model's scores spread out; ``likelihood``
            saturates near 1).
        steps: Flow steps.
        proj_dim: ``flow.proj_dim``; None keeps the config's default.
        perturb: Scale of the noise added to the trainable parameters (0: untouched).
        seed: Seed of that noise: another seed, another model of the same architecture.
        nan_weights: Fill the trainable parameters with NaN, so every score is NaN.
        provenance: Stored in ``config.json``; default ``{"test": "tiny"}``.

    Returns:
        ``path``.
    """
    from flowclas_ros.model.random_checkpoint import random_checkpoint

    return random_checkpoint(
        path,
        input_size=tuple(input_size),
        kind=kind,
        steps=steps,
        proj_dim=proj_dim,
        perturb=perturb,
        perturb_seed=seed,
        nan_weights=nan_weights,
        threshold=threshold,
        image_threshold=image_threshold,
        provenance={"test": "tiny"} if provenance is None else provenance,
    )


def tiny_export(checkpoint: str | Path, out: str | Path, *flags: str, fmt: str = "onnx") -> Path:
    """Exports ``checkpoint`` with ``flowclas-export --format FMT --out OUT FLAGS...``.

    Args:
        checkpoint: A checkpoint directory.
        out: The exported file (``onnx`` and ``openvino`` both write an ONNX file).
        *flags: More ``flowclas-export`` flags, e.g. ``--fp16``, ``--dynamic-batch``,
            ``--precision f32``.
        fmt: ``--format``: ``onnx``, ``openvino`` or ``engine``.

    Returns:
        ``out``.
    """
    from flowclas_ros.export import main as export_main

    argv = ["--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out), *flags]
    assert export_main(argv) == 0, f"flowclas-export {' '.join(argv)} failed (its error is above)"
    return Path(out)


def _key(kwargs: dict[str, Any]) -> str:
    """A stable folder name for one set of builder arguments."""
    if not kwargs:
        return "default"
    text = "_".join(f"{k}-{v}" for k, v in sorted(kwargs.items()))
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)


class TinyCache:
    """Builds each distinct tiny checkpoint and export once and hands out its path.

    What it hands out is shared by every test of the session: read it, never change it
    (copy it first, or use :func:`tiny_checkpoint` for a private one).

    Args:
        root: An empty folder for the cache (``tmp_path_factory.mktemp``).
    """

    def __init__(self, root: Path):
        self.root = root
        self._built: dict[str, Path] = {}

    def checkpoint(self, **kwargs: Any) -> Path:
        """The checkpoint :func:`tiny_checkpoint` writes for ``kwargs``, built on first use."""
        name = "ckpt_" + _key(kwargs)
        if name not in self._built:
            self._built[name] = tiny_checkpoint(self.root / name, **kwargs)
        return self._built[name]

    def export(self, *flags: str, fmt: str = "onnx", **kwargs: Any) -> Path:
        """The export (:func:`tiny_export`) of :meth:`checkpoint` ``(**kwargs)``, built on first use."""
        name = f"{fmt}_{_key(kwargs)}{'_'.join(flags).replace('-', '')}.onnx"
        if name not in self._built:
            self._built[name] = tiny_export(self.checkpoint(**kwargs), self.root / name, *flags, fmt=fmt)
        return self._built[name]
