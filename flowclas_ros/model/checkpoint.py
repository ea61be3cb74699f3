"""Checkpoint directories: ``config.json`` + ``flow.safetensors`` (+ optional ``backbone.safetensors``).

Loading never unpickles. Every failure raises :class:`CheckpointError` with
one message naming the file and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from flowclas_ros.config_io import ConfigError, from_dict, to_dict
from flowclas_ros.model.backbones import BackboneError
from flowclas_ros.model.checkpoint_meta import (
    BACKBONE_FILE,
    CONFIG_FILE,
    FLOW_FILE,
    CheckpointError,
    CheckpointMeta,
    checkpoint_sha256,
    config_json_text,
    read_config_file,
)
from flowclas_ros.model.config import ModelConfig
from flowclas_ros.model.method import AnomalyMethod, MethodError, create_method
from flowclas_ros.model.vl4ad.text_scorer import TextScorerError

__all__ = [
    "BACKBONE_FILE",
    "CONFIG_FILE",
    "FLOW_FILE",
    "CheckpointError",
    "LoadedCheckpoint",
    "load_checkpoint",
    "load_trainable",
    "save_checkpoint",
    "trainable_state",
]


@dataclass
class LoadedCheckpoint:
    """A loaded checkpoint.

    Attributes:
        model: The model (the method ``config.method`` names), in eval mode.
        config: Its model config.
        threshold: Calibrated pixel-score threshold, if any.
        provenance: Free-form provenance (backbone, data, metrics, ...).
        path: The checkpoint directory.
        sha256: Hash of ``config.json`` bytes followed by ``flow.safetensors`` bytes.
        image_threshold: Calibrated image-score threshold (at a target image FPR), if any;
            absent in older checkpoints.
    """

    model: AnomalyMethod
    config: ModelConfig
    threshold: float | None
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path = Path(".")
    sha256: str = ""
    image_threshold: float | None = None


def trainable_state(model: AnomalyMethod) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint or training state stores: all but the frozen parts, detached, on CPU.

    The method says which keys (:meth:`AnomalyMethod.stored_state`; frozen parts are referenced by
    the config, not copied).
    """
    return model.stored_state()


def save_checkpoint(
    model: AnomalyMethod,
    path: str | Path,
    *,
    threshold: float | None = None,
    provenance: dict[str, Any] | None = None,
    embed_backbone: bool = False,
    image_threshold: float | None = None,
) -> Path:
    """Writes a checkpoint directory (created if needed; existing files are replaced).

    Args:
        model: The model to save.
        path: Target directory.
        threshold: Calibrated threshold to store, or None.
        provenance: JSON-serialisable provenance (training data, metrics, ...).
        embed_backbone: Also write the frozen backbone weights to ``backbone.safetensors``.
        image_threshold: Calibrated image-score threshold to store (key omitted when None).

    Returns:
        The checkpoint directory.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = CheckpointMeta(
        model.cfg, threshold, image_threshold, provenance or {}, BACKBONE_FILE if embed_backbone else None
    )
    text = config_json_text(meta, str(path / CONFIG_FILE))
    save_file(trainable_state(model), str(path / FLOW_FILE))
    if embed_backbone:
        state = {k: v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()}
        save_file(state, str(path / BACKBONE_FILE))
    (path / CONFIG_FILE).write_text(text)  # written last: a directory with config.json is complete
    return path


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: corrupt or truncated safetensors file ({exc})") from exc


def _check_state(file: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = [f"missing tensors: {listed(missing)}"] if missing else []
        parts += [f"unexpected tensors: {listed(unexpected)}"] if unexpected else []
        raise CheckpointError(f"{file}: does not match the model in config.json ({'; '.join(parts)})")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{file}: tensor {key} has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(expected[key].shape)}"
            )


def _resolve_weights_file(cfg: ModelConfig, ckpt_dir: Path) -> None:
    """Relative backbone / CLIP weight paths are looked up next to the checkpoint first."""
    weights = Path(cfg.backbone.weights_file)
    if cfg.backbone.weights == "file" and not weights.is_absolute() and (ckpt_dir / weights).is_file():
        cfg.backbone.weights_file = str(ckpt_dir / weights)
    if cfg.text is not None and cfg.text.weights == "file":
        text_weights = Path(cfg.text.weights_file)
        if not text_weights.is_absolute() and (ckpt_dir / text_weights).is_file():
            cfg.text.weights_file = str(ckpt_dir / text_weights)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Loads a checkpoint directory written by :func:`save_checkpoint`.

    Args:
        path: Checkpoint directory.
        device: Where to put the model.

    Returns:
        The loaded checkpoint (model in eval mode).

    Raises:
        CheckpointError: Missing / corrupt files, bad JSON, unknown config keys,
            incompatible version, tensor key or shape mismatch, backbone
            weights that cannot be loaded.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    config_path, flow_path = path / CONFIG_FILE, path / FLOW_FILE
    config_bytes, meta = read_config_file(config_path)
    cfg = meta.config
    state = _read_tensors(flow_path)
    embedded = meta.embedded_backbone
    _resolve_weights_file(cfg, path)
    try:
        if embedded:
            backbone_state = _read_tensors(path / embedded)
            model = create_method(_with_random_backbone(cfg), warn_random_backbone=False)
            _check_state(path / embedded, backbone_state, model.backbone.state_dict())
            model.backbone.load_state_dict(backbone_state)
            model.cfg = cfg
        else:
            model = create_method(cfg)
    except MethodError as exc:
        raise CheckpointError(f"{config_path}: {exc}") from exc
    except BackboneError as exc:
        raise CheckpointError(f"{config_path}: backbone: {exc}") from exc
    except (TextScorerError, ConfigError) as exc:
        raise CheckpointError(f"{config_path}: text scorer: {exc}") from exc
    _check_state(flow_path, state, trainable_state(model))
    model.load_state_dict(state, strict=False)  # backbone keys are not in the file
    model.to(device).eval()
    return LoadedCheckpoint(
        model=model,
        config=cfg,
        threshold=meta.threshold,
        image_threshold=meta.image_threshold,
        provenance=meta.provenance,
        path=path,
        sha256=checkpoint_sha256(config_bytes, flow_path.read_bytes()),
    )


def load_trainable(model: AnomalyMethod, path: str | Path) -> None:
    """Loads a checkpoint's ``flow.safetensors`` into ``model`` (built from the same model config).

    The fine-tuning start (``flowclas-train --init-from``). The backbone stays as built.

    Raises:
        CheckpointError: Missing or corrupt file, or tensors that do not fit ``model``.
    """
    flow_path = Path(path) / FLOW_FILE
    state = _read_tensors(flow_path)
    _check_state(flow_path, state, trainable_state(model))
    model.load_state_dict(state, strict=False)  # backbone keys are not in the file


def _with_random_backbone(cfg: ModelConfig) -> ModelConfig:
    """A copy of ``cfg`` whose backbone is built without loading weights (they are embedded)."""
    copy = from_dict(ModelConfig, to_dict(cfg))
    copy.backbone.weights = "none"
    return copy
