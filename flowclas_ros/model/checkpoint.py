"""Checkpoint directories: ``config.json`` + ``flow.safetensors`` (+ optional ``backbone.safetensors``).

Loading never unpickles. Every failure raises :class:`CheckpointError` with
one message naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from flowclas_ros.config_io import ConfigError, from_dict, to_dict
from flowclas_ros.model.backbone import BackboneError
from flowclas_ros.model.config import CONFIG_VERSION, ModelConfig
from flowclas_ros.model.flowclas.torch_model import FlowCLAS
from flowclas_ros.model.vl4ad.text_scorer import TextScorerError

CONFIG_FILE = "config.json"
FLOW_FILE = "flow.safetensors"
BACKBONE_FILE = "backbone.safetensors"
_TOP_KEYS = {"version", "model", "threshold", "image_threshold", "provenance", "embedded_backbone"}


class CheckpointError(Exception):
    """A checkpoint cannot be written or read; the message names the file and the problem."""


@dataclass
class LoadedCheckpoint:
    """A loaded checkpoint.

    Attributes:
        model: The FlowCLAS model, in eval mode.
        config: Its model config.
        threshold: Calibrated pixel-score threshold, if any.
        provenance: Free-form provenance (backbone, data, metrics, ...).
        path: The checkpoint directory.
        sha256: Hash of ``config.json`` bytes followed by ``flow.safetensors`` bytes.
        image_threshold: Calibrated image-score threshold (at a target image FPR), if any;
            absent in older checkpoints.
    """

    model: FlowCLAS
    config: ModelConfig
    threshold: float | None
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path = Path(".")
    sha256: str = ""
    image_threshold: float | None = None


def _trainable_state(model: FlowCLAS) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith(("backbone.", "text_scorer."))  # frozen parts are referenced, not copied
    }


def save_checkpoint(
    model: FlowCLAS,
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
        threshold: Calibrated pixel threshold to store, or None.
        provenance: JSON-serialisable provenance (training data, metrics, ...).
        embed_backbone: Also write the frozen backbone weights to ``backbone.safetensors``.
        image_threshold: Calibrated image-score threshold to store (key omitted when None).

    Returns:
        The checkpoint directory.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {
        "version": CONFIG_VERSION,
        "model": to_dict(model.cfg),
        "threshold": None if threshold is None else float(threshold),
        "provenance": provenance or {},
        "embedded_backbone": BACKBONE_FILE if embed_backbone else None,
    }
    if image_threshold is not None:
        meta["image_threshold"] = float(image_threshold)
    try:
        text = json.dumps(meta, indent=2) + "\n"  # key order kept: prompt class order matters
    except TypeError as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: provenance is not JSON-serialisable ({exc})") from exc
    save_file(_trainable_state(model), str(path / FLOW_FILE))
    if embed_backbone:
        state = {k: v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()}
        save_file(state, str(path / BACKBONE_FILE))
    (path / CONFIG_FILE).write_text(text)  # written last: a directory with config.json is complete
    return path


def _read_meta(config_path: Path) -> dict[str, Any]:
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing (not a checkpoint directory?)")
    try:
        meta = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{config_path}: top level must be a JSON object")
    unknown = sorted(set(meta) - _TOP_KEYS)
    if unknown:
        raise CheckpointError(f"{config_path}: unknown key(s) {', '.join(unknown)}")
    version = meta.get("version")
    if version != CONFIG_VERSION:
        raise CheckpointError(
            f"{config_path}: checkpoint version {version!r} is not supported "
            f"(this flowclas_ros reads version {CONFIG_VERSION})"
        )
    return meta


THRESHOLD_KEYS = ("threshold", "image_threshold")


def _optional_number(meta: dict[str, Any], key: str, config_path: Path) -> float | None:
    """``meta[key]`` as a float, or None when absent / null (old checkpoints have no image_threshold)."""
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{config_path}: {key} must be a number or null, got {value!r}")
    return float(value)


def _embedded_backbone(value: Any, config_path: Path) -> str | None:
    """The ``embedded_backbone`` file name, checked to be a plain name inside the checkpoint directory.

    A config could otherwise make the loader read any file on the machine (``../../x`` or ``/x``).
    """
    if value is None:
        return None
    name = str(value)
    if (
        not isinstance(value, str)
        or not name
        or Path(name).name != name
        or name in (".", "..")
        or "\\" in name
    ):
        raise CheckpointError(
            f"{config_path}: embedded_backbone must be a file name inside the checkpoint directory "
            f"(no directories, '..' or absolute paths), got {value!r}"
        )
    return name


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
    meta = _read_meta(config_path)
    try:
        cfg = from_dict(ModelConfig, meta.get("model", {}), prefix="model.")
    except ConfigError as exc:
        raise CheckpointError(f"{config_path}: {exc}") from exc
    threshold, image_threshold = (_optional_number(meta, key, config_path) for key in THRESHOLD_KEYS)
    provenance = meta.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise CheckpointError(f"{config_path}: provenance must be an object")
    state = _read_tensors(flow_path)
    embedded = _embedded_backbone(meta.get("embedded_backbone"), config_path)
    _resolve_weights_file(cfg, path)
    try:
        if embedded:
            backbone_state = _read_tensors(path / embedded)
            model = FlowCLAS(_with_random_backbone(cfg), warn_random_backbone=False)
            _check_state(path / embedded, backbone_state, model.backbone.state_dict())
            model.backbone.load_state_dict(backbone_state)
            model.cfg = cfg
        else:
            model = FlowCLAS(cfg)
    except BackboneError as exc:
        raise CheckpointError(f"{config_path}: backbone: {exc}") from exc
    except (TextScorerError, ConfigError) as exc:
        raise CheckpointError(f"{config_path}: text scorer: {exc}") from exc
    _check_state(flow_path, state, _trainable_state(model))
    model.load_state_dict(state, strict=False)  # backbone keys are not in the file
    model.to(device).eval()
    digest = hashlib.sha256(config_path.read_bytes() + flow_path.read_bytes()).hexdigest()
    return LoadedCheckpoint(
        model=model,
        config=cfg,
        threshold=threshold,
        provenance=provenance,
        path=path,
        sha256=digest,
        image_threshold=image_threshold,
    )


def _with_random_backbone(cfg: ModelConfig) -> ModelConfig:
    """A copy of ``cfg`` whose backbone is built without loading weights (they are embedded)."""
    copy = from_dict(ModelConfig, to_dict(cfg))
    copy.backbone.weights = "none"
    return copy
